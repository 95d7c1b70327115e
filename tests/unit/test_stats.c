/*
 * test_stats.c - unit tests for router/stats.c: histogram bucket bounds,
 * quantiles against a sorted reference (within 1%), shard merge, slots.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Every value maps to a bucket whose representative is within 1/256 of it. */
static void test_bucket_error_bound(void **state)
{
	uint64_t v = 0;
	for (int i = 0; i < 200000; i++) {
		size_t b = stats_hist_bucket(v);
		assert_true(b < STATS_HIST_BUCKETS);
		uint64_t r = stats_hist_bucket_value(b);
		double err = v ? fabs((double)r - (double)v) / (double)v : (double)r;
		assert_true(err <= 1.0 / 256 + 1e-12);
		/* Buckets are monotonic in the value. */
		assert_true(stats_hist_bucket(v + 1) >= b);
		v = v < 1000 ? v + 1 : v + v / 97 + 1;
		if (v >= (1ull << STATS_HIST_MAX_EXP))
			break;
	}
}

static uint64_t ref_quantile(const uint64_t *sorted, size_t n, double q)
{
	size_t rank = (size_t)ceil(q * (double)n);
	if (rank < 1)
		rank = 1;
	return sorted[rank - 1];
}

/* Quantiles of several distributions within 1% of a sorted reference. */
static void test_quantiles_vs_sorted(void **state)
{
	enum { N = 100000 };
	uint64_t *vals = malloc(N * sizeof(*vals));
	struct stats_hist *h = malloc(sizeof(*h));
	assert_non_null(vals);
	assert_non_null(h);
	const double qs[] = {0.5, 0.9, 0.99, 0.999, 1.0};
	srand(12345);
	for (int dist = 0; dist < 3; dist++) {
		memset(h, 0, sizeof(*h));
		for (size_t i = 0; i < N; i++) {
			double u = (rand() + 1.0) / ((double)RAND_MAX + 2.0);
			uint64_t v;
			if (dist == 0)
				v = (uint64_t)(u * 1000000); /* uniform 0..1 s */
			else if (dist == 1)
				v = (uint64_t)(-log(u) * 2000); /* exponential, mean 2 ms */
			else
				v = (uint64_t)(exp(u * 20)); /* log-uniform 1 us .. 8 min */
			vals[i] = v;
			stats_hist_add(h, v);
		}
		qsort(vals, N, sizeof(*vals), cmp_u64);
		for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
			uint64_t ref = ref_quantile(vals, N, qs[k]);
			uint64_t got = stats_hist_quantile(h, qs[k]);
			double tol = ref < 100 ? 1.0 : 0.01 * (double)ref;
			if (fabs((double)got - (double)ref) > tol)
				fail_msg("dist %d q %.3f: got %llu, reference %llu", dist, qs[k],
				         (unsigned long long)got, (unsigned long long)ref);
		}
		assert_int_equal(h->max, vals[N - 1]);
	}
	free(h);
	free(vals);
}

static void test_empty_quantile(void **state)
{
	struct stats_hist *h = calloc(1, sizeof(*h));
	assert_int_equal(stats_hist_quantile(h, 0.99), 0);
	free(h);
}

static void test_shards_merge(void **state)
{
	stats_slots_reset();
	int blue = stats_slot("blue"), green = stats_slot("green");
	assert_int_equal(blue, 0);
	assert_int_equal(green, 1);
	assert_int_equal(stats_slot("blue"), 0);
	assert_int_equal(stats_n_slots(), 2);
	struct stats *st = stats_new(3);
	assert_non_null(st);
	for (size_t w = 0; w < 3; w++) {
		struct stats_shard *sh = stats_shard(st, w);
		for (int i = 0; i < 100; i++)
			stats_record(sh, blue, 200, 1000 + (uint64_t)w);
		stats_record(sh, green, 503, 50);
		stats_record(sh, green, 404, 60);
		stats_error(sh, green, STATS_ERR_TIMEOUT);
	}
	assert_null(stats_shard(st, 3));
	struct stats_variant *m = malloc(sizeof(*m));
	stats_merge(st, blue, m);
	assert_string_equal(m->name, "blue");
	assert_int_equal(m->status[2], 300);
	assert_int_equal(m->hist.total, 300);
	assert_int_equal(m->hist.max, 1002);
	uint64_t p50 = stats_hist_quantile(&m->hist, 0.5);
	assert_true(p50 >= 995 && p50 <= 1007);
	stats_merge(st, green, m);
	assert_int_equal(m->status[5], 3);
	assert_int_equal(m->status[4], 3);
	assert_int_equal(m->errors[STATS_ERR_TIMEOUT], 3);
	assert_int_equal(m->errors[STATS_ERR_CONNECT], 0);
	assert_string_equal(stats_err_name(STATS_ERR_TIMEOUT), "timeout");
	free(m);
	stats_free(st);
	stats_free(NULL);
	stats_slots_reset();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bucket_error_bound),
	    cmocka_unit_test(test_quantiles_vs_sorted),
	    cmocka_unit_test(test_empty_quantile),
	    cmocka_unit_test(test_shards_merge),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
