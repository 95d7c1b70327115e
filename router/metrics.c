/*
 * metrics.c - the router's observability pages on the admin HTTP server:
 * Prometheus text at /metrics (merged worker shards, shadow counters, route
 * snapshot, reload/rollback counters, process gauges), the dashboard at /
 * (router/web/index.html embedded at build time as web_index_html), and
 * /status/history, a ring of per-second samples taken on the main thread by
 * a 1 s timer (requests/s, error rate, p99 of that second, live share, shadow
 * agreement), which the dashboard charts.
 *
 * Everything here runs on the main thread except metrics_note_*, which any
 * thread may call (a mutex guards those counters and the actions ring).
 */
#include "metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "accesslog.h"
#include "log.h"
#include "ops.h"
#include "route.h"
#include "shadow.h"
#include "stats.h"

/* The dashboard page, generated from router/web/index.html (router/CMakeLists.txt). */
extern const unsigned char web_index_html[];
extern const size_t web_index_html_len;

#define LABEL_MAX 512

/* One variant slot in one second. */
struct sample_v {
	uint32_t req, err5xx, p99_us;
	int32_t share_bp; /* live share in basis points, -1 = not in the snapshot */
	uint32_t agree, disagree, serr;
};

struct sample {
	int64_t t_ms; /* unix milliseconds */
	int n_slots;
	struct sample_v v[STATS_MAX_SLOTS];
};

/* What the previous sample saw of a slot, to take differences. */
struct slot_prev {
	int seen;
	uint64_t total, err5xx;
	uint64_t shadow[3];
	struct stats_hist *hist; /* lazily allocated */
};

struct metrics {
	struct event_base *base;
	struct evhttp *http;
	struct stats *st;
	struct event *timer;
	struct sample *ring; /* METRICS_HISTORY_MAX */
	size_t head, n;      /* next write position, samples held */
	struct slot_prev prev[STATS_MAX_SLOTS];
	struct stats_variant *cur; /* scratch */
	struct stats_hist *delta;  /* scratch */
};

/* ---- events noted by other rooms ---- */

struct action {
	int64_t t_ms;
	char text[METRICS_ACTION_LEN + 1];
};

static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t ev_reload_ok, ev_reload_fail, ev_rollbacks;
static struct action ev_actions[METRICS_ACTIONS_MAX];
static size_t ev_actions_head, ev_actions_n;
static int64_t start_time_s;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void metrics_note_reload(int ok)
{
	pthread_mutex_lock(&ev_lock);
	if (ok)
		ev_reload_ok++;
	else
		ev_reload_fail++;
	pthread_mutex_unlock(&ev_lock);
}

void metrics_note_rollback(void)
{
	pthread_mutex_lock(&ev_lock);
	ev_rollbacks++;
	pthread_mutex_unlock(&ev_lock);
}

void metrics_note_action(const char *text)
{
	pthread_mutex_lock(&ev_lock);
	struct action *a = &ev_actions[ev_actions_head];
	a->t_ms = now_ms();
	snprintf(a->text, sizeof(a->text), "%s", text ? text : "");
	ev_actions_head = (ev_actions_head + 1) % METRICS_ACTIONS_MAX;
	if (ev_actions_n < METRICS_ACTIONS_MAX)
		ev_actions_n++;
	pthread_mutex_unlock(&ev_lock);
}

void metrics_events_reset(void)
{
	pthread_mutex_lock(&ev_lock);
	ev_reload_ok = ev_reload_fail = ev_rollbacks = 0;
	ev_actions_head = ev_actions_n = 0;
	memset(ev_actions, 0, sizeof(ev_actions));
	pthread_mutex_unlock(&ev_lock);
}

/* ---- a bounded text buffer ---- */

struct buf {
	char *p;
	size_t len, cap;
	int fail;
};

static void bprintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bprintf(struct buf *b, const char *fmt, ...)
{
	if (b->fail)
		return;
	for (int tries = 0; tries < 2; tries++) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->fail = 1;
			return;
		}
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t want = b->cap ? b->cap : 16384;
		while (want <= b->len + (size_t)n)
			want *= 2;
		char *np = want <= METRICS_TEXT_MAX ? realloc(b->p, want) : NULL;
		if (np == NULL) {
			b->fail = 1;
			return;
		}
		b->p = np;
		b->cap = want;
	}
	b->fail = 1;
}

