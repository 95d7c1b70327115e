/*
 * shadow.c - mirror, compare, count (see shadow.h).
 *
 * Per worker: a struct shadow_worker (in worker->shadow) with the in-flight
 * budget, the list of mirrors in flight, the compiled compare rules of the
 * config last seen, and a counter shard. Everything is touched only by the
 * worker's thread, except the shard's counters, which readers load
 * atomically (single writer: relaxed load + store, as in stats.c).
 *
 * A mirror's context holds a reference to the request's route snapshot (so
 * variant names and the config outlive the live request), a reference to the
 * compiled rules, the live answer (status, latency, body up to
 * COMPARE_BODY_MAX) and the first log_body_max bytes of the request body for
 * the log. The request body itself is copied once more by libcurl
 * (copy_body), because the live request is freed right after the hook.
 */
#include "shadow.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "proxy.h"
#include "route.h"
#include "shadowlog.h"
#include "upstream.h"
#include "worker.h"

#define SHADOW_URL_MAX  8192
#define SHADOW_SALT_MAX (256 + sizeof("/shadow")) /* canary.salt is at most 256 bytes */

struct ahist {
	_Atomic uint64_t counts[STATS_HIST_BUCKETS];
	_Atomic uint64_t total, sum, max;
};

struct shadow_slot {
	_Atomic uint64_t mirrored;
	_Atomic uint64_t dropped[SHADOW_DROP_N];
	_Atomic uint64_t results[3];
	_Atomic uint64_t causes[SHADOW_CAUSE_N];
	_Atomic uint64_t rules[CONFIG_MAX_RULES][3];
	struct ahist *_Atomic latency; /* allocated on first use by the worker */
	struct ahist *_Atomic diff_pos;
	struct ahist *_Atomic diff_neg;
};

/* Compiled rules of one config, shared by the mirrors started under it. */
struct shadow_rules {
	int refs; /* worker thread only */
	struct route_config *rc;
	struct compare_rules *rules;
};

struct shadow_ctx;

struct shadow_worker {
	struct shadow_worker *next; /* registry */
	size_t inflight;
	size_t inflight_bytes;
	struct shadow_ctx *ctxs;
	struct shadow_rules *cur;
	const struct route_config *failed_rc; /* rules of this config did not compile: said once */
	struct shadow_slot slots[STATS_MAX_SLOTS];
};

struct shadow_ctx {
	struct shadow_worker *sw;
	struct shadow_ctx *prev, *next;
	struct upstream_transfer *xfer;
	struct route_snapshot *snap;
	struct shadow_rules *rules;
	size_t live_variant, shadow_variant;
	int slot;
	long live_status;
	uint64_t live_us;
	char *live_body;
	size_t live_len;
	int live_too_big;
	char *req_body;       /* first log_body_max bytes (NULL: redact or no log) */
	size_t req_body_kept; /* bytes at req_body */
	size_t req_body_len;  /* the whole body's length */
	size_t bytes;         /* counted against the byte budget */
	char request_id[SHADOWLOG_ID_MAX + 1];
};

/* Registry of worker states, and the process-wide disagreement log. */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct shadow_worker *reg_head;
static struct {
	char *path;
	struct shadowlog *log; /* NULL: could not be opened */
} logs[SHADOW_LOGS_MAX];
static size_t n_logs;
static int logs_full_warned;

/* ---- counters ------------------------------------------------------------- */

static void inc(_Atomic uint64_t *c, uint64_t by)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
	                      memory_order_relaxed);
}

static struct ahist *hist_get(struct ahist *_Atomic *p)
{
	struct ahist *h = atomic_load_explicit(p, memory_order_acquire);
	if (!h) {
		h = calloc(1, sizeof(*h));
		if (h)
			atomic_store_explicit(p, h, memory_order_release);
	}
	return h;
}

