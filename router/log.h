/*
 * log.h - leveled logging to stderr, shared by the router and the predictor.
 *
 * Lines look like "2026-11-23T17:20:01.123Z turnout[1234] warn: message".
 * Thread-safe: each line is formatted into a local buffer and written with one
 * write(2), so lines from different threads never interleave. A failed write
 * (full disk, closed stderr) is counted and otherwise ignored: logging never
 * stops the service.
 */
#ifndef TURNOUT_LOG_H
#define TURNOUT_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
};

/* Set the program name shown in each line (pointer kept) and the minimum level. */
void log_init(const char *progname, enum log_level min);
void log_set_level(enum log_level min);
enum log_level log_get_level(void);
/* Parse "debug"/"info"/"warn"/"error"; returns 0 and sets *out, or -1. */
int log_parse_level(const char *s, enum log_level *out);
/* Number of lines that could not be written since start. */
uint64_t log_write_failures(void);

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Format a message into a caller's error buffer (the "return code + message
 * buffer" convention). Does nothing when err is NULL or errlen is 0; the
 * message is truncated to errlen - 1 bytes.
 */
void log_errbuf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_get_level() <= LOG_LEVEL_DEBUG)                                            \
			log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__);                                     \
	} while (0)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
