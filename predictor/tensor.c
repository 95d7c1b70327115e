/*
 * tensor.c - dense tensors (see tensor.h).
 *
 * A tensor is one allocation: the struct, then its data at TENSOR_HDR bytes
 * (32-byte aligned from the start of the block). Freed tensors of up to
 * TENSOR_CACHE_MAX_BYTES go to a per-thread cache, and tensor_new takes the
 * smallest cached block that fits before it calls malloc: a model run then
 * recycles the previous run's intermediates. The cache of a thread is freed
 * by a pthread key destructor when the thread exits.
 */
#include "tensor.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define TENSOR_HDR ((sizeof(struct tensor) + 31) & ~(size_t)31)

/* The cache is off under AddressSanitizer: recycled blocks would hide a use after free. */
#if defined(__SANITIZE_ADDRESS__)
#define TENSOR_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TENSOR_CACHE 0
#endif
#endif
#ifndef TENSOR_CACHE
#define TENSOR_CACHE 1
#endif

struct tensor_cache {
	size_t n;
	struct tensor *t[TENSOR_CACHE_SLOTS];
};

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_ok;
static _Thread_local struct tensor_cache *cache_tls;

static void cache_destroy(void *p)
{
	struct tensor_cache *c = p;
	for (size_t i = 0; i < c->n; i++)
		free(c->t[i]);
	free(c);
}

static void cache_init(void)
{
	cache_ok = pthread_key_create(&cache_key, cache_destroy) == 0;
}

/* This thread's cache, made on first use; NULL when there is none. */
static struct tensor_cache *cache_get(void)
{
	if (!TENSOR_CACHE)
		return NULL;
	if (cache_tls)
		return cache_tls;
	pthread_once(&cache_once, cache_init);
	struct tensor_cache *c = cache_ok ? calloc(1, sizeof(*c)) : NULL;
	if (c && pthread_setspecific(cache_key, c) != 0) {
		free(c);
		c = NULL;
	}
	return cache_tls = c;
}

/* The smallest cached block holding at least bytes of data, taken out; or NULL. */
static struct tensor *cache_take(size_t bytes)
{
	struct tensor_cache *c = bytes <= TENSOR_CACHE_MAX_BYTES ? cache_get() : NULL;
	if (!c)
		return NULL;
	size_t best = c->n;
	for (size_t i = 0; i < c->n; i++)
		if (c->t[i]->cap >= bytes && (best == c->n || c->t[i]->cap < c->t[best]->cap))
			best = i;
	if (best == c->n)
		return NULL;
	struct tensor *t = c->t[best];
	c->t[best] = c->t[--c->n];
	return t;
}

size_t tensor_dtype_size(enum tensor_dtype t)
{
	switch (t) {
	case TENSOR_FLOAT:
	case TENSOR_INT32:
		return 4;
	case TENSOR_INT64:
	case TENSOR_DOUBLE:
		return 8;
	case TENSOR_UINT8:
	case TENSOR_INT8:
	case TENSOR_BOOL:
		return 1;
	case TENSOR_FLOAT16:
	case TENSOR_BFLOAT16:
		return 2;
	case TENSOR_UNDEFINED:
		break;
	}
	return 0;
}

const char *tensor_dtype_v2_name(enum tensor_dtype t)
{
	switch (t) {
	case TENSOR_FLOAT:
		return "FP32";
	case TENSOR_INT32:
		return "INT32";
	case TENSOR_INT64:
		return "INT64";
	case TENSOR_DOUBLE:
		return "FP64";
	case TENSOR_UINT8:
		return "UINT8";
	case TENSOR_INT8:
		return "INT8";
	case TENSOR_BOOL:
		return "BOOL";
	case TENSOR_FLOAT16:
		return "FP16";
	case TENSOR_BFLOAT16:
		return "BF16";
	case TENSOR_UNDEFINED:
		break;
	}
	return NULL;
}

/*
 * A 16-bit binary float with ebits exponent bits and mbits fraction bits
 * (FLOAT16 5/10, BFLOAT16 8/7): decode, and encode rounding to nearest even.
 * frexp and ldexp are exact, and nearbyint rounds ties to even in the default
 * rounding mode, so the encoder rounds once from the double.
 */