static void hist_add(struct ahist *_Atomic *p, uint64_t v)
{
	struct ahist *h = hist_get(p);
	if (!h)
		return;
	inc(&h->counts[stats_hist_bucket(v)], 1);
	inc(&h->total, 1);
	inc(&h->sum, v);
	if (v > atomic_load_explicit(&h->max, memory_order_relaxed))
		atomic_store_explicit(&h->max, v, memory_order_relaxed);
}

static void hist_merge(struct ahist *_Atomic *p, struct stats_hist *out)
{
	struct ahist *h = atomic_load_explicit(p, memory_order_acquire);
	if (!h)
		return;
	for (size_t b = 0; b < STATS_HIST_BUCKETS; b++)
		out->counts[b] += atomic_load_explicit(&h->counts[b], memory_order_relaxed);
	out->total += atomic_load_explicit(&h->total, memory_order_relaxed);
	out->sum += atomic_load_explicit(&h->sum, memory_order_relaxed);
	uint64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);
	if (m > out->max)
		out->max = m;
}

static void count_result(struct shadow_slot *sl, enum compare_result r,
                         const struct compare_outcome *o, size_t n_rules)
{
	inc(&sl->results[r], 1);
	for (size_t i = 0; i < n_rules && i < CONFIG_MAX_RULES; i++)
		inc(&sl->rules[i][o ? o->rule_result[i] : r], 1);
}

static void count_error(struct shadow_slot *sl, enum shadow_cause c, size_t n_rules)
{
	inc(&sl->causes[c], 1);
	count_result(sl, COMPARE_ERROR, NULL, n_rules);
}

/* ---- per-worker state ----------------------------------------------------- */

static struct shadow_worker *worker_state(struct worker *w)
{
	if (w->shadow)
		return w->shadow;
	struct shadow_worker *sw = calloc(1, sizeof(*sw));
	if (!sw)
		return NULL;
	pthread_mutex_lock(&reg_mu);
	sw->next = reg_head;
	reg_head = sw;
	pthread_mutex_unlock(&reg_mu);
	w->shadow = sw;
	return sw;
}

static void rules_unref(struct shadow_rules *r)
{
	if (!r || --r->refs > 0)
		return;
	compare_rules_free(r->rules);
	route_config_unref(r->rc);
	free(r);
}

/* The compiled rules of snapshot s's config (recompiled when the config changed). */
static struct shadow_rules *rules_for(struct shadow_worker *sw, struct route_snapshot *s)
{
	if (sw->cur && sw->cur->rc == s->rc)
		return sw->cur;
	struct shadow_rules *r = calloc(1, sizeof(*r));
	char err[256];
	if (!r)
		return NULL;
	r->rules = compare_rules_new(&s->cfg->shadow, err, sizeof(err));
	if (!r->rules) {
		/* the config loader checks the paths; this is memory, or a loader gap */
		if (sw->failed_rc != s->rc)
			log_error("shadow: %s: %s; mirrors are dropped (reason internal)",
			          s->cfg->file ? s->cfg->file : "config", err);
		sw->failed_rc = s->rc;
		free(r);
		return NULL;
	}
	r->refs = 1;
	r->rc = s->rc;
	route_config_ref(r->rc);
	rules_unref(sw->cur);
	sw->cur = r;
	return r;
}

/*
 * The disagreement log for cfg, opened on first need; NULL when off or failed.
 * A reload that names another path opens another log; the old one stays open
 * (idle) until exit, because a worker may still be writing to it. At most
 * SHADOW_LOGS_MAX paths per process life.
 */
