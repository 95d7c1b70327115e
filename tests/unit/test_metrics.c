/*
 * test_metrics.c - unit tests for router/metrics.c: the Prometheus text of
 * recorded stats (counts exact, histogram buckets cumulative and consistent
 * with the recorded values), label escaping, reload/rollback counters, and the
 * per-second history ring behind the dashboard.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>

#include "metrics.h"
#include "stats.h"

/* The value of the sample line that starts with prefix (followed by a space), or -1. */
static double sample_value(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	}
	return -1;
}

static int setup(void **state)
{
	stats_slots_reset();
	metrics_events_reset();
	return 0;
}

static void test_requests_and_histogram(void **state)
{
	struct stats *st = stats_new(3);
	assert_non_null(st);
	int blue = stats_slot("blue"), green = stats_slot("green");
	assert_int_equal(blue, 0);
	assert_int_equal(green, 1);
	/* latencies spread over 50 us .. 20 s on 3 shards */
	enum { N = 3000 };
	static uint64_t lat[N];
	uint64_t v = 50;
	for (int i = 0; i < N; i++) {
		lat[i] = v;
		v = v * 1009 / 1000 + 1;
		if (v > 20000000)
			v = 50;
		stats_record(stats_shard(st, (size_t)i % 3), blue, i % 10 == 0 ? 503 : 200, lat[i]);
	}
	stats_record(stats_shard(st, 0), green, 404, 1000);
	stats_error(stats_shard(st, 1), blue, STATS_ERR_TIMEOUT);
	size_t len = 0;
	char *text = metrics_render(st, &len);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	assert_non_null(strstr(text, "# TYPE turnout_requests_total counter\n"));
	assert_non_null(strstr(text, "# TYPE turnout_request_duration_seconds histogram\n"));
	assert_non_null(strstr(text, "# HELP turnout_upstream_errors_total "));
	assert_int_equal(
	    sample_value(text, "turnout_requests_total{variant=\"blue\",code=\"2xx\"}"),
	    N - N / 10);
	assert_int_equal(
	    sample_value(text, "turnout_requests_total{variant=\"blue\",code=\"5xx\"}"), N / 10);
	assert_int_equal(
	    sample_value(text, "turnout_requests_total{variant=\"green\",code=\"4xx\"}"), 1);
	assert_int_equal(
	    sample_value(text, "turnout_upstream_errors_total{variant=\"blue\",cause=\"timeout\"}"),
	    1);
	assert_int_equal(
	    sample_value(text, "turnout_request_duration_seconds_count{variant=\"blue\"}"), N);
	assert_int_equal(
	    sample_value(text,
	                 "turnout_request_duration_seconds_bucket{variant=\"blue\",le=\"+Inf\"}"),
	    N);
	/* Each cumulative bucket lies between the exact count under le and the count
	 * under le minus the histogram's resolution (1/128), and never decreases. */
	static const struct {
		const char *le;
		double s;
	} les[] = {{"0.0001", 0.0001}, {"0.001", 0.001}, {"0.01", 0.01}, {"0.1", 0.1},
	           {"1", 1},           {"2.5", 2.5},     {"10", 10}};
	double prev = 0;
	for (size_t k = 0; k < sizeof(les) / sizeof(les[0]); k++) {
		char key[128];
		snprintf(key, sizeof(key),
		         "turnout_request_duration_seconds_bucket{variant=\"blue\",le=\"%s\"}",
		         les[k].le);
		double got = sample_value(text, key);
		uint64_t le_us = (uint64_t)(les[k].s * 1e6 + 0.5), lo_us = le_us - le_us / 128 - 1;
		int exact = 0, low = 0;
		for (int i = 0; i < N; i++) {
			exact += lat[i] <= le_us;
			low += lat[i] <= lo_us;
		}
		assert_true(got >= low);
		assert_true(got <= exact);
		assert_true(got >= prev);
		prev = got;
	}
	double sum = sample_value(text, "turnout_request_duration_seconds_sum{variant=\"blue\"}");
	double want = 0;
	for (int i = 0; i < N; i++)
		want += (double)lat[i] / 1e6;
	assert_true(sum > want * 0.999999 && sum < want * 1.000001);
	free(text);
	stats_free(st);
}

