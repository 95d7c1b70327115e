/*
 * test_admin.c - unit tests for router/admin.c: the line parser, dispatch,
 * and the real unix socket server on an event_base (mode, peer uid check,
 * audit log, stale/live socket files, bounded lines).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "admin.h"

/* ---- a tiny command table ---- */

static int calls;

static int do_echo(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                   size_t errlen)
{
	calls++;
	json_object_set_new(reply, "message", json_string(call->argc > 1 ? call->argv[1] : ""));
	json_object_set_new(reply, "uid", json_integer(call->uid));
	json_object_set_new(reply, "ctx", json_string(ctx));
	return 0;
}

static int do_fail(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                   size_t errlen)
{
	calls++;
	json_object_set_new(reply, "partial", json_true());
	snprintf(err, errlen, "nope: %s", call->argv[1]);
	return -1;
}

static int do_big(void *ctx, const struct admin_call *call, json_t *reply, char *err, size_t errlen)
{
	char *s = malloc(ADMIN_REPLY_MAX + 10);
	memset(s, 'x', ADMIN_REPLY_MAX + 9);
	s[ADMIN_REPLY_MAX + 9] = 0;
	json_object_set_new(reply, "message", json_string(s));
	free(s);
	return 0;
}

static const struct admin_command cmds[] = {
    {"echo", "echo [WORD]", 0, 1, 0, do_echo},
    {"set", "set WORD", 1, 1, 1, do_echo},
    {"fail", "fail WORD", 1, 1, 1, do_fail},
    {"big", "big", 0, 0, 0, do_big},
};
#define N_CMDS (sizeof(cmds) / sizeof(cmds[0]))

/* ---- parser ---- */

static void test_parse_words(void **state)
{
	struct admin_argv av;
	char err[256];
	const char *l = "  switch\tgreen   --force \r";
	assert_int_equal(admin_parse_line(l, strlen(l), &av, err, sizeof(err)), 0);
	assert_int_equal(av.argc, 3);
	assert_string_equal(av.argv[0], "switch");
	assert_string_equal(av.argv[1], "green");
	assert_string_equal(av.argv[2], "--force");
}

static void test_parse_rejects(void **state)
{
	struct admin_argv av;
	char err[256];
	assert_int_equal(admin_parse_line("", 0, &av, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "empty"));
	assert_int_equal(admin_parse_line(" \t ", 3, &av, err, sizeof(err)), -1);
	assert_int_equal(admin_parse_line("a\x01z", 3, &av, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "0x01 at offset 1"));
	assert_int_equal(admin_parse_line("a\0b", 3, &av, err, sizeof(err)), -1);
	assert_int_equal(admin_parse_line("caf\xc3\xa9", 5, &av, err, sizeof(err)), -1);

	char many[200] = "";
	for (int i = 0; i < ADMIN_MAX_ARGS + 1; i++)
		strcat(many, "w ");
	assert_int_equal(admin_parse_line(many, strlen(many), &av, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "words"));
	many[2 * ADMIN_MAX_ARGS] = 0; /* exactly the limit */
	assert_int_equal(admin_parse_line(many, strlen(many), &av, err, sizeof(err)), 0);
	assert_int_equal(av.argc, ADMIN_MAX_ARGS);

	char *longl = malloc(ADMIN_LINE_MAX + 2);
	memset(longl, 'a', ADMIN_LINE_MAX + 1);
	assert_int_equal(admin_parse_line(longl, ADMIN_LINE_MAX + 1, &av, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "longer"));
	assert_int_equal(admin_parse_line(longl, ADMIN_LINE_MAX, &av, err, sizeof(err)), 0);
	free(longl);
}

/* ---- dispatch ---- */

static json_t *dispatch(const char *line, const struct admin_command **which)
{
	json_t *r = admin_dispatch(cmds, N_CMDS, "CTX", 42, 7, line, strlen(line), which);
	assert_non_null(r);
	return r;
}

