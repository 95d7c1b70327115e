/*
 * stats.c - per-worker statistics shards, merged on read, and the log-linear
 * latency histogram behind the quantiles in /status and /metrics.
 *
 * Single writer per shard: the owning worker updates a counter with a relaxed
 * load and store (no atomic read-modify-write, no lock); readers load each
 * counter atomically and add the shards up.
 */
#include "stats.h"

#include <stdlib.h>
#include <string.h>

struct stats_slot_counters {
	_Atomic uint64_t status[6];
	_Atomic uint64_t errors[STATS_ERR_N];
	_Atomic uint64_t hist[STATS_HIST_BUCKETS];
	_Atomic uint64_t total;
	_Atomic uint64_t sum;
	_Atomic uint64_t max;
};

struct stats_shard {
	struct stats_slot_counters slots[STATS_MAX_SLOTS];
	_Atomic uint64_t gauges[STATS_GAUGE_N]; /* observability: in-flight, connections */
};

struct stats {
	struct stats_shard **shards;
	size_t n_shards;
};

/* Slot names: written by the main thread only, published by the count. */
static char slot_names[STATS_MAX_SLOTS][STATS_NAME_MAX];
static atomic_int n_slots;

size_t stats_hist_bucket(uint64_t v)
{
	if (v < STATS_HIST_SUB)
		return (size_t)v;
	if (v >= (1ull << STATS_HIST_MAX_EXP))
		v = (1ull << STATS_HIST_MAX_EXP) - 1;
	unsigned k = 63u - (unsigned)__builtin_clzll(v); /* k >= SUB_BITS */
	unsigned shift = k - STATS_HIST_SUB_BITS;
	uint64_t sub = v >> shift; /* in [SUB, 2*SUB) */
	return STATS_HIST_SUB + (size_t)shift * STATS_HIST_SUB + (size_t)(sub - STATS_HIST_SUB);
}

uint64_t stats_hist_bucket_value(size_t b)
{
	if (b < STATS_HIST_SUB)
		return b;
	size_t shift = (b - STATS_HIST_SUB) / STATS_HIST_SUB;
	uint64_t sub = (b - STATS_HIST_SUB) % STATS_HIST_SUB + STATS_HIST_SUB;
	uint64_t low = sub << shift;
	uint64_t width = 1ull << shift;
	return low + (width - 1) / 2;
}

void stats_hist_add(struct stats_hist *h, uint64_t v)
{
	h->counts[stats_hist_bucket(v)]++;
	h->total++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

uint64_t stats_hist_quantile(const struct stats_hist *h, double q)
{
	if (h->total == 0)
		return 0;
	if (q > 1)
		q = 1;
	/* The rank of the q-quantile in 1..total (nearest-rank definition). */
	uint64_t rank = (uint64_t)(q * (double)h->total);
	if ((double)rank < q * (double)h->total)
		rank++;
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (size_t b = 0; b < STATS_HIST_BUCKETS; b++) {
		seen += h->counts[b];
		if (seen >= rank) {
			uint64_t v = stats_hist_bucket_value(b);
			return v > h->max ? h->max : v;
		}
	}
	return h->max;
}

int stats_slot(const char *name)
{
	int n = atomic_load(&n_slots);
	for (int i = 0; i < n; i++)
		if (strncmp(slot_names[i], name, STATS_NAME_MAX - 1) == 0)
			return i;
	if (n >= STATS_MAX_SLOTS)
		return -1;
	strncpy(slot_names[n], name, STATS_NAME_MAX - 1);
	slot_names[n][STATS_NAME_MAX - 1] = '\0';
	atomic_store(&n_slots, n + 1);
	return n;
}

int stats_n_slots(void)
{
	return atomic_load(&n_slots);
}

/* observability: slot names label /metrics and the dashboard's series. */
const char *stats_slot_name(int slot)
{
	return slot >= 0 && slot < stats_n_slots() ? slot_names[slot] : "";
}

void stats_slots_reset(void)
{
	atomic_store(&n_slots, 0);
	memset(slot_names, 0, sizeof(slot_names));
}

struct stats *stats_new(size_t n_shards)
{
	struct stats *st = calloc(1, sizeof(*st));
	if (st == NULL)
		goto fail;
	st->shards = calloc(n_shards ? n_shards : 1, sizeof(*st->shards));
	if (st->shards == NULL)
		goto fail;
	for (size_t i = 0; i < n_shards; i++) {
		st->shards[i] = calloc(1, sizeof(struct stats_shard));
		if (st->shards[i] == NULL)
			goto fail;
		st->n_shards++;
	}
	return st;
fail:
	stats_free(st);
	return NULL;
}

void stats_free(struct stats *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < st->n_shards; i++)
		free(st->shards[i]);
	free(st->shards);
	free(st);
}

