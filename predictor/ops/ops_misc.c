/*
 * ops_misc.c - the less common operators of small models:
 * LayerNormalization (with its Mean and InvStdDev outputs),
 * InstanceNormalization, Mod (fmod or Python-style), GatherElements, CumSum
 * (exclusive, reverse), Trilu, DepthToSpace (DCR, CRD) and SpaceToDepth.
 */
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const enum tensor_dtype float_only[] = {TENSOR_FLOAT, 0};
static const enum tensor_dtype float_int64[] = {TENSOR_FLOAT, TENSOR_INT64, 0};
static const enum tensor_dtype int_types[] = {TENSOR_INT64, TENSOR_INT32, 0};

/* ---- LayerNormalization ---- */

static int prepare_layernorm(struct ops_node *n, const Onnx__NodeProto *np,
                             const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                             char *err, size_t errlen)
{
	for (size_t i = 0; i < n->n_in; i++)
		if (in_types[i] != TENSOR_UNDEFINED &&
		    ops_require_dtype(in_types[i], "input", float_only, err, errlen))
			return -1;
	if (ops_attr_int(np, "axis", -1, &n->p.axis, err, errlen) ||
	    ops_attr_float(np, "epsilon", 1e-5f, &n->p.epsilon, err, errlen))
		return -1;
	for (size_t i = 0; i < n->n_out; i++)
		out_types[i] = TENSOR_FLOAT;
	return 0;
}

static int run_layernorm(const struct ops_node *n, const struct tensor *const *in,
                         struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0], *sc = in[1], *b = n->n_in > 2 ? in[2] : NULL;
	int64_t axis, sd[TENSOR_MAX_DIMS];
	if (ops_axis(n->p.axis, x->ndim, &axis, err, errlen))
		return -1;
	size_t outer = ops_numel(x->dims, (int)axis);
	size_t inner = ops_numel(x->dims + axis, x->ndim - (int)axis);
	if ((sc->nelem != inner && sc->nelem != 1) || (b && b->nelem != inner && b->nelem != 1)) {
		snprintf(err, errlen, "Scale and B must have %zu elements", inner);
		return -1;
	}
	for (int d = 0; d < x->ndim; d++)
		sd[d] = d < axis ? x->dims[d] : 1;
	if (ops_new(&out[0], TENSOR_FLOAT, x->ndim, x->dims, err, errlen) ||
	    (n->n_out > 1 && ops_new(&out[1], TENSOR_FLOAT, x->ndim, sd, err, errlen)) ||
	    (n->n_out > 2 && ops_new(&out[2], TENSOR_FLOAT, x->ndim, sd, err, errlen)))
		return -1;
	const float *xd = x->data, *s = sc->data, *bd = b ? b->data : NULL;
	float *y = out[0]->data;
	for (size_t o = 0; o < outer; o++) {
		const float *xr = xd + o * inner;
		double sum = 0, sq = 0;
		for (size_t j = 0; j < inner; j++)
			sum += xr[j];
		float mean = inner ? (float)(sum / (double)inner) : 0.0f;
		for (size_t j = 0; j < inner; j++)
			sq += (double)(xr[j] - mean) * (double)(xr[j] - mean);
		float var = inner ? (float)(sq / (double)inner) : 0.0f;
		float inv = 1.0f / sqrtf(var + n->p.epsilon);
		for (size_t j = 0; j < inner; j++)
			y[o * inner + j] = (xr[j] - mean) * inv * s[sc->nelem == 1 ? 0 : j] +
			                   (bd ? bd[b->nelem == 1 ? 0 : j] : 0.0f);
		if (n->n_out > 1)
			((float *)out[1]->data)[o] = mean;
		if (n->n_out > 2)
			((float *)out[2]->data)[o] = inv;
	}
	return 0;
}

/* ---- InstanceNormalization ---- */

