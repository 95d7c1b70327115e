/*
 * shadow.h - shadow mode: mirror live requests to the candidate, compare the
 * two answers, count agreement, log disagreements.
 *
 * The mirror is sent after the live answer is complete, with its own copy of
 * the request body and headers (X-Forwarded-For and X-Forwarded-Host as the
 * live request got them; upstream_tls as for live traffic),
 * "X-Turnout-Shadow: 1", its own timeout (shadow.timeout) and a per-worker
 * budget: at most shadow.max_inflight mirrors in flight and as many more
 * waiting for a slot, holding at most SHADOW_INFLIGHT_BYTES_MAX bytes. The
 * client's answer never waits for it: proxy.c's SHADOW HOOK
 * (on the worker's thread) only samples, copies once and hands the copy to
 * the worker's shadow thread, which has its own event loop and upstream
 * engine and does the transfer, the comparison, the disagreement log and the
 * shadow counters. A mirror that does not fit the budget is dropped and
 * counted with its reason (and as a comparison error); the hand-over queue is
 * bounded by the same budget.
 *
 * Sampling: shadow.percent of live requests whose live pick was not the
 * candidate. With a sticky key (header or cookie) the draw is sticky on that
 * key, with a hash independent of the canary's (salt + "/shadow"), so that the
 * shadowed users are not the canary users; otherwise it is random.
 *
 * Counters live in per-worker shards, two per worker (one written only by the
 * worker's thread, one only by its shadow thread), merged on read
 * (shadow_merge, shadow_status_json), per candidate variant, keyed by the
 * variant's stats slot (stats.h).
 */
#ifndef TURNOUT_SHADOW_H
#define TURNOUT_SHADOW_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "compare.h"
#include "config.h"
#include "stats.h"

struct proxy_live;
struct worker;
struct route_snapshot;

#define SHADOW_INFLIGHT_BYTES_MAX (64u * 1024 * 1024) /* per worker: held by mirrors */
#define SHADOW_LOG_QUEUE_MAX      (8u * 1024 * 1024)  /* disagreement log queue bound */
#define SHADOW_LOGS_MAX           8                   /* shadow.log paths per process life */

/* Why a mirror was not sent. */
enum shadow_drop {
	SHADOW_DROP_BUDGET,      /* shadow.max_inflight mirrors already in flight */
	SHADOW_DROP_BYTES,       /* SHADOW_INFLIGHT_BYTES_MAX would be exceeded */
	SHADOW_DROP_NO_ENDPOINT, /* the candidate has no healthy endpoint */
	SHADOW_DROP_INTERNAL,    /* out of memory, or the transfer could not start */
	SHADOW_DROP_N,
};

/* Why a pair counted as an error. */
enum shadow_cause {
	SHADOW_CAUSE_FAILED,  /* connect, reset, protocol error of the shadow */
	SHADOW_CAUSE_TIMEOUT, /* the shadow did not answer within shadow.timeout */
	SHADOW_CAUSE_DROPPED, /* the mirror was dropped (see enum shadow_drop) */
	SHADOW_CAUSE_INVALID, /* an answer could not be compared (not JSON, too big, ...) */
	SHADOW_CAUSE_N,
};

/* Merged counters of one candidate variant. */
struct shadow_variant_stats {
	uint64_t mirrored;                    /* mirrors sent */
	uint64_t dropped[SHADOW_DROP_N];      /* mirrors not sent, by reason */
	uint64_t results[3];                  /* by enum compare_result */
	uint64_t causes[SHADOW_CAUSE_N];      /* errors by cause */
	uint64_t rules[CONFIG_MAX_RULES][3];  /* per rule index, by enum compare_result */
	struct stats_hist latency;            /* shadow answer latency, us */
	struct stats_hist diff_pos, diff_neg; /* candidate - live latency, us: >= 0 and < 0 */
};

/*
 * The SHADOW HOOK: called by proxy.c on the worker's thread when a live
 * exchange completed, before the live reply is sent. Decides whether to
 * mirror, and if so copies what it needs and hands it to the worker's shadow
 * thread (started on the first mirror). Never waits (the hand-over lock is
 * held for a list append), never alters live (its response body is only
 * copied). Returns what happened, for the access log: -1 not sampled (or no
 * candidate), SHADOW_DROP_N handed over ("mirrored"), else the enum
 * shadow_drop reason it was dropped for.
 */
int shadow_after_live(const struct proxy_live *live);

/*
 * Stop w's shadow thread (its in-flight mirrors are cancelled, never waited
 * for) and free w's shadow state, queued mirrors included. Called from
 * worker_free, after the worker's thread ended (nothing is handed over any
 * more). When the last worker's state goes, the disagreement log is flushed
 * and closed. Accepts a worker without shadow state.
 */
void shadow_worker_free(struct worker *w);

/*
 * Reopen every disagreement log (after logrotate moved it): for the SIGUSR1
 * handler of main. Any thread; the writer threads do the reopening.
 */
void shadow_log_reopen(void);

/* Merge every worker's counters for a stats slot into *out (overwritten). Any thread. */
void shadow_merge(int slot, struct shadow_variant_stats *out);

/*
 * The "shadow" object of /status for snapshot s (rule paths and variant names
 * from s): per candidate-capable variant its counters, agreement rate, per-rule
 * counts, latency quantiles, and the disagreement log's counters. New
 * reference; NULL on allocation failure. Any thread.
 */
json_t *shadow_status_json(const struct route_snapshot *s);

/* "budget", "bytes", "no_endpoint", "internal". */
const char *shadow_drop_name(enum shadow_drop d);
/* "failed", "timeout", "dropped", "invalid". */
const char *shadow_cause_name(enum shadow_cause c);

/*
 * The q-quantile of the latency difference (candidate - live) in us, signed,
 * from the two halves in st; 0 when empty.
 */
int64_t shadow_diff_quantile(const struct shadow_variant_stats *st, double q);

#endif