static void test_events_and_gauges(void **state)
{
	struct stats *st = stats_new(2);
	assert_non_null(st);
	stats_gauge_set(stats_shard(st, 0), STATS_GAUGE_INFLIGHT, 3);
	stats_gauge_set(stats_shard(st, 1), STATS_GAUGE_INFLIGHT, 4);
	stats_gauge_set(stats_shard(st, 1), STATS_GAUGE_CONNS, 9);
	metrics_note_reload(1);
	metrics_note_reload(1);
	metrics_note_reload(0);
	metrics_note_rollback();
	char *text = metrics_render(st, NULL);
	assert_non_null(text);
	assert_int_equal(sample_value(text, "turnout_config_reloads_total{result=\"success\"}"), 2);
	assert_int_equal(sample_value(text, "turnout_config_reloads_total{result=\"failure\"}"), 1);
	assert_int_equal(sample_value(text, "turnout_rollbacks_total"), 1);
	assert_int_equal(sample_value(text, "turnout_inflight_requests"), 7);
	assert_int_equal(sample_value(text, "turnout_open_connections"), 9);
	assert_true(sample_value(text, "process_resident_memory_bytes") > 1e5);
	/* no snapshot published: generation 0, no variant gauges */
	assert_int_equal(sample_value(text, "turnout_config_generation"), 0);
	assert_null(strstr(text, "turnout_traffic_percent{"));
	free(text);
	stats_free(st);
}

static void test_label_escape(void **state)
{
	char out[32];
	metrics_label_escape("a\"b\\c\nd", out, sizeof(out));
	assert_string_equal(out, "a\\\"b\\\\c\\nd");
	metrics_label_escape("0123456789012345678901234567890123456789", out, 8);
	assert_int_equal(strlen(out), 7);
	metrics_label_escape(NULL, out, sizeof(out));
	assert_string_equal(out, "");
}

static void test_history(void **state)
{
	struct event_base *base = event_base_new();
	struct evhttp *http = evhttp_new(base);
	struct stats *st = stats_new(1);
	char err[256];
	assert_non_null(base);
	assert_non_null(http);
	int slot = stats_slot("blue");
	struct metrics *m = metrics_new(base, http, st, err, sizeof(err));
	assert_non_null(m);
	/* a second registration of the same paths is refused with a reason */
	struct metrics *m2 = metrics_new(base, http, st, err, sizeof(err));
	assert_null(m2);
	assert_non_null(strstr(err, "/metrics"));
	metrics_sample(m);
	for (int i = 0; i < 40; i++)
		stats_record(stats_shard(st, 0), slot, i < 10 ? 500 : 200, 1000 + (uint64_t)i);
	metrics_sample(m);
	metrics_note_action("uid 1000: rollback -> ok");
	for (int i = 0; i < METRICS_HISTORY_MAX + 5; i++)
		metrics_sample(m);
	char *doc = metrics_history_json(m);
	assert_non_null(doc);
	json_error_t je;
	json_t *j = json_loads(doc, 0, &je);
	assert_non_null(j);
	/* bounded ring: the oldest samples were overwritten */
	assert_int_equal(json_array_size(json_object_get(j, "t")), METRICS_HISTORY_MAX);
	json_t *v = json_array_get(json_object_get(j, "variants"), 0);
	assert_string_equal(json_string_value(json_object_get(v, "name")), "blue");
	json_t *rps = json_object_get(v, "rps");
	assert_int_equal(json_array_size(rps), METRICS_HISTORY_MAX);
	json_t *acts = json_object_get(json_object_get(j, "events"), "actions");
	assert_int_equal(json_array_size(acts), 1);
	json_decref(j);
	free(doc);

	/* a fresh ring: the second sample holds the 40 requests, 25% of them 5xx */
	metrics_free(m);
	m = metrics_new(base, http, st, err, sizeof(err));
	assert_non_null(m);
	metrics_sample(m);
	for (int i = 0; i < 40; i++)
		stats_record(stats_shard(st, 0), slot, i < 10 ? 500 : 200, 1000 + (uint64_t)i);
	metrics_sample(m);
	doc = metrics_history_json(m);
	j = json_loads(doc, 0, &je);
	assert_non_null(j);
	v = json_array_get(json_object_get(j, "variants"), 0);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(v, "rps"), 1)), 40);
	double er = json_real_value(json_array_get(json_object_get(v, "error_rate"), 1));
	assert_true(er > 0.2499 && er < 0.2501);
	double p99 = json_real_value(json_array_get(json_object_get(v, "p99_ms"), 1));
	assert_true(p99 >= 1.030 && p99 <= 1.045);
	json_decref(j);
	free(doc);
	metrics_free(m);
	metrics_free(NULL);
	evhttp_free(http);
	event_base_free(base);
	stats_free(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_requests_and_histogram, setup),
	    cmocka_unit_test_setup(test_events_and_gauges, setup),
	    cmocka_unit_test(test_label_escape),
	    cmocka_unit_test_setup(test_history, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
