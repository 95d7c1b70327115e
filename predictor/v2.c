/*
 * v2.c - KServe V2 / Open Inference Protocol JSON codec (see v2.h).
 *
 * Requests are parsed with jansson and checked field by field against the
 * model signature, so every refusal names the field ("inputs[0].shape: ...").
 * Responses are written by hand through a small stack buffer into one
 * evbuffer: the infer response is the hot path and a jansson tree per reply
 * would cost an allocation per number.
 */
#include "log.h"
#include "v2.h"

#include <event2/buffer.h>
#include <float.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------ */

char *v2_shape_str(char *buf, size_t buflen, int ndim, const int64_t *dims)
{
	size_t n = 0;
	if (buflen == 0)
		return buf;
	buf[0] = 0;
	n += (size_t)snprintf(buf + n, buflen - n, "[");
	for (int i = 0; i < ndim && n < buflen; i++) {
		if (dims[i] < 0)
			n += (size_t)snprintf(buf + n, buflen - n, "%sN", i ? "," : "");
		else
			n += (size_t)snprintf(buf + n, buflen - n, "%s%" PRId64, i ? "," : "",
			                      dims[i]);
	}
	if (n < buflen)
		snprintf(buf + n, buflen - n, "]");
	return buf;
}

/*
 * jansson reports NaN/Infinity (which Python's json.dumps happily writes) as
 * an "invalid token"; say what it really is.
 */
static int looks_non_finite(const char *body, size_t len, size_t pos)
{
	static const char *const words[] = {"NaN", "nan", "Infinity", "inf", "Inf"};
	size_t lo = pos > 16 ? pos - 16 : 0;
	size_t hi = pos + 16 < len ? pos + 16 : len;
	for (size_t i = lo; i < hi; i++) {
		for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
			size_t wl = strlen(words[w]);
			if (i + wl <= hi && memcmp(body + i, words[w], wl) == 0)
				return 1;
		}
	}
	return 0;
}

static void json_error_msg(const char *body, size_t len, const json_error_t *je, char *err,
                           size_t errlen)
{
	if (strstr(je->text, "invalid token") && looks_non_finite(body, len, (size_t)je->position))
		log_errbuf(err, errlen,
		           "malformed JSON at line %d, column %d: NaN and Infinity are not valid "
		           "JSON numbers (input values must be finite)",
		           je->line, je->column);
	else
		log_errbuf(err, errlen, "malformed JSON at line %d, column %d: %s", je->line,
		           je->column, je->text);
}

/* ---- request parsing ---------------------------------------------------- */

void v2_request_free(struct v2_request *req)
{
	if (!req)
		return;
	if (req->inputs) {
		for (size_t i = 0; i < req->n_inputs; i++)
			tensor_free(req->inputs[i]);
		free(req->inputs);
	}
	free(req->want);
	free(req->id);
	free(req);
}

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a real number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		break;
	}
	return "null";
}

/* Store one JSON scalar v as element k of t; 0, or -1 with err. */
static int put_value(struct tensor *t, size_t k, const json_t *v, size_t idx, char *err,
                     size_t errlen)
{
	const char *want = "a number";
	switch (t->dtype) {
	case TENSOR_FLOAT:
	case TENSOR_DOUBLE: {
		if (!json_is_number(v))
			break;
		double d = json_number_value(v);
		if (!isfinite(d) || (t->dtype == TENSOR_FLOAT && fabs(d) > FLT_MAX)) {
			log_errbuf(err, errlen, "inputs[%zu].data[%zu]: %g is out of %s range", idx,
			           k, d, tensor_dtype_v2_name(t->dtype));
			return -1;
		}
		if (t->dtype == TENSOR_FLOAT)
			((float *)t->data)[k] = (float)d;
		else
			((double *)t->data)[k] = d;
		return 0;
	}
	case TENSOR_INT64:
	case TENSOR_INT32:
	case TENSOR_INT8:
	case TENSOR_UINT8: {
		want = "an integer";
		if (!json_is_integer(v))
			break;
		json_int_t x = json_integer_value(v);
		int64_t lo = t->dtype == TENSOR_INT32   ? INT32_MIN
		             : t->dtype == TENSOR_INT8  ? INT8_MIN
		             : t->dtype == TENSOR_UINT8 ? 0
		                                        : INT64_MIN;
		int64_t hi = t->dtype == TENSOR_INT32   ? INT32_MAX
		             : t->dtype == TENSOR_INT8  ? INT8_MAX
		             : t->dtype == TENSOR_UINT8 ? UINT8_MAX
		                                        : INT64_MAX;
		if (x < lo || x > hi) {
			log_errbuf(err, errlen, "inputs[%zu].data[%zu]: %lld is out of %s range",
			           idx, k, (long long)x, tensor_dtype_v2_name(t->dtype));
			return -1;
		}
		if (t->dtype == TENSOR_INT64)
			((int64_t *)t->data)[k] = x;
		else if (t->dtype == TENSOR_INT32)
			((int32_t *)t->data)[k] = (int32_t)x;
		else if (t->dtype == TENSOR_INT8)
			((int8_t *)t->data)[k] = (int8_t)x;
		else
			((uint8_t *)t->data)[k] = (uint8_t)x;
		return 0;
	}
	case TENSOR_BOOL:
		want = "a boolean";
		if (!json_is_boolean(v))
			break;
		((uint8_t *)t->data)[k] = json_is_true(v) ? 1 : 0;
		return 0;
	case TENSOR_FLOAT16:
	case TENSOR_BFLOAT16: {
		/* FP16 / BF16 travel as JSON numbers, rounded to nearest even here. */
		if (!json_is_number(v))
			break;
		double d = json_number_value(v);
		uint16_t h = t->dtype == TENSOR_FLOAT16 ? tensor_f16_from_double(d)
		                                        : tensor_bf16_from_double(d);
		float back =
		    t->dtype == TENSOR_FLOAT16 ? tensor_f16_to_float(h) : tensor_bf16_to_float(h);
		if (!isfinite(d) || !isfinite(back)) {
			log_errbuf(err, errlen, "inputs[%zu].data[%zu]: %g is out of %s range", idx,
			           k, d, tensor_dtype_v2_name(t->dtype));
			return -1;
		}
		((uint16_t *)t->data)[k] = h;
		return 0;
	}
	case TENSOR_UNDEFINED:
		log_errbuf(err, errlen, "inputs[%zu]: unsupported datatype", idx);
		return -1;
	}
	log_errbuf(err, errlen, "inputs[%zu].data[%zu]: expected %s, got %s", idx, k, want,
	           json_kind(v));
	return -1;
}