void metrics_label_escape(const char *s, char *out, size_t outlen)
{
	size_t o = 0;
	if (outlen == 0)
		return;
	for (; s && *s; s++) {
		int esc = *s == '\\' || *s == '"' || *s == '\n';
		if (o + (esc ? 2 : 1) >= outlen)
			break; /* truncated, never inside an escape */
		if (esc)
			out[o++] = '\\';
		out[o++] = *s == '\n' ? 'n' : *s;
	}
	out[o] = '\0';
}

static void head(struct buf *b, const char *name, const char *type, const char *help)
{
	bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* ---- /metrics ---- */

/* The largest value (us) that falls into log-linear bucket b. */
static uint64_t bucket_high(size_t b)
{
	if (b < STATS_HIST_SUB)
		return b;
	size_t shift = (b - STATS_HIST_SUB) / STATS_HIST_SUB;
	uint64_t sub = (b - STATS_HIST_SUB) % STATS_HIST_SUB + STATS_HIST_SUB;
	return ((sub + 1) << shift) - 1;
}

static const struct {
	const char *le;
	uint64_t us;
} le_bounds[] = {
    {"0.0001", 100},  {"0.00025", 250}, {"0.0005", 500},  {"0.001", 1000},
    {"0.0025", 2500}, {"0.005", 5000},  {"0.01", 10000},  {"0.025", 25000},
    {"0.05", 50000},  {"0.1", 100000},  {"0.25", 250000}, {"0.5", 500000},
    {"1", 1000000},   {"2.5", 2500000}, {"5", 5000000},   {"10", 10000000},
};
#define N_LE (sizeof(le_bounds) / sizeof(le_bounds[0]))

static void histogram(struct buf *b, const char *var, const struct stats_hist *h)
{
	uint64_t cum = 0;
	size_t bk = 0;
	for (size_t i = 0; i < N_LE; i++) {
		/* a bucket counts under le when every value it holds is <= le */
		for (; bk < STATS_HIST_BUCKETS && bucket_high(bk) <= le_bounds[i].us; bk++)
			cum += h->counts[bk];
		bprintf(b,
		        "turnout_request_duration_seconds_bucket{variant=\"%s\",le=\"%s\"} %" PRIu64
		        "\n",
		        var, le_bounds[i].le, cum);
	}
	bprintf(b,
	        "turnout_request_duration_seconds_bucket{variant=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
	        var, h->total);
	bprintf(b, "turnout_request_duration_seconds_sum{variant=\"%s\"} %.6f\n", var,
	        (double)h->sum / 1e6);
	bprintf(b, "turnout_request_duration_seconds_count{variant=\"%s\"} %" PRIu64 "\n", var,
	        h->total);
}

static const char *const code_names[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

static void render_requests(struct buf *b, struct stats *st, struct stats_variant *m, int n)
{
	char var[LABEL_MAX];
	head(b, "turnout_requests_total", "counter",
	     "Requests answered by the router, by live variant and status class.");
	for (int s = 0; s < n; s++) {
		stats_merge(st, s, m);
		metrics_label_escape(m->name, var, sizeof(var));
		for (int k = 1; k <= 6; k++)
			bprintf(b,
			        "turnout_requests_total{variant=\"%s\",code=\"%s\"} %" PRIu64 "\n",
			        var, code_names[k % 6], m->status[k % 6]);
	}
	head(b, "turnout_request_duration_seconds", "histogram",
	     "Time from a request's arrival to its answer, by live variant.");
	for (int s = 0; s < n; s++) {
		stats_merge(st, s, m);
		metrics_label_escape(m->name, var, sizeof(var));
		histogram(b, var, &m->hist);
	}
	head(b, "turnout_upstream_errors_total", "counter",
	     "Failed upstream transfers of live requests, by variant and cause.");
	for (int s = 0; s < n; s++) {
		stats_merge(st, s, m);
		metrics_label_escape(m->name, var, sizeof(var));
		for (int k = 0; k < STATS_ERR_N; k++)
			bprintf(
			    b,
			    "turnout_upstream_errors_total{variant=\"%s\",cause=\"%s\"} %" PRIu64
			    "\n",
			    var, stats_err_name(k), m->errors[k]);
	}
}

static void render_shadow(struct buf *b, const struct route_snapshot *snap,
                          struct shadow_variant_stats *sv, int n)
{
	static const char *const results[3] = {"agree", "disagree", "error"};
	char var[LABEL_MAX], rule[LABEL_MAX];
	const char *metric[4] = {"turnout_shadow_requests_total", "turnout_shadow_dropped_total",
	                         "turnout_shadow_comparisons_total",
	                         "turnout_shadow_rule_comparisons_total"};
	const char *help[4] = {
	    "Mirrors sent to a shadow variant.", "Mirrors not sent, by shadow variant and reason.",
	    "Compared live/shadow pairs, by shadow variant and result.",
	    "Per compare rule results, by shadow variant, rule path and result."};
	size_t n_rules = snap ? snap->cfg->shadow.n_rules : 0;
	for (int part = 0; part < 4; part++) {
		head(b, metric[part], "counter", help[part]);
		for (int s = 0; s < n; s++) {
			shadow_merge(s, sv);
			metrics_label_escape(stats_slot_name(s), var, sizeof(var));
			if (part == 0)
				bprintf(b, "%s{variant=\"%s\"} %" PRIu64 "\n", metric[part], var,
				        sv->mirrored);
			for (int k = 0; part == 1 && k < SHADOW_DROP_N; k++)
				bprintf(b, "%s{variant=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
				        metric[part], var, shadow_drop_name(k), sv->dropped[k]);
			for (int k = 0; part == 2 && k < 3; k++)
				bprintf(b, "%s{variant=\"%s\",result=\"%s\"} %" PRIu64 "\n",
				        metric[part], var, results[k], sv->results[k]);
			for (size_t r = 0; part == 3 && r < n_rules && r < CONFIG_MAX_RULES; r++) {
				metrics_label_escape(snap->cfg->shadow.rules[r].path, rule,
				                     sizeof(rule));
				for (int k = 0; k < 3; k++)
					bprintf(
					    b,
					    "%s{variant=\"%s\",rule=\"%s\",result=\"%s\"} %" PRIu64
					    "\n",
					    metric[part], var, rule, results[k], sv->rules[r][k]);
			}
		}
	}
}

/* The live share of variant v now (basis points): canary split, health fallback. */
static uint32_t live_share_bp(const struct route_snapshot *s, size_t v)
{
	const struct route_params *p = &s->params;
	int cand_live = p->strategy == CONFIG_STRATEGY_CANARY && p->candidate >= 0 &&
	                (size_t)p->candidate != p->stable &&
	                route_variant_healthy(s, (size_t)p->candidate);
	uint32_t cand_bp = cand_live ? p->canary_bp : 0;
	if (cand_live && v == (size_t)p->candidate)
		return cand_bp;
	if (v == p->stable)
		return ROUTE_BUCKETS - cand_bp;
	return 0;
}

static void render_route(struct buf *b, const struct route_snapshot *s)
{
	char var[LABEL_MAX], ep[LABEL_MAX];
	head(b, "turnout_traffic_percent", "gauge",
	     "Share of live traffic a variant gets now, in percent (after health fallback).");
	for (size_t v = 0; s && v < s->n_variants; v++) {
		metrics_label_escape(s->variants[v].name, var, sizeof(var));
		bprintf(b, "turnout_traffic_percent{variant=\"%s\"} %.2f\n", var,
		        live_share_bp(s, v) / 100.0);
	}
	head(b, "turnout_variant_healthy", "gauge",
	     "1 when an endpoint of a variant passes its health checks, else 0.");
	for (size_t v = 0; s && v < s->n_variants; v++) {
		metrics_label_escape(s->variants[v].name, var, sizeof(var));
		for (size_t e = 0; e < s->variants[v].n_endpoints; e++) {
			metrics_label_escape(s->variants[v].endpoints[e].cfg->url, ep, sizeof(ep));
			bprintf(b, "turnout_variant_healthy{variant=\"%s\",endpoint=\"%s\"} %d\n",
			        var, ep, atomic_load(&s->variants[v].endpoints[e].healthy) ? 1 : 0);
		}
	}
	head(b, "turnout_config_generation", "gauge",
	     "Generation of the routing snapshot in force.");
	bprintf(b, "turnout_config_generation %" PRIu64 "\n", s ? s->generation : 0);
}

static uint64_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, rss = 0;
	if (f == NULL)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &rss) != 2)
		rss = 0;
	fclose(f);
	long page = sysconf(_SC_PAGESIZE);
	return (uint64_t)rss * (uint64_t)(page > 0 ? page : 4096);
}

