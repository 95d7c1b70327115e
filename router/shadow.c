/*
 * shadow.c - mirror, compare, count (see shadow.h).
 *
 * The live loop only decides and copies; everything else happens on a shadow
 * thread of its own per worker. Per worker: a struct shadow_worker (in
 * worker->shadow) with the in-flight budget, a bounded hand-over queue and the
 * shadow thread, which runs its own event_base and its own struct upstream
 * (so mirror transfers, their connections, completions, comparisons and the
 * disagreement log never run on the live loop).
 *
 * On the live thread, shadow_after_live samples, checks the budget (atomics:
 * the shadow thread gives budget back), picks the endpoint and copies into
 * one allocation what the mirror needs: the request line, its headers
 * already filtered and serialized, the request body and the live answer. It
 * pushes that under a mutex and wakes the shadow thread only when the queue
 * was idle (one wake-up per batch). The shadow thread takes the whole queue
 * at once, submits each mirror (libcurl reads the body from the context: no
 * second copy), compares on completion and frees.
 *
 * Counters: two shards per worker, each with a single writer (relaxed load +
 * store, as in stats.c): `fg` written by the worker's thread (mirrored, drops
 * decided there), `bg` by the shadow thread (results, causes, latency, and the
 * mirrors that could not start after all, counted back out of "mirrored").
 * Readers sum both.
 *
 * Shutdown: shadow_worker_free (after the worker's thread ended, so nothing
 * is pushed any more) stops the shadow thread, which cancels its transfers
 * and frees them with its engine; the joiner frees what was still queued.
 */
#include "shadow.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "front.h" /* the live request's headers */
#include "log.h"
#include "proxy.h"
#include "route.h"
#include "shadowlog.h"
#include "upstream.h"
#include "worker.h"

#define SHADOW_URL_MAX      8192
#define SHADOW_SALT_MAX     (256 + sizeof("/shadow")) /* canary.salt is at most 256 bytes */
#define SHADOW_MAXCONNS     1024 /* keep-alive pool of a shadow thread's engine */
#define SHADOW_ENGINE_ERROR "shadow: cannot start the shadow thread of worker %zu: %s"

struct ahist {
	_Atomic uint64_t counts[STATS_HIST_BUCKETS];
	_Atomic uint64_t total, sum, max;
};

struct shadow_slot {
	_Atomic uint64_t mirrored; /* fg: handed over; bg: could not start after all */
	_Atomic uint64_t dropped[SHADOW_DROP_N];
	_Atomic uint64_t results[3];
	_Atomic uint64_t causes[SHADOW_CAUSE_N];
	_Atomic uint64_t rules[CONFIG_MAX_RULES][3];
	struct ahist *_Atomic latency; /* allocated on first use by the writer */
	struct ahist *_Atomic diff_pos;
	struct ahist *_Atomic diff_neg;
};

/* Compiled rules of one config, shared by the mirrors started under it. */
struct shadow_rules {
	int refs; /* shadow thread only */
	struct route_config *rc;
	struct compare_rules *rules;
};

struct shadow_ctx;

struct shadow_worker {
	struct shadow_worker *next; /* registry */
	size_t index;               /* the worker's, for messages */
	/* budget: taken by the worker's thread, given back by the shadow thread */
	_Atomic size_t inflight; /* queued or in flight */
	_Atomic size_t inflight_bytes;
	/* hand-over queue (mu) */
	pthread_mutex_t mu;
	struct shadow_ctx *q_head, *q_tail;
	int wake_pending; /* wake_fd written, queue not yet taken */
	int stop;
	/* shadow thread */
	pthread_t thread;
	int started; /* the thread runs (or ran): join it */
	int failed;  /* it could not be started: every mirror is dropped */
	struct event_base *base;
	int wake_fd; /* eventfd: written by the worker without taking libevent's lock */
	struct event *wake_ev;
	struct upstream *up;
	struct shadow_ctx *ctxs;                  /* in flight (shadow thread) */
	size_t running;                           /* of them */
	struct shadow_ctx *wait_head, *wait_tail; /* taken from the queue, waiting for a slot */
	struct shadow_rules *cur;
	const struct route_config *failed_rc; /* rules of this config did not compile: said once */
	char *scratch;                        /* header block being built (worker's thread) */
	size_t scratch_cap;
	struct shadow_slot fg[STATS_MAX_SLOTS];
	struct shadow_slot bg[STATS_MAX_SLOTS];
};

