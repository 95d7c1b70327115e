/*
 * worker.c - a request-serving thread: event_base + evhttp on its own
 * SO_REUSEPORT socket + libcurl multi + stats shard.
 *
 * Draining: the main thread activates drain_ev (thread-safe with
 * evthread_use_pthreads); on the worker's thread we close the listening
 * socket, let in-flight requests finish, and leave the loop when none is left
 * or when the drain deadline passes (remaining requests get 503).
 *
 * evhttp 2.1.12 has no connection limit: each connection that sends a request
 * is remembered in a small open-addressing set (with a close callback); past
 * this worker's share of limits.max_connections a new one gets 503 and close.
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
#include <event2/http.h>

#include "log.h"
#include "proxy.h"
#include "tls.h"    /* resilience: TLS listener */
#include "shadow.h" /* shadow (engineer F): shadow_worker_free */
#include "stats.h"  /* observability: connection gauge */
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

static size_t conn_hash(const void *p, size_t cap)
{
	uint64_t x = (uint64_t)(uintptr_t)p;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (size_t)(x & (cap - 1));
}

static int conn_known(struct worker *w, void *c)
{
	for (size_t i = conn_hash(c, w->conn_set_cap), n = 0; n < w->conn_set_cap;
	     i = (i + 1) & (w->conn_set_cap - 1), n++) {
		if (w->conn_set[i] == c)
			return 1;
		if (w->conn_set[i] == NULL)
			return 0;
	}
	return 0;
}

static void conn_insert(struct worker *w, void *c)
{
	size_t i = conn_hash(c, w->conn_set_cap);
	while (w->conn_set[i] != NULL)
		i = (i + 1) & (w->conn_set_cap - 1);
	w->conn_set[i] = c;
	w->conns++;
	stats_gauge_set(w->shard, STATS_GAUGE_CONNS, w->conns); /* observability */
}

/* Remove with backward-shift so probing stays correct without tombstones. */
static void conn_remove(struct worker *w, void *c)
{
	size_t mask = w->conn_set_cap - 1, i = conn_hash(c, w->conn_set_cap);
	for (size_t n = 0; w->conn_set[i] != c; i = (i + 1) & mask, n++)
		if (w->conn_set[i] == NULL || n >= w->conn_set_cap)
			return;
	w->conn_set[i] = NULL;
	w->conns--;
	stats_gauge_set(w->shard, STATS_GAUGE_CONNS, w->conns); /* observability */
	for (size_t j = (i + 1) & mask; w->conn_set[j] != NULL; j = (j + 1) & mask) {
		void *moved = w->conn_set[j];
		size_t home = conn_hash(moved, w->conn_set_cap);
		/* moved may fill the hole at i if its home is not in (i, j]. */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			w->conn_set[i] = moved;
			w->conn_set[j] = NULL;
			i = j;
		}
	}
}

void worker_conn_closed(struct evhttp_connection *c, void *arg)
{
	conn_remove(arg, c);
}

/* resilience: 400 + close for a request whose head the listener guard found bad. */
static void refuse_head(struct worker *w, struct evhttp_request *req, const char *why)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	evhttp_add_header(out, "Connection", "close");
	evhttp_add_header(out, "Content-Type", "application/json");
	struct evbuffer *b = evbuffer_new();
	if (b) /* why is one of tls.c's fixed sentences: no JSON escaping needed */
		evbuffer_add_printf(b, "{\"error\":\"%s\",\"cause\":\"bad_header\"}\n", why);
	proxy_send_reply(w, req, 400, b);
	if (b)
		evbuffer_free(b);
	log_info("worker %zu: request refused (400): %s", w->index, why);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct worker *w = arg;
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	/* resilience: a whole request arrived: the slowloris clock stops; a bad head is refused */
	const char *bad =
	    c ? tls_listener_request(w->listener, evhttp_connection_get_bufferevent(c)) : NULL;
	if (bad != NULL) {
		refuse_head(w, req, bad);
		return;
	}
	if (c != NULL && !conn_known(w, c)) {
		if (w->conns >= w->max_conns) {
			struct evkeyvalq *out = evhttp_request_get_output_headers(req);
			evhttp_add_header(out, "Connection", "close");
			evhttp_add_header(out, "Retry-After", "1");
			evhttp_add_header(out, "Content-Type", "application/json");
			struct evbuffer *b = evbuffer_new();
			if (b)
				evbuffer_add_printf(b, "{\"error\":\"too many client connections\","
				                       "\"cause\":\"max_connections\"}\n");
			proxy_send_reply(w, req, 503, b);
			if (b)
				evbuffer_free(b);
			return;
		}
		conn_insert(w, c);
		evhttp_connection_set_closecb(c, worker_conn_closed, w);
	}
	proxy_handle(req, w);
}