static void render_process(struct buf *b, struct stats *st)
{
	pthread_mutex_lock(&ev_lock);
	uint64_t ok = ev_reload_ok, fail = ev_reload_fail, rb = ev_rollbacks;
	pthread_mutex_unlock(&ev_lock);
	head(b, "turnout_config_reloads_total", "counter", "Config reloads, by result.");
	bprintf(b, "turnout_config_reloads_total{result=\"success\"} %" PRIu64 "\n", ok);
	bprintf(b, "turnout_config_reloads_total{result=\"failure\"} %" PRIu64 "\n", fail);
	head(b, "turnout_rollbacks_total", "counter", "Rollbacks put in force by an operator.");
	bprintf(b, "turnout_rollbacks_total %" PRIu64 "\n", rb);
	head(b, "turnout_open_connections", "gauge", "Open client connections.");
	bprintf(b, "turnout_open_connections %" PRIu64 "\n",
	        stats_gauge_sum(st, STATS_GAUGE_CONNS));
	head(b, "turnout_inflight_requests", "gauge", "Live requests being proxied now.");
	bprintf(b, "turnout_inflight_requests %" PRIu64 "\n",
	        stats_gauge_sum(st, STATS_GAUGE_INFLIGHT));
	struct accesslog_counters ac;
	accesslog_get_counters(&ac);
	head(b, "turnout_access_log_lines_total", "counter", "Access log lines written.");
	bprintf(b, "turnout_access_log_lines_total %" PRIu64 "\n", ac.written);
	head(b, "turnout_access_log_dropped_total", "counter",
	     "Access log lines dropped, by reason (queue full, write failed).");
	bprintf(b, "turnout_access_log_dropped_total{reason=\"queue_full\"} %" PRIu64 "\n",
	        ac.dropped);
	bprintf(b, "turnout_access_log_dropped_total{reason=\"write_failed\"} %" PRIu64 "\n",
	        ac.write_failed);
	head(b, "turnout_log_write_failures_total", "counter",
	     "Log lines that could not be written.");
	bprintf(b, "turnout_log_write_failures_total %" PRIu64 "\n", log_write_failures());
	head(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
	bprintf(b, "process_resident_memory_bytes %" PRIu64 "\n", rss_bytes());
	head(b, "process_start_time_seconds", "gauge",
	     "Start time of the process since unix epoch.");
	bprintf(b, "process_start_time_seconds %" PRId64 "\n", start_time_s);
}

char *metrics_render(struct stats *st, size_t *len)
{
	struct buf b = {0};
	struct stats_variant *m = malloc(sizeof(*m));
	struct shadow_variant_stats *sv = malloc(sizeof(*sv));
	struct route_snapshot *snap = route_acquire();
	int n = stats_n_slots();
	if (m == NULL || sv == NULL) {
		b.fail = 1;
	} else {
		render_requests(&b, st, m, n);
		render_shadow(&b, snap, sv, n);
		render_route(&b, snap);
		render_process(&b, st);
	}
	route_release(snap);
	free(m);
	free(sv);
	if (b.fail || b.p == NULL) {
		free(b.p);
		return NULL;
	}
	if (len)
		*len = b.len;
	return b.p;
}

/* ---- history ---- */

static uint32_t clamp32(uint64_t v)
{
	return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static void sample_slot(struct metrics *m, int s, struct sample_v *out,
                        const struct shadow_variant_stats *sv)
{
	struct slot_prev *p = &m->prev[s];
	struct stats_variant *c = m->cur;
	uint64_t total = c->hist.total, e5 = c->status[5];
	if (p->hist == NULL)
		p->hist = calloc(1, sizeof(*p->hist));
	if (p->seen && p->hist) {
		out->req = clamp32(total - p->total);
		out->err5xx = clamp32(e5 - p->err5xx);
		memset(m->delta, 0, sizeof(*m->delta));
		for (size_t k = 0; k < STATS_HIST_BUCKETS; k++) {
			m->delta->counts[k] = c->hist.counts[k] - p->hist->counts[k];
			m->delta->total += m->delta->counts[k];
		}
		m->delta->max = c->hist.max;
		out->p99_us = clamp32(stats_hist_quantile(m->delta, 0.99));
		out->agree = clamp32(sv->results[0] - p->shadow[0]);
		out->disagree = clamp32(sv->results[1] - p->shadow[1]);
		out->serr = clamp32(sv->results[2] - p->shadow[2]);
	}
	p->seen = p->hist != NULL;
	p->total = total;
	p->err5xx = e5;
	memcpy(p->shadow, sv->results, sizeof(p->shadow));
	if (p->hist)
		memcpy(p->hist, &c->hist, sizeof(*p->hist));
}

void metrics_sample(struct metrics *m)
{
	struct sample *smp = &m->ring[m->head];
	struct shadow_variant_stats *sv = malloc(sizeof(*sv));
	if (sv == NULL)
		return;
	memset(smp, 0, sizeof(*smp));
	smp->t_ms = now_ms();
	smp->n_slots = stats_n_slots();
	struct route_snapshot *snap = route_acquire();
	for (int s = 0; s < smp->n_slots; s++) {
		stats_merge(m->st, s, m->cur);
		shadow_merge(s, sv);
		sample_slot(m, s, &smp->v[s], sv);
		smp->v[s].share_bp = -1;
		for (size_t v = 0; snap && v < snap->n_variants; v++)
			if (snap->variants[v].stats_slot == s)
				smp->v[s].share_bp = (int32_t)live_share_bp(snap, v);
	}
	route_release(snap);
	free(sv);
	m->head = (m->head + 1) % METRICS_HISTORY_MAX;
	if (m->n < METRICS_HISTORY_MAX)
		m->n++;
}

static void on_tick(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	metrics_sample(arg);
}

/* The series of slot s over the ring, oldest first. */
static json_t *series_json(const struct metrics *m, int s)
{
	json_t *rps = json_array(), *err = json_array(), *p99 = json_array(), *share = json_array(),
	       *agr = json_array(), *cmp = json_array();
	size_t first = (m->head + METRICS_HISTORY_MAX - m->n) % METRICS_HISTORY_MAX;
	for (size_t i = 0; i < m->n; i++) {
		const struct sample *smp = &m->ring[(first + i) % METRICS_HISTORY_MAX];
		const struct sample_v *v = &smp->v[s];
		int here = s < smp->n_slots;
		json_array_append_new(rps, here ? json_integer(v->req) : json_null());
		json_array_append_new(err, here && v->req ? json_real((double)v->err5xx / v->req)
		                                          : json_null());
		json_array_append_new(p99,
		                      here && v->req ? json_real(v->p99_us / 1000.0) : json_null());
		json_array_append_new(
		    share, here && v->share_bp >= 0 ? json_real(v->share_bp / 100.0) : json_null());
		uint64_t n = (uint64_t)v->agree + v->disagree + v->serr;
		json_array_append_new(agr, here && n ? json_real((double)v->agree / (double)n)
		                                     : json_null());
		json_array_append_new(cmp, here ? json_integer((json_int_t)n) : json_null());
	}
	return json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o}", "name", stats_slot_name(s), "rps",
	                 rps, "error_rate", err, "p99_ms", p99, "share_percent", share, "agreement",
	                 agr, "compared", cmp);
}