static struct shadowlog *log_for(const struct config *cfg)
{
	const struct config_shadow *c = &cfg->shadow;
	struct shadowlog *l = NULL;
	if (!c->log_path)
		return NULL;
	pthread_mutex_lock(&reg_mu);
	size_t i = 0;
	while (i < n_logs && strcmp(logs[i].path, c->log_path) != 0)
		i++;
	if (i < n_logs) {
		l = logs[i].log;
	} else if (n_logs < SHADOW_LOGS_MAX && (logs[i].path = strdup(c->log_path))) {
		char err[512];
		/* shadow.c applies log_body_max and redact per mirror (they may change on
		 * reload): the log takes what it is given, up to its own hard limit */
		l = shadowlog_open(c->log_path, SHADOWLOG_BODY_LIMIT, 0, SHADOW_LOG_QUEUE_MAX, err,
		                   sizeof(err));
		if (!l)
			log_error("shadow: %s; disagreements are not logged there", err);
		logs[n_logs++].log = l; /* NULL too: not retried for every disagreement */
	} else if (!logs_full_warned) {
		logs_full_warned = 1;
		log_error("shadow: shadow.log %s: more than %d log paths since start (or no "
		          "memory); restart to log there",
		          c->log_path, SHADOW_LOGS_MAX);
	}
	pthread_mutex_unlock(&reg_mu);
	return l;
}

void shadow_log_reopen(void)
{
	pthread_mutex_lock(&reg_mu);
	for (size_t i = 0; i < n_logs; i++)
		if (logs[i].log)
			shadowlog_reopen(logs[i].log);
	pthread_mutex_unlock(&reg_mu);
}

/* ---- mirroring ------------------------------------------------------------ */

/* Sampling bucket 0..9999: sticky on the canary key when there is one. */
static uint32_t shadow_bucket(const struct route_snapshot *s, const struct proxy_live *live)
{
	const struct config *cfg = s->cfg;
	const char *key = NULL;
	size_t len = 0;
	if (cfg->sticky == CONFIG_STICKY_HEADER && cfg->sticky_name) {
		key = evhttp_find_header(live->req_headers, cfg->sticky_name);
		len = key ? strlen(key) : 0;
	} else if (cfg->sticky == CONFIG_STICKY_COOKIE && cfg->sticky_name) {
		const char *c = evhttp_find_header(live->req_headers, "Cookie");
		key = c ? route_cookie_value(c, cfg->sticky_name, &len) : NULL;
	}
	if (!key || len == 0)
		return route_random_bucket();
	char salt[SHADOW_SALT_MAX];
	snprintf(salt, sizeof(salt), "%s/shadow", cfg->salt ? cfg->salt : "");
	return route_bucket(salt, key, len);
}

/* Every header is mirrored whole: evhttp's max_header already bounds its size. */
static struct curl_slist *add_header(struct curl_slist *l, const char *k, const char *v, int *fail)
{
	size_t n = strlen(k) + strlen(v) + 3;
	char *line = malloc(n);
	if (!line) {
		*fail = 1;
		return l;
	}
	if (*v)
		snprintf(line, n, "%s: %s", k, v);
	else
		snprintf(line, n, "%s;", k); /* "Name;" sends it empty */
	struct curl_slist *r = curl_slist_append(l, line);
	free(line);
	if (!r)
		*fail = 1;
	return r ? r : l;
}

/* The mirror's headers: the client's minus hop-by-hop and framing, plus ours
 * (the forwarding headers exactly as proxy.c sends them to the live variant). */