static void leave_if_idle(struct worker *w)
{
	if (w->draining && w->inflight == 0 && w->unflushed == 0)
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
	if (w->bound) {
		evhttp_del_accept_socket(w->http, w->bound);
		w->bound = NULL;
	}
	struct timeval tv = {w->drain_timeout_ms / 1000, (w->drain_timeout_ms % 1000) * 1000};
	evtimer_add(w->drain_timer, &tv);
	leave_if_idle(w);
}

void worker_request_done(struct worker *w)
{
	leave_if_idle(w);
}

static int setup_http(struct worker *w, int listen_fd, const struct config *cfg)
{
	w->http = evhttp_new(w->base);
	if (w->http == NULL)
		return -1;
	evhttp_set_gencb(w->http, on_request, w);
	/* resilience: every client connection's bufferevent comes from the listener
	 * guard (TLS when tls.cert is set; slowloris cut-off at client_timeout) */
	evhttp_set_bevcb(w->http, tls_listener_bevcb, w->listener);
	evhttp_set_default_content_type(w->http, NULL);
	/* resilience: CONNECT is let in to be refused by proxy.c: evhttp's own 501
	 * for it keeps the connection open, and the listener guard would then not
	 * see where the next request starts (its head would go unchecked). */
	evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                        EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH |
	                                        EVHTTP_REQ_CONNECT);
	evhttp_set_max_body_size(w->http, (ev_ssize_t)cfg->limits.max_body);
	evhttp_set_max_headers_size(w->http, (ev_ssize_t)cfg->limits.max_header);
	struct timeval tv = {cfg->limits.client_timeout_ms / 1000,
	                     (cfg->limits.client_timeout_ms % 1000) * 1000};
	evhttp_set_timeout_tv(w->http, &tv);
	w->bound = evhttp_accept_socket_with_handle(w->http, listen_fd);
	return w->bound ? 0 : -1;
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
	w->max_conns =
	    (cfg->limits.max_connections + (uint32_t)n_workers - 1) / (uint32_t)n_workers;
	if (w->max_conns == 0)
		w->max_conns = 1;
	for (w->conn_set_cap = 16; w->conn_set_cap < 2 * (size_t)w->max_conns;)
		w->conn_set_cap *= 2;
	w->conn_set = calloc(w->conn_set_cap, sizeof(*w->conn_set));
	struct event_config *ecfg = event_config_new();
	if (ecfg != NULL) {
		/* perf: batch epoll_ctl changes per loop turn (write enable/disable pairs). */
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
		w->base = event_base_new_with_config(ecfg);
		event_config_free(ecfg);
	}
	if (w->conn_set == NULL || w->base == NULL)
		goto fail;
	w->drain_ev = event_new(w->base, -1, 0, on_drain, w);
	w->drain_timer = evtimer_new(w->base, on_drain_deadline, w);
	if (w->drain_ev == NULL || w->drain_timer == NULL)
		goto fail;
	w->up = upstream_new(w->base, 1024, err, errlen);
	if (w->up == NULL)
		goto fail_quiet;
	w->listener = tls_listener_new(w->base, cfg->limits.client_timeout_ms,
	                               cfg->tls.cert != NULL, err, errlen); /* resilience */
	if (w->listener == NULL)
		goto fail_quiet;
	if (setup_http(w, listen_fd, cfg) < 0)
		goto fail;
	return w;
fail:
	snprintf(err, errlen, "worker %zu: cannot set up its event loop", index);
fail_quiet:
	if (w == NULL || w->bound == NULL)
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
	if (w->http)
		evhttp_free(w->http);   /* closes the listener and every client connection */
	tls_listener_free(w->listener); /* resilience: after evhttp let go of its connections */
	upstream_free(w->up);
	shadow_worker_free(w); /* shadow (engineer F): after upstream_free: no more callbacks */
	if (w->drain_ev)
		event_free(w->drain_ev);
	if (w->drain_timer)
		event_free(w->drain_timer);
	if (w->base)
		event_base_free(w->base);
	free(w->conn_set);
	free(w);
}