/*
 * Walk data (flat or nested arrays, row-major) into t. *count is the number
 * of scalars seen; values past t->nelem are only counted, so that a wrong
 * element count can be reported exactly.
 */
static int fill(struct tensor *t, const json_t *v, size_t *count, int depth, size_t idx, char *err,
                size_t errlen)
{
	if (depth > V2_MAX_JSON_DEPTH) {
		log_errbuf(err, errlen, "inputs[%zu].data: nested deeper than %d", idx,
		           V2_MAX_JSON_DEPTH);
		return -1;
	}
	if (json_is_array(v)) {
		size_t n = json_array_size(v);
		for (size_t i = 0; i < n; i++)
			if (fill(t, json_array_get(v, i), count, depth + 1, idx, err, errlen) < 0)
				return -1;
		return 0;
	}
	if (*count < t->nelem && put_value(t, *count, v, idx, err, errlen) < 0)
		return -1;
	(*count)++;
	return 0;
}

static int parse_shape(const json_t *js, size_t idx, int *ndim, int64_t *dims, char *err,
                       size_t errlen)
{
	if (!json_is_array(js)) {
		log_errbuf(err, errlen, "inputs[%zu].shape: %s", idx,
		           js ? "expected an array of integers" : "missing");
		return -1;
	}
	size_t n = json_array_size(js);
	if (n > TENSOR_MAX_DIMS) {
		log_errbuf(err, errlen, "inputs[%zu].shape: %zu dimensions, at most %d allowed",
		           idx, n, TENSOR_MAX_DIMS);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *d = json_array_get(js, i);
		if (!json_is_integer(d) || json_integer_value(d) < 0) {
			log_errbuf(
			    err, errlen,
			    "inputs[%zu].shape[%zu]: expected a non-negative integer, got %s", idx,
			    i, json_kind(d));
			return -1;
		}
		dims[i] = json_integer_value(d);
	}
	*ndim = (int)n;
	return 0;
}

/*
 * Each value takes at least two bytes of JSON ("0,"), so a large shape asking
 * for more values than half the body can hold is refused before any
 * allocation: a 100-byte request cannot make us allocate 64 MiB. Small
 * tensors skip this check so that their errors stay the precise ones
 * ("needs 64 values, got 3").
 */
static int body_too_small(uint64_t nelem, size_t len)
{
	return nelem > 4096 && nelem > len / 2 + 1;
}

/* Check a request shape against the signature and the body length; 0 or -1 with err. */
static int check_shape(const struct onnx_value_info *vi, size_t idx, int ndim, const int64_t *dims,
                       size_t body_len, char *err, size_t errlen)
{
	char want[128], got[128];
	/* ndim -1: the model declares no shape; 0 is a scalar and must match as such. */
	int ok = vi->ndim < 0 || vi->ndim == ndim;
	for (int i = 0; ok && vi->ndim > 0 && i < ndim; i++)
		if (vi->dims[i] >= 0 && vi->dims[i] != dims[i])
			ok = 0;
	if (!ok) {
		log_errbuf(err, errlen, "inputs[%zu].shape: expected %s, got %s", idx,
		           v2_shape_str(want, sizeof(want), vi->ndim, vi->dims),
		           v2_shape_str(got, sizeof(got), ndim, dims));
		return -1;
	}
	uint64_t nelem = 1;
	for (int i = 0; i < ndim; i++) {
		if (dims[i] == 0) {
			log_errbuf(err, errlen,
			           "inputs[%zu].shape: dimension %d is 0 (batch must be >= 1)", idx,
			           i);
			return -1;
		}
		if ((uint64_t)dims[i] > V2_MAX_ELEMENTS ||
		    nelem * (uint64_t)dims[i] > V2_MAX_ELEMENTS) {
			log_errbuf(err, errlen,
			           "inputs[%zu].shape: %s is over the limit of %u elements", idx,
			           v2_shape_str(got, sizeof(got), ndim, dims), V2_MAX_ELEMENTS);
			return -1;
		}
		nelem *= (uint64_t)dims[i];
	}
	if (body_too_small(nelem, body_len)) {
		log_errbuf(err, errlen,
		           "inputs[%zu].shape: %s is %llu values, more than a %zu-byte body holds",
		           idx, v2_shape_str(got, sizeof(got), ndim, dims),
		           (unsigned long long)nelem, body_len);
		return -1;
	}
	return 0;
}

static size_t find_name(const struct onnx_value_info *const *vis, size_t n, const char *name)
{
	for (size_t j = 0; j < n; j++)
		if (vis[j]->name && strcmp(vis[j]->name, name) == 0)
			return j;
	return n;
}

