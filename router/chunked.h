/*
 * chunked.h - an incremental decoder of HTTP/1.1 chunked bodies (RFC 9112
 * 7.1), on plain bytes, for any side that receives one (the proxy listener's
 * request bodies today). It decodes in place or into another buffer, keeps
 * only a few integers between calls, and drops trailer fields.
 */
#ifndef TURNOUT_CHUNKED_H
#define TURNOUT_CHUNKED_H

#include <stddef.h>
#include <stdint.h>

#define CHUNKED_MAX_LINE     4096 /* a chunk-size or trailer line, CRLF included */
#define CHUNKED_MAX_TRAILERS 100  /* trailer fields */

enum chunked_state {
	CHUNKED_SIZE,     /* expecting a chunk-size line */
	CHUNKED_DATA,     /* inside a chunk's data */
	CHUNKED_DATA_END, /* expecting the CRLF after a chunk's data */
	CHUNKED_TRAILER,  /* expecting a trailer line or the final CRLF */
	CHUNKED_DONE,     /* the body is complete */
};

/* The decoder's state: zero it (or chunked_init) before the first call. */
struct chunked {
	enum chunked_state state;
	uint64_t remaining; /* data bytes left in the current chunk */
	uint64_t decoded;   /* body bytes produced so far */
	unsigned trailers;
};

/* Reset d for a new body. */
void chunked_init(struct chunked *d);

/*
 * Decode the raw bytes in[0..n) into out, which may alias in as long as
 * out <= in (bytes move with memmove). Stops at the end of the body (state
 * CHUNKED_DONE) or where a line is incomplete. Returns the raw bytes consumed
 * (the rest must be offered again with more appended) and adds the decoded
 * length to *out_len; -1 with the reason in err on malformed input or when
 * the decoded body would pass max_body.
 */
long chunked_decode(struct chunked *d, const char *in, size_t n, char *out, size_t *out_len,
                    uint64_t max_body, char *err, size_t errlen);

#endif
