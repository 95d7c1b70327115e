/*
 * ops_extra.c - further operators of the ONNX node-test suite that small
 * models use: Pow with mixed dtypes, CastLike, ConvTranspose, TopK, OneHot,
 * EyeLike, Shrink, Compress, GatherND, ScatterElements / Scatter, ScatterND,
 * LRN and ReverseSequence.
 */
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const enum tensor_dtype float_only[] = {TENSOR_FLOAT, 0};
static const enum tensor_dtype int_types[] = {TENSOR_INT64, TENSOR_INT32, 0};
static const enum tensor_dtype num_types[] = {TENSOR_FLOAT, TENSOR_DOUBLE, TENSOR_INT64,
                                              TENSOR_INT32, 0};

/* Element i of a numeric tensor as double. */
static double num_at(const struct tensor *t, size_t i)
{
	switch (t->dtype) {
	case TENSOR_FLOAT:
		return ((const float *)t->data)[i];
	case TENSOR_DOUBLE:
		return ((const double *)t->data)[i];
	case TENSOR_INT64:
		return (double)((const int64_t *)t->data)[i];
	case TENSOR_INT32:
		return ((const int32_t *)t->data)[i];
	case TENSOR_INT8:
		return ((const int8_t *)t->data)[i];
	default:
		return ((const uint8_t *)t->data)[i];
	}
}

static int known(enum tensor_dtype t, const char *what, char *err, size_t errlen)
{
	if (tensor_dtype_size(t) == 0) {
		snprintf(err, errlen, "%s: dtype %s not supported", what, ops_dtype_name((int)t));
		return -1;
	}
	return 0;
}

/* Row-major strides (in elements) of t. */
static void strides_of(const struct tensor *t, size_t *st)
{
	size_t acc = 1;
	for (int d = t->ndim - 1; d >= 0; d--) {
		st[d] = acc;
		acc *= (size_t)t->dims[d];
	}
}

/* ---- Pow (base float/double/int64/int32, exponent of any numeric type) ---- */

static int prepare_pow(struct ops_node *n, const Onnx__NodeProto *np,
                       const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                       size_t errlen)
{
	if (ops_require_dtype(in_types[0], "X", num_types, err, errlen) ||
	    ops_require_dtype(in_types[1], "Y", num_types, err, errlen))
		return -1;
	out_types[0] = in_types[0];
	return 0;
}

struct pow_ctx {
	const struct tensor *x, *y;
	struct tensor *z;
};

static void pow_row(const void *ctx, char *o, const char *const *in, const size_t *st, size_t len)
{
	const struct pow_ctx *c = ctx;
	size_t zi = (size_t)(o - (char *)c->z->data) / tensor_dtype_size(c->z->dtype);
	size_t xi = (size_t)(in[0] - (const char *)c->x->data) / tensor_dtype_size(c->x->dtype);
	size_t yi = (size_t)(in[1] - (const char *)c->y->data) / tensor_dtype_size(c->y->dtype);
	for (size_t i = 0; i < len; i++) {
		double b = num_at(c->x, xi + i * st[0]), e = num_at(c->y, yi + i * st[1]);
		double r = pow(b, e);
		switch (c->z->dtype) {
		case TENSOR_FLOAT:
			((float *)c->z->data)[zi + i] =
			    c->y->dtype == TENSOR_FLOAT ? powf((float)b, (float)e) : (float)r;
			break;
		case TENSOR_DOUBLE:
			((double *)c->z->data)[zi + i] = r;
			break;
		case TENSOR_INT64:
			((int64_t *)c->z->data)[zi + i] =
			    isfinite(r) && fabs(r) < 9.2e18 ? (int64_t)r : 0;
			break;
		default:
			((int32_t *)c->z->data)[zi + i] =
			    isfinite(r) && fabs(r) < 2.1e9 ? (int32_t)r : 0;
			break;
		}
	}
}

static int run_pow(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                   char *err, size_t errlen)
{
	struct ops_bcast b;
	if (ops_bcast_init(&b, in, 2, NULL, 0, err, errlen) ||
	    ops_new(out, in[0]->dtype, b.ndim, b.dims, err, errlen))
		return -1;
	struct pow_ctx c = {in[0], in[1], *out};
	ops_bcast_run(&b, in, *out, pow_row, &c);
	return 0;
}

/* ---- CastLike ---- */

static int prepare_castlike(struct ops_node *n, const Onnx__NodeProto *np,
                            const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                            char *err, size_t errlen)
{
	static const enum tensor_dtype ok[] = {
	    TENSOR_FLOAT, TENSOR_DOUBLE, TENSOR_INT64,   TENSOR_INT32,    TENSOR_INT8,
	    TENSOR_UINT8, TENSOR_BOOL,   TENSOR_FLOAT16, TENSOR_BFLOAT16, 0};
	if (ops_require_dtype(in_types[0], "input", ok, err, errlen) ||
	    ops_require_dtype(in_types[1], "target_type", ok, err, errlen))
		return -1;
	/* Reuse Cast's kernel: it reads the target from p.to. */
	n->p.to = in_types[1];
	out_types[0] = in_types[1];
	return 0;
}

