/*
 * pmetrics.c - the predictor's Prometheus metrics (see pmetrics.h).
 *
 * Each shard sits on its own cache lines and has exactly one writer, so a
 * counter bump is a relaxed load plus a relaxed store: no lock prefix, no
 * contention, and no data race for the scraping thread, which only loads.
 */
#include "pmetrics.h"

#include <event2/buffer.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int pm_codes[] = {200, 400, 404, 405, 413, 415, 500, 501, 503};
#define PM_N_CODES (sizeof(pm_codes) / sizeof(pm_codes[0]))

static const double pm_dur_bounds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                       0.025,   0.05,   0.1,     0.25,   0.5,   1,      2.5,   5};
#define PM_N_DUR (sizeof(pm_dur_bounds) / sizeof(pm_dur_bounds[0]))

static const double pm_batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define PM_N_BATCH (sizeof(pm_batch_bounds) / sizeof(pm_batch_bounds[0]))

struct pm_shard {
	_Alignas(64) _Atomic uint64_t requests[PM_N_CODES + 1]; /* last: any other code */
	_Atomic uint64_t dur_buckets[PM_N_DUR + 1];             /* last: +Inf only */
	_Atomic double dur_sum;
	_Atomic uint64_t batch_buckets[PM_N_BATCH + 1];
	_Atomic double batch_sum;
	_Atomic uint64_t labels[PMETRICS_MAX_LABELS + 1]; /* last: other */
	_Atomic double conf_sum;
	_Atomic uint64_t conf_rows;
	_Atomic uint64_t inputs_total;
	_Atomic uint64_t inputs_out;
};

struct pmetrics {
	size_t n_shards;
	size_t n_labels;
	struct pm_shard *shards;
};

/* Single-writer increments: see the file comment. */
static void pm_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
	                      memory_order_relaxed);
}

static void pm_addf(_Atomic double *c, double x)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + x,
	                      memory_order_relaxed);
}

static uint64_t pm_get(const _Atomic uint64_t *c)
{
	return atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed);
}

static double pm_getf(const _Atomic double *c)
{
	return atomic_load_explicit((_Atomic double *)c, memory_order_relaxed);
}

struct pmetrics *pmetrics_new(size_t n_shards, size_t n_labels)
{
	if (n_shards == 0 || n_shards > PMETRICS_MAX_SHARDS || n_labels > PMETRICS_MAX_LABELS)
		return NULL;
	struct pmetrics *m = calloc(1, sizeof(*m));
	if (!m)
		goto fail;
	m->n_shards = n_shards;
	m->n_labels = n_labels;
	m->shards = aligned_alloc(_Alignof(struct pm_shard), n_shards * sizeof(struct pm_shard));
	if (!m->shards)
		goto fail;
	/* Nothing runs concurrently yet; all-zero bytes are zero counters and 0.0. */
	memset(m->shards, 0, n_shards * sizeof(struct pm_shard));
	return m;
fail:
	pmetrics_free(m);
	return NULL;
}

void pmetrics_free(struct pmetrics *m)
{
	if (!m)
		return;
	free(m->shards);
	free(m);
}

static struct pm_shard *shard_of(struct pmetrics *m, size_t shard)
{
	return &m->shards[shard < m->n_shards ? shard : 0];
}

static size_t code_index(int code)
{
	for (size_t i = 0; i < PM_N_CODES; i++)
		if (pm_codes[i] == code)
			return i;
	return PM_N_CODES;
}

void pmetrics_request(struct pmetrics *m, size_t shard, int code)
{
	pm_add(&shard_of(m, shard)->requests[code_index(code)], 1);
}

static size_t bucket_index(const double *bounds, size_t n, double v)
{
	size_t i = 0;
	while (i < n && v > bounds[i])
		i++;
	return i;
}

void pmetrics_inference(struct pmetrics *m, size_t shard, double seconds, int64_t batch)
{
	struct pm_shard *s = shard_of(m, shard);
	pm_add(&s->dur_buckets[bucket_index(pm_dur_bounds, PM_N_DUR, seconds)], 1);
	pm_addf(&s->dur_sum, seconds);
	pm_add(&s->batch_buckets[bucket_index(pm_batch_bounds, PM_N_BATCH, (double)batch)], 1);
	pm_addf(&s->batch_sum, (double)batch);
}

void pmetrics_labels(struct pmetrics *m, size_t shard, const int64_t *labels, size_t n)
{
	struct pm_shard *s = shard_of(m, shard);
	for (size_t i = 0; i < n; i++) {
		int64_t l = labels[i];
		size_t k = l >= 0 && (uint64_t)l < m->n_labels ? (size_t)l : PMETRICS_MAX_LABELS;
		pm_add(&s->labels[k], 1);
	}
}

void pmetrics_confidence(struct pmetrics *m, size_t shard, double sum_max_prob, uint64_t rows)
{
	struct pm_shard *s = shard_of(m, shard);
	pm_addf(&s->conf_sum, sum_max_prob);
	pm_add(&s->conf_rows, rows);
}

void pmetrics_inputs(struct pmetrics *m, size_t shard, uint64_t total, uint64_t out_of_range)
{
	struct pm_shard *s = shard_of(m, shard);
	pm_add(&s->inputs_total, total);
	pm_add(&s->inputs_out, out_of_range);
}

/* Sum of one counter over all shards; off is its byte offset in a shard. */
static uint64_t sum_u64(const struct pmetrics *m, size_t off)
{
	uint64_t t = 0;
	for (size_t i = 0; i < m->n_shards; i++)
		t += pm_get((const _Atomic uint64_t *)((const char *)&m->shards[i] + off));
	return t;
}