struct stats_shard *stats_shard(struct stats *st, size_t i)
{
	return i < st->n_shards ? st->shards[i] : NULL;
}

/* Single-writer increment: no RMW needed, readers see either value. */
static void bump(_Atomic uint64_t *c, uint64_t by)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
	                      memory_order_relaxed);
}

void stats_record(struct stats_shard *sh, int slot, int status, uint64_t latency_us)
{
	if (sh == NULL || slot < 0 || slot >= STATS_MAX_SLOTS)
		return;
	struct stats_slot_counters *c = &sh->slots[slot];
	int cls = status / 100;
	bump(&c->status[cls >= 1 && cls <= 5 ? cls : 0], 1);
	bump(&c->hist[stats_hist_bucket(latency_us)], 1);
	bump(&c->total, 1);
	bump(&c->sum, latency_us);
	if (latency_us > atomic_load_explicit(&c->max, memory_order_relaxed))
		atomic_store_explicit(&c->max, latency_us, memory_order_relaxed);
}

void stats_error(struct stats_shard *sh, int slot, enum stats_err cause)
{
	if (sh == NULL || slot < 0 || slot >= STATS_MAX_SLOTS || cause >= STATS_ERR_N)
		return;
	bump(&sh->slots[slot].errors[cause], 1);
}

static uint64_t ld(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

void stats_merge(struct stats *st, int slot, struct stats_variant *out)
{
	memset(out, 0, sizeof(*out));
	if (slot < 0 || slot >= stats_n_slots())
		return;
	strncpy(out->name, slot_names[slot], STATS_NAME_MAX - 1);
	for (size_t i = 0; i < st->n_shards; i++) {
		struct stats_slot_counters *c = &st->shards[i]->slots[slot];
		for (size_t k = 0; k < 6; k++)
			out->status[k] += ld(&c->status[k]);
		for (size_t k = 0; k < STATS_ERR_N; k++)
			out->errors[k] += ld(&c->errors[k]);
		uint64_t total = 0;
		for (size_t b = 0; b < STATS_HIST_BUCKETS; b++) {
			uint64_t n = ld(&c->hist[b]);
			out->hist.counts[b] += n;
			total += n;
		}
		/* Count what was summed, so quantile ranks match the buckets read. */
		out->hist.total += total;
		out->hist.sum += ld(&c->sum);
		uint64_t m = ld(&c->max);
		if (m > out->hist.max)
			out->hist.max = m;
	}
}

/* observability: gauges for /metrics (process: in-flight requests, open connections). */
void stats_gauge_set(struct stats_shard *sh, enum stats_gauge g, uint64_t value)
{
	if (sh != NULL && g < STATS_GAUGE_N)
		atomic_store_explicit(&sh->gauges[g], value, memory_order_relaxed);
}

uint64_t stats_gauge_sum(struct stats *st, enum stats_gauge g)
{
	uint64_t sum = 0;
	for (size_t i = 0; st != NULL && g < STATS_GAUGE_N && i < st->n_shards; i++)
		sum += ld(&st->shards[i]->gauges[g]);
	return sum;
}

const char *stats_err_name(enum stats_err e)
{
	static const char *const names[STATS_ERR_N] = {"connect", "reset", "timeout", "protocol"};
	return e < STATS_ERR_N ? names[e] : "unknown";
}
