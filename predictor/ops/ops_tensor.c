/*
 * ops_tensor.c - operators that build or rearrange tensors from shape
 * inputs: Expand, Slice (inputs since opset 10, attributes before),
 * ConstantOfShape, Range, Tile, Pad (constant, reflect, edge), Split, Size.
 * They copy elements of any stored dtype.
 */
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "onnx_proto.h"

static const enum tensor_dtype int_types[] = {TENSOR_INT64, TENSOR_INT32, 0};

static int require_known(enum tensor_dtype t, const char *what, char *err, size_t errlen)
{
	if (tensor_dtype_size(t) == 0) {
		snprintf(err, errlen, "%s: dtype %s not supported", what, ops_dtype_name((int)t));
		return -1;
	}
	return 0;
}

/* Reads a 1-D integer tensor of at most TENSOR_MAX_DIMS values. */
static int read_ints(const struct tensor *t, const char *what, int64_t *out, int *n, char *err,
                     size_t errlen)
{
	if (t->ndim > 1 || t->nelem > TENSOR_MAX_DIMS) {
		snprintf(err, errlen, "%s must be 1-D with at most %d values", what,
		         TENSOR_MAX_DIMS);
		return -1;
	}
	*n = (int)t->nelem;
	for (size_t i = 0; i < t->nelem; i++)
		out[i] = ops_get_int(t, i);
	return 0;
}

/* ---- Expand ---- */

static int prepare_expand(struct ops_node *n, const Onnx__NodeProto *np,
                          const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                          char *err, size_t errlen)
{
	if (require_known(in_types[0], "input", err, errlen) ||
	    ops_require_dtype(in_types[1], "shape", int_types, err, errlen))
		return -1;
	out_types[0] = in_types[0];
	return 0;
}

static void copy_row(const void *ctx, char *o, const char *const *in, const size_t *st, size_t len)
{
	size_t esz = *(const size_t *)ctx;
	if (st[0] == 1) {
		memcpy(o, in[0], len * esz);
		return;
	}
	for (size_t i = 0; i < len; i++)
		memcpy(o + i * esz, in[0], esz);
}

static int run_expand(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                      char *err, size_t errlen)
{
	int64_t shape[TENSOR_MAX_DIMS];
	int ns;
	struct ops_bcast b;
	size_t esz = tensor_dtype_size(in[0]->dtype);
	if (read_ints(in[1], "shape", shape, &ns, err, errlen) ||
	    ops_bcast_init(&b, in, 1, shape, ns, err, errlen) ||
	    ops_new(out, in[0]->dtype, b.ndim, b.dims, err, errlen))
		return -1;
	ops_bcast_run(&b, in, *out, copy_row, &esz);
	return 0;
}

/* ---- Slice ---- */

static int prepare_slice(struct ops_node *n, const Onnx__NodeProto *np,
                         const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                         size_t errlen)
{
	if (require_known(in_types[0], "data", err, errlen))
		return -1;
	for (size_t i = 1; i < n->n_in; i++)
		if (in_types[i] != TENSOR_UNDEFINED &&
		    ops_require_dtype(in_types[i], "starts/ends/axes/steps", int_types, err,
		                      errlen))
			return -1;
	n->p.legacy = n->opset < 10;
	if (n->p.legacy) {
		int ns, ne;
		if (ops_attr_ints(np, "starts", n->p.pads, TENSOR_MAX_DIMS, &ns, err, errlen) ||
		    ops_attr_ints(np, "ends", n->p.pads + TENSOR_MAX_DIMS, TENSOR_MAX_DIMS, &ne,
		                  err, errlen) ||
		    ops_attr_ints(np, "axes", n->p.axes, TENSOR_MAX_DIMS, &n->p.naxes, err, errlen))
			return -1;
		if (ns < 0 || ns != ne || (n->p.naxes >= 0 && n->p.naxes != ns)) {
			snprintf(err, errlen, "starts, ends and axes must have the same length");
			return -1;
		}
		n->p.npads = ns;
	} else if (n->n_in < 3 || in_types[1] == TENSOR_UNDEFINED ||
	           in_types[2] == TENSOR_UNDEFINED) {
		snprintf(err, errlen, "inputs starts and ends are required");
		return -1;
	}
	out_types[0] = in_types[0];
	return 0;
}

