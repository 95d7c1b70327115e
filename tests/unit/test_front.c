/*
 * test_front.c - unit tests for the proxy listener's request parser
 * (router/front_parse.c) and the chunked decoder (router/chunked.c): every
 * rule is shown to refuse what it must, with the status and cause the front
 * end answers, and to accept its near misses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunked.h"
#include "front.h"

static struct front_head head;
static char buf[70000];
static int status;
static const char *cause;
static char err[256];

/* Parse text (copied: the parser writes NULs into its buffer) with the given limits. */
static int parse_lim(const char *text, size_t len, size_t max_header, size_t max_body)
{
	assert_true(len <= sizeof(buf));
	memcpy(buf, text, len);
	status = 0;
	cause = NULL;
	err[0] = '\0';
	return front_parse_head(buf, len, max_header, max_body, &head, &status, &cause, err,
	                        sizeof(err));
}

static int parse(const char *text)
{
	return parse_lim(text, strlen(text), 16384, 65536);
}

/* text is refused with want_status, want_cause and err containing want_err. */
static void refused(const char *text, int want_status, const char *want_cause, const char *want_err)
{
	int r = parse(text);
	if (r != -1 || status != want_status || strcmp(cause, want_cause) != 0 ||
	    strstr(err, want_err) == NULL)
		fail_msg("'%s': got %d %d %s '%s'", text, r, status, cause ? cause : "-", err);
}

static const char *field(const char *name)
{
	for (size_t i = 0; i < head.n_fields; i++)
		if (strcmp(buf + head.fields[i].name, name) == 0)
			return buf + head.fields[i].value;
	return NULL;
}

static void test_accepts(void **state)
{
	(void)state;
	assert_int_equal(parse("POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: a\r\n"
	                       "Content-Length: 12\r\nX-Pad:   v w \t\r\n\r\nbody..."),
	                 1);
	assert_string_equal(buf + head.method, "POST");
	assert_string_equal(buf + head.target, "/v2/models/m/infer?x=1");
	assert_int_equal(head.minor, 1);
	assert_int_equal(head.content_length, 12);
	assert_true(head.keep_alive);
	assert_int_equal(head.n_fields, 3);
	assert_string_equal(field("X-Pad"), "v w"); /* OWS trimmed, inner kept */
	assert_int_equal(head.len, strlen("POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: a\r\n"
	                                  "Content-Length: 12\r\nX-Pad:   v w \t\r\n\r\n"));
	/* empty lines before the request line are skipped */
	assert_int_equal(parse("\r\nGET / HTTP/1.1\r\n\r\n"), 1);
	assert_string_equal(buf + head.method, "GET");
	/* an empty value is a value */
	refused("\r\n\r\n\r\n\r\n\r\n\r\n", 400, "bad_request", "no request line");
	assert_int_equal(parse("GET / HTTP/1.1\r\nX-E:\r\n\r\n"), 1);
	assert_string_equal(field("X-E"), "");
}

static void test_incomplete(void **state)
{
	(void)state;
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\n"), 0);
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\n\r"), 0);
	assert_int_equal(parse(""), 0);
}

static void test_versions_and_connection(void **state)
{
	(void)state;
	assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n"), 1);
	assert_int_equal(head.minor, 0);
	assert_false(head.keep_alive);
	assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), 1);
	assert_true(head.keep_alive);
	assert_int_equal(parse("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n"), 1);
	assert_false(head.keep_alive);
	assert_int_equal(parse("HEAD / HTTP/1.1\r\n\r\n"), 1);
	assert_true(head.head_method);
	refused("GET / HTTP/2.0\r\n\r\n", 505, "version_not_supported", "2.0");
	refused("GET / HTTP/1.1x\r\n\r\n", 400, "bad_request", "version");
	refused("GET / http/1.1\r\n\r\n", 400, "bad_request", "version");
}