/*
 * One mirror: allocated and filled by the worker's thread, owned by the
 * shadow thread once queued. The strings and bodies live in data[].
 */
struct shadow_ctx {
	struct shadow_ctx *prev, *next; /* queue (next), then the in-flight list */
	struct shadow_worker *sw;
	struct upstream_transfer *xfer;
	struct route_snapshot *snap;
	struct shadow_rules *rules;
	size_t live_variant, shadow_variant;
	int slot;
	size_t n_rules; /* of the config, for counting a drop before the rules compile */
	long live_status;
	uint64_t live_us;
	int live_too_big;
	const char *method, *target;
	const char *endpoint; /* the candidate endpoint's URL (the snapshot's config owns it) */
	enum upstream_client client;
	const char *hdrs; /* "Name: value\r\n" lines (upstream.h's head_block) */
	size_t hdrs_len;
	const char *req_body, *live_body;
	size_t req_body_len, live_len;
	int log_body;         /* the log line gets a request_body field */
	size_t req_body_kept; /* bytes of req_body logged */
	size_t bytes;         /* counted against the byte budget */
	char request_id[SHADOWLOG_ID_MAX + 1];
	char data[];
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

static void drop(struct shadow_slot *sl, enum shadow_drop why, size_t n_rules)
{
	inc(&sl->dropped[why], 1);
	count_error(sl, SHADOW_CAUSE_DROPPED, n_rules);
}

static void slot_free(struct shadow_slot *sl)
{
	free(atomic_load(&sl->latency));
	free(atomic_load(&sl->diff_pos));
	free(atomic_load(&sl->diff_neg));
}

/* ---- rules and log (shadow thread) ----------------------------------------- */

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
 * (idle) until exit, because a shadow thread may still be writing to it. At
 * most SHADOW_LOGS_MAX paths per process life.
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

/* ---- the shadow thread ---------------------------------------------------- */

/* Give c's budget back and free it (it is in no list any more). */
static void ctx_release(struct shadow_ctx *c)
{
	struct shadow_worker *sw = c->sw;
	atomic_fetch_sub_explicit(&sw->inflight, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&sw->inflight_bytes, c->bytes, memory_order_relaxed);
	rules_unref(c->rules);
	route_snapshot_unref(c->snap);
	free(c);
}

/* Unlink c from the in-flight list and release it. */
static void ctx_done(struct shadow_ctx *c)
{
	struct shadow_worker *sw = c->sw;
	sw->running--;
	if (c->prev)
		c->prev->next = c->next;
	else if (sw->ctxs == c)
		sw->ctxs = c->next;
	if (c->next)
		c->next->prev = c->prev;
	ctx_release(c);
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
	    .body = c->log_body ? (c->req_body_kept ? c->req_body : "") : NULL,
	    .body_len = c->req_body_kept,
	    .body_total = c->req_body_len,
	};
	shadowlog_write(l, &e);
}

/* Compare a shadow answer with the live one, count it, log a disagreement. */
static void judge(struct shadow_ctx *c, struct shadow_slot *sl, const struct upstream_result *res,
                  size_t n_rules)
{
	struct compare_outcome *o = malloc(sizeof(*o));
	size_t len = evbuffer_get_length(res->body);
	const char *body = len ? (const char *)evbuffer_pullup(res->body, -1) : "";
	if (!o || (len && !body) || c->live_too_big) {
		count_error(sl, SHADOW_CAUSE_INVALID, n_rules);
		free(o);
		return;
	}
	enum compare_result r =
	    compare_responses(c->rules->rules, (int)c->live_status, c->live_body, c->live_len,
	                      (int)res->status, body, len, o);
	if (r == COMPARE_ERROR)
		inc(&sl->causes[SHADOW_CAUSE_INVALID], 1);
	count_result(sl, r, o, n_rules);
	if (r == COMPARE_DISAGREE)
		log_disagreement(c, res->status, res->elapsed_us, o);
	free(o);
}

static void pump(struct shadow_worker *sw);

static void on_mirror_done(const struct upstream_result *res, void *arg)
{
	struct shadow_ctx *c = arg;
	struct shadow_worker *sw = c->sw;
	struct shadow_slot *sl = &sw->bg[c->slot];
	size_t n_rules = compare_rules_count(c->rules->rules);
	c->xfer = NULL;
	if (res->err != UPSTREAM_OK) {
		count_error(sl,
		            res->err == UPSTREAM_ERR_TIMEOUT ? SHADOW_CAUSE_TIMEOUT
		                                             : SHADOW_CAUSE_FAILED,
		            n_rules);
	} else {
		hist_add(&sl->latency, res->elapsed_us);
		if (res->elapsed_us >= c->live_us)
			hist_add(&sl->diff_pos, res->elapsed_us - c->live_us);
		else
			hist_add(&sl->diff_neg, c->live_us - res->elapsed_us);
		judge(c, sl, res, n_rules);
	}
	ctx_done(c);
	pump(sw); /* a slot is free */
}

