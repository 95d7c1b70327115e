/*
 * route.c - the routing snapshot and the variant choice.
 *
 * A snapshot is immutable once published except for endpoint health flags and
 * round-robin cursors (relaxed atomics). Publication is one atomic pointer
 * exchange. A reader brackets its load+ref with a global "readers" counter so
 * the publisher knows when no reader can still be taking the old pointer; only
 * then does it drop the old publication reference (readers never wait).
 *
 * Canary buckets come from SHA-256 so that every replica and every restart
 * agrees: bucket = first 8 bytes of SHA-256(salt || 0x00 || key) mod 10000.
 */
#include "route.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <openssl/sha.h>

#include "stats.h"

struct route_config {
	atomic_int refs;
	struct config *cfg;
};

static _Atomic(struct route_snapshot *) current;
static atomic_int readers;

struct route_config *route_config_new(struct config *cfg)
{
	struct route_config *rc = calloc(1, sizeof(*rc));
	if (rc == NULL) {
		config_free(cfg);
		return NULL;
	}
	atomic_init(&rc->refs, 1);
	rc->cfg = cfg;
	return rc;
}

void route_config_ref(struct route_config *rc)
{
	atomic_fetch_add(&rc->refs, 1);
}

void route_config_unref(struct route_config *rc)
{
	if (rc == NULL || atomic_fetch_sub(&rc->refs, 1) != 1)
		return;
	config_free(rc->cfg);
	free(rc);
}

const struct config *route_config_get(const struct route_config *rc)
{
	return rc->cfg;
}

struct route_params route_params_from_config(const struct config *cfg)
{
	struct route_params p = {
	    .strategy = cfg->strategy,
	    .stable = cfg->stable,
	    .candidate = cfg->candidate,
	    .canary_bp = cfg->canary_percent_bp,
	    .shadow_bp = cfg->shadow.percent_bp,
	};
	return p;
}

static int check_params(const struct config *cfg, const struct route_params *p, char *err,
                        size_t errlen)
{
	if (p->stable >= cfg->n_variants) {
		snprintf(err, errlen, "stable variant index %zu is out of range", p->stable);
		return -1;
	}
	if (p->candidate >= 0 && (size_t)p->candidate >= cfg->n_variants) {
		snprintf(err, errlen, "candidate variant index %zd is out of range", p->candidate);
		return -1;
	}
	if (p->candidate >= 0 && (size_t)p->candidate == p->stable) {
		snprintf(err, errlen, "candidate '%s' is the stable variant",
		         cfg->variants[p->stable].name);
		return -1;
	}
	if (p->canary_bp > ROUTE_BUCKETS || p->shadow_bp > ROUTE_BUCKETS) {
		snprintf(err, errlen, "percent out of range (canary %u, shadow %u basis points)",
		         p->canary_bp, p->shadow_bp);
		return -1;
	}
	return 0;
}

/* Health of the endpoint with the same variant name and url in prev, or 1. */
static int prev_health(const struct route_snapshot *prev, const char *vname, const char *url)
{
	if (prev == NULL)
		return 1;
	for (size_t v = 0; v < prev->n_variants; v++) {
		if (strcmp(prev->variants[v].name, vname) != 0)
			continue;
		for (size_t e = 0; e < prev->variants[v].n_endpoints; e++)
			if (strcmp(prev->variants[v].endpoints[e].cfg->url, url) == 0)
				return atomic_load(&prev->variants[v].endpoints[e].healthy);
	}
	return 1;
}

static void snapshot_free(struct route_snapshot *s)
{
	if (s == NULL)
		return;
	for (size_t v = 0; v < s->n_variants; v++)
		free(s->variants[v].endpoints);
	free(s->variants);
	route_config_unref(s->rc);
	free(s);
}

