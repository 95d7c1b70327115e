/*
 * test_ops.c - unit tests for the kernels in predictor/ops/, each on a small
 * case computed by hand: broadcasting, padding, strides, dilations, groups,
 * ceil_mode, count_include_pad, legacy Softmax, select_last_index, Reshape's
 * 0 and -1, Cast's saturation, and the refusals of prepare.
 *
 * Kernels are driven directly: a NodeProto carries the attributes, prepare
 * runs as at load, then run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ops/ops.h"

#define MAXA 8

/* A node under test: attributes and inputs. */
struct case_ {
	Onnx__AttributeProto attr[MAXA];
	Onnx__AttributeProto *attrp[MAXA];
	size_t nattr;
	int opset;
	char err[OPS_ERR_MAX];
};

static void case_init(struct case_ *c)
{
	memset(c, 0, sizeof(*c));
	c->opset = 13;
}

static Onnx__AttributeProto *add_attr(struct case_ *c, const char *name)
{
	assert_true(c->nattr < MAXA);
	Onnx__AttributeProto init = ONNX__ATTRIBUTE_PROTO__INIT;
	Onnx__AttributeProto *a = &c->attr[c->nattr];
	*a = init;
	a->name = (char *)name;
	c->attrp[c->nattr++] = a;
	return a;
}

static void attr_i(struct case_ *c, const char *name, int64_t v)
{
	Onnx__AttributeProto *a = add_attr(c, name);
	a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
	a->has_i = 1;
	a->i = v;
}

static void attr_f(struct case_ *c, const char *name, float v)
{
	Onnx__AttributeProto *a = add_attr(c, name);
	a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
	a->has_f = 1;
	a->f = v;
}

static void attr_s(struct case_ *c, const char *name, const char *v)
{
	Onnx__AttributeProto *a = add_attr(c, name);
	a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
	a->has_s = 1;
	a->s.data = (uint8_t *)v;
	a->s.len = strlen(v);
}

static void attr_ints(struct case_ *c, const char *name, size_t n, int64_t *v)
{
	Onnx__AttributeProto *a = add_attr(c, name);
	a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
	a->n_ints = n;
	a->ints = v;
}

static struct tensor *tf(int ndim, const int64_t *dims, const float *v)
{
	struct tensor *t = tensor_new(NULL, TENSOR_FLOAT, ndim, dims);
	assert_non_null(t);
	if (t->nelem)
		memcpy(t->data, v, t->nelem * sizeof(float));
	return t;
}

static struct tensor *ti(int ndim, const int64_t *dims, const int64_t *v)
{
	struct tensor *t = tensor_new(NULL, TENSOR_INT64, ndim, dims);
	assert_non_null(t);
	if (t->nelem)
		memcpy(t->data, v, t->nelem * sizeof(int64_t));
	return t;
}

/*
 * Prepare and run op on the inputs (NULL = omitted); frees the inputs.
 * Returns the output, or NULL with c->err set (prepare or run refused).
 */
static struct tensor *run_op(struct case_ *c, const char *op, size_t n_in, struct tensor **in)
{
	Onnx__NodeProto np = ONNX__NODE_PROTO__INIT;
	np.n_attribute = c->nattr;
	np.attribute = c->attrp;
	np.op_type = (char *)op;
	struct ops_node n = {0};
	int slots[16] = {0};
	n.name = "t";
	n.op_type = op;
	n.kernel = ops_find(op);
	assert_non_null(n.kernel);
	n.opset = c->opset;
	n.n_in = n_in;
	n.n_out = 1;
	n.in = slots;
	n.out = slots + 8;
	enum tensor_dtype types[8], out_type = TENSOR_UNDEFINED;
	for (size_t i = 0; i < n_in; i++)
		types[i] = in[i] ? in[i]->dtype : TENSOR_UNDEFINED;
	struct tensor *out = NULL;
	if (n.kernel->prepare(&n, &np, types, &out_type, c->err, sizeof(c->err)) == 0) {
		if (n.kernel->run(&n, (const struct tensor *const *)in, &out, c->err,
		                  sizeof(c->err))) {
			tensor_free(out);
			out = NULL;
		} else {
			assert_int_equal(out->dtype, out_type);
		}
	}
	for (size_t i = 0; i < n_in; i++)
		tensor_free(in[i]);
	return out;
}

/* As run_op with n_out outputs into out[] (all NULL on failure); returns 0 or -1. */
static int run_op_n(struct case_ *c, const char *op, size_t n_in, struct tensor **in, size_t n_out,
                    struct tensor **out)
{
	Onnx__NodeProto np = ONNX__NODE_PROTO__INIT;
	np.n_attribute = c->nattr;
	np.attribute = c->attrp;
	np.op_type = (char *)op;
	struct ops_node n = {0};
	int slots[16] = {0};
	n.name = "t";
	n.op_type = op;
	n.kernel = ops_find(op);
	assert_non_null(n.kernel);
	n.opset = c->opset;
	n.n_in = n_in;
	n.n_out = n_out;
	n.in = slots;
	n.out = slots + 8;
	enum tensor_dtype types[8], out_types[8] = {0};
	for (size_t i = 0; i < n_in; i++)
		types[i] = in[i] ? in[i]->dtype : TENSOR_UNDEFINED;
	for (size_t i = 0; i < n_out; i++)
		out[i] = NULL;
	int rc = n.kernel->prepare(&n, &np, types, out_types, c->err, sizeof(c->err));
	if (rc == 0)
		rc = n.kernel->run(&n, (const struct tensor *const *)in, out, c->err,
		                   sizeof(c->err));
	for (size_t i = 0; i < n_out; i++) {
		if (rc) {
			tensor_free(out[i]);
			out[i] = NULL;
		} else {
			assert_non_null(out[i]);
			assert_int_equal(out[i]->dtype, out_types[i]);
		}
	}
	for (size_t i = 0; i < n_in; i++)
		tensor_free(in[i]);
	return rc;
}

/* A tensor of a 1-byte or 4-byte integer dtype from int64 values. */
static struct tensor *tn(enum tensor_dtype dt, int ndim, const int64_t *dims, const int64_t *v)
{
	struct tensor *t = tensor_new(NULL, dt, ndim, dims);
	assert_non_null(t);
	for (size_t i = 0; i < t->nelem; i++) {
		if (dt == TENSOR_UINT8)
			((uint8_t *)t->data)[i] = (uint8_t)v[i];
		else if (dt == TENSOR_INT8)
			((int8_t *)t->data)[i] = (int8_t)v[i];
		else
			((int32_t *)t->data)[i] = (int32_t)v[i];
	}
	return t;
}

/* Checks a narrow integer tensor against int64 values; frees it. */
static void expect_n(struct tensor *t, enum tensor_dtype dt, size_t n, const int64_t *want)
{
	assert_non_null(t);
	assert_int_equal(t->dtype, dt);
	assert_int_equal(t->nelem, n);
	for (size_t i = 0; i < n; i++) {
		int64_t g = dt == TENSOR_UINT8  ? ((uint8_t *)t->data)[i]
		            : dt == TENSOR_INT8 ? ((int8_t *)t->data)[i]
		                                : ((int32_t *)t->data)[i];
		if (g != want[i])
			fail_msg("element %zu: got %lld, want %lld", i, (long long)g,
			         (long long)want[i]);
	}
	tensor_free(t);
}

static void expect_f(struct tensor *t, int ndim, const int64_t *dims, const float *want)
{
	assert_non_null(t);
	assert_int_equal(t->dtype, TENSOR_FLOAT);
	assert_int_equal(t->ndim, ndim);
	for (int i = 0; i < ndim; i++)
		assert_int_equal(t->dims[i], dims[i]);
	const float *d = t->data;
	for (size_t i = 0; i < t->nelem; i++)
		if (fabsf(d[i] - want[i]) > 1e-5f * (1.0f + fabsf(want[i])))
			fail_msg("element %zu: got %g, want %g", i, d[i], want[i]);
	tensor_free(t);
}

static void expect_i(struct tensor *t, int ndim, const int64_t *dims, const int64_t *want)
{
	assert_non_null(t);
	assert_int_equal(t->dtype, TENSOR_INT64);
	assert_int_equal(t->ndim, ndim);
	for (int i = 0; i < ndim; i++)
		assert_int_equal(t->dims[i], dims[i]);
	for (size_t i = 0; i < t->nelem; i++)
		assert_int_equal(((int64_t *)t->data)[i], want[i]);
	tensor_free(t);
}