static double sum_f64(const struct pmetrics *m, size_t off)
{
	double t = 0;
	for (size_t i = 0; i < m->n_shards; i++)
		t += pm_getf((const _Atomic double *)((const char *)&m->shards[i] + off));
	return t;
}

uint64_t pmetrics_requests(const struct pmetrics *m, int code)
{
	return sum_u64(m, offsetof(struct pm_shard, requests) +
	                      code_index(code) * sizeof(_Atomic uint64_t));
}

static int render_requests(const struct pmetrics *m, struct evbuffer *out)
{
	int rc = evbuffer_add_printf(out, "# HELP predictor_requests_total HTTP requests answered, "
	                                  "by status code.\n"
	                                  "# TYPE predictor_requests_total counter\n");
	for (size_t i = 0; rc >= 0 && i <= PM_N_CODES; i++) {
		uint64_t n =
		    sum_u64(m, offsetof(struct pm_shard, requests) + i * sizeof(_Atomic uint64_t));
		if (i == PM_N_CODES && n == 0)
			break;
		if (i == PM_N_CODES)
			rc = evbuffer_add_printf(out,
			                         "predictor_requests_total{code=\"other\"} %llu\n",
			                         (unsigned long long)n);
		else
			rc =
			    evbuffer_add_printf(out, "predictor_requests_total{code=\"%d\"} %llu\n",
			                        pm_codes[i], (unsigned long long)n);
	}
	return rc < 0 ? -1 : 0;
}

static int render_histogram(const struct pmetrics *m, struct evbuffer *out, const char *name,
                            const char *help, const double *bounds, size_t nb, size_t off,
                            size_t sum_off)
{
	int rc = evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	uint64_t cum = 0;
	for (size_t i = 0; rc >= 0 && i <= nb; i++) {
		cum += sum_u64(m, off + i * sizeof(_Atomic uint64_t));
		if (i < nb)
			rc = evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name,
			                         bounds[i], (unsigned long long)cum);
		else
			rc = evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name,
			                         (unsigned long long)cum);
	}
	if (rc >= 0)
		rc = evbuffer_add_printf(out, "%s_sum %.9g\n%s_count %llu\n", name,
		                         sum_f64(m, sum_off), name, (unsigned long long)cum);
	return rc < 0 ? -1 : 0;
}

static int render_labels(const struct pmetrics *m, struct evbuffer *out)
{
	if (m->n_labels == 0)
		return 0;
	int rc = evbuffer_add_printf(out, "# HELP predictor_predicted_label_total Predictions, by "
	                                  "predicted label.\n"
	                                  "# TYPE predictor_predicted_label_total counter\n");
	for (size_t i = 0; rc >= 0 && i < m->n_labels; i++)
		rc = evbuffer_add_printf(
		    out, "predictor_predicted_label_total{label=\"%zu\"} %llu\n", i,
		    (unsigned long long)sum_u64(m, offsetof(struct pm_shard, labels) +
		                                       i * sizeof(_Atomic uint64_t)));
	uint64_t other = sum_u64(m, offsetof(struct pm_shard, labels) +
	                                PMETRICS_MAX_LABELS * sizeof(_Atomic uint64_t));
	if (rc >= 0 && other)
		rc = evbuffer_add_printf(out,
		                         "predictor_predicted_label_total{label=\"other\"} %llu\n",
		                         (unsigned long long)other);
	return rc < 0 ? -1 : 0;
}

static int render_quality(const struct pmetrics *m, struct evbuffer *out)
{
	uint64_t rows = sum_u64(m, offsetof(struct pm_shard, conf_rows));
	double conf = rows ? sum_f64(m, offsetof(struct pm_shard, conf_sum)) / (double)rows : 0;
	int rc = evbuffer_add_printf(
	    out,
	    "# HELP predictor_mean_confidence Mean of the highest class probability over all "
	    "predictions since start (0 before the first).\n"
	    "# TYPE predictor_mean_confidence gauge\n"
	    "predictor_mean_confidence %.9g\n"
	    "# HELP predictor_inputs_total Input values received.\n"
	    "# TYPE predictor_inputs_total counter\n"
	    "predictor_inputs_total %llu\n"
	    "# HELP predictor_inputs_out_of_range_total Input values outside the training range "
	    "(--input-range).\n"
	    "# TYPE predictor_inputs_out_of_range_total counter\n"
	    "predictor_inputs_out_of_range_total %llu\n",
	    conf, (unsigned long long)sum_u64(m, offsetof(struct pm_shard, inputs_total)),
	    (unsigned long long)sum_u64(m, offsetof(struct pm_shard, inputs_out)));
	return rc < 0 ? -1 : 0;
}

int pmetrics_render(const struct pmetrics *m, struct evbuffer *out)
{
	if (render_requests(m, out) < 0 ||
	    render_histogram(m, out, "predictor_inference_duration_seconds",
	                     "Time to run the model on one request.", pm_dur_bounds, PM_N_DUR,
	                     offsetof(struct pm_shard, dur_buckets),
	                     offsetof(struct pm_shard, dur_sum)) < 0 ||
	    render_histogram(m, out, "predictor_batch_size", "Samples per infer request.",
	                     pm_batch_bounds, PM_N_BATCH, offsetof(struct pm_shard, batch_buckets),
	                     offsetof(struct pm_shard, batch_sum)) < 0 ||
	    render_labels(m, out) < 0 || render_quality(m, out) < 0)
		return -1;
	return 0;
}
