/*
 * health.c - active health checks (main thread) and passive ejection
 * (workers), see health.h.
 *
 * The main thread runs a tick every HEALTH_TICK_MS. Each tick takes the
 * current snapshot; if its generation changed, the endpoint table is rebuilt
 * (state carried over by variant name + url, probes of vanished endpoints
 * cancelled). Then, per endpoint: notice a passive ejection (flag cleared by a
 * worker), end a back-off that is over, write the wanted flag (up && not
 * ejected) into the snapshot, and start a probe when one is due. Writing the
 * wanted flag every tick also repairs a flag that a snapshot built a moment
 * earlier copied from an older one. Probes go through a struct upstream (the
 * same libcurl-multi engine the workers use) on the main event_base, so
 * completions run on the main loop, outside libcurl callbacks.
 *
 * Every change of an endpoint's or a variant's health is logged; a variant
 * with no healthy endpoint is said to give its live share to the stable one.
 */
#include "health.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "route.h"
#include "upstream.h"

#define HEALTH_URL_MAX    4096
#define HEALTH_REASON_MAX 200
#define HEALTH_MAX_EPS    (CONFIG_MAX_VARIANTS * CONFIG_MAX_ENDPOINTS)

struct health_ep {
	char *variant; /* owned copies: the key that survives snapshots */
	char *url;
	size_t v, e; /* position in the snapshot of generation h->gen */
	struct health_counts counts;
	struct upstream_transfer *probe; /* in flight, or NULL */
	struct health *h;
	uint64_t next_probe_ms;
	uint64_t ejected_until_ms; /* 0 = not ejected */
	uint64_t last_eject_ms;
	uint32_t backoff_ms; /* the last ejection's length, 0 = none yet */
	char reason[HEALTH_REASON_MAX];
};