/* Submit one queued mirror; on failure it is counted as dropped and freed. */
static void ctx_start(struct shadow_worker *sw, struct shadow_ctx *c)
{
	struct route_snapshot *s = c->snap;
	struct shadow_slot *sl = &sw->bg[c->slot];
	c->rules = rules_for(sw, s);
	if (c->rules)
		c->rules->refs++;
	struct upstream_request req = {
	    .method = c->method,
	    .endpoint = c->endpoint,
	    .target = c->target,
	    .head_block = c->hdrs,
	    .head_block_len = c->hdrs_len,
	    .client = c->client,
	    .body = c->req_body,
	    .body_len = c->req_body_len,
	    .copy_body = 0, /* c holds it until the callback or the cancel */
	    .timeout_ms = s->cfg->shadow.timeout_ms ? s->cfg->shadow.timeout_ms
	                                            : s->cfg->limits.upstream_timeout_ms,
	    .max_response = COMPARE_BODY_MAX,
	    .ca_file = s->cfg->upstream_tls.ca, /* the candidate's TLS, as for live traffic */
	    .tls_insecure = !s->cfg->upstream_tls.verify,
	    .cb = on_mirror_done,
	    .arg = c,
	};
	char err[256] = "out of memory";
	if (c->rules)
		c->xfer = upstream_submit(sw->up, &req, err, sizeof(err));
	if (!c->xfer) {
		log_debug("shadow: request %s: mirror not started: %s", c->request_id, err);
		inc(&sl->mirrored, 1); /* counted back out of the worker's "mirrored" */
		drop(sl, SHADOW_DROP_INTERNAL,
		     c->rules ? compare_rules_count(c->rules->rules) : c->n_rules);
		ctx_release(c);
		return;
	}
	c->prev = NULL;
	c->next = sw->ctxs;
	if (sw->ctxs)
		sw->ctxs->prev = c;
	sw->ctxs = c;
	sw->running++;
}

/*
 * Start waiting mirrors while fewer than shadow.max_inflight (of the oldest
 * waiting mirror's config) are in flight: bursts wait here instead of opening
 * more connections to the shadow.
 */
static void pump(struct shadow_worker *sw)
{
	while (sw->wait_head && sw->running < sw->wait_head->snap->cfg->shadow.max_inflight) {
		struct shadow_ctx *c = sw->wait_head;
		sw->wait_head = c->next;
		if (!sw->wait_head)
			sw->wait_tail = NULL;
		c->next = NULL;
		ctx_start(sw, c);
	}
}