static int parse_input(const struct v2_sig *sig, struct v2_request *req, const json_t *in,
                       size_t idx, size_t body_len, char *err, size_t errlen)
{
	if (!json_is_object(in)) {
		log_errbuf(err, errlen, "inputs[%zu]: expected an object, got %s", idx,
		           json_kind(in));
		return -1;
	}
	const char *name = json_string_value(json_object_get(in, "name"));
	if (!name) {
		log_errbuf(err, errlen, "inputs[%zu].name: missing or not a string", idx);
		return -1;
	}
	size_t j = find_name(sig->inputs, sig->n_inputs, name);
	if (j == sig->n_inputs) {
		log_errbuf(err, errlen,
		           "inputs[%zu].name: unknown input '%.64s' (model input%s: %s%s)", idx,
		           name, sig->n_inputs > 1 ? "s" : "",
		           sig->n_inputs ? sig->inputs[0]->name : "none",
		           sig->n_inputs > 1 ? ", ..." : "");
		return -1;
	}
	if (req->inputs[j]) {
		log_errbuf(err, errlen, "inputs[%zu].name: input '%s' given twice", idx, name);
		return -1;
	}
	const struct onnx_value_info *vi = sig->inputs[j];
	const char *dt = json_string_value(json_object_get(in, "datatype"));
	const char *want_dt = tensor_dtype_v2_name(vi->dtype);
	if (!dt) {
		log_errbuf(err, errlen, "inputs[%zu].datatype: missing or not a string", idx);
		return -1;
	}
	if (!want_dt || strcmp(dt, want_dt) != 0) {
		log_errbuf(err, errlen, "inputs[%zu].datatype: expected %s, got %.32s", idx,
		           want_dt ? want_dt : "(unsupported)", dt);
		return -1;
	}
	int ndim = 0;
	int64_t dims[TENSOR_MAX_DIMS];
	if (parse_shape(json_object_get(in, "shape"), idx, &ndim, dims, err, errlen) < 0 ||
	    check_shape(vi, idx, ndim, dims, body_len, err, errlen) < 0)
		return -1;
	const json_t *data = json_object_get(in, "data");
	if (!data) {
		log_errbuf(err, errlen, "inputs[%zu].data: missing", idx);
		return -1;
	}
	struct tensor *t = tensor_new(vi->name, vi->dtype, ndim, dims);
	if (!t) {
		log_errbuf(err, errlen, "inputs[%zu]: out of memory", idx);
		return -1;
	}
	req->inputs[j] = t;
	size_t count = 0;
	if (fill(t, data, &count, 0, idx, err, errlen) < 0)
		return -1;
	if (count != t->nelem) {
		char got[128];
		log_errbuf(err, errlen, "inputs[%zu].data: shape %s needs %zu values, got %zu", idx,
		           v2_shape_str(got, sizeof(got), ndim, dims), t->nelem, count);
		return -1;
	}
	return 0;
}

static int parse_outputs(const struct v2_sig *sig, struct v2_request *req, const json_t *outs,
                         char *err, size_t errlen)
{
	if (!outs) {
		memset(req->want, 1, req->n_outputs);
		return 0;
	}
	if (!json_is_array(outs)) {
		log_errbuf(err, errlen, "outputs: expected an array, got %s", json_kind(outs));
		return -1;
	}
	for (size_t i = 0; i < json_array_size(outs); i++) {
		const json_t *o = json_array_get(outs, i);
		const char *name = json_string_value(json_object_get(o, "name"));
		if (!json_is_object(o) || !name) {
			log_errbuf(err, errlen, "outputs[%zu].name: missing or not a string", i);
			return -1;
		}
		size_t j = find_name(sig->outputs, sig->n_outputs, name);
		if (j == sig->n_outputs) {
			log_errbuf(err, errlen, "outputs[%zu].name: unknown output '%.64s'", i,
			           name);
			return -1;
		}
		req->want[j] = 1;
	}
	return 0;
}

static int parse_top(const struct v2_sig *sig, struct v2_request *req, const json_t *root,
                     size_t body_len, char *err, size_t errlen)
{
	if (!json_is_object(root)) {
		log_errbuf(err, errlen, "request: expected a JSON object, got %s", json_kind(root));
		return -1;
	}
	const json_t *id = json_object_get(root, "id");
	if (id) {
		if (!json_is_string(id) || json_string_length(id) > V2_MAX_ID_LEN) {
			log_errbuf(err, errlen, "id: expected a string of at most %d bytes",
			           V2_MAX_ID_LEN);
			return -1;
		}
		if (!(req->id = strdup(json_string_value(id)))) {
			log_errbuf(err, errlen, "out of memory");
			return -1;
		}
	}
	const json_t *params = json_object_get(root, "parameters");
	if (params && !json_is_object(params)) {
		log_errbuf(err, errlen, "parameters: expected an object, got %s",
		           json_kind(params));
		return -1;
	}
	const json_t *inputs = json_object_get(root, "inputs");
	if (!json_is_array(inputs) || json_array_size(inputs) == 0) {
		log_errbuf(err, errlen, "inputs: %s",
		           inputs ? "expected a non-empty array" : "missing");
		return -1;
	}
	if (json_array_size(inputs) > V2_MAX_INPUTS) {
		log_errbuf(err, errlen, "inputs: more than %d inputs", V2_MAX_INPUTS);
		return -1;
	}
	for (size_t i = 0; i < json_array_size(inputs); i++)
		if (parse_input(sig, req, json_array_get(inputs, i), i, body_len, err, errlen) < 0)
			return -1;
	for (size_t j = 0; j < sig->n_inputs; j++) {
		if (!req->inputs[j]) {
			log_errbuf(err, errlen, "inputs: missing input '%s'", sig->inputs[j]->name);
			return -1;
		}
	}
	if (parse_outputs(sig, req, json_object_get(root, "outputs"), err, errlen) < 0)
		return -1;
	const struct tensor *first = req->n_inputs ? req->inputs[0] : NULL;
	req->batch = first && first->ndim > 0 ? first->dims[0] : 1;
	return 0;
}

static struct v2_request *request_new(const struct v2_sig *sig)
{
	struct v2_request *req = calloc(1, sizeof(*req));
	if (!req)
		return NULL;
	req->n_inputs = sig->n_inputs;
	req->n_outputs = sig->n_outputs;
	req->inputs = calloc(sig->n_inputs ? sig->n_inputs : 1, sizeof(req->inputs[0]));
	req->want = calloc(sig->n_outputs ? sig->n_outputs : 1, 1);
	if (!req->inputs || !req->want) {
		v2_request_free(req);
		return NULL;
	}
	return req;
}

