/*
 * ops_linalg.c - matrix products: Gemm (alpha, beta, transA/B, C broadcast to
 * [M,N]) and MatMul (numpy semantics: 1-D operands promoted and dropped again,
 * batch dimensions broadcast). Float32 with float accumulation, in the loop
 * order that keeps the innermost access contiguous.
 */
#include "ops.h"

#include <stdio.h>
#include <string.h>

/*
 * Dot product with eight independent partial sums: a single running sum is
 * bound by the add latency; eight let the compiler use vector registers.
 */
static float dot(const float *a, const float *b, size_t n)
{
	float s[8] = {0};
	size_t k = 0;
	for (; k + 8 <= n; k += 8)
		for (int u = 0; u < 8; u++)
			s[u] += a[k + u] * b[k + u];
	float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
	for (; k < n; k++)
		t += a[k] * b[k];
	return t;
}

/* y += a * x; unrolled so the compiler vectorizes it at -O2. */
static void axpy(float *restrict y, const float *restrict x, float a, size_t n)
{
	size_t j = 0;
	for (; j + 8 <= n; j += 8)
		for (int u = 0; u < 8; u++)
			y[j + u] += a * x[j + u];
	for (; j < n; j++)
		y[j] += a * x[j];
}

/* y += a[0] x[0] + a[1] x[1] + a[2] x[2] + a[3] x[3] (rows of x ld apart): y is read once per four
 * rows. */
static void axpy4(float *restrict y, const float *restrict x, size_t ld, const float *a)
{
	const float *restrict x0 = x, *restrict x1 = x + ld, *restrict x2 = x + 2 * ld,
	                      *restrict x3 = x + 3 * ld;
	float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
	size_t j = 0;
	for (; j + 8 <= ld; j += 8)
		for (int u = 0; u < 8; u++)
			y[j + u] +=
			    a0 * x0[j + u] + a1 * x1[j + u] + a2 * x2[j + u] + a3 * x3[j + u];
	for (; j < ld; j++)
		y[j] += a0 * x0[j] + a1 * x1[j] + a2 * x2[j] + a3 * x3[j];
}

void ops_gemm(int ta, int tb, size_t M, size_t N, size_t K, const float *A, const float *B,
              float *Y)
{
	if (!ta && tb) {
		for (size_t i = 0; i < M; i++) {
			const float *a = A + i * K;
			for (size_t j = 0; j < N; j++) {
				Y[i * N + j] = dot(a, B + j * K, K);
			}
		}
	} else if (!ta && !tb) {
		for (size_t i = 0; i < M; i++) {
			float *y = Y + i * N;
			memset(y, 0, N * sizeof(*y));
			const float *a = A + i * K;
			size_t k = 0;
			for (; k + 4 <= K; k += 4)
				axpy4(y, B + k * N, N, a + k);
			for (; k < K; k++)
				axpy(y, B + k * N, a[k], N);
		}
	} else {
		for (size_t i = 0; i < M; i++)
			for (size_t j = 0; j < N; j++) {
				float s = 0.0f;
				for (size_t k = 0; k < K; k++)
					s += A[ta ? k * M + i : i * K + k] *
					     B[tb ? j * K + k : k * N + j];
				Y[i * N + j] = s;
			}
	}
}

static const enum tensor_dtype float_only[] = {TENSOR_FLOAT, 0};

