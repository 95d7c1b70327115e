/*
 * test_route.c - unit tests for router/route.c: canary bucket math (values
 * computed independently with Python's hashlib, uniformity, monotonic ramp),
 * variant choice (override, health fallback), round-robin, cookie parsing,
 * and snapshot publication.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "route.h"
#include "stats.h"

/*
 * Expected buckets computed outside this code base with
 *   int.from_bytes(hashlib.sha256(salt + b"\0" + key).digest()[:8], "big") % 10000
 */
static void test_bucket_known_values(void **state)
{
	assert_int_equal(route_bucket("s1", "u1", 2), 5501);
	assert_int_equal(route_bucket("rollout-2026-11", "alice", 5), 5086);
	assert_int_equal(route_bucket("", "x", 1), 2752);
}

static void test_bucket_deterministic_and_salted(void **state)
{
	char key[32];
	int differ = 0;
	for (int i = 0; i < 1000; i++) {
		int n = snprintf(key, sizeof(key), "user-%d", i);
		uint32_t a = route_bucket("salt-a", key, (size_t)n);
		assert_true(a < ROUTE_BUCKETS);
		assert_int_equal(a, route_bucket("salt-a", key, (size_t)n));
		differ += a != route_bucket("salt-b", key, (size_t)n);
	}
	/* A new salt reshuffles: about 9999 in 10000 keys move. */
	assert_true(differ > 990);
}

/* Chi-square over 100 bins of bucket/100: uniform within a wide margin. */
static void test_bucket_uniform(void **state)
{
	enum { N = 200000, BINS = 100 };
	unsigned bins[BINS] = {0};
	char key[32];
	for (int i = 0; i < N; i++) {
		int n = snprintf(key, sizeof(key), "k%d", i);
		bins[route_bucket("uniform", key, (size_t)n) / 100]++;
	}
	double exp = (double)N / BINS, chi = 0;
	for (int b = 0; b < BINS; b++)
		chi += (bins[b] - exp) * (bins[b] - exp) / exp;
	/* 99 degrees of freedom: P(chi2 > 160) is about 1e-4. */
	assert_true(chi < 160);
}

static void test_random_bucket_uniform(void **state)
{
	enum { N = 100000 };
	unsigned below = 0;
	for (int i = 0; i < N; i++) {
		uint32_t b = route_random_bucket();
		assert_true(b < ROUTE_BUCKETS);
		below += b < 1000;
	}
	/* 10% expected; 6 sigma of a binomial(N, 0.1) is about 570. */
	assert_true(fabs((double)below - N * 0.1) < 570);
}

/* Raising the percent only ever moves keys from stable to candidate. */
static void test_monotonic_ramp(void **state)
{
	struct route_params p = {.strategy = CONFIG_STRATEGY_CANARY, .stable = 0, .candidate = 1};
	char key[32];
	for (int i = 0; i < 5000; i++) {
		int n = snprintf(key, sizeof(key), "ramp-%d", i);
		uint32_t b = route_bucket("ramp", key, (size_t)n);
		int was_candidate = 0;
		for (uint32_t bp = 0; bp <= 10000; bp += 250) {
			p.canary_bp = bp;
			int cand = route_variant_for_bucket(&p, b) == 1;
			assert_false(was_candidate && !cand);
			was_candidate = cand;
		}
		assert_true(was_candidate); /* 100% sends everyone to the candidate */
		p.canary_bp = 0;
		assert_int_equal(route_variant_for_bucket(&p, b), 0);
	}
}

static void test_strategies_send_live_to_stable(void **state)
{
	struct route_params p = {.stable = 1, .candidate = 0, .canary_bp = 10000};
	p.strategy = CONFIG_STRATEGY_BLUEGREEN;
	assert_int_equal(route_variant_for_bucket(&p, 0), 1);
	p.strategy = CONFIG_STRATEGY_SHADOW;
	assert_int_equal(route_variant_for_bucket(&p, 0), 1);
	p.strategy = CONFIG_STRATEGY_CANARY;
	assert_int_equal(route_variant_for_bucket(&p, 0), 0);
	p.candidate = -1;
	assert_int_equal(route_variant_for_bucket(&p, 0), 1);
}

static void test_cookie_value(void **state)
{
	size_t len = 0;
	const char *v = route_cookie_value("a=1; uid=abc; b=2", "uid", &len);
	assert_non_null(v);
	assert_int_equal(len, 3);
	assert_memory_equal(v, "abc", 3);
	v = route_cookie_value("uidx=1;uid=\"q\"", "uid", &len);
	assert_non_null(v);
	assert_int_equal(len, 1);
	assert_memory_equal(v, "q", 1);
	assert_null(route_cookie_value("a=1; b=2", "uid", &len));
	assert_null(route_cookie_value("", "uid", &len));
}