static int build_variant(struct route_variant *rv, const struct config_variant *cv,
                         const struct route_snapshot *prev, char *err, size_t errlen)
{
	rv->name = cv->name;
	rv->stats_slot = stats_slot(cv->name);
	if (rv->stats_slot < 0) {
		snprintf(err, errlen, "variant '%s': too many variant names (stats table full)",
		         cv->name);
		return -1;
	}
	rv->endpoints = calloc(cv->n_endpoints ? cv->n_endpoints : 1, sizeof(*rv->endpoints));
	if (rv->endpoints == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	rv->n_endpoints = cv->n_endpoints;
	atomic_init(&rv->rr, 0);
	for (size_t e = 0; e < cv->n_endpoints; e++) {
		rv->endpoints[e].cfg = &cv->endpoints[e];
		atomic_init(&rv->endpoints[e].healthy,
		            prev_health(prev, cv->name, cv->endpoints[e].url));
	}
	return 0;
}

struct route_snapshot *route_snapshot_new(struct route_config *rc, const struct route_params *p,
                                          uint64_t generation, const struct route_snapshot *prev,
                                          char *err, size_t errlen)
{
	const struct config *cfg = rc->cfg;
	if (check_params(cfg, p, err, errlen) < 0)
		return NULL;
	struct route_snapshot *s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto oom;
	atomic_init(&s->refs, 1);
	route_config_ref(rc);
	s->rc = rc;
	s->cfg = cfg;
	s->generation = generation;
	s->params = *p;
	s->variants = calloc(cfg->n_variants ? cfg->n_variants : 1, sizeof(*s->variants));
	if (s->variants == NULL)
		goto oom;
	for (size_t v = 0; v < cfg->n_variants; v++) {
		s->n_variants = v + 1;
		if (build_variant(&s->variants[v], &cfg->variants[v], prev, err, errlen) < 0)
			goto fail;
	}
	return s;
oom:
	snprintf(err, errlen, "out of memory building the route snapshot");
fail:
	snapshot_free(s);
	return NULL;
}

void route_snapshot_ref(struct route_snapshot *s)
{
	atomic_fetch_add(&s->refs, 1);
}

void route_snapshot_unref(struct route_snapshot *s)
{
	if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	snapshot_free(s);
}

void route_publish(struct route_snapshot *s)
{
	struct route_snapshot *old = atomic_exchange(&current, s);
	/* A reader that loaded old has incremented readers first: wait it out. */
	for (unsigned spins = 0; atomic_load(&readers) != 0; spins++)
		if (spins > 64)
			sched_yield();
	route_snapshot_unref(old);
}

struct route_snapshot *route_acquire(void)
{
	atomic_fetch_add(&readers, 1);
	struct route_snapshot *s = atomic_load(&current);
	if (s != NULL)
		route_snapshot_ref(s);
	atomic_fetch_sub(&readers, 1);
	return s;
}

void route_release(struct route_snapshot *s)
{
	route_snapshot_unref(s);
}

void route_shutdown(void)
{
	route_publish(NULL);
}

uint64_t route_current_generation(void)
{
	struct route_snapshot *s = route_acquire();
	uint64_t g = s ? s->generation : 0;
	route_release(s);
	return g;
}

uint32_t route_bucket(const char *salt, const char *key, size_t keylen)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	size_t saltlen = salt ? strlen(salt) : 0;
	/* One-shot over a small stack buffer when it fits; keys are header-bounded. */
	unsigned char buf[512];
	unsigned char *in = buf;
	size_t n = saltlen + 1 + keylen;
	if (n > sizeof(buf)) {
		in = malloc(n);
		if (in == NULL)
			return route_random_bucket();
	}
	if (saltlen)
		memcpy(in, salt, saltlen);
	in[saltlen] = 0;
	if (keylen)
		memcpy(in + saltlen + 1, key, keylen);
	SHA256(in, n, md);
	if (in != buf)
		free(in);
	uint64_t x = 0;
	for (int i = 0; i < 8; i++)
		x = (x << 8) | md[i];
	return (uint32_t)(x % ROUTE_BUCKETS);
}

/* xorshift64*, one state per thread, seeded from getrandom. */
static _Thread_local uint64_t rng_state;

static uint64_t rng_next(void)
{
	if (rng_state == 0) {
		if (getrandom(&rng_state, sizeof(rng_state), 0) != sizeof(rng_state) ||
		    rng_state == 0)
			rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&rng_state;
	}
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

uint32_t route_random_bucket(void)
{
	/* Rejection sampling keeps the draw exactly uniform over 0..9999. */
	const uint64_t limit = UINT64_MAX - UINT64_MAX % ROUTE_BUCKETS;
	uint64_t x;
	do {
		x = rng_next();
	} while (x >= limit);
	return (uint32_t)(x % ROUTE_BUCKETS);
}

const char *route_cookie_value(const char *header, const char *name, size_t *len)
{
	size_t nlen = strlen(name);
	const char *p = header;
	while (p && *p) {
		while (*p == ' ' || *p == '\t' || *p == ';')
			p++;
		const char *end = strchr(p, ';');
		size_t plen = end ? (size_t)(end - p) : strlen(p);
		if (plen > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
			const char *v = p + nlen + 1;
			size_t vlen = plen - nlen - 1;
			while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
				vlen--;
			if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
				v++;
				vlen -= 2;
			}
			*len = vlen;
			return v;
		}
		p = end;
	}
	return NULL;
}

size_t route_variant_for_bucket(const struct route_params *p, uint32_t bucket)
{
	if (p->strategy == CONFIG_STRATEGY_CANARY && p->candidate >= 0 && bucket < p->canary_bp)
		return (size_t)p->candidate;
	return p->stable;
}

int route_variant_healthy(const struct route_snapshot *s, size_t v)
{
	const struct route_variant *rv = &s->variants[v];
	for (size_t e = 0; e < rv->n_endpoints; e++)
		if (atomic_load_explicit(&rv->endpoints[e].healthy, memory_order_relaxed))
			return 1;
	return 0;
}

enum route_pick_result route_pick(const struct route_snapshot *s, uint32_t bucket,
                                  const char *override, size_t *variant)
{
	if (override != NULL) {
		for (size_t v = 0; v < s->n_variants; v++) {
			if (strcmp(s->variants[v].name, override) == 0) {
				*variant = v;
				return route_variant_healthy(s, v) ? ROUTE_PICK_OK
				                                   : ROUTE_PICK_NO_HEALTHY;
			}
		}
		return ROUTE_PICK_UNKNOWN_OVERRIDE;
	}
	size_t v = route_variant_for_bucket(&s->params, bucket);
	if (v != s->params.stable && !route_variant_healthy(s, v))
		v = s->params.stable; /* an unhealthy candidate's share falls back to stable */
	*variant = v;
	return route_variant_healthy(s, v) ? ROUTE_PICK_OK : ROUTE_PICK_NO_HEALTHY;
}

ssize_t route_endpoint_pick(struct route_snapshot *s, size_t v)
{
	struct route_variant *rv = &s->variants[v];
	if (rv->n_endpoints == 0)
		return -1;
	unsigned start = atomic_fetch_add_explicit(&rv->rr, 1, memory_order_relaxed);
	for (size_t i = 0; i < rv->n_endpoints; i++) {
		size_t e = (start + i) % rv->n_endpoints;
		if (atomic_load_explicit(&rv->endpoints[e].healthy, memory_order_relaxed))
			return (ssize_t)e;
	}
	return -1;
}

void route_set_healthy(struct route_snapshot *s, size_t v, size_t e, int healthy)
{
	if (v < s->n_variants && e < s->variants[v].n_endpoints)
		atomic_store(&s->variants[v].endpoints[e].healthy, healthy ? 1 : 0);
}