static json_t *actions_json(void)
{
	json_t *a = json_array();
	pthread_mutex_lock(&ev_lock);
	size_t first = (ev_actions_head + METRICS_ACTIONS_MAX - ev_actions_n) % METRICS_ACTIONS_MAX;
	for (size_t i = 0; i < ev_actions_n; i++) {
		const struct action *x = &ev_actions[(first + i) % METRICS_ACTIONS_MAX];
		json_array_append_new(
		    a, json_pack("{s:I, s:s}", "t_ms", (json_int_t)x->t_ms, "text", x->text));
	}
	json_t *j = json_pack("{s:o, s:I, s:I, s:I}", "actions", a, "reloads",
	                      (json_int_t)ev_reload_ok, "reload_failures",
	                      (json_int_t)ev_reload_fail, "rollbacks", (json_int_t)ev_rollbacks);
	pthread_mutex_unlock(&ev_lock);
	return j;
}

struct json_t *metrics_status_extra(void *ops)
{
	json_t *j = ops_status_json(ops);
	json_t *ev = actions_json();
	if (j == NULL || ev == NULL) {
		json_decref(j);
		json_decref(ev);
		return NULL;
	}
	json_object_set(j, "recent_actions", json_object_get(ev, "actions"));
	json_object_set(j, "rollbacks", json_object_get(ev, "rollbacks"));
	json_decref(ev);
	return j;
}

