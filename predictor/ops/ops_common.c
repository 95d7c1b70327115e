/*
 * ops_common.c - the operator table and the helpers the kernels share:
 * attribute readers, numpy broadcasting, shape formatting and output
 * allocation.
 */
#include "ops.h"

#include <stdio.h>
#include <string.h>

const struct ops_kernel *ops_find(const char *op_type)
{
	static const struct ops_kernel *const tables[] = {
	    ops_extra_kernels, /* first: its Pow supersedes the float-only one */
	    ops_elementwise_kernels, ops_linalg_kernels, ops_nn_kernels,
	    ops_shape_kernels,       ops_reduce_kernels, ops_logic_kernels,
	    ops_tensor_kernels,      ops_misc_kernels,   ops_resize_kernels,
	};
	if (!op_type)
		return NULL;
	for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
		for (const struct ops_kernel *k = tables[t]; k->op_type; k++)
			if (strcmp(k->op_type, op_type) == 0)
				return k;
	return NULL;
}

const Onnx__AttributeProto *ops_attr(const Onnx__NodeProto *np, const char *name)
{
	for (size_t i = 0; i < np->n_attribute; i++)
		if (np->attribute[i]->name && strcmp(np->attribute[i]->name, name) == 0)
			return np->attribute[i];
	return NULL;
}

static int wrong_type(const char *name, const char *want, char *err, size_t errlen)
{
	snprintf(err, errlen, "attribute '%s' is not of type %s", name, want);
	return -1;
}

int ops_attr_int(const Onnx__NodeProto *np, const char *name, int64_t def, int64_t *out, char *err,
                 size_t errlen)
{
	const Onnx__AttributeProto *a = ops_attr(np, name);
	*out = def;
	if (!a)
		return 0;
	if (a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)
		return wrong_type(name, "INT", err, errlen);
	*out = a->i;
	return 0;
}

int ops_attr_float(const Onnx__NodeProto *np, const char *name, float def, float *out, char *err,
                   size_t errlen)
{
	const Onnx__AttributeProto *a = ops_attr(np, name);
	*out = def;
	if (!a)
		return 0;
	if (a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)
		return wrong_type(name, "FLOAT", err, errlen);
	*out = a->f;
	return 0;
}

int ops_attr_string(const Onnx__NodeProto *np, const char *name, const char *def, char *out,
                    size_t outlen, char *err, size_t errlen)
{
	const Onnx__AttributeProto *a = ops_attr(np, name);
	snprintf(out, outlen, "%s", def);
	if (!a)
		return 0;
	if (a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING)
		return wrong_type(name, "STRING", err, errlen);
	/* An empty string may come with data == NULL: never hand NULL to memchr/memcpy. */
	if (a->s.len >= outlen || (a->s.len && memchr(a->s.data, 0, a->s.len))) {
		snprintf(err, errlen, "attribute '%s': bad string value", name);
		return -1;
	}
	if (a->s.len)
		memcpy(out, a->s.data, a->s.len);
	out[a->s.len] = 0;
	return 0;
}

int ops_attr_ints(const Onnx__NodeProto *np, const char *name, int64_t *out, int max, int *n,
                  char *err, size_t errlen)
{
	const Onnx__AttributeProto *a = ops_attr(np, name);
	*n = -1;
	if (!a)
		return 0;
	if (a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS)
		return wrong_type(name, "INTS", err, errlen);
	if (a->n_ints > (size_t)max) {
		snprintf(err, errlen, "attribute '%s' has %zu values, at most %d supported", name,
		         a->n_ints, max);
		return -1;
	}
	if (a->n_ints)
		memcpy(out, a->ints, a->n_ints * sizeof(out[0]));
	*n = (int)a->n_ints;
	return 0;
}

const char *ops_shape_str(const int64_t *dims, int ndim, char *buf, size_t len)
{
	size_t off = 0;
	int w = snprintf(buf, len, "[");
	off = w > 0 ? (size_t)w : 0;
	for (int i = 0; i < ndim && off < len; i++) {
		w = snprintf(buf + off, len - off, "%s%lld", i ? "," : "", (long long)dims[i]);
		off += w > 0 ? (size_t)w : 0;
	}
	if (off < len)
		snprintf(buf + off, len - off, "]");
	return buf;
}