static void test_add_broadcast(void **state)
{
	struct case_ c;
	case_init(&c);
	/* [2,3] + [3] */
	struct tensor *in[2] = {tf(2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6}),
	                        tf(1, (int64_t[]){3}, (float[]){10, 20, 30})};
	expect_f(run_op(&c, "Add", 2, in), 2, (int64_t[]){2, 3}, (float[]){11, 22, 33, 14, 25, 36});
	/* [2,1] - [1,3]: an outer difference */
	in[0] = tf(2, (int64_t[]){2, 1}, (float[]){1, 2});
	in[1] = tf(2, (int64_t[]){1, 3}, (float[]){10, 20, 30});
	expect_f(run_op(&c, "Sub", 2, in), 2, (int64_t[]){2, 3},
	         (float[]){-9, -19, -29, -8, -18, -28});
	/* scalar * [2,2,2] (rank 0 broadcasts) */
	in[0] = tf(0, NULL, (float[]){2});
	in[1] = tf(3, (int64_t[]){2, 1, 2}, (float[]){1, 2, 3, 4});
	expect_f(run_op(&c, "Mul", 2, in), 3, (int64_t[]){2, 1, 2}, (float[]){2, 4, 6, 8});
	/* [3,1,2] / [2,1]: middle dimension from the second operand */
	in[0] = tf(3, (int64_t[]){3, 1, 2}, (float[]){2, 4, 6, 8, 10, 12});
	in[1] = tf(2, (int64_t[]){2, 1}, (float[]){1, 2});
	expect_f(run_op(&c, "Div", 2, in), 3, (int64_t[]){3, 2, 2},
	         (float[]){2, 4, 1, 2, 6, 8, 3, 4, 10, 12, 5, 6});
	/* shapes that do not broadcast: an error naming both */
	in[0] = tf(1, (int64_t[]){3}, (float[]){1, 2, 3});
	in[1] = tf(1, (int64_t[]){2}, (float[]){1, 2});
	assert_null(run_op(&c, "Add", 2, in));
	assert_non_null(strstr(c.err, "[3] and [2]"));
}

static void test_int64_arith(void **state)
{
	struct case_ c;
	case_init(&c);
	struct tensor *in[2] = {ti(1, (int64_t[]){3}, (int64_t[]){7, -7, INT64_MIN}),
	                        ti(1, (int64_t[]){3}, (int64_t[]){2, 2, -1})};
	expect_i(run_op(&c, "Div", 2, in), 1, (int64_t[]){3}, (int64_t[]){3, -3, INT64_MIN});
	in[0] = ti(1, (int64_t[]){2}, (int64_t[]){1, 2});
	in[1] = ti(1, (int64_t[]){2}, (int64_t[]){1, 0});
	assert_null(run_op(&c, "Div", 2, in));
	assert_non_null(strstr(c.err, "division by zero"));
	in[0] = ti(1, (int64_t[]){2}, (int64_t[]){INT64_MAX, 5});
	in[1] = ti(0, NULL, (int64_t[]){1});
	expect_i(run_op(&c, "Add", 2, in), 1, (int64_t[]){2}, (int64_t[]){INT64_MIN, 6});
	/* mixed dtypes are refused at prepare */
	in[0] = ti(1, (int64_t[]){1}, (int64_t[]){1});
	in[1] = tf(1, (int64_t[]){1}, (float[]){1});
	assert_null(run_op(&c, "Add", 2, in));
	assert_non_null(strstr(c.err, "differs"));
}

static void test_narrow_int_arith(void **state)
{
	struct case_ c;
	case_init(&c);
	int64_t d4[1] = {4};
	/* uint8 wraps: 250 + 10 = 260 - 256 = 4 */
	struct tensor *in[2] = {tn(TENSOR_UINT8, 1, d4, (int64_t[]){250, 3, 16, 7}),
	                        tn(TENSOR_UINT8, 1, d4, (int64_t[]){10, 5, 17, 2})};
	expect_n(run_op(&c, "Add", 2, in), TENSOR_UINT8, 4, (int64_t[]){4, 8, 33, 9});
	in[0] = tn(TENSOR_UINT8, 1, d4, (int64_t[]){3, 0, 255, 200});
	in[1] = tn(TENSOR_UINT8, 0, NULL, (int64_t[]){5});
	expect_n(run_op(&c, "Sub", 2, in), TENSOR_UINT8, 4, (int64_t[]){254, 251, 250, 195});
	in[0] = tn(TENSOR_UINT8, 1, d4, (int64_t[]){16, 255, 2, 0});
	in[1] = tn(TENSOR_UINT8, 1, d4, (int64_t[]){17, 255, 3, 9});
	expect_n(run_op(&c, "Mul", 2, in), TENSOR_UINT8, 4, (int64_t[]){16, 1, 6, 0});
	in[0] = tn(TENSOR_UINT8, 1, d4, (int64_t[]){7, 255, 1, 0});
	in[1] = tn(TENSOR_UINT8, 1, d4, (int64_t[]){2, 16, 3, 9});
	expect_n(run_op(&c, "Div", 2, in), TENSOR_UINT8, 4, (int64_t[]){3, 15, 0, 0});
	in[0] = tn(TENSOR_UINT8, 1, d4, (int64_t[]){7, 255, 1, 0});
	in[1] = tn(TENSOR_UINT8, 1, d4, (int64_t[]){2, 0, 3, 9});
	assert_null(run_op(&c, "Div", 2, in));
	assert_non_null(strstr(c.err, "division by zero"));
	/* int8: truncation toward zero, wrap-around, -128 / -1 wraps to -128 */
	in[0] = tn(TENSOR_INT8, 1, d4, (int64_t[]){-7, 7, -128, 100});
	in[1] = tn(TENSOR_INT8, 1, d4, (int64_t[]){2, -2, -1, 3});
	expect_n(run_op(&c, "Div", 2, in), TENSOR_INT8, 4, (int64_t[]){-3, -3, -128, 33});
	in[0] = tn(TENSOR_INT8, 1, d4, (int64_t[]){127, -128, 64, -1});
	in[1] = tn(TENSOR_INT8, 1, d4, (int64_t[]){1, 1, 2, 1});
	expect_n(run_op(&c, "Add", 2, in), TENSOR_INT8, 4, (int64_t[]){-128, -127, 66, 0});
	in[0] = tn(TENSOR_INT8, 1, d4, (int64_t[]){-128, 64, 3, -3});
	in[1] = tn(TENSOR_INT8, 1, d4, (int64_t[]){1, 2, -4, 5});
	expect_n(run_op(&c, "Sub", 2, in), TENSOR_INT8, 4, (int64_t[]){127, 62, 7, -8});
	expect_n(run_op(&c, "Mul", 2,
	                (struct tensor *[]){tn(TENSOR_INT8, 1, d4, (int64_t[]){64, -3, 16, 0}),
	                                    tn(TENSOR_INT8, 1, d4, (int64_t[]){2, 5, 16, 9})}),
	         TENSOR_INT8, 4, (int64_t[]){-128, -15, 0, 0});
	/* int32, broadcast [2,1] op [2] */
	in[0] = tn(TENSOR_INT32, 2, (int64_t[]){2, 1}, (int64_t[]){INT32_MAX, -9});
	in[1] = tn(TENSOR_INT32, 1, (int64_t[]){2}, (int64_t[]){1, 2});
	expect_n(run_op(&c, "Add", 2, in), TENSOR_INT32, 4,
	         (int64_t[]){INT32_MIN, INT32_MIN + 1, -8, -7});
	in[0] = tn(TENSOR_INT32, 1, d4, (int64_t[]){INT32_MIN, -9, 9, 65536});
	in[1] = tn(TENSOR_INT32, 1, d4, (int64_t[]){-1, 4, -4, 65536});
	expect_n(run_op(&c, "Div", 2, in), TENSOR_INT32, 4, (int64_t[]){INT32_MIN, -2, -2, 1});
	in[0] = tn(TENSOR_INT32, 1, d4, (int64_t[]){INT32_MIN, -9, 9, 65536});
	in[1] = tn(TENSOR_INT32, 1, d4, (int64_t[]){-1, 4, -4, 65536});
	expect_n(run_op(&c, "Mul", 2, in), TENSOR_INT32, 4, (int64_t[]){INT32_MIN, -36, -36, 0});
	in[0] = tn(TENSOR_INT32, 1, d4, (int64_t[]){INT32_MIN, -9, 9, 0});
	in[1] = tn(TENSOR_INT32, 1, d4, (int64_t[]){1, 4, -4, 0});
	expect_n(run_op(&c, "Sub", 2, in), TENSOR_INT32, 4, (int64_t[]){INT32_MAX, -13, 13, 0});
	/* not for the other binary operators, nor mixed */
	in[0] = tn(TENSOR_UINT8, 1, d4, (int64_t[]){1, 2, 3, 4});
	in[1] = tn(TENSOR_UINT8, 1, d4, (int64_t[]){1, 2, 3, 4});
	assert_null(run_op(&c, "PRelu", 2, in));
	assert_non_null(strstr(c.err, "UINT8 not supported"));
	in[0] = tn(TENSOR_UINT8, 1, d4, (int64_t[]){1, 2, 3, 4});
	in[1] = tn(TENSOR_INT8, 1, d4, (int64_t[]){1, 2, 3, 4});
	assert_null(run_op(&c, "Add", 2, in));
	assert_non_null(strstr(c.err, "differs"));
}