struct v2_request *v2_request_parse_general(const struct v2_sig *sig, const char *body, size_t len,
                                            char *err, size_t errlen)
{
	json_error_t je;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		json_error_msg(body, len, &je, err, errlen);
		return NULL;
	}
	struct v2_request *req = request_new(sig);
	if (!req) {
		log_errbuf(err, errlen, "out of memory");
		goto fail;
	}
	if (parse_top(sig, req, root, len, err, errlen) < 0)
		goto fail;
	json_decref(root);
	return req;
fail:
	v2_request_free(req);
	json_decref(root);
	return NULL;
}

/* ---- fast path ----------------------------------------------------------
 *
 * The common request (plain ASCII strings, FP32 data, known keys only) is
 * scanned once, numbers going straight into the tensor, with no JSON tree.
 * It is strict: anything it does not fully understand (escapes, non-ASCII,
 * unknown keys, another datatype, any error at all) makes it give up, and
 * the general path above parses the body again and produces the error
 * message. So it only ever accepts what the general path accepts, with the
 * same result; the fuzzer checks exactly that.
 */

struct fp {
	const char *p, *end;
	size_t len; /* of the whole body */
};

static void fp_ws(struct fp *f)
{
	while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' || *f->p == '\r'))
		f->p++;
}

static int fp_lit(struct fp *f, char c)
{
	fp_ws(f);
	if (f->p < f->end && *f->p == c) {
		f->p++;
		return 1;
	}
	return 0;
}

/* A string of printable ASCII without escapes; its bytes in *s, *n. */
static int fp_string(struct fp *f, const char **s, size_t *n)
{
	fp_ws(f);
	if (f->p >= f->end || *f->p != '"')
		return -1;
	const char *q = ++f->p;
	for (; f->p < f->end; f->p++) {
		unsigned char c = (unsigned char)*f->p;
		if (c == '"') {
			*s = q;
			*n = (size_t)(f->p++ - q);
			return 0;
		}
		if (c == '\\' || c < 0x20 || c >= 0x80)
			return -1;
	}
	return -1;
}

static int fp_is_digit(const struct fp *f, const char *p)
{
	return p < f->end && *p >= '0' && *p <= '9';
}

/* 10^0..10^22: the powers of ten a double holds exactly. */
static const double fp_exact_pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                        1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                        1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/*
 * The usual number, at most 15 digits with an optional fraction and no
 * exponent ("13.0", "-2", "0.25"), in one tight pass: the same double as the
 * general scan below (an exact integer, or m / 10^frac, one correctly rounded
 * division). Returns 1 and advances f, or 0 (f untouched) for anything else,
 * which the general scan then takes.
 */
static inline int fp_short(struct fp *f, double *out)
{
	const char *p = f->p, *end = f->end;
	const char *lim = end - p > 18 ? p + 18 : end; /* '-', 15 digits, '.': never more */
	int neg = p < lim && *p == '-';
	p += neg;
	const char *d0 = p;
	uint64_t m = 0; /* at most 17 digits before lim: no overflow */
	unsigned c;
	while (p < lim && (c = (unsigned)(*p - '0')) <= 9) {
		m = m * 10 + c;
		p++;
	}
	size_t ni = (size_t)(p - d0), nf = 0;
	if (ni == 0 || (ni > 1 && *d0 == '0')) /* none, or a leading zero: refused below */
		return 0;
	if (p < lim && *p == '.') {
		const char *f0 = ++p;
		while (p < lim && (c = (unsigned)(*p - '0')) <= 9) {
			m = m * 10 + c;
			p++;
		}
		nf = (size_t)(p - f0);
		if (nf == 0)
			return 0;
	}
	if (ni + nf > 15 ||
	    (p < end && ((unsigned)(*p - '0') <= 9 || *p == '.' || *p == 'e' || *p == 'E')))
		return 0;
	if (nf) {
		double v = (double)m / fp_exact_pow10[nf];
		*out = neg ? -v : v;
	} else {
		*out = (double)(neg ? -(int64_t)m : (int64_t)m);
	}
	f->p = p;
	return 1;
}

/*
 * A strict JSON number, converted as jansson would; -1 for what jansson
 * refuses. One pass collects the digits: an integer is exact (jansson's
 * range is int64: at most 18 digits here); a decimal with at most 15 digits
 * and a power of ten within 10^+-22 is m * 10^e or m / 10^-e with m and 10^e
 * exact doubles, one correctly rounded operation, so the same double as
 * strtod's; anything longer goes to strtod.
 */
static int fp_number(struct fp *f, double *out)
{
	fp_ws(f);
	if (fp_short(f, out))
		return 0;
	const char *s = f->p, *p = s;
	int neg = p < f->end && *p == '-', is_int = 1, nd = 0, frac = 0;
	uint64_t m = 0;
	long e = 0;
	p += neg;
	if (!fp_is_digit(f, p))
		return -1;
	if (*p == '0') {
		p++;
		nd = 1;
	} else {
		for (; fp_is_digit(f, p); p++, nd++)
			if (nd < 19)
				m = m * 10 + (uint64_t)(*p - '0');
	}
	if (p < f->end && *p == '.') {
		is_int = 0;
		p++;
		if (!fp_is_digit(f, p))
			return -1;
		for (; fp_is_digit(f, p); p++, nd++)
			if (nd < 19) {
				m = m * 10 + (uint64_t)(*p - '0');
				frac++;
			}
	}
	if (p < f->end && (*p == 'e' || *p == 'E')) {
		is_int = 0;
		p++;
		int eneg = p < f->end && *p == '-';
		if (p < f->end && (*p == '+' || *p == '-'))
			p++;
		if (!fp_is_digit(f, p))
			return -1;
		for (; fp_is_digit(f, p); p++)
			if (e < 100000)
				e = e * 10 + (*p - '0');
		e = eneg ? -e : e;
	}
	if (is_int) {
		if (nd > 18)
			return -1;
		*out = (double)(neg ? -(int64_t)m : (int64_t)m);
	} else if (nd <= 15 && e - frac >= -22 && e - frac <= 22) {
		double v = (double)m;
		e -= frac;
		v = e < 0 ? v / fp_exact_pow10[-e] : v * fp_exact_pow10[e];
		*out = neg ? -v : v;
	} else {
		char buf[64], *endp;
		size_t n = (size_t)(p - s);
		if (n >= sizeof(buf))
			return -1;
		memcpy(buf, s, n);
		buf[n] = 0;
		double d = strtod(buf, &endp);
		if (endp != buf + n || !isfinite(d))
			return -1;
		*out = d;
	}
	f->p = p;
	return 0;
}

