/*
 * ops_reduce.c - reductions: ArgMax and ArgMin (axis, keepdims,
 * select_last_index) and the Reduce* family (Sum, Mean, Max, Min, Prod,
 * SumSquare, L1, L2, LogSum, LogSumExp) with axes from the attribute or, as
 * ReduceSum since opset 13, from the second input; keepdims and
 * noop_with_empty_axes. Float reductions accumulate in double.
 */
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const enum tensor_dtype float_int64[] = {TENSOR_FLOAT, TENSOR_INT64, 0};
static const enum tensor_dtype float_only[] = {TENSOR_FLOAT, 0};
static const enum tensor_dtype int_types[] = {TENSOR_INT64, TENSOR_INT32, 0};

/* ---- ArgMax, ArgMin ---- */

static int prepare_arg(struct ops_node *n, const Onnx__NodeProto *np,
                       const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                       size_t errlen)
{
	int64_t kd, sl;
	if (ops_require_dtype(in_types[0], "data", float_int64, err, errlen) ||
	    ops_attr_int(np, "axis", 0, &n->p.axis, err, errlen) ||
	    ops_attr_int(np, "keepdims", 1, &kd, err, errlen) ||
	    ops_attr_int(np, "select_last_index", 0, &sl, err, errlen))
		return -1;
	n->p.keepdims = kd != 0;
	n->p.select_last_index = sl != 0;
	n->p.legacy = strcmp(n->op_type, "ArgMin") == 0; /* 1 = min */
	out_types[0] = TENSOR_INT64;
	return 0;
}

static double elem(const struct tensor *x, size_t i)
{
	if (x->dtype == TENSOR_INT64)
		return (double)((const int64_t *)x->data)[i];
	return ((const float *)x->data)[i];
}

static int run_arg(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                   char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t axis, od[TENSOR_MAX_DIMS];
	if (x->ndim == 0) {
		snprintf(err, errlen, "data must have rank >= 1");
		return -1;
	}
	if (ops_axis(n->p.axis, x->ndim, &axis, err, errlen))
		return -1;
	if (x->dims[axis] == 0) {
		snprintf(err, errlen, "axis %lld is empty", (long long)axis);
		return -1;
	}
	int nd = 0;
	for (int d = 0; d < x->ndim; d++)
		if (d != axis)
			od[nd++] = x->dims[d];
		else if (n->p.keepdims)
			od[nd++] = 1;
	if (ops_new(out, TENSOR_INT64, nd, od, err, errlen))
		return -1;
	size_t outer = ops_numel(x->dims, (int)axis), len = (size_t)x->dims[axis];
	size_t inner = ops_numel(x->dims + axis + 1, x->ndim - (int)axis - 1);
	int64_t *y = (*out)->data;
	int is_min = n->p.legacy, last = n->p.select_last_index;
	for (size_t o = 0; o < outer; o++)
		for (size_t i = 0; i < inner; i++) {
			size_t base = o * len * inner + i, best = 0;
			double bv = elem(x, base);
			for (size_t j = 1; j < len; j++) {
				double v = elem(x, base + j * inner);
				int better =
				    is_min ? (last ? v <= bv : v < bv) : (last ? v >= bv : v > bv);
				if (better) {
					bv = v;
					best = j;
				}
			}
			y[o * inner + i] = (int64_t)best;
		}
	return 0;
}

/* ---- Reduce* ---- */

enum reduce_kind { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_SUMSQ, R_L1, R_L2, R_LOGSUM, R_LSE };

