/*
 * test_shadowlog.c - unit tests for router/shadowlog.c: line format, redaction
 * and body truncation, flush on close, queue overflow (a FIFO nobody reads
 * stalls the writer for real), write errors on /dev/full, reopen.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "shadowlog.h"

static struct compare_outcome disagreement(void)
{
	struct compare_outcome o;
	compare_outcome_clear(&o);
	o.result = COMPARE_DISAGREE;
	o.where = COMPARE_WHERE_RULE;
	o.rule = 0;
	strcpy(o.path, "outputs[name=label].data");
	strcpy(o.live_value, "[3]");
	strcpy(o.shadow_value, "[5]");
	return o;
}

static json_t *parse_line(const char *s, size_t len)
{
	assert_true(len > 0);
	assert_int_equal(s[len - 1], '\n');
	assert_null(memchr(s, '\n', len - 1)); /* one line */
	json_error_t je;
	json_t *j = json_loadb(s, len, 0, &je);
	if (!j)
		fail_msg("not JSON: %s: %.*s", je.text, (int)len, s);
	return j;
}

static void test_format(void **state)
{
	struct compare_outcome o = disagreement();
	struct shadowlog_entry e = {.request_id = "req-1",
	                            .live_variant = "v1",
	                            .shadow_variant = "v2",
	                            .live_status = 200,
	                            .shadow_status = 200,
	                            .live_ms = 1.5,
	                            .shadow_ms = -1,
	                            .outcome = &o,
	                            .body = "{\"inputs\":[1,2,3]}",
	                            .body_len = 18};
	size_t len;
	char *s = shadowlog_format(&e, 4096, 0, &len);
	json_t *j = parse_line(s, len);
	assert_string_equal(json_string_value(json_object_get(j, "request_id")), "req-1");
	assert_string_equal(json_string_value(json_object_get(j, "live")), "v1");
	assert_string_equal(json_string_value(json_object_get(j, "shadow")), "v2");
	assert_string_equal(json_string_value(json_object_get(j, "result")), "disagree");
	assert_string_equal(json_string_value(json_object_get(j, "path")),
	                    "outputs[name=label].data");
	assert_int_equal(json_integer_value(json_object_get(j, "rule")), 0);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "live_value"), 0)),
	                 3);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "shadow_value"), 0)),
	                 5);
	assert_int_equal(json_integer_value(json_object_get(j, "live_status")), 200);
	assert_null(json_object_get(j, "shadow_ms"));
	assert_string_equal(json_string_value(json_object_get(j, "request_body")),
	                    "{\"inputs\":[1,2,3]}");
	assert_true(json_is_false(json_object_get(j, "request_body_truncated")));
	assert_non_null(json_object_get(j, "time"));
	json_decref(j);
	free(s);

	/* truncated body, binary bytes */
	e.body = "ab\xff\x01"
	         "defgh";
	e.body_len = 8;
	s = shadowlog_format(&e, 4, 0, &len);
	j = parse_line(s, len);
	/* 4 bytes kept; the non-UTF-8 byte 0xff reads back as U+00FF */
	assert_int_equal(json_string_length(json_object_get(j, "request_body")), 5);
	assert_memory_equal(json_string_value(json_object_get(j, "request_body")), "ab\xc3\xbf\x01",
	                    5);
	assert_true(json_is_true(json_object_get(j, "request_body_truncated")));
	assert_int_equal(json_integer_value(json_object_get(j, "request_body_bytes")), 8);
	json_decref(j);
	free(s);

	/* only the first bytes are available (body_total says how long it was) */
	e.body = "abcd";
	e.body_len = 4;
	e.body_total = 1000;
	s = shadowlog_format(&e, 4096, 0, &len);
	j = parse_line(s, len);
	assert_string_equal(json_string_value(json_object_get(j, "request_body")), "abcd");
	assert_true(json_is_true(json_object_get(j, "request_body_truncated")));
	assert_int_equal(json_integer_value(json_object_get(j, "request_body_bytes")), 1000);
	json_decref(j);
	free(s);
	e.body_total = 0;

	/* redact: no body at all; a missing value is null; a cut value is a string */
	o.shadow_value[0] = 0;
	memset(o.live_value, '[', 100);
	o.live_value[100] = 0;
	o.live_truncated = 1;
	o.result = COMPARE_ERROR;
	strcpy(o.error, "shadow body: not JSON");
	e.request_id = NULL;
	s = shadowlog_format(&e, 4096, 1, &len);
	j = parse_line(s, len);
	assert_null(json_object_get(j, "request_body"));
	assert_true(json_is_null(json_object_get(j, "shadow_value")));
	assert_true(json_is_string(json_object_get(j, "live_value")));
	assert_string_equal(json_string_value(json_object_get(j, "error")),
	                    "shadow body: not JSON");
	assert_string_equal(json_string_value(json_object_get(j, "request_id")), "");
	json_decref(j);
	free(s);

	/* a huge request id is cut, the line stays valid */
	char id[1000];
	memset(id, 'x', sizeof(id) - 1);
	id[sizeof(id) - 1] = 0;
	e.request_id = id;
	s = shadowlog_format(&e, 4096, 1, &len);
	j = parse_line(s, len);
	assert_int_equal(json_string_length(json_object_get(j, "request_id")), SHADOWLOG_ID_MAX);
	json_decref(j);
	free(s);
}