static int fp_skip(struct fp *f, int depth);

/* An object whose values are skipped; duplicate keys are refused as jansson does. */
static int fp_skip_object(struct fp *f, int depth)
{
	const char *ks[16];
	size_t kn[16], nk = 0;
	if (!fp_lit(f, '{'))
		return -1;
	if (fp_lit(f, '}'))
		return 0;
	do {
		const char *k;
		size_t n;
		if (fp_string(f, &k, &n) < 0 || !fp_lit(f, ':') || nk == 16)
			return -1;
		for (size_t i = 0; i < nk; i++)
			if (kn[i] == n && memcmp(ks[i], k, n) == 0)
				return -1;
		ks[nk] = k;
		kn[nk++] = n;
		if (fp_skip(f, depth + 1) < 0)
			return -1;
	} while (fp_lit(f, ','));
	return fp_lit(f, '}') ? 0 : -1;
}

static int fp_word(struct fp *f, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(f->end - f->p) < n || memcmp(f->p, w, n) != 0)
		return -1;
	f->p += n;
	return 0;
}

static int fp_skip(struct fp *f, int depth)
{
	fp_ws(f);
	if (depth > V2_MAX_JSON_DEPTH || f->p >= f->end)
		return -1;
	const char *s;
	size_t n;
	double d;
	switch (*f->p) {
	case '"':
		return fp_string(f, &s, &n);
	case '{':
		return fp_skip_object(f, depth);
	case '[':
		f->p++;
		if (fp_lit(f, ']'))
			return 0;
		do {
			if (fp_skip(f, depth + 1) < 0)
				return -1;
		} while (fp_lit(f, ','));
		return fp_lit(f, ']') ? 0 : -1;
	case 't':
		return fp_word(f, "true");
	case 'f':
		return fp_word(f, "false");
	case 'n':
		return fp_word(f, "null");
	}
	return fp_number(f, &d);
}

static int fp_key_is(const char *k, size_t n, const char *want)
{
	return strlen(want) == n && memcmp(k, want, n) == 0;
}

/* Values of data (flat or nested) into the FP32 tensor t. */
/* One number of data into the FP32 tensor t. */
static int fp_value(struct fp *f, struct tensor *t, size_t *count)
{
	double d;
	if (*count >= t->nelem || fp_number(f, &d) < 0 || fabs(d) > FLT_MAX)
		return -1;
	((float *)t->data)[(*count)++] = (float)d;
	return 0;
}

static int fp_data(struct fp *f, struct tensor *t, size_t *count, int depth)
{
	if (depth > V2_MAX_JSON_DEPTH)
		return -1;
	if (fp_lit(f, '[')) {
		if (fp_lit(f, ']'))
			return 0;
		if (depth + 1 > V2_MAX_JSON_DEPTH) /* where each element's own call would stop */
			return -1;
		float *dst = t->data;
		for (;;) {
			fp_ws(f);
			if (f->p < f->end && *f->p == '[') {
				if (fp_data(f, t, count, depth + 1) < 0)
					return -1;
			} else {
				/* numbers inline: the common flat list makes no call per element */
				double d;
				if (*count >= t->nelem ||
				    (!fp_short(f, &d) && fp_number(f, &d) < 0) || fabs(d) > FLT_MAX)
					return -1;
				dst[(*count)++] = (float)d;
			}
			if (f->p < f->end && *f->p == ',') /* the usual "1.0,2.0" */
				f->p++;
			else if (!fp_lit(f, ','))
				break;
		}
		return fp_lit(f, ']') ? 0 : -1;
	}
	return fp_value(f, t, count);
}

static int fp_shape(struct fp *f, int *ndim, int64_t *dims)
{
	*ndim = 0;
	if (!fp_lit(f, '['))
		return -1;
	if (fp_lit(f, ']'))
		return 0;
	do {
		double d;
		const char *s = (fp_ws(f), f->p);
		if (*ndim == TENSOR_MAX_DIMS || fp_number(f, &d) < 0 || d < 0 ||
		    memchr(s, '.', (size_t)(f->p - s)) || memchr(s, 'e', (size_t)(f->p - s)) ||
		    memchr(s, 'E', (size_t)(f->p - s)))
			return -1;
		dims[(*ndim)++] = (int64_t)d;
	} while (fp_lit(f, ','));
	return fp_lit(f, ']') ? 0 : -1;
}

/* One element of "inputs"; data must come after name, datatype and shape. */
static int fp_input(const struct v2_sig *sig, struct v2_request *req, struct fp *f)
{
	const char *name = NULL, *dt = NULL;
	size_t name_n = 0, dt_n = 0, j = sig->n_inputs, count = 0;
	int ndim = -1, have_params = 0;
	int64_t dims[TENSOR_MAX_DIMS];
	struct tensor *t = NULL;
	if (!fp_lit(f, '{') || fp_lit(f, '}'))
		return -1;
	do {
		const char *k;
		size_t n;
		if (fp_string(f, &k, &n) < 0 || !fp_lit(f, ':'))
			return -1;
		if (fp_key_is(k, n, "name") && !name) {
			if (fp_string(f, &name, &name_n) < 0)
				return -1;
		} else if (fp_key_is(k, n, "datatype") && !dt) {
			if (fp_string(f, &dt, &dt_n) < 0)
				return -1;
		} else if (fp_key_is(k, n, "shape") && ndim < 0) {
			if (fp_shape(f, &ndim, dims) < 0)
				return -1;
		} else if (fp_key_is(k, n, "parameters") && !have_params) {
			have_params = 1;
			if (fp_skip_object(f, 1) < 0)
				return -1;
		} else if (fp_key_is(k, n, "data") && !t && name && dt && ndim >= 0) {
			for (j = 0; j < sig->n_inputs; j++)
				if (sig->inputs[j]->name &&
				    fp_key_is(name, name_n, sig->inputs[j]->name))
					break;
			if (j == sig->n_inputs || req->inputs[j])
				return -1;
			const struct onnx_value_info *vi = sig->inputs[j];
			if (vi->dtype != TENSOR_FLOAT || !fp_key_is(dt, dt_n, "FP32") ||
			    check_shape(vi, 0, ndim, dims, f->len, NULL, 0) < 0)
				return -1;
			if (!(t = req->inputs[j] = tensor_new(vi->name, vi->dtype, ndim, dims)))
				return -1;
			if (fp_data(f, t, &count, 0) < 0 || count != t->nelem)
				return -1;
		} else {
			return -1;
		}
	} while (fp_lit(f, ','));
	return fp_lit(f, '}') && t ? 0 : -1;
}