static double small_unpack(uint16_t h, int ebits, int mbits)
{
	int bias = (1 << (ebits - 1)) - 1, emax = (1 << ebits) - 1;
	int e = (h >> mbits) & emax, m = h & ((1 << mbits) - 1);
	double v;
	if (e == 0)
		v = ldexp(m, 1 - bias - mbits);
	else if (e == emax)
		v = m ? NAN : INFINITY;
	else
		v = ldexp(m + (1 << mbits), e - bias - mbits);
	return h & 0x8000 ? -v : v;
}

static uint16_t small_pack(double d, int ebits, int mbits)
{
	int bias = (1 << (ebits - 1)) - 1, emax = (1 << ebits) - 1;
	uint16_t sign = signbit(d) ? 0x8000 : 0;
	uint16_t inf = (uint16_t)(sign | (emax << mbits));
	if (isnan(d))
		return (uint16_t)(inf | (1 << (mbits - 1)));
	double a = fabs(d);
	if (isinf(a))
		return inf;
	if (a < ldexp(1.0, 1 - bias)) /* subnormal: units of the smallest one */
		return (uint16_t)(sign | (uint16_t)nearbyint(ldexp(a, bias - 1 + mbits)));
	int e;
	double f = frexp(a, &e); /* a = f * 2^e, f in [0.5, 1) */
	double m = nearbyint(ldexp(f, mbits + 1));
	if (m >= ldexp(1.0, mbits + 1)) { /* rounded up to the next power of two */
		m = ldexp(1.0, mbits);
		e++;
	}
	int be = e - 1 + bias;
	if (be >= emax)
		return inf;
	return (uint16_t)(sign | (be << mbits) | ((uint16_t)m - (1 << mbits)));
}

float tensor_f16_to_float(uint16_t h)
{
	return (float)small_unpack(h, 5, 10);
}

uint16_t tensor_f16_from_double(double d)
{
	return small_pack(d, 5, 10);
}

float tensor_bf16_to_float(uint16_t h)
{
	return (float)small_unpack(h, 8, 7);
}

uint16_t tensor_bf16_from_double(double d)
{
	return small_pack(d, 8, 7);
}

static struct tensor *tensor_alloc(const char *name, enum tensor_dtype dtype, int ndim,
                                   const int64_t *dims, int zero)
{
	size_t esize = tensor_dtype_size(dtype);
	if (esize == 0 || ndim < 0 || ndim > TENSOR_MAX_DIMS)
		return NULL;
	size_t nelem = 1;
	for (int i = 0; i < ndim; i++) {
		if (dims[i] < 0)
			return NULL;
		if (dims[i] != 0 && nelem > SIZE_MAX / esize / (size_t)dims[i])
			return NULL;
		nelem *= (size_t)dims[i];
	}
	/* One byte at least, so that data is never NULL. */
	size_t bytes = nelem ? nelem * esize : 1;
	if (bytes > SIZE_MAX - TENSOR_HDR)
		return NULL;
	struct tensor *t = cache_take(bytes);
	size_t cap = t ? t->cap : bytes;
	if (!t && !(t = malloc(TENSOR_HDR + bytes)))
		return NULL;
	memset(t, 0, sizeof(*t));
	t->cap = cap;
	t->data = (char *)t + TENSOR_HDR;
	if (zero)
		memset(t->data, 0, bytes);
	t->dtype = dtype;
	t->ndim = ndim;
	if (ndim)
		memcpy(t->dims, dims, sizeof(dims[0]) * (size_t)ndim);
	t->nelem = nelem;
	if (name && !(t->name = strdup(name))) {
		tensor_free(t);
		return NULL;
	}
	return t;
}

struct tensor *tensor_new(const char *name, enum tensor_dtype dtype, int ndim, const int64_t *dims)
{
	return tensor_alloc(name, dtype, ndim, dims, 1);
}

struct tensor *tensor_new_uninit(const char *name, enum tensor_dtype dtype, int ndim,
                                 const int64_t *dims)
{
	return tensor_alloc(name, dtype, ndim, dims, 0);
}

void tensor_free(struct tensor *t)
{
	if (!t)
		return;
	free(t->name);
	t->name = NULL;
	struct tensor_cache *c = t->cap <= TENSOR_CACHE_MAX_BYTES ? cache_get() : NULL;
	if (c && c->n < TENSOR_CACHE_SLOTS) {
		c->t[c->n++] = t;
		return;
	}
	free(t);
}
