/*
 * pmetrics.h - the predictor's Prometheus metrics.
 *
 * One shard per worker thread; only the owning thread writes its shard
 * (relaxed atomic loads and stores, no locks, no read-modify-write on the
 * request path) and a scrape merges all shards on read. Label sets are
 * bounded: status codes from a fixed table, labels 0..n_labels-1 plus
 * "other".
 */
#ifndef TURNOUT_PMETRICS_H
#define TURNOUT_PMETRICS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct pmetrics;

#define PMETRICS_MAX_SHARDS 256
#define PMETRICS_MAX_LABELS 64

/*
 * New metrics with n_shards shards (1..PMETRICS_MAX_SHARDS) and predicted
 * labels 0..n_labels-1 (0 = the model has no label output; at most
 * PMETRICS_MAX_LABELS). Returns NULL on bad arguments or allocation failure.
 * Free with pmetrics_free.
 */
struct pmetrics *pmetrics_new(size_t n_shards, size_t n_labels);
/* Free. Accepts NULL. */
void pmetrics_free(struct pmetrics *m);

/* Count one answered request with HTTP status code on shard (owner thread only). */
void pmetrics_request(struct pmetrics *m, size_t shard, int code);
/* Record one model run: its duration and batch size. */
void pmetrics_inference(struct pmetrics *m, size_t shard, double seconds, int64_t batch);
/* Count n predicted labels (values outside 0..n_labels-1 count as "other"). */
void pmetrics_labels(struct pmetrics *m, size_t shard, const int64_t *labels, size_t n);
/* Add rows predictions whose max probabilities sum to sum_max_prob. */
void pmetrics_confidence(struct pmetrics *m, size_t shard, double sum_max_prob, uint64_t rows);
/* Add total input values seen, out_of_range of which were outside the training range. */
void pmetrics_inputs(struct pmetrics *m, size_t shard, uint64_t total, uint64_t out_of_range);

/* Total requests with this status code over all shards (tests, logs). */
uint64_t pmetrics_requests(const struct pmetrics *m, int code);

/*
 * Append the Prometheus text exposition (format 0.0.4) of all shards merged
 * to out. Returns 0, or -1 when out cannot grow.
 */
int pmetrics_render(const struct pmetrics *m, struct evbuffer *out);

#endif
