/*
 * test_accesslog.c - unit tests for router/accesslog.c: every line is valid
 * JSON with the fields given (hostile bytes escaped, long fields truncated),
 * lines from several threads all arrive, SIGUSR1-style reopen after a rename
 * starts a new file, a full disk (/dev/full) is counted, never fatal, and a
 * stalled reader makes the bounded queue drop (and count) lines, never block.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "accesslog.h"

static void test_format(void **state)
{
	char path[3000];
	memset(path, 'a', sizeof(path) - 1);
	path[sizeof(path) - 1] = '\0';
	memcpy(path, "/x?q=\"\\\n\x01\xc3\xa9", 12);
	struct accesslog_entry e = {
	    .request_id = "req-1",
	    .client = "127.0.0.1",
	    .method = "POST",
	    .path = path,
	    .variant = "green",
	    .endpoint = NULL,
	    .shadow = NULL,
	    .status = 502,
	    .latency_us = 1234567,
	    .bytes = 42,
	};
	char line[ACCESSLOG_LINE_MAX];
	size_t n = accesslog_format(&e, 1795000000123, line, sizeof(line));
	assert_true(n > 0 && n < sizeof(line));
	assert_int_equal(line[n - 1], '\n');
	assert_null(memchr(line, '\n', n - 1));
	json_error_t je;
	json_t *j = json_loadb(line, n, 0, &je);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "time")),
	                    "2026-11-18T11:06:40.123Z");
	assert_string_equal(json_string_value(json_object_get(j, "request_id")), "req-1");
	assert_string_equal(json_string_value(json_object_get(j, "method")), "POST");
	assert_string_equal(json_string_value(json_object_get(j, "variant")), "green");
	assert_true(json_is_null(json_object_get(j, "endpoint")));
	assert_int_equal(json_integer_value(json_object_get(j, "status")), 502);
	assert_int_equal(json_integer_value(json_object_get(j, "bytes")), 42);
	assert_true(json_real_value(json_object_get(j, "latency_ms")) > 1234.566);
	const char *p = json_string_value(json_object_get(j, "path"));
	assert_non_null(p);
	assert_memory_equal(p, "/x?q=\"\\\n\x01", 9);
	assert_true(strlen(p) <= ACCESSLOG_FIELD_MAX);
	json_decref(j);
	/* a tiny buffer still yields a terminated line */
	char small[8];
	n = accesslog_format(&e, 0, small, sizeof(small));
	assert_true(n < sizeof(small));
}

/*
 * Fields whose escaped form overflows the line (a path of raw bytes above
 * ASCII, 6 bytes each once escaped): the content is cut, the line stays one
 * valid JSON object with every key, whatever the field lengths and buffer size.
 */
static void test_format_escaped_overflow(void **state)
{
	static const char *const keys[] = {"time",   "request_id", "client",   "method",
	                                   "path",   "variant",    "endpoint", "shadow",
	                                   "status", "latency_ms", "bytes"};
	static const size_t outlens[] = {384, 1000, 2048, ACCESSLOG_LINE_MAX};
	char path[1200], rid[129], endpoint[300];
	memset(rid, '"', sizeof(rid) - 1);
	rid[sizeof(rid) - 1] = '\0';
	memset(endpoint, '\x01', sizeof(endpoint) - 1);
	endpoint[sizeof(endpoint) - 1] = '\0';
	char line[ACCESSLOG_LINE_MAX];
	for (size_t o = 0; o < sizeof(outlens) / sizeof(outlens[0]); o++) {
		for (size_t len = 0; len < sizeof(path); len += 37) {
			memset(path, 0x80, len);
			path[len] = '\0';
			struct accesslog_entry e = {
			    .request_id = rid,
			    .client = "127.0.0.1",
			    .method = "GET",
			    .path = path,
			    .variant = "blue",
			    .endpoint = endpoint,
			    .shadow = "mirrored",
			    .status = 200,
			    .bytes = 7,
			};
			size_t n = accesslog_format(&e, 1795000000123, line, outlens[o]);
			assert_true(n > 0 && n < outlens[o]);
			assert_int_equal(line[n - 1], '\n');
			json_error_t je;
			json_t *j = json_loadb(line, n, 0, &je);
			if (j == NULL)
				fail_msg("outlen %zu, path of %zu bytes: %s: %.*s", outlens[o], len,
				         je.text, (int)n, line);
			for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
				assert_non_null(json_object_get(j, keys[k]));
			/* in a full line the path is cut, not what follows it */
			if (outlens[o] == ACCESSLOG_LINE_MAX) {
				assert_string_equal(
				    json_string_value(json_object_get(j, "variant")), "blue");
				assert_string_equal(json_string_value(json_object_get(j, "shadow")),
				                    "mirrored");
				assert_int_equal(
				    strlen(json_string_value(json_object_get(j, "endpoint"))),
				    sizeof(endpoint) - 1);
			}
			assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
			json_decref(j);
		}
	}
}

