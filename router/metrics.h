/*
 * metrics.h - observability on the admin HTTP server (main thread):
 * GET /metrics (Prometheus text exposition of the merged stats), GET / (the
 * dashboard, embedded into the binary at build time from router/web/) and
 * GET /status/history (a bounded ring of per-second samples that the
 * dashboard charts).
 *
 * Label sets are bounded: variant names and rule paths come from the config,
 * codes and causes from fixed enums; nothing is derived from a request.
 *
 * Events that only the main thread sees (reloads, rollbacks, operator
 * actions) are noted here by their owners with metrics_note_*; they are kept
 * in process-wide counters guarded by a mutex (any thread may call them).
 */
#ifndef TURNOUT_METRICS_H
#define TURNOUT_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evhttp;
struct stats;
struct metrics;

#define METRICS_TEXT_MAX    (8u * 1024 * 1024) /* hard limit of one /metrics answer */
#define METRICS_HISTORY_MAX 300                /* per-second samples kept (5 minutes) */
#define METRICS_ACTIONS_MAX 32                 /* recent operator actions kept */
#define METRICS_ACTION_LEN  240                /* bytes kept of one action's text */

/*
 * Serve /metrics, / and /status/history on http (the admin server, borrowed)
 * from st (borrowed), and sample st once a second on base for the history.
 * Both must outlive the result. Returns NULL with a reason in err. Free with
 * metrics_free (before the evhttp and base go).
 */
struct metrics *metrics_new(struct event_base *base, struct evhttp *http, struct stats *st,
                            char *err, size_t errlen);

/* Stop sampling and free. Accepts NULL. The paths stay registered; free the evhttp too. */
void metrics_free(struct metrics *m);

/*
 * The Prometheus text of st and the current route snapshot (caller frees
 * with free()); *len gets its length. NULL on allocation failure or when the
 * text would pass METRICS_TEXT_MAX.
 */
char *metrics_render(struct stats *st, size_t *len);

/*
 * The /status/history JSON document of m (caller frees with free()), or NULL
 * on allocation failure.
 */
char *metrics_history_json(struct metrics *m);

/*
 * The fields GET /status adds for the operator (status_set_extra): what ops
 * reports (ops_status_json of ops, a struct ops * or NULL), "recent_actions"
 * (oldest first) and "rollbacks". New reference; NULL on allocation failure.
 * Main thread.
 */
struct json_t *metrics_status_extra(void *ops);

/* Take one history sample now (what the 1 s timer does; tests call it). */
void metrics_sample(struct metrics *m);

/* A config reload ended: ok = 1 in force (or unchanged), 0 refused. Any thread. */
void metrics_note_reload(int ok);
/* A rollback was put in force. Any thread. */
void metrics_note_rollback(void);
/*
 * An operator action (e.g. "uid 1000: canary green 25 -> ok"), kept in a ring
 * of METRICS_ACTIONS_MAX, truncated to METRICS_ACTION_LEN. Any thread.
 */
void metrics_note_action(const char *text);
/* Forget the counters and actions above (tests, exit). */
void metrics_events_reset(void);

/* Escape s as a Prometheus label value into out (always terminated; truncated to outlen). */
void metrics_label_escape(const char *s, char *out, size_t outlen);

#endif