static void test_request_line(void **state)
{
	(void)state;
	refused("GET  / HTTP/1.1\r\n\r\n", 400, "bad_request", "target");
	refused("G(T / HTTP/1.1\r\n\r\n", 400, "bad_request", "method");
	refused("GET /a\x01 HTTP/1.1\r\n\r\n", 400, "bad_request", "0x01");
	refused("GET http://a/ HTTP/1.1\r\n\r\n", 400, "bad_request", "path");
	refused("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501, "not_implemented", "CONNECT");
	refused("TRACE / HTTP/1.1\r\n\r\n", 501, "not_implemented", "'TRACE'");
	refused("get / HTTP/1.1\r\n\r\n", 501, "not_implemented", "'get'");
	assert_int_equal(parse("PATCH / HTTP/1.1\r\n\r\n"), 1);
	char *t = malloc(9000);
	assert_non_null(t);
	strcpy(t, "GET /");
	memset(t + 5, 'a', 8000);
	strcpy(t + 8005, " HTTP/1.1\r\n\r\n");
	assert_int_equal(parse_lim(t, strlen(t), 16384, 1), -1);
	assert_int_equal(status, 414);
	assert_string_equal(cause, "uri_too_long");
	t[8004] = '\0'; /* exactly 8000 bytes of target is fine */
	strcat(t, " HTTP/1.1\r\n\r\n");
	assert_int_equal(parse_lim(t, strlen(t), 16384, 1), 1);
	assert_int_equal(head.target_len, 8000);
	free(t);
}

static void test_fields(void **state)
{
	(void)state;
	refused("GET / HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n", 400, "bad_header", "obs-fold");
	refused("GET / HTTP/1.1\r\nX-A: one\r\n\ttwo\r\n\r\n", 400, "bad_header", "HTAB");
	refused("GET / HTTP/1.1\r\nX A: b\r\n\r\n", 400, "bad_header", "0x20");
	refused("GET / HTTP/1.1\r\nX-A : b\r\n\r\n", 400, "bad_header", "X-A");
	refused("GET / HTTP/1.1\r\n: b\r\n\r\n", 400, "bad_header", "empty");
	refused("GET / HTTP/1.1\r\nX-A b\r\n\r\n", 400, "bad_header", "header name");
	refused("GET / HTTP/1.1\r\nX-A: a\x01z\r\n\r\n", 400, "bad_header", "0x01 in header 'X-A'");
	refused("GET / HTTP/1.1\r\nX-A: a\x7fz\r\n\r\n", 400, "bad_header", "0x7f");
	refused("GET / HTTP/1.1\r\nX-A: a\rX-B: b\r\n\r\n", 400, "bad_header", "bare CR");
	refused("GET / HTTP/1.1\r\nX-A: a\nX-B: b\r\n\r\n", 400, "bad_request", "bare LF");
	/* NUL: the parser sees the byte, not a C string's end */
	static const char nul[] = "GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n";
	assert_int_equal(parse_lim(nul, sizeof(nul) - 1, 16384, 10), -1);
	assert_int_equal(status, 400);
	assert_non_null(strstr(err, "0x00"));
}

static void test_limits(void **state)
{
	(void)state;
	char t[4096];
	int n = snprintf(t, sizeof(t), "GET / HTTP/1.1\r\n");
	for (int i = 0; i < FRONT_MAX_FIELDS; i++)
		n += snprintf(t + n, sizeof(t) - (size_t)n, "X-%d: v\r\n", i);
	strcpy(t + n, "\r\n");
	assert_int_equal(parse(t), 1); /* exactly 100 fields */
	strcpy(t + n, "X-last: v\r\n\r\n");
	refused(t, 431, "too_many_headers", "more than 100");
	/* no end of head within max_header */
	assert_int_equal(parse_lim("GET / HTTP/1.1\r\nX-Big: aaaaaaaaaaaaaaaa", 40, 32, 10), -1);
	assert_int_equal(status, 431);
	assert_non_null(strstr(err, "max_header (32 bytes)"));
	assert_int_equal(parse_lim("GET / HTTP/1.1\r\nX-Big: aaaa", 27, 32, 10), 0);
	const char *ok = "GET / HTTP/1.1\r\nX: 1\r\n\r\n";
	assert_int_equal(parse_lim(ok, strlen(ok), strlen(ok), 10), 1);
}

static void test_framing(void **state)
{
	(void)state;
	const char *big = "POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n";
	refused(big, 413, "body_too_large", "max_body (65536 bytes)");
	assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 65536\r\n\r\n"), 1);
	refused("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400,
	        "bad_framing", "duplicate Content-Length");
	refused("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400, "bad_framing", "invalid");
	refused("POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n", 400, "bad_framing", "invalid");
	refused("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", 400, "bad_framing", "invalid");
	refused("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", 400, "bad_framing", "invalid");
	refused("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400,
	        "bad_framing", "invalid");
	refused("POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
	        "bad_framing", "both");
	refused(
	    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
	    400, "bad_framing", "duplicate Transfer-Encoding");
	refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400,
	        "bad_framing", "unsupported Transfer-Encoding");
	refused("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "bad_framing",
	        "unsupported");
	refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "bad_framing",
	        "HTTP/1.0");
	assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"), 1);
	assert_true(head.chunked);
	assert_int_equal(head.content_length, -1);
	assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 007\r\n\r\n"), 1);
	assert_int_equal(head.content_length, 7);
}

