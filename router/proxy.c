/*
 * proxy.c - one live request's life: evhttp in, libcurl out, and back.
 *
 * States: NEW (checked, routed) -> UPSTREAM (transfer running) -> DONE
 * (answered, freed). proxy_set_state is the one place that changes state.
 * The request keeps the route snapshot it took on arrival until it is
 * answered, so a switch or reload never changes a request midway.
 *
 * The client's framing headers are checked here (evhttp 2.1.12 accepts
 * duplicate Content-Length) and never forwarded: libcurl frames the upstream
 * request itself. Hop-by-hop headers are dropped both ways (RFC 9110 7.6.1).
 */
#include "proxy.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "accesslog.h" /* observability: access log lines */
#include "health.h"    /* resilience: passive health reports */
#include "log.h"
#include "route.h"
#include "shadow.h" /* shadow (engineer F): the SHADOW HOOK below */
#include "stats.h"
#include "upstream.h"
#include "worker.h"

#define PROXY_MAX_RESPONSE   (256u * 1024u * 1024u) /* upstream response body limit */
#define PROXY_REQUEST_ID_MAX 128
#define PROXY_HEAD_SCRATCH   (32 * 1024) /* per-thread upstream header block */
#define PROXY_URI_MAX        8000        /* resilience: a longer request target gets 414 */
#define PROXY_MAX_HEADERS    100         /* resilience: more header fields get 431 */

enum proxy_state {
	PROXY_STATE_NEW,
	PROXY_STATE_UPSTREAM,
	PROXY_STATE_DONE,
};

struct proxy_req {
	struct worker *w;
	struct evhttp_request *req;
	struct route_snapshot *snap;
	enum proxy_state state;
	size_t variant;
	ssize_t endpoint;
	struct upstream_transfer *xfer;
	uint64_t start_us;
	char request_id[PROXY_REQUEST_ID_MAX + 1];
	struct proxy_req *prev, *next;
	int retried; /* resilience: the one retry after a connect failure was used */
};

static const char *method_name(enum evhttp_cmd_type c);

static const char *state_name(enum proxy_state s)
{
	switch (s) {
	case PROXY_STATE_NEW:
		return "new";
	case PROXY_STATE_UPSTREAM:
		return "upstream";
	case PROXY_STATE_DONE:
		return "done";
	}
	return "?";
}

static void proxy_set_state(struct proxy_req *pr, enum proxy_state to)
{
	int ok = (pr->state == PROXY_STATE_NEW && to != PROXY_STATE_NEW) ||
	         (pr->state == PROXY_STATE_UPSTREAM && to == PROXY_STATE_DONE) ||
	         /* resilience: one retry after a connect failure (retry_connect) */
	         (pr->state == PROXY_STATE_UPSTREAM && to == PROXY_STATE_UPSTREAM && pr->retried);
	if (!ok) {
		log_error("proxy: impossible state change %s -> %s", state_name(pr->state),
		          state_name(to));
		abort();
	}
	log_debug("proxy: request %s %s -> %s", pr->request_id, state_name(pr->state),
	          state_name(to));
	pr->state = to;
}

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static const char *const hop_by_hop[] = {
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
};

/* Whether name is one of the comma-separated tokens of a Connection header. */
static int in_token_list(const char *list, const char *name)
{
	size_t n = strlen(name);
	const char *p = list;
	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *start = p;
		while (*p && *p != ',' && *p != ' ' && *p != '\t')
			p++;
		if ((size_t)(p - start) == n && strncasecmp(start, name, n) == 0)
			return 1;
		while (*p && *p != ',')
			p++;
	}
	return 0;
}

int proxy_is_hop_by_hop(const char *name, const char *connection)
{
	int first = name[0] | 0x20; /* most names differ at once: no strcasecmp call */
	for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++)
		if ((hop_by_hop[i][0] | 0x20) == first && strcasecmp(name, hop_by_hop[i]) == 0)
			return 1;
	return connection != NULL && in_token_list(connection, name);
}

static int valid_content_length(const char *v)
{
	while (*v == ' ' || *v == '\t')
		v++;
	if (!isdigit((unsigned char)*v))
		return 0;
	while (isdigit((unsigned char)*v))
		v++;
	while (*v == ' ' || *v == '\t')
		v++;
	return *v == '\0';
}