char *metrics_history_json(struct metrics *m)
{
	json_t *t = json_array(), *vars = json_array();
	size_t first = (m->head + METRICS_HISTORY_MAX - m->n) % METRICS_HISTORY_MAX;
	int n_slots = 0;
	for (size_t i = 0; i < m->n; i++) {
		const struct sample *smp = &m->ring[(first + i) % METRICS_HISTORY_MAX];
		json_array_append_new(t, json_integer((json_int_t)smp->t_ms));
		if (smp->n_slots > n_slots)
			n_slots = smp->n_slots;
	}
	for (int s = 0; s < n_slots; s++)
		json_array_append_new(vars, series_json(m, s));
	json_t *j = json_pack("{s:i, s:o, s:o, s:o}", "interval_ms", 1000, "t", t, "variants", vars,
	                      "events", actions_json());
	char *out = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
	json_decref(j);
	return out;
}

/* ---- HTTP ---- */

static int only_get(struct evhttp_request *req)
{
	enum evhttp_cmd_type c = evhttp_request_get_command(req);
	if (c == EVHTTP_REQ_GET || c == EVHTTP_REQ_HEAD)
		return 0;
	evhttp_send_error(req, 405, "only GET");
	return -1;
}

static void send_text(struct evhttp_request *req, const char *type, const char *text, size_t len)
{
	struct evbuffer *b = evbuffer_new();
	if (b == NULL || evbuffer_add(b, text, len) < 0) {
		evhttp_send_error(req, 500, "out of memory");
	} else {
		struct evkeyvalq *h = evhttp_request_get_output_headers(req);
		evhttp_add_header(h, "Content-Type", type);
		evhttp_add_header(h, "Cache-Control", "no-store");
		evhttp_send_reply(req, 200, "OK", b);
	}
	if (b)
		evbuffer_free(b);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
	struct metrics *m = arg;
	if (only_get(req) < 0)
		return;
	size_t len = 0;
	char *text = metrics_render(m->st, &len);
	if (text == NULL) {
		log_error("metrics: cannot render /metrics (out of memory or over %u bytes)",
		          METRICS_TEXT_MAX);
		evhttp_send_error(req, 500, "cannot render metrics");
		return;
	}
	send_text(req, "text/plain; version=0.0.4; charset=utf-8", text, len);
	free(text);
}

