/*
 * ops_elementwise.c - element-wise operators: unary activations and math
 * (Relu, Sigmoid, Tanh, Exp, Clip, LeakyRelu, ...) and binary or variadic
 * arithmetic with numpy broadcasting (Add, Sub, Mul, Div, Max, Min, Sum,
 * Mean, PRelu). Float32 throughout; Add/Sub/Mul/Div/Max/Min/Neg/Abs also on
 * int64, which shape arithmetic in exported graphs needs, and Add/Sub/Mul/Div
 * on uint8, int8 and int32 too (wrap-around, division truncating toward zero).
 *
 * A broadcast is run as rows: the innermost output dimension is one call of a
 * row function with per-operand strides 0 or 1, the outer dimensions walk an
 * odometer. That keeps the per-element work a tight loop without a switch.
 */
#include "ops.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- unary ---- */

struct unary_impl {
	void (*f)(float *o, const float *x, size_t n, const struct ops_params *p);
	void (*i64)(int64_t *o, const int64_t *x, size_t n);
	float alpha, beta, gamma; /* attribute defaults */
};

#define UNARY_F(fname, expr)                                                                       \
	static void fname(float *o, const float *x, size_t n, const struct ops_params *p)          \
	{                                                                                          \
		(void)p;                                                                           \
		for (size_t i = 0; i < n; i++) {                                                   \
			float v = x[i];                                                            \
			o[i] = (expr);                                                             \
		}                                                                                  \
	}

/* Relu, v > 0 ? v : 0 (NaN and -0 give +0): four at a time as v AND (v > 0). */
static void u_relu(float *o, const float *x, size_t n, const struct ops_params *p)
{
	typedef float v4f __attribute__((vector_size(16)));
	typedef int32_t v4i __attribute__((vector_size(16)));
	(void)p;
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		v4f v, zero = {0};
		v4i bits;
		memcpy(&v, x + i, sizeof(v));
		v4i keep = v > zero;
		memcpy(&bits, &v, sizeof(bits));
		bits &= keep;
		memcpy(o + i, &bits, sizeof(bits));
	}
	for (; i < n; i++)
		o[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

UNARY_F(u_sigmoid, v >= 0.0f ? 1.0f / (1.0f + expf(-v)) : expf(v) / (1.0f + expf(v)))
UNARY_F(u_tanh, tanhf(v))
UNARY_F(u_exp, expf(v))
UNARY_F(u_log, logf(v))
UNARY_F(u_sqrt, sqrtf(v))
UNARY_F(u_neg, -v)
UNARY_F(u_abs, fabsf(v))
UNARY_F(u_reciprocal, 1.0f / v)
UNARY_F(u_floor, floorf(v))
UNARY_F(u_ceil, ceilf(v))
UNARY_F(u_round, nearbyintf(v))
UNARY_F(u_sign, v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f))
UNARY_F(u_sin, sinf(v))
UNARY_F(u_cos, cosf(v))
UNARY_F(u_tan, tanf(v))
UNARY_F(u_asin, asinf(v))
UNARY_F(u_acos, acosf(v))
UNARY_F(u_atan, atanf(v))
UNARY_F(u_sinh, sinhf(v))
UNARY_F(u_cosh, coshf(v))
UNARY_F(u_asinh, asinhf(v))
UNARY_F(u_acosh, acoshf(v))
UNARY_F(u_atanh, atanhf(v))
UNARY_F(u_erf, erff(v))
UNARY_F(u_softplus, v > 0.0f ? v + log1pf(expf(-v)) : log1pf(expf(v)))
UNARY_F(u_softsign, v / (1.0f + fabsf(v)))
UNARY_F(u_leaky_relu, v >= 0.0f ? v : p->alpha * v)
UNARY_F(u_elu, v >= 0.0f ? v : p->alpha * (expf(v) - 1.0f))
UNARY_F(u_celu, fmaxf(0.0f, v) + fminf(0.0f, p->alpha *(expf(v / p->alpha) - 1.0f)))
UNARY_F(u_selu, p->gamma *(v > 0.0f ? v : p->alpha * expf(v) - p->alpha))
UNARY_F(u_hard_sigmoid, fmaxf(0.0f, fminf(1.0f, p->alpha *v + p->beta)))
UNARY_F(u_hard_swish, v *fmaxf(0.0f, fminf(1.0f, v / 6.0f + 0.5f)))
UNARY_F(u_thresholded_relu, v > p->alpha ? v : 0.0f)
UNARY_F(u_clip_attr, fminf(fmaxf(v, p->min), p->max))

