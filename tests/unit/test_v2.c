/*
 * test_v2.c - unit tests for predictor/v2.c, the KServe V2 JSON codec.
 *
 * The signature is the digits models' (pixels FP32 [N,64] -> probabilities
 * FP32 [N,10], label INT64 [N]); responses are read back with jansson.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "v2.h"

static const struct onnx_value_info vi_pixels = {"pixels", TENSOR_FLOAT, 2, {-1, 64}};
static const struct onnx_value_info vi_probs = {"probabilities", TENSOR_FLOAT, 2, {-1, 10}};
static const struct onnx_value_info vi_label = {"label", TENSOR_INT64, 1, {-1}};
static const struct onnx_value_info *const sig_in[] = {&vi_pixels};
static const struct onnx_value_info *const sig_out[] = {&vi_probs, &vi_label};
static const struct v2_sig sig = {"digits", "1", sig_in, 1, sig_out, 2};

/* A request for n samples of 64 values each (value i%17), data flat or nested. */
static char *make_request(int n, int nested, const char *extra)
{
	size_t cap = 64 + (size_t)n * 64 * 8 + strlen(extra);
	char *s = malloc(cap);
	size_t k = (size_t)snprintf(s, cap,
	                            "{%s\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\","
	                            "\"shape\":[%d,64],\"data\":[",
	                            extra, n);
	for (int r = 0; r < n; r++) {
		k += (size_t)snprintf(s + k, cap - k, "%s%s", r ? "," : "", nested ? "[" : "");
		for (int i = 0; i < 64; i++)
			k += (size_t)snprintf(s + k, cap - k, "%s%d", i ? "," : "",
			                      (r * 64 + i) % 17);
		k += (size_t)snprintf(s + k, cap - k, "%s", nested ? "]" : "");
	}
	snprintf(s + k, cap - k, "]}]}");
	return s;
}

static struct v2_request *parse(const char *body, char *err)
{
	err[0] = 0;
	return v2_request_parse(&sig, body, strlen(body), err, V2_ERR_MAX);
}

static void test_valid_flat_and_nested(void **state)
{
	char err[V2_ERR_MAX];
	for (int nested = 0; nested < 2; nested++) {
		char *body = make_request(3, nested, "\"id\":\"abc\",\"parameters\":{\"x\":1},");
		struct v2_request *r = parse(body, err);
		assert_non_null(r);
		assert_string_equal(r->id, "abc");
		assert_int_equal(r->batch, 3);
		assert_int_equal(r->inputs[0]->ndim, 2);
		assert_int_equal(r->inputs[0]->dims[0], 3);
		assert_int_equal(r->inputs[0]->nelem, 192);
		const float *f = r->inputs[0]->data;
		for (int i = 0; i < 192; i++)
			assert_true(f[i] == (float)(i % 17));
		assert_int_equal(r->want[0], 1);
		assert_int_equal(r->want[1], 1);
		v2_request_free(r);
		free(body);
	}
}

/* Each bad request is refused with a message that names the field. */
static void expect_error(const char *body, const char *want)
{
	char err[V2_ERR_MAX];
	struct v2_request *r = parse(body, err);
	if (r || !strstr(err, want))
		fail_msg("body %.80s: expected error containing '%s', got '%s'", body, want, err);
}

static void test_shape_errors(void **state)
{
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":[1,63],"
	             "\"data\":[1]}]}",
	             "inputs[0].shape: expected [N,64], got [1,63]");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":[64],"
	             "\"data\":[1]}]}",
	             "inputs[0].shape: expected [N,64], got [64]");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":[0,64],"
	             "\"data\":[]}]}",
	             "batch must be >= 1");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":[1,-64],"
	             "\"data\":[]}]}",
	             "inputs[0].shape[1]: expected a non-negative integer");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":"
	             "[100000000,64],\"data\":[]}]}",
	             "over the limit");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":"
	             "[1000,64],\"data\":[1]}]}",
	             "inputs[0].shape: [1000,64] is 64000 values, more than a 77-byte body holds");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"data\":[1]}]}",
	             "inputs[0].shape: missing");
}