static int prepare_instnorm(struct ops_node *n, const Onnx__NodeProto *np,
                            const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                            char *err, size_t errlen)
{
	for (size_t i = 0; i < n->n_in; i++)
		if (ops_require_dtype(in_types[i], "input", float_only, err, errlen))
			return -1;
	if (ops_attr_float(np, "epsilon", 1e-5f, &n->p.epsilon, err, errlen))
		return -1;
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

static int run_instnorm(const struct ops_node *n, const struct tensor *const *in,
                        struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	if (x->ndim < 3 || in[1]->nelem != (size_t)x->dims[1] ||
	    in[2]->nelem != (size_t)x->dims[1]) {
		snprintf(err, errlen, "expected X [N,C,D1..] with scale and B of C elements");
		return -1;
	}
	if (ops_new(out, TENSOR_FLOAT, x->ndim, x->dims, err, errlen))
		return -1;
	size_t C = (size_t)x->dims[1], planes = (size_t)x->dims[0] * C;
	size_t len = ops_numel(x->dims + 2, x->ndim - 2);
	const float *xd = x->data, *s = in[1]->data, *b = in[2]->data;
	float *y = (*out)->data;
	for (size_t p = 0; p < planes; p++) {
		const float *xr = xd + p * len;
		double sum = 0, sq = 0;
		for (size_t j = 0; j < len; j++)
			sum += xr[j];
		double mean = len ? sum / (double)len : 0;
		for (size_t j = 0; j < len; j++)
			sq += (xr[j] - mean) * (xr[j] - mean);
		double inv = 1.0 / sqrt((len ? sq / (double)len : 0) + n->p.epsilon);
		for (size_t j = 0; j < len; j++)
			y[p * len + j] = (float)((xr[j] - mean) * inv * s[p % C] + b[p % C]);
	}
	return 0;
}

/* ---- Mod ---- */

struct mod_ctx {
	int fmod_;
	enum tensor_dtype dtype;
};

static void mod_row(const void *ctx, char *o, const char *const *in, const size_t *st, size_t len)
{
	const struct mod_ctx *c = ctx;
	if (c->dtype == TENSOR_FLOAT) {
		const float *a = (const float *)(const void *)in[0];
		const float *b = (const float *)(const void *)in[1];
		for (size_t i = 0; i < len; i++)
			((float *)(void *)o)[i] = fmodf(a[i * st[0]], b[i * st[1]]);
		return;
	}
	const int64_t *a = (const int64_t *)(const void *)in[0];
	const int64_t *b = (const int64_t *)(const void *)in[1];
	for (size_t i = 0; i < len; i++) {
		int64_t x = a[i * st[0]], y = b[i * st[1]];
		int64_t r = y == -1 ? 0 : x % y; /* INT64_MIN % -1 is undefined */
		if (!c->fmod_ && r != 0 && ((r < 0) != (y < 0)))
			r += y;
		((int64_t *)(void *)o)[i] = r;
	}
}

static int prepare_mod(struct ops_node *n, const Onnx__NodeProto *np,
                       const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                       size_t errlen)
{
	int64_t f;
	if (ops_require_dtype(in_types[0], "A", float_int64, err, errlen) ||
	    ops_attr_int(np, "fmod", 0, &f, err, errlen))
		return -1;
	if (in_types[1] != in_types[0]) {
		snprintf(err, errlen, "B: dtype differs from A");
		return -1;
	}
	if (in_types[0] == TENSOR_FLOAT && !f) {
		snprintf(err, errlen, "fmod=0 on floats not supported");
		return -1;
	}
	n->p.group = f != 0;
	out_types[0] = in_types[0];
	return 0;
}

static int run_mod(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                   char *err, size_t errlen)
{
	struct ops_bcast b;
	struct mod_ctx c = {(int)n->p.group, in[0]->dtype};
	if (in[0]->dtype == TENSOR_INT64)
		for (size_t i = 0; i < in[1]->nelem; i++)
			if (((const int64_t *)in[1]->data)[i] == 0) {
				snprintf(err, errlen, "integer modulo by zero");
				return -1;
			}
	if (ops_bcast_init(&b, in, 2, NULL, 0, err, errlen) ||
	    ops_new(out, in[0]->dtype, b.ndim, b.dims, err, errlen))
		return -1;
	ops_bcast_run(&b, in, *out, mod_row, &c);
	return 0;
}

/* ---- GatherElements ---- */

static int prepare_gather_elements(struct ops_node *n, const Onnx__NodeProto *np,
                                   const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                                   char *err, size_t errlen)
{
	if (tensor_dtype_size(in_types[0]) == 0) {
		snprintf(err, errlen, "data: dtype %s not supported",
		         ops_dtype_name((int)in_types[0]));
		return -1;
	}
	if (ops_require_dtype(in_types[1], "indices", int_types, err, errlen) ||
	    ops_attr_int(np, "axis", 0, &n->p.axis, err, errlen))
		return -1;
	out_types[0] = in_types[0];
	return 0;
}

static int run_gather_elements(const struct ops_node *n, const struct tensor *const *in,
                               struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0], *ix = in[1];
	int64_t axis;
	if (ops_axis(n->p.axis, x->ndim, &axis, err, errlen))
		return -1;
	if (ix->ndim != x->ndim) {
		snprintf(err, errlen, "indices must have the rank of data");
		return -1;
	}
	for (int d = 0; d < x->ndim; d++)
		if (d != axis && ix->dims[d] > x->dims[d]) {
			snprintf(err, errlen, "indices larger than data off the axis");
			return -1;
		}
	if (ops_new(out, x->dtype, ix->ndim, ix->dims, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size(x->dtype), xs[TENSOR_MAX_DIMS], acc = 1;
	for (int d = x->ndim - 1; d >= 0; d--) {
		xs[d] = acc;
		acc *= (size_t)x->dims[d];
	}
	int64_t idx[TENSOR_MAX_DIMS] = {0}, len = x->dims[axis];
	for (size_t o = 0; o < ix->nelem; o++) {
		int64_t v = ops_get_int(ix, o);
		if (v < -len || v >= len) {
			snprintf(err, errlen, "index %lld out of range for axis of size %lld",
			         (long long)v, (long long)len);
			return -1;
		}
		size_t off = 0;
		for (int d = 0; d < x->ndim; d++)
			off += (size_t)(d == axis ? (v < 0 ? v + len : v) : idx[d]) * xs[d];
		memcpy((char *)(*out)->data + o * esz, (const char *)x->data + off * esz, esz);
		ops_index_next(idx, ix->dims, x->ndim);
	}
	return 0;
}

/* ---- CumSum ---- */

static int prepare_cumsum(struct ops_node *n, const Onnx__NodeProto *np,
                          const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                          char *err, size_t errlen)
{
	int64_t ex, rev;
	if (ops_require_dtype(in_types[0], "x", float_int64, err, errlen) ||
	    ops_require_dtype(in_types[1], "axis", int_types, err, errlen) ||
	    ops_attr_int(np, "exclusive", 0, &ex, err, errlen) ||
	    ops_attr_int(np, "reverse", 0, &rev, err, errlen))
		return -1;
	n->p.keepdims = ex != 0;
	n->p.select_last_index = rev != 0;
	out_types[0] = in_types[0];
	return 0;
}

static int run_cumsum(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                      char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t axis;
	if (in[1]->nelem != 1) {
		snprintf(err, errlen, "axis must be a scalar");
		return -1;
	}
	if (ops_axis(ops_get_int(in[1], 0), x->ndim, &axis, err, errlen) ||
	    ops_new(out, x->dtype, x->ndim, x->dims, err, errlen))
		return -1;
	size_t outer = ops_numel(x->dims, (int)axis), len = (size_t)x->dims[axis];
	size_t inner = ops_numel(x->dims + axis + 1, x->ndim - (int)axis - 1);
	int ex = n->p.keepdims, rev = n->p.select_last_index, isf = x->dtype == TENSOR_FLOAT;
	for (size_t o = 0; o < outer; o++)
		for (size_t i = 0; i < inner; i++) {
			double accf = 0;
			uint64_t acci = 0;
			for (size_t k = 0; k < len; k++) {
				size_t j = rev ? len - 1 - k : k;
				size_t at = (o * len + j) * inner + i;
				double vf = isf ? ((const float *)x->data)[at] : 0;
				uint64_t vi = isf ? 0 : (uint64_t)((const int64_t *)x->data)[at];
				if (!ex) {
					accf += vf;
					acci += vi;
				}
				if (isf)
					((float *)(*out)->data)[at] = (float)accf;
				else
					((int64_t *)(*out)->data)[at] = (int64_t)acci;
				if (ex) {
					accf += vf;
					acci += vi;
				}
			}
		}
	return 0;
}

/* ---- Trilu ---- */

static int prepare_trilu(struct ops_node *n, const Onnx__NodeProto *np,
                         const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                         size_t errlen)
{
	int64_t up;
	if (tensor_dtype_size(in_types[0]) == 0) {
		snprintf(err, errlen, "input: dtype %s not supported",
		         ops_dtype_name((int)in_types[0]));
		return -1;
	}
	if ((n->n_in > 1 && in_types[1] != TENSOR_UNDEFINED &&
	     ops_require_dtype(in_types[1], "k", int_types, err, errlen)) ||
	    ops_attr_int(np, "upper", 1, &up, err, errlen))
		return -1;
	n->p.keepdims = up != 0;
	out_types[0] = in_types[0];
	return 0;
}

static int run_trilu(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                     char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t k = n->n_in > 1 && in[1] ? ops_get_int(in[1], 0) : 0;
	if (x->ndim < 2) {
		snprintf(err, errlen, "input must have rank >= 2");
		return -1;
	}
	if (n->n_in > 1 && in[1] && in[1]->nelem != 1) {
		snprintf(err, errlen, "k must be a scalar");
		return -1;
	}
	if (ops_new(out, x->dtype, x->ndim, x->dims, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size(x->dtype);
	int64_t R = x->dims[x->ndim - 2], C = x->dims[x->ndim - 1];
	size_t mats = R > 0 && C > 0 ? x->nelem / (size_t)(R * C) : 0;
	for (size_t m = 0; m < mats; m++)
		for (int64_t r = 0; r < R; r++)
			for (int64_t c = 0; c < C; c++) {
				int keep = n->p.keepdims ? c - r >= k : c - r <= k;
				size_t at = (m * (size_t)R + (size_t)r) * (size_t)C + (size_t)c;
				if (keep)
					memcpy((char *)(*out)->data + at * esz,
					       (const char *)x->data + at * esz, esz);
			}
	return 0;
}

/* ---- DepthToSpace, SpaceToDepth ---- */

static int prepare_d2s(struct ops_node *n, const Onnx__NodeProto *np,
                       const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                       size_t errlen)
{
	char mode[8];
	if (tensor_dtype_size(in_types[0]) == 0) {
		snprintf(err, errlen, "input: dtype %s not supported",
		         ops_dtype_name((int)in_types[0]));
		return -1;
	}
	if (ops_attr_int(np, "blocksize", 0, &n->p.group, err, errlen) ||
	    ops_attr_string(np, "mode", "DCR", mode, sizeof(mode), err, errlen))
		return -1;
	if (n->p.group < 1 || n->p.group > 1024) {
		snprintf(err, errlen, "blocksize=%lld not supported", (long long)n->p.group);
		return -1;
	}
	if (strcmp(mode, "DCR") != 0 && strcmp(mode, "CRD") != 0) {
		snprintf(err, errlen, "mode=%s not supported", mode);
		return -1;
	}
	n->p.legacy = strcmp(mode, "CRD") == 0;
	out_types[0] = in_types[0];
	return 0;
}

static int run_d2s(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                   char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t b = n->p.group;
	int to_space = n->op_type[0] == 'D';
	if (x->ndim != 4 ||
	    (to_space ? x->dims[1] % (b * b) : (x->dims[2] % b || x->dims[3] % b))) {
		snprintf(err, errlen, "input must be [N,C,H,W] divisible by blocksize %lld",
		         (long long)b);
		return -1;
	}
	int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
	int64_t od[4] = {N, to_space ? C / (b * b) : C * b * b, to_space ? H * b : H / b,
	                 to_space ? W * b : W / b};
	if (ops_new(out, x->dtype, 4, od, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size(x->dtype);
	char *y = (*out)->data;
	for (int64_t nn = 0; nn < N; nn++)
		for (int64_t c = 0; c < od[1]; c++)
			for (int64_t h = 0; h < od[2]; h++)
				for (int64_t w = 0; w < od[3]; w++) {
					int64_t ic, ih, iw;
					if (to_space) {
						int64_t bh = h % b, bw = w % b;
						ic = n->p.legacy ? c * b * b + bh * b + bw
						                 : (bh * b + bw) * od[1] + c;
						ih = h / b;
						iw = w / b;
					} else {
						int64_t blk = c / C;
						ic = c % C;
						ih = h * b + blk / b;
						iw = w * b + blk % b;
					}
					size_t src = (size_t)(((nn * C + ic) * H + ih) * W + iw);
					memcpy(y, (const char *)x->data + src * esz, esz);
					y += esz;
				}
	return 0;
}

const struct ops_kernel ops_misc_kernels[] = {
    {"LayerNormalization", 2, 3, 1, 3, prepare_layernorm, run_layernorm, NULL},
    {"InstanceNormalization", 3, 3, 1, 1, prepare_instnorm, run_instnorm, NULL},
    {"Mod", 2, 2, 1, 1, prepare_mod, run_mod, NULL},
    {"GatherElements", 2, 2, 1, 1, prepare_gather_elements, run_gather_elements, NULL},
    {"CumSum", 2, 2, 1, 1, prepare_cumsum, run_cumsum, NULL},
    {"Trilu", 1, 2, 1, 1, prepare_trilu, run_trilu, NULL},
    {"DepthToSpace", 1, 1, 1, 1, prepare_d2s, run_d2s, NULL},
    {"SpaceToDepth", 1, 1, 1, 1, prepare_d2s, run_d2s, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};
