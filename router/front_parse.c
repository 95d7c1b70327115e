/*
 * front_parse.c - the proxy listener's request-head parser (see front.h).
 *
 * Strict on purpose: the head must end in CRLF CRLF within max_header bytes;
 * every line ends in CRLF (a bare CR or LF is refused), field names are
 * tokens followed directly by ':', values carry no control character but
 * HTAB, a line starting with SP or HTAB (obs-fold) is refused, and the
 * framing headers follow RFC 9112 6: one valid Content-Length or one
 * "Transfer-Encoding: chunked", never both, never duplicated. Every refusal
 * names what was wrong and where; the caller answers it and closes, so the
 * backend never sees a request whose framing could be read two ways.
 */
#include "front.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 5.6.2 tchar, as a table. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

struct perr {
	int *status;
	const char **cause;
	char *err;
	size_t errlen;
};

static int fail(const struct perr *e, int status, const char *cause)
{
	*e->status = status;
	*e->cause = cause;
	return -1;
}

/* A field name for a message: printable, at most 40 bytes, no quote or backslash. */
static void safe_name(char *out, size_t cap, const char *p, size_t n)
{
	size_t i = 0;
	for (; i < n && i + 1 < cap && i < 40; i++) {
		unsigned char ch = (unsigned char)p[i];
		out[i] = ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\' ? '?' : (char)ch;
	}
	out[i] = '\0';
}

/* Whether v[0..n) is exactly name, ignoring case. */
static int name_is(const char *v, size_t n, const char *name, size_t len)
{
	return n == len && strncasecmp(v, name, len) == 0;
}

/* Whether the comma-separated list v[0..n) has token tok (any case). */
static int has_token(const char *v, size_t n, const char *tok)
{
	size_t len = strlen(tok), i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
			i++;
		if (i - s == len && strncasecmp(v + s, tok, len) == 0)
			return 1;
		while (i < n && v[i] != ',')
			i++;
	}
	return 0;
}

/* The request line l[0..n): method SP target SP HTTP/1.x. */
static int request_line(char *buf, size_t off, size_t n, struct front_head *h, const struct perr *e)
{
	char *l = buf + off;
	size_t i = 0;
	while (i < n && tchar[(unsigned char)l[i]])
		i++;
	if (i == 0 || i >= n || l[i] != ' ') {
		snprintf(e->err, e->errlen, "malformed request line (method)");
		return fail(e, 400, "bad_request");
	}
	h->method = (uint32_t)off;
	l[i] = '\0';
	h->head_method = i == 4 && memcmp(l, "HEAD", 4) == 0;
	h->connect = i == 7 && memcmp(l, "CONNECT", 7) == 0;
	size_t t = ++i;
	while (i < n && l[i] != ' ') {
		unsigned char ch = (unsigned char)l[i];
		if (ch < 0x21 || ch == 0x7f) {
			snprintf(e->err, e->errlen,
			         "control character 0x%02x in the request target", ch);
			return fail(e, 400, "bad_request");
		}
		i++;
	}
	if (i - t > FRONT_MAX_TARGET) {
		snprintf(e->err, e->errlen, "request target over %d bytes", FRONT_MAX_TARGET);
		return fail(e, 414, "uri_too_long");
	}
	if (i == t || i >= n) {
		snprintf(e->err, e->errlen, "malformed request line (target)");
		return fail(e, 400, "bad_request");
	}
	h->target = (uint32_t)(off + t);
	h->target_len = (uint32_t)(i - t);
	l[i++] = '\0';
	if (n - i != 8 || memcmp(l + i, "HTTP/", 5) != 0 || l[i + 6] != '.' || l[i + 5] < '0' ||
	    l[i + 5] > '9' || l[i + 7] < '0' || l[i + 7] > '9') {
		snprintf(e->err, e->errlen, "malformed request line (version)");
		return fail(e, 400, "bad_request");
	}
	if (l[i + 5] != '1') {
		snprintf(e->err, e->errlen, "HTTP version %c.%c is not supported (HTTP/1.x only)",
		         l[i + 5], l[i + 7]);
		return fail(e, 505, "version_not_supported");
	}
	h->minor = l[i + 7] - '0';
	h->keep_alive = h->minor >= 1;
	return 0;
}

