/*
 * status.h - the admin HTTP server (main thread): GET /status as JSON.
 *
 * It runs on the main thread's event_base, apart from the workers, so that a
 * saturated data path never hides the router's state. Other admin pages
 * (/metrics, the dashboard) can be added with status_http().
 */
#ifndef TURNOUT_STATUS_H
#define TURNOUT_STATUS_H

#include <stddef.h>

struct event_base;
struct evhttp;
struct stats;
struct status;

/*
 * An admin HTTP server on host:port serving GET /status from the current
 * route snapshot and st (borrowed; must outlive the server). Returns NULL
 * with a reason in err. Free with status_free.
 */
struct status *status_new(struct event_base *base, const char *host, int port, struct stats *st,
                          char *err, size_t errlen);

/* Stop serving and free. Accepts NULL. */
void status_free(struct status *s);

/* The underlying evhttp, for other rooms to add paths with evhttp_set_cb. */
struct evhttp *status_http(struct status *s);

/*
 * observability: fn(arg) returns a new JSON object whose fields are added to
 * every /status document (fields /status already has are kept as they are;
 * NULL from fn adds nothing). Main thread; fn runs on the main thread.
 */
typedef struct json_t *(*status_extra_fn)(void *arg);
void status_set_extra(struct status *s, status_extra_fn fn, void *arg);

/*
 * The /status document (caller frees with free()), or NULL on allocation
 * failure.
 */
char *status_json(struct stats *st);

#endif