int proxy_check_framing(const struct evkeyvalq *headers, char *err, size_t errlen)
{
	int n_cl = 0, n_te = 0;
	const char *te = NULL;
	const struct evkeyval *h;
	TAILQ_FOREACH(h, headers, next)
	{
		if (strcasecmp(h->key, "Content-Length") == 0) {
			if (++n_cl > 1) {
				snprintf(err, errlen, "duplicate Content-Length header");
				return -1;
			}
			if (!valid_content_length(h->value)) {
				snprintf(err, errlen, "invalid Content-Length '%.40s'", h->value);
				return -1;
			}
		} else if (strcasecmp(h->key, "Transfer-Encoding") == 0) {
			if (++n_te > 1) {
				snprintf(err, errlen, "duplicate Transfer-Encoding header");
				return -1;
			}
			te = h->value;
		}
	}
	if (n_cl && n_te) {
		snprintf(err, errlen, "both Content-Length and Transfer-Encoding");
		return -1;
	}
	if (te != NULL) {
		while (*te == ' ' || *te == '\t')
			te++;
		size_t len = strlen(te);
		while (len && (te[len - 1] == ' ' || te[len - 1] == '\t'))
			len--;
		if (len != 7 || strncasecmp(te, "chunked", 7) != 0) {
			snprintf(err, errlen, "unsupported Transfer-Encoding '%.40s'", te);
			return -1;
		}
	}
	return 0;
}

static void on_reply_written(struct evhttp_request *req, void *arg)
{
	struct worker *w = arg;
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	if (c != NULL)
		evhttp_connection_set_closecb(c, worker_conn_closed, w);
	if (w->unflushed > 0)
		w->unflushed--;
	worker_request_done(w);
}

/* The client went (a reset, a failed write) before the answer was all written:
 * evhttp frees the request without completing it, so it is no longer unflushed. */
static void on_close_unwritten(struct evhttp_connection *c, void *arg)
{
	struct worker *w = arg;
	if (w->unflushed > 0)
		w->unflushed--;
	worker_conn_closed(c, w);
	worker_request_done(w);
}

void proxy_send_reply(struct worker *w, struct evhttp_request *req, int code, struct evbuffer *body)
{
	/* Without a connection evhttp frees req at once and never completes it. */
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	if (c != NULL) {
		evhttp_request_set_on_complete_cb(req, on_reply_written, w);
		evhttp_connection_set_closecb(c, on_close_unwritten, w);
		w->unflushed++;
	}
	evhttp_send_reply(req, code, NULL, body);
}

/* A JSON error answer naming the cause (and the variant, when there is one). */
static void send_error(struct worker *w, struct evhttp_request *req, int code, const char *variant,
                       const char *cause, const char *message, const char *request_id, int close)
{
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	json_t *j = json_pack("{s:s, s:s}", "error", message, "cause", cause);
	if (j && variant)
		json_object_set_new(j, "variant", json_string(variant));
	if (j && request_id)
		json_object_set_new(j, "request_id", json_string(request_id));
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	struct evbuffer *b = evbuffer_new();
	if (b && s)
		evbuffer_add_printf(b, "%s\n", s);
	evhttp_add_header(out, "Content-Type", "application/json");
	if (request_id)
		evhttp_add_header(out, "X-Request-Id", request_id);
	if (variant)
		evhttp_add_header(out, "X-Turnout-Variant", variant);
	if (code == 503)
		evhttp_add_header(out, "Retry-After", "1");
	if (close || w->draining)
		evhttp_add_header(out, "Connection", "close");
	proxy_send_reply(w, req, code, b);
	if (b)
		evbuffer_free(b);
	free(s);
	json_decref(j);
}

static int valid_request_id(const char *v)
{
	size_t n = 0;
	for (; v[n]; n++)
		if (n >= PROXY_REQUEST_ID_MAX || !isgraph((unsigned char)v[n]))
			return 0;
	return n > 0;
}

