/*
 * ops_shape.c - operators that move or relabel data without arithmetic:
 * Identity, Dropout (inference), Flatten, Reshape (0 and -1, allowzero),
 * Transpose, Concat, Squeeze, Unsqueeze (axes as attribute before opset 13,
 * as input after), Shape (start/end), Gather, Cast. All but Cast work on any
 * dtype the runtime stores; they copy bytes.
 */
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int require_known(enum tensor_dtype t, const char *what, char *err, size_t errlen)
{
	if (tensor_dtype_size(t) == 0) {
		snprintf(err, errlen, "%s: dtype %s not supported", what, ops_dtype_name((int)t));
		return -1;
	}
	return 0;
}

static const enum tensor_dtype int_types[] = {TENSOR_INT64, TENSOR_INT32, 0};

/* Output with the shape given, data copied from x (same element count). */
static int copy_as(const struct tensor *x, int ndim, const int64_t *dims, struct tensor **out,
                   char *err, size_t errlen)
{
	if (ops_new(out, x->dtype, ndim, dims, err, errlen))
		return -1;
	memcpy((*out)->data, x->data, x->nelem * tensor_dtype_size(x->dtype));
	return 0;
}

/* Identity and Dropout: first input's type passes through. */
static int prepare_same(struct ops_node *n, const Onnx__NodeProto *np,
                        const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                        size_t errlen)
{
	if (require_known(in_types[0], "input", err, errlen))
		return -1;
	if (strcmp(n->op_type, "Dropout") == 0 && (n->n_out > 1 || n->n_in > 2)) {
		snprintf(err, errlen,
		         "mask output and training_mode not supported (inference only)");
		return -1;
	}
	out_types[0] = in_types[0];
	return 0;
}

static int run_identity(const struct ops_node *n, const struct tensor *const *in,
                        struct tensor **out, char *err, size_t errlen)
{
	return copy_as(in[0], in[0]->ndim, in[0]->dims, out, err, errlen);
}

/* Flatten: axis in [-r, r]. */
static int prepare_flatten(struct ops_node *n, const Onnx__NodeProto *np,
                           const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                           char *err, size_t errlen)
{
	if (require_known(in_types[0], "input", err, errlen) ||
	    ops_attr_int(np, "axis", 1, &n->p.axis, err, errlen))
		return -1;
	out_types[0] = in_types[0];
	return 0;
}

static int run_flatten(const struct ops_node *n, const struct tensor *const *in,
                       struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t axis = n->p.axis;
	if (axis < -(int64_t)x->ndim || axis > x->ndim) {
		snprintf(err, errlen, "axis %lld out of range for rank %d", (long long)axis,
		         x->ndim);
		return -1;
	}
	if (axis < 0)
		axis += x->ndim;
	int64_t od[2] = {(int64_t)ops_numel(x->dims, (int)axis),
	                 (int64_t)ops_numel(x->dims + axis, x->ndim - (int)axis)};
	return copy_as(x, 2, od, out, err, errlen);
}

/* Reshape */
static int prepare_reshape(struct ops_node *n, const Onnx__NodeProto *np,
                           const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                           char *err, size_t errlen)
{
	int64_t az;
	if (require_known(in_types[0], "data", err, errlen) ||
	    ops_require_dtype(in_types[1], "shape", int_types, err, errlen) ||
	    ops_attr_int(np, "allowzero", 0, &az, err, errlen))
		return -1;
	n->p.allowzero = az != 0;
	out_types[0] = in_types[0];
	return 0;
}

