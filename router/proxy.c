/*
 * proxy.c - one live request's life: the front end in, the upstream engine out, and back.
 *
 * States: NEW (checked, routed) -> UPSTREAM (transfer running) -> DONE
 * (answered, freed). proxy_set_state is the one place that changes state.
 * The request keeps the route snapshot it took on arrival until it is
 * answered, so a switch or reload never changes a request midway.
 *
 * The client's request arrives checked (framing, limits, bytes: front.c);
 * its framing headers are never forwarded: the upstream client frames the
 * upstream request itself. Hop-by-hop headers are dropped both ways (RFC 9110
 * 7.6.1). A client that goes away mid-request cancels its upstream transfer.
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
#include "front.h"
#include "health.h" /* resilience: passive health reports */
#include "log.h"
#include "route.h"
#include "shadow.h" /* shadow (engineer F): the SHADOW HOOK below */
#include "stats.h"
#include "upstream.h"
#include "worker.h"

#define PROXY_MAX_RESPONSE   (256u * 1024u * 1024u) /* upstream response body limit */
#define PROXY_REQUEST_ID_MAX 128
#define PROXY_HEAD_SCRATCH   (32 * 1024) /* per-thread upstream header block */
#define PROXY_RESP_HEAD      (64 * 1024) /* per-thread reply header block */

enum proxy_state {
	PROXY_STATE_NEW,
	PROXY_STATE_UPSTREAM,
	PROXY_STATE_DONE,
};