static void make_request_id(struct proxy_req *pr, const struct evkeyvalq *in)
{
	const char *v = evhttp_find_header(in, "X-Request-Id");
	if (v && valid_request_id(v)) {
		memcpy(pr->request_id, v, strlen(v) + 1); /* valid: at most PROXY_REQUEST_ID_MAX */
		return;
	}
	uint64_t a = ((uint64_t)route_random_bucket() << 48) ^
	             ((uint64_t)route_random_bucket() << 32) ^
	             ((uint64_t)route_random_bucket() << 16) ^ route_random_bucket();
	uint64_t b = ((uint64_t)route_random_bucket() << 48) ^
	             ((uint64_t)route_random_bucket() << 32) ^
	             ((uint64_t)route_random_bucket() << 16) ^ now_us();
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 16; i++) {
		pr->request_id[i] = hex[(a >> (60 - 4 * i)) & 15];
		pr->request_id[16 + i] = hex[(b >> (60 - 4 * i)) & 15];
	}
	pr->request_id[32] = '\0';
}

static const char *peer_ip(struct evhttp_request *req)
{
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	char *addr = NULL;
	ev_uint16_t port = 0;
	if (c)
		evhttp_connection_get_peer(c, &addr, &port);
	return addr ? addr : "";
}

/* The canary bucket of a request: its sticky key hashed, or a random draw. */
static uint32_t request_bucket(const struct route_snapshot *s, struct evhttp_request *req)
{
	const struct config *cfg = s->cfg;
	const struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *key = NULL;
	size_t len = 0;
	switch (cfg->sticky) {
	case CONFIG_STICKY_HEADER:
		key = cfg->sticky_name ? evhttp_find_header(in, cfg->sticky_name) : NULL;
		len = key ? strlen(key) : 0;
		break;
	case CONFIG_STICKY_COOKIE: {
		const char *c = evhttp_find_header(in, "Cookie");
		key = c && cfg->sticky_name ? route_cookie_value(c, cfg->sticky_name, &len) : NULL;
		break;
	}
	case CONFIG_STICKY_IP:
		key = peer_ip(req);
		len = strlen(key);
		break;
	case CONFIG_STICKY_NONE:
		break;
	}
	if (key == NULL || len == 0)
		return route_random_bucket();
	return route_bucket(cfg->salt ? cfg->salt : "", key, len);
}

static int skip_request_header(const char *k, const char *conn)
{
	static const char *const own[] = {"Content-Length", "Host", "Expect", "X-Forwarded-For",
	                                  "X-Request-Id"};
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (strcasecmp(k, own[i]) == 0)
			return 1;
	return proxy_is_hop_by_hop(k, conn);
}

/* Appends to a bounded block; past cap only counts, so the caller learns the size it needs. */
struct head_block {
	char *p;
	size_t len, cap;
};

