/*
 * admin.c - the admin unix socket server and its line protocol (see admin.h).
 *
 * Life of a connection: accepted (peer uid checked, refused peers get one JSON
 * error and are closed), then each complete line is parsed, dispatched to the
 * caller's handler table and answered with one JSON line. A connection is
 * never freed inside its own callback: it is marked dead and a deferred event
 * on the base frees it. Every buffer is bounded: a line longer than
 * ADMIN_LINE_MAX, or a peer that lets more than ADMIN_OUT_MAX of replies pile
 * up, is answered with an error and closed.
 */
#include "admin.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "log.h"
#include "metrics.h" /* observability: recent operator actions */

struct admin_conn {
	struct admin *adm;
	struct bufferevent *bev;
	uid_t uid;
	pid_t pid;
	int closing; /* reply being flushed, then close */
	int dead;    /* to be freed by on_reap */
	struct admin_conn *next;
};

struct admin {
	struct event_base *base;
	struct evconnlistener *listener;
	struct event *reap;
	char *path;
	dev_t dev; /* identity of the socket file we created */
	ino_t ino;
	const struct admin_command *cmds;
	size_t n_cmds;
	void *ctx;
	uid_t *allow;
	size_t n_allow;
	int audit_fd; /* -1 = log */
	struct admin_conn *conns;
	size_t n_conns;
};

/* ---- the protocol: parse and dispatch (pure) ---- */

int admin_parse_line(const char *line, size_t len, struct admin_argv *out, char *err, size_t errlen)
{
	out->argc = 0;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len > ADMIN_LINE_MAX) {
		snprintf(err, errlen, "command line longer than %d bytes", ADMIN_LINE_MAX);
		return -1;
	}
	char *w = out->buf;
	int in_word = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if (c == ' ' || c == '\t') {
			if (in_word)
				*w++ = 0;
			in_word = 0;
			continue;
		}
		if (c < 0x21 || c > 0x7e) {
			snprintf(err, errlen, "byte 0x%02x at offset %zu is not printable ASCII", c,
			         i);
			return -1;
		}
		if (!in_word) {
			if (out->argc == ADMIN_MAX_ARGS) {
				snprintf(err, errlen, "more than %d words", ADMIN_MAX_ARGS);
				return -1;
			}
			out->argv[out->argc++] = w;
			in_word = 1;
		}
		*w++ = (char)c;
	}
	*w = 0;
	if (out->argc == 0) {
		snprintf(err, errlen, "empty command (try \"help\")");
		return -1;
	}
	return 0;
}

static int do_help(const struct admin_command *cmds, size_t n_cmds, json_t *reply)
{
	json_t *list = json_array();
	if (!list)
		return -1;
	for (size_t i = 0; i < n_cmds; i++)
		json_array_append_new(list,
		                      json_string(cmds[i].usage ? cmds[i].usage : cmds[i].name));
	json_array_append_new(list, json_string("help"));
	json_object_set_new(reply, "commands", list);
	json_object_set_new(reply, "message", json_string("commands listed"));
	return 0;
}

static const struct admin_command *find_command(const struct admin_command *cmds, size_t n,
                                                const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(cmds[i].name, name) == 0)
			return &cmds[i];
	}
	return NULL;
}

/* Run one parsed line; 0 or -1 with err. */
static int run_command(const struct admin_command *cmds, size_t n_cmds, void *ctx,
                       const struct admin_call *call, json_t *reply,
                       const struct admin_command **which, char *err, size_t errlen)
{
	const char *name = call->argv[0];
	if (strcmp(name, "help") == 0 && !find_command(cmds, n_cmds, name))
		return do_help(cmds, n_cmds, reply);
	const struct admin_command *c = find_command(cmds, n_cmds, name);
	if (!c) {
		snprintf(err, errlen, "unknown command \"%.64s\" (try \"help\")", name);
		return -1;
	}
	*which = c;
	int nargs = call->argc - 1;
	if (nargs < c->min_args || nargs > c->max_args) {
		snprintf(err, errlen, "usage: %s", c->usage ? c->usage : c->name);
		return -1;
	}
	err[0] = 0;
	if (c->fn(ctx, call, reply, err, errlen) != 0) {
		if (!err[0])
			snprintf(err, errlen, "%s failed", c->name);
		return -1;
	}
	return 0;
}

