/*
 * fuzz_v2_request.c - libFuzzer driver for the predictor's V2 request codec
 * (predictor/v2.c).
 *
 * The first byte picks a model signature (the digits models', or one with
 * integer, boolean and fixed-shape inputs); the rest is the request body.
 * Beyond "no crash, no leak, no UB" it checks three properties: the fast
 * scanner and the general (jansson) parser accept exactly the same bodies
 * with bit-identical results; a refusal always renders as valid JSON
 * {"error": ...}; an accepted request's tensors have exactly the declared
 * shape, and its response is valid JSON.
 */
#include <event2/buffer.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "v2.h"

static const struct onnx_value_info vi_pixels = {"pixels", TENSOR_FLOAT, 2, {-1, 64}};
static const struct onnx_value_info vi_probs = {"probabilities", TENSOR_FLOAT, 2, {-1, 10}};
static const struct onnx_value_info vi_label = {"label", TENSOR_INT64, 1, {-1}};
static const struct onnx_value_info vi_u8 = {"u", TENSOR_UINT8, 2, {-1, 3}};
static const struct onnx_value_info vi_b = {"b", TENSOR_BOOL, 1, {2}};
static const struct onnx_value_info vi_i32 = {"i", TENSOR_INT32, 0, {0}};
static const struct onnx_value_info vi_d = {"d", TENSOR_DOUBLE, 3, {-1, -1, 2}};
static const struct onnx_value_info *const in_digits[] = {&vi_pixels};
static const struct onnx_value_info *const in_mixed[] = {&vi_u8, &vi_b, &vi_i32, &vi_d};
static const struct onnx_value_info *const outs[] = {&vi_probs, &vi_label};
static const struct v2_sig sigs[] = {
    {"digits", "1", in_digits, 1, outs, 2},
    {"mixed", "v-2", in_mixed, 4, outs, 2},
};

/* Valid JSON or abort: the property every rendered body must have. */
static void check_json(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	const char *s = (const char *)evbuffer_pullup(b, -1);
	json_t *j = json_loadb(s ? s : "", n, 0, NULL);
	if (!j)
		abort();
	json_decref(j);
	evbuffer_drain(b, n);
}

static void check_accepted(const struct v2_sig *sig, const struct v2_request *r, struct evbuffer *b)
{
	for (size_t i = 0; i < r->n_inputs; i++) {
		const struct onnx_value_info *vi = sig->inputs[i];
		const struct tensor *t = r->inputs[i];
		if (!t || t->dtype != vi->dtype || (vi->ndim && t->ndim != vi->ndim))
			abort();
		for (int d = 0; vi->ndim && d < vi->ndim; d++)
			if ((vi->dims[d] >= 0 && t->dims[d] != vi->dims[d]) || t->dims[d] < 1)
				abort();
	}
	/* Fake outputs of the right shape, rendered back. */
	int64_t n = r->batch > 0 && r->batch < 1000 ? r->batch : 1;
	int64_t pd[2] = {n, 10};
	struct tensor *o[2] = {tensor_new("probabilities", TENSOR_FLOAT, 2, pd),
	                       tensor_new("label", TENSOR_INT64, 1, &n)};
	if (o[0] && o[1] && v2_response_render(sig, r, o, b) == 0)
		check_json(b);
	tensor_free(o[0]);
	tensor_free(o[1]);
}

static int same_tensor(const struct tensor *a, const struct tensor *b)
{
	return a->dtype == b->dtype && a->ndim == b->ndim && a->nelem == b->nelem &&
	       memcmp(a->dims, b->dims, sizeof(a->dims[0]) * (size_t)a->ndim) == 0 &&
	       memcmp(a->data, b->data, a->nelem * tensor_dtype_size(a->dtype)) == 0;
}

/* Both parsers must agree on acceptance and on every parsed byte. */
static void check_same(const struct v2_request *a, const struct v2_request *b, const char *e1,
                       const char *e2)
{
	if (!a || !b) {
		if (a || b || strcmp(e1, e2) != 0)
			abort();
		return;
	}
	if ((a->id == NULL) != (b->id == NULL) || (a->id && strcmp(a->id, b->id) != 0) ||
	    a->batch != b->batch || memcmp(a->want, b->want, a->n_outputs) != 0)
		abort();
	for (size_t i = 0; i < a->n_inputs; i++)
		if (!same_tensor(a->inputs[i], b->inputs[i]))
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const struct v2_sig *sig = &sigs[data[0] % 2];
	char err[V2_ERR_MAX];
	struct evbuffer *b = evbuffer_new();
	if (!b)
		return 0;
	char err2[V2_ERR_MAX];
	struct v2_request *r =
	    v2_request_parse(sig, (const char *)data + 1, size - 1, err, sizeof(err));
	struct v2_request *g =
	    v2_request_parse_general(sig, (const char *)data + 1, size - 1, err2, sizeof(err2));
	check_same(r, g, err, err2);
	v2_request_free(g);
	if (r) {
		check_accepted(sig, r, b);
		v2_request_free(r);
	} else {
		if (v2_error_render(b, err) == 0)
			check_json(b);
	}
	evbuffer_free(b);
	return 0;
}