static void put(struct head_block *b, const char *s, size_t n)
{
	if (b->len + n <= b->cap)
		memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void put_header(struct head_block *b, const char *k, const char *v1, const char *sep,
                       const char *v2)
{
	put(b, k, strlen(k));
	put(b, ": ", 2);
	put(b, v1, strlen(v1));
	if (sep) {
		put(b, sep, strlen(sep));
		put(b, v2, strlen(v2));
	}
	put(b, "\r\n", 2);
}

/* The headers sent upstream: the client's minus hop-by-hop and framing, plus ours. */
static void write_upstream_headers(struct proxy_req *pr, struct head_block *b)
{
	struct evhttp_request *req = pr->req;
	const struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *conn = evhttp_find_header(in, "Connection");
	const char *xff = NULL, *host = NULL;
	const struct evkeyval *h;
	TAILQ_FOREACH(h, in, next)
	{
		if (xff == NULL && strcasecmp(h->key, "X-Forwarded-For") == 0)
			xff = h->value;
		else if (host == NULL && strcasecmp(h->key, "Host") == 0)
			host = h->value;
		if (!skip_request_header(h->key, conn))
			put_header(b, h->key, h->value, NULL, NULL);
	}
	const char *ip = peer_ip(req);
	if (xff && *xff)
		put_header(b, "X-Forwarded-For", xff, ", ", ip);
	else
		put_header(b, "X-Forwarded-For", ip, NULL, NULL);
	put_header(b, "X-Request-Id", pr->request_id, NULL, NULL);
	if (host && *host)
		put_header(b, "X-Forwarded-Host", host, NULL, NULL);
}

/*
 * The upstream header block of pr in this thread's scratch buffer (valid until
 * the next call on the thread), or in *heap when it does not fit (the caller
 * frees *heap). NULL when out of memory.
 */
static struct head_block upstream_headers(struct proxy_req *pr, char **heap)
{
	static _Thread_local char scratch[PROXY_HEAD_SCRATCH];
	struct head_block b = {.p = scratch, .cap = sizeof(scratch)};
	*heap = NULL;
	write_upstream_headers(pr, &b);
	if (b.len <= b.cap)
		return b;
	size_t need = b.len;
	*heap = malloc(need);
	b = (struct head_block){.p = *heap, .cap = *heap ? need : 0};
	if (*heap)
		write_upstream_headers(pr, &b);
	return b;
}

static void finish(struct proxy_req *pr)
{
	struct worker *w = pr->w;
	if (pr->prev)
		pr->prev->next = pr->next;
	else if (w->reqs == pr)
		w->reqs = pr->next;
	if (pr->next)
		pr->next->prev = pr->prev;
	route_release(pr->snap);
	free(pr);
	if (w->inflight > 0)
		w->inflight--;
	stats_gauge_set(w->shard, STATS_GAUGE_INFLIGHT, w->inflight); /* observability */
	worker_request_done(w);
}

static int skip_response_header(const char *k, const char *conn)
{
	static const char *const own[] = {"Content-Length", "X-Turnout-Variant", "X-Request-Id"};
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (strcasecmp(k, own[i]) == 0)
			return 1;
	return proxy_is_hop_by_hop(k, conn);
}

/*
 * evhttp_add_header for a value known to be clean (no CR/LF: a config name, a
 * checked request id): the entry evhttp_clear_headers frees, built without
 * evhttp's validation pass. 0, or -1 out of memory.
 */
static int add_clean_header(struct evkeyvalq *out, const char *key, const char *value)
{
	struct evkeyval *kv = malloc(sizeof(*kv));
	char *k = strdup(key), *v = strdup(value);
	if (kv == NULL || k == NULL || v == NULL) {
		free(kv);
		free(k);
		free(v);
		return -1;
	}
	kv->key = k;
	kv->value = v;
	TAILQ_INSERT_TAIL(out, kv, next);
	return 0;
}

/* Whether a Content-Length value is exactly len (decimal, nothing else). */
static int length_is(const char *v, size_t len)
{
	uint64_t n = 0;
	if (*v < '0' || *v > '9')
		return 0;
	for (; *v >= '0' && *v <= '9'; v++) {
		if (n > (UINT64_MAX - 9) / 10)
			return 0;
		n = n * 10 + (uint64_t)(*v - '0');
	}
	return *v == '\0' && n == len;
}

/*
 * The backend's headers into the reply, minus hop-by-hop and framing: the
 * entries themselves move from the result's list to evhttp's (both hold
 * libevent's own allocations, freed by evhttp_clear_headers), nothing is
 * copied. One Content-Length that matches the body exactly is kept (evhttp
 * would print the same number again; not on 204/304); any other is dropped
 * and evhttp frames the reply itself.
 */
static void move_response_headers(struct proxy_req *pr, const struct upstream_result *res)
{
	struct evkeyvalq *from = res->headers;
	/* 204 and 304 answers never carry a length to the client (RFC 9110 8.6) */
	int framed = res->status != 204 && res->status != 304;
	size_t body_len = evbuffer_get_length(res->body);
	struct evkeyvalq *out = evhttp_request_get_output_headers(pr->req);
	const char *conn = evhttp_find_header(from, "Connection");
	/* A HEAD answer has no body: the backend's length is the only one there is. */
	int head = evhttp_request_get_command(pr->req) == EVHTTP_REQ_HEAD;
	int length_kept = 0;
	struct evkeyval *h, *next;
	for (h = TAILQ_FIRST(from); h != NULL; h = next) {
		next = TAILQ_NEXT(h, next);
		int move;
		if ((h->key[0] | 0x20) == 'c' && strcasecmp(h->key, "Content-Length") == 0)
			move = !length_kept && (head || (framed && length_is(h->value, body_len)));
		else
			move = !skip_response_header(h->key, conn);
		if (move) {
			length_kept |=
			    (h->key[0] | 0x20) == 'c' && strcasecmp(h->key, "Content-Length") == 0;
			TAILQ_REMOVE(from, h, next);
			TAILQ_INSERT_TAIL(out, h, next);
		}
	}
	add_clean_header(out, "X-Turnout-Variant", pr->snap->variants[pr->variant].name);
	add_clean_header(out, "X-Request-Id", pr->request_id);
	if (pr->w->draining)
		evhttp_add_header(out, "Connection", "close");
}

/* observability: one access log line per answered live request; call before the
 * reply is sent (evhttp may free req with it). */
static void access_log(const struct proxy_req *pr, int status, uint64_t bytes, uint64_t latency,
                       int shadow)
{
	static const char *const shadow_text[SHADOW_DROP_N + 1] = {
	    [SHADOW_DROP_BUDGET] = "dropped:budget",
	    [SHADOW_DROP_BYTES] = "dropped:bytes",
	    [SHADOW_DROP_NO_ENDPOINT] = "dropped:no_endpoint",
	    [SHADOW_DROP_INTERNAL] = "dropped:internal",
	    [SHADOW_DROP_N] = "mirrored",
	};
	if (!accesslog_enabled())
		return;
	const struct route_variant *v = &pr->snap->variants[pr->variant];
	struct accesslog_entry e = {
	    .request_id = pr->request_id,
	    .client = peer_ip(pr->req),
	    .method = method_name(evhttp_request_get_command(pr->req)),
	    .path = evhttp_request_get_uri(pr->req),
	    .variant = v->name,
	    .endpoint = pr->endpoint >= 0 ? v->endpoints[pr->endpoint].cfg->url : NULL,
	    .shadow = shadow >= 0 && shadow <= SHADOW_DROP_N ? shadow_text[shadow] : NULL,
	    .status = status,
	    .latency_us = latency,
	    .bytes = bytes,
	};
	accesslog_write(&e);
}

static enum stats_err stats_cause(enum upstream_err e)
{
	switch (e) {
	case UPSTREAM_ERR_CONNECT:
		return STATS_ERR_CONNECT;
	case UPSTREAM_ERR_RESET:
		return STATS_ERR_RESET;
	case UPSTREAM_ERR_TIMEOUT:
		return STATS_ERR_TIMEOUT;
	default:
		return STATS_ERR_PROTOCOL;
	}
}

static void answer_upstream_error(struct proxy_req *pr, const struct upstream_result *res)
{
	const struct route_variant *v = &pr->snap->variants[pr->variant];
	int code = res->err == UPSTREAM_ERR_TIMEOUT ? 504 : 502;
	char msg[512];
	snprintf(msg, sizeof(msg), "upstream %s of variant '%s' failed (%s): %s",
	         pr->endpoint >= 0 ? v->endpoints[pr->endpoint].cfg->url : "?", v->name,
	         upstream_err_name(res->err), res->detail);
	log_warn("proxy: request %s: %s", pr->request_id, msg);
	stats_error(pr->w->shard, v->stats_slot, stats_cause(res->err));
	access_log(pr, code, 0, now_us() - pr->start_us, -1); /* observability */
	send_error(pr->w, pr->req, code, v->name, upstream_err_name(res->err), msg, pr->request_id,
	           pr->w->draining);
	stats_record(pr->w->shard, v->stats_slot, code, now_us() - pr->start_us);
}

static int start_upstream(struct proxy_req *pr);

/*
 * resilience: passive health. A connect failure or a 5xx counts against the
 * endpoint (ejected at health.unhealthy_threshold in a row); any other answer
 * clears its count. Other errors are not reported.
 */
static void report_health(struct proxy_req *pr, const struct upstream_result *res)
{
	int failed = res->err == UPSTREAM_ERR_CONNECT ||
	             (res->err == UPSTREAM_OK && res->status >= 500 && res->status <= 599);
	if ((res->err != UPSTREAM_OK && !failed) || pr->endpoint < 0)
		return;
	if (health_passive_report(pr->snap, pr->variant, (size_t)pr->endpoint, failed)) {
		const struct route_variant *v = &pr->snap->variants[pr->variant];
		log_warn("proxy: endpoint %s of variant %s ejected after %u live failures in a row "
		         "(last: %s)",
		         v->endpoints[pr->endpoint].cfg->url, v->name,
		         pr->snap->cfg->health.unhealthy_threshold,
		         failed && res->err == UPSTREAM_OK ? "5xx" : "connect");
	}
}

/*
 * resilience: a connect failure means the request never reached a backend, so
 * it is sent once more: to another healthy endpoint of the same variant, else
 * to the stable variant (not when the client named the variant). Never after
 * any other error: the backend may have processed the request. Returns 1 if
 * the retry is under way, 0 if there is none (answer the error), -1 if the
 * retry could not start (already answered).
 */
static int retry_connect(struct proxy_req *pr, const struct upstream_result *res)
{
	struct route_snapshot *s = pr->snap;
	if (res->err != UPSTREAM_ERR_CONNECT || pr->retried || pr->w->draining)
		return 0;
	const char *oh = s->cfg->override_header;
	int named = oh && evhttp_find_header(evhttp_request_get_input_headers(pr->req), oh);
	size_t v = pr->variant;
	ssize_t e = route_endpoint_pick(s, v);
	if (e == pr->endpoint)
		e = route_endpoint_pick(s, v); /* round-robin moves past the failed one */
	if ((e < 0 || e == pr->endpoint) && !named && v != s->params.stable) {
		v = s->params.stable;
		e = route_endpoint_pick(s, v);
	}
	if (e < 0 || (v == pr->variant && e == pr->endpoint))
		return 0;
	const struct route_variant *from = &s->variants[pr->variant];
	log_info("proxy: request %s: cannot connect to %s (variant %s): %s; retrying on %s "
	         "(variant %s)",
	         pr->request_id, from->endpoints[pr->endpoint].cfg->url, from->name, res->detail,
	         s->variants[v].endpoints[e].cfg->url, s->variants[v].name);
	stats_error(pr->w->shard, from->stats_slot, STATS_ERR_CONNECT);
	pr->retried = 1;
	pr->variant = v;
	pr->endpoint = e;
	return start_upstream(pr) == 0 ? 1 : -1;
}

static void on_upstream_done(const struct upstream_result *res, void *arg)
{
	struct proxy_req *pr = arg;
	pr->xfer = NULL;
	report_health(pr, res);
	int retry = retry_connect(pr, res);
	if (retry > 0)
		return;
	proxy_set_state(pr, PROXY_STATE_DONE);
	if (retry < 0) {
		finish(pr);
		return;
	}
	if (res->err != UPSTREAM_OK) {
		answer_upstream_error(pr, res);
		finish(pr);
		return;
	}
	struct evbuffer *in = evhttp_request_get_input_buffer(pr->req);
	struct proxy_live live = {
	    .w = pr->w,
	    .snap = pr->snap,
	    .variant = pr->variant,
	    .method = method_name(evhttp_request_get_command(pr->req)),
	    .uri = evhttp_request_get_uri(pr->req),
	    .request_id = pr->request_id,
	    .req_headers = evhttp_request_get_input_headers(pr->req),
	    .client_ip = peer_ip(pr->req),
	    .req_body = evbuffer_get_length(in) ? evbuffer_pullup(in, -1) : NULL,
	    .req_body_len = evbuffer_get_length(in),
	    .status = res->status,
	    .resp_headers = res->headers,
	    .resp_body = res->body,
	    .latency_us = now_us() - pr->start_us,
	};
	/*
	 * SHADOW HOOK: the live exchange is complete here (request body and
	 * response body both available in `live`); mirroring and comparison
	 * go here, e.g. shadow_after_live(&live). Must not block or drain
	 * live.resp_body.
	 */
	/* shadow (engineer F): copies and submits only; observability: its outcome is logged */
	int shadow = shadow_after_live(&live);
	move_response_headers(pr, res);
	access_log(pr, (int)res->status, evbuffer_get_length(res->body), live.latency_us, shadow);
	proxy_send_reply(pr->w, pr->req, (int)res->status, res->body);
	stats_record(pr->w->shard, pr->snap->variants[pr->variant].stats_slot, (int)res->status,
	             live.latency_us);
	finish(pr);
}

static const char *method_name(enum evhttp_cmd_type c)
{
	switch (c) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_OPTIONS:
		return "OPTIONS";
	case EVHTTP_REQ_TRACE:
		return "TRACE";
	case EVHTTP_REQ_CONNECT:
		return "CONNECT";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	}
	return NULL;
}

