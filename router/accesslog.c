/*
 * accesslog.c - JSON-lines access log with a writer thread (see accesslog.h).
 *
 * The hot path (accesslog_write, on a worker) formats the line on its stack
 * and holds the queue's mutex only for one memcpy; the writer thread swaps
 * the filled queue with an empty one under the mutex and writes outside it,
 * so a slow or failing disk never stalls a worker: the queue fills, lines
 * are dropped and counted.
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

struct accesslog {
	char *path; /* NULL = stderr */
	int fd;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;  /* writer: work, reopen or stop */
	pthread_cond_t idle;  /* flushers: a batch was written */
	char *queue, *spare;  /* ACCESSLOG_QUEUE_MAX each */
	size_t queued;        /* bytes in queue */
	uint64_t seq_written; /* lines: queued count at the last completed write */
	uint64_t lines_queued;
	int stop, reopen;
	time_t last_report;
	uint64_t unreported; /* failed lines since the last report */
};

static struct accesslog *the_log;
static atomic_int enabled;
static _Atomic uint64_t n_written, n_dropped, n_failed;

static void json_str(char **p, char *end, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	char *o = *p;
	if (s == NULL) {
		if (end - o > 4) {
			memcpy(o, "null", 4);
			o += 4;
		}
		*p = o;
		return;
	}
	if (o < end)
		*o++ = '"';
	size_t n = 0;
	for (; *s && n < ACCESSLOG_FIELD_MAX && end - o > 8; s++, n++) {
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
	if (o < end)
		*o++ = '"';
	*p = o;
}

static void put(char **p, char *end, const char *s)
{
	size_t n = strlen(s);
	if ((size_t)(end - *p) > n) {
		memcpy(*p, s, n);
		*p += n;
	}
}

size_t accesslog_format(const struct accesslog_entry *e, int64_t t_ms, char *out, size_t outlen)
{
	char num[160], stamp[40];
	time_t secs = (time_t)(t_ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	size_t k = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + k, sizeof(stamp) - k, ".%03dZ", (int)(t_ms % 1000));
	/* room for the closing text: 160 bytes are kept back for the numbers and "}\n" */
	char *p = out, *end = out + (outlen > 200 ? outlen - 160 : 0);
	put(&p, end, "{\"time\":\"");
	put(&p, end, stamp);
	put(&p, end, "\",\"request_id\":");
	json_str(&p, end, e->request_id);
	put(&p, end, ",\"client\":");
	json_str(&p, end, e->client);
	put(&p, end, ",\"method\":");
	json_str(&p, end, e->method);
	put(&p, end, ",\"path\":");
	json_str(&p, end, e->path);
	put(&p, end, ",\"variant\":");
	json_str(&p, end, e->variant);
	put(&p, end, ",\"endpoint\":");
	json_str(&p, end, e->endpoint);
	put(&p, end, ",\"shadow\":");
	json_str(&p, end, e->shadow);
	snprintf(num, sizeof(num), ",\"status\":%d,\"latency_ms\":%.3f,\"bytes\":%" PRIu64 "}\n",
	         e->status, (double)e->latency_us / 1000.0, e->bytes);
	size_t room = outlen - (size_t)(p - out);
	size_t n = strlen(num);
	if (n >= room) { /* only with a tiny outlen */
		out[0] = '\n';
		out[outlen > 1 ? 1 : 0] = '\0';
		return outlen > 1 ? 1 : 0;
	}
	memcpy(p, num, n + 1);
	return (size_t)(p - out) + n;
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
	pthread_mutex_lock(&a->lock);
	int fits = a->queued + n <= ACCESSLOG_QUEUE_MAX;
	if (fits) {
		memcpy(a->queue + a->queued, line, n);
		a->queued += n;
		a->lines_queued++;
	}
	pthread_mutex_unlock(&a->lock);
	if (!fits)
		atomic_fetch_add(&n_dropped, 1);
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

static void *writer_main(void *arg)
{
	struct accesslog *a = arg;
	pthread_mutex_lock(&a->lock);
	for (;;) {
		if (a->queued == 0 && !a->stop && !a->reopen) {
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
		a->reopen = 0;
		char *buf = a->queue;
		size_t len = a->queued;
		uint64_t upto = a->lines_queued;
		a->queue = a->spare;
		a->spare = buf;
		a->queued = 0;
		pthread_mutex_unlock(&a->lock);
		if (reopen)
			do_reopen(a);
		if (len > 0) {
			uint64_t lines = count_lines(buf, len);
			int e = write_all(a->fd, buf, len);
			if (e == 0)
				atomic_fetch_add(&n_written, lines);
			else {
				atomic_fetch_add(&n_failed, lines);
				report_failure(a, e, lines);
			}
		}
		pthread_mutex_lock(&a->lock);
		a->seq_written = upto;
		pthread_cond_broadcast(&a->idle);
		if (stop && a->queued == 0)
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
	free(a->path);
	free(a->queue);
	free(a->spare);
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
	a->queue = malloc(ACCESSLOG_QUEUE_MAX);
	a->spare = malloc(ACCESSLOG_QUEUE_MAX);
	if (a->queue == NULL || a->spare == NULL)
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
	uint64_t want = a->lines_queued;
	pthread_cond_signal(&a->wake);
	while (a->seq_written < want)
		pthread_cond_wait(&a->idle, &a->lock);
	pthread_mutex_unlock(&a->lock);
}

void accesslog_get_counters(struct accesslog_counters *out)
{
	out->written = atomic_load(&n_written);
	out->dropped = atomic_load(&n_dropped);
	out->write_failed = atomic_load(&n_failed);
}
