/*
 * turnoutctl.c - the operator's command line for a running turnout.
 *
 * Sends one command line over the admin unix socket (router/admin.c) and
 * prints the JSON reply: human-readable by default, raw with --json. The exit
 * code says whether the command succeeded (0), failed at the router (1), was
 * mistyped (2), or could not reach the router at all (3); the reason is always
 * on stderr, with the socket path when the socket is the problem.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define CTL_DEFAULT_SOCKET "/run/turnout/admin.sock"
#define CTL_LINE_MAX       4096               /* admin.h ADMIN_LINE_MAX */
#define CTL_REPLY_MAX      (1024 * 1024 + 64) /* admin.h ADMIN_REPLY_MAX, and the newline */
#define CTL_TIMEOUT_MS     30000

enum ctl_exit {
	CTL_OK = 0,
	CTL_FAILED = 1,  /* the router answered with an error */
	CTL_USAGE = 2,   /* bad command line */
	CTL_NOREACH = 3, /* socket missing, refused, timed out, garbled reply */
};

struct ctl_cmd {
	const char *name;
	int min_args, max_args;
	const char *args;
	const char *what;
};

static const struct ctl_cmd ctl_cmds[] = {
    {"status", 0, 0, "", "strategy, variants, percents, config, overrides, counters"},
    {"canary", 1, 1, "PERCENT", "send PERCENT of live traffic to the candidate (sticky)"},
    {"shadow", 1, 1, "PERCENT", "mirror PERCENT of requests to the candidate"},
    {"switch", 1, 2, "VARIANT [--force]", "make VARIANT the live one (blue/green)"},
    {"promote", 0, 1, "[--force]", "the candidate becomes stable, at 100%"}, /* resilience */
    {"rollback", 0, 0, "", "all live traffic back to the last known-good variant"},
    {"resume", 0, 0, "", "lift operator overrides and rollback: the YAML rules again"},
    {"reload", 0, 0, "", "reload the config file now"},
    {"stats", 0, 1, "[VARIANT]", "requests, errors, p50/p90/p99, agreement"},
    {"help", 0, 0, "", "the commands the router knows"},
};
#define CTL_N_CMDS (sizeof(ctl_cmds) / sizeof(ctl_cmds[0]))

static void usage(FILE *to)
{
	fprintf(to, "usage: turnoutctl [-s SOCKET] [--json] [-t SECONDS] COMMAND [ARGS]\n\n"
	            "commands:\n");
	for (size_t i = 0; i < CTL_N_CMDS; i++) {
		char left[64];
		snprintf(left, sizeof(left), "%s %s", ctl_cmds[i].name, ctl_cmds[i].args);
		fprintf(to, "  %-26s %s\n", left, ctl_cmds[i].what);
	}
	fprintf(to,
	        "\noptions:\n"
	        "  -s, --socket PATH   admin socket (default $TURNOUT_ADMIN_SOCKET, else %s)\n"
	        "  --json              print the router's raw JSON reply\n"
	        "  -t, --timeout SECS  give up after SECS seconds (default %d)\n"
	        "  -h, --help          this text\n\n"
	        "exit status: 0 done, 1 the router refused or failed, 2 usage error,\n"
	        "3 the router could not be reached\n",
	        CTL_DEFAULT_SOCKET, CTL_TIMEOUT_MS / 1000);
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static int ctl_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "turnoutctl: %s: path too long for a unix socket\n", path);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "turnoutctl: socket: %s\n", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	int e = errno;
	close(fd);
	const char *hint = "";
	if (e == ENOENT || e == ECONNREFUSED)
		hint =
		    " (is turnout running with admin.socket set? use -s or $TURNOUT_ADMIN_SOCKET)";
	else if (e == EACCES || e == EPERM)
		hint =
		    " (the socket is mode 0600/0660: run as its owner or a member of admin.group)";
	fprintf(stderr, "turnoutctl: cannot connect to admin socket %s: %s%s\n", path, strerror(e),
	        hint);
	return -1;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read one reply line into a new buffer (caller frees), or NULL with a message printed. */