/* Route pr (snapshot taken) to a variant and endpoint; answers and returns -1 on failure. */
static int route_request(struct proxy_req *pr)
{
	const struct route_snapshot *s = pr->snap;
	const struct evkeyvalq *in = evhttp_request_get_input_headers(pr->req);
	const char *oh = s->cfg->override_header;
	const char *override = oh ? evhttp_find_header(in, oh) : NULL;
	uint32_t bucket = override ? 0 : request_bucket(s, pr->req);
	enum route_pick_result r = route_pick(s, bucket, override, &pr->variant);
	char msg[512];
	if (r == ROUTE_PICK_UNKNOWN_OVERRIDE) {
		snprintf(msg, sizeof(msg), "header %s names unknown variant '%.64s'", oh, override);
		send_error(pr->w, pr->req, 400, NULL, "unknown_variant", msg, pr->request_id, 0);
		return -1;
	}
	pr->endpoint = r == ROUTE_PICK_OK ? route_endpoint_pick(pr->snap, pr->variant) : -1;
	if (pr->endpoint < 0) {
		const char *name = s->variants[pr->variant].name;
		snprintf(msg, sizeof(msg), "variant '%s' has no healthy endpoint", name);
		stats_record(pr->w->shard, s->variants[pr->variant].stats_slot, 503,
		             now_us() - pr->start_us);
		access_log(pr, 503, 0, now_us() - pr->start_us, -1); /* observability */
		send_error(pr->w, pr->req, 503, name, "no_healthy_endpoint", msg, pr->request_id,
		           0);
		return -1;
	}
	return 0;
}