int ops_axis(int64_t axis, int rank, int64_t *out, char *err, size_t errlen)
{
	if (axis < -(int64_t)rank || axis >= rank) {
		snprintf(err, errlen, "axis %lld out of range for rank %d", (long long)axis, rank);
		return -1;
	}
	*out = axis < 0 ? axis + rank : axis;
	return 0;
}

int ops_broadcast_shape(const struct tensor *a, const struct tensor *b, int64_t *out, int *ndim,
                        char *err, size_t errlen)
{
	int n = a->ndim > b->ndim ? a->ndim : b->ndim;
	for (int i = 0; i < n; i++) {
		int ia = i - (n - a->ndim), ib = i - (n - b->ndim);
		int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
		if (da != db && da != 1 && db != 1) {
			char sa[96], sb[96];
			snprintf(err, errlen, "shapes %s and %s do not broadcast",
			         ops_shape_str(a->dims, a->ndim, sa, sizeof(sa)),
			         ops_shape_str(b->dims, b->ndim, sb, sizeof(sb)));
			return -1;
		}
		out[i] = da == 1 ? db : da;
	}
	*ndim = n;
	return 0;
}

static size_t tensor_limit = OPS_TENSOR_MAX_BYTES;

void ops_set_tensor_limit(size_t bytes)
{
	tensor_limit = bytes && bytes < OPS_TENSOR_MAX_BYTES ? bytes : OPS_TENSOR_MAX_BYTES;
}

static int ops_alloc(struct tensor **out, enum tensor_dtype dtype, int ndim, const int64_t *dims,
                     int zero, char *err, size_t errlen)
{
	size_t bytes = tensor_dtype_size(dtype);
	for (int i = 0; i < ndim; i++) {
		if (dims[i] < 0 || (dims[i] > 0 && bytes > tensor_limit / (size_t)dims[i])) {
			char s[128];
			snprintf(err, errlen, "a tensor of shape %s exceeds the limit of %zu bytes",
			         ops_shape_str(dims, ndim, s, sizeof(s)), tensor_limit);
			*out = NULL;
			return -1;
		}
		bytes *= (size_t)dims[i];
	}
	*out =
	    zero ? tensor_new(NULL, dtype, ndim, dims) : tensor_new_uninit(NULL, dtype, ndim, dims);
	if (!*out) {
		char s[128];
		snprintf(err, errlen, "cannot allocate a tensor of shape %s",
		         ops_shape_str(dims, ndim, s, sizeof(s)));
		return -1;
	}
	return 0;
}

int ops_new(struct tensor **out, enum tensor_dtype dtype, int ndim, const int64_t *dims, char *err,
            size_t errlen)
{
	return ops_alloc(out, dtype, ndim, dims, 1, err, errlen);
}

int ops_new_dense(struct tensor **out, enum tensor_dtype dtype, int ndim, const int64_t *dims,
                  char *err, size_t errlen)
{
	return ops_alloc(out, dtype, ndim, dims, 0, err, errlen);
}

size_t ops_numel(const int64_t *dims, int ndim)
{
	size_t n = 1;
	for (int i = 0; i < ndim; i++)
		n *= (size_t)dims[i];
	return n;
}

int64_t ops_get_int(const struct tensor *t, size_t i)
{
	if (t->dtype == TENSOR_INT32)
		return ((const int32_t *)t->data)[i];
	return ((const int64_t *)t->data)[i];
}

const char *ops_dtype_name(int onnx_type)
{
	static const char *const names[] = {
	    "UNDEFINED", "FLOAT",  "UINT8",     "INT8",       "UINT16",   "INT16",
	    "INT32",     "INT64",  "STRING",    "BOOL",       "FLOAT16",  "DOUBLE",
	    "UINT32",    "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16",
	};
	if (onnx_type < 0 || (size_t)onnx_type >= sizeof(names) / sizeof(names[0]))
		return "unknown type";
	return names[onnx_type];
}

