/*
 * worker.h - one request-serving thread: its own event_base, the proxy
 * listener's front end (front.c) on its own SO_REUSEPORT listening socket,
 * upstream engine (struct upstream) and stats shard. Nothing here is shared with other workers; the
 * routing snapshot is read through route_acquire.
 *
 * The layout is public because proxy.c (the request's life on this worker)
 * needs the worker's loop, upstream engine and shard, and shadow.c keeps its
 * per-worker state (with the worker's shadow thread) in `shadow`.
 */
#ifndef TURNOUT_WORKER_H
#define TURNOUT_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct event;
struct event_base;
struct upstream;
struct stats_shard;
struct proxy_req;
struct front;

struct worker {
	size_t index;
	pthread_t thread;
	int started;
	struct event_base *base;
	struct front *front; /* the proxy listener's connections */
	struct upstream *up;
	struct stats_shard *shard;
	struct event *drain_ev;    /* activated by worker_drain from the main thread */
	struct event *drain_timer; /* drain deadline */
	uint32_t drain_timeout_ms;
	int draining;
	size_t inflight;        /* live requests being proxied */
	int drain_expired;      /* the drain deadline passed: leaving soon regardless */
	struct proxy_req *reqs; /* those requests (proxy.c) */
	void *shadow;           /* shadow.c's per-worker state and shadow thread */
};

/*
 * A listening TCP socket on host:port with SO_REUSEADDR and SO_REUSEPORT,
 * non-blocking. Returns the fd, or -1 with a reason in err.
 */
int worker_listen_socket(const char *host, int port, char *err, size_t errlen);

/*
 * A worker that will accept on listen_fd (ownership passes, even on failure)
 * with the limits of cfg, recording into shard. Returns NULL with a reason in
 * err. Free with worker_free after worker_join.
 */
struct worker *worker_new(size_t index, int listen_fd, const struct config *cfg, size_t n_workers,
                          struct stats_shard *shard, char *err, size_t errlen);

/* Start the thread. Returns 0, or -1 with a reason in err. */
int worker_start(struct worker *w, char *err, size_t errlen);

/*
 * Ask the worker to stop accepting and finish in-flight requests (up to the
 * drain timeout), then leave its loop. Any thread; returns at once.
 */
void worker_drain(struct worker *w);

/* Wait for the thread to end (after worker_drain). */
void worker_join(struct worker *w);

/* Free everything the worker owns. Accepts NULL. The thread must have ended. */
void worker_free(struct worker *w);

/*
 * Called by proxy.c when a live request ends or an answer is fully written:
 * ends the loop if draining and nothing is left to answer or flush
 * (front_unflushed).
 */
void worker_request_done(struct worker *w);

#endif
