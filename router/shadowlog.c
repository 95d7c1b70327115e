/*
 * shadowlog.c - the disagreement JSONL log (see shadowlog.h).
 *
 * The queue is a singly linked list of formatted lines guarded by one mutex;
 * its size in bytes (including lines the writer has taken but not yet
 * written) never exceeds queue_max, so memory stays bounded however slow the
 * disk is. The writer thread takes the whole list at once, writes it without
 * holding the lock, and wakes at least once a second to report drops and
 * write errors (at most once per SHADOWLOG_REPORT_S).
 */
#include "shadowlog.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

struct line {
	struct line *next;
	size_t len;
	char data[];
};

struct shadowlog {
	char *path;
	int fd;
	size_t body_max;
	int redact;
	size_t queue_max;

	pthread_mutex_t mu;
	pthread_cond_t cond;
	pthread_t thread;
	int thread_started;
	struct line *head, *tail;
	size_t bytes; /* queued + being written */
	int stop, reopen;
	struct shadowlog_counts counts;

	/* writer-thread only */
	uint64_t reported_drops, reported_errors;
	time_t last_report;
	int last_errno;
};

/* ---- formatting ----------------------------------------------------------- */

struct buf {
	char *p;
	size_t cap, len;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n >= b->cap)
		n = b->cap - 1 - b->len; /* cannot happen: the caller sized the buffer */
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void puts_(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void putf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->len += (size_t)n < b->cap - b->len ? (size_t)n : b->cap - 1 - b->len;
}

/* ,"key":"escaped s" with s cut to max bytes. */
static void put_str(struct buf *b, const char *key, const char *s, size_t len, size_t max)
{
	int t;
	putf(b, ",\"%s\":", key);
	b->len += compare_json_escape(b->p + b->len, b->cap - b->len, s ? s : "",
	                              len < max ? len : max, &t);
}

/* ,"key":value where v is JSON text, or a string when cut, or null when empty. */
static void put_value(struct buf *b, const char *key, const char *v, int truncated)
{
	if (!*v) {
		putf(b, ",\"%s\":null", key);
	} else if (truncated) {
		put_str(b, key, v, strlen(v), COMPARE_VALUE_MAX);
	} else {
		putf(b, ",\"%s\":", key);
		puts_(b, v);
	}
}

static const char *where_name(enum compare_where w)
{
	switch (w) {
	case COMPARE_WHERE_NONE:
		return "none";
	case COMPARE_WHERE_STATUS:
		return "status";
	case COMPARE_WHERE_BODY:
		return "body";
	case COMPARE_WHERE_RULE:
		return "rule";
	}
	return "?";
}

static void put_time(struct buf *b)
{
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	putf(b, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\"", tm.tm_year + 1900,
	     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	     (long)(tv.tv_usec / 1000));
}

static size_t slen(const char *s)
{
	return s ? strlen(s) : 0;
}

char *shadowlog_format(const struct shadowlog_entry *e, size_t body_max, int redact, size_t *len)
{
	const struct compare_outcome *o = e->outcome;
	if (body_max > SHADOWLOG_BODY_LIMIT)
		body_max = SHADOWLOG_BODY_LIMIT;
	size_t body = redact || !e->body ? 0 : (e->body_len < body_max ? e->body_len : body_max);
	/* every escaped byte takes at most 6 bytes; the rest is small and fixed */
	size_t cap = 1024 + 6 * (4 * SHADOWLOG_ID_MAX + COMPARE_PATH_MAX + sizeof(o->error) +
	                         2 * COMPARE_VALUE_MAX + body);
	struct buf b = {malloc(cap), cap, 0};
	if (!b.p)
		return NULL;
	b.p[0] = 0;
	put_time(&b);
	put_str(&b, "request_id", e->request_id, slen(e->request_id), SHADOWLOG_ID_MAX);
	put_str(&b, "live", e->live_variant, slen(e->live_variant), SHADOWLOG_ID_MAX);
	put_str(&b, "shadow", e->shadow_variant, slen(e->shadow_variant), SHADOWLOG_ID_MAX);
	putf(&b, ",\"result\":\"%s\",\"where\":\"%s\"", compare_result_name(o->result),
	     where_name(o->where));
	if (o->rule >= 0)
		putf(&b, ",\"rule\":%d", o->rule);
	put_str(&b, "path", o->path, strlen(o->path), COMPARE_PATH_MAX);
	put_value(&b, "live_value", o->live_value, o->live_truncated);
	put_value(&b, "shadow_value", o->shadow_value, o->shadow_truncated);
	putf(&b, ",\"live_status\":%d,\"shadow_status\":%d", e->live_status, e->shadow_status);
	if (e->live_ms >= 0)
		putf(&b, ",\"live_ms\":%.3f", e->live_ms);
	if (e->shadow_ms >= 0)
		putf(&b, ",\"shadow_ms\":%.3f", e->shadow_ms);
	if (o->result == COMPARE_ERROR)
		put_str(&b, "error", o->error, strlen(o->error), sizeof(o->error));
	if (!redact && e->body) {
		put_str(&b, "request_body", e->body, body, body);
		size_t total = e->body_total > e->body_len ? e->body_total : e->body_len;
		putf(&b, ",\"request_body_bytes\":%zu,\"request_body_truncated\":%s", total,
		     total > body ? "true" : "false");
	}
	puts_(&b, "}\n");
	*len = b.len;
	return b.p;
}

/* ---- writer thread -------------------------------------------------------- */

static int open_file(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0 && err)
		snprintf(err, errlen, "shadow log %s: %s", path, strerror(errno));
	return fd;
}

/* Write all of s; returns 0 or an errno. */
static int write_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno;
		if (w == 0)
			return EIO;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Report new drops and write errors, at most once per interval (or when forced). */