static char *read_reply(int fd, const char *path, int timeout_ms)
{
	char *buf = malloc(CTL_REPLY_MAX + 1);
	size_t got = 0;
	long deadline = now_ms() + timeout_ms;
	if (!buf) {
		fprintf(stderr, "turnoutctl: out of memory\n");
		return NULL;
	}
	for (;;) {
		long left = deadline - now_ms();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int pr = left > 0 ? poll(&p, 1, (int)left) : 0;
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			fprintf(stderr, "turnoutctl: %s: no reply within %d s\n", path,
			        timeout_ms / 1000);
			break;
		}
		ssize_t r = read(fd, buf + got, CTL_REPLY_MAX - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fprintf(stderr, "turnoutctl: %s: the router closed the connection %s\n",
			        path, r < 0 ? strerror(errno) : "without a reply");
			break;
		}
		char *nl = memchr(buf + got, '\n', (size_t)r);
		got += (size_t)r;
		if (nl) {
			*nl = 0;
			return buf;
		}
		if (got == CTL_REPLY_MAX) {
			fprintf(stderr, "turnoutctl: %s: reply longer than %d bytes\n", path,
			        CTL_REPLY_MAX);
			break;
		}
	}
	free(buf);
	return NULL;
}

/* ---- human-readable output ---- */

static void print_value(const char *key, const json_t *v, int depth);

static void print_scalar(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		fputs(json_string_value(v), stdout);
		break;
	case JSON_INTEGER:
		printf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL:
		printf("%.6g", json_real_value(v));
		break;
	case JSON_TRUE:
		fputs("yes", stdout);
		break;
	case JSON_FALSE:
		fputs("no", stdout);
		break;
	case JSON_NULL:
		fputs("-", stdout);
		break;
	default:
		break;
	}
}

static int all_scalars(const json_t *a)
{
	size_t i;
	const json_t *v;
	json_array_foreach(a, i, v)
	{
		if (json_is_object(v) || json_is_array(v))
			return 0;
	}
	return 1;
}

static void print_object(const json_t *o, int depth)
{
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)o, k, v)
	{
		if (depth == 0 && (strcmp(k, "ok") == 0 || strcmp(k, "message") == 0))
			continue;
		print_value(k, v, depth);
	}
}

static void print_value(const char *key, const json_t *v, int depth)
{
	printf("%*s%s:", depth * 2, "", key);
	if (json_is_object(v)) {
		putchar('\n');
		print_object(v, depth + 1);
		return;
	}
	if (json_is_array(v) && all_scalars(v)) {
		size_t i;
		const json_t *x;
		json_array_foreach(v, i, x)
		{
			fputs(i ? ", " : " ", stdout);
			print_scalar(x);
		}
		putchar('\n');
		return;
	}
	if (json_is_array(v)) {
		size_t i;
		const json_t *x;
		putchar('\n');
		json_array_foreach(v, i, x)
		{
			char idx[32];
			snprintf(idx, sizeof(idx), "[%zu]", i);
			print_value(idx, x, depth + 1);
		}
		return;
	}
	putchar(' ');
	print_scalar(v);
	putchar('\n');
}

static void print_human(const json_t *reply)
{
	const char *msg = json_string_value(json_object_get(reply, "message"));
	if (msg)
		printf("%s\n", msg);
	print_object(reply, 0);
}

/* ---- main ---- */

/* Check COMMAND ARGS against the table; 0, or -1 with the reason printed. */
static int check_command(int argc, char **argv)
{
	for (size_t i = 0; i < CTL_N_CMDS; i++) {
		const struct ctl_cmd *c = &ctl_cmds[i];
		if (strcmp(c->name, argv[0]) != 0)
			continue;
		if (argc - 1 < c->min_args || argc - 1 > c->max_args) {
			fprintf(stderr, "turnoutctl: usage: turnoutctl %s %s\n", c->name, c->args);
			return -1;
		}
		return 0;
	}
	fprintf(stderr, "turnoutctl: unknown command \"%s\" (see turnoutctl --help)\n", argv[0]);
	return -1;
}

