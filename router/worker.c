/*
 * worker.c - a request-serving thread: event_base + the front end (front.c)
 * on its own SO_REUSEPORT socket + upstream engine + stats shard.
 *
 * Draining: the main thread activates drain_ev (thread-safe with
 * evthread_use_pthreads); on the worker's thread we close the listening
 * socket, let in-flight requests finish, and leave the loop when none is left
 * or when the drain deadline passes (remaining requests get 503).
 *
 * The front end keeps the connection limit (limits.max_connections, this
 * worker's share): past it a new connection's request gets 503 and close.
 */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "log.h"
#include "proxy.h"
#include "front.h"
#include "shadow.h" /* shadow (engineer F): shadow_worker_free */
#include "stats.h"  /* observability: connection gauge */
#include "tls.h"
#include "upstream.h"

int worker_listen_socket(const char *host, int port, char *err, size_t errlen)
{
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	int rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "listen %s:%d: %s", host, port, gai_strerror(rc));
		return -1;
	}
	int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 1024) < 0)
		goto fail;
	freeaddrinfo(res);
	return fd;
fail:
	snprintf(err, errlen, "listen %s:%d: %s", host, port, strerror(errno));
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return -1;
}

static void on_request(struct front_req *req, void *arg)
{
	proxy_handle(req, arg);
}

static void leave_if_idle(struct worker *w)
{
	if (w->draining && w->inflight == 0 && front_unflushed(w->front) == 0)
		event_base_loopexit(w->base, NULL);
}

static void on_drain_deadline(evutil_socket_t fd, short events, void *arg)
{
	struct worker *w = arg;
	if (w->drain_expired) {
		/* Answers still unwritten a second after the deadline: give up on them. */
		event_base_loopexit(w->base, NULL);
		return;
	}
	w->drain_expired = 1;
	if (w->inflight)
		log_warn("worker %zu: drain timeout, answering %zu request(s) with 503", w->index,
		         w->inflight);
	proxy_abort_all(w);
	struct timeval tv = {1, 0};
	evtimer_add(w->drain_timer, &tv);
	leave_if_idle(w);
}

static void on_drain(evutil_socket_t fd, short events, void *arg)
{
	struct worker *w = arg;
	if (w->draining)
		return;
	w->draining = 1;
	front_drain(w->front); /* stop accepting, close idle connections */
	struct timeval tv = {w->drain_timeout_ms / 1000, (w->drain_timeout_ms % 1000) * 1000};
	evtimer_add(w->drain_timer, &tv);
	leave_if_idle(w);
}

void worker_request_done(struct worker *w)
{
	leave_if_idle(w);
}

static void on_flushed(void *arg)
{
	leave_if_idle(arg);
}

/* The front end's connection count, into this worker's stats shard. */
static void on_conns(size_t n, void *arg)
{
	struct worker *w = arg;
	if (w->shard)
		stats_gauge_set(w->shard, STATS_GAUGE_CONNS, n);
}

static int setup_front(struct worker *w, int listen_fd, const struct config *cfg, size_t n_workers,
                       char *err, size_t errlen)
{
	uint32_t max_conns =
	    (cfg->limits.max_connections + (uint32_t)n_workers - 1) / (uint32_t)n_workers;
	struct front_config fc = {
	    .max_header = cfg->limits.max_header,
	    .max_body = cfg->limits.max_body,
	    .client_timeout_ms = cfg->limits.client_timeout_ms,
	    .max_conns = max_conns ? max_conns : 1,
	    .new_ssl = cfg->tls.cert ? tls_server_ssl_new : NULL,
	    .on_conns = on_conns,
	    .on_request = on_request,
	    .on_flushed = on_flushed,
	    .arg = w,
	};
	w->front = front_new(w->base, listen_fd, &fc, err, errlen);
	return w->front ? 0 : -1;
}

struct worker *worker_new(size_t index, int listen_fd, const struct config *cfg, size_t n_workers,
                          struct stats_shard *shard, char *err, size_t errlen)
{
	struct worker *w = calloc(1, sizeof(*w));
	if (w == NULL)
		goto fail;
	w->index = index;
	w->shard = shard;
	w->drain_timeout_ms = cfg->limits.drain_timeout_ms;
	/* No epoll changelist: the front end and h1client keep their events armed
	 * (no per-request epoll_ctl left to batch), and libevent documents the
	 * changelist as unsafe with dup()ed descriptors; in the predictor a new
	 * connection reusing a just-closed descriptor went unwatched with it. */
	w->base = event_base_new();
	if (w->base == NULL)
		goto fail;
	w->drain_ev = event_new(w->base, -1, 0, on_drain, w);
	w->drain_timer = evtimer_new(w->base, on_drain_deadline, w);
	if (w->drain_ev == NULL || w->drain_timer == NULL)
		goto fail;
	w->up = upstream_new(w->base, 1024, err, errlen);
	if (w->up == NULL)
		goto fail_quiet;
	if (setup_front(w, listen_fd, cfg, n_workers, err, errlen) < 0) {
		listen_fd = -1; /* front_new owns it, even on failure */
		goto fail_quiet;
	}
	return w;
fail:
	snprintf(err, errlen, "worker %zu: cannot set up its event loop", index);
fail_quiet:
	if (listen_fd >= 0)
		close(listen_fd);
	worker_free(w);
	return NULL;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char name[16];
	snprintf(name, sizeof(name), "worker-%zu", w->index % 100000);
	pthread_setname_np(pthread_self(), name); /* top -H, perf, strace -p by thread */
	log_debug("worker %zu: running", w->index);
	event_base_dispatch(w->base);
	log_debug("worker %zu: loop ended", w->index);
	return NULL;
}

int worker_start(struct worker *w, char *err, size_t errlen)
{
	int rc = pthread_create(&w->thread, NULL, worker_main, w);
	if (rc != 0) {
		snprintf(err, errlen, "worker %zu: cannot start thread: %s", w->index,
		         strerror(rc));
		return -1;
	}
	w->started = 1;
	return 0;
}

void worker_drain(struct worker *w)
{
	event_active(w->drain_ev, EV_READ, 0);
}

void worker_join(struct worker *w)
{
	if (w->started) {
		pthread_join(w->thread, NULL);
		w->started = 0;
	}
}

void worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	if (w->reqs)
		proxy_abort_all(w);
	front_free(w->front); /* closes the listener and every client connection */
	upstream_free(w->up);
	shadow_worker_free(w); /* shadow (engineer F): after upstream_free: no more callbacks */
	if (w->drain_ev)
		event_free(w->drain_ev);
	if (w->drain_timer)
		event_free(w->drain_timer);
	if (w->base)
		event_base_free(w->base);
	free(w);
}