struct health {
	struct event_base *base;
	struct upstream *up;
	struct event *tick;
	uint64_t gen; /* generation the table follows, 0 = none yet */
	struct health_ep **eps;
	size_t n_eps;
	int *var_up; /* per variant of generation gen: had a healthy endpoint */
	size_t n_vars;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int health_count(struct health_counts *c, int ok, uint32_t healthy_threshold,
                 uint32_t unhealthy_threshold)
{
	uint32_t hth = healthy_threshold ? healthy_threshold : 1;
	uint32_t uth = unhealthy_threshold ? unhealthy_threshold : 1;
	if (ok) {
		c->fail_run = 0;
		if (c->ok_run < UINT32_MAX)
			c->ok_run++;
		if (!c->up && c->ok_run >= hth) {
			c->up = 1;
			return 1;
		}
		return 0;
	}
	c->ok_run = 0;
	if (c->fail_run < UINT32_MAX)
		c->fail_run++;
	if (c->up && c->fail_run >= uth) {
		c->up = 0;
		return 1;
	}
	return 0;
}

uint32_t health_backoff_ms(uint32_t prev_ms)
{
	if (prev_ms < HEALTH_BACKOFF_MIN_MS)
		return HEALTH_BACKOFF_MIN_MS;
	return prev_ms > HEALTH_BACKOFF_MAX_MS / 2 ? HEALTH_BACKOFF_MAX_MS : prev_ms * 2;
}

int health_passive_report(struct route_snapshot *s, size_t v, size_t e, int failed)
{
	if (s == NULL || !s->cfg->health.enabled || v >= s->n_variants ||
	    e >= s->variants[v].n_endpoints)
		return 0;
	struct route_endpoint *ep = &s->variants[v].endpoints[e];
	if (!failed) {
		/* Read first: a healthy endpoint's counter stays 0 and its line clean. */
		if (atomic_load_explicit(&ep->fails, memory_order_relaxed) != 0)
			atomic_store_explicit(&ep->fails, 0, memory_order_relaxed);
		return 0;
	}
	uint32_t th = s->cfg->health.unhealthy_threshold ? s->cfg->health.unhealthy_threshold : 1;
	unsigned n = atomic_fetch_add_explicit(&ep->fails, 1, memory_order_relaxed) + 1;
	if (n < th)
		return 0;
	int was = 1;
	/* Only the report that clears the flag says so (and is logged by the caller). */
	return atomic_compare_exchange_strong(&ep->healthy, &was, 0);
}

static void ep_free(struct health_ep *ep)
{
	if (ep == NULL)
		return;
	upstream_cancel(ep->probe);
	ep->probe = NULL;
	free(ep->variant);
	free(ep->url);
	free(ep);
}

static struct health_ep *ep_new(struct health *h, const char *variant, const char *url)
{
	struct health_ep *ep = calloc(1, sizeof(*ep));
	if (ep == NULL)
		return NULL;
	ep->h = h;
	ep->variant = strdup(variant);
	ep->url = strdup(url);
	if (ep->variant == NULL || ep->url == NULL) {
		ep_free(ep);
		return NULL;
	}
	ep->counts.up = 1; /* as the snapshot: everything starts healthy */
	return ep;
}

/* Index of the first entry of old for (variant, url) not taken yet, or -1. */
static ssize_t ep_find(struct health_ep *const *old, const char *taken, size_t n_old,
                       const char *variant, const char *url)
{
	for (size_t i = 0; i < n_old; i++)
		if (!taken[i] && strcmp(old[i]->variant, variant) == 0 &&
		    strcmp(old[i]->url, url) == 0)
			return (ssize_t)i;
	return -1;
}

/* Swap in a new table: entries of the old one not carried over are freed. */
static void adopt(struct health *h, struct health_ep **eps, size_t n, int *var_up,
                  const struct route_snapshot *s, const char *taken)
{
	for (size_t i = 0; i < h->n_eps; i++)
		if (!taken[i])
			ep_free(h->eps[i]); /* a vanished endpoint: its probe is cancelled */
	free(h->eps);
	free(h->var_up);
	h->eps = eps;
	h->n_eps = n;
	h->var_up = var_up;
	h->n_vars = s->n_variants;
	h->gen = s->generation;
}

/* Rebuild the table for snapshot s; keeps the old table on allocation failure. */
static int resync(struct health *h, const struct route_snapshot *s)
{
	size_t n = 0, k = 0;
	for (size_t v = 0; v < s->n_variants; v++)
		n += s->variants[v].n_endpoints;
	if (n > HEALTH_MAX_EPS)
		n = HEALTH_MAX_EPS;
	struct health_ep **eps = calloc(n ? n : 1, sizeof(*eps));
	char *fresh = calloc(n ? n : 1, 1);
	char *taken = calloc(h->n_eps ? h->n_eps : 1, 1);
	int *var_up = calloc(s->n_variants ? s->n_variants : 1, sizeof(*var_up));
	if (eps == NULL || fresh == NULL || taken == NULL || var_up == NULL)
		goto fail;
	for (size_t v = 0; v < s->n_variants; v++) {
		const struct route_variant *rv = &s->variants[v];
		for (size_t e = 0; e < rv->n_endpoints && k < n; e++, k++) {
			const char *url = rv->endpoints[e].cfg->url;
			ssize_t i = ep_find(h->eps, taken, h->n_eps, rv->name, url);
			if (i >= 0) {
				taken[i] = 1;
				eps[k] = h->eps[i];
			} else if ((eps[k] = ep_new(h, rv->name, url)) == NULL) {
				goto fail;
			} else {
				fresh[k] = 1;
			}
			eps[k]->v = v;
			eps[k]->e = e;
		}
		var_up[v] = route_variant_healthy(s, v);
	}
	adopt(h, eps, k, var_up, s, taken);
	free(fresh);
	free(taken);
	return 0;
fail:
	for (size_t i = 0; eps && fresh && i < k; i++)
		if (fresh[i])
			ep_free(eps[i]);
	free(eps);
	free(fresh);
	free(taken);
	free(var_up);
	log_error("health: out of memory following generation %llu",
	          (unsigned long long)s->generation);
	return -1;
}

static void on_probe_done(const struct upstream_result *res, void *arg);

static void start_probe(struct health *h, struct health_ep *ep, const struct config *cfg,
                        uint64_t now)
{
	char url[HEALTH_URL_MAX], err[256];
	const char *path = cfg->health.path ? cfg->health.path : "/v2/health/ready";
	ep->next_probe_ms = now + cfg->health.interval_ms;
	int n = snprintf(url, sizeof(url), "%s%s", ep->url, path);
	if (n < 0 || (size_t)n >= sizeof(url)) {
		snprintf(ep->reason, sizeof(ep->reason), "probe url too long");
		return;
	}
	struct upstream_request req = {
	    .method = "GET",
	    .url = url,
	    .timeout_ms = cfg->health.timeout_ms,
	    .max_response = HEALTH_MAX_RESPONSE,
	    .ca_file = cfg->upstream_tls.ca,
	    .tls_insecure = !cfg->upstream_tls.verify,
	    /* probes ride the same client as live traffic (the ops switch covers both) */
	    .client = cfg->upstream_client == CONFIG_UPSTREAM_LIBCURL ? UPSTREAM_CLIENT_LIBCURL
	                                                              : UPSTREAM_CLIENT_BUILTIN,
	    .cb = on_probe_done,
	    .arg = ep,
	};
	ep->probe = upstream_submit(h->up, &req, err, sizeof(err));
	if (ep->probe == NULL)
		log_warn("health: cannot probe %s (variant %s): %s", url, ep->variant, err);
}

/* Log the variant-level change, once, when a variant gains or loses its last endpoint. */
static void note_variants(struct health *h, const struct route_snapshot *s)
{
	for (size_t v = 0; v < s->n_variants && v < h->n_vars; v++) {
		int up = route_variant_healthy(s, v);
		if (up == h->var_up[v])
			continue;
		h->var_up[v] = up;
		const char *name = s->variants[v].name;
		const char *stable = s->variants[s->params.stable].name;
		if (up)
			log_info("health: variant %s has a healthy endpoint again: it takes its "
			         "live share",
			         name);
		else if (v == s->params.stable)
			log_error("health: stable variant %s has no healthy endpoint: its live "
			          "requests are answered 503",
			          name);
		else
			log_warn("health: variant %s has no healthy endpoint: its live share falls "
			         "back to the stable variant %s",
			         name, stable);
	}
}

/* Passive ejection and its end, for one endpoint. */
static void follow_passive(struct health_ep *ep, struct route_endpoint *rep,
                           const struct config *cfg, uint64_t now)
{
	uint32_t th = cfg->health.unhealthy_threshold ? cfg->health.unhealthy_threshold : 1;
	int flag = atomic_load(&rep->healthy);
	if (ep->ejected_until_ms == 0 && ep->counts.up && !flag &&
	    atomic_load_explicit(&rep->fails, memory_order_relaxed) >= th) {
		if (ep->last_eject_ms && now - ep->last_eject_ms > HEALTH_BACKOFF_RESET)
			ep->backoff_ms = 0;
		ep->backoff_ms = health_backoff_ms(ep->backoff_ms);
		ep->ejected_until_ms = now + ep->backoff_ms;
		ep->last_eject_ms = now;
		snprintf(ep->reason, sizeof(ep->reason), "%u live failures in a row", th);
		log_warn("health: endpoint %s of variant %s ejected for %u ms after %u live "
		         "failures in a row (connect or 5xx)",
		         ep->url, ep->variant, ep->backoff_ms, th);
	} else if (ep->ejected_until_ms && now >= ep->ejected_until_ms) {
		ep->ejected_until_ms = 0;
		atomic_store(&rep->fails, 0);
		log_info("health: endpoint %s of variant %s back after its %u ms ejection", ep->url,
		         ep->variant, ep->backoff_ms);
	}
}

/* Bring the current snapshot's flags in line and start due probes. */
static void apply(struct health *h, int probe)
{
	struct route_snapshot *s = route_acquire();
	if (s == NULL)
		return;
	if (s->generation != h->gen && resync(h, s) < 0) {
		route_release(s);
		return;
	}
	const struct config *cfg = s->cfg;
	uint64_t now = now_ms();
	for (size_t i = 0; i < h->n_eps; i++) {
		struct health_ep *ep = h->eps[i];
		struct route_endpoint *rep = &s->variants[ep->v].endpoints[ep->e];
		int want = 1;
		if (cfg->health.enabled) {
			follow_passive(ep, rep, cfg, now);
			want = ep->counts.up && ep->ejected_until_ms == 0;
		}
		if (atomic_load(&rep->healthy) != want)
			route_set_healthy(s, ep->v, ep->e, want);
		if (probe && cfg->health.enabled && ep->probe == NULL && now >= ep->next_probe_ms)
			start_probe(h, ep, cfg, now);
	}
	note_variants(h, s);
	route_release(s);
}

static void on_probe_done(const struct upstream_result *res, void *arg)
{
	struct health_ep *ep = arg;
	struct health *h = ep->h;
	ep->probe = NULL;
	int ok = res->err == UPSTREAM_OK && res->status >= 200 && res->status < 300;
	if (!ok && res->err == UPSTREAM_OK)
		snprintf(ep->reason, sizeof(ep->reason), "probe answered %ld", res->status);
	else if (!ok)
		snprintf(ep->reason, sizeof(ep->reason), "probe failed (%s): %.150s",
		         upstream_err_name(res->err), res->detail);
	struct route_snapshot *s = route_acquire();
	uint32_t hth = s ? s->cfg->health.healthy_threshold : 1;
	uint32_t uth = s ? s->cfg->health.unhealthy_threshold : 1;
	route_release(s);
	if (health_count(&ep->counts, ok, hth, uth)) {
		if (ep->counts.up)
			log_info("health: endpoint %s of variant %s is healthy (%u good probes)",
			         ep->url, ep->variant, ep->counts.ok_run);
		else
			log_warn("health: endpoint %s of variant %s is unhealthy: %s", ep->url,
			         ep->variant, ep->reason);
		apply(h, 0); /* at once, not at the next tick */
	}
}

static void on_tick(evutil_socket_t fd, short events, void *arg)
{
	apply(arg, 1);
}

struct health *health_new(struct event_base *base, char *err, size_t errlen)
{
	struct health *h = calloc(1, sizeof(*h));
	if (h == NULL)
		goto oom;
	h->base = base;
	h->up = upstream_new(base, 64, err, errlen);
	if (h->up == NULL)
		goto fail;
	h->tick = event_new(base, -1, EV_PERSIST, on_tick, h);
	struct timeval tv = {0, HEALTH_TICK_MS * 1000};
	if (h->tick == NULL || event_add(h->tick, &tv) < 0)
		goto oom;
	apply(h, 1); /* the first probes go out now */
	return h;
oom:
	snprintf(err, errlen, "health: cannot start the health checker (out of memory)");
fail:
	health_free(h);
	return NULL;
}

void health_free(struct health *h)
{
	if (h == NULL)
		return;
	if (h->tick)
		event_free(h->tick);
	for (size_t i = 0; i < h->n_eps; i++) {
		h->eps[i]->probe = NULL; /* upstream_free below cancels them all */
		ep_free(h->eps[i]);
	}
	upstream_free(h->up);
	free(h->eps);
	free(h->var_up);
	free(h);
}