static struct curl_slist *mirror_headers(const struct proxy_live *live)
{
	static const char *const own[] = {"Content-Length",  "Host",
	                                  "Expect",          "X-Request-Id",
	                                  "X-Forwarded-For", "X-Forwarded-Host",
	                                  "X-Turnout-Shadow"};
	const char *conn = evhttp_find_header(live->req_headers, "Connection");
	struct curl_slist *l = NULL;
	int fail = 0;
	const struct evkeyval *h;
	TAILQ_FOREACH(h, live->req_headers, next)
	{
		int skip = proxy_is_hop_by_hop(h->key, conn);
		for (size_t i = 0; !skip && i < sizeof(own) / sizeof(own[0]); i++)
			skip = strcasecmp(h->key, own[i]) == 0;
		if (!skip)
			l = add_header(l, h->key, h->value, &fail);
	}
	const char *xff = evhttp_find_header(live->req_headers, "X-Forwarded-For");
	const char *ip = live->client_ip ? live->client_ip : "";
	if (xff && *xff) {
		size_t n = strlen(xff) + strlen(ip) + 3;
		char *buf = malloc(n);
		if (buf) {
			snprintf(buf, n, "%s, %s", xff, ip);
			l = add_header(l, "X-Forwarded-For", buf, &fail);
		}
		fail |= !buf;
		free(buf);
	} else {
		l = add_header(l, "X-Forwarded-For", ip, &fail);
	}
	const char *host = evhttp_find_header(live->req_headers, "Host");
	if (host && *host)
		l = add_header(l, "X-Forwarded-Host", host, &fail);
	l = add_header(l, "X-Request-Id", live->request_id, &fail);
	l = add_header(l, "X-Turnout-Shadow", "1", &fail);
	if (fail) {
		curl_slist_free_all(l);
		return NULL;
	}
	return l;
}

static void ctx_free(struct shadow_ctx *c)
{
	struct shadow_worker *sw = c->sw;
	if (c->prev)
		c->prev->next = c->next;
	else if (sw->ctxs == c)
		sw->ctxs = c->next;
	if (c->next)
		c->next->prev = c->prev;
	sw->inflight--;
	sw->inflight_bytes -= c->bytes;
	rules_unref(c->rules);
	route_snapshot_unref(c->snap);
	free(c->live_body);
	free(c->req_body);
	free(c);
}

static void log_disagreement(struct shadow_ctx *c, long status, uint64_t shadow_us,
                             const struct compare_outcome *o)
{
	struct shadowlog *l = log_for(c->snap->cfg);
	if (!l)
		return;
	struct shadowlog_entry e = {
	    .request_id = c->request_id,
	    .live_variant = c->snap->variants[c->live_variant].name,
	    .shadow_variant = c->snap->variants[c->shadow_variant].name,
	    .live_status = (int)c->live_status,
	    .shadow_status = (int)status,
	    .live_ms = (double)c->live_us / 1000.0,
	    .shadow_ms = (double)shadow_us / 1000.0,
	    .outcome = o,
	    .body = c->req_body,
	    .body_len = c->req_body_kept,
	    .body_total = c->req_body_len,
	};
	shadowlog_write(l, &e);
}

static void on_mirror_done(const struct upstream_result *res, void *arg)
{
	struct shadow_ctx *c = arg;
	struct shadow_slot *sl = &c->sw->slots[c->slot];
	size_t n_rules = compare_rules_count(c->rules->rules);
	c->xfer = NULL;
	if (res->err != UPSTREAM_OK) {
		count_error(sl,
		            res->err == UPSTREAM_ERR_TIMEOUT ? SHADOW_CAUSE_TIMEOUT
		                                             : SHADOW_CAUSE_FAILED,
		            n_rules);
		ctx_free(c);
		return;
	}
	hist_add(&sl->latency, res->elapsed_us);
	if (res->elapsed_us >= c->live_us)
		hist_add(&sl->diff_pos, res->elapsed_us - c->live_us);
	else
		hist_add(&sl->diff_neg, c->live_us - res->elapsed_us);
	struct compare_outcome *o = malloc(sizeof(*o));
	size_t len = evbuffer_get_length(res->body);
	const char *body = len ? (const char *)evbuffer_pullup(res->body, -1) : "";
	if (!o || (len && !body)) {
		count_error(sl, SHADOW_CAUSE_INVALID, n_rules);
	} else if (c->live_too_big) {
		compare_outcome_clear(o);
		count_error(sl, SHADOW_CAUSE_INVALID, n_rules);
	} else {
		enum compare_result r =
		    compare_responses(c->rules->rules, (int)c->live_status, c->live_body,
		                      c->live_len, (int)res->status, body, len, o);
		if (r == COMPARE_ERROR)
			inc(&sl->causes[SHADOW_CAUSE_INVALID], 1);
		count_result(sl, r, o, n_rules);
		if (r == COMPARE_DISAGREE)
			log_disagreement(c, res->status, res->elapsed_us, o);
	}
	free(o);
	ctx_free(c);
}

