/*
 * accesslog.c - JSON-lines access log with a writer thread (see accesslog.h).
 *
 * The hot path (accesslog_write, on a worker) formats the line on its stack
 * and appends it to its own thread's queue (registered on the thread's first
 * line), whose mutex only that thread and the writer take, for a memcpy or a
 * pointer swap: workers never contend with each other. The writer thread
 * swaps each queue's buffer with its spare and writes outside any lock, so a
 * slow or failing disk never stalls a worker: its queue fills, lines are
 * dropped and counted.
 */
#include "accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* One writing thread's queue: that thread and the writer take its lock, nobody else. */
struct tqueue {
	pthread_mutex_t lock;
	char *buf; /* ACCESSLOG_THREAD_QUEUE_MAX */
	size_t len;
	struct tqueue *next; /* set once, before the queue is published */
};

struct accesslog {
	char *path; /* NULL = stderr */
	int fd;
	uint64_t gen; /* which open this is: thread queues of an older one are stale */
	pthread_t thread;
	pthread_mutex_t lock; /* the queue list, the flags and the pass counters */
	pthread_cond_t wake;  /* writer: work, reopen or stop */
	pthread_cond_t idle;  /* flushers: a pass ended */
	struct tqueue *queues;
	size_t n_queues;
	char *stage; /* the writer's buffer, swapped with a full queue's */
	uint64_t pass_wanted, pass_done;
	int stop, reopen;
	time_t last_report;
	uint64_t unreported; /* failed lines since the last report */
};

static struct accesslog *the_log;
static atomic_int enabled;
static _Atomic uint64_t n_written, n_dropped, n_failed;
static uint64_t n_opens; /* main thread */
static _Thread_local struct tqueue *my_queue;
static _Thread_local uint64_t my_gen;

/*
 * A JSON string (or null) at *p. The content stops before stop (a long or
 * heavily escaped field is cut, never the line's structure); the quotes or
 * "null" are always written: the caller keeps room for them past stop.
 */
static void json_str(char **p, const char *stop, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	char *o = *p;
	if (s == NULL) {
		memcpy(o, "null", 4);
		*p = o + 4;
		return;
	}
	*o++ = '"';
	size_t n = 0;
	for (; *s && n < ACCESSLOG_FIELD_MAX && stop - o > 8; s++, n++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			*o++ = '\\';
			*o++ = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			/* bytes above ASCII too: the line stays valid JSON whatever the client sent
			 */
			memcpy(o, "\\u00", 4);
			o[4] = hex[c >> 4];
			o[5] = hex[c & 15];
			o += 6;
		} else {
			*o++ = (char)c;
		}
	}
	*o++ = '"';
	*p = o;
}

/* The bytes json_str writes for s when nothing stops it. */
static size_t json_str_len(const char *s)
{
	if (s == NULL)
		return 4;
	size_t len = 2;
	for (size_t n = 0; s[n] && n < ACCESSLOG_FIELD_MAX; n++) {
		unsigned char c = (unsigned char)s[n];
		len += c == '"' || c == '\\' ? 2 : c < 0x20 || c >= 0x7f ? 6 : 1;
	}
	return len;
}

static void put(char **p, char *end, const char *s)
{
	size_t n = strlen(s);
	if ((size_t)(end - *p) > n) {
		memcpy(*p, s, n);
		*p += n;
	}
}

/* Bytes kept back: for the numbers and "}\n", and for the keys and quotes of every field. */
#define TAIL_NUMBERS 160
#define TAIL_FIELDS  160

size_t accesslog_format(const struct accesslog_entry *e, int64_t t_ms, char *out, size_t outlen)
{
	char num[160], stamp[40];
	if (outlen < TAIL_NUMBERS + TAIL_FIELDS + 64) { /* only with a tiny outlen */
		if (outlen > 0)
			out[0] = outlen > 1 ? '\n' : '\0';
		if (outlen > 1)
			out[1] = '\0';
		return outlen > 1 ? 1 : 0;
	}
	time_t secs = (time_t)(t_ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	size_t k = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + k, sizeof(stamp) - k, ".%03dZ", (int)(t_ms % 1000));
	char *p = out, *end = out + outlen - TAIL_NUMBERS;
	const char *stop = end - TAIL_FIELDS; /* where field contents stop */
	/* the path (the client's, and long) is cut first: the fields after it stay whole
	 * (their keys, contents, and json_str's slack of 8 each) */
	size_t later = sizeof(",\"variant\":,\"endpoint\":,\"shadow\":") +
	               json_str_len(e->variant) + json_str_len(e->endpoint) +
	               json_str_len(e->shadow) + 3 * 8;
	const char *path_stop = later < (size_t)(stop - out) ? stop - later : out;
	put(&p, end, "{\"time\":\"");
	put(&p, end, stamp);
	put(&p, end, "\",\"request_id\":");
	json_str(&p, stop, e->request_id);
	put(&p, end, ",\"client\":");
	json_str(&p, stop, e->client);
	put(&p, end, ",\"method\":");
	json_str(&p, stop, e->method);
	put(&p, end, ",\"path\":");
	json_str(&p, path_stop, e->path);
	put(&p, end, ",\"variant\":");
	json_str(&p, stop, e->variant);
	put(&p, end, ",\"endpoint\":");
	json_str(&p, stop, e->endpoint);
	put(&p, end, ",\"shadow\":");
	json_str(&p, stop, e->shadow);
	snprintf(num, sizeof(num), ",\"status\":%d,\"latency_ms\":%.3f,\"bytes\":%" PRIu64 "}\n",
	         e->status, (double)e->latency_us / 1000.0, e->bytes);
	size_t room = outlen - (size_t)(p - out);
	size_t n = strlen(num);
	if (n >= room) { /* cannot happen: TAIL_NUMBERS is kept back */
		out[0] = '\n';
		out[1] = '\0';
		return 1;
	}
	memcpy(p, num, n + 1);
	return (size_t)(p - out) + n;
}