struct proxy_req {
	struct worker *w;
	struct front_req *req;
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

static void proxy_head_put(struct proxy_head_block *b, const char *s, size_t n)
{
	if (b->len + n <= b->cap)
		memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void proxy_head_header(struct proxy_head_block *b, const char *k, const char *v1,
                              const char *sep, const char *v2)
{
	proxy_head_put(b, k, strlen(k));
	proxy_head_put(b, ": ", 2);
	proxy_head_put(b, v1, strlen(v1));
	if (sep) {
		proxy_head_put(b, sep, strlen(sep));
		proxy_head_put(b, v2, strlen(v2));
	}
	proxy_head_put(b, "\r\n", 2);
}

/* A JSON error answer naming the cause (and the variant, when there is one). */
static void send_error(struct worker *w, struct front_req *req, int code, const char *variant,
                       const char *cause, const char *message, const char *request_id, int close)
{
	char extra[512];
	struct proxy_head_block b = {.p = extra, .cap = sizeof(extra)};
	proxy_head_header(&b, "Content-Type", "application/json", NULL, NULL);
	if (request_id) /* checked: printable, at most PROXY_REQUEST_ID_MAX */
		proxy_head_header(&b, "X-Request-Id", request_id, NULL, NULL);
	if (variant && b.len + strlen(variant) < 400) /* a config name: no CR/LF */
		proxy_head_header(&b, "X-Turnout-Variant", variant, NULL, NULL);
	if (code == 503)
		proxy_head_header(&b, "Retry-After", "1", NULL, NULL);
	json_t *j = json_pack("{s:s, s:s}", "error", message, "cause", cause);
	if (j && variant)
		json_object_set_new(j, "variant", json_string(variant));
	if (j && request_id)
		json_object_set_new(j, "request_id", json_string(request_id));
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (s == NULL) { /* out of memory: the front end's own error answer */
		front_reply_error(req, code, cause, message, NULL, close || w->draining);
		return;
	}
	size_t n = strlen(s);
	s[n] = '\n'; /* over the terminator: the length is passed */
	front_reply(req, code, extra, b.len <= b.cap ? b.len : 0, 0, NULL, s, n + 1,
	            close || w->draining);
	free(s);
}

static int valid_request_id(const char *v)
{
	size_t n = 0;
	for (; v[n]; n++)
		if (n >= PROXY_REQUEST_ID_MAX || !isgraph((unsigned char)v[n]))
			return 0;
	return n > 0;
}

static void make_request_id(struct proxy_req *pr)
{
	const char *v = front_req_header(pr->req, "X-Request-Id");
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

static const char *peer_ip(const struct front_req *req)
{
	return front_req_peer(req);
}

/* The canary bucket of a request: its sticky key hashed, or a random draw. */
static uint32_t request_bucket(const struct route_snapshot *s, struct front_req *req)
{
	const struct config *cfg = s->cfg;
	const char *key = NULL;
	size_t len = 0;
	switch (cfg->sticky) {
	case CONFIG_STICKY_HEADER:
		key = cfg->sticky_name ? front_req_header(req, cfg->sticky_name) : NULL;
		len = key ? strlen(key) : 0;
		break;
	case CONFIG_STICKY_COOKIE: {
		const char *c = front_req_header(req, "Cookie");
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

void proxy_forward_headers(const struct front_req *req, const char *ip, const char *request_id,
                           int mirror, struct proxy_head_block *b)
{
	/* framing and the forwarding headers we write ourselves; indexes 1, 3, 5 are read */
	static const char *const own[] = {"Content-Length",  "Host",         "Expect",
	                                  "X-Forwarded-For", "X-Request-Id", "X-Forwarded-Host",
	                                  "X-Turnout-Shadow"};
	const char *conn = front_req_header(req, "Connection");
	const char *xff = NULL, *host = NULL, *xfh = NULL, *k, *v;
	for (size_t n = 0; front_req_field(req, n, &k, &v); n++) {
		int skip = proxy_is_hop_by_hop(k, conn), first = k[0] | 0x20;
		for (size_t i = 0; !skip && i < sizeof(own) / sizeof(own[0]); i++) {
			/* most names differ at once: no strcasecmp call */
			if ((own[i][0] | 0x20) != first || strcasecmp(k, own[i]) != 0)
				continue;
			skip = 1;
			if (i == 1 && !host)
				host = v;
			else if (i == 3 && !xff)
				xff = v;
			else if (i == 5 && !xfh)
				xfh = v;
		}
		if (!skip)
			proxy_head_header(b, k, v, NULL, NULL);
	}
	if (xff && *xff)
		proxy_head_header(b, "X-Forwarded-For", xff, ", ", ip);
	else
		proxy_head_header(b, "X-Forwarded-For", ip, NULL, NULL);
	/* an earlier proxy's X-Forwarded-Host names the original host: kept, else ours */
	if ((xfh && *xfh) || (host && *host))
		proxy_head_header(b, "X-Forwarded-Host", xfh && *xfh ? xfh : host, NULL, NULL);
	proxy_head_header(b, "X-Request-Id", request_id, NULL, NULL);
	if (mirror)
		proxy_head_header(b, "X-Turnout-Shadow", "1", NULL, NULL);
}

static void write_upstream_headers(struct proxy_req *pr, struct proxy_head_block *b)
{
	proxy_forward_headers(pr->req, peer_ip(pr->req), pr->request_id, 0, b);
}

/*
 * The upstream header block of pr in this thread's scratch buffer (valid until
 * the next call on the thread), or in *heap when it does not fit (the caller
 * frees *heap). NULL when out of memory.
 */
static struct proxy_head_block upstream_headers(struct proxy_req *pr, char **heap)
{
	static _Thread_local char scratch[PROXY_HEAD_SCRATCH];
	struct proxy_head_block b = {.p = scratch, .cap = sizeof(scratch)};
	*heap = NULL;
	write_upstream_headers(pr, &b);
	if (b.len <= b.cap)
		return b;
	size_t need = b.len;
	*heap = malloc(need);
	b = (struct proxy_head_block){.p = *heap, .cap = *heap ? need : 0};
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
	int first = k[0] | 0x20; /* most names differ at once: no strcasecmp call */
	if (first == 'c' && strcasecmp(k, "Content-Length") == 0)
		return 1;
	if (first == 'x' &&
	    (strcasecmp(k, "X-Turnout-Variant") == 0 || strcasecmp(k, "X-Request-Id") == 0))
		return 1;
	return proxy_is_hop_by_hop(k, conn);
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
 * The backend's headers into the reply's header block b, minus hop-by-hop and
 * framing, plus ours. One Content-Length that matches the body exactly is
 * kept (not on 204/304; on HEAD, the backend's is the only length there is);
 * any other is dropped and the front end frames the reply itself. Returns
 * whether a length was kept.
 */
static int response_headers(struct proxy_req *pr, const struct upstream_result *res,
                            struct proxy_head_block *b)
{
	const struct evkeyvalq *from = res->headers;
	/* 204 and 304 answers never carry a length to the client (RFC 9110 8.6) */
	int framed = res->status != 204 && res->status != 304;
	size_t body_len = evbuffer_get_length(res->body);
	const char *conn = NULL;
	int head = front_req_is_head(pr->req);
	int length_kept = 0;
	const struct evkeyval *h;
	TAILQ_FOREACH(h, from, next) /* the first Connection, as evhttp_find_header */
	{
		if ((h->key[0] | 0x20) == 'c' && strcasecmp(h->key, "Connection") == 0) {
			conn = h->value;
			break;
		}
	}
	TAILQ_FOREACH(h, from, next)
	{
		int keep;
		int is_cl = (h->key[0] | 0x20) == 'c' && strcasecmp(h->key, "Content-Length") == 0;
		if (is_cl)
			keep = !length_kept && (head || (framed && length_is(h->value, body_len)));
		else
			keep = !skip_response_header(h->key, conn);
		if (keep) {
			length_kept |= is_cl;
			proxy_head_header(b, h->key, h->value, NULL, NULL);
		}
	}
	proxy_head_header(b, "X-Turnout-Variant", pr->snap->variants[pr->variant].name, NULL, NULL);
	proxy_head_header(b, "X-Request-Id", pr->request_id, NULL, NULL);
	return length_kept;
}

/* Answer pr with the backend's result (its body moves to the client). */
static void send_response(struct proxy_req *pr, const struct upstream_result *res)
{
	static _Thread_local char scratch[PROXY_RESP_HEAD];
	struct proxy_head_block b = {.p = scratch, .cap = sizeof(scratch)};
	int kept = response_headers(pr, res, &b);
	char *heap = NULL;
	if (b.len > b.cap) {
		size_t need = b.len;
		heap = malloc(need);
		b = (struct proxy_head_block){.p = heap, .cap = heap ? need : 0};
		if (heap)
			kept = response_headers(pr, res, &b);
	}
	if (b.p == NULL) {
		send_error(pr->w, pr->req, 502, pr->snap->variants[pr->variant].name, "internal",
		           "out of memory for the response headers", pr->request_id, 0);
		return;
	}
	front_reply(pr->req, (int)res->status, b.p, b.len, kept, res->body, NULL, 0,
	            pr->w->draining);
	free(heap);
}

/* observability: one access log line per answered live request; call before the
 * reply is sent (the front end lets go of req with it). */
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
	    .method = front_req_method(pr->req),
	    .path = front_req_target(pr->req),
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
	int named = oh && front_req_header(pr->req, oh);
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
	size_t body_len;
	const void *body = front_req_body(pr->req, &body_len);
	struct proxy_live live = {
	    .w = pr->w,
	    .snap = pr->snap,
	    .variant = pr->variant,
	    .method = front_req_method(pr->req),
	    .uri = front_req_target(pr->req),
	    .request_id = pr->request_id,
	    .req = pr->req,
	    .client_ip = peer_ip(pr->req),
	    .req_body = body,
	    .req_body_len = body_len,
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
	access_log(pr, (int)res->status, evbuffer_get_length(res->body), live.latency_us, shadow);
	send_response(pr, res);
	stats_record(pr->w->shard, pr->snap->variants[pr->variant].stats_slot, (int)res->status,
	             live.latency_us);
	finish(pr);
}

/* Route pr (snapshot taken) to a variant and endpoint; answers and returns -1 on failure. */
static int route_request(struct proxy_req *pr)
{
	const struct route_snapshot *s = pr->snap;
	const char *oh = s->cfg->override_header;
	const char *override = oh ? front_req_header(pr->req, oh) : NULL;
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
	const struct route_variant *v = &pr->snap->variants[pr->variant];
	size_t len;
	const void *body = front_req_body(pr->req, &len);
	char *heap;
	struct proxy_head_block hb = upstream_headers(pr, &heap);
	const struct config *cfg = pr->snap->cfg;
	struct upstream_request ureq = {
	    .method = front_req_method(pr->req),
	    .endpoint = v->endpoints[pr->endpoint].cfg->url,
	    .target = front_req_target(pr->req),
	    .head_block = hb.p,
	    .head_block_len = hb.len,
	    .client = cfg->upstream_client == CONFIG_UPSTREAM_LIBCURL ? UPSTREAM_CLIENT_LIBCURL
	                                                              : UPSTREAM_CLIENT_BUILTIN,
	    .body = body,
	    .body_len = len,
	    .copy_body = 0, /* the front end keeps it until we answer */
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

/* Answers overload before any routing (framing and limits were the front end's); -1 if answered. */
static int admit(struct worker *w, struct front_req *req, const struct route_snapshot *s)
{
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

/* The client went away mid-request: its transfer is cancelled, nothing is answered. */
static void on_client_gone(struct front_req *req, void *arg)
{
	(void)req;
	struct proxy_req *pr = arg;
	upstream_cancel(pr->xfer);
	pr->xfer = NULL;
	log_info("proxy: request %s: the client went away before its answer", pr->request_id);
	access_log(pr, 499, 0, now_us() - pr->start_us, -1); /* observability */
	proxy_set_state(pr, PROXY_STATE_DONE);
	finish(pr);
}

void proxy_handle(struct front_req *req, void *arg)
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
	make_request_id(pr);
	front_req_set_abort(req, on_client_gone, pr);
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