/* Copy what the mirror needs from live; NULL when out of memory. */
static struct shadow_ctx *ctx_new(struct shadow_worker *sw, const struct proxy_live *live,
                                  size_t cand, int slot)
{
	const struct config_shadow *sc = &live->snap->cfg->shadow;
	struct shadow_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->sw = sw;
	c->live_variant = live->variant;
	c->shadow_variant = cand;
	c->slot = slot;
	c->live_status = live->status;
	c->live_us = live->latency_us;
	snprintf(c->request_id, sizeof(c->request_id), "%s", live->request_id);
	size_t blen = evbuffer_get_length(live->resp_body);
	c->live_too_big = blen > COMPARE_BODY_MAX;
	if (!c->live_too_big) {
		c->live_len = blen;
		c->live_body = malloc(blen ? blen : 1);
		if (!c->live_body ||
		    evbuffer_copyout(live->resp_body, c->live_body, blen) != (ev_ssize_t)blen)
			goto fail;
	}
	c->req_body_len = live->req_body_len;
	size_t keep = sc->redact || !sc->log_path ? 0 : live->req_body_len;
	if (keep > sc->log_body_max)
		keep = sc->log_body_max;
	if (keep > SHADOWLOG_BODY_LIMIT)
		keep = SHADOWLOG_BODY_LIMIT;
	if (live->req_body && keep) {
		c->req_body = malloc(keep);
		if (!c->req_body)
			goto fail;
		memcpy(c->req_body, live->req_body, keep);
		c->req_body_kept = keep;
	} else if (!sc->redact && sc->log_path) {
		c->req_body = calloc(1, 1); /* logged as "" rather than omitted */
		if (!c->req_body)
			goto fail;
	}
	c->bytes = c->live_len + live->req_body_len + keep;
	return c;
fail:
	free(c->live_body);
	free(c->req_body);
	free(c);
	return NULL;
}

/* Submit c's mirror to endpoint ep of the candidate; 0, or -1 (c untouched). */
static int mirror_submit(struct shadow_ctx *c, const struct proxy_live *live, ssize_t ep)
{
	const struct route_snapshot *s = live->snap;
	char url[SHADOW_URL_MAX];
	int n = snprintf(url, sizeof(url), "%s%s",
	                 s->variants[c->shadow_variant].endpoints[ep].cfg->url, live->uri);
	if (n < 0 || (size_t)n >= sizeof(url) || !live->method)
		return -1;
	struct upstream_request req = {
	    .method = live->method,
	    .url = url,
	    .headers = mirror_headers(live),
	    .body = live->req_body,
	    .body_len = live->req_body_len,
	    .copy_body = 1, /* the live request is freed right after the hook */
	    .timeout_ms = s->cfg->shadow.timeout_ms ? s->cfg->shadow.timeout_ms
	                                            : s->cfg->limits.upstream_timeout_ms,
	    .max_response = COMPARE_BODY_MAX,
	    .ca_file = s->cfg->upstream_tls.ca, /* the candidate's TLS, as for live traffic */
	    .tls_insecure = !s->cfg->upstream_tls.verify,
	    .cb = on_mirror_done,
	    .arg = c,
	};
	char err[256];
	if (!req.headers)
		return -1;
	c->xfer = upstream_submit(live->w->up, &req, err, sizeof(err));
	if (!c->xfer) {
		log_debug("shadow: request %s: mirror not started: %s", live->request_id, err);
		return -1;
	}
	return 0;
}

static void drop(struct shadow_slot *sl, enum shadow_drop why, size_t n_rules)
{
	inc(&sl->dropped[why], 1);
	count_error(sl, SHADOW_CAUSE_DROPPED, n_rules);
}