static void i_neg(int64_t *o, const int64_t *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		o[i] = (int64_t)(0 - (uint64_t)x[i]);
}

static void i_abs(int64_t *o, const int64_t *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		o[i] = x[i] < 0 ? (int64_t)(0 - (uint64_t)x[i]) : x[i];
}

static const enum tensor_dtype float_only[] = {TENSOR_FLOAT, 0};
static const enum tensor_dtype float_int64[] = {TENSOR_FLOAT, TENSOR_INT64, 0};

static int prepare_unary(struct ops_node *n, const Onnx__NodeProto *np,
                         const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                         size_t errlen)
{
	const struct unary_impl *u = n->kernel->impl;
	if (ops_require_dtype(in_types[0], "input", u->i64 ? float_int64 : float_only, err, errlen))
		return -1;
	if (ops_attr_float(np, "alpha", u->alpha, &n->p.alpha, err, errlen) ||
	    ops_attr_float(np, "beta", u->beta, &n->p.beta, err, errlen) ||
	    ops_attr_float(np, "gamma", u->gamma, &n->p.gamma, err, errlen))
		return -1;
	if (strcmp(n->op_type, "Celu") == 0 && n->p.alpha == 0.0f) {
		snprintf(err, errlen, "alpha=0 not supported");
		return -1;
	}
	out_types[0] = in_types[0];
	return 0;
}

static int run_unary(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                     char *err, size_t errlen)
{
	const struct unary_impl *u = n->kernel->impl;
	const struct tensor *x = in[0];
	if (ops_new_dense(out, x->dtype, x->ndim, x->dims, err, errlen))
		return -1;
	if (x->dtype == TENSOR_INT64)
		u->i64((*out)->data, x->data, x->nelem);
	else
		u->f((*out)->data, x->data, x->nelem, &n->p);
	return 0;
}

