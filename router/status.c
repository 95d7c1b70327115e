/*
 * status.c - the admin HTTP server and the /status JSON document: the current
 * routing (strategy, variants, percents, generation, config file and hash)
 * and per-variant counters and latency quantiles merged from every worker's
 * stats shard.
 */
#include "status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>

#include "log.h"
#include "route.h"
#include "shadow.h" /* shadow (engineer F): the "shadow" object */
#include "stats.h"

struct status {
	struct evhttp *http;
	struct stats *st;
	status_extra_fn extra; /* observability: more fields for /status, may be NULL */
	void *extra_arg;
};

static json_t *latency_json(const struct stats_hist *h)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "count", (json_int_t)h->total, "p50",
	                 (json_int_t)stats_hist_quantile(h, 0.50), "p90",
	                 (json_int_t)stats_hist_quantile(h, 0.90), "p99",
	                 (json_int_t)stats_hist_quantile(h, 0.99), "p99.9",
	                 (json_int_t)stats_hist_quantile(h, 0.999), "max", (json_int_t)h->max);
}

static json_t *variant_json(const struct route_snapshot *s, size_t v, struct stats *st)
{
	const struct route_variant *rv = &s->variants[v];
	struct stats_variant *m = malloc(sizeof(*m));
	json_t *eps = json_array();
	for (size_t e = 0; e < rv->n_endpoints; e++)
		json_array_append_new(eps,
		                      json_pack("{s:s, s:b}", "url", rv->endpoints[e].cfg->url,
		                                "healthy", atomic_load(&rv->endpoints[e].healthy)));
	if (m == NULL)
		return json_pack("{s:s, s:o}", "name", rv->name, "endpoints", eps);
	stats_merge(st, rv->stats_slot, m);
	uint64_t total = 0;
	for (int k = 0; k < 6; k++)
		total += m->status[k];
	json_t *req = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "total", (json_int_t)total,
	                        "1xx", (json_int_t)m->status[1], "2xx", (json_int_t)m->status[2],
	                        "3xx", (json_int_t)m->status[3], "4xx", (json_int_t)m->status[4],
	                        "5xx", (json_int_t)m->status[5], "other", (json_int_t)m->status[0]);
	json_t *errs = json_object();
	for (int k = 0; k < STATS_ERR_N; k++)
		json_object_set_new(errs, stats_err_name(k),
		                    json_integer((json_int_t)m->errors[k]));
	json_t *j =
	    json_pack("{s:s, s:o, s:o, s:o, s:o}", "name", rv->name, "endpoints", eps, "requests",
	              req, "upstream_errors", errs, "latency_us", latency_json(&m->hist));
	free(m);
	/* resilience: whether the variant may take traffic, and where its live share goes
	 * when it may not (the stable variant; null for the stable variant itself) */
	int healthy = route_variant_healthy(s, v);
	if (j) {
		json_object_set_new(j, "healthy", json_boolean(healthy));
		json_object_set_new(j, "live_share_to",
		                    healthy || v == s->params.stable
		                        ? json_null()
		                        : json_string(s->variants[s->params.stable].name));
	}
	return j;
}

/* observability: status_json plus the fields of s->extra (existing ones win). */
static char *status_doc(struct status *s)
{
	char *base = status_json(s->st);
	if (base == NULL || s->extra == NULL)
		return base;
	json_t *j = json_loads(base, 0, NULL), *more = s->extra(s->extra_arg);
	char *out = NULL;
	if (j && more && json_object_update_missing(j, more) == 0)
		out = json_dumps(j, JSON_INDENT(2));
	json_decref(j);
	json_decref(more);
	if (out == NULL)
		return base;
	free(base);
	return out;
}

char *status_json(struct stats *st)
{
	struct route_snapshot *s = route_acquire();
	json_t *j;
	if (s == NULL) {
		j = json_pack("{s:I}", "generation", (json_int_t)0);
	} else {
		const struct route_params *p = &s->params;
		json_t *vars = json_array();
		for (size_t v = 0; v < s->n_variants; v++)
			json_array_append_new(vars, variant_json(s, v, st));
		j = json_pack(
		    "{s:I, s:s, s:s, s:o, s:f, s:f, s:{s:s, s:s}, s:o}", "generation",
		    (json_int_t)s->generation, "strategy", config_strategy_name(p->strategy),
		    "stable", s->variants[p->stable].name, "candidate",
		    p->candidate >= 0 ? json_string(s->variants[p->candidate].name) : json_null(),
		    "canary_percent", p->canary_bp / 100.0, "shadow_percent", p->shadow_bp / 100.0,
		    "config", "file", s->cfg->file ? s->cfg->file : "", "sha256", s->cfg->hash_hex,
		    "variants", vars);
		if (j) /* shadow (engineer F): mirroring and agreement counters */
			json_object_set_new(j, "shadow", shadow_status_json(s));
	}
	route_release(s);
	char *out = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
	json_decref(j);
	return out;
}

static void on_status(struct evhttp_request *req, void *arg)
{
	struct status *s = arg;
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		evhttp_send_error(req, 405, "only GET");
		return;
	}
	char *doc = status_doc(s); /* observability: with the extra fields */
	struct evbuffer *b = evbuffer_new();
	if (doc == NULL || b == NULL) {
		evhttp_send_error(req, 500, "out of memory");
	} else {
		evbuffer_add_printf(b, "%s\n", doc);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
		                  "application/json");
		evhttp_send_reply(req, 200, "OK", b);
	}
	if (b)
		evbuffer_free(b);
	free(doc);
}

struct status *status_new(struct event_base *base, const char *host, int port, struct stats *st,
                          char *err, size_t errlen)
{
	struct status *s = calloc(1, sizeof(*s));
	if (s == NULL || (s->http = evhttp_new(base)) == NULL) {
		snprintf(err, errlen, "admin http: out of memory");
		goto fail;
	}
	s->st = st;
	evhttp_set_cb(s->http, "/status", on_status, s);
	evhttp_set_max_body_size(s->http, 64 * 1024);
	evhttp_set_max_headers_size(s->http, 16 * 1024);
	evhttp_set_timeout(s->http, 30);
	if (evhttp_bind_socket(s->http, host, (ev_uint16_t)port) < 0) {
		snprintf(err, errlen, "admin http: cannot listen on %s:%d: %s", host, port,
		         strerror(errno));
		goto fail;
	}
	return s;
fail:
	status_free(s);
	return NULL;
}

void status_free(struct status *s)
{
	if (s == NULL)
		return;
	if (s->http)
		evhttp_free(s->http);
	free(s);
}

void status_set_extra(struct status *s, status_extra_fn fn, void *arg)
{
	s->extra = fn;
	s->extra_arg = arg;
}

struct evhttp *status_http(struct status *s)
{
	return s->http;
}