static void test_count_and_value_errors(void **state)
{
	char *body = make_request(1, 0, "");
	/* drop the last value: "...,X]}]}" -> remove ",X" */
	char *last = strrchr(body, ',');
	memmove(last, strchr(last, ']'), strlen(strchr(last, ']')) + 1);
	expect_error(body, "inputs[0].data: shape [1,64] needs 64 values, got 63");
	free(body);
	body = make_request(2, 1, "");
	body[strlen(body) - 4] = 0; /* cut "]}]}" and add one more value */
	char *longer = malloc(strlen(body) + 16);
	sprintf(longer, "%s,5]}]}", body);
	expect_error(longer, "needs 128 values, got 129");
	free(longer);
	free(body);
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":[1,64],"
	             "\"data\":[1,\"x\"]}]}",
	             "inputs[0].data[1]: expected a number, got a string");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":[1,64],"
	             "\"data\":[1e39]}]}",
	             "inputs[0].data[0]: 1e+39 is out of FP32 range");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":[1,64],"
	             "\"data\":[1, NaN]}]}",
	             "NaN and Infinity are not valid JSON numbers");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":[1,64],"
	             "\"data\":[-Infinity]}]}",
	             "NaN and Infinity");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":[1,64],"
	             "\"data\":[1e999]}]}",
	             "malformed JSON at line 1");
}

static void test_structure_errors(void **state)
{
	expect_error("{\"inputs\": [", "malformed JSON at line 1, column 12");
	expect_error("{\n\"inputs\": }", "malformed JSON at line 2, column 11");
	expect_error("", "malformed JSON");
	expect_error("[1]", "request: expected a JSON object, got an array");
	expect_error("{}", "inputs: missing");
	expect_error("{\"inputs\":[]}", "inputs: expected a non-empty array");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"INT64\",\"shape\":[1,64],"
	             "\"data\":[1]}]}",
	             "inputs[0].datatype: expected FP32, got INT64");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"shape\":[1,64],\"data\":[1]}]}",
	             "inputs[0].datatype: missing");
	expect_error("{\"inputs\":[{\"name\":\"image\",\"datatype\":\"FP32\",\"shape\":[1,64],"
	             "\"data\":[1]}]}",
	             "inputs[0].name: unknown input 'image' (model input: pixels)");
	expect_error("{\"inputs\":[{\"datatype\":\"FP32\",\"shape\":[1,64],\"data\":[1]}]}",
	             "inputs[0].name: missing");
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":[1,64]}]}",
	             "inputs[0].data: missing");
	expect_error("{\"inputs\":[7]}", "inputs[0]: expected an object, got an integer");
	expect_error("{\"id\":5,\"inputs\":[]}", "id: expected a string");
	expect_error("{\"parameters\":[],\"inputs\":[]}", "parameters: expected an object");
	expect_error("{\"inputs\":[],\"inputs\":[]}", "duplicate");
}

static void test_duplicate_and_outputs(void **state)
{
	char *one = make_request(1, 0, "");
	/* the same input twice */
	char *in = strstr(one, "{\"name\"");
	size_t inlen = strlen(in) - 2; /* without the closing "]}" */
	char *two = malloc(strlen(one) + inlen + 4);
	sprintf(two, "{\"inputs\":[%.*s,%.*s]}", (int)inlen, in, (int)inlen, in);
	expect_error(two, "inputs[1].name: input 'pixels' given twice");
	free(two);
	free(one);

	char err[V2_ERR_MAX];
	char *body = make_request(1, 0, "\"outputs\":[{\"name\":\"label\",\"parameters\":{}}],");
	struct v2_request *r = parse(body, err);
	assert_non_null(r);
	assert_int_equal(r->want[0], 0);
	assert_int_equal(r->want[1], 1);
	v2_request_free(r);
	free(body);
	body = make_request(1, 0, "\"outputs\":[{\"name\":\"logits\"}],");
	expect_error(body, "outputs[0].name: unknown output 'logits'");
	free(body);
}

static char *drain(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);
	evbuffer_remove(b, s, n);
	s[n] = 0;
	return s;
}