static void test_unary(void **state)
{
	struct case_ c;
	case_init(&c);
	struct tensor *in[3] = {tf(1, (int64_t[]){4}, (float[]){-2, -0.5f, 0, 3})};
	expect_f(run_op(&c, "Relu", 1, in), 1, (int64_t[]){4}, (float[]){0, 0, 0, 3});
	in[0] = tf(1, (int64_t[]){3}, (float[]){0, -1000, 1000});
	expect_f(run_op(&c, "Sigmoid", 1, in), 1, (int64_t[]){3}, (float[]){0.5f, 0, 1});
	attr_f(&c, "alpha", 0.1f);
	in[0] = tf(1, (int64_t[]){2}, (float[]){-2, 2});
	expect_f(run_op(&c, "LeakyRelu", 1, in), 1, (int64_t[]){2}, (float[]){-0.2f, 2});
	case_init(&c);
	in[0] = tf(1, (int64_t[]){4}, (float[]){-5, -1, 1, 5});
	in[1] = tf(0, NULL, (float[]){-2});
	in[2] = tf(0, NULL, (float[]){2});
	expect_f(run_op(&c, "Clip", 3, in), 1, (int64_t[]){4}, (float[]){-2, -1, 1, 2});
	/* Clip with only max (min omitted) */
	in[0] = tf(1, (int64_t[]){2}, (float[]){-5, 5});
	in[1] = NULL;
	in[2] = tf(0, NULL, (float[]){1});
	expect_f(run_op(&c, "Clip", 3, in), 1, (int64_t[]){2}, (float[]){-5, 1});
}

static void test_gemm(void **state)
{
	struct case_ c;
	case_init(&c);
	/* A [2,3], B given transposed [2,3], C [2] broadcast over rows; alpha 2, beta 10. */
	attr_i(&c, "transB", 1);
	attr_f(&c, "alpha", 2);
	attr_f(&c, "beta", 10);
	struct tensor *in[3] = {tf(2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6}),
	                        tf(2, (int64_t[]){2, 3}, (float[]){1, 0, 1, 0, 1, 0}),
	                        tf(1, (int64_t[]){2}, (float[]){1, 2})};
	/* A B^T = [[4,2],[10,5]] */
	expect_f(run_op(&c, "Gemm", 3, in), 2, (int64_t[]){2, 2}, (float[]){18, 24, 30, 30});
	/* transA with C [2,1] */
	case_init(&c);
	attr_i(&c, "transA", 1);
	in[0] = tf(2, (int64_t[]){2, 2}, (float[]){1, 2, 3, 4}); /* A^T = [[1,3],[2,4]] */
	in[1] = tf(2, (int64_t[]){2, 1}, (float[]){1, 1});
	in[2] = tf(2, (int64_t[]){2, 1}, (float[]){100, 200});
	expect_f(run_op(&c, "Gemm", 3, in), 2, (int64_t[]){2, 1}, (float[]){104, 206});
	/* K mismatch */
	case_init(&c);
	in[0] = tf(2, (int64_t[]){1, 3}, (float[]){1, 2, 3});
	in[1] = tf(2, (int64_t[]){2, 2}, (float[]){1, 2, 3, 4});
	assert_null(run_op(&c, "Gemm", 2, in));
	assert_non_null(strstr(c.err, "do not multiply"));
	/* a long dot product exercises the unrolled path and its tail */
	float a[19], b[19 * 2], want = 0;
	for (int i = 0; i < 19; i++) {
		a[i] = (float)i;
		b[i] = 1;
		b[19 + i] = (float)(i % 3);
		want += (float)i * (float)(i % 3);
	}
	attr_i(&c, "transB", 1);
	in[0] = tf(2, (int64_t[]){1, 19}, a);
	in[1] = tf(2, (int64_t[]){2, 19}, b);
	expect_f(run_op(&c, "Gemm", 2, in), 2, (int64_t[]){1, 2}, (float[]){171, want});
}

/* A fixed pseudo-random float in [-2, 2), some exact zeros and negative zeros. */
static float prand(uint32_t *st)
{
	*st = *st * 1664525u + 1013904223u;
	uint32_t r = *st >> 8;
	if (r % 17 == 0)
		return r % 2 ? -0.0f : 0.0f;
	return (float)r / (float)(1u << 22) - 2.0f;
}

/*
 * ops_gemm and ops_gemm_bias against the scalar definitions they promise
 * (ops_linalg.c), bit for bit, on shapes that leave every tail in use:
 * rows not a multiple of 4, columns not a multiple of 8, K not a multiple of
 * 4 or 8. A kernel that reordered a sum (or used FMA) fails here.
 */
static void test_gemm_kernels_exact(void **state)
{
	static const size_t shapes[][3] = {{1, 1, 1}, {7, 13, 11},  {4, 16, 144}, {16, 64, 9},
	                                   {5, 9, 3}, {1, 64, 128}, {10, 10, 64}, {3, 24, 17}};
	enum { CAP = 16384 };
	static float A[CAP], B[CAP], bias[64], Y[CAP], R[CAP];
	uint32_t st = 12345;
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
		assert_true(M * K <= CAP && K * N <= CAP && M * N <= CAP && M <= 64);
		for (size_t i = 0; i < M * K; i++)
			A[i] = prand(&st);
		for (size_t i = 0; i < K * N; i++)
			B[i] = prand(&st);
		for (size_t i = 0; i < M; i++)
			bias[i] = prand(&st);
		/* A B: y = 0; y += a0 x0 + a1 x1 + a2 x2 + a3 x3 per four k; then y += a x */
		for (size_t i = 0; i < M; i++)
			for (size_t j = 0; j < N; j++) {
				float y = 0.0f;
				size_t k = 0;
				for (; k + 4 <= K; k += 4)
					y += A[i * K + k] * B[k * N + j] +
					     A[i * K + k + 1] * B[(k + 1) * N + j] +
					     A[i * K + k + 2] * B[(k + 2) * N + j] +
					     A[i * K + k + 3] * B[(k + 3) * N + j];
				for (; k < K; k++)
					y += A[i * K + k] * B[k * N + j];
				R[i * N + j] = y;
			}
		ops_gemm(0, 0, M, N, K, A, B, Y);
		if (memcmp(Y, R, M * N * sizeof(float)) != 0)
			fail_msg("ops_gemm A B [%zu,%zu,%zu] differs from the scalar order", M, N,
			         K);
		for (size_t i = 0; i < M * N; i++)
			R[i] = R[i] + bias[i / N];
		ops_gemm_bias(M, N, K, A, B, bias, Y);
		if (memcmp(Y, R, M * N * sizeof(float)) != 0)
			fail_msg("ops_gemm_bias [%zu,%zu,%zu] differs from the scalar order", M, N,
			         K);
		/* A B^T (B read as [N,K]): eight partial sums, then the tail */
		for (size_t i = 0; i < M; i++)
			for (size_t j = 0; j < N; j++) {
				const float *a = A + i * K, *b = B + j * K;
				float p[8] = {0};
				size_t k = 0;
				for (; k + 8 <= K; k += 8)
					for (int u = 0; u < 8; u++)
						p[u] += a[k + u] * b[k + u];
				float t = ((p[0] + p[4]) + (p[1] + p[5])) +
				          ((p[2] + p[6]) + (p[3] + p[7]));
				for (; k < K; k++)
					t += a[k] * b[k];
				R[i * N + j] = t;
			}
		ops_gemm(0, 1, M, N, K, A, B, Y);
		if (memcmp(Y, R, M * N * sizeof(float)) != 0)
			fail_msg("ops_gemm A B^T [%zu,%zu,%zu] differs from the scalar order", M, N,
			         K);
	}
}