/* This thread's queue in a, registered on its first line (NULL: out of memory or too many). */
static struct tqueue *thread_queue(struct accesslog *a)
{
	if (my_queue != NULL && my_gen == a->gen)
		return my_queue;
	my_queue = NULL;
	struct tqueue *q = calloc(1, sizeof(*q));
	if (q == NULL || (q->buf = malloc(ACCESSLOG_THREAD_QUEUE_MAX)) == NULL) {
		free(q);
		return NULL;
	}
	pthread_mutex_init(&q->lock, NULL);
	pthread_mutex_lock(&a->lock);
	int ok = a->n_queues < ACCESSLOG_THREADS_MAX;
	if (ok) {
		q->next = a->queues;
		a->queues = q;
		a->n_queues++;
	}
	pthread_mutex_unlock(&a->lock);
	if (!ok) {
		pthread_mutex_destroy(&q->lock);
		free(q->buf);
		free(q);
		return NULL;
	}
	my_queue = q;
	my_gen = a->gen;
	return q;
}

void accesslog_write(const struct accesslog_entry *e)
{
	if (!atomic_load_explicit(&enabled, memory_order_acquire))
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	char line[ACCESSLOG_LINE_MAX];
	size_t n = accesslog_format(e, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, line,
	                            sizeof(line));
	struct accesslog *a = the_log;
	struct tqueue *q = thread_queue(a);
	size_t before = 0;
	int fits = 0;
	if (q != NULL) {
		pthread_mutex_lock(&q->lock);
		before = q->len;
		fits = q->len + n <= ACCESSLOG_THREAD_QUEUE_MAX;
		if (fits) {
			memcpy(q->buf + q->len, line, n);
			q->len += n;
		}
		pthread_mutex_unlock(&q->lock);
	}
	if (!fits)
		atomic_fetch_add(&n_dropped, 1);
	else if (before < ACCESSLOG_THREAD_QUEUE_MAX / 2 &&
	         before + n >= ACCESSLOG_THREAD_QUEUE_MAX / 2)
		pthread_cond_signal(
		    &a->wake); /* half full: early pass (a lost wake-up waits for the timer) */
}

static int open_path(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		snprintf(err, errlen, "access_log: %s: cannot open: %s", path, strerror(errno));
	return fd;
}

/* Write buf fully; returns 0 or the errno of the failure. */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, buf, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? errno : EIO;
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

static uint64_t count_lines(const char *buf, size_t len)
{
	uint64_t n = 0;
	for (const char *p = buf; (p = memchr(p, '\n', len - (size_t)(p - buf))) != NULL; p++)
		n++;
	return n;
}

/* Writer thread: the lock is held except while writing or reopening. */
static void do_reopen(struct accesslog *a)
{
	char err[512];
	if (a->path == NULL)
		return;
	int fd = open_path(a->path, err, sizeof(err));
	if (fd < 0) {
		log_error("%s (still writing to the old file)", err);
		return;
	}
	close(a->fd);
	a->fd = fd;
	log_info("access_log: reopened %s", a->path);
}

static void report_failure(struct accesslog *a, int e, uint64_t lines)
{
	a->unreported += lines;
	time_t now = time(NULL);
	if (now - a->last_report < ACCESSLOG_REPORT_S)
		return;
	log_error("access_log: %s: write failed: %s; %" PRIu64
	          " line(s) lost since the last report",
	          a->path ? a->path : "stderr", strerror(e), a->unreported);
	a->last_report = now;
	a->unreported = 0;
}