static void test_response_render(void **state)
{
	char err[V2_ERR_MAX];
	char *body = make_request(2, 0, "\"id\":\"q\\\"1\\n\",");
	struct v2_request *r = parse(body, err);
	assert_non_null(r);
	int64_t pd[2] = {2, 10}, ld[1] = {2};
	struct tensor *outs[2] = {tensor_new("probabilities", TENSOR_FLOAT, 2, pd),
	                          tensor_new("label", TENSOR_INT64, 1, ld)};
	float *p = outs[0]->data;
	for (int i = 0; i < 20; i++)
		p[i] = (float)i / 100.0f;
	((int64_t *)outs[1]->data)[0] = 7;
	((int64_t *)outs[1]->data)[1] = -3;
	struct evbuffer *b = evbuffer_new();
	assert_int_equal(v2_response_render(&sig, r, outs, b), 0);
	char *s = drain(b);
	json_error_t je;
	json_t *j = json_loads(s, 0, &je);
	if (!j)
		fail_msg("response is not JSON (%s): %s", je.text, s);
	assert_string_equal(json_string_value(json_object_get(j, "model_name")), "digits");
	assert_string_equal(json_string_value(json_object_get(j, "model_version")), "1");
	assert_string_equal(json_string_value(json_object_get(j, "id")), "q\"1\n");
	json_t *o = json_object_get(j, "outputs");
	assert_int_equal(json_array_size(o), 2);
	json_t *o0 = json_array_get(o, 0), *o1 = json_array_get(o, 1);
	assert_string_equal(json_string_value(json_object_get(o0, "name")), "probabilities");
	assert_string_equal(json_string_value(json_object_get(o0, "datatype")), "FP32");
	assert_int_equal(json_integer_value(json_array_get(json_object_get(o0, "shape"), 1)), 10);
	json_t *d = json_object_get(o0, "data");
	assert_int_equal(json_array_size(d), 20);
	for (int i = 0; i < 20; i++) /* %.9g round-trips float32 exactly */
		assert_true((float)json_number_value(json_array_get(d, (size_t)i)) == p[i]);
	assert_string_equal(json_string_value(json_object_get(o1, "datatype")), "INT64");
	assert_int_equal(json_integer_value(json_array_get(json_object_get(o1, "data"), 1)), -3);
	json_decref(j);
	free(s);

	/* only the requested output, and no id when none was sent */
	free(r->id);
	r->id = NULL;
	r->want[0] = 0;
	assert_int_equal(v2_response_render(&sig, r, outs, b), 0);
	s = drain(b);
	assert_null(strstr(s, "probabilities"));
	assert_null(strstr(s, "\"id\""));
	assert_non_null(strstr(s, "\"name\":\"label\""));
	free(s);
	tensor_free(outs[0]);
	tensor_free(outs[1]);
	evbuffer_free(b);
	v2_request_free(r);
	free(body);
}

static void test_error_and_metadata_render(void **state)
{
	struct evbuffer *b = evbuffer_new();
	assert_int_equal(v2_error_render(b, "bad \"x\"\t\x01 \xff end"), 0);
	char *s = drain(b);
	json_t *j = json_loads(s, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "error")),
	                    "bad \"x\"\t\x01 \xef\xbf\xbd end");
	json_decref(j);
	free(s);

	assert_int_equal(v2_model_metadata_render(&sig, b), 0);
	s = drain(b);
	j = json_loads(s, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "platform")), "onnx");
	assert_string_equal(json_string_value(json_array_get(json_object_get(j, "versions"), 0)),
	                    "1");
	json_t *in0 = json_array_get(json_object_get(j, "inputs"), 0);
	assert_string_equal(json_string_value(json_object_get(in0, "name")), "pixels");
	assert_int_equal(json_integer_value(json_array_get(json_object_get(in0, "shape"), 0)), -1);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(in0, "shape"), 1)), 64);
	assert_int_equal(json_array_size(json_object_get(j, "outputs")), 2);
	json_decref(j);
	free(s);
	evbuffer_free(b);

	char buf[64];
	int64_t dims[3] = {-1, 8, 8};
	assert_string_equal(v2_shape_str(buf, sizeof(buf), 3, dims), "[N,8,8]");
	assert_string_equal(v2_shape_str(buf, sizeof(buf), 0, dims), "[]");
	assert_string_equal(v2_shape_str(buf, 4, 3, dims), "[N,");
}