static int start_upstream(struct proxy_req *pr)
{
	const char *method = method_name(evhttp_request_get_command(pr->req));
	const struct route_variant *v = &pr->snap->variants[pr->variant];
	if (method == NULL) {
		send_error(pr->w, pr->req, 400, v->name, "bad_request", "unknown method",
		           pr->request_id, 0);
		return -1;
	}
	struct evbuffer *in = evhttp_request_get_input_buffer(pr->req);
	size_t len = evbuffer_get_length(in);
	char *heap;
	struct head_block hb = upstream_headers(pr, &heap);
	const struct config *cfg = pr->snap->cfg;
	struct upstream_request ureq = {
	    .method = method,
	    .endpoint = v->endpoints[pr->endpoint].cfg->url,
	    .target = evhttp_request_get_uri(pr->req),
	    .head_block = hb.p,
	    .head_block_len = hb.len,
	    .client = cfg->upstream_client == CONFIG_UPSTREAM_LIBCURL ? UPSTREAM_CLIENT_LIBCURL
	                                                              : UPSTREAM_CLIENT_BUILTIN,
	    .body = len ? evbuffer_pullup(in, -1) : NULL,
	    .body_len = len,
	    .copy_body = 0, /* the evhttp request keeps it until we answer */
	    .timeout_ms = cfg->limits.upstream_timeout_ms,
	    .max_response = PROXY_MAX_RESPONSE,
	    .ca_file = cfg->upstream_tls.ca,
	    .tls_insecure = !cfg->upstream_tls.verify,
	    .cb = on_upstream_done,
	    .arg = pr,
	};
	char err[256];
	if (hb.p == NULL)
		snprintf(err, sizeof(err), "out of memory");
	else
		pr->xfer = upstream_submit(pr->w->up, &ureq, err, sizeof(err));
	free(heap);
	if (pr->xfer == NULL) {
		log_error("proxy: request %s: cannot start upstream transfer: %s", pr->request_id,
		          err);
		send_error(pr->w, pr->req, 502, v->name, "internal", err, pr->request_id, 0);
		return -1;
	}
	proxy_set_state(pr, PROXY_STATE_UPSTREAM);
	return 0;
}