/* Whether a mirror may start now: -1 if so, else the reason to drop it. */
static int mirror_budget(const struct shadow_worker *sw, const struct proxy_live *live)
{
	size_t resp = evbuffer_get_length(live->resp_body);
	/* what ctx_new will hold: a live body over COMPARE_BODY_MAX is not copied */
	size_t need = (resp > COMPARE_BODY_MAX ? 0 : resp) + live->req_body_len;
	if (sw->inflight >= live->snap->cfg->shadow.max_inflight)
		return SHADOW_DROP_BUDGET;
	if (sw->inflight_bytes + need > SHADOW_INFLIGHT_BYTES_MAX)
		return SHADOW_DROP_BYTES;
	return -1;
}

/* Link c into sw's in-flight list and budget (ctx_free undoes it). */
static void ctx_link(struct shadow_worker *sw, struct shadow_ctx *c, struct shadow_rules *rules,
                     struct route_snapshot *s)
{
	c->rules = rules;
	rules->refs++;
	route_snapshot_ref(s);
	c->snap = s;
	c->next = sw->ctxs;
	if (sw->ctxs)
		sw->ctxs->prev = c;
	sw->ctxs = c;
	sw->inflight++;
	sw->inflight_bytes += c->bytes;
}

int shadow_after_live(const struct proxy_live *live)
{
	struct route_snapshot *s = live->snap;
	const struct route_params *p = &s->params;
	if (p->shadow_bp == 0 || p->candidate < 0 || (size_t)p->candidate == live->variant)
		return -1;
	if (shadow_bucket(s, live) >= p->shadow_bp)
		return -1;
	size_t cand = (size_t)p->candidate;
	int slot = s->variants[cand].stats_slot;
	struct shadow_worker *sw = worker_state(live->w);
	if (!sw || slot < 0 || slot >= STATS_MAX_SLOTS)
		return -1;
	struct shadow_slot *sl = &sw->slots[slot];
	struct shadow_rules *rules = rules_for(sw, s);
	size_t n_rules = rules ? compare_rules_count(rules->rules) : s->cfg->shadow.n_rules;
	int why = rules ? mirror_budget(sw, live) : SHADOW_DROP_INTERNAL;
	ssize_t ep = why < 0 ? route_endpoint_pick(s, cand) : -1;
	if (why < 0 && ep < 0)
		why = SHADOW_DROP_NO_ENDPOINT;
	struct shadow_ctx *c = why < 0 ? ctx_new(sw, live, cand, slot) : NULL;
	if (why < 0 && !c)
		why = SHADOW_DROP_INTERNAL;
	if (why < 0) {
		ctx_link(sw, c, rules, s);
		if (mirror_submit(c, live, ep) < 0) {
			ctx_free(c);
			why = SHADOW_DROP_INTERNAL;
		}
	}
	if (why >= 0) {
		drop(sl, (enum shadow_drop)why, n_rules);
		return why; /* observability: the access log's "shadow" */
	}
	inc(&sl->mirrored, 1);
	return SHADOW_DROP_N;
}

void shadow_worker_free(struct worker *w)
{
	struct shadow_worker *sw = w ? w->shadow : NULL;
	if (!sw)
		return;
	/* The worker's thread has ended: its transfers never call back. */
	while (sw->ctxs) {
		sw->ctxs->xfer = NULL;
		ctx_free(sw->ctxs);
	}
	rules_unref(sw->cur);
	sw->cur = NULL;
	pthread_mutex_lock(&reg_mu);
	for (struct shadow_worker **pp = &reg_head; *pp; pp = &(*pp)->next) {
		if (*pp == sw) {
			*pp = sw->next;
			break;
		}
	}
	size_t n_close = 0;
	struct shadowlog *closing[SHADOW_LOGS_MAX];
	if (!reg_head) { /* the last worker is gone: flush and close the logs */
		for (size_t i = 0; i < n_logs; i++) {
			closing[n_close++] = logs[i].log;
			free(logs[i].path);
			logs[i].path = NULL;
			logs[i].log = NULL;
		}
		n_logs = 0;
		logs_full_warned = 0;
	}
	pthread_mutex_unlock(&reg_mu);
	for (size_t i = 0; i < n_close; i++)
		shadowlog_close(closing[i]);
	for (size_t i = 0; i < STATS_MAX_SLOTS; i++) {
		free(atomic_load(&sw->slots[i].latency));
		free(atomic_load(&sw->slots[i].diff_pos));
		free(atomic_load(&sw->slots[i].diff_neg));
	}
	free(sw);
	w->shadow = NULL;
}