static int prepare_reduce(struct ops_node *n, const Onnx__NodeProto *np,
                          const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                          char *err, size_t errlen)
{
	int64_t kd, noop;
	if (ops_require_dtype(in_types[0], "data", float_only, err, errlen) ||
	    ops_attr_ints(np, "axes", n->p.axes, TENSOR_MAX_DIMS, &n->p.naxes, err, errlen) ||
	    ops_attr_int(np, "keepdims", 1, &kd, err, errlen) ||
	    ops_attr_int(np, "noop_with_empty_axes", 0, &noop, err, errlen))
		return -1;
	if (n->n_in > 1 && in_types[1] != TENSOR_UNDEFINED &&
	    ops_require_dtype(in_types[1], "axes", int_types, err, errlen))
		return -1;
	n->p.keepdims = kd != 0;
	n->p.noop_with_empty_axes = noop != 0;
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

static double reduce_init(enum reduce_kind k)
{
	switch (k) {
	case R_MAX:
		return -INFINITY;
	case R_MIN:
		return INFINITY;
	case R_PROD:
		return 1.0;
	default:
		return 0.0;
	}
}

static double reduce_step(enum reduce_kind k, double acc, double v)
{
	switch (k) {
	case R_MAX:
		return v > acc || isnan(v) ? v : acc;
	case R_MIN:
		return v < acc || isnan(v) ? v : acc;
	case R_PROD:
		return acc * v;
	case R_SUMSQ:
	case R_L2:
		return acc + v * v;
	case R_L1:
		return acc + fabs(v);
	case R_LSE:
		return acc + exp(v);
	default:
		return acc + v;
	}
}

static double reduce_final(enum reduce_kind k, double acc, size_t count)
{
	switch (k) {
	case R_MEAN:
		return count ? acc / (double)count : NAN;
	case R_L2:
		return sqrt(acc);
	case R_LOGSUM:
	case R_LSE:
		return log(acc);
	default:
		return acc;
	}
}

static int run_reduce(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                      char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	enum reduce_kind kind = (enum reduce_kind)(intptr_t)n->kernel->impl;
	int red[TENSOR_MAX_DIMS] = {0}, naxes = n->p.naxes;
	int64_t axes[TENSOR_MAX_DIMS];
	if (naxes >= 0) {
		memcpy(axes, n->p.axes, sizeof(axes[0]) * (size_t)naxes);
	} else if (n->n_in > 1 && in[1]) {
		if (in[1]->nelem > TENSOR_MAX_DIMS) {
			snprintf(err, errlen, "more than %d axes", TENSOR_MAX_DIMS);
			return -1;
		}
		naxes = (int)in[1]->nelem;
		for (int i = 0; i < naxes; i++)
			axes[i] = ops_get_int(in[1], (size_t)i);
	}
	if (naxes <= 0 && n->p.noop_with_empty_axes) {
		if (ops_new(out, x->dtype, x->ndim, x->dims, err, errlen))
			return -1;
		memcpy((*out)->data, x->data, x->nelem * sizeof(float));
		return 0;
	}
	for (int i = 0; i < naxes; i++) {
		int64_t a;
		if (ops_axis(axes[i], x->ndim, &a, err, errlen))
			return -1;
		red[a] = 1;
	}
	if (naxes <= 0)
		for (int d = 0; d < x->ndim; d++)
			red[d] = 1;
	int64_t od[TENSOR_MAX_DIMS], kdims[TENSOR_MAX_DIMS];
	int nd = 0;
	size_t count = 1;
	for (int d = 0; d < x->ndim; d++) {
		kdims[d] = red[d] ? 1 : x->dims[d];
		if (red[d])
			count *= (size_t)x->dims[d];
		if (!red[d] || n->p.keepdims)
			od[nd++] = kdims[d];
	}
	if (ops_new(out, TENSOR_FLOAT, nd, od, err, errlen))
		return -1;
	size_t on = (*out)->nelem;
	double *acc = malloc((on ? on : 1) * sizeof(*acc));
	if (!acc) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < on; i++)
		acc[i] = reduce_init(kind);
	/* Output stride of each input dimension, 0 for a reduced one. */
	size_t ost[TENSOR_MAX_DIMS], s = 1;
	for (int d = x->ndim - 1; d >= 0; d--) {
		ost[d] = red[d] ? 0 : s;
		s *= (size_t)kdims[d];
	}
	int64_t idx[TENSOR_MAX_DIMS] = {0};
	size_t o = 0;
	const float *xd = x->data;
	for (size_t i = 0; i < x->nelem; i++) {
		acc[o] = reduce_step(kind, acc[o], xd[i]);
		for (int d = x->ndim - 1; d >= 0; d--) {
			idx[d]++;
			o += ost[d];
			if (idx[d] < x->dims[d])
				break;
			o -= ost[d] * (size_t)x->dims[d];
			idx[d] = 0;
		}
	}
	float *y = (*out)->data;
	for (size_t i = 0; i < on; i++)
		y[i] = (float)reduce_final(kind, acc[i], count);
	free(acc);
	return 0;
}

#define REDUCE(name, kind)                                                                         \
	{                                                                                          \
		name, 1, 2, 1, 1, prepare_reduce, run_reduce, (const void *)(intptr_t)kind         \
	}

const struct ops_kernel ops_reduce_kernels[] = {
    {"ArgMax", 1, 1, 1, 1, prepare_arg, run_arg, NULL},
    {"ArgMin", 1, 1, 1, 1, prepare_arg, run_arg, NULL},
    REDUCE("ReduceSum", R_SUM),
    REDUCE("ReduceMean", R_MEAN),
    REDUCE("ReduceMax", R_MAX),
    REDUCE("ReduceMin", R_MIN),
    REDUCE("ReduceProd", R_PROD),
    REDUCE("ReduceSumSquare", R_SUMSQ),
    REDUCE("ReduceL1", R_L1),
    REDUCE("ReduceL2", R_L2),
    REDUCE("ReduceLogSum", R_LOGSUM),
    REDUCE("ReduceLogSumExp", R_LSE),
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};
