/*
 * test_pmetrics.c - unit tests for predictor/pmetrics.c: shards merge on read,
 * histograms are cumulative, labels are bounded, and concurrent writers on
 * their own shards lose no counts while a reader renders.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pmetrics.h"

static char *render(const struct pmetrics *m)
{
	struct evbuffer *b = evbuffer_new();
	assert_int_equal(pmetrics_render(m, b), 0);
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);
	evbuffer_remove(b, s, n);
	s[n] = 0;
	evbuffer_free(b);
	return s;
}

static void expect_line(const char *text, const char *line)
{
	char want[256];
	snprintf(want, sizeof(want), "\n%s\n", line);
	if (!strstr(text, want))
		fail_msg("missing line '%s' in:\n%s", line, text);
}

static void test_bad_args(void **state)
{
	assert_null(pmetrics_new(0, 10));
	assert_null(pmetrics_new(PMETRICS_MAX_SHARDS + 1, 10));
	assert_null(pmetrics_new(1, PMETRICS_MAX_LABELS + 1));
	pmetrics_free(NULL);
}

static void test_merge_and_render(void **state)
{
	struct pmetrics *m = pmetrics_new(3, 10);
	assert_non_null(m);
	pmetrics_request(m, 0, 200);
	pmetrics_request(m, 1, 200);
	pmetrics_request(m, 2, 200);
	pmetrics_request(m, 1, 400);
	pmetrics_request(m, 2, 418); /* not in the table: "other" */
	assert_int_equal(pmetrics_requests(m, 200), 3);
	pmetrics_inference(m, 0, 0.003, 1);
	pmetrics_inference(m, 2, 0.0001, 100);
	int64_t labels[] = {3, 3, 9, 42, -1};
	pmetrics_labels(m, 1, labels, 5);
	pmetrics_confidence(m, 0, 0.9, 1);
	pmetrics_confidence(m, 1, 0.7, 1);
	pmetrics_inputs(m, 2, 128, 5);
	pmetrics_inputs(m, 0, 64, 1);
	char *s = render(m);
	expect_line(s, "# TYPE predictor_requests_total counter");
	expect_line(s, "predictor_requests_total{code=\"200\"} 3");
	expect_line(s, "predictor_requests_total{code=\"400\"} 1");
	expect_line(s, "predictor_requests_total{code=\"other\"} 1");
	expect_line(s, "# TYPE predictor_inference_duration_seconds histogram");
	expect_line(s, "predictor_inference_duration_seconds_bucket{le=\"0.0001\"} 1");
	expect_line(s, "predictor_inference_duration_seconds_bucket{le=\"0.0025\"} 1");
	expect_line(s, "predictor_inference_duration_seconds_bucket{le=\"0.005\"} 2");
	expect_line(s, "predictor_inference_duration_seconds_bucket{le=\"+Inf\"} 2");
	expect_line(s, "predictor_inference_duration_seconds_count 2");
	expect_line(s, "predictor_inference_duration_seconds_sum 0.0031");
	expect_line(s, "predictor_batch_size_bucket{le=\"1\"} 1");
	expect_line(s, "predictor_batch_size_bucket{le=\"64\"} 1");
	expect_line(s, "predictor_batch_size_bucket{le=\"128\"} 2");
	expect_line(s, "predictor_batch_size_sum 101");
	expect_line(s, "predictor_predicted_label_total{label=\"3\"} 2");
	expect_line(s, "predictor_predicted_label_total{label=\"0\"} 0");
	expect_line(s, "predictor_predicted_label_total{label=\"9\"} 1");
	expect_line(s, "predictor_predicted_label_total{label=\"other\"} 2");
	expect_line(s, "predictor_mean_confidence 0.8");
	expect_line(s, "predictor_inputs_total 192");
	expect_line(s, "predictor_inputs_out_of_range_total 6");
	free(s);
	pmetrics_free(m);
}

static void test_no_labels(void **state)
{
	struct pmetrics *m = pmetrics_new(1, 0);
	char *s = render(m);
	assert_null(strstr(s, "predicted_label"));
	expect_line(s, "predictor_requests_total{code=\"200\"} 0");
	assert_null(strstr(s, "code=\"other\""));
	expect_line(s, "predictor_mean_confidence 0");
	free(s);
	pmetrics_free(m);
}

#define N_WRITERS 4
#define N_BUMPS   200000

struct writer_arg {
	struct pmetrics *m;
	size_t shard;
};

static void *writer(void *p)
{
	struct writer_arg *a = p;
	for (int i = 0; i < N_BUMPS; i++)
		pmetrics_request(a->m, a->shard, 200);
	return NULL;
}

static void test_concurrent_shards(void **state)
{
	struct pmetrics *m = pmetrics_new(N_WRITERS, 10);
	pthread_t t[N_WRITERS];
	struct writer_arg a[N_WRITERS];
	for (size_t i = 0; i < N_WRITERS; i++) {
		a[i] = (struct writer_arg){m, i};
		assert_int_equal(pthread_create(&t[i], NULL, writer, &a[i]), 0);
	}
	uint64_t prev = 0;
	for (int i = 0; i < 50; i++) { /* reads while writing never go backwards */
		uint64_t now = pmetrics_requests(m, 200);
		assert_true(now >= prev);
		prev = now;
		char *s = render(m);
		free(s);
	}
	for (size_t i = 0; i < N_WRITERS; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(pmetrics_requests(m, 200), (uint64_t)N_WRITERS * N_BUMPS);
	pmetrics_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_args),
	    cmocka_unit_test(test_merge_and_render),
	    cmocka_unit_test(test_no_labels),
	    cmocka_unit_test(test_concurrent_shards),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