/*
 * The fast pooling paths (a row at a time, the four-wide 2x2 max) against the
 * per-output definition: max as v > acc ? v : acc from -inf (so a NaN tap
 * is skipped and +0 vs -0 keeps the first), average summed in window order.
 */
static void test_pool_fast_exact(void **state)
{
	enum { H = 6, W = 10 };
	float x[2 * H * W];
	uint32_t st = 777;
	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		x[i] = prand(&st);
	x[3] = NAN;
	x[W + 7] = NAN;
	int64_t k2[2] = {2, 2}, s2[2] = {2, 2}, k3[2] = {3, 3}, s1[2] = {1, 1},
	        p1[4] = {1, 1, 1, 1}, p_rows[4] = {1, 0, 1, 0};
	/* 0: 2x2/2 max, 1: 2x2/2 average, 2: padded, 3: 3x3/1 padded, 4: padded rows only */
	for (int v = 0; v < 5; v++) {
		int is_max = v != 1, pads = v >= 2;
		int64_t *pv = v == 4 ? p_rows : p1;
		int64_t *k = v == 3 ? k3 : k2, *s = v == 3 ? s1 : s2;
		struct case_ c;
		case_init(&c);
		attr_ints(&c, "kernel_shape", 2, k);
		attr_ints(&c, "strides", 2, s);
		if (pads)
			attr_ints(&c, "pads", 4, pv);
		struct tensor *in[1] = {tf(4, (int64_t[]){1, 2, H, W}, x)};
		struct tensor *y = run_op(&c, is_max ? "MaxPool" : "AveragePool", 1, in);
		assert_non_null(y);
		int64_t OH = y->dims[2], OW = y->dims[3];
		const float *yd = y->data;
		for (int64_t pl = 0; pl < 2; pl++)
			for (int64_t oh = 0; oh < OH; oh++)
				for (int64_t ow = 0; ow < OW; ow++) {
					float acc = is_max ? -INFINITY : 0.0f;
					int64_t cnt = 0;
					for (int64_t i = oh * s[0] - pv[0] * pads;
					     i < oh * s[0] - pv[0] * pads + k[0]; i++)
						for (int64_t j = ow * s[1] - pv[1] * pads;
						     j < ow * s[1] - pv[1] * pads + k[1]; j++) {
							if (i < 0 || i >= H || j < 0 || j >= W)
								continue;
							float t = x[(pl * H + i) * W + j];
							acc =
							    is_max ? (t > acc ? t : acc) : acc + t;
							cnt++;
						}
					if (!is_max)
						acc = acc / (float)cnt;
					float got = yd[(pl * OH + oh) * OW + ow];
					if (memcmp(&got, &acc, sizeof(acc)) != 0)
						fail_msg("variant %d plane %lld (%lld,%lld): got "
						         "%a, want %a",
						         v, (long long)pl, (long long)oh,
						         (long long)ow, (double)got, (double)acc);
				}
		tensor_free(y);
	}
}