static int run_reshape(const struct ops_node *n, const struct tensor *const *in,
                       struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0], *s = in[1];
	char s1[96], s2[96];
	int64_t od[TENSOR_MAX_DIMS];
	if (s->ndim != 1 || s->nelem > TENSOR_MAX_DIMS) {
		snprintf(err, errlen, "shape must be 1-D with at most %d values", TENSOR_MAX_DIMS);
		return -1;
	}
	int nd = (int)s->nelem, infer = -1;
	size_t known = 1;
	for (int i = 0; i < nd; i++) {
		int64_t v = ops_get_int(s, (size_t)i);
		if (v == 0 && !n->p.allowzero) {
			if (i >= x->ndim)
				goto bad;
			v = x->dims[i];
		}
		if (v == -1) {
			if (infer >= 0)
				goto bad;
			infer = i;
			od[i] = 1;
			continue;
		}
		if (v < 0)
			goto bad;
		od[i] = v;
		known *= (size_t)v;
	}
	if (infer >= 0) {
		if (known == 0 || x->nelem % known)
			goto bad;
		od[infer] = (int64_t)(x->nelem / known);
	} else if (known != x->nelem) {
		goto bad;
	}
	return copy_as(x, nd, od, out, err, errlen);
bad:
	snprintf(err, errlen, "cannot reshape %s to %s",
	         ops_shape_str(x->dims, x->ndim, s1, sizeof(s1)),
	         ops_shape_str(
	             s->data,
	             s->dtype == TENSOR_INT64 && s->nelem <= TENSOR_MAX_DIMS ? (int)s->nelem : 0,
	             s2, sizeof(s2)));
	return -1;
}

/* Transpose */
static int prepare_transpose(struct ops_node *n, const Onnx__NodeProto *np,
                             const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                             char *err, size_t errlen)
{
	if (require_known(in_types[0], "input", err, errlen) ||
	    ops_attr_ints(np, "perm", n->p.perm, TENSOR_MAX_DIMS, &n->p.nperm, err, errlen))
		return -1;
	out_types[0] = in_types[0];
	return 0;
}

static int run_transpose(const struct ops_node *n, const struct tensor *const *in,
                         struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int r = x->ndim;
	int64_t perm[TENSOR_MAX_DIMS], od[TENSOR_MAX_DIMS] = {0};
	int seen[TENSOR_MAX_DIMS] = {0};
	if (n->p.nperm >= 0 && n->p.nperm != r) {
		snprintf(err, errlen, "perm has %d values for rank %d", n->p.nperm, r);
		return -1;
	}
	for (int i = 0; i < r; i++) {
		perm[i] = n->p.nperm >= 0 ? n->p.perm[i] : r - 1 - i;
		if (perm[i] < 0 || perm[i] >= r || seen[perm[i]]++) {
			snprintf(err, errlen, "perm is not a permutation of 0..%d", r - 1);
			return -1;
		}
		od[i] = x->dims[perm[i]];
	}
	if (ops_new(out, x->dtype, r, od, err, errlen))
		return -1;
	size_t xs[TENSOR_MAX_DIMS], st[TENSOR_MAX_DIMS], acc = 1;
	for (int i = r - 1; i >= 0; i--) {
		xs[i] = acc;
		acc *= (size_t)x->dims[i];
	}
	for (int i = 0; i < r; i++)
		st[i] = xs[perm[i]];
	size_t esz = tensor_dtype_size(x->dtype), total = x->nelem, off = 0;
	int64_t idx[TENSOR_MAX_DIMS] = {0};
	const char *src = x->data;
	char *dst = (*out)->data;
	for (size_t o = 0; o < total; o++) {
		memcpy(dst + o * esz, src + off * esz, esz);
		for (int d = r - 1; d >= 0; d--) {
			idx[d]++;
			off += st[d];
			if (idx[d] < od[d])
				break;
			off -= st[d] * (size_t)od[d];
			idx[d] = 0;
		}
	}
	return 0;
}

/* Concat */
static int prepare_concat(struct ops_node *n, const Onnx__NodeProto *np,
                          const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                          char *err, size_t errlen)
{
	if (!ops_attr(np, "axis")) {
		snprintf(err, errlen, "attribute 'axis' is required");
		return -1;
	}
	if (require_known(in_types[0], "input 0", err, errlen) ||
	    ops_attr_int(np, "axis", 0, &n->p.axis, err, errlen))
		return -1;
	for (size_t i = 1; i < n->n_in; i++)
		if (in_types[i] != in_types[0]) {
			snprintf(err, errlen, "input %zu: dtype differs from input 0", i);
			return -1;
		}
	out_types[0] = in_types[0];
	return 0;
}