static void test_expect(void **state)
{
	(void)state;
	assert_int_equal(
	    parse("POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n"), 1);
	assert_true(head.expect_continue);
	refused("POST / HTTP/1.1\r\nExpect: something\r\n\r\n", 417, "expectation_failed",
	        "something");
}

/* Decode enc in pieces of step bytes (as reads would deliver them). */
static int decode(const char *enc, size_t step, uint64_t max, char *out, size_t *out_len)
{
	struct chunked d;
	chunked_init(&d);
	char in[256];
	size_t have = 0, pos = 0, n = strlen(enc);
	*out_len = 0;
	while (d.state != CHUNKED_DONE) {
		size_t take = n - pos < step ? n - pos : step;
		if (take == 0)
			return 0; /* incomplete */
		memcpy(in + have, enc + pos, take);
		have += take;
		pos += take;
		long used = chunked_decode(&d, in, have, out, out_len, max, err, sizeof(err));
		if (used < 0)
			return -1;
		memmove(in, in + used, have - (size_t)used);
		have -= (size_t)used;
	}
	return 1;
}

static void test_chunked(void **state)
{
	(void)state;
	char out[256];
	size_t n;
	const char *enc = "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nT: x\r\n\r\n";
	for (size_t step = 1; step < 70; step++) {
		assert_int_equal(decode(enc, step, 100, out, &n), 1);
		assert_int_equal(n, 16);
		assert_memory_equal(out, "hello 0123456789", 16);
	}
	assert_int_equal(decode("5\r\nhello\r\n", 4, 100, out, &n), 0);
	assert_int_equal(decode("5\r\nhello\r\n0\r\n\r\n", 3, 4, out, &n), -1);
	assert_non_null(strstr(err, "over the limit"));
	assert_int_equal(decode("5\r\nhelloX\r\n0\r\n\r\n", 64, 100, out, &n), -1);
	assert_non_null(strstr(err, "longer than its chunk-size"));
	assert_int_equal(decode("z\r\n", 64, 100, out, &n), -1);
	assert_non_null(strstr(err, "malformed chunk-size"));
	assert_int_equal(decode("5\nhello\r\n0\r\n\r\n", 64, 100, out, &n), -1);
	assert_non_null(strstr(err, "CRLF"));
	assert_int_equal(decode("fffffffffffffffff\r\n", 64, 100, out, &n), -1);
	/* in place: out aliases in */
	struct chunked d;
	chunked_init(&d);
	char b[] = "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nNEXT";
	size_t len = 0;
	long used = chunked_decode(&d, b, strlen(b), b, &len, 100, err, sizeof(err));
	assert_int_equal(d.state, CHUNKED_DONE);
	assert_int_equal(len, 5);
	assert_memory_equal(b, "abcde", 5);
	assert_string_equal(b + used, "NEXT");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_accepts),
	    cmocka_unit_test(test_incomplete),
	    cmocka_unit_test(test_versions_and_connection),
	    cmocka_unit_test(test_request_line),
	    cmocka_unit_test(test_fields),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_framing),
	    cmocka_unit_test(test_expect),
	    cmocka_unit_test(test_chunked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