static void on_history(struct evhttp_request *req, void *arg)
{
	if (only_get(req) < 0)
		return;
	char *doc = metrics_history_json(arg);
	if (doc == NULL) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	send_text(req, "application/json", doc, strlen(doc));
	free(doc);
}

static void on_dashboard(struct evhttp_request *req, void *arg)
{
	(void)arg;
	if (only_get(req) < 0)
		return;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	if (path && strcmp(path, "/") != 0 && strcmp(path, "/index.html") != 0) {
		evhttp_send_error(req, 404, "not found");
		return;
	}
	send_text(req, "text/html; charset=utf-8", (const char *)web_index_html,
	          web_index_html_len);
}

struct metrics *metrics_new(struct event_base *base, struct evhttp *http, struct stats *st,
                            char *err, size_t errlen)
{
	struct metrics *m = calloc(1, sizeof(*m));
	if (m == NULL)
		goto oom;
	m->base = base;
	m->http = http;
	m->st = st;
	m->ring = calloc(METRICS_HISTORY_MAX, sizeof(*m->ring));
	m->cur = malloc(sizeof(*m->cur));
	m->delta = malloc(sizeof(*m->delta));
	m->timer = event_new(base, -1, EV_PERSIST, on_tick, m);
	if (m->ring == NULL || m->cur == NULL || m->delta == NULL || m->timer == NULL)
		goto oom;
	struct timeval one = {1, 0};
	if (event_add(m->timer, &one) < 0)
		goto oom;
	if (start_time_s == 0)
		start_time_s = (int64_t)time(NULL);
	if (evhttp_set_cb(http, "/metrics", on_metrics, m) != 0 ||
	    evhttp_set_cb(http, "/status/history", on_history, m) != 0 ||
	    evhttp_set_cb(http, "/", on_dashboard, m) != 0 ||
	    evhttp_set_cb(http, "/index.html", on_dashboard, m) != 0) {
		snprintf(err, errlen, "admin http: /metrics, / or /status/history already served");
		goto fail;
	}
	return m;
oom:
	snprintf(err, errlen, "metrics: out of memory");
fail:
	metrics_free(m);
	return NULL;
}

void metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	if (m->http) {
		evhttp_del_cb(m->http, "/metrics");
		evhttp_del_cb(m->http, "/status/history");
		evhttp_del_cb(m->http, "/");
		evhttp_del_cb(m->http, "/index.html");
	}
	if (m->timer)
		event_free(m->timer);
	for (size_t i = 0; i < STATS_MAX_SLOTS; i++)
		free(m->prev[i].hist);
	free(m->ring);
	free(m->cur);
	free(m->delta);
	free(m);
}