static int run_concat(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                      char *err, size_t errlen)
{
	const struct tensor *x0 = in[0];
	int64_t axis, od[TENSOR_MAX_DIMS];
	if (ops_axis(n->p.axis, x0->ndim, &axis, err, errlen))
		return -1;
	memcpy(od, x0->dims, sizeof(od[0]) * (size_t)x0->ndim);
	od[axis] = 0;
	for (size_t i = 0; i < n->n_in; i++) {
		const struct tensor *x = in[i];
		int ok = x->ndim == x0->ndim;
		for (int d = 0; ok && d < x->ndim; d++)
			ok = d == axis || x->dims[d] == x0->dims[d];
		if (!ok) {
			char s1[96], s2[96];
			snprintf(
			    err, errlen, "input %zu %s does not match input 0 %s off axis %lld", i,
			    ops_shape_str(x->dims, x->ndim, s1, sizeof(s1)),
			    ops_shape_str(x0->dims, x0->ndim, s2, sizeof(s2)), (long long)axis);
			return -1;
		}
		od[axis] += x->dims[axis];
	}
	if (ops_new(out, x0->dtype, x0->ndim, od, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size(x0->dtype);
	size_t outer = ops_numel(od, (int)axis);
	size_t inner = ops_numel(od + axis + 1, x0->ndim - (int)axis - 1) * esz;
	size_t orow = (size_t)od[axis] * inner;
	char *dst = (*out)->data;
	size_t at = 0;
	for (size_t i = 0; i < n->n_in; i++) {
		size_t row = (size_t)in[i]->dims[axis] * inner;
		for (size_t o = 0; o < outer; o++)
			memcpy(dst + o * orow + at, (const char *)in[i]->data + o * row, row);
		at += row;
	}
	return 0;
}

/* Squeeze and Unsqueeze: axes from the attribute (opset < 13) or input 1. */
static int prepare_squeeze(struct ops_node *n, const Onnx__NodeProto *np,
                           const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                           char *err, size_t errlen)
{
	if (require_known(in_types[0], "data", err, errlen) ||
	    ops_attr_ints(np, "axes", n->p.axes, TENSOR_MAX_DIMS, &n->p.naxes, err, errlen))
		return -1;
	if (n->n_in > 1 && in_types[1] != TENSOR_UNDEFINED &&
	    ops_require_dtype(in_types[1], "axes", int_types, err, errlen))
		return -1;
	if (strcmp(n->op_type, "Unsqueeze") == 0 && n->p.naxes < 0 &&
	    (n->n_in < 2 || in_types[1] == TENSOR_UNDEFINED)) {
		snprintf(err, errlen, "axes are required");
		return -1;
	}
	out_types[0] = in_types[0];
	return 0;
}

/* Reads the axes of a Squeeze/Unsqueeze/Reduce node; *naxes -1 if none given. */
static int get_axes(const struct ops_node *n, const struct tensor *const *in, int64_t *axes,
                    int *naxes, char *err, size_t errlen)
{
	*naxes = n->p.naxes;
	if (n->p.naxes >= 0) {
		memcpy(axes, n->p.axes, sizeof(axes[0]) * (size_t)n->p.naxes);
		return 0;
	}
	if (n->n_in < 2 || !in[1])
		return 0;
	if (in[1]->nelem > TENSOR_MAX_DIMS) {
		snprintf(err, errlen, "more than %d axes", TENSOR_MAX_DIMS);
		return -1;
	}
	*naxes = (int)in[1]->nelem;
	for (int i = 0; i < *naxes; i++)
		axes[i] = ops_get_int(in[1], (size_t)i);
	return 0;
}

static int run_squeeze(const struct ops_node *n, const struct tensor *const *in,
                       struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t axes[TENSOR_MAX_DIMS], od[TENSOR_MAX_DIMS];
	int naxes, drop[TENSOR_MAX_DIMS] = {0}, nd = 0;
	if (get_axes(n, in, axes, &naxes, err, errlen))
		return -1;
	for (int i = 0; i < naxes; i++) {
		int64_t a;
		if (ops_axis(axes[i], x->ndim, &a, err, errlen))
			return -1;
		if (x->dims[a] != 1) {
			snprintf(err, errlen, "cannot squeeze axis %lld of size %lld", (long long)a,
			         (long long)x->dims[a]);
			return -1;
		}
		drop[a] = 1;
	}
	for (int d = 0; d < x->ndim; d++)
		if (!(naxes >= 0 ? drop[d] : x->dims[d] == 1))
			od[nd++] = x->dims[d];
	return copy_as(x, nd, od, out, err, errlen);
}

static int run_unsqueeze(const struct ops_node *n, const struct tensor *const *in,
                         struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t axes[TENSOR_MAX_DIMS], od[TENSOR_MAX_DIMS];
	int naxes, add[TENSOR_MAX_DIMS] = {0};
	if (get_axes(n, in, axes, &naxes, err, errlen))
		return -1;
	int r = x->ndim + (naxes > 0 ? naxes : 0);
	if (naxes < 0 || r > TENSOR_MAX_DIMS) {
		snprintf(err, errlen, "bad axes for rank %d", x->ndim);
		return -1;
	}
	for (int i = 0; i < naxes; i++) {
		int64_t a;
		if (ops_axis(axes[i], r, &a, err, errlen))
			return -1;
		if (add[a]++) {
			snprintf(err, errlen, "axis %lld repeated", (long long)a);
			return -1;
		}
	}
	for (int d = 0, s = 0; d < r; d++)
		od[d] = add[d] ? 1 : x->dims[s++];
	return copy_as(x, r, od, out, err, errlen);
}

/* Shape (start and end since opset 15) */
static int prepare_shape(struct ops_node *n, const Onnx__NodeProto *np,
                         const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                         size_t errlen)
{
	int64_t end;
	if (require_known(in_types[0], "data", err, errlen) ||
	    ops_attr_int(np, "start", 0, &n->p.axis, err, errlen) ||
	    ops_attr_int(np, "end", INT64_MAX, &end, err, errlen))
		return -1;
	n->p.group = end; /* reused as the end index */
	out_types[0] = TENSOR_INT64;
	return 0;
}

static int64_t clamp_index(int64_t v, int r)
{
	if (v < 0)
		v += r;
	return v < 0 ? 0 : (v > r ? r : v);
}

static int run_shape(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                     char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t st = clamp_index(n->p.axis, x->ndim), en = clamp_index(n->p.group, x->ndim);
	int64_t len = en > st ? en - st : 0;
	if (ops_new(out, TENSOR_INT64, 1, &len, err, errlen))
		return -1;
	memcpy((*out)->data, x->dims + st, sizeof(int64_t) * (size_t)len);
	return 0;
}

/* Gather */
static int prepare_gather(struct ops_node *n, const Onnx__NodeProto *np,
                          const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                          char *err, size_t errlen)
{
	if (require_known(in_types[0], "data", err, errlen) ||
	    ops_require_dtype(in_types[1], "indices", int_types, err, errlen) ||
	    ops_attr_int(np, "axis", 0, &n->p.axis, err, errlen))
		return -1;
	out_types[0] = in_types[0];
	return 0;
}

static int run_gather(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                      char *err, size_t errlen)
{
	const struct tensor *x = in[0], *ix = in[1];
	int64_t axis, od[TENSOR_MAX_DIMS];
	if (x->ndim == 0) {
		snprintf(err, errlen, "data must have rank >= 1");
		return -1;
	}
	if (ops_axis(n->p.axis, x->ndim, &axis, err, errlen))
		return -1;
	int r = x->ndim - 1 + ix->ndim;
	if (r > TENSOR_MAX_DIMS) {
		snprintf(err, errlen, "output rank %d above %d", r, TENSOR_MAX_DIMS);
		return -1;
	}
	int nd = 0;
	for (int d = 0; d < axis; d++)
		od[nd++] = x->dims[d];
	for (int d = 0; d < ix->ndim; d++)
		od[nd++] = ix->dims[d];
	for (int d = (int)axis + 1; d < x->ndim; d++)
		od[nd++] = x->dims[d];
	int64_t len = x->dims[axis];
	for (size_t i = 0; i < ix->nelem; i++) {
		int64_t v = ops_get_int(ix, i);
		if (v < -len || v >= len) {
			snprintf(err, errlen, "index %lld out of range for axis of size %lld",
			         (long long)v, (long long)len);
			return -1;
		}
	}
	if (ops_new(out, x->dtype, nd, od, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size(x->dtype);
	size_t outer = ops_numel(x->dims, (int)axis);
	size_t inner = ops_numel(x->dims + axis + 1, x->ndim - (int)axis - 1) * esz;
	char *dst = (*out)->data;
	const char *src = x->data;
	for (size_t o = 0; o < outer; o++)
		for (size_t i = 0; i < ix->nelem; i++) {
			int64_t v = ops_get_int(ix, i);
			if (v < 0)
				v += len;
			memcpy(dst, src + (o * (size_t)len + (size_t)v) * inner, inner);
			dst += inner;
		}
	return 0;
}

/*
 * Cast between FLOAT, DOUBLE, INT64, INT32, INT8, UINT8, BOOL, FLOAT16 and
 * BFLOAT16 (the 16-bit floats round to nearest even from the double value).
 */
static const enum tensor_dtype cast_types[] = {
    TENSOR_FLOAT, TENSOR_DOUBLE, TENSOR_INT64,   TENSOR_INT32,    TENSOR_INT8,
    TENSOR_UINT8, TENSOR_BOOL,   TENSOR_FLOAT16, TENSOR_BFLOAT16, 0};

static int prepare_cast(struct ops_node *n, const Onnx__NodeProto *np,
                        const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                        size_t errlen)
{
	if (!ops_attr(np, "to")) {
		snprintf(err, errlen, "attribute 'to' is required");
		return -1;
	}
	if (ops_attr_int(np, "to", 0, &n->p.to, err, errlen) ||
	    ops_require_dtype(in_types[0], "input", cast_types, err, errlen))
		return -1;
	if (n->p.to < 0 || n->p.to > 64 ||
	    ops_require_dtype((enum tensor_dtype)n->p.to, "to", cast_types, err, errlen))
		return -1;
	out_types[0] = (enum tensor_dtype)n->p.to;
	return 0;
}

static double load_num(const struct tensor *x, size_t i)
{
	switch (x->dtype) {
	case TENSOR_FLOAT:
		return ((const float *)x->data)[i];
	case TENSOR_DOUBLE:
		return ((const double *)x->data)[i];
	case TENSOR_INT32:
		return ((const int32_t *)x->data)[i];
	case TENSOR_INT8:
		return ((const int8_t *)x->data)[i];
	case TENSOR_UINT8:
	case TENSOR_BOOL:
		return ((const uint8_t *)x->data)[i];
	case TENSOR_FLOAT16:
		return tensor_f16_to_float(((const uint16_t *)x->data)[i]);
	case TENSOR_BFLOAT16:
		return tensor_bf16_to_float(((const uint16_t *)x->data)[i]);
	default:
		return 0;
	}
}

/* Float to integer without undefined behaviour: NaN -> 0, saturate out of range. */
static int64_t to_int(double v, double lo, double hi)
{
	if (isnan(v))
		return 0;
	if (v <= lo)
		return (int64_t)lo;
	if (v >= hi)
		return (int64_t)hi;
	return (int64_t)v;
}

static void store_num(struct tensor *y, size_t i, const struct tensor *x)
{
	if (x->dtype == TENSOR_INT64) { /* keep all 64 bits for integer targets */
		int64_t v = ((const int64_t *)x->data)[i];
		switch (y->dtype) {
		case TENSOR_INT64:
			((int64_t *)y->data)[i] = v;
			return;
		case TENSOR_INT32:
			((int32_t *)y->data)[i] = (int32_t)(uint32_t)(uint64_t)v;
			return;
		case TENSOR_INT8:
			((int8_t *)y->data)[i] = (int8_t)(uint8_t)(uint64_t)v;
			return;
		case TENSOR_UINT8:
			((uint8_t *)y->data)[i] = (uint8_t)(uint64_t)v;
			return;
		case TENSOR_BOOL:
			((uint8_t *)y->data)[i] = v != 0;
			return;
		case TENSOR_FLOAT:
			((float *)y->data)[i] = (float)v;
			return;
		case TENSOR_DOUBLE:
			((double *)y->data)[i] = (double)v;
			return;
		case TENSOR_FLOAT16:
			((uint16_t *)y->data)[i] = tensor_f16_from_double((double)v);
			return;
		case TENSOR_BFLOAT16:
			((uint16_t *)y->data)[i] = tensor_bf16_from_double((double)v);
			return;
		default:
			return;
		}
	}
	double v = load_num(x, i);
	switch (y->dtype) {
	case TENSOR_FLOAT:
		((float *)y->data)[i] = (float)v;
		break;
	case TENSOR_DOUBLE:
		((double *)y->data)[i] = v;
		break;
	case TENSOR_INT64:
		((int64_t *)y->data)[i] = to_int(v, -9223372036854775808.0, 9223372036854774784.0);
		break;
	case TENSOR_INT32:
		((int32_t *)y->data)[i] = (int32_t)to_int(v, INT32_MIN, INT32_MAX);
		break;
	case TENSOR_INT8:
		((int8_t *)y->data)[i] = (int8_t)to_int(v, INT8_MIN, INT8_MAX);
		break;
	case TENSOR_UINT8:
		((uint8_t *)y->data)[i] = (uint8_t)to_int(v, 0, UINT8_MAX);
		break;
	case TENSOR_BOOL:
		((uint8_t *)y->data)[i] = v != 0;
		break;
	case TENSOR_FLOAT16:
		((uint16_t *)y->data)[i] = tensor_f16_from_double(v);
		break;
	case TENSOR_BFLOAT16:
		((uint16_t *)y->data)[i] = tensor_bf16_from_double(v);
		break;
	default:
		break;
	}
}

static int run_cast(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                    char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	if (ops_new(out, (enum tensor_dtype)n->p.to, x->ndim, x->dims, err, errlen))
		return -1;
	for (size_t i = 0; i < x->nelem; i++)
		store_num(*out, i, x);
	return 0;
}

const struct ops_kernel ops_shape_kernels[] = {
    {"Identity", 1, 1, 1, 1, prepare_same, run_identity, NULL},
    {"Dropout", 1, 3, 1, 2, prepare_same, run_identity, NULL},
    {"Flatten", 1, 1, 1, 1, prepare_flatten, run_flatten, NULL},
    {"Reshape", 2, 2, 1, 1, prepare_reshape, run_reshape, NULL},
    {"Transpose", 1, 1, 1, 1, prepare_transpose, run_transpose, NULL},
    {"Concat", 1, -1, 1, 1, prepare_concat, run_concat, NULL},
    {"Squeeze", 1, 2, 1, 1, prepare_squeeze, run_squeeze, NULL},
    {"Unsqueeze", 1, 2, 1, 1, prepare_squeeze, run_unsqueeze, NULL},
    {"Shape", 1, 1, 1, 1, prepare_shape, run_shape, NULL},
    {"Gather", 2, 2, 1, 1, prepare_gather, run_gather, NULL},
    {"Cast", 1, 1, 1, 1, prepare_cast, run_cast, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};