/* A hand-built config: two variants, blue (1 endpoint) and green (2). */
static struct config *make_config(void)
{
	struct config *c = calloc(1, sizeof(*c));
	c->n_variants = 2;
	c->variants = calloc(2, sizeof(*c->variants));
	const char *names[] = {"blue", "green"};
	for (size_t v = 0; v < 2; v++) {
		c->variants[v].name = strdup(names[v]);
		c->variants[v].n_endpoints = v + 1;
		c->variants[v].endpoints = calloc(v + 1, sizeof(struct config_endpoint));
		for (size_t e = 0; e <= v; e++) {
			char url[64];
			snprintf(url, sizeof(url), "http://127.0.0.1:%zu", 9000 + v * 10 + e);
			c->variants[v].endpoints[e].url = strdup(url);
			c->variants[v].endpoints[e].host = strdup("127.0.0.1");
			c->variants[v].endpoints[e].port = (int)(9000 + v * 10 + e);
		}
	}
	c->strategy = CONFIG_STRATEGY_CANARY;
	c->stable = 0;
	c->candidate = 1;
	c->canary_percent_bp = 1000;
	c->salt = strdup("t");
	return c;
}

static void test_pick_override_and_health(void **state)
{
	struct route_config *rc = route_config_new(make_config());
	assert_non_null(rc);
	struct route_params p = route_params_from_config(route_config_get(rc));
	char err[256];
	struct route_snapshot *s = route_snapshot_new(rc, &p, 1, NULL, err, sizeof(err));
	assert_non_null(s);
	size_t v = 99;
	assert_int_equal(route_pick(s, 5, NULL, &v), ROUTE_PICK_OK);
	assert_int_equal(v, 1); /* bucket 5 < 1000 bp: candidate */
	assert_int_equal(route_pick(s, 5000, NULL, &v), ROUTE_PICK_OK);
	assert_int_equal(v, 0);
	assert_int_equal(route_pick(s, 5000, "green", &v), ROUTE_PICK_OK);
	assert_int_equal(v, 1);
	assert_int_equal(route_pick(s, 5, "purple", &v), ROUTE_PICK_UNKNOWN_OVERRIDE);

	/* Round-robin over green's two endpoints, skipping an unhealthy one. */
	ssize_t a = route_endpoint_pick(s, 1), b = route_endpoint_pick(s, 1);
	assert_true(a >= 0 && b >= 0 && a != b);
	route_set_healthy(s, 1, 0, 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(route_endpoint_pick(s, 1), 1);
	/* Candidate with no healthy endpoint: its share goes to stable. */
	route_set_healthy(s, 1, 1, 0);
	assert_int_equal(route_pick(s, 5, NULL, &v), ROUTE_PICK_OK);
	assert_int_equal(v, 0);
	assert_int_equal(route_endpoint_pick(s, 1), -1);
	/* Stable down too: 503 naming stable. */
	route_set_healthy(s, 0, 0, 0);
	assert_int_equal(route_pick(s, 5000, NULL, &v), ROUTE_PICK_NO_HEALTHY);
	assert_int_equal(v, 0);

	/* Health carries over to a new snapshot by variant name and url. */
	struct route_snapshot *s2 = route_snapshot_new(rc, &p, 2, s, err, sizeof(err));
	assert_non_null(s2);
	assert_false(route_variant_healthy(s2, 0));
	route_snapshot_unref(s2);
	route_snapshot_unref(s);
	route_config_unref(rc);
}

static void test_snapshot_rejects_bad_params(void **state)
{
	struct route_config *rc = route_config_new(make_config());
	struct route_params p = route_params_from_config(route_config_get(rc));
	char err[256] = "";
	p.candidate = 0; /* == stable */
	assert_null(route_snapshot_new(rc, &p, 1, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "stable"));
	p.candidate = 7;
	assert_null(route_snapshot_new(rc, &p, 1, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "out of range"));
	route_config_unref(rc);
}

static void test_publish_acquire(void **state)
{
	assert_null(route_acquire());
	struct route_config *rc = route_config_new(make_config());
	struct route_params p = route_params_from_config(route_config_get(rc));
	char err[256];
	route_publish(route_snapshot_new(rc, &p, 7, NULL, err, sizeof(err)));
	struct route_snapshot *held = route_acquire();
	assert_non_null(held);
	assert_int_equal(held->generation, 7);
	p.canary_bp = 3000;
	route_publish(route_snapshot_new(rc, &p, 8, held, err, sizeof(err)));
	/* The old snapshot stays valid for its holder after the switch. */
	assert_int_equal(held->generation, 7);
	assert_int_equal(held->params.canary_bp, 1000);
	assert_int_equal(route_current_generation(), 8);
	route_release(held);
	route_shutdown();
	assert_int_equal(route_current_generation(), 0);
	route_config_unref(rc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bucket_known_values),
	    cmocka_unit_test(test_bucket_deterministic_and_salted),
	    cmocka_unit_test(test_bucket_uniform),
	    cmocka_unit_test(test_random_bucket_uniform),
	    cmocka_unit_test(test_monotonic_ramp),
	    cmocka_unit_test(test_strategies_send_live_to_stable),
	    cmocka_unit_test(test_cookie_value),
	    cmocka_unit_test(test_pick_override_and_health),
	    cmocka_unit_test(test_snapshot_rejects_bad_params),
	    cmocka_unit_test(test_publish_acquire),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	stats_slots_reset();
	return rc;
}