/* Writer thread: hand each thread's queue over (a pointer swap) and write it out. */
static void write_pass(struct accesslog *a)
{
	pthread_mutex_lock(&a->lock);
	struct tqueue *head = a->queues; /* queues are only ever prepended */
	pthread_mutex_unlock(&a->lock);
	for (struct tqueue *q = head; q != NULL; q = q->next) {
		pthread_mutex_lock(&q->lock);
		char *full = q->buf;
		size_t len = q->len;
		q->buf = a->stage;
		q->len = 0;
		a->stage = full;
		pthread_mutex_unlock(&q->lock);
		if (len == 0)
			continue;
		uint64_t lines = count_lines(full, len);
		int e = write_all(a->fd, full, len);
		if (e == 0) {
			atomic_fetch_add(&n_written, lines);
		} else {
			atomic_fetch_add(&n_failed, lines);
			report_failure(a, e, lines);
		}
	}
}

static void *writer_main(void *arg)
{
	struct accesslog *a = arg;
	pthread_mutex_lock(&a->lock);
	for (;;) {
		if (!a->stop && !a->reopen && a->pass_wanted == a->pass_done) {
			struct timespec dl;
			clock_gettime(CLOCK_REALTIME, &dl);
			dl.tv_nsec += ACCESSLOG_FLUSH_MS * 1000000L;
			if (dl.tv_nsec >= 1000000000L) {
				dl.tv_sec++;
				dl.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&a->wake, &a->lock, &dl);
		}
		int reopen = a->reopen, stop = a->stop;
		uint64_t want = a->pass_wanted;
		a->reopen = 0;
		pthread_mutex_unlock(&a->lock);
		if (reopen)
			do_reopen(a);
		write_pass(a);
		pthread_mutex_lock(&a->lock);
		a->pass_done = want;
		pthread_cond_broadcast(&a->idle);
		if (stop) /* the writing threads are gone: that pass was the last */
			break;
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

static void free_log(struct accesslog *a)
{
	if (a == NULL)
		return;
	if (a->path && a->fd >= 0)
		close(a->fd);
	while (a->queues != NULL) {
		struct tqueue *q = a->queues;
		a->queues = q->next;
		pthread_mutex_destroy(&q->lock);
		free(q->buf);
		free(q);
	}
	free(a->path);
	free(a->stage);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->wake);
	pthread_cond_destroy(&a->idle);
	free(a);
}

int accesslog_open(const char *spec, char *err, size_t errlen)
{
	if (spec == NULL || strcmp(spec, "off") == 0)
		return 0;
	if (the_log != NULL) {
		snprintf(err, errlen, "access_log: already open");
		return -1;
	}
	struct accesslog *a = calloc(1, sizeof(*a));
	if (a == NULL)
		goto oom;
	a->fd = -1;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->wake, NULL);
	pthread_cond_init(&a->idle, NULL);
	a->gen = ++n_opens;
	if ((a->stage = malloc(ACCESSLOG_THREAD_QUEUE_MAX)) == NULL)
		goto oom;
	if (strcmp(spec, "stderr") == 0) {
		a->fd = STDERR_FILENO;
	} else {
		if ((a->path = strdup(spec)) == NULL)
			goto oom;
		if ((a->fd = open_path(spec, err, errlen)) < 0)
			goto fail;
	}
	if (pthread_create(&a->thread, NULL, writer_main, a) != 0) {
		snprintf(err, errlen, "access_log: cannot start the writer thread");
		goto fail;
	}
	the_log = a;
	atomic_store_explicit(&enabled, 1, memory_order_release);
	return 0;
oom:
	snprintf(err, errlen, "access_log: out of memory");
fail:
	free_log(a);
	return -1;
}

void accesslog_close(void)
{
	struct accesslog *a = the_log;
	if (a == NULL)
		return;
	atomic_store_explicit(&enabled, 0, memory_order_release);
	pthread_mutex_lock(&a->lock);
	a->stop = 1;
	pthread_cond_signal(&a->wake);
	pthread_mutex_unlock(&a->lock);
	pthread_join(a->thread, NULL);
	the_log = NULL;
	free_log(a);
}

int accesslog_enabled(void)
{
	return atomic_load_explicit(&enabled, memory_order_acquire);
}

void accesslog_reopen(void)
{
	struct accesslog *a = the_log;
	if (a == NULL)
		return;
	pthread_mutex_lock(&a->lock);
	a->reopen = 1;
	pthread_cond_signal(&a->wake);
	pthread_mutex_unlock(&a->lock);
}

void accesslog_flush(void)
{
	struct accesslog *a = the_log;
	if (a == NULL)
		return;
	pthread_mutex_lock(&a->lock);
	uint64_t want = ++a->pass_wanted;
	pthread_cond_signal(&a->wake);
	while (a->pass_done < want)
		pthread_cond_wait(&a->idle, &a->lock);
	pthread_mutex_unlock(&a->lock);
}

void accesslog_get_counters(struct accesslog_counters *out)
{
	out->written = atomic_load(&n_written);
	out->dropped = atomic_load(&n_dropped);
	out->write_failed = atomic_load(&n_failed);
}