static int content_length(struct front_head *h, const char *v, size_t n, size_t max_body,
                          const struct perr *e)
{
	if (h->content_length >= 0) {
		snprintf(e->err, e->errlen, "duplicate Content-Length header");
		return fail(e, 400, "bad_framing");
	}
	uint64_t x = 0;
	size_t i = 0;
	for (; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
		if (x > (uint64_t)INT64_MAX / 10 - 1) {
			i = 0;
			break;
		}
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	if (i == 0 || i != n) {
		snprintf(e->err, e->errlen, "invalid Content-Length '%.40s'", v);
		for (char *p = e->err; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\' || *p == 0x7f)
				*p = '?';
		return fail(e, 400, "bad_framing");
	}
	if (x > max_body) {
		snprintf(e->err, e->errlen,
		         "request body of %llu bytes is over limits.max_body (%zu bytes)",
		         (unsigned long long)x, max_body);
		return fail(e, 413, "body_too_large");
	}
	h->content_length = (int64_t)x;
	return 0;
}

/* The fields that change how the request is read. */
static int special_field(struct front_head *h, const char *k, size_t kn, const char *v, size_t vn,
                         size_t max_body, const struct perr *e)
{
	switch (k[0] | 0x20) {
	case 'c':
		if (name_is(k, kn, "Content-Length", 14))
			return content_length(h, v, vn, max_body, e);
		if (name_is(k, kn, "Connection", 10)) {
			if (has_token(v, vn, "close"))
				h->keep_alive = 0;
			else if (h->minor == 0 && has_token(v, vn, "keep-alive"))
				h->keep_alive = 1;
		}
		return 0;
	case 't':
		if (!name_is(k, kn, "Transfer-Encoding", 17))
			return 0;
		if (h->chunked) {
			snprintf(e->err, e->errlen, "duplicate Transfer-Encoding header");
			return fail(e, 400, "bad_framing");
		}
		if (!name_is(v, vn, "chunked", 7)) {
			snprintf(e->err, e->errlen,
			         "unsupported Transfer-Encoding '%.40s' (only chunked)", v);
			for (char *p = e->err; *p; p++)
				if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\' ||
				    *p == 0x7f)
					*p = '?';
			return fail(e, 400, "bad_framing");
		}
		h->chunked = 1;
		return 0;
	case 'e':
		if (!name_is(k, kn, "Expect", 6))
			return 0;
		if (!name_is(v, vn, "100-continue", 12)) {
			snprintf(e->err, e->errlen, "unsupported Expect '%.40s'", v);
			for (char *p = e->err; *p; p++)
				if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\' ||
				    *p == 0x7f)
					*p = '?';
			return fail(e, 417, "expectation_failed");
		}
		h->expect_continue = 1;
		return 0;
	}
	return 0;
}

/* One field line buf[off..off+n) (CRLF stripped). */
static int field_line(char *buf, size_t off, size_t n, struct front_head *h, size_t max_body,
                      const struct perr *e)
{
	char *l = buf + off;
	char name[48];
	if (l[0] == ' ' || l[0] == '\t') {
		snprintf(e->err, e->errlen, "obs-fold (a line starting with %s) after header %zu",
		         l[0] == ' ' ? "SP" : "HTAB", h->n_fields);
		return fail(e, 400, "bad_header");
	}
	size_t i = 0;
	while (i < n && tchar[(unsigned char)l[i]])
		i++;
	if (i == 0 || i == n || l[i] != ':') {
		safe_name(name, sizeof(name), l, i < n ? i + 1 : i);
		if (i == 0)
			snprintf(e->err, e->errlen, "empty or invalid header name (field %zu)",
			         h->n_fields + 1);
		else
			snprintf(e->err, e->errlen, "byte 0x%02x in header name '%s'",
			         i < n ? (unsigned char)l[i] : 0, name);
		return fail(e, 400, "bad_header");
	}
	if (h->n_fields >= FRONT_MAX_FIELDS) {
		snprintf(e->err, e->errlen, "more than %d header fields", FRONT_MAX_FIELDS);
		return fail(e, 431, "too_many_headers");
	}
	size_t kn = i;
	i++;
	while (i < n && (l[i] == ' ' || l[i] == '\t'))
		i++;
	size_t vs = i, ve = i;
	for (; i < n; i++) {
		unsigned char ch = (unsigned char)l[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
			safe_name(name, sizeof(name), l, kn);
			snprintf(e->err, e->errlen, "control character 0x%02x in header '%s'", ch,
			         name);
			return fail(e, 400, "bad_header");
		}
		if (ch != ' ' && ch != '\t')
			ve = i + 1;
	}
	l[kn] = '\0';
	l[ve] = '\0'; /* ve < n + 2: at worst over the CR */
	struct front_field *f = &h->fields[h->n_fields++];
	f->name = (uint32_t)off;
	f->name_len = (uint32_t)kn;
	f->value = (uint32_t)(off + vs);
	f->value_len = (uint32_t)(ve - vs);
	return special_field(h, l, kn, l + vs, ve - vs, max_body, e);
}