/* The worker pushed mirrors (or asks to stop): take the whole queue at once. */
static void on_wake(evutil_socket_t fd, short events, void *arg)
{
	struct shadow_worker *sw = arg;
	uint64_t n;
	if (read(sw->wake_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_debug("shadow: worker %zu: wake-up read: %s", sw->index, strerror(errno));
	pthread_mutex_lock(&sw->mu);
	struct shadow_ctx *c = sw->stop ? NULL : sw->q_head;
	int stop = sw->stop;
	if (!stop)
		sw->q_head = sw->q_tail = NULL;
	sw->wake_pending = 0;
	pthread_mutex_unlock(&sw->mu);
	if (stop) {
		event_base_loopbreak(sw->base);
		return;
	}
	if (c) {
		if (sw->wait_tail)
			sw->wait_tail->next = c;
		else
			sw->wait_head = c;
		while (c->next)
			c = c->next;
		sw->wait_tail = c;
	}
	pump(sw);
}

static void *shadow_main(void *arg)
{
	struct shadow_worker *sw = arg;
	char name[16];
	snprintf(name, sizeof(name), "shadow-%zu", sw->index % 100000);
	pthread_setname_np(pthread_self(), name); /* top -H, perf, strace -p by thread */
	/* SCHED_BATCH: a wake-up of this thread never preempts a live worker; it
	 * still gets its fair share of the CPU. Best effort. */
	struct sched_param sp = {0};
	pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
	event_base_loop(sw->base, EVLOOP_NO_EXIT_ON_EMPTY);
	/* stopping: the engine cancels every transfer (no callbacks), then free them */
	upstream_free(sw->up);
	sw->up = NULL;
	while (sw->ctxs) {
		sw->ctxs->xfer = NULL;
		ctx_done(sw->ctxs);
	}
	while (sw->wait_head) {
		struct shadow_ctx *c = sw->wait_head;
		sw->wait_head = c->next;
		ctx_release(c);
	}
	sw->wait_tail = NULL;
	rules_unref(sw->cur);
	sw->cur = NULL;
	return NULL;
}

/* Set up and start sw's thread; 0, or -1 with a reason in err (sw->failed set). */
static int thread_start(struct shadow_worker *sw, char *err, size_t errlen)
{
	sw->base = event_base_new(); /* no epoll changelist: see worker_new */
	sw->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!sw->base || sw->wake_fd < 0 ||
	    !(sw->wake_ev = event_new(sw->base, sw->wake_fd, EV_READ | EV_PERSIST, on_wake, sw)) ||
	    event_add(sw->wake_ev, NULL) < 0) {
		snprintf(err, errlen, "cannot set up its event loop");
		goto fail;
	}
	sw->up = upstream_new(sw->base, SHADOW_MAXCONNS, err, errlen);
	if (!sw->up)
		goto fail;
	int rc = pthread_create(&sw->thread, NULL, shadow_main, sw);
	if (rc != 0) {
		snprintf(err, errlen, "%s", strerror(rc));
		goto fail;
	}
	sw->started = 1;
	return 0;
fail:
	upstream_free(sw->up);
	sw->up = NULL;
	if (sw->wake_ev)
		event_free(sw->wake_ev);
	sw->wake_ev = NULL;
	if (sw->base)
		event_base_free(sw->base);
	sw->base = NULL;
	if (sw->wake_fd >= 0)
		close(sw->wake_fd);
	sw->wake_fd = -1;
	sw->failed = 1;
	return -1;
}

/* ---- the live side (worker's thread) --------------------------------------- */

/* w's shadow state, created with its thread on first need; NULL when out of memory. */
static struct shadow_worker *worker_state(struct worker *w)
{
	if (w->shadow)
		return w->shadow;
	struct shadow_worker *sw = calloc(1, sizeof(*sw));
	if (!sw || pthread_mutex_init(&sw->mu, NULL) != 0) {
		free(sw);
		return NULL;
	}
	sw->index = w->index;
	sw->wake_fd = -1;
	char err[256];
	if (thread_start(sw, err, sizeof(err)) < 0)
		log_error(SHADOW_ENGINE_ERROR "; mirrors are dropped (reason internal)", w->index,
		          err);
	pthread_mutex_lock(&reg_mu);
	sw->next = reg_head;
	reg_head = sw;
	pthread_mutex_unlock(&reg_mu);
	w->shadow = sw;
	return sw;
}

/* Sampling bucket 0..9999: sticky on the canary key when there is one. */
static uint32_t shadow_bucket(const struct route_snapshot *s, const struct proxy_live *live)
{
	const struct config *cfg = s->cfg;
	const char *key = NULL;
	size_t len = 0;
	if (cfg->sticky == CONFIG_STICKY_HEADER && cfg->sticky_name) {
		key = front_req_header(live->req, cfg->sticky_name);
		len = key ? strlen(key) : 0;
	} else if (cfg->sticky == CONFIG_STICKY_COOKIE && cfg->sticky_name) {
		const char *c = front_req_header(live->req, "Cookie");
		key = c ? route_cookie_value(c, cfg->sticky_name, &len) : NULL;
	}
	if (!key || len == 0)
		return route_random_bucket();
	char salt[SHADOW_SALT_MAX];
	snprintf(salt, sizeof(salt), "%s/shadow", cfg->salt ? cfg->salt : "");
	return route_bucket(salt, key, len);
}

/* The mirror's headers: the live request's forwarding headers, marked as a mirror. */
static void mirror_headers(const struct proxy_live *live, struct proxy_head_block *b)
{
	proxy_forward_headers(live->req, live->client_ip ? live->client_ip : "", live->request_id,
	                      1, b);
}

/*
 * The bodies the mirror of live will hold (ctx_new's sizes); its header
 * block, target and method come on top (ctx_new counts the whole allocation).
 */
static size_t live_copy_len(const struct proxy_live *live)
{
	size_t resp = evbuffer_get_length(live->resp_body);
	/* a live body over COMPARE_BODY_MAX is not copied: the pair is an error */
	return (resp > COMPARE_BODY_MAX ? 0 : resp) + live->req_body_len;
}

/*
 * Copy what the mirror to endpoint ep of cand needs from live, in one
 * allocation; NULL when out of memory or the target is over SHADOW_URL_MAX,
 * or (*over set) when the allocation would pass SHADOW_INFLIGHT_BYTES_MAX.
 * The headers go through scratch (the worker's, grown as needed) so that they
 * are walked once.
 */
static struct shadow_ctx *ctx_new(struct shadow_worker *sw, const struct proxy_live *live,
                                  size_t cand, ssize_t ep, int slot, int *over)
{
	const struct route_snapshot *s = live->snap;
	const struct config_shadow *sc = &s->cfg->shadow;
	struct proxy_head_block hb = {.p = sw->scratch, .cap = sw->scratch_cap};
	mirror_headers(live, &hb);
	if (hb.len > hb.cap) {
		char *p = realloc(sw->scratch, hb.len);
		if (!p)
			return NULL;
		sw->scratch = p;
		sw->scratch_cap = hb.len;
		hb = (struct proxy_head_block){.p = p, .cap = hb.len};
		mirror_headers(live, &hb);
	}
	size_t mlen = strlen(live->method) + 1, tlen = strlen(live->uri) + 1;
	size_t resp = evbuffer_get_length(live->resp_body);
	size_t keep = resp > COMPARE_BODY_MAX ? 0 : resp;
	if (tlen > SHADOW_URL_MAX)
		return NULL;
	size_t total = sizeof(struct shadow_ctx) + mlen + tlen + hb.len + live->req_body_len + keep;
	/* the whole allocation counts against the byte budget: headers (up to
	 * limits.max_header each) held by hundreds of waiting mirrors are memory too */
	if (atomic_load_explicit(&sw->inflight_bytes, memory_order_relaxed) + total >
	    SHADOW_INFLIGHT_BYTES_MAX) {
		*over = 1;
		return NULL;
	}
	struct shadow_ctx *c = malloc(total);
	if (!c)
		return NULL;
	memset(c, 0, sizeof(*c));
	char *p = c->data;
	c->method = memcpy(p, live->method, mlen);
	c->target = memcpy(p += mlen, live->uri, tlen);
	c->hdrs = memcpy(p += tlen, hb.p, hb.len);
	c->hdrs_len = hb.len;
	c->req_body = p += hb.len;
	if (live->req_body_len)
		memcpy(p, live->req_body, live->req_body_len);
	c->req_body_len = live->req_body_len;
	c->live_body = p += live->req_body_len;
	c->live_too_big = resp > COMPARE_BODY_MAX;
	c->live_len = keep;
	if (keep && evbuffer_copyout(live->resp_body, p, keep) != (ev_ssize_t)keep) {
		free(c);
		return NULL;
	}
	c->endpoint = s->variants[cand].endpoints[ep].cfg->url;
	c->client = s->cfg->upstream_client == CONFIG_UPSTREAM_LIBCURL ? UPSTREAM_CLIENT_LIBCURL
	                                                               : UPSTREAM_CLIENT_BUILTIN;
	c->sw = sw;
	c->live_variant = live->variant;
	c->shadow_variant = cand;
	c->slot = slot;
	c->n_rules = sc->n_rules;
	c->live_status = live->status;
	c->live_us = live->latency_us;
	snprintf(c->request_id, sizeof(c->request_id), "%s", live->request_id);
	c->log_body = !sc->redact && sc->log_path;
	c->req_body_kept = c->log_body ? live->req_body_len : 0;
	if (c->req_body_kept > sc->log_body_max)
		c->req_body_kept = sc->log_body_max;
	if (c->req_body_kept > SHADOWLOG_BODY_LIMIT)
		c->req_body_kept = SHADOWLOG_BODY_LIMIT;
	c->bytes = total;
	return c;
}

/* Whether a mirror may start now: -1 if so, else the reason to drop it. */
static int mirror_budget(const struct shadow_worker *sw, const struct proxy_live *live)
{
	if (sw->failed)
		return SHADOW_DROP_INTERNAL;
	/* only this thread adds: what it reads can only shrink meanwhile. Up to
	 * max_inflight mirrors are in flight and as many more may wait for a slot
	 * (a shadow that stalls for a moment costs a wait, not a drop). */
	if (atomic_load_explicit(&sw->inflight, memory_order_relaxed) >=
	    2 * (size_t)live->snap->cfg->shadow.max_inflight)
		return SHADOW_DROP_BUDGET;
	if (atomic_load_explicit(&sw->inflight_bytes, memory_order_relaxed) + live_copy_len(live) >
	    SHADOW_INFLIGHT_BYTES_MAX)
		return SHADOW_DROP_BYTES;
	return -1;
}

/* Wake the shadow thread (one 8-byte write; no lock held). */
static void wake(struct shadow_worker *sw)
{
	uint64_t one = 1;
	if (write(sw->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("shadow: worker %zu: cannot wake the shadow thread: %s", sw->index,
		         strerror(errno));
}

/* Take c's budget and hand it to the shadow thread (which owns it from now on). */
static void ctx_push(struct shadow_worker *sw, struct shadow_ctx *c, struct route_snapshot *s)
{
	route_snapshot_ref(s);
	c->snap = s;
	atomic_fetch_add_explicit(&sw->inflight, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sw->inflight_bytes, c->bytes, memory_order_relaxed);
	pthread_mutex_lock(&sw->mu);
	if (sw->q_tail)
		sw->q_tail->next = c;
	else
		sw->q_head = c;
	sw->q_tail = c;
	int need_wake = !sw->wake_pending;
	sw->wake_pending = 1;
	pthread_mutex_unlock(&sw->mu);
	if (need_wake)
		wake(sw);
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
	struct shadow_slot *sl = &sw->fg[slot];
	int why = mirror_budget(sw, live);
	ssize_t ep = why < 0 ? route_endpoint_pick(s, cand) : -1;
	if (why < 0 && ep < 0)
		why = SHADOW_DROP_NO_ENDPOINT;
	int over = 0;
	struct shadow_ctx *c =
	    why < 0 && live->method ? ctx_new(sw, live, cand, ep, slot, &over) : NULL;
	if (why < 0 && !c)
		why = over ? SHADOW_DROP_BYTES : SHADOW_DROP_INTERNAL;
	if (why >= 0) {
		drop(sl, (enum shadow_drop)why, s->cfg->shadow.n_rules);
		return why; /* observability: the access log's "shadow" */
	}
	ctx_push(sw, c, s);
	inc(&sl->mirrored, 1);
	return SHADOW_DROP_N;
}

void shadow_worker_free(struct worker *w)
{
	struct shadow_worker *sw = w ? w->shadow : NULL;
	if (!sw)
		return;
	/* The worker's thread has ended: nothing is pushed any more. */
	if (sw->started) {
		pthread_mutex_lock(&sw->mu);
		sw->stop = 1;
		pthread_mutex_unlock(&sw->mu);
		wake(sw);
		pthread_join(sw->thread, NULL);
	}
	while (sw->q_head) { /* queued, never started */
		struct shadow_ctx *c = sw->q_head;
		sw->q_head = c->next;
		ctx_release(c);
	}
	rules_unref(sw->cur);
	if (sw->wake_ev)
		event_free(sw->wake_ev);
	if (sw->base)
		event_base_free(sw->base);
	if (sw->wake_fd >= 0)
		close(sw->wake_fd);
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
		slot_free(&sw->fg[i]);
		slot_free(&sw->bg[i]);
	}
	pthread_mutex_destroy(&sw->mu);
	free(sw->scratch);
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
		/* bg's "mirrored" counts mirrors that could not start after all */
		uint64_t handed =
		    atomic_load_explicit(&sw->fg[slot].mirrored, memory_order_relaxed);
		uint64_t undone =
		    atomic_load_explicit(&sw->bg[slot].mirrored, memory_order_relaxed);
		out->mirrored += handed > undone ? handed - undone : 0;
		for (int half = 0; half < 2; half++) {
			struct shadow_slot *sl = half ? &sw->bg[slot] : &sw->fg[slot];
			load_add(out->dropped, sl->dropped, SHADOW_DROP_N);
			load_add(out->results, sl->results, 3);
			load_add(out->causes, sl->causes, SHADOW_CAUSE_N);
			for (size_t r = 0; r < CONFIG_MAX_RULES; r++)
				load_add(out->rules[r], sl->rules[r], 3);
			hist_merge(&sl->latency, &out->latency);
			hist_merge(&sl->diff_pos, &out->diff_pos);
			hist_merge(&sl->diff_neg, &out->diff_neg);
		}
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
