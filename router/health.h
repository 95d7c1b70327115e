/*
 * health.h - endpoint health: active checks from the main thread, passive
 * ejection from the workers' live traffic.
 *
 * Active: every health.interval the main thread sends GET <endpoint><path>
 * (libcurl multi on the main event_base, health.timeout each); an endpoint is
 * marked down after health.unhealthy_threshold failed probes in a row and up
 * again after health.healthy_threshold good ones (2xx = good).
 *
 * Passive: a worker that sees a connect failure or a 5xx from an endpoint
 * bumps that endpoint's consecutive-failure counter in the route snapshot
 * (relaxed atomics, no locks); at health.unhealthy_threshold it clears the
 * endpoint's healthy flag itself, so no further live request goes there. The
 * main thread notices, keeps it out for a back-off period (HEALTH_BACKOFF_MIN_MS,
 * doubling per ejection up to HEALTH_BACKOFF_MAX_MS), then lets it back in.
 *
 * An endpoint takes live traffic only when it is up (active) and not ejected
 * (passive). The health flags live in the route snapshot (route.h); the
 * checker's own bookkeeping survives snapshot changes (matched by variant name
 * and url).
 */
#ifndef TURNOUT_HEALTH_H
#define TURNOUT_HEALTH_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct route_snapshot;
struct health;

#define HEALTH_TICK_MS        100u          /* the main thread's bookkeeping period */
#define HEALTH_BACKOFF_MAX_MS 30000u        /* longest passive ejection */
#define HEALTH_BACKOFF_MIN_MS 1000u         /* the first passive ejection */
#define HEALTH_BACKOFF_RESET  60000u        /* an endpoint not ejected for this long starts over */
#define HEALTH_MAX_RESPONSE   (64u * 1024u) /* a probe's answer body is cut here */

/*
 * Start health checks on base (the main thread's loop): a periodic tick that
 * follows the current route snapshot (route_acquire) and probes its
 * endpoints. Returns NULL with a reason in err. Free with health_free on the
 * same thread.
 */
struct health *health_new(struct event_base *base, char *err, size_t errlen);

/* Stop every probe (no callbacks) and free. Accepts NULL. Main thread only. */
void health_free(struct health *h);

/*
 * Worker side, lock-free: report the outcome of one live exchange with
 * endpoint e of variant v of snapshot s. failed = 1 for a connect failure or a
 * 5xx answer, 0 for any other answer (errors other than connect are not
 * reported: they say little about the endpoint, and a retry never follows
 * them). Returns 1 when this report ejected the endpoint (cleared its flag), 0
 * otherwise. Does nothing when health checks are disabled in s's config.
 */
int health_passive_report(struct route_snapshot *s, size_t v, size_t e, int failed);

/* Up/down bookkeeping of one endpoint's active probes. */
struct health_counts {
	uint32_t ok_run;   /* good probes in a row */
	uint32_t fail_run; /* failed probes in a row */
	int up;            /* the active verdict */
};

/*
 * Count one probe outcome (ok = 1 for a 2xx answer). Returns 1 when c->up
 * changed (down after unhealthy_threshold failures in a row, up after
 * healthy_threshold successes in a row), else 0. Thresholds of 0 count as 1.
 */
int health_count(struct health_counts *c, int ok, uint32_t healthy_threshold,
                 uint32_t unhealthy_threshold);

/*
 * The next passive back-off after one of prev_ms (0 = first ejection):
 * HEALTH_BACKOFF_MIN_MS first, then doubling, never above HEALTH_BACKOFF_MAX_MS.
 * An endpoint not ejected for HEALTH_BACKOFF_RESET ms starts over.
 */
uint32_t health_backoff_ms(uint32_t prev_ms);

#endif