static size_t count_lines(const char *file)
{
	FILE *f = fopen(file, "r");
	size_t n = 0;
	int c;
	if (f == NULL)
		return 0;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static void *writer(void *arg)
{
	struct accesslog_entry e = {
	    .request_id = "r", .method = "GET", .path = "/p", .status = 200};
	for (int i = 0; i < 500; i++)
		accesslog_write(&e);
	return arg;
}

static void test_threads_and_reopen(void **state)
{
	char dir[] = "/tmp/turnout-accesslog-XXXXXX", file[128], moved[160], err[256];
	assert_non_null(mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/access.log", dir);
	snprintf(moved, sizeof(moved), "%s/access.log.1", dir);
	struct accesslog_counters before, after;
	accesslog_get_counters(&before);
	assert_int_equal(accesslog_open(file, err, sizeof(err)), 0);
	assert_true(accesslog_enabled());
	assert_int_equal(accesslog_open(file, err, sizeof(err)), -1); /* one per process */
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, writer, NULL), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	accesslog_flush();
	assert_int_equal(count_lines(file), 2000);
	/* logrotate: rename, reopen, the next lines go to a new file */
	assert_int_equal(rename(file, moved), 0);
	accesslog_reopen();
	for (int k = 0; k < 500 && access(file, F_OK) != 0; k++)
		usleep(2000); /* bounded: the writer reopens within its next wake-up */
	writer(NULL);
	accesslog_close();
	assert_false(accesslog_enabled());
	assert_int_equal(count_lines(moved), 2000);
	assert_int_equal(count_lines(file), 500);
	accesslog_get_counters(&after);
	assert_int_equal(after.written - before.written, 2500);
	assert_int_equal(after.dropped, before.dropped);
	unlink(file);
	unlink(moved);
	rmdir(dir);
	accesslog_close(); /* closing twice is harmless */
}

static void test_full_disk_and_errors(void **state)
{
	char err[256];
	struct accesslog_counters before, after;
	accesslog_get_counters(&before);
	assert_int_equal(accesslog_open("/dev/full", err, sizeof(err)), 0);
	writer(NULL);
	accesslog_flush();
	accesslog_get_counters(&after);
	assert_int_equal(after.write_failed - before.write_failed, 500);
	assert_int_equal(after.written, before.written);
	accesslog_close();
	/* an unopenable path is refused, naming it */
	assert_int_equal(accesslog_open("/nonexistent-dir/x/access.log", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent-dir/x/access.log"));
	assert_false(accesslog_enabled());
	/* "off" and NULL open nothing; writes are no-ops */
	assert_int_equal(accesslog_open("off", err, sizeof(err)), 0);
	assert_int_equal(accesslog_open(NULL, err, sizeof(err)), 0);
	assert_false(accesslog_enabled());
	writer(NULL);
	accesslog_flush();
	accesslog_close();
}

static void *drain(void *arg)
{
	int fd = *(int *)arg;
	static char buf[65536];
	size_t lines = 0;
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r; i++)
			lines += buf[i] == '\n';
	}
	return (void *)lines;
}

/* A reader that does not read: the queue fills, lines are dropped and counted,
 * the writing thread never blocks; what was kept arrives, every line counted. */
static void test_full_queue_drops(void **state)
{
	enum { N = 40000 };
	char dir[] = "/tmp/turnout-accesslog-XXXXXX", fifo[128], err[256], path[300];
	assert_non_null(mkdtemp(dir));
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	int rfd = open(fifo, O_RDONLY | O_NONBLOCK);
	assert_true(rfd >= 0);
	struct accesslog_counters before, after;
	accesslog_get_counters(&before);
	assert_int_equal(accesslog_open(fifo, err, sizeof(err)), 0);
	assert_int_equal(fcntl(rfd, F_SETFL, 0), 0);
	memset(path, 'p', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	struct accesslog_entry e = {.method = "GET", .path = path, .status = 200};
	for (int i = 0; i < N; i++)
		accesslog_write(&e);
	accesslog_get_counters(&after);
	assert_true(after.dropped > before.dropped);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, drain, &rfd), 0);
	accesslog_close(); /* the last pass, then the writer's end closes: EOF */
	void *lines = NULL;
	pthread_join(t, &lines);
	close(rfd);
	accesslog_get_counters(&after);
	uint64_t written = after.written - before.written, dropped = after.dropped - before.dropped;
	assert_int_equal((size_t)lines, written);
	assert_int_equal(written + dropped, N);
	assert_int_equal(after.write_failed, before.write_failed);
	unlink(fifo);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format),
	    cmocka_unit_test(test_format_escaped_overflow),
	    cmocka_unit_test(test_threads_and_reopen),
	    cmocka_unit_test(test_full_disk_and_errors),
	    cmocka_unit_test(test_full_queue_drops),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