/* ---- reading -------------------------------------------------------------- */

static void load_add(uint64_t *dst, _Atomic uint64_t *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] += atomic_load_explicit(&src[i], memory_order_relaxed);
}

void shadow_merge(int slot, struct shadow_variant_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (slot < 0 || slot >= STATS_MAX_SLOTS)
		return;
	pthread_mutex_lock(&reg_mu);
	for (struct shadow_worker *sw = reg_head; sw; sw = sw->next) {
		struct shadow_slot *sl = &sw->slots[slot];
		load_add(&out->mirrored, &sl->mirrored, 1);
		load_add(out->dropped, sl->dropped, SHADOW_DROP_N);
		load_add(out->results, sl->results, 3);
		load_add(out->causes, sl->causes, SHADOW_CAUSE_N);
		for (size_t r = 0; r < CONFIG_MAX_RULES; r++)
			load_add(out->rules[r], sl->rules[r], 3);
		hist_merge(&sl->latency, &out->latency);
		hist_merge(&sl->diff_pos, &out->diff_pos);
		hist_merge(&sl->diff_neg, &out->diff_neg);
	}
	pthread_mutex_unlock(&reg_mu);
}

int64_t shadow_diff_quantile(const struct shadow_variant_stats *st, double q)
{
	uint64_t neg = st->diff_neg.total, total = neg + st->diff_pos.total;
	if (total == 0)
		return 0;
	/* nearest rank in 1..total over the values sorted ascending */
	double want = q * (double)total;
	uint64_t rank = (uint64_t)want;
	if ((double)rank < want)
		rank++;
	if (rank < 1)
		rank = 1;
	if (rank > total)
		rank = total;
	if (rank <= neg) /* among the negative values, most negative first */
		return -(int64_t)stats_hist_quantile(&st->diff_neg,
		                                     (double)(neg - rank + 1) / (double)neg);
	return (int64_t)stats_hist_quantile(&st->diff_pos,
	                                    (double)(rank - neg) / (double)st->diff_pos.total);
}

const char *shadow_drop_name(enum shadow_drop d)
{
	static const char *const names[] = {"budget", "bytes", "no_endpoint", "internal"};
	return d < SHADOW_DROP_N ? names[d] : "?";
}

const char *shadow_cause_name(enum shadow_cause c)
{
	static const char *const names[] = {"failed", "timeout", "dropped", "invalid"};
	return c < SHADOW_CAUSE_N ? names[c] : "?";
}

static json_t *quantiles_json(const struct stats_hist *h)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "count", (json_int_t)h->total, "p50",
	                 (json_int_t)stats_hist_quantile(h, 0.50), "p90",
	                 (json_int_t)stats_hist_quantile(h, 0.90), "p99",
	                 (json_int_t)stats_hist_quantile(h, 0.99), "p99.9",
	                 (json_int_t)stats_hist_quantile(h, 0.999), "max", (json_int_t)h->max);
}

static json_t *diff_json(const struct shadow_variant_stats *m)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I}", "count",
	                 (json_int_t)(m->diff_pos.total + m->diff_neg.total), "p50",
	                 (json_int_t)shadow_diff_quantile(m, 0.50), "p90",
	                 (json_int_t)shadow_diff_quantile(m, 0.90), "p99",
	                 (json_int_t)shadow_diff_quantile(m, 0.99), "p99.9",
	                 (json_int_t)shadow_diff_quantile(m, 0.999));
}