/* Join the words into one protocol line ending in a newline; -1 if it cannot be sent. */
static int build_line(int argc, char **argv, char *line, size_t cap)
{
	size_t n = 0;
	for (int i = 0; i < argc; i++) {
		for (const char *p = argv[i]; *p; p++) {
			if (*p <= ' ' || *p > '~') {
				fprintf(stderr,
				        "turnoutctl: argument \"%s\": only printable ASCII "
				        "without spaces is allowed\n",
				        argv[i]);
				return -1;
			}
		}
		int w = snprintf(line + n, cap - n, "%s%s", i ? " " : "", argv[i]);
		if (w < 0 || (size_t)w >= cap - n - 1) {
			fprintf(stderr, "turnoutctl: command longer than %d bytes\n", CTL_LINE_MAX);
			return -1;
		}
		n += (size_t)w;
	}
	line[n++] = '\n';
	line[n] = 0;
	return 0;
}

static int run(const char *path, int json_out, int timeout_ms, int argc, char **argv)
{
	char line[CTL_LINE_MAX + 2];
	if (build_line(argc, argv, line, sizeof(line)) != 0)
		return CTL_USAGE;
	int fd = ctl_connect(path);
	if (fd < 0)
		return CTL_NOREACH;
	/* A refused peer is answered and closed at once, maybe before our line is
	 * sent: on a send error the refusal may still be waiting to be read. */
	int send_errno = send_all(fd, line, strlen(line)) == 0 ? 0 : errno;
	char *text = read_reply(fd, path, send_errno ? 1000 : timeout_ms);
	if (!text && send_errno)
		fprintf(stderr, "turnoutctl: %s: send: %s\n", path, strerror(send_errno));
	close(fd);
	if (!text)
		return CTL_NOREACH;
	json_error_t je;
	json_t *reply = json_loads(text, 0, &je);
	if (!json_is_object(reply)) {
		fprintf(stderr, "turnoutctl: %s: reply is not a JSON object: %s\n", path, je.text);
		json_decref(reply);
		free(text);
		return CTL_NOREACH;
	}
	int ok = json_is_true(json_object_get(reply, "ok"));
	if (json_out)
		printf("%s\n", text);
	if (!ok) {
		const char *e = json_string_value(json_object_get(reply, "error"));
		size_t cl = strlen(argv[0]);
		/* Most router errors already start with "COMMAND: "; say it once. */
		int named = e && strncmp(e, argv[0], cl) == 0 && e[cl] == ':';
		fprintf(stderr, "turnoutctl: %s%s%s\n", named ? "" : argv[0], named ? "" : ": ",
		        e ? e : "failed (no reason given)");
	} else if (!json_out) {
		print_human(reply);
	}
	json_decref(reply);
	free(text);
	return ok ? CTL_OK : CTL_FAILED;
}

int main(int argc, char **argv)
{
	const char *path = getenv("TURNOUT_ADMIN_SOCKET");
	int json_out = 0, timeout_ms = CTL_TIMEOUT_MS, i = 1;
	signal(SIGPIPE, SIG_IGN);
	if (!path || !*path)
		path = CTL_DEFAULT_SOCKET;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return CTL_OK;
		} else if (strcmp(a, "--json") == 0) {
			json_out = 1;
		} else if ((strcmp(a, "-s") == 0 || strcmp(a, "--socket") == 0) && i + 1 < argc) {
			path = argv[++i];
		} else if ((strcmp(a, "-t") == 0 || strcmp(a, "--timeout") == 0) && i + 1 < argc) {
			char *end;
			long t = strtol(argv[++i], &end, 10);
			if (*end || t < 1 || t > 3600) {
				fprintf(stderr, "turnoutctl: %s: timeout must be 1..3600 seconds\n",
				        argv[i]);
				return CTL_USAGE;
			}
			timeout_ms = (int)t * 1000;
		} else if (strcmp(a, "--") == 0) {
			i++;
			break;
		} else {
			fprintf(stderr, "turnoutctl: unknown option or missing value: %s\n", a);
			usage(stderr);
			return CTL_USAGE;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return CTL_USAGE;
	}
	if (check_command(argc - i, argv + i) != 0)
		return CTL_USAGE;
	return run(path, json_out, timeout_ms, argc - i, argv + i);
}