static void report(struct shadowlog *l, int force)
{
	time_t now = time(NULL);
	if (!force && l->last_report && now - l->last_report < SHADOWLOG_REPORT_S)
		return;
	pthread_mutex_lock(&l->mu);
	uint64_t drops = l->counts.dropped, errors = l->counts.write_errors;
	pthread_mutex_unlock(&l->mu);
	if (drops == l->reported_drops && errors == l->reported_errors)
		return;
	if (errors != l->reported_errors)
		log_warn("shadow log %s: %llu line(s) not written: %s", l->path,
		         (unsigned long long)(errors - l->reported_errors),
		         strerror(l->last_errno));
	if (drops != l->reported_drops)
		log_warn("shadow log %s: %llu line(s) dropped: the queue was full", l->path,
		         (unsigned long long)(drops - l->reported_drops));
	l->reported_drops = drops;
	l->reported_errors = errors;
	l->last_report = now;
}

static void do_reopen(struct shadowlog *l)
{
	char err[256];
	int fd = open_file(l->path, err, sizeof(err));
	if (fd < 0) {
		log_warn("%s (keeping the old file)", err);
		return;
	}
	close(l->fd);
	l->fd = fd;
}

/* Write a batch taken from the queue, free it, and account for it. */
static void write_batch(struct shadowlog *l, struct line *batch)
{
	uint64_t ok = 0, bad = 0;
	size_t bytes = 0;
	while (batch) {
		struct line *next = batch->next;
		int e = write_all(l->fd, batch->data, batch->len);
		if (e) {
			bad++;
			l->last_errno = e;
		} else {
			ok++;
		}
		bytes += batch->len;
		free(batch);
		batch = next;
	}
	pthread_mutex_lock(&l->mu);
	l->bytes -= bytes;
	l->counts.written += ok;
	l->counts.write_errors += bad;
	pthread_mutex_unlock(&l->mu);
}

static void *on_writer(void *arg)
{
	struct shadowlog *l = arg;
	for (;;) {
		pthread_mutex_lock(&l->mu);
		if (!l->head && !l->stop && !l->reopen) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&l->cond, &l->mu, &ts);
		}
		struct line *batch = l->head;
		l->head = l->tail = NULL;
		int stop = l->stop, reopen = l->reopen;
		l->reopen = 0;
		pthread_mutex_unlock(&l->mu);
		if (reopen)
			do_reopen(l);
		if (batch)
			write_batch(l, batch);
		report(l, 0);
		if (stop && !batch)
			break;
	}
	report(l, 1);
	return NULL;
}

/* ---- public --------------------------------------------------------------- */

struct shadowlog *shadowlog_open(const char *path, size_t body_max, int redact, size_t queue_max,
                                 char *err, size_t errlen)
{
	struct shadowlog *l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(err, errlen, "shadow log: out of memory");
		return NULL;
	}
	l->fd = -1;
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cond, NULL);
	l->path = strdup(path ? path : "");
	if (!l->path) {
		snprintf(err, errlen, "shadow log: out of memory");
		goto fail;
	}
	l->body_max = body_max > SHADOWLOG_BODY_LIMIT ? SHADOWLOG_BODY_LIMIT : body_max;
	l->redact = redact;
	l->queue_max = queue_max;
	l->fd = open_file(path, err, errlen);
	if (l->fd < 0)
		goto fail;
	int rc = pthread_create(&l->thread, NULL, on_writer, l);
	if (rc) {
		snprintf(err, errlen, "shadow log %s: cannot start writer: %s", path, strerror(rc));
		goto fail;
	}
	l->thread_started = 1;
	return l;
fail:
	shadowlog_close(l);
	return NULL;
}

int shadowlog_write(struct shadowlog *l, const struct shadowlog_entry *e)
{
	size_t len;
	char *text = shadowlog_format(e, l->body_max, l->redact, &len);
	struct line *ln = text ? malloc(sizeof(*ln) + len) : NULL;
	if (ln) {
		ln->next = NULL;
		ln->len = len;
		memcpy(ln->data, text, len);
	}
	free(text);
	pthread_mutex_lock(&l->mu);
	/* an empty queue always takes one line, so a small cap cannot block all lines */
	if (!ln || (l->bytes && l->bytes + len > l->queue_max) || l->stop) {
		l->counts.dropped++;
		pthread_mutex_unlock(&l->mu);
		free(ln);
		return -1;
	}
	if (l->tail)
		l->tail->next = ln;
	else
		l->head = ln;
	l->tail = ln;
	l->bytes += len;
	pthread_cond_signal(&l->cond);
	pthread_mutex_unlock(&l->mu);
	return 0;
}

void shadowlog_reopen(struct shadowlog *l)
{
	pthread_mutex_lock(&l->mu);
	l->reopen = 1;
	pthread_cond_signal(&l->cond);
	pthread_mutex_unlock(&l->mu);
}

void shadowlog_get_counts(struct shadowlog *l, struct shadowlog_counts *out)
{
	pthread_mutex_lock(&l->mu);
	*out = l->counts;
	out->queued_bytes = l->bytes;
	pthread_mutex_unlock(&l->mu);
}

void shadowlog_close(struct shadowlog *l)
{
	if (!l)
		return;
	if (l->thread_started) {
		pthread_mutex_lock(&l->mu);
		l->stop = 1;
		pthread_cond_signal(&l->cond);
		pthread_mutex_unlock(&l->mu);
		pthread_join(l->thread, NULL);
	}
	while (l->head) { /* only if the thread never ran */
		struct line *n = l->head->next;
		free(l->head);
		l->head = n;
	}
	if (l->fd >= 0)
		close(l->fd);
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->mu);
	free(l->path);
	free(l);
}