static void test_dispatch(void **state)
{
	const struct admin_command *which;
	json_t *r = dispatch("echo hi", &which);
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_string_equal(json_string_value(json_object_get(r, "message")), "hi");
	assert_int_equal(json_integer_value(json_object_get(r, "uid")), 42);
	assert_string_equal(json_string_value(json_object_get(r, "ctx")), "CTX");
	assert_ptr_equal(which, &cmds[0]);
	json_decref(r);

	r = dispatch("nosuch thing", &which);
	assert_true(json_is_false(json_object_get(r, "ok")));
	assert_non_null(strstr(json_string_value(json_object_get(r, "error")), "unknown command"));
	assert_null(which);
	json_decref(r);

	int before = calls;
	r = dispatch("set", &which); /* missing argument: handler not run */
	assert_true(json_is_false(json_object_get(r, "ok")));
	assert_string_equal(json_string_value(json_object_get(r, "error")), "usage: set WORD");
	assert_ptr_equal(which, &cmds[1]);
	assert_int_equal(calls, before);
	json_decref(r);

	r = dispatch("fail x", &which);
	assert_true(json_is_false(json_object_get(r, "ok")));
	assert_string_equal(json_string_value(json_object_get(r, "error")), "nope: x");
	assert_null(json_object_get(r, "partial")); /* a failure reply holds only the error */
	json_decref(r);

	r = dispatch("help", &which);
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_int_equal(json_array_size(json_object_get(r, "commands")), N_CMDS + 1);
	json_decref(r);

	r = admin_dispatch(cmds, N_CMDS, NULL, 0, 0, "\x7f", 1, NULL);
	assert_true(json_is_false(json_object_get(r, "ok")));
	json_decref(r);
}

/* ---- the server ---- */

struct srv {
	char dir[64];
	char sock[100];
	char audit[128];
	struct event_base *base;
	struct admin *adm;
};

static int srv_setup(void **state)
{
	struct srv *s = calloc(1, sizeof(*s));
	strcpy(s->dir, "/tmp/turnout-test-admin-XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	snprintf(s->sock, sizeof(s->sock), "%s/admin.sock", s->dir);
	snprintf(s->audit, sizeof(s->audit), "%s/audit.log", s->dir);
	s->base = event_base_new();
	assert_non_null(s->base);
	*state = s;
	return 0;
}

static int srv_teardown(void **state)
{
	struct srv *s = *state;
	admin_free(s->adm);
	event_base_free(s->base);
	unlink(s->sock);
	unlink(s->audit);
	rmdir(s->dir);
	free(s);
	return 0;
}

static void srv_start(struct srv *s, const uid_t *allow, size_t n_allow)
{
	char err[512];
	struct admin_options o = {
	    .path = s->sock, .allow_uids = allow, .n_allow_uids = n_allow, .audit_log = s->audit};
	s->adm = admin_new(s->base, &o, cmds, N_CMDS, "CTX", err, sizeof(err));
	if (!s->adm)
		fail_msg("admin_new: %s", err);
}

static int client_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/*
 * Run the loop until n newline-terminated lines (or EOF) arrive on fd; the
 * text goes in buf. Bounded: at most 500 rounds of 10 ms.
 */
static size_t pump_until(struct srv *s, int fd, char *buf, size_t cap, int n_lines, int *eof)
{
	size_t got = 0;
	*eof = 0;
	for (int round = 0; round < 500; round++) {
		event_base_loop(s->base, EVLOOP_NONBLOCK);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 10) <= 0)
			continue;
		ssize_t r = read(fd, buf + got, cap - 1 - got);
		if (r <= 0) {
			*eof = 1;
			break;
		}
		got += (size_t)r;
		buf[got] = 0;
		int lines = 0;
		for (size_t i = 0; i < got; i++)
			lines += buf[i] == '\n';
		if (lines >= n_lines)
			break;
	}
	buf[got] = 0;
	event_base_loop(s->base, EVLOOP_NONBLOCK);
	return got;
}

static json_t *ask(struct srv *s, int fd, const char *line)
{
	char buf[8192];
	int eof;
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	pump_until(s, fd, buf, sizeof(buf), 1, &eof);
	json_error_t je;
	json_t *r = json_loads(buf, JSON_DISABLE_EOF_CHECK, &je);
	if (!r)
		fail_msg("bad reply \"%s\": %s", buf, je.text);
	return r;
}