/* Other datatypes: integer inputs are range-checked, booleans need true/false. */
static void test_other_dtypes(void **state)
{
	static const struct onnx_value_info vi_u8 = {"u", TENSOR_UINT8, 1, {3}};
	static const struct onnx_value_info vi_b = {"b", TENSOR_BOOL, 1, {2}};
	static const struct onnx_value_info *const in2[] = {&vi_u8, &vi_b};
	static const struct v2_sig sig2 = {"m", "2", in2, 2, sig_out, 2};
	char err[V2_ERR_MAX];
	const char *ok = "{\"inputs\":[{\"name\":\"b\",\"datatype\":\"BOOL\",\"shape\":[2],"
	                 "\"data\":[true,false]},{\"name\":\"u\",\"datatype\":\"UINT8\","
	                 "\"shape\":[3],\"data\":[0,255,7]}]}";
	struct v2_request *r = v2_request_parse(&sig2, ok, strlen(ok), err, sizeof(err));
	assert_non_null(r);
	assert_int_equal(((uint8_t *)r->inputs[0]->data)[1], 255);
	assert_int_equal(((uint8_t *)r->inputs[1]->data)[0], 1);
	assert_int_equal(r->batch, 3);
	v2_request_free(r);
	const char *bad = "{\"inputs\":[{\"name\":\"u\",\"datatype\":\"UINT8\",\"shape\":[3],"
	                  "\"data\":[0,256,7]}]}";
	assert_null(v2_request_parse(&sig2, bad, strlen(bad), err, sizeof(err)));
	assert_non_null(strstr(err, "inputs[0].data[1]: 256 is out of UINT8 range"));
	const char *missing = "{\"inputs\":[{\"name\":\"u\",\"datatype\":\"UINT8\",\"shape\":[3],"
	                      "\"data\":[0,1,7]}]}";
	assert_null(v2_request_parse(&sig2, missing, strlen(missing), err, sizeof(err)));
	assert_string_equal(err, "inputs: missing input 'b'");
}

/* The fast scanner and the general parser give bit-identical results. */
static void test_fast_path_agrees(void **state)
{
	const char *bodies[] = {
	    "{\"id\":\"x\",\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":[1,64],"
	    "\"parameters\":{\"a\":[1,{\"b\":null}],\"c\":true},\"data\":[-0,0.5,1e-3,-2.5E+2,16,"
	    "3.4028234e38,1e-46,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,"
	    "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,123456789012345678]}],"
	    "\"outputs\":[{\"name\":\"label\",\"parameters\":{}}]} \n",
	    "{\"id\":\"\\u00e9\",\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\",\"shape\":["
	    "1,64],"
	    "\"data\":[[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,"
	    "0,0,"
	    "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1234567890123456789]]}]}",
	};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		char e1[V2_ERR_MAX], e2[V2_ERR_MAX];
		size_t n = strlen(bodies[i]);
		struct v2_request *a = v2_request_parse(&sig, bodies[i], n, e1, sizeof(e1));
		struct v2_request *b = v2_request_parse_general(&sig, bodies[i], n, e2, sizeof(e2));
		if (!a || !b)
			fail_msg("body %zu refused: %s / %s", i, a ? "" : e1, b ? "" : e2);
		assert_string_equal(a->id, b->id);
		assert_memory_equal(a->want, b->want, 2);
		assert_int_equal(a->inputs[0]->nelem, 64);
		assert_memory_equal(a->inputs[0]->data, b->inputs[0]->data, 64 * sizeof(float));
		v2_request_free(a);
		v2_request_free(b);
	}
	/* duplicate keys anywhere are refused by both */
	expect_error("{\"inputs\":[{\"name\":\"pixels\",\"name\":\"pixels\"}]}", "duplicate");
	expect_error("{\"parameters\":{\"a\":1,\"a\":2},\"inputs\":[]}", "duplicate");
}

/*
 * Numbers through the fast path's own conversion (short decimals without
 * strtod) and through jansson: the same float bits, on the edges of the
 * exact conversion (15 and 16 digits, 10^+-22 and 10^+-23, exponents written
 * every way, leading zeros in the fraction, signed zeros, subnormals).
 */
