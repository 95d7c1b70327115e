/*
 * chunked.c - the chunked body decoder: chunk-size lines (hex, optional
 * extensions after ';', which are ignored), data, CRLF, the last chunk, and
 * trailer lines that are dropped. Every line must end in CRLF and fit in
 * CHUNKED_MAX_LINE; a size overflowing 64 bits or a body past max_body is an
 * error, never a wrap.
 */
#include "chunked.h"

#include <stdio.h>
#include <string.h>

void chunked_init(struct chunked *d)
{
	memset(d, 0, sizeof(*d));
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* One complete line l[0..n) (CRLF stripped) in state SIZE. 0, or -1 (err). */
static int size_line(struct chunked *d, const char *l, size_t n, uint64_t max_body, char *err,
                     size_t errlen)
{
	uint64_t v = 0;
	size_t i = 0;
	for (int x; i < n && (x = hex_digit(l[i])) >= 0; i++) {
		if (v > (UINT64_MAX >> 4))
			goto bad;
		v = v * 16 + (uint64_t)x;
	}
	while (i < n && (l[i] == ' ' || l[i] == '\t'))
		i++;
	if (i == 0 || (i < n && l[i] != ';'))
		goto bad;
	if (v > max_body || d->decoded > max_body - v) {
		snprintf(err, errlen, "chunked request body over the limit of %llu bytes",
		         (unsigned long long)max_body);
		return -1;
	}
	d->remaining = v;
	d->state = v ? CHUNKED_DATA : CHUNKED_TRAILER;
	return 0;
bad:
	snprintf(err, errlen, "malformed chunk-size line '%.*s'", (int)(n > 40 ? 40 : n), l);
	for (char *p = err; *p; p++) /* the echo stays printable */
		if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
			*p = '?';
	return -1;
}

/* One complete line in state DATA_END or TRAILER. 0, or -1 (err). */
static int other_line(struct chunked *d, const char *l, size_t n, char *err, size_t errlen)
{
	(void)l;
	if (d->state == CHUNKED_DATA_END) {
		if (n != 0) {
			snprintf(err, errlen, "chunk data longer than its chunk-size");
			return -1;
		}
		d->state = CHUNKED_SIZE;
		return 0;
	}
	if (n == 0) {
		d->state = CHUNKED_DONE;
		return 0;
	}
	if (++d->trailers > CHUNKED_MAX_TRAILERS) {
		snprintf(err, errlen, "more than %d trailer fields", CHUNKED_MAX_TRAILERS);
		return -1;
	}
	return 0;
}

long chunked_decode(struct chunked *d, const char *in, size_t n, char *out, size_t *out_len,
                    uint64_t max_body, char *err, size_t errlen)
{
	size_t pos = 0;
	while (pos < n && d->state != CHUNKED_DONE) {
		if (d->state == CHUNKED_DATA) {
			size_t take = n - pos;
			if (take > d->remaining)
				take = (size_t)d->remaining;
			memmove(out + *out_len, in + pos, take);
			*out_len += take;
			d->decoded += take;
			d->remaining -= take;
			pos += take;
			if (d->remaining == 0)
				d->state = CHUNKED_DATA_END;
			continue;
		}
		const char *lf = memchr(in + pos, '\n', n - pos);
		size_t len = lf ? (size_t)(lf - (in + pos)) + 1 : n - pos;
		if (len > CHUNKED_MAX_LINE) {
			snprintf(err, errlen, "chunk line over %d bytes", CHUNKED_MAX_LINE);
			return -1;
		}
		if (lf == NULL)
			break; /* incomplete line: wait for more */
		if (len < 2 || in[pos + len - 2] != '\r') {
			snprintf(err, errlen, "chunk line not ended by CRLF");
			return -1;
		}
		const char *l = in + pos;
		for (size_t i = 0; i + 2 < len; i++) {
			if (l[i] == '\r' || (l[i] == 0)) {
				snprintf(err, errlen, "control character in a chunk line");
				return -1;
			}
		}
		int r = d->state == CHUNKED_SIZE ? size_line(d, l, len - 2, max_body, err, errlen)
		                                 : other_line(d, l, len - 2, err, errlen);
		if (r < 0)
			return -1;
		pos += len;
	}
	return (long)pos;
}