/* Clip: min and max are attributes before opset 11, optional scalar inputs after. */
static int prepare_clip(struct ops_node *n, const Onnx__NodeProto *np,
                        const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                        size_t errlen)
{
	if (ops_require_dtype(in_types[0], "input", float_only, err, errlen))
		return -1;
	for (size_t i = 1; i < n->n_in; i++)
		if (in_types[i] != TENSOR_UNDEFINED &&
		    ops_require_dtype(in_types[i], i == 1 ? "min" : "max", float_only, err, errlen))
			return -1;
	if (ops_attr_float(np, "min", -FLT_MAX, &n->p.min, err, errlen) ||
	    ops_attr_float(np, "max", FLT_MAX, &n->p.max, err, errlen))
		return -1;
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

static int run_clip(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                    char *err, size_t errlen)
{
	struct ops_params p = n->p;
	for (size_t i = 1; i < n->n_in && i < 3; i++) {
		if (!in[i])
			continue;
		if (in[i]->nelem != 1) {
			snprintf(err, errlen, "%s must be a scalar", i == 1 ? "min" : "max");
			return -1;
		}
		*(i == 1 ? &p.min : &p.max) = *(const float *)in[i]->data;
	}
	if (ops_new(out, TENSOR_FLOAT, in[0]->ndim, in[0]->dims, err, errlen))
		return -1;
	u_clip_attr((*out)->data, in[0]->data, in[0]->nelem, &p);
	return 0;
}

/* ---- binary and variadic ---- */

/* Row function of a narrow integer type, on untyped element pointers. */
typedef void (*binary_row_fn)(void *o, const void *a, size_t sa, const void *b, size_t sb,
                              size_t n);

struct binary_impl {
	void (*f)(float *o, const float *a, size_t sa, const float *b, size_t sb, size_t n);
	void (*i64)(int64_t *o, const int64_t *a, size_t sa, const int64_t *b, size_t sb, size_t n);
	binary_row_fn u8, i8, i32; /* NULL: the operator refuses that dtype */
	int int_div;               /* refuse a zero divisor */
	int mean;                  /* divide the fold by the number of inputs */
	int variadic;              /* Sum, Max, Min, Mean: one or more inputs */
};

#define BINARY_F(fname, expr)                                                                      \
	static void fname(float *o, const float *a, size_t sa, const float *b, size_t sb,          \
	                  size_t n)                                                                \
	{                                                                                          \
		for (size_t i = 0; i < n; i++) {                                                   \
			float x = a[i * sa], y = b[i * sb];                                        \
			o[i] = (expr);                                                             \
		}                                                                                  \
	}
#define BINARY_I(fname, expr)                                                                      \
	static void fname(int64_t *o, const int64_t *a, size_t sa, const int64_t *b, size_t sb,    \
	                  size_t n)                                                                \
	{                                                                                          \
		for (size_t i = 0; i < n; i++) {                                                   \
			int64_t x = a[i * sa], y = b[i * sb];                                      \
			o[i] = (expr);                                                             \
		}                                                                                  \
	}

BINARY_F(b_add, x + y)
BINARY_F(b_sub, x - y)
BINARY_F(b_mul, x *y)
BINARY_F(b_div, x / y)
BINARY_F(b_max, x >= y || isnan(x) ? x : y)
BINARY_F(b_min, x <= y || isnan(x) ? x : y)
BINARY_F(b_prelu, x < 0.0f ? y * x : x)
/* Wrap around instead of overflowing (signed overflow is undefined in C). */
BINARY_I(bi_add, (int64_t)((uint64_t)x + (uint64_t)y))
BINARY_I(bi_sub, (int64_t)((uint64_t)x - (uint64_t)y))
BINARY_I(bi_mul, (int64_t)((uint64_t)x *(uint64_t)y))
BINARY_I(bi_div, (x == INT64_MIN && y == -1) ? INT64_MIN : x / y)
BINARY_I(bi_max, x > y ? x : y)
BINARY_I(bi_min, x < y ? x : y)

/*
 * Narrow integers: the sum, difference and product are computed in the
 * unsigned type of the same width and converted back, which wraps around as
 * ONNX (numpy) does; the quotient truncates toward zero, and the one signed
 * overflow, MIN / -1, wraps to MIN. Zero divisors are refused before a row runs.
 */
#define BINARY_N(fname, T, expr)                                                                   \
	static void fname(void *vo, const void *va, size_t sa, const void *vb, size_t sb,          \
	                  size_t n)                                                                \
	{                                                                                          \
		T *o = vo;                                                                         \
		const T *a = va, *b = vb;                                                          \
		for (size_t i = 0; i < n; i++) {                                                   \
			T x = a[i * sa], y = b[i * sb];                                            \
			o[i] = (T)(expr);                                                          \
		}                                                                                  \
	}

BINARY_N(bu8_add, uint8_t, (unsigned)x + (unsigned)y)
BINARY_N(bu8_sub, uint8_t, (unsigned)x - (unsigned)y)
BINARY_N(bu8_mul, uint8_t, (unsigned)x *(unsigned)y)
BINARY_N(bu8_div, uint8_t, x / y)
BINARY_N(bi8_add, int8_t, (uint8_t)((unsigned)x + (unsigned)y))
BINARY_N(bi8_sub, int8_t, (uint8_t)((unsigned)x - (unsigned)y))
BINARY_N(bi8_mul, int8_t, (uint8_t)((unsigned)x *(unsigned)y))
BINARY_N(bi8_div, int8_t, (uint8_t)(x / y)) /* int promotion: -128 / -1 = 128 -> -128 */
BINARY_N(bi32_add, int32_t, (uint32_t)x + (uint32_t)y)
BINARY_N(bi32_sub, int32_t, (uint32_t)x - (uint32_t)y)
BINARY_N(bi32_mul, int32_t, (uint32_t)x *(uint32_t)y)
BINARY_N(bi32_div, int32_t, (x == INT32_MIN && y == -1) ? INT32_MIN : x / y)

static binary_row_fn binary_narrow(const struct binary_impl *b, enum tensor_dtype t)
{
	switch (t) {
	case TENSOR_UINT8:
		return b->u8;
	case TENSOR_INT8:
		return b->i8;
	case TENSOR_INT32:
		return b->i32;
	default:
		return NULL;
	}
}

/* Whether an integer tensor holds a zero element (all bytes of it zero). */
static int has_zero(const struct tensor *t)
{
	size_t es = tensor_dtype_size(t->dtype);
	const unsigned char *d = t->data;
	for (size_t i = 0; i < t->nelem; i++) {
		size_t k = 0;
		while (k < es && d[i * es + k] == 0)
			k++;
		if (k == es)
			return 1;
	}
	return 0;
}

/* One broadcast step: out = a op b. */
static int binary_apply(const struct binary_impl *b, const struct tensor *x, const struct tensor *y,
                        struct tensor **out, char *err, size_t errlen)
{
	int64_t od[TENSOR_MAX_DIMS];
	int n;
	if (ops_broadcast_shape(x, y, od, &n, err, errlen))
		return -1;
	if (b->int_div && x->dtype != TENSOR_FLOAT && has_zero(y)) {
		snprintf(err, errlen, "integer division by zero");
		return -1;
	}
	binary_row_fn narrow = binary_narrow(b, x->dtype);
	if (ops_new(out, x->dtype, n, od, err, errlen))
		return -1;
	/* Element strides of each operand in output coordinates, 0 where broadcast. */
	size_t sx[TENSOR_MAX_DIMS], sy[TENSOR_MAX_DIMS];
	size_t ax = 1, ay = 1;
	for (int i = n - 1; i >= 0; i--) {
		int ix = i - (n - x->ndim), iy = i - (n - y->ndim);
		int64_t dx = ix >= 0 ? x->dims[ix] : 1, dy = iy >= 0 ? y->dims[iy] : 1;
		sx[i] = dx == 1 ? 0 : ax;
		sy[i] = dy == 1 ? 0 : ay;
		ax *= (size_t)dx;
		ay *= (size_t)dy;
	}
	size_t total = (*out)->nelem;
	if (total == 0)
		return 0;
	size_t inner = n ? (size_t)od[n - 1] : 1;
	size_t isx = n ? sx[n - 1] : 0, isy = n ? sy[n - 1] : 0;
	if (x->nelem == total && y->nelem == total) { /* same shape: one row */
		inner = total;
		isx = isy = 1;
	}
	size_t esz = tensor_dtype_size(x->dtype);
	int64_t idx[TENSOR_MAX_DIMS] = {0};
	size_t ox = 0, oy = 0;
	char *o = (*out)->data;
	for (size_t done = 0; done < total; done += inner) {
		const char *px = (const char *)x->data + ox * esz;
		const char *py = (const char *)y->data + oy * esz;
		if (narrow)
			narrow(o + done * esz, px, isx, py, isy, inner);
		else if (x->dtype == TENSOR_INT64)
			b->i64((int64_t *)(void *)(o + done * esz),
			       (const int64_t *)(const void *)px, isx,
			       (const int64_t *)(const void *)py, isy, inner);
		else
			b->f((float *)(void *)(o + done * esz), (const float *)(const void *)px,
			     isx, (const float *)(const void *)py, isy, inner);
		/* Advance the odometer over the outer dimensions. */
		for (int d = n - 2; d >= 0; d--) {
			idx[d]++;
			ox += sx[d];
			oy += sy[d];
			if (idx[d] < od[d])
				break;
			ox -= sx[d] * (size_t)od[d];
			oy -= sy[d] * (size_t)od[d];
			idx[d] = 0;
		}
	}
	return 0;
}

static int prepare_binary(struct ops_node *n, const Onnx__NodeProto *np,
                          const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                          char *err, size_t errlen)
{
	const struct binary_impl *b = n->kernel->impl;
	if (ops_attr(np, "broadcast") || ops_attr(np, "axis")) {
		snprintf(err, errlen, "attributes 'broadcast'/'axis' (opset < 7) not supported");
		return -1;
	}
	if (!binary_narrow(b, in_types[0]) &&
	    ops_require_dtype(in_types[0], "input 0", b->i64 ? float_int64 : float_only, err,
	                      errlen))
		return -1;
	for (size_t i = 1; i < n->n_in; i++)
		if (in_types[i] != in_types[0]) {
			snprintf(err, errlen, "input %zu: dtype %s differs from input 0 (%s)", i,
			         ops_dtype_name((int)in_types[i]),
			         ops_dtype_name((int)in_types[0]));
			return -1;
		}
	out_types[0] = in_types[0];
	return 0;
}

static int run_binary(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                      char *err, size_t errlen)
{
	const struct binary_impl *b = n->kernel->impl;
	struct tensor *acc = NULL;
	const struct tensor *x = in[0];
	if (n->n_in == 1) {
		if (ops_new(&acc, x->dtype, x->ndim, x->dims, err, errlen))
			return -1;
		memcpy(acc->data, x->data, x->nelem * tensor_dtype_size(x->dtype));
	}
	for (size_t i = 1; i < n->n_in; i++) {
		struct tensor *r;
		if (binary_apply(b, x, in[i], &r, err, errlen)) {
			tensor_free(acc);
			return -1;
		}
		tensor_free(acc);
		acc = r;
		x = acc;
	}
	if (b->mean) {
		float *d = acc->data;
		for (size_t i = 0; i < acc->nelem; i++)
			d[i] /= (float)n->n_in;
	}
	out[0] = acc;
	return 0;
}

static const struct unary_impl U_RELU = {u_relu, NULL, 0, 0, 0};
static const struct unary_impl U_SIGMOID = {u_sigmoid, NULL, 0, 0, 0};
static const struct unary_impl U_TANH = {u_tanh, NULL, 0, 0, 0};
static const struct unary_impl U_EXP = {u_exp, NULL, 0, 0, 0};
static const struct unary_impl U_LOG = {u_log, NULL, 0, 0, 0};
static const struct unary_impl U_SQRT = {u_sqrt, NULL, 0, 0, 0};
static const struct unary_impl U_NEG = {u_neg, i_neg, 0, 0, 0};
static const struct unary_impl U_ABS = {u_abs, i_abs, 0, 0, 0};
static const struct unary_impl U_RECIPROCAL = {u_reciprocal, NULL, 0, 0, 0};
static const struct unary_impl U_FLOOR = {u_floor, NULL, 0, 0, 0};
static const struct unary_impl U_CEIL = {u_ceil, NULL, 0, 0, 0};
static const struct unary_impl U_ROUND = {u_round, NULL, 0, 0, 0};
static const struct unary_impl U_SIGN = {u_sign, NULL, 0, 0, 0};
static const struct unary_impl U_SIN = {u_sin, NULL, 0, 0, 0};
static const struct unary_impl U_COS = {u_cos, NULL, 0, 0, 0};
static const struct unary_impl U_TAN = {u_tan, NULL, 0, 0, 0};
static const struct unary_impl U_ASIN = {u_asin, NULL, 0, 0, 0};
static const struct unary_impl U_ACOS = {u_acos, NULL, 0, 0, 0};
static const struct unary_impl U_ATAN = {u_atan, NULL, 0, 0, 0};
static const struct unary_impl U_SINH = {u_sinh, NULL, 0, 0, 0};
static const struct unary_impl U_COSH = {u_cosh, NULL, 0, 0, 0};
static const struct unary_impl U_ASINH = {u_asinh, NULL, 0, 0, 0};
static const struct unary_impl U_ACOSH = {u_acosh, NULL, 0, 0, 0};
static const struct unary_impl U_ATANH = {u_atanh, NULL, 0, 0, 0};
static const struct unary_impl U_ERF = {u_erf, NULL, 0, 0, 0};
static const struct unary_impl U_SOFTPLUS = {u_softplus, NULL, 0, 0, 0};
static const struct unary_impl U_SOFTSIGN = {u_softsign, NULL, 0, 0, 0};
static const struct unary_impl U_LEAKY_RELU = {u_leaky_relu, NULL, 0.01f, 0, 0};
static const struct unary_impl U_ELU = {u_elu, NULL, 1.0f, 0, 0};
static const struct unary_impl U_CELU = {u_celu, NULL, 1.0f, 0, 0};
static const struct unary_impl U_SELU = {u_selu, NULL, 1.67326319217681884765625f, 0,
                                         1.05070102214813232421875f};
static const struct unary_impl U_HARD_SIGMOID = {u_hard_sigmoid, NULL, 0.2f, 0.5f, 0};
static const struct unary_impl U_HARD_SWISH = {u_hard_swish, NULL, 0, 0, 0};
static const struct unary_impl U_THRESHOLDED_RELU = {u_thresholded_relu, NULL, 1.0f, 0, 0};

static const struct binary_impl B_ADD = {b_add, bi_add, bu8_add, bi8_add, bi32_add, 0, 0, 0};
static const struct binary_impl B_SUB = {b_sub, bi_sub, bu8_sub, bi8_sub, bi32_sub, 0, 0, 0};
static const struct binary_impl B_MUL = {b_mul, bi_mul, bu8_mul, bi8_mul, bi32_mul, 0, 0, 0};
static const struct binary_impl B_DIV = {b_div, bi_div, bu8_div, bi8_div, bi32_div, 1, 0, 0};
static const struct binary_impl B_PRELU = {b_prelu, NULL, NULL, NULL, NULL, 0, 0, 0};
static const struct binary_impl B_MAX = {b_max, bi_max, NULL, NULL, NULL, 0, 0, 1};
static const struct binary_impl B_MIN = {b_min, bi_min, NULL, NULL, NULL, 0, 0, 1};
static const struct binary_impl B_SUM = {b_add, bi_add, NULL, NULL, NULL, 0, 0, 1};
static const struct binary_impl B_MEAN = {b_add, NULL, NULL, NULL, NULL, 0, 1, 1};

#define UNARY(name, impl)                                                                          \
	{                                                                                          \
		name, 1, 1, 1, 1, prepare_unary, run_unary, &impl                                  \
	}
#define BINARY(name, impl)                                                                         \
	{                                                                                          \
		name, 2, 2, 1, 1, prepare_binary, run_binary, &impl                                \
	}
#define VARIADIC(name, impl)                                                                       \
	{                                                                                          \
		name, 1, -1, 1, 1, prepare_binary, run_binary, &impl                               \
	}

const struct ops_kernel ops_elementwise_kernels[] = {
    UNARY("Relu", U_RELU),
    UNARY("Sigmoid", U_SIGMOID),
    UNARY("Tanh", U_TANH),
    UNARY("Exp", U_EXP),
    UNARY("Log", U_LOG),
    UNARY("Sqrt", U_SQRT),
    UNARY("Neg", U_NEG),
    UNARY("Abs", U_ABS),
    UNARY("Reciprocal", U_RECIPROCAL),
    UNARY("Floor", U_FLOOR),
    UNARY("Ceil", U_CEIL),
    UNARY("Round", U_ROUND),
    UNARY("Sign", U_SIGN),
    UNARY("Sin", U_SIN),
    UNARY("Cos", U_COS),
    UNARY("Tan", U_TAN),
    UNARY("Asin", U_ASIN),
    UNARY("Acos", U_ACOS),
    UNARY("Atan", U_ATAN),
    UNARY("Sinh", U_SINH),
    UNARY("Cosh", U_COSH),
    UNARY("Asinh", U_ASINH),
    UNARY("Acosh", U_ACOSH),
    UNARY("Atanh", U_ATANH),
    UNARY("Erf", U_ERF),
    UNARY("Softplus", U_SOFTPLUS),
    UNARY("Softsign", U_SOFTSIGN),
    UNARY("LeakyRelu", U_LEAKY_RELU),
    UNARY("Elu", U_ELU),
    UNARY("Celu", U_CELU),
    UNARY("Selu", U_SELU),
    UNARY("HardSigmoid", U_HARD_SIGMOID),
    UNARY("HardSwish", U_HARD_SWISH),
    UNARY("ThresholdedRelu", U_THRESHOLDED_RELU),
    {"Clip", 1, 3, 1, 1, prepare_clip, run_clip, NULL},
    BINARY("Add", B_ADD),
    BINARY("Sub", B_SUB),
    BINARY("Mul", B_MUL),
    BINARY("Div", B_DIV),
    BINARY("PRelu", B_PRELU),
    VARIADIC("Max", B_MAX),
    VARIADIC("Min", B_MIN),
    VARIADIC("Sum", B_SUM),
    VARIADIC("Mean", B_MEAN),
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};