json_t *admin_dispatch(const struct admin_command *cmds, size_t n_cmds, void *ctx, uid_t uid,
                       pid_t pid, const char *line, size_t len, const struct admin_command **which)
{
	const struct admin_command *dummy;
	char err[1024];
	struct admin_argv *av = malloc(sizeof(*av));
	json_t *reply = json_object();
	if (!which)
		which = &dummy;
	*which = NULL;
	if (!av || !reply) {
		free(av);
		json_decref(reply);
		return NULL;
	}
	int rc = admin_parse_line(line, len, av, err, sizeof(err));
	if (rc == 0) {
		struct admin_call call = {
		    .uid = uid, .pid = pid, .argc = av->argc, .argv = av->argv};
		rc = run_command(cmds, n_cmds, ctx, &call, reply, which, err, sizeof(err));
	}
	free(av);
	if (rc != 0) {
		/* A failed handler's partial fields would only confuse: start over. */
		json_object_clear(reply);
		json_object_set_new(reply, "error", json_string(err));
	}
	json_object_set_new(reply, "ok", json_boolean(rc == 0));
	return reply;
}

/* ---- audit log ---- */

static void audit(struct admin *adm, uid_t uid, pid_t pid, const char *line, size_t len,
                  const json_t *reply)
{
	char stamp[40];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + n, sizeof(stamp) - n, ".%03ldZ", ts.tv_nsec / 1000000);
	const json_t *ok = json_object_get(reply, "ok");
	const json_t *res = json_object_get(reply, json_is_true(ok) ? "message" : "error");
	json_t *o = json_pack("{s:s, s:I, s:I, s:s%, s:b, s:s}", "time", stamp, "uid",
	                      (json_int_t)uid, "pid", (json_int_t)pid, "command", line ? line : "",
	                      line ? len : 0, "ok", json_is_true(ok), "result",
	                      json_string_value(res) ? json_string_value(res) : "");
	char *text = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	json_decref(o);
	if (!text) {
		log_error("admin: audit: out of memory (uid %ld)", (long)uid);
		return;
	}
	/* observability: the dashboard's "recent operator actions" */
	char action[METRICS_ACTION_LEN + 1];
	snprintf(action, sizeof(action), "uid %ld: %.*s -> %s", (long)uid, line ? (int)len : 0,
	         line ? line : "", json_string_value(res) ? json_string_value(res) : "");
	metrics_note_action(action);
	if (adm->audit_fd < 0) {
		log_info("audit %s", text);
	} else {
		/* operator actions reach stderr (the journal) too, not only the audit file */
		if (json_is_true(ok))
			log_info("operator: %s", action);
		else
			log_warn("operator: %s", action);
		size_t tl = strlen(text);
		text[tl] = '\n';
		/* O_APPEND and one write: lines of concurrent writers never interleave. */
		if (write(adm->audit_fd, text, tl + 1) != (ssize_t)(tl + 1))
			log_error("admin: audit log write failed: %s; line was %.*s",
			          strerror(errno), (int)tl, text);
	}
	free(text);
}

/* ---- connections ---- */

static void conn_kill(struct admin_conn *c)
{
	if (c->dead)
		return;
	c->dead = 1;
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	event_active(c->adm->reap, EV_TIMEOUT, 0);
}

static void conn_free(struct admin_conn *c)
{
	bufferevent_free(c->bev);
	free(c);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct admin *adm = arg;
	struct admin_conn **pp = &adm->conns;
	while (*pp) {
		struct admin_conn *c = *pp;
		if (c->dead) {
			*pp = c->next;
			adm->n_conns--;
			conn_free(c);
		} else {
			pp = &c->next;
		}
	}
}

