/*
 * stats.h - per-worker statistics shards and log-linear latency histograms.
 *
 * Each worker owns one shard and is its only writer; readers (the admin
 * thread) merge all shards on read. Counters are relaxed atomics written with
 * plain load+store by the single owner, so the request path takes no lock and
 * does no read-modify-write on shared lines.
 *
 * Variants are identified by a "slot": a small integer registered by name on
 * the main thread (stats_slot), so counters survive reloads that reorder or
 * add variants.
 *
 * The histogram is HdrHistogram-like: values (microseconds) below 128 have
 * exact buckets; above, each power of two is split into 128 linear sub-buckets,
 * so a reported quantile is within 1/256 of the true value (< 1%).
 */
#ifndef TURNOUT_STATS_H
#define TURNOUT_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define STATS_MAX_SLOTS     64
#define STATS_NAME_MAX      64
#define STATS_HIST_SUB_BITS 7
#define STATS_HIST_SUB      (1u << STATS_HIST_SUB_BITS) /* 128 */
#define STATS_HIST_MAX_EXP  40                          /* values up to 2^40 us (~12 days) */
#define STATS_HIST_BUCKETS                                                                         \
	(STATS_HIST_SUB + (STATS_HIST_MAX_EXP - STATS_HIST_SUB_BITS) * STATS_HIST_SUB)

enum stats_err {
	STATS_ERR_CONNECT,
	STATS_ERR_RESET,
	STATS_ERR_TIMEOUT,
	STATS_ERR_PROTOCOL,
	STATS_ERR_N,
};

/* A plain (non-atomic) histogram: the merged view, and what unit tests use. */
struct stats_hist {
	uint64_t counts[STATS_HIST_BUCKETS];
	uint64_t total;
	uint64_t sum;
	uint64_t max;
};

/* Merged counters of one variant. */
struct stats_variant {
	char name[STATS_NAME_MAX];
	uint64_t status[6]; /* [0] = unknown/other, [1..5] = 1xx..5xx */
	uint64_t errors[STATS_ERR_N];
	struct stats_hist hist;
};

/* observability: per-worker gauges (set by the owning worker, summed on read). */
enum stats_gauge {
	STATS_GAUGE_INFLIGHT, /* live requests being proxied */
	STATS_GAUGE_CONNS,    /* open client connections */
	STATS_GAUGE_N,
};

struct stats_shard;
struct stats;

/* Bucket index of a value, and the representative value of a bucket (its midpoint). */
size_t stats_hist_bucket(uint64_t v);
uint64_t stats_hist_bucket_value(size_t b);
void stats_hist_add(struct stats_hist *h, uint64_t v);
/* The q-quantile (0 < q <= 1) of h; 0 when h is empty. */
uint64_t stats_hist_quantile(const struct stats_hist *h, double q);

/*
 * The slot for a variant name, registering it if new. Returns -1 when the
 * table (STATS_MAX_SLOTS) is full. Main thread only.
 */
int stats_slot(const char *name);
/* Number of registered slots (any thread). */
int stats_n_slots(void);
/* observability: the name of a registered slot, "" when out of range. Any thread. */
const char *stats_slot_name(int slot);
/* Forget all slots (at exit, after every shard is freed). */
void stats_slots_reset(void);

/* n_shards shards (one per worker). Returns NULL on allocation failure. Free with stats_free. */
struct stats *stats_new(size_t n_shards);
void stats_free(struct stats *st);
struct stats_shard *stats_shard(struct stats *st, size_t i);

/* Record one answered request of a variant slot: HTTP status and latency. Owner worker only. */
void stats_record(struct stats_shard *sh, int slot, int status, uint64_t latency_us);
/* Record one upstream error of a variant slot. Owner worker only. */
void stats_error(struct stats_shard *sh, int slot, enum stats_err cause);

/*
 * Merge every shard's counters for slot into *out (overwritten). Any thread;
 * the result is a consistent-enough view (each counter read atomically).
 */
void stats_merge(struct stats *st, int slot, struct stats_variant *out);

/* observability: set a gauge of the owner's shard to value. Owner worker only; sh may be NULL. */
void stats_gauge_set(struct stats_shard *sh, enum stats_gauge g, uint64_t value);
/* observability: the sum of gauge g over every shard. Any thread. */
uint64_t stats_gauge_sum(struct stats *st, enum stats_gauge g);

/* "connect", "reset", "timeout", "protocol". */
const char *stats_err_name(enum stats_err e);

#endif