/* RFC 9110 5.6.2 token characters (a header name). */
static int is_tchar(unsigned char c)
{
	return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/*
 * resilience: header names must be tokens and values free of control
 * characters (a bare CR or LF, NUL, DEL, ...; HTAB is allowed); the request
 * target must have no control character or space. Returns 0, or -1 with the
 * reason in err (answered 400 + close).
 */
static int check_header_bytes(struct evhttp_request *req, char *err, size_t errlen)
{
	const struct evkeyval *h;
	for (const unsigned char *p = (const unsigned char *)evhttp_request_get_uri(req); *p; p++) {
		if (*p <= 0x20 || *p == 0x7f) {
			snprintf(err, errlen, "control character 0x%02x in the request target", *p);
			return -1;
		}
	}
	TAILQ_FOREACH(h, evhttp_request_get_input_headers(req), next)
	{
		if (h->key[0] == '\0') {
			snprintf(err, errlen, "empty header name");
			return -1;
		}
		for (const unsigned char *p = (const unsigned char *)h->key; *p; p++) {
			if (!is_tchar(*p)) {
				snprintf(err, errlen, "byte 0x%02x in header name '%.40s'", *p,
				         h->key);
				return -1;
			}
		}
		for (const unsigned char *p = (const unsigned char *)h->value; *p; p++) {
			if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
				snprintf(err, errlen, "control character 0x%02x in header '%.40s'",
				         *p, h->key);
				return -1;
			}
		}
	}
	return 0;
}