static json_t *counts3(const uint64_t *c)
{
	return json_pack("{s:I, s:I, s:I}", "agree", (json_int_t)c[COMPARE_AGREE], "disagree",
	                 (json_int_t)c[COMPARE_DISAGREE], "error", (json_int_t)c[COMPARE_ERROR]);
}

static json_t *variant_json(const struct route_snapshot *s, const struct route_variant *v,
                            const struct shadow_variant_stats *m)
{
	json_t *drops = json_object(), *causes = json_object(), *rules = json_array();
	for (int d = 0; d < SHADOW_DROP_N; d++)
		json_object_set_new(drops, shadow_drop_name(d),
		                    json_integer((json_int_t)m->dropped[d]));
	for (int c = 0; c < SHADOW_CAUSE_N; c++)
		json_object_set_new(causes, shadow_cause_name(c),
		                    json_integer((json_int_t)m->causes[c]));
	for (size_t r = 0; r < s->cfg->shadow.n_rules && r < CONFIG_MAX_RULES; r++) {
		json_t *o = counts3(m->rules[r]);
		json_object_set_new(o, "path", json_string(s->cfg->shadow.rules[r].path));
		json_array_append_new(rules, o);
	}
	uint64_t judged = m->results[COMPARE_AGREE] + m->results[COMPARE_DISAGREE];
	json_t *j = counts3(m->results);
	json_object_set_new(j, "name", json_string(v->name));
	json_object_set_new(j, "mirrored", json_integer((json_int_t)m->mirrored));
	json_object_set_new(j, "agreement_rate",
	                    judged ? json_real((double)m->results[COMPARE_AGREE] / (double)judged)
	                           : json_null());
	json_object_set_new(j, "dropped", drops);
	json_object_set_new(j, "errors", causes);
	json_object_set_new(j, "rules", rules);
	json_object_set_new(j, "latency_us", quantiles_json(&m->latency));
	json_object_set_new(j, "latency_diff_us", diff_json(m));
	return j;
}

/* Counters of the log at path (the current config's), or null when it is not open. */
static json_t *log_json(const char *path)
{
	json_t *j = NULL;
	pthread_mutex_lock(&reg_mu);
	for (size_t i = 0; path && i < n_logs; i++) {
		if (logs[i].log && strcmp(logs[i].path, path) == 0) {
			struct shadowlog_counts c;
			shadowlog_get_counts(logs[i].log, &c);
			j = json_pack("{s:s, s:I, s:I, s:I}", "path", path, "written",
			              (json_int_t)c.written, "dropped", (json_int_t)c.dropped,
			              "write_errors", (json_int_t)c.write_errors);
		}
	}
	pthread_mutex_unlock(&reg_mu);
	return j ? j : json_null();
}

json_t *shadow_status_json(const struct route_snapshot *s)
{
	struct shadow_variant_stats *m = malloc(sizeof(*m));
	json_t *vars = json_array();
	if (!m || !vars) {
		free(m);
		json_decref(vars);
		return NULL;
	}
	for (size_t v = 0; v < s->n_variants; v++) {
		shadow_merge(s->variants[v].stats_slot, m);
		int any = m->mirrored != 0;
		for (int d = 0; d < SHADOW_DROP_N; d++)
			any |= m->dropped[d] != 0;
		if (any || (s->params.candidate >= 0 && (size_t)s->params.candidate == v))
			json_array_append_new(vars, variant_json(s, &s->variants[v], m));
	}
	free(m);
	return json_pack("{s:f, s:I, s:o, s:o}", "percent", s->params.shadow_bp / 100.0,
	                 "max_inflight", (json_int_t)s->cfg->shadow.max_inflight, "variants", vars,
	                 "log", log_json(s->cfg->shadow.log_path));
}