static void test_matmul(void **state)
{
	struct case_ c;
	case_init(&c);
	/* batched [2,2,3] x [3,1] (B broadcast over the batch) */
	struct tensor *in[2] = {
	    tf(3, (int64_t[]){2, 2, 3}, (float[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}),
	    tf(2, (int64_t[]){3, 1}, (float[]){1, 0, -1})};
	expect_f(run_op(&c, "MatMul", 2, in), 3, (int64_t[]){2, 2, 1}, (float[]){-2, -2, -2, -2});
	/* 1-D x 2-D: the promoted dimension is dropped */
	in[0] = tf(1, (int64_t[]){2}, (float[]){1, 2});
	in[1] = tf(2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
	expect_f(run_op(&c, "MatMul", 2, in), 1, (int64_t[]){3}, (float[]){9, 12, 15});
	/* [2,1,2,2] x [3,2,2]: batch dims broadcast to [2,3] */
	float a[8] = {1, 0, 0, 1, 2, 0, 0, 2}, b[12] = {1, 2, 3, 4, 0, 1, 1, 0, 1, 1, 1, 1};
	in[0] = tf(4, (int64_t[]){2, 1, 2, 2}, a);
	in[1] = tf(3, (int64_t[]){3, 2, 2}, b);
	expect_f(run_op(&c, "MatMul", 2, in), 4, (int64_t[]){2, 3, 2, 2},
	         (float[]){1, 2, 3, 4, 0, 1, 1, 0, 1, 1, 1, 1, 2, 4, 6, 8, 0, 2, 2, 0, 2, 2, 2, 2});
}

static const float img3x3[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};

static void test_conv(void **state)
{
	struct case_ c;
	case_init(&c);
	/* 3x3 image, 2x2 kernel of ones, no padding: window sums */
	struct tensor *in[3] = {tf(4, (int64_t[]){1, 1, 3, 3}, img3x3),
	                        tf(4, (int64_t[]){1, 1, 2, 2}, (float[]){1, 1, 1, 1}),
	                        tf(1, (int64_t[]){1}, (float[]){100})};
	expect_f(run_op(&c, "Conv", 3, in), 4, (int64_t[]){1, 1, 2, 2},
	         (float[]){112, 116, 124, 128});
	/* pads 1, stride 2: windows at rows/cols -1, 1 */
	int64_t pads[4] = {1, 1, 1, 1}, strides[2] = {2, 2};
	attr_ints(&c, "pads", 4, pads);
	attr_ints(&c, "strides", 2, strides);
	in[0] = tf(4, (int64_t[]){1, 1, 3, 3}, img3x3);
	in[1] = tf(4, (int64_t[]){1, 1, 2, 2}, (float[]){1, 1, 1, 1});
	expect_f(run_op(&c, "Conv", 2, in), 4, (int64_t[]){1, 1, 2, 2}, (float[]){1, 5, 11, 28});
	/* dilation 2 on 3x3 with a 2x2 kernel: the four corners */
	case_init(&c);
	int64_t dil[2] = {2, 2};
	attr_ints(&c, "dilations", 2, dil);
	in[0] = tf(4, (int64_t[]){1, 1, 3, 3}, img3x3);
	in[1] = tf(4, (int64_t[]){1, 1, 2, 2}, (float[]){1, 10, 100, 1000});
	expect_f(run_op(&c, "Conv", 2, in), 4, (int64_t[]){1, 1, 1, 1}, (float[]){9731});
	/* group 2: each output channel sees only its own input channel */
	case_init(&c);
	attr_i(&c, "group", 2);
	in[0] = tf(4, (int64_t[]){1, 2, 1, 2}, (float[]){1, 2, 3, 4});
	in[1] = tf(4, (int64_t[]){2, 1, 1, 1}, (float[]){10, -1});
	expect_f(run_op(&c, "Conv", 2, in), 4, (int64_t[]){1, 2, 1, 2}, (float[]){10, 20, -3, -4});
	/* auto_pad SAME_UPPER, stride 2 on 3 wide: out 2, total pad 1 at the end */
	case_init(&c);
	attr_s(&c, "auto_pad", "SAME_UPPER");
	int64_t s1[1] = {2};
	attr_ints(&c, "strides", 1, s1);
	in[0] = tf(3, (int64_t[]){1, 1, 3}, (float[]){1, 2, 3});
	in[1] = tf(3, (int64_t[]){1, 1, 2}, (float[]){1, 1});
	expect_f(run_op(&c, "Conv", 2, in), 3, (int64_t[]){1, 1, 2}, (float[]){3, 3});
	/* SAME_LOWER puts the pad first */
	case_init(&c);
	attr_s(&c, "auto_pad", "SAME_LOWER");
	attr_ints(&c, "strides", 1, s1);
	in[0] = tf(3, (int64_t[]){1, 1, 3}, (float[]){1, 2, 3});
	in[1] = tf(3, (int64_t[]){1, 1, 2}, (float[]){1, 1});
	expect_f(run_op(&c, "Conv", 2, in), 3, (int64_t[]){1, 1, 2}, (float[]){1, 5});
	/* an unknown auto_pad is refused with its value */
	case_init(&c);
	attr_s(&c, "auto_pad", "SIDEWAYS");
	in[0] = tf(3, (int64_t[]){1, 1, 3}, (float[]){1, 2, 3});
	in[1] = tf(3, (int64_t[]){1, 1, 2}, (float[]){1, 1});
	assert_null(run_op(&c, "Conv", 2, in));
	assert_non_null(strstr(c.err, "auto_pad=SIDEWAYS"));
	/* channel mismatch */
	case_init(&c);
	in[0] = tf(4, (int64_t[]){1, 1, 3, 3}, img3x3);
	in[1] = tf(4, (int64_t[]){1, 2, 1, 1}, (float[]){1, 1});
	assert_null(run_op(&c, "Conv", 2, in));
	assert_non_null(strstr(c.err, "do not fit"));
}

static void test_pool(void **state)
{
	struct case_ c;
	case_init(&c);
	int64_t k2[2] = {2, 2}, s2[2] = {2, 2}, p1[4] = {1, 1, 1, 1};
	float img4[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	attr_ints(&c, "kernel_shape", 2, k2);
	attr_ints(&c, "strides", 2, s2);
	struct tensor *in[1] = {tf(4, (int64_t[]){1, 1, 4, 4}, img4)};
	expect_f(run_op(&c, "MaxPool", 1, in), 4, (int64_t[]){1, 1, 2, 2}, (float[]){6, 8, 14, 16});
	in[0] = tf(4, (int64_t[]){1, 1, 4, 4}, img4);
	expect_f(run_op(&c, "AveragePool", 1, in), 4, (int64_t[]){1, 1, 2, 2},
	         (float[]){3.5f, 5.5f, 11.5f, 13.5f});
	/* ceil_mode on 3x3, kernel 2 stride 2: a partial window at the end */
	attr_i(&c, "ceil_mode", 1);
	in[0] = tf(4, (int64_t[]){1, 1, 3, 3}, img3x3);
	expect_f(run_op(&c, "MaxPool", 1, in), 4, (int64_t[]){1, 1, 2, 2}, (float[]){5, 6, 8, 9});
	in[0] = tf(4, (int64_t[]){1, 1, 3, 3}, img3x3);
	expect_f(run_op(&c, "AveragePool", 1, in), 4, (int64_t[]){1, 1, 2, 2},
	         (float[]){3, 4.5f, 7.5f, 9});
	/* pads 1, kernel 2, stride 2 on 3x3: count_include_pad 0 vs 1 */
	case_init(&c);
	attr_ints(&c, "kernel_shape", 2, k2);
	attr_ints(&c, "strides", 2, s2);
	attr_ints(&c, "pads", 4, p1);
	in[0] = tf(4, (int64_t[]){1, 1, 3, 3}, img3x3);
	expect_f(run_op(&c, "AveragePool", 1, in), 4, (int64_t[]){1, 1, 2, 2},
	         (float[]){1, 2.5f, 5.5f, 7});
	attr_i(&c, "count_include_pad", 1);
	in[0] = tf(4, (int64_t[]){1, 1, 3, 3}, img3x3);
	expect_f(run_op(&c, "AveragePool", 1, in), 4, (int64_t[]){1, 1, 2, 2},
	         (float[]){0.25f, 1.25f, 2.75f, 7});
	/* MaxPool over padding ignores the pad */
	case_init(&c);
	attr_ints(&c, "kernel_shape", 2, k2);
	attr_ints(&c, "strides", 2, s2);
	attr_ints(&c, "pads", 4, p1);
	in[0] = tf(4, (int64_t[]){1, 1, 3, 3}, (float[]){-1, -2, -3, -4, -5, -6, -7, -8, -9});
	expect_f(run_op(&c, "MaxPool", 1, in), 4, (int64_t[]){1, 1, 2, 2},
	         (float[]){-1, -2, -4, -5});
	/* MaxPool on uint8 with Indices: flat index in [N,C,H,W], incl. the plane offset */
	case_init(&c);
	attr_ints(&c, "kernel_shape", 2, k2);
	attr_ints(&c, "strides", 2, s2);
	struct tensor *mo[2];
	in[0] = tn(TENSOR_UINT8, 4, (int64_t[]){1, 2, 2, 4},
	           (int64_t[]){1, 9, 200, 3, 7, 2, 4, 255, 0, 0, 5, 5, 0, 0, 5, 5});
	assert_int_equal(run_op_n(&c, "MaxPool", 1, in, 2, mo), 0);
	expect_n(mo[0], TENSOR_UINT8, 4, (int64_t[]){9, 255, 0, 5});
	/* ties keep the first: plane 1 starts at 8 */
	expect_i(mo[1], 4, (int64_t[]){1, 2, 1, 2}, (int64_t[]){1, 7, 8, 10});
	/* storage_order 1: column-major within the plane (h + w * H) */
	attr_i(&c, "storage_order", 1);
	in[0] = tf(4, (int64_t[]){1, 1, 2, 4}, (float[]){1, 9, 200, 3, 7, 2, 4, 255});
	assert_int_equal(run_op_n(&c, "MaxPool", 1, in, 2, mo), 0);
	expect_f(mo[0], 4, (int64_t[]){1, 1, 1, 2}, (float[]){9, 255});
	expect_i(mo[1], 4, (int64_t[]){1, 1, 1, 2}, (int64_t[]){2, 7});
	/* a window wholly in the padding: -inf in float, 0 in uint8 */
	case_init(&c);
	attr_ints(&c, "kernel_shape", 2, (int64_t[]){1, 1});
	attr_ints(&c, "pads", 4, (int64_t[]){1, 0, 0, 0});
	in[0] = tn(TENSOR_UINT8, 4, (int64_t[]){1, 1, 1, 1}, (int64_t[]){7});
	expect_n(run_op(&c, "MaxPool", 1, in), TENSOR_UINT8, 2, (int64_t[]){0, 7});
	in[0] = tf(4, (int64_t[]){1, 1, 1, 1}, (float[]){7});
	struct tensor *pf = run_op(&c, "MaxPool", 1, in);
	assert_non_null(pf);
	assert_int_equal(pf->nelem, 2);
	assert_true(isinf(((float *)pf->data)[0]) && ((float *)pf->data)[0] < 0);
	assert_true(((float *)pf->data)[1] == 7.0f);
	tensor_free(pf);
	/* AveragePool stays float only */
	case_init(&c);
	attr_ints(&c, "kernel_shape", 2, k2);
	in[0] = tn(TENSOR_UINT8, 4, (int64_t[]){1, 1, 2, 2}, (int64_t[]){1, 2, 3, 4});
	assert_null(run_op(&c, "AveragePool", 1, in));
	assert_non_null(strstr(c.err, "UINT8 not supported"));
	/* GlobalAveragePool */
	case_init(&c);
	in[0] = tf(4, (int64_t[]){1, 2, 1, 2}, (float[]){1, 3, 10, 20});
	expect_f(run_op(&c, "GlobalAveragePool", 1, in), 4, (int64_t[]){1, 2, 1, 1},
	         (float[]){2, 15});
}

static void test_batchnorm(void **state)
{
	struct case_ c;
	case_init(&c);
	attr_f(&c, "epsilon", 0);
	struct tensor *in[5] = {
	    tf(4, (int64_t[]){1, 2, 1, 2}, (float[]){1, 3, 10, 20}),
	    tf(1, (int64_t[]){2}, (float[]){2, 1}), tf(1, (int64_t[]){2}, (float[]){0, 1}),
	    tf(1, (int64_t[]){2}, (float[]){1, 10}), tf(1, (int64_t[]){2}, (float[]){4, 100})};
	/* (x - mean) / sqrt(var) * scale + bias */
	expect_f(run_op(&c, "BatchNormalization", 5, in), 4, (int64_t[]){1, 2, 1, 2},
	         (float[]){0, 2, 1, 2});
	case_init(&c);
	attr_i(&c, "training_mode", 1);
	for (int i = 0; i < 5; i++)
		in[i] = tf(1, (int64_t[]){1}, (float[]){1});
	assert_null(run_op(&c, "BatchNormalization", 5, in));
	assert_non_null(strstr(c.err, "training"));
	/*
	 * Opset 15 training mode on X [N=2,C=2,1,1]: channel 0 holds {1,3} (mean 2,
	 * variance 1), channel 1 {10,30} (mean 20, variance 100); running stats blend
	 * with momentum 0.5.
	 */
	c.opset = 15;
	attr_f(&c, "epsilon", 0);
	attr_f(&c, "momentum", 0.5f);
	in[0] = tf(4, (int64_t[]){2, 2, 1, 1}, (float[]){1, 10, 3, 30});
	in[1] = tf(1, (int64_t[]){2}, (float[]){2, 1});
	in[2] = tf(1, (int64_t[]){2}, (float[]){0, 1});
	in[3] = tf(1, (int64_t[]){2}, (float[]){0, 10});
	in[4] = tf(1, (int64_t[]){2}, (float[]){1, 50});
	struct tensor *bo[3];
	assert_int_equal(run_op_n(&c, "BatchNormalization", 5, in, 3, bo), 0);
	expect_f(bo[0], 4, (int64_t[]){2, 2, 1, 1}, (float[]){-2, 0, 2, 2});
	expect_f(bo[1], 1, (int64_t[]){2}, (float[]){1, 15});
	expect_f(bo[2], 1, (int64_t[]){2}, (float[]){1, 75});
	/* inference mode with the extra outputs is refused */
	case_init(&c);
	c.opset = 15;
	for (int i = 0; i < 5; i++)
		in[i] = tf(1, (int64_t[]){1}, (float[]){1});
	assert_int_equal(run_op_n(&c, "BatchNormalization", 5, in, 3, bo), -1);
	assert_non_null(strstr(c.err, "training_mode=0"));
}

static void test_softmax(void **state)
{
	struct case_ c;
	case_init(&c);
	float e1 = 1.0f / (1.0f + expf(1.0f)), e2 = 1.0f - e1;
	/* opset 13, axis 0 on [2,2]: per column */
	attr_i(&c, "axis", 0);
	struct tensor *in[1] = {tf(2, (int64_t[]){2, 2}, (float[]){0, 5, 1, 5})};
	expect_f(run_op(&c, "Softmax", 1, in), 2, (int64_t[]){2, 2}, (float[]){e1, 0.5f, e2, 0.5f});
	/* opset 11, axis 0: the whole tensor is one row */
	c.opset = 11;
	in[0] = tf(2, (int64_t[]){2, 2}, (float[]){0, 0, 0, 0});
	expect_f(run_op(&c, "Softmax", 1, in), 2, (int64_t[]){2, 2},
	         (float[]){0.25f, 0.25f, 0.25f, 0.25f});
	/* default axis: -1 at opset 13, large values do not overflow */
	case_init(&c);
	in[0] = tf(2, (int64_t[]){1, 2}, (float[]){1000, 1001});
	expect_f(run_op(&c, "Softmax", 1, in), 2, (int64_t[]){1, 2}, (float[]){e1, e2});
	case_init(&c);
	in[0] = tf(1, (int64_t[]){2}, (float[]){0, 0});
	expect_f(run_op(&c, "LogSoftmax", 1, in), 1, (int64_t[]){2}, (float[]){-logf(2), -logf(2)});
}

static void test_argmax(void **state)
{
	struct case_ c;
	case_init(&c);
	float v[6] = {1, 3, 3, 7, 0, 7};
	struct tensor *in[1] = {tf(2, (int64_t[]){2, 3}, v)};
	attr_i(&c, "axis", 1);
	attr_i(&c, "keepdims", 0);
	expect_i(run_op(&c, "ArgMax", 1, in), 1, (int64_t[]){2}, (int64_t[]){1, 0});
	attr_i(&c, "select_last_index", 1);
	in[0] = tf(2, (int64_t[]){2, 3}, v);
	expect_i(run_op(&c, "ArgMax", 1, in), 1, (int64_t[]){2}, (int64_t[]){2, 2});
	case_init(&c); /* axis 0, keepdims 1 */
	in[0] = tf(2, (int64_t[]){2, 3}, v);
	expect_i(run_op(&c, "ArgMax", 1, in), 2, (int64_t[]){1, 3}, (int64_t[]){1, 0, 1});
	in[0] = tf(2, (int64_t[]){2, 3}, v);
	expect_i(run_op(&c, "ArgMin", 1, in), 2, (int64_t[]){1, 3}, (int64_t[]){0, 1, 0});
	case_init(&c);
	attr_i(&c, "axis", 2);
	in[0] = tf(2, (int64_t[]){2, 3}, v);
	assert_null(run_op(&c, "ArgMax", 1, in));
	assert_non_null(strstr(c.err, "axis 2 out of range"));
}

static void test_shape_ops(void **state)
{
	struct case_ c;
	case_init(&c);
	float v[6] = {1, 2, 3, 4, 5, 6};
	/* Reshape with 0 (copy) and -1 (infer) */
	struct tensor *in[3] = {tf(3, (int64_t[]){2, 3, 1}, v),
	                        ti(1, (int64_t[]){2}, (int64_t[]){0, -1})};
	expect_f(run_op(&c, "Reshape", 2, in), 2, (int64_t[]){2, 3}, v);
	in[0] = tf(2, (int64_t[]){2, 3}, v);
	in[1] = ti(1, (int64_t[]){2}, (int64_t[]){4, -1});
	assert_null(run_op(&c, "Reshape", 2, in));
	assert_non_null(strstr(c.err, "cannot reshape [2,3] to [4,-1]"));
	/* Transpose default (reverse) and perm */
	in[0] = tf(2, (int64_t[]){2, 3}, v);
	expect_f(run_op(&c, "Transpose", 1, in), 2, (int64_t[]){3, 2}, (float[]){1, 4, 2, 5, 3, 6});
	int64_t perm[3] = {1, 2, 0};
	attr_ints(&c, "perm", 3, perm);
	in[0] = tf(3, (int64_t[]){1, 2, 3}, v);
	expect_f(run_op(&c, "Transpose", 1, in), 3, (int64_t[]){2, 3, 1}, v);
	/* Concat on axis 1 */
	case_init(&c);
	attr_i(&c, "axis", 1);
	in[0] = tf(2, (int64_t[]){2, 1}, (float[]){1, 2});
	in[1] = tf(2, (int64_t[]){2, 2}, (float[]){3, 4, 5, 6});
	expect_f(run_op(&c, "Concat", 2, in), 2, (int64_t[]){2, 3}, (float[]){1, 3, 4, 2, 5, 6});
	/* Flatten axis 2 of [1,2,3] -> [2,3] */
	case_init(&c);
	attr_i(&c, "axis", 2);
	in[0] = tf(3, (int64_t[]){1, 2, 3}, v);
	expect_f(run_op(&c, "Flatten", 1, in), 2, (int64_t[]){2, 3}, v);
	/* Unsqueeze (axes input, opset 13) and Squeeze */
	case_init(&c);
	in[0] = tf(1, (int64_t[]){6}, v);
	in[1] = ti(1, (int64_t[]){2}, (int64_t[]){0, -1});
	expect_f(run_op(&c, "Unsqueeze", 2, in), 3, (int64_t[]){1, 6, 1}, v);
	in[0] = tf(3, (int64_t[]){1, 6, 1}, v);
	expect_f(run_op(&c, "Squeeze", 1, in), 1, (int64_t[]){6}, v);
	/* Gather rows with a negative index */
	case_init(&c);
	in[0] = tf(2, (int64_t[]){3, 2}, v);
	in[1] = ti(1, (int64_t[]){2}, (int64_t[]){-1, 0});
	expect_f(run_op(&c, "Gather", 2, in), 2, (int64_t[]){2, 2}, (float[]){5, 6, 1, 2});
	in[0] = tf(2, (int64_t[]){3, 2}, v);
	in[1] = ti(1, (int64_t[]){1}, (int64_t[]){3});
	assert_null(run_op(&c, "Gather", 2, in));
	assert_non_null(strstr(c.err, "out of range"));
	/* Shape */
	in[0] = tf(3, (int64_t[]){1, 2, 3}, v);
	expect_i(run_op(&c, "Shape", 1, in), 1, (int64_t[]){3}, (int64_t[]){1, 2, 3});
}

static void test_cast(void **state)
{
	struct case_ c;
	case_init(&c);
	attr_i(&c, "to", TENSOR_INT64);
	struct tensor *in[1] = {tf(1, (int64_t[]){5}, (float[]){1.9f, -1.9f, NAN, 1e30f, -1e30f})};
	expect_i(run_op(&c, "Cast", 1, in), 1, (int64_t[]){5},
	         (int64_t[]){1, -1, 0, INT64_MAX - 1023, INT64_MIN});
	case_init(&c);
	attr_i(&c, "to", 8); /* STRING */
	in[0] = tf(1, (int64_t[]){1}, (float[]){1});
	assert_null(run_op(&c, "Cast", 1, in));
	assert_non_null(strstr(c.err, "STRING not supported"));
}

/* A FLOAT16 / BFLOAT16 tensor from bit patterns. */
static struct tensor *th(enum tensor_dtype dt, size_t n, const uint16_t *bits)
{
	struct tensor *t = tensor_new(NULL, dt, 1, (int64_t[]){(int64_t)n});
	assert_non_null(t);
	memcpy(t->data, bits, n * sizeof(uint16_t));
	return t;
}

static void expect_h(struct tensor *t, enum tensor_dtype dt, size_t n, const uint16_t *want)
{
	assert_non_null(t);
	assert_int_equal(t->dtype, dt);
	assert_int_equal(t->nelem, n);
	for (size_t i = 0; i < n; i++)
		if (((uint16_t *)t->data)[i] != want[i])
			fail_msg("element %zu: got 0x%04x, want 0x%04x", i,
			         ((uint16_t *)t->data)[i], want[i]);
	tensor_free(t);
}

static void test_float16(void **state)
{
	/* FLOAT16: 1 sign, 5 exponent (bias 15), 10 fraction bits */
	assert_int_equal(tensor_f16_from_double(1.0), 0x3c00);
	assert_int_equal(tensor_f16_from_double(-2.0), 0xc000);
	assert_int_equal(tensor_f16_from_double(-0.0), 0x8000);
	assert_int_equal(tensor_f16_from_double(0.1), 0x2e66);
	assert_int_equal(tensor_f16_from_double(65504.0), 0x7bff); /* largest finite */
	assert_int_equal(tensor_f16_from_double(65519.0), 0x7bff);
	assert_int_equal(tensor_f16_from_double(65520.0), 0x7c00); /* the tie rounds to inf */
	assert_int_equal(tensor_f16_from_double(-1e10), 0xfc00);
	assert_int_equal(tensor_f16_from_double(INFINITY), 0x7c00);
	assert_int_equal(tensor_f16_from_double(NAN), 0x7e00);
	/* ties to even: 1 + 2^-11 -> 1, 1 + 3 * 2^-11 -> 1 + 2^-9 */
	assert_int_equal(tensor_f16_from_double(1.0 + ldexp(1, -11)), 0x3c00);
	assert_int_equal(tensor_f16_from_double(1.0 + 3 * ldexp(1, -11)), 0x3c02);
	/* subnormals, in units of 2^-24 */
	assert_int_equal(tensor_f16_from_double(ldexp(1, -24)), 0x0001);
	assert_int_equal(tensor_f16_from_double(ldexp(1, -25)), 0x0000);
	assert_int_equal(tensor_f16_from_double(3 * ldexp(1, -25)), 0x0002);
	assert_int_equal(tensor_f16_from_double(ldexp(1, -14) - ldexp(1, -25)), 0x0400);
	assert_true(tensor_f16_to_float(0x3555) == 0.333251953125f);
	assert_true(tensor_f16_to_float(0x0001) == ldexpf(1, -24));
	assert_true(tensor_f16_to_float(0x7bff) == 65504.0f);
	assert_true(isinf(tensor_f16_to_float(0xfc00)) && tensor_f16_to_float(0xfc00) < 0);
	assert_true(isnan(tensor_f16_to_float(0xfe00)));
	assert_true(signbit(tensor_f16_to_float(0x8000)));
	/* BFLOAT16: the top half of a float32, rounded to nearest even */
	assert_int_equal(tensor_bf16_from_double(1.0), 0x3f80);
	assert_int_equal(tensor_bf16_from_double(-1.0), 0xbf80);
	assert_int_equal(tensor_bf16_from_double(1.0 + ldexp(1, -8)), 0x3f80);
	assert_int_equal(tensor_bf16_from_double(1.0 + 3 * ldexp(1, -8)), 0x3f82);
	assert_int_equal(tensor_bf16_from_double(3.4028234663852886e38), 0x7f80); /* FLT_MAX */
	assert_int_equal(tensor_bf16_from_double(NAN), 0x7fc0);
	assert_true(tensor_bf16_to_float(0x4049) == 3.140625f);
	assert_true(isinf(tensor_bf16_to_float(0x7f80)));

	/* Cast FLOAT -> FLOAT16 -> FLOAT, INT64 -> BFLOAT16, FLOAT16 -> INT64 */
	struct case_ c;
	case_init(&c);
	attr_i(&c, "to", TENSOR_FLOAT16);
	struct tensor *in[2] = {tf(1, (int64_t[]){4}, (float[]){1, 0.1f, 70000, -0.0f})};
	expect_h(run_op(&c, "Cast", 1, in), TENSOR_FLOAT16, 4,
	         (uint16_t[]){0x3c00, 0x2e66, 0x7c00, 0x8000});
	case_init(&c);
	attr_i(&c, "to", TENSOR_FLOAT);
	in[0] = th(TENSOR_FLOAT16, 3, (uint16_t[]){0x4500, 0xc000, 0x0001});
	expect_f(run_op(&c, "Cast", 1, in), 1, (int64_t[]){3}, (float[]){5, -2, ldexpf(1, -24)});
	case_init(&c);
	attr_i(&c, "to", TENSOR_BFLOAT16);
	in[0] = ti(1, (int64_t[]){2}, (int64_t[]){257, -3}); /* 257 = 256 + half a step */
	expect_h(run_op(&c, "Cast", 1, in), TENSOR_BFLOAT16, 2, (uint16_t[]){0x4380, 0xc040});
	case_init(&c);
	attr_i(&c, "to", TENSOR_INT64);
	in[0] = th(TENSOR_BFLOAT16, 2, (uint16_t[]){0x4049, 0xc2f7}); /* 3.140625, -123.5 */
	expect_i(run_op(&c, "Cast", 1, in), 1, (int64_t[]){2}, (int64_t[]){3, -123});
	/* CastLike takes the target from its second input */
	case_init(&c);
	in[0] = tf(1, (int64_t[]){2}, (float[]){3.140625f, 2.0f});
	in[1] = th(TENSOR_BFLOAT16, 1, (uint16_t[]){0});
	expect_h(run_op(&c, "CastLike", 2, in), TENSOR_BFLOAT16, 2, (uint16_t[]){0x4049, 0x4000});
	/* other kernels keep refusing 16-bit floats */
	case_init(&c);
	in[0] = th(TENSOR_FLOAT16, 1, (uint16_t[]){0x3c00});
	assert_null(run_op(&c, "Relu", 1, in));
	assert_non_null(strstr(c.err, "FLOAT16 not supported"));
	in[0] = th(TENSOR_BFLOAT16, 1, (uint16_t[]){0x3f80});
	in[1] = th(TENSOR_BFLOAT16, 1, (uint16_t[]){0x3f80});
	assert_null(run_op(&c, "Add", 2, in));
	assert_non_null(strstr(c.err, "BFLOAT16 not supported"));
}

static void test_reduce(void **state)
{
	struct case_ c;
	case_init(&c);
	int64_t axes[1] = {1};
	attr_ints(&c, "axes", 1, axes);
	attr_i(&c, "keepdims", 0);
	struct tensor *in[2] = {tf(2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6})};
	expect_f(run_op(&c, "ReduceMean", 1, in), 1, (int64_t[]){2}, (float[]){2, 5});
	in[0] = tf(2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
	expect_f(run_op(&c, "ReduceMax", 1, in), 1, (int64_t[]){2}, (float[]){3, 6});
	/* ReduceSum (opset 13): axes as input; none = all, keepdims 1 */
	case_init(&c);
	in[0] = tf(2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
	expect_f(run_op(&c, "ReduceSum", 1, in), 2, (int64_t[]){1, 1}, (float[]){21});
	in[0] = tf(2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
	in[1] = ti(1, (int64_t[]){1}, (int64_t[]){0});
	expect_f(run_op(&c, "ReduceSum", 2, in), 2, (int64_t[]){1, 3}, (float[]){5, 7, 9});
}

static struct tensor *tb(int ndim, const int64_t *dims, const uint8_t *v)
{
	struct tensor *t = tensor_new(NULL, TENSOR_BOOL, ndim, dims);
	assert_non_null(t);
	memcpy(t->data, v, t->nelem);
	return t;
}

static void test_slice_pad_tile(void **state)
{
	struct case_ c;
	case_init(&c);
	float v[6] = {1, 2, 3, 4, 5, 6};
	/* Slice axis 1 backwards with step -2 from the end; ends beyond the start clamp */
	struct tensor *in[5] = {tf(2, (int64_t[]){2, 3}, v), ti(1, (int64_t[]){1}, (int64_t[]){-1}),
	                        ti(1, (int64_t[]){1}, (int64_t[]){INT64_MIN}),
	                        ti(1, (int64_t[]){1}, (int64_t[]){1}),
	                        ti(1, (int64_t[]){1}, (int64_t[]){-2})};
	expect_f(run_op(&c, "Slice", 5, in), 2, (int64_t[]){2, 2}, (float[]){3, 1, 6, 4});
	/* Pad reflect and edge on [3] by 2 each side */
	attr_s(&c, "mode", "reflect");
	in[0] = tf(1, (int64_t[]){3}, (float[]){1, 2, 3});
	in[1] = ti(1, (int64_t[]){2}, (int64_t[]){2, 2});
	expect_f(run_op(&c, "Pad", 2, in), 1, (int64_t[]){7}, (float[]){3, 2, 1, 2, 3, 2, 1});
	case_init(&c);
	attr_s(&c, "mode", "edge");
	in[0] = tf(1, (int64_t[]){3}, (float[]){1, 2, 3});
	in[1] = ti(1, (int64_t[]){2}, (int64_t[]){1, 2});
	expect_f(run_op(&c, "Pad", 2, in), 1, (int64_t[]){6}, (float[]){1, 1, 2, 3, 3, 3});
	/* constant pad with a value; negative pad crops */
	case_init(&c);
	in[0] = tf(1, (int64_t[]){3}, (float[]){1, 2, 3});
	in[1] = ti(1, (int64_t[]){2}, (int64_t[]){1, -1});
	in[2] = tf(0, NULL, (float[]){9});
	expect_f(run_op(&c, "Pad", 3, in), 1, (int64_t[]){3}, (float[]){9, 1, 2});
	/* Tile and Expand */
	in[0] = tf(2, (int64_t[]){1, 2}, (float[]){1, 2});
	in[1] = ti(1, (int64_t[]){2}, (int64_t[]){2, 2});
	expect_f(run_op(&c, "Tile", 2, in), 2, (int64_t[]){2, 4},
	         (float[]){1, 2, 1, 2, 1, 2, 1, 2});
	in[0] = tf(2, (int64_t[]){2, 1}, (float[]){1, 2});
	in[1] = ti(1, (int64_t[]){3}, (int64_t[]){2, 1, 3});
	expect_f(run_op(&c, "Expand", 2, in), 3, (int64_t[]){2, 2, 3},
	         (float[]){1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2});
}

static void test_logic_where_topk(void **state)
{
	struct case_ c;
	case_init(&c);
	struct tensor *in[3] = {tf(1, (int64_t[]){3}, (float[]){1, 5, 3}),
	                        tf(0, NULL, (float[]){3})};
	struct tensor *r = run_op(&c, "Less", 2, in);
	assert_non_null(r);
	assert_int_equal(r->dtype, TENSOR_BOOL);
	assert_memory_equal(r->data, ((uint8_t[]){1, 0, 0}), 3);
	tensor_free(r);
	/* Where broadcasts all three operands */
	in[0] = tb(2, (int64_t[]){2, 1}, (uint8_t[]){1, 0});
	in[1] = tf(1, (int64_t[]){2}, (float[]){1, 2});
	in[2] = tf(0, NULL, (float[]){-1});
	expect_f(run_op(&c, "Where", 3, in), 2, (int64_t[]){2, 2}, (float[]){1, 2, -1, -1});
	/* TopK: largest two, ties keep the lower index; values and indices */
	Onnx__NodeProto np = ONNX__NODE_PROTO__INIT;
	struct ops_node n = {0};
	int slots[8] = {0};
	n.name = "t";
	n.op_type = "TopK";
	n.kernel = ops_find("TopK");
	n.opset = 13;
	n.n_in = 2;
	n.n_out = 2;
	n.in = slots;
	n.out = slots + 4;
	enum tensor_dtype types[2] = {TENSOR_FLOAT, TENSOR_INT64}, ot[2];
	assert_int_equal(n.kernel->prepare(&n, &np, types, ot, c.err, sizeof(c.err)), 0);
	struct tensor *args[2] = {tf(1, (int64_t[]){4}, (float[]){3, 7, 3, 7}),
	                          ti(1, (int64_t[]){1}, (int64_t[]){3})};
	struct tensor *out[2] = {0};
	assert_int_equal(
	    n.kernel->run(&n, (const struct tensor *const *)args, out, c.err, sizeof(c.err)), 0);
	expect_f(out[0], 1, (int64_t[]){3}, (float[]){7, 7, 3});
	expect_i(out[1], 1, (int64_t[]){3}, (int64_t[]){1, 3, 0});
	tensor_free(args[0]);
	tensor_free(args[1]);
}

static void test_conv_transpose(void **state)
{
	struct case_ c;
	case_init(&c);
	/* 1-D, stride 2, kernel [1,1]: each input spreads over two outputs, no overlap */
	int64_t s[1] = {2};
	attr_ints(&c, "strides", 1, s);
	struct tensor *in[3] = {tf(3, (int64_t[]){1, 1, 3}, (float[]){1, 2, 3}),
	                        tf(3, (int64_t[]){1, 1, 2}, (float[]){1, 10}),
	                        tf(1, (int64_t[]){1}, (float[]){0.5f})};
	expect_f(run_op(&c, "ConvTranspose", 3, in), 3, (int64_t[]){1, 1, 6},
	         (float[]){1.5f, 10.5f, 2.5f, 20.5f, 3.5f, 30.5f});
	/* stride 1, kernel 3: overlapping sums; pads 1 crop one each side */
	case_init(&c);
	int64_t p[2] = {1, 1};
	attr_ints(&c, "pads", 2, p);
	in[0] = tf(3, (int64_t[]){1, 1, 2}, (float[]){1, 2});
	in[1] = tf(3, (int64_t[]){1, 1, 3}, (float[]){1, 1, 1});
	expect_f(run_op(&c, "ConvTranspose", 2, in), 3, (int64_t[]){1, 1, 2}, (float[]){3, 3});
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_add_broadcast),
	    cmocka_unit_test(test_int64_arith),
	    cmocka_unit_test(test_narrow_int_arith),
	    cmocka_unit_test(test_unary),
	    cmocka_unit_test(test_gemm),
	    cmocka_unit_test(test_gemm_kernels_exact),
	    cmocka_unit_test(test_pool_fast_exact),
	    cmocka_unit_test(test_matmul),
	    cmocka_unit_test(test_conv),
	    cmocka_unit_test(test_pool),
	    cmocka_unit_test(test_batchnorm),
	    cmocka_unit_test(test_softmax),
	    cmocka_unit_test(test_argmax),
	    cmocka_unit_test(test_shape_ops),
	    cmocka_unit_test(test_cast),
	    cmocka_unit_test(test_float16),
	    cmocka_unit_test(test_reduce),
	    cmocka_unit_test(test_slice_pad_tile),
	    cmocka_unit_test(test_logic_where_topk),
	    cmocka_unit_test(test_conv_transpose),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
