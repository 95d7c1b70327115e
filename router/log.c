/*
 * log.c - leveled logging to stderr (see log.h).
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *log_progname = "turnout";
static _Atomic int log_min = LOG_LEVEL_INFO;
static _Atomic uint64_t log_failures;

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *progname, enum log_level min)
{
	log_progname = progname;
	log_min = min;
}

void log_set_level(enum log_level min)
{
	log_min = min;
}

enum log_level log_get_level(void)
{
	return (enum log_level)log_min;
}

int log_parse_level(const char *s, enum log_level *out)
{
	for (int i = 0; i <= LOG_LEVEL_ERROR; i++) {
		if (strcmp(s, log_level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

uint64_t log_write_failures(void)
{
	return log_failures;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	if ((int)lvl < log_min)
		return;
	char line[2048];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	int n =
	    snprintf(line, sizeof(line),
	             "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s: ", tm.tm_year + 1900,
	             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	             (long)(tv.tv_usec / 1000), log_progname, (int)getpid(), log_level_names[lvl]);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2; /* truncated: keep the newline */
	line[len++] = '\n';
	if (write(STDERR_FILENO, line, len) != (ssize_t)len)
		log_failures++;
}

void log_errbuf(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}