static int run_castlike(const struct ops_node *n, const struct tensor *const *in,
                        struct tensor **out, char *err, size_t errlen)
{
	const struct ops_kernel *cast = ops_find("Cast");
	return cast->run(n, in, out, err, errlen);
}

/* ---- ConvTranspose ---- */

#define SP 3

static int prepare_convt(struct ops_node *n, const Onnx__NodeProto *np,
                         const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                         size_t errlen)
{
	struct ops_params *p = &n->p;
	int ns, nd, nop;
	char ap[16];
	for (size_t i = 0; i < n->n_in; i++)
		if (in_types[i] != TENSOR_UNDEFINED &&
		    ops_require_dtype(in_types[i], "input", float_only, err, errlen))
			return -1;
	if (ops_attr_ints(np, "kernel_shape", p->kernel, SP, &p->nk, err, errlen) ||
	    ops_attr_ints(np, "strides", p->strides, SP, &ns, err, errlen) ||
	    ops_attr_ints(np, "dilations", p->dilations, SP, &nd, err, errlen) ||
	    ops_attr_ints(np, "pads", p->pads, 2 * SP, &p->npads, err, errlen) ||
	    ops_attr_ints(np, "output_padding", p->axes, SP, &nop, err, errlen) ||
	    ops_attr_ints(np, "output_shape", p->perm, SP, &p->nperm, err, errlen) ||
	    ops_attr_int(np, "group", 1, &p->group, err, errlen) ||
	    ops_attr_string(np, "auto_pad", "NOTSET", ap, sizeof(ap), err, errlen))
		return -1;
	p->naxes = nop < 0 ? 0 : nop;
	for (int i = ns < 0 ? 0 : ns; i < SP; i++)
		p->strides[i] = 1;
	for (int i = nd < 0 ? 0 : nd; i < SP; i++)
		p->dilations[i] = 1;
	if (p->npads < 0)
		p->npads = 0;
	if (strcmp(ap, "NOTSET") == 0)
		p->auto_pad = OPS_PAD_NOTSET;
	else if (strcmp(ap, "VALID") == 0)
		p->auto_pad = OPS_PAD_VALID;
	else if (strcmp(ap, "SAME_UPPER") == 0)
		p->auto_pad = OPS_PAD_SAME_UPPER;
	else if (strcmp(ap, "SAME_LOWER") == 0)
		p->auto_pad = OPS_PAD_SAME_LOWER;
	else {
		snprintf(err, errlen, "auto_pad=%s not supported", ap);
		return -1;
	}
	if (p->group < 1 || p->group > OPS_WINDOW_MAX) {
		snprintf(err, errlen, "group=%lld not supported", (long long)p->group);
		return -1;
	}
	for (int i = 0; i < SP; i++)
		if (p->strides[i] < 1 || p->strides[i] > OPS_WINDOW_MAX || p->dilations[i] < 1 ||
		    p->dilations[i] > OPS_WINDOW_MAX ||
		    (i < p->naxes && (p->axes[i] < 0 || p->axes[i] > OPS_WINDOW_MAX))) {
			snprintf(err, errlen, "strides, dilations, output_padding out of range");
			return -1;
		}
	for (int i = 0; i < p->npads; i++)
		if (p->pads[i] < 0 || p->pads[i] > OPS_WINDOW_MAX) {
			snprintf(err, errlen, "pads out of range");
			return -1;
		}
	for (int i = 0; i < p->nperm; i++)
		if (p->perm[i] < 0 || p->perm[i] > ((int64_t)1 << 40)) {
			snprintf(err, errlen, "output_shape out of range");
			return -1;
		}
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

static int run_convt(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                     char *err, size_t errlen)
{
	const struct tensor *x = in[0], *w = in[1], *b = n->n_in > 2 ? in[2] : NULL;
	const struct ops_params *p = &n->p;
	int ns = x->ndim - 2;
	int64_t G = p->group;
	if (ns < 1 || ns > SP || w->ndim != x->ndim || x->dims[1] != w->dims[0] || x->dims[1] % G ||
	    (p->npads && p->npads != 2 * ns) || (p->nperm > 0 && p->nperm != ns) ||
	    (p->naxes && p->naxes != ns) || (b && (int64_t)b->nelem != w->dims[1] * G)) {
		char s1[96], s2[96];
		snprintf(err, errlen, "X %s and W %s do not fit (group %lld)",
		         ops_shape_str(x->dims, x->ndim, s1, sizeof(s1)),
		         ops_shape_str(w->dims, w->ndim, s2, sizeof(s2)), (long long)G);
		return -1;
	}
	int64_t in_[SP], k[SP], s[SP], d[SP], pb[SP], o[SP], od[TENSOR_MAX_DIMS];
	int64_t C = x->dims[1], M = w->dims[1] * G, cg = C / G, mg = w->dims[1];
	od[0] = x->dims[0];
	od[1] = M;
	for (int i = 0; i < SP; i++) {
		int on = i < ns;
		in_[i] = on ? x->dims[2 + i] : 1;
		k[i] = on ? w->dims[2 + i] : 1;
		s[i] = on ? p->strides[i] : 1;
		d[i] = on ? p->dilations[i] : 1;
		int64_t opad = on && p->naxes ? p->axes[i] : 0;
		int64_t full = s[i] * (in_[i] - 1) + opad + (k[i] - 1) * d[i] + 1;
		if (on && p->nk > 0 && p->kernel[i] != k[i]) {
			snprintf(err, errlen, "kernel_shape does not match W");
			return -1;
		}
		if (on && (p->nperm > 0 || p->auto_pad == OPS_PAD_SAME_UPPER ||
		           p->auto_pad == OPS_PAD_SAME_LOWER)) {
			o[i] = p->nperm > 0 ? p->perm[i] : in_[i] * s[i];
			int64_t total = full - o[i];
			if (total < 0)
				total = 0;
			pb[i] = p->auto_pad == OPS_PAD_SAME_UPPER ? total / 2 : total - total / 2;
		} else if (on) {
			pb[i] = p->npads && p->auto_pad != OPS_PAD_VALID ? p->pads[i] : 0;
			int64_t pe = p->npads && p->auto_pad != OPS_PAD_VALID ? p->pads[ns + i] : 0;
			o[i] = full - pb[i] - pe;
		} else {
			pb[i] = 0;
			o[i] = 1;
		}
		if (o[i] < 0) {
			snprintf(err, errlen, "negative output size");
			return -1;
		}
		if (on)
			od[2 + i] = o[i];
	}
	if (ops_new(out, TENSOR_FLOAT, x->ndim, od, err, errlen))
		return -1;
	size_t isz = (size_t)(in_[0] * in_[1] * in_[2]), osz = (size_t)(o[0] * o[1] * o[2]);
	size_t ksz = (size_t)(k[0] * k[1] * k[2]);
	const float *xd = x->data, *wd = w->data, *bd = b ? b->data : NULL;
	float *y = (*out)->data;
	for (int64_t nn = 0; nn < x->dims[0]; nn++) {
		for (int64_t m = 0; m < M; m++)
			for (size_t q = 0; q < osz; q++)
				y[((size_t)nn * (size_t)M + (size_t)m) * osz + q] =
				    bd ? bd[m] : 0.0f;
		for (int64_t c = 0; c < C; c++) {
			int64_t g = c / cg;
			const float *xc = xd + ((size_t)nn * (size_t)C + (size_t)c) * isz;
			for (int64_t mm = 0; mm < mg; mm++) {
				const float *wk = wd + ((size_t)c * (size_t)mg + (size_t)mm) * ksz;
				float *ym =
				    y + ((size_t)nn * (size_t)M + (size_t)(g * mg + mm)) * osz;
				int64_t i[SP], kk[SP];
				for (i[0] = 0; i[0] < in_[0]; i[0]++)
					for (i[1] = 0; i[1] < in_[1]; i[1]++)
						for (i[2] = 0; i[2] < in_[2]; i[2]++) {
							float xv =
							    xc[(i[0] * in_[1] + i[1]) * in_[2] +
							       i[2]];
							for (kk[0] = 0; kk[0] < k[0]; kk[0]++)
								for (kk[1] = 0; kk[1] < k[1];
								     kk[1]++)
									for (kk[2] = 0;
									     kk[2] < k[2];
									     kk[2]++) {
										int64_t q[SP];
										int okp = 1;
										for (int a = 0;
										     a < SP && okp;
										     a++) {
											q[a] =
											    i[a] *
											        s[a] -
											    pb[a] +
											    kk[a] *
											        d[a];
											okp =
											    q[a] >=
											        0 &&
											    q[a] <
											        o[a];
										}
										if (okp)
											ym[(q[0] *
											        o[1] +
											    q[1]) *
											       o[2] +
											   q[2]] +=
											    xv *
											    wk[(kk[0] *
											            k[1] +
											        kk[1]) *
											           k[2] +
											       kk[2]];
									}
						}
			}
		}
	}
	return 0;
}

/* ---- TopK ---- */

static int prepare_topk(struct ops_node *n, const Onnx__NodeProto *np,
                        const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                        size_t errlen)
{
	static const enum tensor_dtype ok[] = {TENSOR_FLOAT, TENSOR_INT64, 0};
	int64_t largest, sorted;
	if (ops_require_dtype(in_types[0], "X", ok, err, errlen) ||
	    ops_require_dtype(in_types[1], "K", int_types, err, errlen) ||
	    ops_attr_int(np, "axis", -1, &n->p.axis, err, errlen) ||
	    ops_attr_int(np, "largest", 1, &largest, err, errlen) ||
	    ops_attr_int(np, "sorted", 1, &sorted, err, errlen))
		return -1;
	if (!sorted) {
		snprintf(err, errlen, "sorted=0 not supported");
		return -1;
	}
	n->p.keepdims = largest != 0;
	out_types[0] = in_types[0];
	if (n->n_out > 1)
		out_types[1] = TENSOR_INT64;
	return 0;
}

struct topk_ctx {
	const struct tensor *x;
	size_t base, inner;
	int largest;
};

/* Best first; equal values keep the lower index first. */
static int topk_cmp(const void *a, const void *b, void *ctx)
{
	const struct topk_ctx *c = ctx;
	int64_t ia = *(const int64_t *)a, ib = *(const int64_t *)b;
	double va = num_at(c->x, c->base + (size_t)ia * c->inner);
	double vb = num_at(c->x, c->base + (size_t)ib * c->inner);
	if (va != vb)
		return (c->largest ? va > vb : va < vb) ? -1 : 1;
	return ia < ib ? -1 : (ia > ib);
}

static int run_topk(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                    char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t axis, od[TENSOR_MAX_DIMS];
	if (x->ndim == 0 || in[1]->nelem != 1) {
		snprintf(err, errlen, "X must have rank >= 1 and K one element");
		return -1;
	}
	if (ops_axis(n->p.axis, x->ndim, &axis, err, errlen))
		return -1;
	int64_t K = ops_get_int(in[1], 0), len = x->dims[axis];
	if (K < 0 || K > len) {
		snprintf(err, errlen, "K=%lld out of range for axis of size %lld", (long long)K,
		         (long long)len);
		return -1;
	}
	memcpy(od, x->dims, sizeof(od[0]) * (size_t)x->ndim);
	od[axis] = K;
	if (ops_new(&out[0], x->dtype, x->ndim, od, err, errlen) ||
	    ops_new(&out[1], TENSOR_INT64, x->ndim, od, err, errlen))
		return -1;
	size_t outer = ops_numel(x->dims, (int)axis);
	size_t inner = ops_numel(x->dims + axis + 1, x->ndim - (int)axis - 1);
	size_t esz = tensor_dtype_size(x->dtype);
	int64_t *order = malloc(((size_t)len ? (size_t)len : 1) * sizeof(*order));
	if (!order) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int64_t *iy = out[1]->data;
	for (size_t o = 0; o < outer; o++)
		for (size_t i = 0; i < inner; i++) {
			struct topk_ctx c = {x, o * (size_t)len * inner + i, inner, n->p.keepdims};
			size_t obase = o * (size_t)K * inner + i;
			for (int64_t j = 0; j < len; j++)
				order[j] = j;
			qsort_r(order, (size_t)len, sizeof(*order), topk_cmp, &c);
			for (int64_t r = 0; r < K; r++) {
				size_t dst = obase + (size_t)r * inner;
				iy[dst] = order[r];
				memcpy((char *)out[0]->data + dst * esz,
				       (const char *)x->data +
				           (c.base + (size_t)order[r] * inner) * esz,
				       esz);
			}
		}
	free(order);
	return 0;
}

/* ---- OneHot ---- */

static int prepare_onehot(struct ops_node *n, const Onnx__NodeProto *np,
                          const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                          char *err, size_t errlen)
{
	if (ops_require_dtype(in_types[0], "indices", num_types, err, errlen) ||
	    ops_require_dtype(in_types[1], "depth", num_types, err, errlen) ||
	    known(in_types[2], "values", err, errlen) ||
	    ops_attr_int(np, "axis", -1, &n->p.axis, err, errlen))
		return -1;
	out_types[0] = in_types[2];
	return 0;
}

static int run_onehot(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                      char *err, size_t errlen)
{
	const struct tensor *ix = in[0], *vals = in[2];
	int64_t axis, od[TENSOR_MAX_DIMS];
	if (in[1]->nelem != 1 || vals->nelem != 2 || ix->ndim + 1 > TENSOR_MAX_DIMS) {
		snprintf(err, errlen, "depth must be a scalar and values [off, on]");
		return -1;
	}
	double dd = num_at(in[1], 0);
	if (!(dd >= 1 && dd < 1e7)) {
		snprintf(err, errlen, "depth out of range");
		return -1;
	}
	int64_t depth = (int64_t)dd;
	if (ops_axis(n->p.axis, ix->ndim + 1, &axis, err, errlen))
		return -1;
	for (int d = 0, s = 0; d < ix->ndim + 1; d++)
		od[d] = d == axis ? depth : ix->dims[s++];
	if (ops_new(out, vals->dtype, ix->ndim + 1, od, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size(vals->dtype);
	size_t outer = ops_numel(ix->dims, (int)axis);
	size_t inner = ops_numel(ix->dims + axis, ix->ndim - (int)axis);
	char *y = (*out)->data;
	const char *off = vals->data, *on = (const char *)vals->data + esz;
	for (size_t o = 0; o < outer; o++)
		for (int64_t k = 0; k < depth; k++)
			for (size_t i = 0; i < inner; i++) {
				double v = num_at(ix, o * inner + i);
				int64_t iv = isfinite(v) && fabs(v) < 1e15 ? (int64_t)v : depth;
				if (iv < 0)
					iv += depth;
				memcpy(y, iv == k ? on : off, esz);
				y += esz;
			}
	return 0;
}

/* ---- EyeLike ---- */

static int prepare_eyelike(struct ops_node *n, const Onnx__NodeProto *np,
                           const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                           char *err, size_t errlen)
{
	int64_t dt;
	if (known(in_types[0], "input", err, errlen) ||
	    ops_attr_int(np, "dtype", in_types[0], &dt, err, errlen) ||
	    ops_attr_int(np, "k", 0, &n->p.axis, err, errlen))
		return -1;
	if (dt < 0 || dt > 64 || known((enum tensor_dtype)dt, "dtype", err, errlen))
		return -1;
	n->p.to = dt;
	out_types[0] = (enum tensor_dtype)dt;
	return 0;
}

static int run_eyelike(const struct ops_node *n, const struct tensor *const *in,
                       struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	if (x->ndim != 2) {
		snprintf(err, errlen, "input must be 2-D");
		return -1;
	}
	if (ops_new(out, (enum tensor_dtype)n->p.to, 2, x->dims, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size((*out)->dtype);
	for (int64_t r = 0; r < x->dims[0]; r++) {
		int64_t c = r + n->p.axis;
		if (c < 0 || c >= x->dims[1])
			continue;
		char *e = (char *)(*out)->data + ((size_t)r * (size_t)x->dims[1] + (size_t)c) * esz;
		switch ((*out)->dtype) {
		case TENSOR_FLOAT:
			*(float *)(void *)e = 1.0f;
			break;
		case TENSOR_DOUBLE:
			*(double *)(void *)e = 1.0;
			break;
		case TENSOR_INT64:
			*(int64_t *)(void *)e = 1;
			break;
		case TENSOR_INT32:
			*(int32_t *)(void *)e = 1;
			break;
		default:
			*(uint8_t *)e = 1;
			break;
		}
	}
	return 0;
}

/* ---- Shrink ---- */

static int prepare_shrink(struct ops_node *n, const Onnx__NodeProto *np,
                          const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                          char *err, size_t errlen)
{
	if (ops_require_dtype(in_types[0], "input", float_only, err, errlen) ||
	    ops_attr_float(np, "lambd", 0.5f, &n->p.alpha, err, errlen) ||
	    ops_attr_float(np, "bias", 0.0f, &n->p.beta, err, errlen))
		return -1;
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

static int run_shrink(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                      char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	if (ops_new(out, TENSOR_FLOAT, x->ndim, x->dims, err, errlen))
		return -1;
	const float *xd = x->data;
	float *y = (*out)->data, l = n->p.alpha, b = n->p.beta;
	for (size_t i = 0; i < x->nelem; i++)
		y[i] = xd[i] < -l ? xd[i] + b : (xd[i] > l ? xd[i] - b : 0.0f);
	return 0;
}

/* ---- Compress ---- */

static int prepare_compress(struct ops_node *n, const Onnx__NodeProto *np,
                            const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                            char *err, size_t errlen)
{
	static const enum tensor_dtype bool_only[] = {TENSOR_BOOL, 0};
	if (known(in_types[0], "input", err, errlen) ||
	    ops_require_dtype(in_types[1], "condition", bool_only, err, errlen) ||
	    ops_attr_int(np, "axis", INT64_MIN, &n->p.axis, err, errlen))
		return -1;
	out_types[0] = in_types[0];
	return 0;
}

static int run_compress(const struct ops_node *n, const struct tensor *const *in,
                        struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0], *c = in[1];
	const uint8_t *cd = c->data;
	int flat = n->p.axis == INT64_MIN;
	int64_t axis = 0, od[TENSOR_MAX_DIMS];
	if (!flat && ops_axis(n->p.axis, x->ndim, &axis, err, errlen))
		return -1;
	size_t len = flat ? x->nelem : (x->ndim ? (size_t)x->dims[axis] : 1);
	size_t outer = flat ? 1 : ops_numel(x->dims, (int)axis);
	size_t inner = flat ? 1 : ops_numel(x->dims + axis + 1, x->ndim - (int)axis - 1);
	if (c->nelem > len) {
		snprintf(err, errlen, "condition longer than the axis");
		return -1;
	}
	int64_t keep = 0;
	for (size_t i = 0; i < c->nelem; i++)
		keep += cd[i] != 0;
	if (flat) {
		od[0] = keep;
	} else {
		memcpy(od, x->dims, sizeof(od[0]) * (size_t)x->ndim);
		od[axis] = keep;
	}
	if (ops_new(out, x->dtype, flat ? 1 : x->ndim, od, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size(x->dtype);
	char *y = (*out)->data;
	for (size_t o = 0; o < outer; o++)
		for (size_t j = 0; j < c->nelem; j++)
			if (cd[j]) {
				memcpy(y, (const char *)x->data + (o * len + j) * inner * esz,
				       inner * esz);
				y += inner * esz;
			}
	return 0;
}

/* ---- GatherND ---- */

static int prepare_gathernd(struct ops_node *n, const Onnx__NodeProto *np,
                            const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                            char *err, size_t errlen)
{
	if (known(in_types[0], "data", err, errlen) ||
	    ops_require_dtype(in_types[1], "indices", int_types, err, errlen) ||
	    ops_attr_int(np, "batch_dims", 0, &n->p.group, err, errlen))
		return -1;
	out_types[0] = in_types[0];
	return 0;
}

static int run_gathernd(const struct ops_node *n, const struct tensor *const *in,
                        struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0], *ix = in[1];
	int64_t b = n->p.group, od[TENSOR_MAX_DIMS];
	int q = ix->ndim, r = x->ndim;
	int64_t k = q ? ix->dims[q - 1] : 0;
	if (q < 1 || b < 0 || b >= q || b >= r || k < 1 || b + k > r ||
	    q - 1 + r - (int)(b + k) > TENSOR_MAX_DIMS) {
		snprintf(err, errlen, "indices do not fit data (batch_dims %lld)", (long long)b);
		return -1;
	}
	for (int d = 0; d < b; d++)
		if (ix->dims[d] != x->dims[d]) {
			snprintf(err, errlen, "batch dimensions differ");
			return -1;
		}
	int nd = 0;
	for (int d = 0; d < q - 1; d++)
		od[nd++] = ix->dims[d];
	for (int d = (int)(b + k); d < r; d++)
		od[nd++] = x->dims[d];
	if (ops_new(out, x->dtype, nd, od, err, errlen))
		return -1;
	size_t xs[TENSOR_MAX_DIMS], esz = tensor_dtype_size(x->dtype);
	strides_of(x, xs);
	size_t batches = ops_numel(x->dims, (int)b);
	size_t per = batches ? ops_numel(ix->dims, q - 1) / batches : 0;
	size_t slice = ops_numel(x->dims + b + k, r - (int)(b + k)) * esz;
	size_t bstride = ops_numel(x->dims + b, r - (int)b);
	char *y = (*out)->data;
	for (size_t bi = 0; bi < batches; bi++)
		for (size_t t = 0; t < per; t++) {
			size_t off = bi * bstride, row = (bi * per + t) * (size_t)k;
			for (int64_t j = 0; j < k; j++) {
				int64_t v = ops_get_int(ix, row + (size_t)j), dim = x->dims[b + j];
				if (v < -dim || v >= dim) {
					snprintf(err, errlen, "index %lld out of range",
					         (long long)v);
					return -1;
				}
				off += (size_t)(v < 0 ? v + dim : v) * xs[b + j];
			}
			memcpy(y, (const char *)x->data + off * esz, slice);
			y += slice;
		}
	return 0;
}

/* ---- ScatterElements, Scatter, ScatterND ---- */

enum scatter_red { RED_NONE, RED_ADD, RED_MUL };

static int prepare_scatter(struct ops_node *n, const Onnx__NodeProto *np,
                           const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                           char *err, size_t errlen)
{
	static const enum tensor_dtype ok[] = {TENSOR_FLOAT, TENSOR_INT64, 0};
	char red[16];
	if (ops_require_dtype(in_types[0], "data", ok, err, errlen) ||
	    ops_require_dtype(in_types[1], "indices", int_types, err, errlen) ||
	    ops_attr_int(np, "axis", 0, &n->p.axis, err, errlen) ||
	    ops_attr_string(np, "reduction", "none", red, sizeof(red), err, errlen))
		return -1;
	if (in_types[2] != in_types[0]) {
		snprintf(err, errlen, "updates must have the dtype of data");
		return -1;
	}
	if (strcmp(red, "none") == 0)
		n->p.group = RED_NONE;
	else if (strcmp(red, "add") == 0)
		n->p.group = RED_ADD;
	else if (strcmp(red, "mul") == 0)
		n->p.group = RED_MUL;
	else {
		snprintf(err, errlen, "reduction=%s not supported", red);
		return -1;
	}
	out_types[0] = in_types[0];
	return 0;
}

/* Applies update element u to y element at (index into same-dtype buffers). */
static void scatter_apply(struct tensor *y, size_t at, const struct tensor *u, size_t ui, int red)
{
	if (y->dtype == TENSOR_FLOAT) {
		float *d = (float *)y->data + at, v = ((const float *)u->data)[ui];
		*d = red == RED_ADD ? *d + v : (red == RED_MUL ? *d * v : v);
	} else {
		int64_t *d = (int64_t *)y->data + at, v = ((const int64_t *)u->data)[ui];
		*d = red == RED_ADD   ? (int64_t)((uint64_t)*d + (uint64_t)v)
		     : red == RED_MUL ? (int64_t)((uint64_t)*d * (uint64_t)v)
		                      : v;
	}
}

static int run_scatter_elements(const struct ops_node *n, const struct tensor *const *in,
                                struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0], *ix = in[1], *u = in[2];
	int64_t axis;
	if (ops_axis(n->p.axis, x->ndim, &axis, err, errlen))
		return -1;
	int ok = ix->ndim == x->ndim && u->ndim == x->ndim;
	for (int d = 0; ok && d < x->ndim; d++)
		ok = ix->dims[d] == u->dims[d] && (d == axis || ix->dims[d] <= x->dims[d]);
	if (!ok) {
		snprintf(err, errlen, "indices and updates must match and fit data");
		return -1;
	}
	if (ops_new(out, x->dtype, x->ndim, x->dims, err, errlen))
		return -1;
	memcpy((*out)->data, x->data, x->nelem * tensor_dtype_size(x->dtype));
	size_t xs[TENSOR_MAX_DIMS];
	strides_of(x, xs);
	int64_t idx[TENSOR_MAX_DIMS] = {0}, len = x->dims[axis];
	for (size_t e = 0; e < ix->nelem; e++, ops_index_next(idx, ix->dims, ix->ndim)) {
		int64_t v = ops_get_int(ix, e);
		if (v < -len || v >= len) {
			snprintf(err, errlen, "index %lld out of range", (long long)v);
			return -1;
		}
		size_t at = 0;
		for (int d = 0; d < x->ndim; d++)
			at += (size_t)(d == axis ? (v < 0 ? v + len : v) : idx[d]) * xs[d];
		scatter_apply(*out, at, u, e, (int)n->p.group);
	}
	return 0;
}

static int run_scatternd(const struct ops_node *n, const struct tensor *const *in,
                         struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0], *ix = in[1], *u = in[2];
	int q = ix->ndim, r = x->ndim;
	int64_t k = q ? ix->dims[q - 1] : 0;
	size_t tuples = q ? ops_numel(ix->dims, q - 1) : 0;
	size_t slice = k <= r ? ops_numel(x->dims + k, r - (int)k) : 0;
	if (q < 1 || k < 1 || k > r || u->nelem != tuples * slice) {
		snprintf(err, errlen, "indices and updates do not fit data");
		return -1;
	}
	if (ops_new(out, x->dtype, r, x->dims, err, errlen))
		return -1;
	memcpy((*out)->data, x->data, x->nelem * tensor_dtype_size(x->dtype));
	size_t xs[TENSOR_MAX_DIMS];
	strides_of(x, xs);
	for (size_t t = 0; t < tuples; t++) {
		size_t off = 0;
		for (int64_t j = 0; j < k; j++) {
			int64_t v = ops_get_int(ix, t * (size_t)k + (size_t)j), dim = x->dims[j];
			if (v < -dim || v >= dim) {
				snprintf(err, errlen, "index %lld out of range", (long long)v);
				return -1;
			}
			off += (size_t)(v < 0 ? v + dim : v) * xs[j];
		}
		for (size_t s = 0; s < slice; s++)
			scatter_apply(*out, off + s, u, t * slice + s, (int)n->p.group);
	}
	return 0;
}

/* ---- LRN ---- */

static int prepare_lrn(struct ops_node *n, const Onnx__NodeProto *np,
                       const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                       size_t errlen)
{
	if (ops_require_dtype(in_types[0], "X", float_only, err, errlen) ||
	    ops_attr_float(np, "alpha", 1e-4f, &n->p.alpha, err, errlen) ||
	    ops_attr_float(np, "beta", 0.75f, &n->p.beta, err, errlen) ||
	    ops_attr_float(np, "bias", 1.0f, &n->p.gamma, err, errlen) ||
	    ops_attr_int(np, "size", 0, &n->p.group, err, errlen))
		return -1;
	if (n->p.group < 1 || n->p.group > 4096) {
		snprintf(err, errlen, "size=%lld not supported", (long long)n->p.group);
		return -1;
	}
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

static int run_lrn(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                   char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	if (x->ndim < 2) {
		snprintf(err, errlen, "X must be [N,C,...]");
		return -1;
	}
	if (ops_new(out, TENSOR_FLOAT, x->ndim, x->dims, err, errlen))
		return -1;
	int64_t C = x->dims[1], size = n->p.group;
	int64_t lo = (size - 1) / 2, hi = size - 1 - lo;
	size_t inner = ops_numel(x->dims + 2, x->ndim - 2);
	double *pre = malloc(((size_t)C + 1) * sizeof(*pre)); /* prefix sums of squares over C */
	if (!pre) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	const float *xd = x->data;
	float *y = (*out)->data;
	for (int64_t nn = 0; nn < x->dims[0]; nn++)
		for (size_t i = 0; i < inner; i++) {
			pre[0] = 0;
			for (int64_t c = 0; c < C; c++) {
				double v = xd[(size_t)(nn * C + c) * inner + i];
				pre[c + 1] = pre[c] + v * v;
			}
			for (int64_t c = 0; c < C; c++) {
				int64_t a = c - lo < 0 ? 0 : c - lo,
				        b = c + hi + 1 > C ? C : c + hi + 1;
				size_t at = (size_t)(nn * C + c) * inner + i;
				y[at] =
				    (float)(xd[at] / pow(n->p.gamma + n->p.alpha / (double)size *
				                                          (pre[b] - pre[a]),
				                         n->p.beta));
			}
		}
	free(pre);
	return 0;
}

/* ---- ReverseSequence ---- */

static int prepare_revseq(struct ops_node *n, const Onnx__NodeProto *np,
                          const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                          char *err, size_t errlen)
{
	int64_t ba, ta;
	if (known(in_types[0], "input", err, errlen) ||
	    ops_require_dtype(in_types[1], "sequence_lens", int_types, err, errlen) ||
	    ops_attr_int(np, "batch_axis", 1, &ba, err, errlen) ||
	    ops_attr_int(np, "time_axis", 0, &ta, err, errlen))
		return -1;
	if (!((ba == 0 && ta == 1) || (ba == 1 && ta == 0))) {
		snprintf(err, errlen, "batch_axis/time_axis must be 0 and 1");
		return -1;
	}
	n->p.axis = ta;
	out_types[0] = in_types[0];
	return 0;
}

static int run_revseq(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                      char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t ta = n->p.axis, ba = 1 - ta;
	if (x->ndim < 2 || in[1]->nelem != (size_t)x->dims[ba]) {
		snprintf(err, errlen, "sequence_lens must have one value per batch");
		return -1;
	}
	if (ops_new(out, x->dtype, x->ndim, x->dims, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size(x->dtype), xs[TENSOR_MAX_DIMS];
	strides_of(x, xs);
	int64_t idx[TENSOR_MAX_DIMS] = {0};
	for (size_t e = 0; e < x->nelem; e++, ops_index_next(idx, x->dims, x->ndim)) {
		int64_t len = ops_get_int(in[1], (size_t)idx[ba]), t = idx[ta];
		if (len < 0 || len > x->dims[ta]) {
			snprintf(err, errlen, "sequence length %lld out of range", (long long)len);
			return -1;
		}
		int64_t src = t < len ? len - 1 - t : t;
		size_t at = e + (size_t)(src - t) * xs[ta];
		memcpy((char *)(*out)->data + e * esz, (const char *)x->data + at * esz, esz);
	}
	return 0;
}

const struct ops_kernel ops_extra_kernels[] = {
    {"Pow", 2, 2, 1, 1, prepare_pow, run_pow, NULL},
    {"CastLike", 2, 2, 1, 1, prepare_castlike, run_castlike, NULL},
    {"ConvTranspose", 2, 3, 1, 1, prepare_convt, run_convt, NULL},
    {"TopK", 2, 2, 2, 2, prepare_topk, run_topk, NULL},
    {"OneHot", 3, 3, 1, 1, prepare_onehot, run_onehot, NULL},
    {"EyeLike", 1, 1, 1, 1, prepare_eyelike, run_eyelike, NULL},
    {"Shrink", 1, 1, 1, 1, prepare_shrink, run_shrink, NULL},
    {"Compress", 2, 2, 1, 1, prepare_compress, run_compress, NULL},
    {"GatherND", 2, 2, 1, 1, prepare_gathernd, run_gathernd, NULL},
    {"ScatterElements", 3, 3, 1, 1, prepare_scatter, run_scatter_elements, NULL},
    {"Scatter", 3, 3, 1, 1, prepare_scatter, run_scatter_elements, NULL},
    {"ScatterND", 3, 3, 1, 1, prepare_scatter, run_scatternd, NULL},
    {"LRN", 1, 1, 1, 1, prepare_lrn, run_lrn, NULL},
    {"ReverseSequence", 2, 2, 1, 1, prepare_revseq, run_revseq, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};