static int prepare_gemm(struct ops_node *n, const Onnx__NodeProto *np,
                        const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                        size_t errlen)
{
	int64_t ta, tb;
	for (size_t i = 0; i < n->n_in; i++)
		if (in_types[i] != TENSOR_UNDEFINED &&
		    ops_require_dtype(in_types[i], "input", float_only, err, errlen))
			return -1;
	if (ops_attr_float(np, "alpha", 1.0f, &n->p.alpha, err, errlen) ||
	    ops_attr_float(np, "beta", 1.0f, &n->p.beta, err, errlen) ||
	    ops_attr_int(np, "transA", 0, &ta, err, errlen) ||
	    ops_attr_int(np, "transB", 0, &tb, err, errlen))
		return -1;
	if (ops_attr(np, "broadcast")) {
		snprintf(err, errlen, "attribute 'broadcast' (opset < 7) not supported");
		return -1;
	}
	n->p.trans_a = ta != 0;
	n->p.trans_b = tb != 0;
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

static int run_gemm(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                    char *err, size_t errlen)
{
	const struct tensor *a = in[0], *b = in[1], *c = n->n_in > 2 ? in[2] : NULL;
	char sa[96], sb[96];
	if (a->ndim != 2 || b->ndim != 2) {
		snprintf(err, errlen, "A %s and B %s must be 2-D",
		         ops_shape_str(a->dims, a->ndim, sa, sizeof(sa)),
		         ops_shape_str(b->dims, b->ndim, sb, sizeof(sb)));
		return -1;
	}
	const struct ops_params *p = &n->p;
	size_t M = (size_t)a->dims[p->trans_a ? 1 : 0], K = (size_t)a->dims[p->trans_a ? 0 : 1];
	size_t KB = (size_t)b->dims[p->trans_b ? 1 : 0], N = (size_t)b->dims[p->trans_b ? 0 : 1];
	if (K != KB) {
		snprintf(err, errlen, "A %s and B %s do not multiply (transA=%d, transB=%d)",
		         ops_shape_str(a->dims, a->ndim, sa, sizeof(sa)),
		         ops_shape_str(b->dims, b->ndim, sb, sizeof(sb)), p->trans_a, p->trans_b);
		return -1;
	}
	size_t cm = 1, cn = 1;
	if (c) {
		if (c->ndim > 2 || (c->ndim == 2 && c->dims[0] != 1 && (size_t)c->dims[0] != M) ||
		    (c->ndim >= 1 && c->dims[c->ndim - 1] != 1 &&
		     (size_t)c->dims[c->ndim - 1] != N)) {
			snprintf(err, errlen, "C %s does not broadcast to [%zu,%zu]",
			         ops_shape_str(c->dims, c->ndim, sa, sizeof(sa)), M, N);
			return -1;
		}
		cn = c->ndim >= 1 ? (size_t)c->dims[c->ndim - 1] : 1;
		cm = c->ndim == 2 ? (size_t)c->dims[0] : 1;
	}
	int64_t od[2] = {(int64_t)M, (int64_t)N};
	if (ops_new(out, TENSOR_FLOAT, 2, od, err, errlen))
		return -1;
	float *y = (*out)->data;
	ops_gemm(p->trans_a, p->trans_b, M, N, K, a->data, b->data, y);
	const float *cd = c ? c->data : NULL;
	for (size_t i = 0; i < M; i++)
		for (size_t j = 0; j < N; j++) {
			float v = p->alpha == 1.0f ? y[i * N + j] : p->alpha * y[i * N + j];
			if (cd)
				v += p->beta * cd[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
			y[i * N + j] = v;
		}
	return 0;
}

static int prepare_matmul(struct ops_node *n, const Onnx__NodeProto *np,
                          const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                          char *err, size_t errlen)
{
	if (ops_require_dtype(in_types[0], "A", float_only, err, errlen) ||
	    ops_require_dtype(in_types[1], "B", float_only, err, errlen))
		return -1;
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

static int run_matmul(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                      char *err, size_t errlen)
{
	const struct tensor *a = in[0], *b = in[1];
	char sa[96], sb[96];
	if (a->ndim < 1 || b->ndim < 1)
		goto bad;
	/* Promote 1-D operands to matrices. */
	int an = a->ndim == 1 ? 2 : a->ndim, bn = b->ndim == 1 ? 2 : b->ndim;
	int64_t ad[TENSOR_MAX_DIMS], bd[TENSOR_MAX_DIMS];
	if (a->ndim == 1) {
		ad[0] = 1;
		ad[1] = a->dims[0];
	} else {
		memcpy(ad, a->dims, sizeof(ad[0]) * (size_t)an);
	}
	if (b->ndim == 1) {
		bd[0] = b->dims[0];
		bd[1] = 1;
	} else {
		memcpy(bd, b->dims, sizeof(bd[0]) * (size_t)bn);
	}
	size_t M = (size_t)ad[an - 2], K = (size_t)ad[an - 1], N = (size_t)bd[bn - 1];
	if ((size_t)bd[bn - 2] != K)
		goto bad;
	/* Broadcast the batch dimensions. */
	int nb = (an > bn ? an : bn) - 2;
	int64_t od[TENSOR_MAX_DIMS];
	size_t sa_[TENSOR_MAX_DIMS], sb_[TENSOR_MAX_DIMS];
	size_t sta = M * K, stb = K * N;
	for (int i = nb - 1; i >= 0; i--) {
		int ia = i - (nb - (an - 2)), ib = i - (nb - (bn - 2));
		int64_t da = ia >= 0 ? ad[ia] : 1, db = ib >= 0 ? bd[ib] : 1;
		if (da != db && da != 1 && db != 1)
			goto bad;
		od[i] = da == 1 ? db : da;
		sa_[i] = da == 1 ? 0 : sta;
		sb_[i] = db == 1 ? 0 : stb;
		sta *= (size_t)da;
		stb *= (size_t)db;
	}
	int on = nb;
	if (a->ndim != 1)
		od[on++] = (int64_t)M;
	if (b->ndim != 1)
		od[on++] = (int64_t)N;
	if (ops_new(out, TENSOR_FLOAT, on, od, err, errlen))
		return -1;
	size_t batches = ops_numel(od, nb);
	int64_t idx[TENSOR_MAX_DIMS] = {0};
	size_t oa = 0, ob = 0;
	float *y = (*out)->data;
	for (size_t bi = 0; bi < batches; bi++) {
		ops_gemm(0, 0, M, N, K, (const float *)a->data + oa, (const float *)b->data + ob,
		         y + bi * M * N);
		for (int d = nb - 1; d >= 0; d--) {
			idx[d]++;
			oa += sa_[d];
			ob += sb_[d];
			if (idx[d] < od[d])
				break;
			oa -= sa_[d] * (size_t)od[d];
			ob -= sb_[d] * (size_t)od[d];
			idx[d] = 0;
		}
	}
	return 0;
bad:
	snprintf(err, errlen, "A %s and B %s do not multiply",
	         ops_shape_str(a->dims, a->ndim, sa, sizeof(sa)),
	         ops_shape_str(b->dims, b->ndim, sb, sizeof(sb)));
	return -1;
}

const struct ops_kernel ops_linalg_kernels[] = {
    {"Gemm", 2, 3, 1, 1, prepare_gemm, run_gemm, NULL},
    {"MatMul", 2, 2, 1, 1, prepare_matmul, run_matmul, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};
