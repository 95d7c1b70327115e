/*
 * ops_logic.c - comparisons and boolean logic: Equal, Less, Greater,
 * LessOrEqual, GreaterOrEqual (float32 or int64, Equal also bool, result
 * bool), Not, And, Or, Xor (bool), Where (bool condition picks between two
 * tensors of any stored dtype), IsNaN, IsInf. All broadcast like numpy.
 */
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum cmp_kind { CMP_EQ, CMP_LT, CMP_GT, CMP_LE, CMP_GE, LOG_AND, LOG_OR, LOG_XOR };

struct cmp_ctx {
	enum cmp_kind kind;
	enum tensor_dtype dtype;
};

#define CMP_LOOP(T)                                                                                \
	do {                                                                                       \
		const T *a = (const T *)(const void *)in[0], *b = (const T *)(const void *)in[1];  \
		for (size_t i = 0; i < len; i++) {                                                 \
			T x = a[i * st[0]], y = b[i * st[1]];                                      \
			int r = 0;                                                                 \
			switch (c->kind) {                                                         \
			case CMP_EQ:                                                               \
				r = x == y;                                                        \
				break;                                                             \
			case CMP_LT:                                                               \
				r = x < y;                                                         \
				break;                                                             \
			case CMP_GT:                                                               \
				r = x > y;                                                         \
				break;                                                             \
			case CMP_LE:                                                               \
				r = x <= y;                                                        \
				break;                                                             \
			case CMP_GE:                                                               \
				r = x >= y;                                                        \
				break;                                                             \
			case LOG_AND:                                                              \
				r = x && y;                                                        \
				break;                                                             \
			case LOG_OR:                                                               \
				r = x || y;                                                        \
				break;                                                             \
			case LOG_XOR:                                                              \
				r = !x != !y;                                                      \
				break;                                                             \
			}                                                                          \
			y_[i] = (uint8_t)r;                                                        \
		}                                                                                  \
	} while (0)

static void cmp_row(const void *ctx, char *o, const char *const *in, const size_t *st, size_t len)
{
	const struct cmp_ctx *c = ctx;
	uint8_t *y_ = (uint8_t *)o;
	if (c->dtype == TENSOR_FLOAT)
		CMP_LOOP(float);
	else if (c->dtype == TENSOR_INT64)
		CMP_LOOP(int64_t);
	else
		CMP_LOOP(uint8_t);
}

static const enum tensor_dtype cmp_types[] = {TENSOR_FLOAT, TENSOR_INT64, 0};
static const enum tensor_dtype eq_types[] = {TENSOR_FLOAT, TENSOR_INT64, TENSOR_BOOL, 0};
static const enum tensor_dtype bool_only[] = {TENSOR_BOOL, 0};

static int prepare_cmp(struct ops_node *n, const Onnx__NodeProto *np,
                       const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                       size_t errlen)
{
	enum cmp_kind k = (enum cmp_kind)(intptr_t)n->kernel->impl;
	const enum tensor_dtype *ok =
	    k >= LOG_AND ? bool_only : (k == CMP_EQ ? eq_types : cmp_types);
	if (ops_require_dtype(in_types[0], "A", ok, err, errlen))
		return -1;
	if (in_types[1] != in_types[0]) {
		snprintf(err, errlen, "B: dtype %s differs from A (%s)",
		         ops_dtype_name((int)in_types[1]), ops_dtype_name((int)in_types[0]));
		return -1;
	}
	out_types[0] = TENSOR_BOOL;
	return 0;
}

static int run_cmp(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                   char *err, size_t errlen)
{
	struct ops_bcast b;
	struct cmp_ctx c = {(enum cmp_kind)(intptr_t)n->kernel->impl, in[0]->dtype};
	if (ops_bcast_init(&b, in, 2, NULL, 0, err, errlen) ||
	    ops_new(out, TENSOR_BOOL, b.ndim, b.dims, err, errlen))
		return -1;
	ops_bcast_run(&b, in, *out, cmp_row, &c);
	return 0;
}