int ops_require_dtype(enum tensor_dtype t, const char *what, const enum tensor_dtype *ok, char *err,
                      size_t errlen)
{
	for (; *ok; ok++)
		if (*ok == t)
			return 0;
	snprintf(err, errlen, "%s: dtype %s not supported", what, ops_dtype_name((int)t));
	return -1;
}

int ops_bcast_init(struct ops_bcast *b, const struct tensor *const *t, size_t n,
                   const int64_t *extra, int extra_ndim, char *err, size_t errlen)
{
	int nd = extra_ndim;
	for (size_t k = 0; k < n; k++)
		if (t[k]->ndim > nd)
			nd = t[k]->ndim;
	b->ndim = nd;
	b->n = n;
	for (int i = 0; i < nd; i++) {
		int ie = i - (nd - extra_ndim);
		int64_t d = ie >= 0 ? extra[ie] : 1;
		for (size_t k = 0; k < n; k++) {
			int ik = i - (nd - t[k]->ndim);
			int64_t dk = ik >= 0 ? t[k]->dims[ik] : 1;
			if (dk != d && dk != 1 && d != 1) {
				char s1[96];
				snprintf(err, errlen, "operand %zu of shape %s does not broadcast",
				         k, ops_shape_str(t[k]->dims, t[k]->ndim, s1, sizeof(s1)));
				return -1;
			}
			if (d == 1)
				d = dk;
		}
		if (d < 0) {
			snprintf(err, errlen, "negative dimension %lld", (long long)d);
			return -1;
		}
		b->dims[i] = d;
	}
	for (size_t k = 0; k < n; k++) {
		size_t acc = 1;
		for (int i = nd - 1; i >= 0; i--) {
			int ik = i - (nd - t[k]->ndim);
			int64_t dk = ik >= 0 ? t[k]->dims[ik] : 1;
			b->st[k][i] = dk == 1 ? 0 : acc;
			acc *= (size_t)dk;
		}
	}
	return 0;
}

void ops_bcast_run(const struct ops_bcast *b, const struct tensor *const *t, struct tensor *out,
                   void (*row)(const void *ctx, char *o, const char *const *in,
                               const size_t *stride, size_t len),
                   const void *ctx)
{
	size_t total = out->nelem, nd = (size_t)b->ndim;
	if (total == 0)
		return;
	size_t inner = nd ? (size_t)b->dims[nd - 1] : 1;
	size_t off[OPS_BCAST_MAX] = {0}, ist[OPS_BCAST_MAX], esz[OPS_BCAST_MAX];
	for (size_t k = 0; k < b->n; k++) {
		ist[k] = nd ? b->st[k][nd - 1] : 0;
		esz[k] = tensor_dtype_size(t[k]->dtype);
	}
	size_t oesz = tensor_dtype_size(out->dtype);
	int64_t idx[TENSOR_MAX_DIMS] = {0};
	const char *ptr[OPS_BCAST_MAX];
	for (size_t done = 0; done < total; done += inner) {
		for (size_t k = 0; k < b->n; k++)
			ptr[k] = (const char *)t[k]->data + off[k] * esz[k];
		row(ctx, (char *)out->data + done * oesz, ptr, ist, inner);
		for (int d = (int)nd - 2; d >= 0; d--) {
			idx[d]++;
			for (size_t k = 0; k < b->n; k++)
				off[k] += b->st[k][d];
			if (idx[d] < b->dims[d])
				break;
			for (size_t k = 0; k < b->n; k++)
				off[k] -= b->st[k][d] * (size_t)b->dims[d];
			idx[d] = 0;
		}
	}
}

int ops_index_next(int64_t *idx, const int64_t *dims, int ndim)
{
	for (int d = ndim - 1; d >= 0; d--) {
		if (++idx[d] < dims[d])
			return 1;
		idx[d] = 0;
	}
	return 0;
}
