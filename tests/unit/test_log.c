/*
 * test_log.c - unit tests for router/log.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static void test_parse_level(void **state)
{
	enum log_level l;
	assert_int_equal(log_parse_level("warn", &l), 0);
	assert_int_equal(l, LOG_LEVEL_WARN);
	assert_int_equal(log_parse_level("debug", &l), 0);
	assert_int_equal(l, LOG_LEVEL_DEBUG);
	assert_int_equal(log_parse_level("loud", &l), -1);
}

/* Capture stderr into a pipe, log, and read back what was written. */
static void test_line_format_and_filter(void **state)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	int saved = dup(STDERR_FILENO);
	dup2(fds[1], STDERR_FILENO);
	log_init("unit", LOG_LEVEL_WARN);
	log_info("hidden %d", 1);
	log_warn("shown %d", 2);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fds[1]);
	char buf[512] = {0};
	ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	assert_true(n > 0);
	assert_non_null(strstr(buf, "unit["));
	assert_non_null(strstr(buf, "warn: shown 2\n"));
	assert_null(strstr(buf, "hidden"));
}

/* A message longer than the line buffer is truncated but still ends in a newline. */
static void test_long_line_truncated(void **state)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	int saved = dup(STDERR_FILENO);
	dup2(fds[1], STDERR_FILENO);
	log_init("unit", LOG_LEVEL_INFO);
	char big[5000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	log_error("%s", big);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fds[1]);
	char buf[8192] = {0};
	ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	assert_true(n > 100 && n <= 2048);
	assert_int_equal(buf[n - 1], '\n');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_level),
	    cmocka_unit_test(test_line_format_and_filter),
	    cmocka_unit_test(test_long_line_truncated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
