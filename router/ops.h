/*
 * ops.h - operations glue: the admin commands, live reload, rollback.
 *
 * Ties together the admin socket (admin.c), the persisted overrides (state.c),
 * the config watcher (watch.c) and the route snapshot (route.c). It lives on
 * the main thread, the only writer of routing state: every command and every
 * reload ends, when it changes anything, in one new snapshot published
 * atomically, so in-flight requests finish on the snapshot they started with.
 *
 * Reload: config_load -> refused with FILE:LINE:COL (kept for `status`, the
 * running snapshot stays) | unchanged hash (nothing to do; overrides hold) |
 * changed: overrides are lifted (the file is the source of truth again), a new
 * snapshot is published. Settings that need new sockets (listen address,
 * workers, admin socket, admin HTTP, TLS certificates) are refused with
 * "restart needed".
 */
#ifndef TURNOUT_OPS_H
#define TURNOUT_OPS_H

#include <stddef.h>

#include <jansson.h>

struct event_base;
struct stats;
struct ops;

/*
 * Start operations on the main thread's base. A route snapshot made from the
 * config at config_path must already be published (route_publish). ops_new
 * loads the state file the config names (a corrupt one is set aside and
 * reported, not fatal), applies the overrides that still hold and
 * republishes, then starts the admin socket (when admin.socket is set) and the
 * config watcher. stats is borrowed (for `status` and `stats`; may be NULL
 * until ops_set_stats). Returns the ops object (free with ops_free), or NULL
 * with the reason in err (the admin socket could not be created, ...).
 */
struct ops *ops_new(struct event_base *base, const char *config_path, struct stats *stats,
                    char *err, size_t errlen);

/* Give ops the stats it reports (borrowed; must outlive ops). */
void ops_set_stats(struct ops *o, struct stats *stats);

/*
 * Reload the config now (what SIGHUP, the watcher and `turnoutctl reload` do).
 * Returns 0 when a new config is in force, 1 when the file is unchanged, -1
 * when it was refused: err holds the reason (FILE:LINE:COL lines) and the
 * running config stays.
 */
int ops_reload(struct ops *o, char *err, size_t errlen);

/*
 * observability: the operations part of `turnoutctl status` ("override",
 * "last_reload", "started_at", "restart_pending") as a new JSON object for
 * GET /status (caller decrefs); an empty object when o is NULL, NULL on
 * allocation failure. Main thread.
 */
json_t *ops_status_json(struct ops *o);

/* Stop the admin socket and the watcher. Accepts NULL. */
void ops_free(struct ops *o);

#endif