static int fp_output(const struct v2_sig *sig, struct v2_request *req, struct fp *f)
{
	const char *name = NULL;
	size_t name_n = 0;
	int have_params = 0;
	if (!fp_lit(f, '{') || fp_lit(f, '}'))
		return -1;
	do {
		const char *k;
		size_t n;
		if (fp_string(f, &k, &n) < 0 || !fp_lit(f, ':'))
			return -1;
		if (fp_key_is(k, n, "name") && !name) {
			if (fp_string(f, &name, &name_n) < 0)
				return -1;
		} else if (fp_key_is(k, n, "parameters") && !have_params) {
			have_params = 1;
			if (fp_skip_object(f, 1) < 0)
				return -1;
		} else {
			return -1;
		}
	} while (fp_lit(f, ','));
	if (!fp_lit(f, '}') || !name)
		return -1;
	for (size_t j = 0; j < sig->n_outputs; j++) {
		if (sig->outputs[j]->name && fp_key_is(name, name_n, sig->outputs[j]->name)) {
			req->want[j] = 1;
			return 0;
		}
	}
	return -1;
}

/* "inputs" or "outputs": a non-empty array (inputs) or any array (outputs). */
static int fp_array_of(const struct v2_sig *sig, struct v2_request *req, struct fp *f, int inputs)
{
	size_t n = 0;
	if (!fp_lit(f, '['))
		return -1;
	if (fp_lit(f, ']'))
		return inputs ? -1 : 0;
	do {
		if (++n > V2_MAX_INPUTS && inputs)
			return -1;
		if ((inputs ? fp_input(sig, req, f) : fp_output(sig, req, f)) < 0)
			return -1;
	} while (fp_lit(f, ','));
	return fp_lit(f, ']') ? 0 : -1;
}

/* The top-level object; 0 when the whole body was understood and is valid. */
static int fp_top(const struct v2_sig *sig, struct v2_request *req, struct fp *f)
{
	int seen_params = 0, seen_in = 0, seen_out = 0;
	if (!fp_lit(f, '{') || fp_lit(f, '}'))
		return -1;
	do {
		const char *k, *v;
		size_t n, vn;
		if (fp_string(f, &k, &n) < 0 || !fp_lit(f, ':'))
			return -1;
		if (fp_key_is(k, n, "id") && !req->id) {
			if (fp_string(f, &v, &vn) < 0 || vn > V2_MAX_ID_LEN ||
			    !(req->id = strndup(v, vn)))
				return -1;
		} else if (fp_key_is(k, n, "parameters") && !seen_params++) {
			if (fp_skip_object(f, 1) < 0)
				return -1;
		} else if (fp_key_is(k, n, "inputs") && !seen_in++) {
			if (fp_array_of(sig, req, f, 1) < 0)
				return -1;
		} else if (fp_key_is(k, n, "outputs") && !seen_out++) {
			if (fp_array_of(sig, req, f, 0) < 0)
				return -1;
		} else {
			return -1;
		}
	} while (fp_lit(f, ','));
	if (!fp_lit(f, '}') || (fp_ws(f), f->p != f->end) || !seen_in)
		return -1;
	for (size_t j = 0; j < sig->n_inputs; j++)
		if (!req->inputs[j])
			return -1;
	if (!seen_out)
		memset(req->want, 1, req->n_outputs);
	const struct tensor *first = req->n_inputs ? req->inputs[0] : NULL;
	req->batch = first && first->ndim > 0 ? first->dims[0] : 1;
	return 0;
}

struct v2_request *v2_request_parse(const struct v2_sig *sig, const char *body, size_t len,
                                    char *err, size_t errlen)
{
	struct fp f = {body, body + len, len};
	struct v2_request *req = request_new(sig);
	if (req && fp_top(sig, req, &f) == 0)
		return req;
	v2_request_free(req);
	return v2_request_parse_general(sig, body, len, err, errlen);
}

/* ---- rendering ---------------------------------------------------------- */

/* Output staging: numbers are formatted into buf, flushed to out in big pieces. */
struct jw {
	struct evbuffer *out;
	size_t n;
	int failed;
	char buf[8192];
};

static void jw_init(struct jw *w, struct evbuffer *out)
{
	w->out = out;
	w->n = 0;
	w->failed = 0;
}

static void jw_flush(struct jw *w)
{
	if (w->n && !w->failed && evbuffer_add(w->out, w->buf, w->n) < 0)
		w->failed = 1;
	w->n = 0;
}

static void jw_put(struct jw *w, const char *s, size_t len)
{
	if (w->n + len > sizeof(w->buf))
		jw_flush(w);
	if (len > sizeof(w->buf)) {
		if (!w->failed && evbuffer_add(w->out, s, len) < 0)
			w->failed = 1;
		return;
	}
	memcpy(w->buf + w->n, s, len);
	w->n += len;
}

static void jw_str(struct jw *w, const char *s)
{
	jw_put(w, s, strlen(s));
}

/* Room for one formatted number; flushes first when the buffer is nearly full. */
static char *jw_room(struct jw *w, size_t need)
{
	if (w->n + need > sizeof(w->buf))
		jw_flush(w);
	return w->buf + w->n;
}