static void test_server_roundtrip_and_audit(void **state)
{
	struct srv *s = *state;
	struct stat st;
	srv_start(s, NULL, 0);
	assert_int_equal(lstat(s->sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);

	int fd = client_connect(s->sock);
	json_t *r = ask(s, fd, "echo hello\n");
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_string_equal(json_string_value(json_object_get(r, "message")), "hello");
	assert_int_equal(json_integer_value(json_object_get(r, "uid")), getuid());
	json_decref(r);
	/* several commands on one connection, a mutating one and a failing one */
	r = ask(s, fd, "set green\n");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	r = ask(s, fd, "fail boom\n");
	assert_true(json_is_false(json_object_get(r, "ok")));
	json_decref(r);
	r = ask(s, fd, "big\n");
	assert_true(json_is_false(json_object_get(r, "ok")));
	assert_non_null(strstr(json_string_value(json_object_get(r, "error")), "reply larger"));
	json_decref(r);
	close(fd);

	/* audit: exactly the two mutating commands, with uid, pid, result */
	json_error_t je;
	FILE *fp = fopen(s->audit, "r");
	assert_non_null(fp);
	char line[2048];
	int n = 0;
	while (fgets(line, sizeof(line), fp)) {
		json_t *a = json_loads(line, 0, &je);
		assert_non_null(a);
		assert_int_equal(json_integer_value(json_object_get(a, "uid")), getuid());
		assert_int_equal(json_integer_value(json_object_get(a, "pid")), getpid());
		assert_non_null(json_object_get(a, "time"));
		const char *cmd = json_string_value(json_object_get(a, "command"));
		if (n == 0) {
			assert_string_equal(cmd, "set green");
			assert_true(json_is_true(json_object_get(a, "ok")));
			assert_string_equal(json_string_value(json_object_get(a, "result")),
			                    "green");
		} else {
			assert_string_equal(cmd, "fail boom");
			assert_true(json_is_false(json_object_get(a, "ok")));
			assert_string_equal(json_string_value(json_object_get(a, "result")),
			                    "nope: boom");
		}
		json_decref(a);
		n++;
	}
	fclose(fp);
	assert_int_equal(n, 2);

	admin_free(s->adm);
	s->adm = NULL;
	assert_int_equal(access(s->sock, F_OK), -1); /* removed on shutdown */
}

static void test_server_refuses_uid(void **state)
{
	struct srv *s = *state;
	uid_t other = getuid() + 12345;
	srv_start(s, &other, 1);
	int fd = client_connect(s->sock);
	char buf[1024];
	int eof;
	pump_until(s, fd, buf, sizeof(buf), 1, &eof);
	assert_non_null(strstr(buf, "\"ok\":false"));
	assert_non_null(strstr(buf, "not in admin.allow_uids"));
	/* and the connection is closed: no command is served */
	(void)!write(fd, "echo x\n", 7);
	pump_until(s, fd, buf, sizeof(buf), 1, &eof);
	assert_true(eof);
	close(fd);

	/* allowing our uid through a reconfigure lets us in */
	uid_t me = getuid();
	char err[256];
	struct admin_options o = {.path = s->sock, .allow_uids = &me, .n_allow_uids = 1};
	assert_int_equal(admin_reconfigure(s->adm, &o, err, sizeof(err)), 0);
	fd = client_connect(s->sock);
	json_t *r = ask(s, fd, "echo in\n");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);

	/* taken out again by a reconfigure: the open connection is refused its next command */
	o.allow_uids = &other;
	assert_int_equal(admin_reconfigure(s->adm, &o, err, sizeof(err)), 0);
	r = ask(s, fd, "set blue\n");
	assert_true(json_is_false(json_object_get(r, "ok")));
	assert_non_null(
	    strstr(json_string_value(json_object_get(r, "error")), "not in admin.allow_uids"));
	json_decref(r);
	pump_until(s, fd, buf, sizeof(buf), 1, &eof);
	assert_true(eof);
	close(fd);
}