/* Answers framing errors and overload before any routing; returns -1 if answered. */
static int admit(struct worker *w, struct evhttp_request *req, const struct route_snapshot *s)
{
	char err[128];
	const char *uri = evhttp_request_get_uri(req);
	if (proxy_check_framing(evhttp_request_get_input_headers(req), err, sizeof(err)) < 0) {
		send_error(w, req, 400, NULL, "bad_framing", err, NULL, 1);
		return -1;
	}
	if (evhttp_request_get_command(req) == EVHTTP_REQ_CONNECT) {
		send_error(w, req, 501, NULL, "not_implemented",
		           "CONNECT is not served (Turnout is not a forward proxy)", NULL, 1);
		return -1;
	}
	if (uri == NULL || uri[0] != '/') {
		send_error(w, req, 400, NULL, "bad_request", "request target must be a path", NULL,
		           0);
		return -1;
	}
	/* resilience: hostile input the framing check does not cover */
	if (strlen(uri) > PROXY_URI_MAX) {
		send_error(w, req, 414, NULL, "uri_too_long", "request target over 8000 bytes",
		           NULL, 1);
		return -1;
	}
	size_t n_headers = 0;
	const struct evkeyval *kv;
	TAILQ_FOREACH(kv, evhttp_request_get_input_headers(req), next)
	n_headers++;
	if (n_headers > PROXY_MAX_HEADERS) {
		send_error(w, req, 431, NULL, "too_many_headers", "more than 100 header fields",
		           NULL, 1);
		return -1;
	}
	if (check_header_bytes(req, err, sizeof(err)) < 0) {
		send_error(w, req, 400, NULL, "bad_header", err, NULL, 1);
		return -1;
	}
	if (s == NULL) {
		send_error(w, req, 503, NULL, "no_route", "no routing snapshot yet", NULL, 0);
		return -1;
	}
	if (w->inflight >= s->cfg->limits.max_inflight) {
		send_error(w, req, 503, NULL, "overloaded",
		           "too many requests in flight on this worker", NULL, 0);
		return -1;
	}
	return 0;
}

void proxy_handle(struct evhttp_request *req, void *arg)
{
	struct worker *w = arg;
	uint64_t start = now_us();
	struct route_snapshot *snap = route_acquire();
	if (admit(w, req, snap) < 0) {
		route_release(snap);
		return;
	}
	struct proxy_req *pr = calloc(1, sizeof(*pr));
	if (pr == NULL) {
		route_release(snap);
		send_error(w, req, 503, NULL, "overloaded", "out of memory", NULL, 0);
		return;
	}
	pr->w = w;
	pr->req = req;
	pr->snap = snap;
	pr->start_us = start;
	pr->state = PROXY_STATE_NEW;
	make_request_id(pr, evhttp_request_get_input_headers(req));
	pr->next = w->reqs;
	if (w->reqs)
		w->reqs->prev = pr;
	w->reqs = pr;
	w->inflight++;
	stats_gauge_set(w->shard, STATS_GAUGE_INFLIGHT, w->inflight); /* observability */
	/* The live variant is chosen in route_request; a mirror decided "beside" the
	 * primary would go right after it (see the SHADOW HOOK in on_upstream_done). */
	if (route_request(pr) < 0 || start_upstream(pr) < 0) {
		proxy_set_state(pr, PROXY_STATE_DONE);
		finish(pr);
	}
}

void proxy_abort_all(struct worker *w)
{
	while (w->reqs != NULL) {
		struct proxy_req *pr = w->reqs;
		upstream_cancel(pr->xfer);
		pr->xfer = NULL;
		proxy_set_state(pr, PROXY_STATE_DONE);
		send_error(pr->w, pr->req, 503, pr->snap->variants[pr->variant].name, "draining",
		           "the router is shutting down", pr->request_id, 1);
		finish(pr);
	}
}