static void jw_i64(struct jw *w, int64_t x)
{
	char tmp[24];
	size_t n = 0;
	uint64_t u = x < 0 ? 0 - (uint64_t)x : (uint64_t)x;
	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (x < 0)
		tmp[n++] = '-';
	char *p = jw_room(w, sizeof(tmp));
	for (size_t i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	w->n += n;
}

/* 10^k for k in -30..60: what fmt_float scales by (float exponents are -45..38). */
static const double v2_pow10[] = {
    1e-30, 1e-29, 1e-28, 1e-27, 1e-26, 1e-25, 1e-24, 1e-23, 1e-22, 1e-21, 1e-20, 1e-19, 1e-18,
    1e-17, 1e-16, 1e-15, 1e-14, 1e-13, 1e-12, 1e-11, 1e-10, 1e-9,  1e-8,  1e-7,  1e-6,  1e-5,
    1e-4,  1e-3,  1e-2,  1e-1,  1e0,   1e1,   1e2,   1e3,   1e4,   1e5,   1e6,   1e7,   1e8,
    1e9,   1e10,  1e11,  1e12,  1e13,  1e14,  1e15,  1e16,  1e17,  1e18,  1e19,  1e20,  1e21,
    1e22,  1e23,  1e24,  1e25,  1e26,  1e27,  1e28,  1e29,  1e30,  1e31,  1e32,  1e33,  1e34,
    1e35,  1e36,  1e37,  1e38,  1e39,  1e40,  1e41,  1e42,  1e43,  1e44,  1e45,  1e46,  1e47,
    1e48,  1e49,  1e50,  1e51,  1e52,  1e53,  1e54,  1e55,  1e56,  1e57,  1e58,  1e59,  1e60};

/*
 * The 9 significant digits of d > 0 (a float widened) into dig, trailing
 * zeros dropped; returns how many are left and sets *e to the decimal
 * exponent of the first. Nine digits always round-trip a float32 (their
 * error, at most 1e-8 relative even after the double rounding below, is
 * under half a float ulp, 3e-8), so they need not be the correctly rounded
 * ones printf would pick: one multiply and an integer do, several times faster.
 */
static int float_digits(double d, char *dig, int *e)
{
	/* floor(log10(d)) from the binary exponent, low by at most one (fixed below):
	 * d in [2^(b-1), 2^b), and 78913 / 2^18 is log10(2) within 8e-7. */
	int b;
	frexp(d, &b);
	int t = (b - 1) * 78913;
	int x = t >= 0 ? t >> 18 : -((-t + (1 << 18) - 1) >> 18);
	uint64_t m = (uint64_t)llround(d * v2_pow10[8 - x + 30]);
	if (m >= 1000000000u) { /* the estimate was one low */
		m = (m + 5) / 10;
		x++;
	} else if (m < 100000000u) { /* one high (cannot happen; kept as a guard) */
		x--;
		m = (uint64_t)llround(d * v2_pow10[8 - x + 30]);
	}
	for (int i = 8; i >= 0; i--, m /= 10)
		dig[i] = (char)('0' + m % 10);
	int n = 9;
	while (n > 1 && dig[n - 1] == '0')
		n--;
	*e = x;
	return n;
}

size_t v2_format_float(char *buf, float f)
{
	double d = f;
	char *p = buf, dig[9];
	int e, n;
	if (!isfinite(d))
		return (size_t)(memcpy(buf, "null", 5), 4);
	if (signbit(d))
		*p++ = '-';
	if (d == 0) {
		*p++ = '0';
		*p = 0;
		return (size_t)(p - buf);
	}
	n = float_digits(fabs(d), dig, &e);
	if (e < -4 || e >= 9) { /* d.ddde-XX, as %g does; |e| <= 46 */
		*p++ = dig[0];
		if (n > 1)
			*p++ = '.';
		memcpy(p, dig + 1, (size_t)n - 1);
		p += n - 1;
		*p++ = 'e';
		*p++ = e < 0 ? '-' : '+';
		*p++ = (char)('0' + abs(e) / 10);
		*p++ = (char)('0' + abs(e) % 10);
	} else if (e < 0) { /* 0.000ddd */
		*p++ = '0';
		*p++ = '.';
		for (int i = 0; i < -e - 1; i++)
			*p++ = '0';
		memcpy(p, dig, (size_t)n);
		p += n;
	} else { /* ddd.ddd or ddd000 */
		for (int i = 0; i <= e; i++)
			*p++ = i < n ? dig[i] : '0';
		if (n > e + 1)
			*p++ = '.';
		for (int i = e + 1; i < n; i++)
			*p++ = dig[i];
	}
	*p = 0;
	return (size_t)(p - buf);
}

static void jw_f32(struct jw *w, float f)
{
	char *p = jw_room(w, V2_FLOAT_MAX);
	w->n += v2_format_float(p, f);
}

static void jw_f64(struct jw *w, double d)
{
	if (!isfinite(d)) {
		jw_put(w, "null", 4);
		return;
	}
	char *p = jw_room(w, 32);
	w->n += (size_t)snprintf(p, 32, "%.17g", d);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
	size_t n = s[0] < 0x80             ? 1
	           : (s[0] & 0xe0) == 0xc0 ? 2
	           : (s[0] & 0xf0) == 0xe0 ? 3
	           : (s[0] & 0xf8) == 0xf0 ? 4
	                                   : 0;
	if (n == 0 || n > avail || (n == 2 && s[0] < 0xc2))
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

static void jw_json_string(struct jw *w, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t len = strlen(str);
	jw_put(w, "\"", 1);
	for (size_t i = 0; i < len;) {
		unsigned char c = s[i];
		size_t run = 0; /* plain ASCII goes out as one piece */
		while (i + run < len && s[i + run] >= 0x20 && s[i + run] < 0x80 &&
		       s[i + run] != '"' && s[i + run] != '\\')
			run++;
		if (run) {
			jw_put(w, str + i, run);
			i += run;
			continue;
		}
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			jw_put(w, e, 2);
			i++;
		} else if (c < 0x20) {
			char e[8];
			snprintf(e, sizeof(e), "\\u%04x", c);
			jw_put(w, e, 6);
			i++;
		} else {
			size_t n = utf8_len(s + i, len - i);
			if (n == 0) {
				jw_str(w, "\\ufffd"); /* never emit invalid UTF-8 */
				i++;
			} else {
				jw_put(w, str + i, n);
				i += n;
			}
		}
	}
	jw_put(w, "\"", 1);
}

static void jw_shape(struct jw *w, int ndim, const int64_t *dims)
{
	jw_put(w, "[", 1);
	for (int i = 0; i < ndim; i++) {
		if (i)
			jw_put(w, ",", 1);
		jw_i64(w, dims[i] < 0 ? -1 : dims[i]);
	}
	jw_put(w, "]", 1);
}

static void jw_data(struct jw *w, const struct tensor *t)
{
	jw_put(w, "[", 1);
	for (size_t i = 0; i < t->nelem; i++) {
		if (i)
			jw_put(w, ",", 1);
		switch (t->dtype) {
		case TENSOR_FLOAT:
			jw_f32(w, ((const float *)t->data)[i]);
			break;
		case TENSOR_DOUBLE:
			jw_f64(w, ((const double *)t->data)[i]);
			break;
		case TENSOR_INT64:
			jw_i64(w, ((const int64_t *)t->data)[i]);
			break;
		case TENSOR_INT32:
			jw_i64(w, ((const int32_t *)t->data)[i]);
			break;
		case TENSOR_INT8:
			jw_i64(w, ((const int8_t *)t->data)[i]);
			break;
		case TENSOR_UINT8:
			jw_i64(w, ((const uint8_t *)t->data)[i]);
			break;
		case TENSOR_BOOL:
			jw_str(w, ((const uint8_t *)t->data)[i] ? "true" : "false");
			break;
		case TENSOR_FLOAT16: /* as its float value, exact */
			jw_f32(w, tensor_f16_to_float(((const uint16_t *)t->data)[i]));
			break;
		case TENSOR_BFLOAT16:
			jw_f32(w, tensor_bf16_to_float(((const uint16_t *)t->data)[i]));
			break;
		case TENSOR_UNDEFINED:
			jw_put(w, "null", 4);
			break;
		}
	}
	jw_put(w, "]", 1);
}

static const char *dtype_name(enum tensor_dtype t)
{
	const char *s = tensor_dtype_v2_name(t);
	return s ? s : "UNDEFINED";
}

static void jw_model_head(struct jw *w, const struct v2_sig *sig)
{
	jw_str(w, "{\"model_name\":");
	jw_json_string(w, sig->model_name);
	jw_str(w, ",\"model_version\":");
	jw_json_string(w, sig->model_version);
}

int v2_response_render(const struct v2_sig *sig, const struct v2_request *req,
                       struct tensor *const *outputs, struct evbuffer *out)
{
	struct jw wb, *w = &wb; /* 8 KiB on the worker's stack, no allocation */
	jw_init(w, out);
	jw_model_head(w, sig);
	if (req->id) {
		jw_str(w, ",\"id\":");
		jw_json_string(w, req->id);
	}
	jw_str(w, ",\"outputs\":[");
	int first = 1;
	for (size_t j = 0; j < sig->n_outputs; j++) {
		const struct tensor *t = outputs[j];
		if (!req->want[j] || !t)
			continue;
		jw_str(w, first ? "{\"name\":" : ",{\"name\":");
		first = 0;
		jw_json_string(w, sig->outputs[j]->name);
		jw_str(w, ",\"datatype\":\"");
		jw_str(w, dtype_name(t->dtype));
		jw_str(w, "\",\"shape\":");
		jw_shape(w, t->ndim, t->dims);
		jw_str(w, ",\"data\":");
		jw_data(w, t);
		jw_put(w, "}", 1);
	}
	jw_str(w, "]}");
	jw_flush(w);
	return w->failed ? -1 : 0;
}

static void jw_value_infos(struct jw *w, const struct onnx_value_info *const *vis, size_t n)
{
	jw_put(w, "[", 1);
	for (size_t i = 0; i < n; i++) {
		jw_str(w, i ? ",{\"name\":" : "{\"name\":");
		jw_json_string(w, vis[i]->name ? vis[i]->name : "");
		jw_str(w, ",\"datatype\":\"");
		jw_str(w, dtype_name(vis[i]->dtype));
		jw_str(w, "\",\"shape\":");
		jw_shape(w, vis[i]->ndim, vis[i]->dims);
		jw_put(w, "}", 1);
	}
	jw_put(w, "]", 1);
}

int v2_model_metadata_render(const struct v2_sig *sig, struct evbuffer *out)
{
	struct jw wb, *w = &wb; /* 8 KiB on the worker's stack, no allocation */
	jw_init(w, out);
	jw_str(w, "{\"name\":");
	jw_json_string(w, sig->model_name);
	jw_str(w, ",\"versions\":[");
	jw_json_string(w, sig->model_version);
	jw_str(w, "],\"platform\":\"onnx\",\"inputs\":");
	jw_value_infos(w, sig->inputs, sig->n_inputs);
	jw_str(w, ",\"outputs\":");
	jw_value_infos(w, sig->outputs, sig->n_outputs);
	jw_put(w, "}", 1);
	jw_flush(w);
	return w->failed ? -1 : 0;
}

int v2_json_string(struct evbuffer *out, const char *s)
{
	struct jw wb, *w = &wb; /* 8 KiB on the worker's stack, no allocation */
	jw_init(w, out);
	jw_json_string(w, s);
	jw_flush(w);
	return w->failed ? -1 : 0;
}

int v2_error_render(struct evbuffer *out, const char *msg)
{
	if (evbuffer_add(out, "{\"error\":", 9) < 0 || v2_json_string(out, msg) < 0 ||
	    evbuffer_add(out, "}", 1) < 0)
		return -1;
	return 0;
}
