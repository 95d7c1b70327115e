/*
 * admin.h - the admin unix socket: a line protocol for turnoutctl.
 *
 * One command per line ("switch green\n"), words separated by blanks; one JSON
 * object per line in reply: {"ok":true,...} or {"ok":false,"error":"..."}.
 * The server runs on the main thread's event_base. What the commands do is not
 * known here: the caller (ops.c) passes a table of small handlers. Peers are
 * identified with SO_PEERCRED and may be restricted to a list of uids; every
 * mutating command is appended to an audit log, one JSON line each.
 *
 * admin_parse_line and admin_dispatch are pure (no socket, no I/O) so that the
 * unit tests and the fuzzer drive the protocol without a server.
 */
#ifndef TURNOUT_ADMIN_H
#define TURNOUT_ADMIN_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

struct event_base;
struct admin;

#define ADMIN_LINE_MAX    4096              /* bytes per command line, without the newline */
#define ADMIN_MAX_ARGS    16                /* words per line, the command name included */
#define ADMIN_REPLY_MAX   (1024 * 1024)     /* a larger reply is replaced by an error */
#define ADMIN_MAX_CLIENTS 32                /* concurrent connections; more are refused */
#define ADMIN_OUT_MAX     (4 * 1024 * 1024) /* unread replies held for a peer before closing it */
#define ADMIN_IDLE_S      60                /* a connection idle this long is closed */

/* A parsed command line: argv[0] is the command name; the words point into buf. */
struct admin_argv {
	int argc;
	char *argv[ADMIN_MAX_ARGS];
	char buf[ADMIN_LINE_MAX + 1];
};

/* Who asked, and what. */
struct admin_call {
	uid_t uid;
	pid_t pid;
	int argc;
	char *const *argv; /* argv[0] is the command name */
};

/*
 * One command of the table. A handler adds its result fields to reply (at
 * least "message", a one-line human summary) and returns 0, or returns -1
 * with the reason in err. It runs on the main thread and must not block.
 */
struct admin_command {
	const char *name;
	const char *usage; /* "canary PERCENT" */
	int min_args;      /* words after the name */
	int max_args;
	int mutating; /* 1: audited */
	int (*fn)(void *ctx, const struct admin_call *call, json_t *reply, char *err,
	          size_t errlen);
};

struct admin_options {
	const char *path;        /* socket path; required */
	const char *group;       /* NULL: mode 0600; else mode 0660 and this group */
	const uid_t *allow_uids; /* copied; n_allow_uids 0 = any peer that can connect */
	size_t n_allow_uids;
	const char *audit_log; /* NULL: audit lines go to the log (stderr) */
};

/*
 * Split one command line (without its newline; a trailing CR is dropped) into
 * words. Words are runs of printable ASCII separated by spaces or tabs.
 * Returns 0, or -1 with the reason in err (empty line, line too long, too many
 * words, a control or non-ASCII byte and its offset).
 */
int admin_parse_line(const char *line, size_t len, struct admin_argv *out, char *err,
                     size_t errlen);

/*
 * Parse line and run the matching command of cmds (plus the built-in "help").
 * Returns the reply object (caller owns the reference; NULL only when out of
 * memory) with "ok" set. *which is set to the command run, or NULL when the
 * line did not parse or named no command (which may be NULL).
 */
json_t *admin_dispatch(const struct admin_command *cmds, size_t n_cmds, void *ctx, uid_t uid,
                       pid_t pid, const char *line, size_t len, const struct admin_command **which);

/*
 * Start the server: create the socket at opt->path (a stale socket file left by
 * a dead process is replaced; a live one, or a file that is not a socket, is
 * an error), restrict its mode, open the audit log, and serve on base. cmds
 * and ctx are borrowed and must outlive the server; opt is copied.
 * Returns the server (free with admin_free), or NULL with the reason in err.
 */
struct admin *admin_new(struct event_base *base, const struct admin_options *opt,
                        const struct admin_command *cmds, size_t n_cmds, void *ctx, char *err,
                        size_t errlen);

/*
 * Change the uid allow list and the audit log of a running server (a reload).
 * Path and group need a new socket: the caller refuses those. Returns 0, or
 * -1 with the reason in err and the server unchanged.
 */
int admin_reconfigure(struct admin *adm, const struct admin_options *opt, char *err, size_t errlen);

/* The socket path being served (owned by adm). */
const char *admin_path(const struct admin *adm);

/* Stop serving: close every connection, remove the socket file if it is still
 * ours, close the audit log. Accepts NULL. */
void admin_free(struct admin *adm);

#endif
