/*
 * accesslog.h - the access log: one JSON line per answered client request
 * (time, request id, client, method, path, live variant, status, latency,
 * bytes, upstream endpoint, shadow).
 *
 * Workers never write to the file: a line is formatted on the worker's stack
 * and copied into that thread's own bounded queue (ACCESSLOG_THREAD_QUEUE_MAX
 * bytes; a line that does not fit is dropped and counted). A writer thread
 * takes every queue over and writes it, at least every ACCESSLOG_FLUSH_MS
 * (sooner when a queue is half full). A failed write
 * (full disk) loses those lines, is counted, and is reported at most once per
 * ACCESSLOG_REPORT_S; it is never fatal. accesslog_reopen (SIGUSR1, after
 * logrotate moved the file) makes the writer open the path again.
 *
 * One access log per process (a global, set up by main before the workers start).
 */
#ifndef TURNOUT_ACCESSLOG_H
#define TURNOUT_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

#define ACCESSLOG_THREAD_QUEUE_MAX (2u * 1024 * 1024) /* per writing thread, then drops */
#define ACCESSLOG_THREADS_MAX      256                /* writing threads with a queue */
#define ACCESSLOG_LINE_MAX         4096               /* one line; longer fields are truncated */
#define ACCESSLOG_FIELD_MAX        1024               /* bytes kept of the path and other strings */
#define ACCESSLOG_FLUSH_MS         200
#define ACCESSLOG_REPORT_S         10

/* One answered request (all borrowed for the call; NULL strings are written as null). */
struct accesslog_entry {
	const char *request_id;
	const char *client;
	const char *method;
	const char *path;
	const char *variant;
	const char *endpoint;
	const char *shadow;
	int status;
	uint64_t latency_us;
	uint64_t bytes; /* response body bytes sent */
};

struct accesslog_counters {
	uint64_t written;      /* lines written */
	uint64_t dropped;      /* lines dropped: queue full */
	uint64_t write_failed; /* lines lost: the write failed */
};

/*
 * Start the access log: spec NULL or "off" = none (returns 0), "stderr", or
 * a file path (opened for append, created 0640). Returns 0, or -1 with the
 * reason in err (cannot open the file, cannot start the thread, already
 * open). Main thread, before the workers start.
 */
int accesslog_open(const char *spec, char *err, size_t errlen);

/* Write what is queued, stop the writer thread, close. No-op when not open. Main thread. */
void accesslog_close(void);

/* Whether an access log is open (cheap; any thread). */
int accesslog_enabled(void);

/* Queue one line (any thread; never blocks on I/O). No-op when not open. */
void accesslog_write(const struct accesslog_entry *e);

/* Ask the writer to reopen the file (logrotate). Any thread, returns at once. */
void accesslog_reopen(void);

/* Wait until everything queued so far is written (tests). No-op when not open. */
void accesslog_flush(void);

/* The counters since start (zeros when never opened). Any thread. */
void accesslog_get_counters(struct accesslog_counters *out);

/*
 * Format e as one JSON line ending in '\n' into out (outlen >= 2). Returns
 * the length; field contents are truncated (the path first) so the line
 * always fits and stays valid JSON. Below 384 bytes of outlen the line is
 * only "\n".
 */
size_t accesslog_format(const struct accesslog_entry *e, int64_t t_ms, char *out, size_t outlen);

#endif