/* Queue one reply line; replace it by an error if it is too large. */
static void conn_reply(struct admin_conn *c, json_t *reply)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
	if (text && strlen(text) > ADMIN_REPLY_MAX) {
		free(text);
		text = NULL;
		evbuffer_add_printf(out,
		                    "{\"ok\":false,\"error\":\"reply larger than %d bytes\"}\n",
		                    ADMIN_REPLY_MAX);
		return;
	}
	if (!text) {
		evbuffer_add_printf(out, "{\"ok\":false,\"error\":\"out of memory\"}\n");
		return;
	}
	evbuffer_add(out, text, strlen(text));
	evbuffer_add(out, "\n", 1);
	free(text);
}

/* Answer an error and close once it is written. */
static void conn_fail(struct admin_conn *c, const char *msg)
{
	json_t *r = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
	conn_reply(c, r);
	json_decref(r);
	c->closing = 1;
	bufferevent_disable(c->bev, EV_READ);
}

static int peer_allowed(const struct admin *adm, uid_t uid)
{
	if (adm->n_allow == 0)
		return 1;
	for (size_t i = 0; i < adm->n_allow; i++) {
		if (adm->allow[i] == uid)
			return 1;
	}
	return 0;
}

static void conn_line(struct admin_conn *c, const char *line, size_t len)
{
	struct admin *adm = c->adm;
	if (!peer_allowed(adm, c->uid)) {
		/* a reload took this uid out of admin.allow_uids while it was connected */
		char msg[128];
		snprintf(msg, sizeof(msg), "permission denied: uid %ld is not in admin.allow_uids",
		         (long)c->uid);
		log_warn("admin: %s: refused peer uid %ld pid %ld (no longer in admin.allow_uids)",
		         adm->path, (long)c->uid, (long)c->pid);
		conn_fail(c, msg);
		return;
	}
	const struct admin_command *which = NULL;
	json_t *reply =
	    admin_dispatch(adm->cmds, adm->n_cmds, adm->ctx, c->uid, c->pid, line, len, &which);
	if (which && which->mutating)
		audit(adm, c->uid, c->pid, line, len, reply);
	conn_reply(c, reply);
	json_decref(reply);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct admin_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char line[ADMIN_LINE_MAX + 2];
	while (!c->closing && !c->dead) {
		struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
		if (eol.pos < 0) {
			if (evbuffer_get_length(in) > ADMIN_LINE_MAX + 1)
				conn_fail(c, "command line too long (limit 4096 bytes)");
			return;
		}
		if ((size_t)eol.pos > ADMIN_LINE_MAX + 1) {
			conn_fail(c, "command line too long (limit 4096 bytes)");
			return;
		}
		size_t n = (size_t)eol.pos;
		evbuffer_remove(in, line, n);
		evbuffer_drain(in, 1);
		conn_line(c, line, n);
		if (evbuffer_get_length(bufferevent_get_output(bev)) > ADMIN_OUT_MAX) {
			log_warn("admin: peer uid %ld pid %ld does not read its replies; closing",
			         (long)c->uid, (long)c->pid);
			conn_kill(c);
		}
	}
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct admin_conn *c = arg;
	if (c->closing)
		conn_kill(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct admin_conn *c = arg;
	if ((what & BEV_EVENT_EOF) && evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
		/* half-closed peer (shutdown(SHUT_WR)): flush what it asked for, then close */
		c->closing = 1;
		bufferevent_disable(bev, EV_READ);
		return;
	}
	conn_kill(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
	struct admin *adm = arg;
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
		log_warn("admin: %s: cannot read peer credentials: %s", adm->path, strerror(errno));
		evutil_closesocket(fd);
		return;
	}
	if (adm->n_conns >= ADMIN_MAX_CLIENTS) {
		static const char busy[] =
		    "{\"ok\":false,\"error\":\"too many admin connections\"}\n";
		log_warn("admin: refusing uid %ld pid %ld: %d connections open", (long)cred.uid,
		         (long)cred.pid, ADMIN_MAX_CLIENTS);
		(void)!write(fd, busy, sizeof(busy) - 1);
		evutil_closesocket(fd);
		return;
	}
	struct admin_conn *c = calloc(1, sizeof(*c));
	if (c)
		c->bev = bufferevent_socket_new(adm->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c || !c->bev) {
		log_error("admin: out of memory accepting a connection");
		free(c);
		evutil_closesocket(fd);
		return;
	}
	c->adm = adm;
	c->uid = cred.uid;
	c->pid = cred.pid;
	c->next = adm->conns;
	adm->conns = c;
	adm->n_conns++;
	struct timeval idle = {ADMIN_IDLE_S, 0};
	bufferevent_set_timeouts(c->bev, &idle, &idle);
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	if (!peer_allowed(adm, cred.uid)) {
		char msg[128];
		snprintf(msg, sizeof(msg), "permission denied: uid %ld is not in admin.allow_uids",
		         (long)cred.uid);
		log_warn("admin: %s: refused peer uid %ld pid %ld (not in admin.allow_uids)",
		         adm->path, (long)cred.uid, (long)cred.pid);
		conn_fail(c, msg);
		bufferevent_enable(c->bev, EV_WRITE);
		return;
	}
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* ---- the listening socket ---- */

/*
 * Is there a live server on path? 1 yes, 0 no (nothing there, or a stale
 * socket nobody listens on), -1 when path is something else (err set).
 */
static int path_in_use(const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (lstat(path, &st) != 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s: exists and is not a socket; not replacing it", path);
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int live = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	if (fd >= 0)
		close(fd);
	if (live) {
		snprintf(err, errlen, "%s: another process is serving on this socket", path);
		return -1;
	}
	return 0;
}

static int set_group(const char *path, const char *group, char *err, size_t errlen)
{
	struct group gr, *res = NULL;
	char buf[4096];
	int rc = getgrnam_r(group, &gr, buf, sizeof(buf), &res);
	if (rc != 0 || !res) {
		snprintf(err, errlen, "admin.group: no such group \"%s\"", group);
		return -1;
	}
	if (chown(path, (uid_t)-1, gr.gr_gid) != 0) {
		snprintf(err, errlen, "%s: cannot give it group %s: %s", path, group,
		         strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Bind a listening socket at opt->path. The socket is bound under a temporary
 * name, given its mode and group while nobody can connect yet (not listening),
 * and only then renamed over the final path: a client never sees a socket
 * with looser permissions, and a stale file is replaced in one step.
 */
static int make_socket(struct admin *adm, const struct admin_options *opt, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char tmp[sizeof(sa.sun_path)];
	struct stat st;
	if (snprintf(tmp, sizeof(tmp), "%s.%ld", opt->path, (long)getpid()) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long for a unix socket (limit %zu bytes)",
		         opt->path, sizeof(sa.sun_path) - 12);
		return -1;
	}
	if (path_in_use(opt->path, err, errlen) != 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "%s: socket: %s", opt->path, strerror(errno));
		return -1;
	}
	memcpy(sa.sun_path, tmp, strlen(tmp) + 1);
	unlink(tmp);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		snprintf(err, errlen, "admin.socket %s: cannot create %s: %s%s", opt->path, tmp,
		         strerror(errno), errno == ENOENT ? " (does its directory exist?)" : "");
		goto fail;
	}
	if (chmod(tmp, opt->group ? 0660 : 0600) != 0) {
		snprintf(err, errlen, "%s: chmod: %s", tmp, strerror(errno));
		goto fail_unlink;
	}
	if (opt->group && set_group(tmp, opt->group, err, errlen) != 0)
		goto fail_unlink;
	if (listen(fd, 16) != 0 || stat(tmp, &st) != 0) {
		snprintf(err, errlen, "%s: listen: %s", tmp, strerror(errno));
		goto fail_unlink;
	}
	if (rename(tmp, opt->path) != 0) {
		snprintf(err, errlen, "%s: cannot move socket into place: %s", opt->path,
		         strerror(errno));
		goto fail_unlink;
	}
	adm->dev = st.st_dev;
	adm->ino = st.st_ino;
	return fd;
fail_unlink:
	unlink(tmp);
fail:
	close(fd);
	return -1;
}

static int open_audit(const char *path, char *err, size_t errlen)
{
	if (!path)
		return -1;
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
	if (fd < 0)
		snprintf(err, errlen, "admin.audit_log: %s: cannot open: %s", path,
		         strerror(errno));
	return fd;
}

static int copy_allow(const struct admin_options *opt, uid_t **out)
{
	*out = NULL;
	if (opt->n_allow_uids == 0)
		return 0;
	*out = malloc(opt->n_allow_uids * sizeof(uid_t));
	if (!*out)
		return -1;
	memcpy(*out, opt->allow_uids, opt->n_allow_uids * sizeof(uid_t));
	return 0;
}

struct admin *admin_new(struct event_base *base, const struct admin_options *opt,
                        const struct admin_command *cmds, size_t n_cmds, void *ctx, char *err,
                        size_t errlen)
{
	struct admin *adm = calloc(1, sizeof(*adm));
	int fd = -1;
	if (!adm)
		goto oom;
	adm->audit_fd = -1;
	adm->base = base;
	adm->cmds = cmds;
	adm->n_cmds = n_cmds;
	adm->ctx = ctx;
	if (!opt->path || !opt->path[0]) {
		snprintf(err, errlen, "admin.socket: no path given");
		goto fail;
	}
	if (!(adm->path = strdup(opt->path)) || copy_allow(opt, &adm->allow) != 0)
		goto oom;
	adm->n_allow = opt->n_allow_uids;
	if (!(adm->reap = event_new(base, -1, 0, on_reap, adm)))
		goto oom;
	if (opt->audit_log && (adm->audit_fd = open_audit(opt->audit_log, err, errlen)) < 0)
		goto fail;
	if ((fd = make_socket(adm, opt, err, errlen)) < 0)
		goto fail;
	adm->listener = evconnlistener_new(base, on_accept, adm, LEV_OPT_CLOSE_ON_FREE, 0, fd);
	if (!adm->listener) {
		snprintf(err, errlen, "%s: cannot watch the socket", opt->path);
		unlink(opt->path);
		close(fd);
		goto fail;
	}
	log_info("admin: listening on %s (mode %s%s, %s)", adm->path,
	         opt->group ? "0660, group " : "0600", opt->group ? opt->group : "",
	         adm->n_allow ? "uids restricted by admin.allow_uids" : "any uid with access");
	return adm;
oom:
	snprintf(err, errlen, "admin: out of memory");
fail:
	if (adm)
		adm->ino = 0; /* the socket file, if any, is not ours to remove */
	admin_free(adm);
	return NULL;
}

int admin_reconfigure(struct admin *adm, const struct admin_options *opt, char *err, size_t errlen)
{
	uid_t *allow = NULL;
	int fd = -1;
	if (copy_allow(opt, &allow) != 0) {
		snprintf(err, errlen, "admin: out of memory");
		return -1;
	}
	if (opt->audit_log && (fd = open_audit(opt->audit_log, err, errlen)) < 0) {
		free(allow);
		return -1;
	}
	free(adm->allow);
	adm->allow = allow;
	adm->n_allow = opt->n_allow_uids;
	if (adm->audit_fd >= 0)
		close(adm->audit_fd);
	adm->audit_fd = fd;
	return 0;
}

const char *admin_path(const struct admin *adm)
{
	return adm->path;
}

void admin_free(struct admin *adm)
{
	if (!adm)
		return;
	if (adm->listener)
		evconnlistener_free(adm->listener);
	struct stat st;
	/* Remove the socket only if it is still the one we made (a newer
	 * instance may have replaced it). */
	if (adm->path && adm->ino != 0 && lstat(adm->path, &st) == 0 && st.st_ino == adm->ino &&
	    st.st_dev == adm->dev)
		unlink(adm->path);
	while (adm->conns) {
		struct admin_conn *c = adm->conns;
		adm->conns = c->next;
		conn_free(c);
	}
	if (adm->reap)
		event_free(adm->reap);
	if (adm->audit_fd >= 0)
		close(adm->audit_fd);
	free(adm->allow);
	free(adm->path);
	free(adm);
}