static void test_fast_path_numbers(void **state)
{
	static const char *const nums[] = {
	    "0.1",
	    "0.3",
	    "-0.0",
	    "0.0",
	    "15.0",
	    "7.0E+0",
	    "1e-7",
	    "1E22",
	    "1e23",
	    "-1e-22",
	    "1.5e-23",
	    "0.000001",
	    "2.5e-1",
	    "9.999999e37",
	    "3.4028234e38",
	    "1.17549435e-38",
	    "1.4e-45",
	    "1e-46",
	    "123456789012345.6",
	    "12345678901234.5",
	    "999999999999999.0",
	    "9007199254740993.0",
	    "0.1000000000000000055511",
	    "4.35",
	    "100.25e-2",
	    "-8.0000000000000003e+36",
	    "6.02214076e23",
	    "1.0e+00",
	};
	size_t n = sizeof(nums) / sizeof(nums[0]);
	for (size_t i = 0; i < n; i++) {
		char body[4096], e1[V2_ERR_MAX], e2[V2_ERR_MAX];
		int off = snprintf(body, sizeof(body),
		                   "{\"inputs\":[{\"name\":\"pixels\",\"datatype\":\"FP32\","
		                   "\"shape\":[1,64],\"data\":[");
		for (int k = 0; k < 64; k++)
			off += snprintf(body + off, sizeof(body) - (size_t)off, "%s%s",
			                k ? "," : "", nums[(i + (size_t)k) % n]);
		snprintf(body + off, sizeof(body) - (size_t)off, "]}]}");
		struct v2_request *a = v2_request_parse(&sig, body, strlen(body), e1, sizeof(e1));
		struct v2_request *b =
		    v2_request_parse_general(&sig, body, strlen(body), e2, sizeof(e2));
		if (!a || !b)
			fail_msg("numbers from '%s' refused: %s / %s", nums[i], a ? "" : e1,
			         b ? "" : e2);
		for (int k = 0; k < 64; k++) {
			float fa = ((const float *)a->inputs[0]->data)[k];
			float fb = ((const float *)b->inputs[0]->data)[k];
			if (memcmp(&fa, &fb, sizeof(fa)) != 0)
				fail_msg("'%s': fast %a, jansson %a", nums[(i + (size_t)k) % n],
				         (double)fa, (double)fb);
		}
		v2_request_free(a);
		v2_request_free(b);
	}
}

static void check_float(float f)
{
	char buf[V2_FLOAT_MAX];
	size_t n = v2_format_float(buf, f);
	assert_int_equal(n, strlen(buf));
	json_error_t je;
	json_t *j = json_loads(buf, JSON_DECODE_ANY, &je);
	if (!j || !json_is_number(j))
		fail_msg("%a formatted as '%s': not a JSON number", (double)f, buf);
	json_decref(j);
	float back = strtof(buf, NULL);
	if (memcmp(&back, &f, sizeof(f)) != 0)
		fail_msg("%a formatted as '%s' reads back as %a", (double)f, buf, (double)back);
}

/* Every float32 printed reads back bit-identical, and is a JSON number. */
static void test_format_float(void **state)
{
	char buf[V2_FLOAT_MAX];
	assert_int_equal(v2_format_float(buf, 0.0f), 1);
	assert_string_equal(buf, "0");
	v2_format_float(buf, 16.0f);
	assert_string_equal(buf, "16");
	v2_format_float(buf, 0.5f);
	assert_string_equal(buf, "0.5");
	v2_format_float(buf, 1e-5f);
	assert_string_equal(buf, "9.99999975e-06");
	v2_format_float(buf, 123456792.0f);
	assert_string_equal(buf, "123456792");
	v2_format_float(buf, 1e10f);
	assert_string_equal(buf, "1e+10");
	v2_format_float(buf, NAN);
	assert_string_equal(buf, "null");
	const float edge[] = {-0.0f, FLT_MIN,      -FLT_MAX, FLT_MAX,       1.4e-45f,
	                      0.1f,  1.0f,         1e-4f,    9.9999999e-5f, 999999999.0f,
	                      1e9f,  100000000.0f, 0.3f,     1e38f};
	for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++)
		check_float(edge[i]);
	for (int k = -45; k <= 38; k++) { /* around every power of ten */
		float p = strtof("1", NULL) * (float)pow(10, k);
		check_float(p);
		check_float(nextafterf(p, 0));
		check_float(nextafterf(p, INFINITY));
	}
	uint32_t x = 12345;
	for (int i = 0; i < 200000; i++) { /* random bit patterns (xorshift) */
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		float f;
		memcpy(&f, &x, sizeof(f));
		if (isfinite(f))
			check_float(f);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid_flat_and_nested),
	    cmocka_unit_test(test_shape_errors),
	    cmocka_unit_test(test_count_and_value_errors),
	    cmocka_unit_test(test_structure_errors),
	    cmocka_unit_test(test_duplicate_and_outputs),
	    cmocka_unit_test(test_response_render),
	    cmocka_unit_test(test_error_and_metadata_render),
	    cmocka_unit_test(test_other_dtypes),
	    cmocka_unit_test(test_fast_path_agrees),
	    cmocka_unit_test(test_fast_path_numbers),
	    cmocka_unit_test(test_format_float),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
