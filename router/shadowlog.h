/*
 * shadowlog.h - the disagreement log: one JSON line per shadow pair that did
 * not agree, written off the event loop.
 *
 * Workers format a line and hand it to a queue bounded in bytes; one writer
 * thread drains the queue to the file. A worker never waits for the disk:
 * when the queue is full the line is dropped and counted. Write errors (full
 * disk, EIO) are counted and reported to the error log at most once per
 * SHADOWLOG_REPORT_S seconds; the writer keeps going. Closing flushes what is
 * queued.
 *
 * A line (one JSON object; the value fields hold the JSON found at the path,
 * or a string with the cut text when it did not fit, or null when missing):
 *   {"time":"2026-11-23T17:20:01.123Z","request_id":"r1","live":"v1",
 *    "shadow":"v2","result":"disagree","where":"rule","rule":0,
 *    "path":"outputs[name=label].data","live_value":[3],"shadow_value":[5],
 *    "live_status":200,"shadow_status":200,"live_ms":1.2,"shadow_ms":3.4,
 *    "request_body":"...","request_body_bytes":1234,"request_body_truncated":true}
 * "error" is added for result "error"; the request_body fields are absent
 * when redact is set or no body was given.
 */
#ifndef TURNOUT_SHADOWLOG_H
#define TURNOUT_SHADOWLOG_H

#include <stddef.h>
#include <stdint.h>

#include "compare.h"

#define SHADOWLOG_REPORT_S   10         /* seconds between two error reports */
#define SHADOWLOG_ID_MAX     128        /* bytes of request id / variant name kept */
#define SHADOWLOG_BODY_LIMIT (1u << 20) /* hard cap on log_body_max */

struct shadowlog;

/* What one line says. Only outcome is required; strings may be NULL. */
struct shadowlog_entry {
	const char *request_id;
	const char *live_variant, *shadow_variant;
	int live_status, shadow_status;
	double live_ms, shadow_ms; /* latencies; < 0 = unknown (omitted) */
	const struct compare_outcome *outcome;
	const char *body;  /* the request body or its first bytes (not NUL-terminated), or NULL */
	size_t body_len;   /* bytes readable at body */
	size_t body_total; /* the whole request body's length; 0 = body_len */
};

struct shadowlog_counts {
	uint64_t written;      /* lines written to the file */
	uint64_t dropped;      /* lines refused because the queue was full */
	uint64_t write_errors; /* lines lost to a failed write */
	uint64_t queued_bytes; /* bytes waiting now */
};

/*
 * Open (create, append) the log at path and start its writer thread. body_max
 * is how many bytes of each request body a line keeps (capped at
 * SHADOWLOG_BODY_LIMIT); redact != 0 keeps none. queue_max is the queue's
 * bound in bytes (at least one line always fits). Returns the log (close with
 * shadowlog_close), or NULL with err filled ("shadow log PATH: why").
 */
struct shadowlog *shadowlog_open(const char *path, size_t body_max, int redact, size_t queue_max,
                                 char *err, size_t errlen);

/*
 * Format one line for e and queue it. Never blocks on I/O (takes a mutex for a
 * moment). Returns 0 when queued, -1 when dropped (queue full, or no memory);
 * drops are counted. Thread-safe.
 */
int shadowlog_write(struct shadowlog *log, const struct shadowlog_entry *e);

/* Ask the writer to reopen the file (after logrotate moved it). Thread-safe. */
void shadowlog_reopen(struct shadowlog *log);

/* Current counters. Thread-safe. */
void shadowlog_get_counts(struct shadowlog *log, struct shadowlog_counts *out);

/*
 * Format the line for e into a new NUL-terminated string ending in '\n' (caller
 * frees), with the given body limits; NULL when out of memory. Exposed for
 * tests and for callers that log elsewhere.
 */
char *shadowlog_format(const struct shadowlog_entry *e, size_t body_max, int redact, size_t *len);

/* Flush the queue, stop the writer, close the file, free. Accepts NULL. */
void shadowlog_close(struct shadowlog *log);

#endif