/* The methods forwarded to backends (CONNECT, TRACE and unknown ones are not). */
static int method_served(const char *m)
{
	static const char *const served[] = {"GET",    "POST",    "HEAD", "PUT",
	                                     "DELETE", "OPTIONS", "PATCH"};
	for (size_t i = 0; i < sizeof(served) / sizeof(served[0]); i++)
		if (strcmp(m, served[i]) == 0)
			return 1;
	return 0;
}

/* Where the head ends (after CRLF CRLF) in buf[from..n), or 0. */
static size_t head_end(const char *buf, size_t n)
{
	const char *p = buf, *end = buf + n;
	while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		p++;
		if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
			return (size_t)(p + 2 - buf);
		if (p < end && p[0] == '\n')
			return (size_t)(p + 1 - buf); /* a bare LF: the line check refuses it */
	}
	return 0;
}

int front_parse_head(char *buf, size_t n, size_t max_header, size_t max_body, struct front_head *h,
                     int *status, const char **cause, char *err, size_t errlen)
{
	struct perr e = {status, cause, err, errlen};
	size_t skip = 0;
	while (skip + 1 < n && buf[skip] == '\r' && buf[skip + 1] == '\n' && skip < 8)
		skip += 2; /* RFC 9112 2.2: empty lines before a request line are ignored */
	size_t lim = n - skip < max_header ? n - skip : max_header;
	size_t end = head_end(buf + skip, lim);
	if (end == 0) {
		if (n - skip < max_header)
			return 0;
		snprintf(err, errlen, "request head over limits.max_header (%zu bytes)",
		         max_header);
		return fail(&e, 431, "header_too_large");
	}
	end += skip;
	memset(h, 0, offsetof(struct front_head, fields));
	h->content_length = -1;
	h->len = (uint32_t)end;
	size_t line = skip;
	for (int first = 1; line < end;) {
		const char *lf = memchr(buf + line, '\n', end - line);
		size_t ln = (size_t)(lf - (buf + line));
		if (ln == 0 || buf[line + ln - 1] != '\r') {
			snprintf(err, errlen,
			         "bare LF in the request head (line ends must be CRLF)");
			return fail(&e, 400, "bad_request");
		}
		ln--;
		const char *cr = memchr(buf + line, '\r', ln);
		if (cr != NULL) {
			snprintf(err, errlen, "bare CR in the request head%s",
			         first ? " (request line)" : "");
			return fail(&e, 400, "bad_header");
		}
		if (ln == 0 && first) {
			snprintf(err, errlen, "no request line (only empty lines)");
			return fail(&e, 400, "bad_request");
		}
		if (ln == 0)
			break; /* the empty line that ends the head */
		int r = first ? request_line(buf, line, ln, h, &e)
		              : field_line(buf, line, ln, h, max_body, &e);
		if (r < 0)
			return -1;
		first = 0;
		line += ln + 2;
	}
	if (h->chunked && h->content_length >= 0) {
		snprintf(err, errlen, "both Content-Length and Transfer-Encoding");
		return fail(&e, 400, "bad_framing");
	}
	if (h->chunked && h->minor == 0) {
		snprintf(err, errlen, "Transfer-Encoding in an HTTP/1.0 request");
		return fail(&e, 400, "bad_framing");
	}
	if (h->connect) {
		snprintf(err, errlen, "CONNECT is not served (Turnout is not a forward proxy)");
		return fail(&e, 501, "not_implemented");
	}
	if (!method_served(buf + h->method)) {
		char m[48];
		safe_name(m, sizeof(m), buf + h->method, strlen(buf + h->method));
		snprintf(err, errlen, "method '%s' is not served", m);
		return fail(&e, 501, "not_implemented");
	}
	if (buf[h->target] != '/') {
		snprintf(err, errlen, "the request target must be a path starting with '/'");
		return fail(&e, 400, "bad_request");
	}
	return 1;
}