static void test_server_long_line_closes(void **state)
{
	struct srv *s = *state;
	srv_start(s, NULL, 0);
	int fd = client_connect(s->sock);
	size_t n = ADMIN_LINE_MAX + 100;
	char *big = malloc(n);
	memset(big, 'a', n);
	assert_int_equal(write(fd, big, n), (ssize_t)n);
	free(big);
	char buf[1024];
	int eof;
	pump_until(s, fd, buf, sizeof(buf), 1, &eof);
	assert_non_null(strstr(buf, "too long"));
	pump_until(s, fd, buf, sizeof(buf), 1, &eof);
	assert_true(eof);
	close(fd);
}

static void test_stale_live_and_foreign_files(void **state)
{
	struct srv *s = *state;
	char err[512];
	struct admin_options o = {.path = s->sock};

	/* a stale socket (bound, nobody listening) is replaced */
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s->sock);
	int stale = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(stale, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(stale);
	srv_start(s, NULL, 0);

	/* a second server on the same live socket is refused, the first keeps it */
	struct admin *second = admin_new(s->base, &o, cmds, N_CMDS, NULL, err, sizeof(err));
	assert_null(second);
	assert_non_null(strstr(err, "another process is serving"));
	int fd = client_connect(s->sock);
	json_t *r = ask(s, fd, "echo still\n");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	close(fd);
	admin_free(s->adm);
	s->adm = NULL;

	/* a regular file is never replaced */
	FILE *fp = fopen(s->sock, "w");
	fputs("precious", fp);
	fclose(fp);
	assert_null(admin_new(s->base, &o, cmds, N_CMDS, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "not a socket"));
	assert_int_equal(access(s->sock, F_OK), 0);
	unlink(s->sock);

	/* a path too long for sun_path is a clear error */
	char longp[200];
	memset(longp, 'p', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = 0;
	o.path = longp;
	assert_null(admin_new(s->base, &o, cmds, N_CMDS, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "too long"));

	/* an unknown group is a clear error */
	o.path = s->sock;
	o.group = "no-such-group-turnout";
	assert_null(admin_new(s->base, &o, cmds, N_CMDS, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "no-such-group-turnout"));
	assert_int_equal(access(s->sock, F_OK), -1);
}

static void test_server_many_clients_bounded(void **state)
{
	struct srv *s = *state;
	int fds[ADMIN_MAX_CLIENTS + 1];
	srv_start(s, NULL, 0);
	for (int i = 0; i < ADMIN_MAX_CLIENTS; i++) {
		fds[i] = client_connect(s->sock);
		json_t *r = ask(s, fds[i], "echo x\n");
		json_decref(r);
	}
	fds[ADMIN_MAX_CLIENTS] = client_connect(s->sock);
	char buf[512];
	int eof;
	pump_until(s, fds[ADMIN_MAX_CLIENTS], buf, sizeof(buf), 1, &eof);
	assert_non_null(strstr(buf, "too many"));
	for (int i = 0; i <= ADMIN_MAX_CLIENTS; i++)
		close(fds[i]);
	/* closed peers are reaped: a new one is served */
	for (int i = 0; i < 10; i++) {
		event_base_loop(s->base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	int fd = client_connect(s->sock);
	json_t *r = ask(s, fd, "echo again\n");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	close(fd);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN); /* the router ignores it too; a closed peer is EPIPE */
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_words),
	    cmocka_unit_test(test_parse_rejects),
	    cmocka_unit_test(test_dispatch),
	    cmocka_unit_test_setup_teardown(test_server_roundtrip_and_audit, srv_setup,
	                                    srv_teardown),
	    cmocka_unit_test_setup_teardown(test_server_refuses_uid, srv_setup, srv_teardown),
	    cmocka_unit_test_setup_teardown(test_server_long_line_closes, srv_setup, srv_teardown),
	    cmocka_unit_test_setup_teardown(test_stale_live_and_foreign_files, srv_setup,
	                                    srv_teardown),
	    cmocka_unit_test_setup_teardown(test_server_many_clients_bounded, srv_setup,
	                                    srv_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