static int run_slice(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                     char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t starts[TENSOR_MAX_DIMS], ends[TENSOR_MAX_DIMS], axes[TENSOR_MAX_DIMS],
	    steps[TENSOR_MAX_DIMS];
	int ns = 0, ne = 0, na = -1, nst = -1;
	if (n->p.legacy) {
		ns = ne = n->p.npads;
		memcpy(starts, n->p.pads, sizeof(int64_t) * (size_t)ns);
		memcpy(ends, n->p.pads + TENSOR_MAX_DIMS, sizeof(int64_t) * (size_t)ns);
		na = n->p.naxes;
		if (na > 0)
			memcpy(axes, n->p.axes, sizeof(int64_t) * (size_t)na);
	} else {
		if (read_ints(in[1], "starts", starts, &ns, err, errlen) ||
		    read_ints(in[2], "ends", ends, &ne, err, errlen) ||
		    (n->n_in > 3 && in[3] && read_ints(in[3], "axes", axes, &na, err, errlen)) ||
		    (n->n_in > 4 && in[4] && read_ints(in[4], "steps", steps, &nst, err, errlen)))
			return -1;
	}
	if (ns != ne || (na >= 0 && na != ns) || (nst >= 0 && nst != ns)) {
		snprintf(err, errlen, "starts, ends, axes and steps must have the same length");
		return -1;
	}
	int64_t st[TENSOR_MAX_DIMS], step[TENSOR_MAX_DIMS], od[TENSOR_MAX_DIMS];
	int seen[TENSOR_MAX_DIMS] = {0};
	for (int d = 0; d < x->ndim; d++) {
		st[d] = 0;
		step[d] = 1;
		od[d] = x->dims[d];
	}
	for (int i = 0; i < ns; i++) {
		int64_t a;
		if (ops_axis(na >= 0 ? axes[i] : i, x->ndim, &a, err, errlen))
			return -1;
		if (seen[a]++) {
			snprintf(err, errlen, "axis %lld repeated", (long long)a);
			return -1;
		}
		int64_t d = x->dims[a], s = starts[i], e = ends[i], k = nst >= 0 ? steps[i] : 1;
		if (k == 0) {
			snprintf(err, errlen, "step 0");
			return -1;
		}
		if (k > d)
			k = d + 1; /* same single element, no overflow below */
		if (k < -d - 1)
			k = -d - 1;
		if (s < 0)
			s = s < -d ? 0 : s + d;
		if (e < 0)
			e = e < -d ? -1 : e + d;
		if (k > 0) {
			s = s > d ? d : s;
			e = e < 0 ? 0 : (e > d ? d : e);
			od[a] = e > s ? (e - s - 1) / k + 1 : 0;
		} else {
			s = s > d - 1 ? d - 1 : s;
			e = e > d - 1 ? d - 1 : e;
			od[a] = s > e ? (s - e - 1) / (-k) + 1 : 0;
		}
		st[a] = s;
		step[a] = k;
	}
	if (ops_new(out, x->dtype, x->ndim, od, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size(x->dtype), xs[TENSOR_MAX_DIMS], acc = 1;
	for (int d = x->ndim - 1; d >= 0; d--) {
		xs[d] = acc;
		acc *= (size_t)x->dims[d];
	}
	int64_t idx[TENSOR_MAX_DIMS] = {0};
	char *y = (*out)->data;
	for (size_t o = 0; o < (*out)->nelem; o++) {
		size_t off = 0;
		for (int d = 0; d < x->ndim; d++)
			off += (size_t)(st[d] + idx[d] * step[d]) * xs[d];
		memcpy(y + o * esz, (const char *)x->data + off * esz, esz);
		ops_index_next(idx, od, x->ndim);
	}
	return 0;
}

/* ---- ConstantOfShape ---- */

static int prepare_const_of_shape(struct ops_node *n, const Onnx__NodeProto *np,
                                  const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                                  char *err, size_t errlen)
{
	if (ops_require_dtype(in_types[0], "input", int_types, err, errlen))
		return -1;
	const Onnx__AttributeProto *a = ops_attr(np, "value");
	memset(n->p.pads, 0, sizeof(n->p.pads)); /* the fill value's bytes */
	n->p.to = TENSOR_FLOAT;
	if (a) {
		if (a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR || !a->t) {
			snprintf(err, errlen, "attribute 'value' is not a tensor");
			return -1;
		}
		char why[OPS_ERR_MAX];
		struct tensor *t = onnx_proto_tensor(a->t, "value", why, sizeof(why));
		if (!t) {
			snprintf(err, errlen, "%s", why);
			return -1;
		}
		if (t->nelem != 1) {
			snprintf(err, errlen, "value must have one element");
			tensor_free(t);
			return -1;
		}
		n->p.to = t->dtype;
		memcpy(n->p.pads, t->data, tensor_dtype_size(t->dtype));
		tensor_free(t);
	}
	out_types[0] = (enum tensor_dtype)n->p.to;
	return 0;
}

static int run_const_of_shape(const struct ops_node *n, const struct tensor *const *in,
                              struct tensor **out, char *err, size_t errlen)
{
	int64_t shape[TENSOR_MAX_DIMS];
	int ns;
	if (read_ints(in[0], "shape", shape, &ns, err, errlen) ||
	    ops_new(out, (enum tensor_dtype)n->p.to, ns, shape, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size((*out)->dtype);
	for (size_t i = 0; i < (*out)->nelem; i++)
		memcpy((char *)(*out)->data + i * esz, n->p.pads, esz);
	return 0;
}

/* ---- Range ---- */

static int prepare_range(struct ops_node *n, const Onnx__NodeProto *np,
                         const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                         size_t errlen)
{
	static const enum tensor_dtype ok[] = {TENSOR_FLOAT, TENSOR_INT64, 0};
	if (ops_require_dtype(in_types[0], "start", ok, err, errlen))
		return -1;
	if (in_types[1] != in_types[0] || in_types[2] != in_types[0]) {
		snprintf(err, errlen, "start, limit and delta must have the same dtype");
		return -1;
	}
	out_types[0] = in_types[0];
	return 0;
}

static int run_range(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                     char *err, size_t errlen)
{
	for (int i = 0; i < 3; i++)
		if (in[i]->nelem != 1) {
			snprintf(err, errlen, "start, limit and delta must be scalars");
			return -1;
		}
	int isf = in[0]->dtype == TENSOR_FLOAT;
	double s = isf ? *(const float *)in[0]->data : (double)*(const int64_t *)in[0]->data;
	double l = isf ? *(const float *)in[1]->data : (double)*(const int64_t *)in[1]->data;
	double d = isf ? *(const float *)in[2]->data : (double)*(const int64_t *)in[2]->data;
	double cnt = d != 0 ? ceil((l - s) / d) : NAN;
	if (!(cnt < 1e9)) {
		snprintf(err, errlen, "bad range (delta 0 or too many elements)");
		return -1;
	}
	int64_t nn = cnt > 0 ? (int64_t)cnt : 0;
	if (ops_new(out, in[0]->dtype, 1, &nn, err, errlen))
		return -1;
	uint64_t is = isf ? 0 : (uint64_t) * (const int64_t *)in[0]->data;
	uint64_t id = isf ? 0 : (uint64_t) * (const int64_t *)in[2]->data;
	float fs = isf ? *(const float *)in[0]->data : 0,
	      fd = isf ? *(const float *)in[2]->data : 0;
	for (int64_t i = 0; i < nn; i++) {
		if (isf)
			((float *)(*out)->data)[i] = fs + (float)i * fd;
		else /* wraps instead of overflowing */
			((int64_t *)(*out)->data)[i] = (int64_t)(is + (uint64_t)i * id);
	}
	return 0;
}

/* ---- Tile ---- */

static int prepare_tile(struct ops_node *n, const Onnx__NodeProto *np,
                        const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                        size_t errlen)
{
	if (require_known(in_types[0], "input", err, errlen) ||
	    ops_require_dtype(in_types[1], "repeats", int_types, err, errlen))
		return -1;
	out_types[0] = in_types[0];
	return 0;
}

static int run_tile(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                    char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t rep[TENSOR_MAX_DIMS], od[TENSOR_MAX_DIMS] = {0};
	int nr;
	if (read_ints(in[1], "repeats", rep, &nr, err, errlen))
		return -1;
	if (nr != x->ndim) {
		snprintf(err, errlen, "repeats has %d values for rank %d", nr, x->ndim);
		return -1;
	}
	for (int d = 0; d < x->ndim; d++) {
		if (rep[d] < 0 || (x->dims[d] && rep[d] > INT32_MAX)) {
			snprintf(err, errlen, "bad repeat %lld", (long long)rep[d]);
			return -1;
		}
		od[d] = x->dims[d] * rep[d];
	}
	if (ops_new(out, x->dtype, x->ndim, od, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size(x->dtype), xs[TENSOR_MAX_DIMS], acc = 1;
	for (int d = x->ndim - 1; d >= 0; d--) {
		xs[d] = acc;
		acc *= (size_t)x->dims[d];
	}
	int64_t idx[TENSOR_MAX_DIMS] = {0};
	for (size_t o = 0; o < (*out)->nelem; o++) {
		size_t off = 0;
		for (int d = 0; d < x->ndim; d++)
			off += (size_t)(idx[d] % x->dims[d]) * xs[d];
		memcpy((char *)(*out)->data + o * esz, (const char *)x->data + off * esz, esz);
		ops_index_next(idx, od, x->ndim);
	}
	return 0;
}

/* ---- Pad ---- */

enum pad_mode { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE };

static int prepare_pad(struct ops_node *n, const Onnx__NodeProto *np,
                       const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                       size_t errlen)
{
	static const enum tensor_dtype ok[] = {TENSOR_FLOAT, TENSOR_INT64, 0};
	char mode[16];
	if (ops_require_dtype(in_types[0], "data", ok, err, errlen) ||
	    ops_attr_string(np, "mode", "constant", mode, sizeof(mode), err, errlen))
		return -1;
	if (strcmp(mode, "constant") == 0)
		n->p.auto_pad = PAD_CONSTANT;
	else if (strcmp(mode, "reflect") == 0)
		n->p.auto_pad = PAD_REFLECT;
	else if (strcmp(mode, "edge") == 0)
		n->p.auto_pad = PAD_EDGE;
	else {
		snprintf(err, errlen, "mode=%s not supported", mode);
		return -1;
	}
	if (n->n_in > 3) {
		snprintf(err, errlen, "input 'axes' not supported");
		return -1;
	}
	n->p.legacy = n->opset < 11;
	if (n->p.legacy &&
	    (ops_attr_ints(np, "pads", n->p.pads, 2 * TENSOR_MAX_DIMS, &n->p.npads, err, errlen) ||
	     ops_attr_float(np, "value", 0.0f, &n->p.alpha, err, errlen)))
		return -1;
	if (!n->p.legacy && (n->n_in < 2 || in_types[1] == TENSOR_UNDEFINED)) {
		snprintf(err, errlen, "input 'pads' is required");
		return -1;
	}
	if (n->n_in > 2 && in_types[2] != TENSOR_UNDEFINED && in_types[2] != in_types[0]) {
		snprintf(err, errlen, "constant_value must have the dtype of data");
		return -1;
	}
	out_types[0] = in_types[0];
	return 0;
}

/* Source index for output index o along a dimension of size d padded by pb. */
static int64_t pad_src(int64_t o, int64_t pb, int64_t d, enum pad_mode mode)
{
	int64_t i = o - pb;
	if (i >= 0 && i < d)
		return i;
	if (mode == PAD_CONSTANT || d == 0)
		return -1;
	if (mode == PAD_EDGE || d == 1)
		return i < 0 ? 0 : d - 1;
	int64_t period = 2 * (d - 1);
	i %= period;
	if (i < 0)
		i += period;
	return i >= d ? period - i : i;
}

static int run_pad(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                   char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t pads[2 * TENSOR_MAX_DIMS], od[TENSOR_MAX_DIMS] = {0};
	int np_ = n->p.npads;
	if (n->p.legacy) {
		memcpy(pads, n->p.pads, sizeof(pads));
	} else {
		if (in[1]->nelem > 2 * TENSOR_MAX_DIMS) {
			snprintf(err, errlen, "too many pads");
			return -1;
		}
		np_ = (int)in[1]->nelem;
		for (int i = 0; i < np_; i++)
			pads[i] = ops_get_int(in[1], (size_t)i);
	}
	if (np_ != 2 * x->ndim) {
		snprintf(err, errlen, "%d pads for rank %d", np_, x->ndim);
		return -1;
	}
	for (int d = 0; d < x->ndim; d++) {
		int64_t pb = pads[d], pe = pads[x->ndim + d];
		int big = pb > INT32_MAX || pe > INT32_MAX || pb < -INT32_MAX || pe < -INT32_MAX;
		od[d] = big ? -1 : x->dims[d] + pb + pe;
		if (od[d] < 0) {
			snprintf(err, errlen, "bad pads for dimension %d", d);
			return -1;
		}
		if (n->p.auto_pad != PAD_CONSTANT && x->dims[d] == 0 && od[d] > 0) {
			snprintf(err, errlen, "cannot %s-pad an empty dimension",
			         n->p.auto_pad == PAD_EDGE ? "edge" : "reflect");
			return -1;
		}
	}
	if (ops_new(out, x->dtype, x->ndim, od, err, errlen))
		return -1;
	size_t esz = tensor_dtype_size(x->dtype), xs[TENSOR_MAX_DIMS], acc = 1;
	for (int d = x->ndim - 1; d >= 0; d--) {
		xs[d] = acc;
		acc *= (size_t)x->dims[d];
	}
	char cval[8] = {0};
	if (n->p.legacy) {
		float v = n->p.alpha;
		memcpy(cval, &v, sizeof(v));
	} else if (n->n_in > 2 && in[2] && in[2]->nelem == 1) {
		memcpy(cval, in[2]->data, esz);
	}
	int64_t idx[TENSOR_MAX_DIMS] = {0};
	for (size_t o = 0; o < (*out)->nelem; o++) {
		size_t off = 0;
		int inside = 1;
		for (int d = 0; d < x->ndim && inside; d++) {
			int64_t s =
			    pad_src(idx[d], pads[d], x->dims[d], (enum pad_mode)n->p.auto_pad);
			inside = s >= 0;
			off += inside ? (size_t)s * xs[d] : 0;
		}
		memcpy((char *)(*out)->data + o * esz,
		       inside ? (const char *)x->data + off * esz : cval, esz);
		ops_index_next(idx, od, x->ndim);
	}
	return 0;
}

/* ---- Split ---- */

static int prepare_split(struct ops_node *n, const Onnx__NodeProto *np,
                         const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                         size_t errlen)
{
	if (require_known(in_types[0], "input", err, errlen) ||
	    ops_attr_int(np, "axis", 0, &n->p.axis, err, errlen) ||
	    ops_attr_ints(np, "split", n->p.pads, 2 * TENSOR_MAX_DIMS, &n->p.npads, err, errlen))
		return -1;
	if (n->n_in > 1 && in_types[1] != TENSOR_UNDEFINED &&
	    ops_require_dtype(in_types[1], "split", int_types, err, errlen))
		return -1;
	for (size_t i = 0; i < n->n_out; i++)
		out_types[i] = in_types[0];
	return 0;
}

static int run_split(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                     char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t axis, sizes[2 * TENSOR_MAX_DIMS];
	int ns = n->p.npads;
	if (ops_axis(n->p.axis, x->ndim, &axis, err, errlen))
		return -1;
	if (ns > 0) {
		memcpy(sizes, n->p.pads, sizeof(int64_t) * (size_t)ns);
	} else if (n->n_in > 1 && in[1]) {
		if (in[1]->nelem > 2 * TENSOR_MAX_DIMS) {
			snprintf(err, errlen, "too many splits");
			return -1;
		}
		ns = (int)in[1]->nelem;
		for (int i = 0; i < ns; i++)
			sizes[i] = ops_get_int(in[1], (size_t)i);
	} else {
		int64_t d = x->dims[axis], k = (int64_t)n->n_out;
		ns = (int)k;
		for (int i = 0; i < ns; i++)
			sizes[i] = (d + k - 1) / k;
		sizes[ns - 1] = d - (d + k - 1) / k * (k - 1);
	}
	int64_t total = 0;
	for (int i = 0; i < ns; i++) {
		if (sizes[i] < 0 || sizes[i] > x->dims[axis]) {
			total = -1;
			break;
		}
		total += sizes[i];
	}
	if ((size_t)ns != n->n_out || total != x->dims[axis]) {
		snprintf(err, errlen,
		         "split sizes do not add up to dimension %lld (%lld) over %zu "
		         "outputs",
		         (long long)axis, (long long)x->dims[axis], n->n_out);
		return -1;
	}
	size_t esz = tensor_dtype_size(x->dtype);
	size_t outer = ops_numel(x->dims, (int)axis);
	size_t inner = ops_numel(x->dims + axis + 1, x->ndim - (int)axis - 1) * esz;
	size_t row = (size_t)x->dims[axis] * inner, at = 0;
	for (int i = 0; i < ns; i++) {
		int64_t od[TENSOR_MAX_DIMS];
		memcpy(od, x->dims, sizeof(od[0]) * (size_t)x->ndim);
		od[axis] = sizes[i];
		if (ops_new(&out[i], x->dtype, x->ndim, od, err, errlen))
			return -1;
		size_t len = (size_t)sizes[i] * inner;
		for (size_t o = 0; o < outer; o++)
			memcpy((char *)out[i]->data + o * len, (const char *)x->data + o * row + at,
			       len);
		at += len;
	}
	return 0;
}

/* ---- Size ---- */

static int prepare_size(struct ops_node *n, const Onnx__NodeProto *np,
                        const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                        size_t errlen)
{
	if (require_known(in_types[0], "data", err, errlen))
		return -1;
	out_types[0] = TENSOR_INT64;
	return 0;
}

static int run_size(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                    char *err, size_t errlen)
{
	if (ops_new(out, TENSOR_INT64, 0, NULL, err, errlen))
		return -1;
	*(int64_t *)(*out)->data = (int64_t)in[0]->nelem;
	return 0;
}

const struct ops_kernel ops_tensor_kernels[] = {
    {"Expand", 2, 2, 1, 1, prepare_expand, run_expand, NULL},
    {"Slice", 1, 5, 1, 1, prepare_slice, run_slice, NULL},
    {"ConstantOfShape", 1, 1, 1, 1, prepare_const_of_shape, run_const_of_shape, NULL},
    {"Range", 3, 3, 1, 1, prepare_range, run_range, NULL},
    {"Tile", 2, 2, 1, 1, prepare_tile, run_tile, NULL},
    {"Pad", 1, 4, 1, 1, prepare_pad, run_pad, NULL},
    {"Split", 1, 2, 1, 8, prepare_split, run_split, NULL},
    {"Size", 1, 1, 1, 1, prepare_size, run_size, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};