static char *tmp_dir(void)
{
	char *d = strdup("/tmp/turnout-shadowlog-XXXXXX");
	assert_non_null(mkdtemp(d));
	return d;
}

/* Count lines in a file, checking each is JSON. */
static int count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int count = 0;
	while ((n = getline(&line, &cap, f)) > 0) {
		json_decref(parse_line(line, (size_t)n));
		count++;
	}
	free(line);
	fclose(f);
	return count;
}

static void wait_done(struct shadowlog *l, uint64_t want, struct shadowlog_counts *c)
{
	for (int i = 0; i < 500; i++) { /* at most 5 s */
		shadowlog_get_counts(l, c);
		if (c->written + c->write_errors >= want)
			return;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	fail_msg("writer did not finish %llu lines", (unsigned long long)want);
}

static void test_write_and_flush(void **state)
{
	char *d = tmp_dir();
	char path[256];
	snprintf(path, sizeof(path), "%s/dis.jsonl", d);
	char err[256];
	struct shadowlog *l = shadowlog_open(path, 64, 0, 1 << 20, err, sizeof(err));
	assert_non_null(l);
	struct compare_outcome o = disagreement();
	struct shadowlog_entry e = {.outcome = &o, .body = "x", .body_len = 1, .live_ms = -1};
	for (int i = 0; i < 100; i++)
		assert_int_equal(shadowlog_write(l, &e), 0);
	shadowlog_close(l); /* flushes */
	assert_int_equal(count_lines(path), 100);

	/* appends, and a reopen after a rename writes to the new file */
	l = shadowlog_open(path, 64, 0, 1 << 20, err, sizeof(err));
	assert_non_null(l);
	assert_int_equal(shadowlog_write(l, &e), 0);
	struct shadowlog_counts c;
	wait_done(l, 1, &c);
	char moved[300];
	snprintf(moved, sizeof(moved), "%s.1", path);
	assert_int_equal(rename(path, moved), 0);
	shadowlog_reopen(l);
	for (int i = 0; i < 500 && access(path, F_OK) != 0; i++) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	assert_int_equal(shadowlog_write(l, &e), 0);
	shadowlog_close(l);
	assert_int_equal(count_lines(moved), 101);
	assert_int_equal(count_lines(path), 1);
	unlink(path);
	unlink(moved);
	rmdir(d);
	free(d);

	/* a path that cannot be opened is an error naming it */
	assert_null(shadowlog_open("/nonexistent-dir/x.jsonl", 64, 0, 1024, err, sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent-dir/x.jsonl"));
	shadowlog_close(NULL);
}

struct reader {
	int fd;
	size_t lines;
	int bad;
};

static void *on_read(void *arg)
{
	struct reader *r = arg;
	char buf[8192];
	ssize_t n;
	size_t linelen = 0;
	while ((n = read(r->fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			linelen++;
			if (buf[i] == '\n') {
				r->lines++;
				if (linelen < 10)
					r->bad++;
				linelen = 0;
			}
		}
	}
	return NULL;
}

/* A FIFO that nobody reads blocks the writer: the queue fills, lines drop, and
 * submitting never blocks. Once a reader drains it, every queued line arrives. */
static void test_overflow_drops(void **state)
{
	char *d = tmp_dir();
	char path[256];
	snprintf(path, sizeof(path), "%s/fifo", d);
	assert_int_equal(mkfifo(path, 0600), 0);
	int rfd = open(path, O_RDONLY | O_NONBLOCK);
	assert_true(rfd >= 0);
	fcntl(rfd, F_SETFL, 0);
	char err[256];
	size_t qmax = 16 * 1024;
	struct shadowlog *l = shadowlog_open(path, 4096, 0, qmax, err, sizeof(err));
	assert_non_null(l);
	char body[4096];
	memset(body, 'b', sizeof(body));
	struct compare_outcome o = disagreement();
	struct shadowlog_entry e = {.outcome = &o, .body = body, .body_len = sizeof(body)};
	int n = 300, queued = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < n; i++)
		queued += shadowlog_write(l, &e) == 0;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(secs < 2.0); /* never waited for the reader */
	struct shadowlog_counts c;
	shadowlog_get_counts(l, &c);
	assert_true(c.queued_bytes <= qmax);
	/* pipe (64 KiB) + queue (16 KiB) hold far fewer than 300 lines of ~4 KiB */
	assert_true(c.dropped >= 250);
	assert_int_equal(c.dropped + (uint64_t)queued, (uint64_t)n);
	struct reader r = {rfd, 0, 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, on_read, &r), 0);
	wait_done(l, (uint64_t)queued, &c);
	assert_int_equal(c.written, (uint64_t)queued);
	assert_int_equal(c.write_errors, 0);
	shadowlog_close(l); /* closes the write end: the reader sees EOF */
	pthread_join(th, NULL);
	close(rfd);
	assert_int_equal(r.lines, (size_t)queued);
	assert_int_equal(r.bad, 0);
	unlink(path);
	rmdir(d);
	free(d);
}

/* /dev/full: every write fails with ENOSPC; errors are counted and reported
 * once to stderr, nothing crashes or blocks. */
static void test_dev_full(void **state)
{
	char errpath[] = "/tmp/turnout-shadowlog-stderr-XXXXXX";
	int efd = mkstemp(errpath);
	assert_true(efd >= 0);
	int saved = dup(STDERR_FILENO);
	dup2(efd, STDERR_FILENO);
	log_init("unit", LOG_LEVEL_INFO);
	char err[256];
	struct shadowlog *l = shadowlog_open("/dev/full", 64, 0, 1 << 20, err, sizeof(err));
	assert_non_null(l);
	struct compare_outcome o = disagreement();
	struct shadowlog_entry e = {.outcome = &o, .live_ms = -1, .shadow_ms = -1};
	for (int i = 0; i < 20; i++)
		assert_int_equal(shadowlog_write(l, &e), 0);
	struct shadowlog_counts c;
	wait_done(l, 20, &c);
	assert_int_equal(c.write_errors, 20);
	assert_int_equal(c.written, 0);
	shadowlog_close(l);
	dup2(saved, STDERR_FILENO);
	close(saved);
	char buf[4096] = {0};
	ssize_t n = pread(efd, buf, sizeof(buf) - 1, 0);
	close(efd);
	unlink(errpath);
	assert_true(n > 0);
	assert_non_null(strstr(buf, "shadow log /dev/full"));
	assert_non_null(strstr(buf, strerror(ENOSPC)));
	/* reported once per interval: the 20 errors make at most two lines (first + close) */
	int lines = 0;
	for (char *p = buf; (p = strstr(p, "not written")); p++)
		lines++;
	assert_true(lines >= 1 && lines <= 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format),
	    cmocka_unit_test(test_write_and_flush),
	    cmocka_unit_test(test_overflow_drops),
	    cmocka_unit_test(test_dev_full),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
