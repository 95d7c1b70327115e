/*
 * fuzz_front.c - libFuzzer driver for the proxy listener's request parser
 * (router/front_parse.c) and the chunked decoder (router/chunked.c).
 *
 * The input is a request as a client would send it. The parser must either
 * want more bytes, refuse with a 4xx/5xx status and a cause, or accept a head
 * whose offsets all lie inside it; an accepted chunked request's body is then
 * fed to the decoder in two pieces, which must consume at most what it got
 * and produce at most max_body bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunked.h"
#include "front.h"

#define MAX_HEADER 4096
#define MAX_BODY   8192

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_body(const char *p, size_t n)
{
	static char out[MAX_BODY + 1];
	struct chunked d;
	char err[160];
	size_t out_len = 0, half = n / 2;
	chunked_init(&d);
	long a = chunked_decode(&d, p, half, out, &out_len, MAX_BODY, err, sizeof(err));
	if (a < 0)
		return;
	if ((size_t)a > half || out_len > MAX_BODY)
		abort();
	long b =
	    chunked_decode(&d, p + a, n - (size_t)a, out, &out_len, MAX_BODY, err, sizeof(err));
	if (b >= 0 && ((size_t)b > n - (size_t)a || out_len > MAX_BODY))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct front_head h;
	char *buf = malloc(size ? size : 1);
	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	int status = 0;
	const char *cause = NULL;
	char err[256];
	int r = front_parse_head(buf, size, MAX_HEADER, MAX_BODY, &h, &status, &cause, err,
	                         sizeof(err));
	if (r < 0 && (status < 400 || status > 505 || cause == NULL || strlen(err) >= sizeof(err)))
		abort();
	if (r == 0 && size >= MAX_HEADER + 8)
		abort(); /* a head can never be awaited past max_header */
	if (r > 0) {
		if (h.len > size || h.n_fields > FRONT_MAX_FIELDS || h.target >= h.len ||
		    buf[h.target] != '/' || strlen(buf + h.target) != h.target_len)
			abort();
		for (size_t i = 0; i < h.n_fields; i++)
			if (h.fields[i].name + h.fields[i].name_len >= h.len ||
			    h.fields[i].value + h.fields[i].value_len >= h.len ||
			    strlen(buf + h.fields[i].name) != h.fields[i].name_len ||
			    strlen(buf + h.fields[i].value) != h.fields[i].value_len)
				abort();
		if (h.chunked)
			check_body(buf + h.len, size - h.len);
	}
	free(buf);
	return 0;
}