/* Not, IsNaN, IsInf */
static int prepare_not(struct ops_node *n, const Onnx__NodeProto *np,
                       const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                       size_t errlen)
{
	static const enum tensor_dtype float_only[] = {TENSOR_FLOAT, 0};
	int is_not = strcmp(n->op_type, "Not") == 0;
	int64_t neg, pos;
	if (ops_require_dtype(in_types[0], "X", is_not ? bool_only : float_only, err, errlen) ||
	    ops_attr_int(np, "detect_negative", 1, &neg, err, errlen) ||
	    ops_attr_int(np, "detect_positive", 1, &pos, err, errlen))
		return -1;
	n->p.keepdims = neg != 0;          /* IsInf: detect_negative */
	n->p.select_last_index = pos != 0; /* IsInf: detect_positive */
	out_types[0] = TENSOR_BOOL;
	return 0;
}

static int run_not(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                   char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	if (ops_new(out, TENSOR_BOOL, x->ndim, x->dims, err, errlen))
		return -1;
	uint8_t *y = (*out)->data;
	if (n->op_type[0] == 'N') {
		for (size_t i = 0; i < x->nelem; i++)
			y[i] = !((const uint8_t *)x->data)[i];
		return 0;
	}
	int nan = strcmp(n->op_type, "IsNaN") == 0;
	for (size_t i = 0; i < x->nelem; i++) {
		float v = ((const float *)x->data)[i];
		y[i] = nan ? isnan(v) != 0
		           : (isinf(v) &&
		              ((v > 0 && n->p.select_last_index) || (v < 0 && n->p.keepdims)));
	}
	return 0;
}

/* Where */
static int prepare_where(struct ops_node *n, const Onnx__NodeProto *np,
                         const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                         size_t errlen)
{
	if (ops_require_dtype(in_types[0], "condition", bool_only, err, errlen))
		return -1;
	if (tensor_dtype_size(in_types[1]) == 0 || in_types[2] != in_types[1]) {
		snprintf(err, errlen, "X and Y: dtypes %s and %s not supported",
		         ops_dtype_name((int)in_types[1]), ops_dtype_name((int)in_types[2]));
		return -1;
	}
	out_types[0] = in_types[1];
	return 0;
}

static void where_row(const void *ctx, char *o, const char *const *in, const size_t *st, size_t len)
{
	size_t esz = *(const size_t *)ctx;
	for (size_t i = 0; i < len; i++) {
		int c = ((const uint8_t *)in[0])[i * st[0]] != 0;
		memcpy(o + i * esz, c ? in[1] + i * st[1] * esz : in[2] + i * st[2] * esz, esz);
	}
}

static int run_where(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                     char *err, size_t errlen)
{
	struct ops_bcast b;
	size_t esz = tensor_dtype_size(in[1]->dtype);
	if (ops_bcast_init(&b, in, 3, NULL, 0, err, errlen) ||
	    ops_new(out, in[1]->dtype, b.ndim, b.dims, err, errlen))
		return -1;
	ops_bcast_run(&b, in, *out, where_row, &esz);
	return 0;
}

#define CMP(name, kind)                                                                            \
	{                                                                                          \
		name, 2, 2, 1, 1, prepare_cmp, run_cmp, (const void *)(intptr_t)kind               \
	}

const struct ops_kernel ops_logic_kernels[] = {
    CMP("Equal", CMP_EQ),
    CMP("Less", CMP_LT),
    CMP("Greater", CMP_GT),
    CMP("LessOrEqual", CMP_LE),
    CMP("GreaterOrEqual", CMP_GE),
    CMP("And", LOG_AND),
    CMP("Or", LOG_OR),
    CMP("Xor", LOG_XOR),
    {"Not", 1, 1, 1, 1, prepare_not, run_not, NULL},
    {"IsNaN", 1, 1, 1, 1, prepare_not, run_not, NULL},
    {"IsInf", 1, 1, 1, 1, prepare_not, run_not, NULL},
    {"Where", 3, 3, 1, 1, prepare_where, run_where, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};
