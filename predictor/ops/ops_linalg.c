/*
 * ops_linalg.c - matrix products: Gemm (alpha, beta, transA/B, C broadcast to
 * [M,N]) and MatMul (numpy semantics: 1-D operands promoted and dropped again,
 * batch dimensions broadcast). Float32 with float accumulation, in the loop
 * order that keeps the innermost access contiguous.
 */
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The kernels below work on eight floats at a time (ops_v8f; ops_gemm and
 * ops_gemm_bias also have an AVX2 clone picked at run time). The vectors never
 * change the order of a sum: every output is the same sequence of float
 * operations as the scalar definition given with each kernel, so results are
 * the same on every CPU and in every build (no FMA: AVX2 does not enable it).
 */

/*
 * Y = A B^T: Y[i][j] = dot(A row i, B row j) with eight running partial sums
 * s[u] over k = u mod 8, added as ((s0+s4)+(s1+s5))+((s2+s6)+(s3+s7)), then
 * the tail k one by one. The eight partial sums are the eight lanes.
 */
static inline __attribute__((always_inline)) float dot8(const float *a, const float *b, size_t n)
{
	ops_v8f s = {0};
	size_t k = 0;
	for (; k + 8 <= n; k += 8) {
		ops_v8f x, y;
		OPS_V8_LOAD(x, a + k);
		OPS_V8_LOAD(y, b + k);
		s += x * y;
	}
	float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
	for (; k < n; k++)
		t += a[k] * b[k];
	return t;
}

/* Two dot8 at once (rows b0 and b1 of B), sharing the loads of a. */
static inline __attribute__((always_inline)) void dot8x2(const float *a, const float *b0,
                                                         const float *b1, size_t n, float *o)
{
	ops_v8f s0 = {0}, s1 = {0};
	size_t k = 0;
	for (; k + 8 <= n; k += 8) {
		ops_v8f x, y0, y1;
		OPS_V8_LOAD(x, a + k);
		OPS_V8_LOAD(y0, b0 + k);
		OPS_V8_LOAD(y1, b1 + k);
		s0 += x * y0;
		s1 += x * y1;
	}
	float t0 = ((s0[0] + s0[4]) + (s0[1] + s0[5])) + ((s0[2] + s0[6]) + (s0[3] + s0[7]));
	float t1 = ((s1[0] + s1[4]) + (s1[1] + s1[5])) + ((s1[2] + s1[6]) + (s1[3] + s1[7]));
	for (; k < n; k++) {
		t0 += a[k] * b0[k];
		t1 += a[k] * b1[k];
	}
	o[0] = t0;
	o[1] = t1;
}

/*
 * Y = A B, rows i0..i0+R (R = 1..4) of Y, one output at a time:
 * y = 0; for each k block of four, y += a0 x0 + a1 x1 + a2 x2 + a3 x3 (left
 * to right); then y += a x for the remaining k. Eight columns per vector; the
 * columns past the last multiple of eight take the same steps in scalars.
 */
#define NN_ROWS_MAX 4
#if defined(__GNUC__) && !defined(__clang__)
#define OPS_UNROLL4 _Pragma("GCC unroll 4")
#else
#define OPS_UNROLL4
#endif
static inline __attribute__((always_inline)) void gemm_nn_rows(size_t R, size_t N, size_t K,
                                                               const float *A, const float *B,
                                                               const float *bias, float *Y)
{
	size_t j = 0;
	/* Sixteen columns (two vectors) per pass: each broadcast of A serves both. */
	for (; j + 16 <= N; j += 16) {
		ops_v8f c[NN_ROWS_MAX] = {{0}}, d[NN_ROWS_MAX] = {{0}};
		size_t k = 0;
		for (; k + 4 <= K; k += 4) {
			const float *b = B + k * N + j;
			ops_v8f x0, x1, x2, x3, y0, y1, y2, y3;
			OPS_V8_LOAD(x0, b);
			OPS_V8_LOAD(x1, b + N);
			OPS_V8_LOAD(x2, b + 2 * N);
			OPS_V8_LOAD(x3, b + 3 * N);
			OPS_V8_LOAD(y0, b + 8);
			OPS_V8_LOAD(y1, b + N + 8);
			OPS_V8_LOAD(y2, b + 2 * N + 8);
			OPS_V8_LOAD(y3, b + 3 * N + 8);
			OPS_UNROLL4
			for (size_t r = 0; r < R; r++) {
				const float *a = A + r * K + k;
				c[r] += a[0] * x0 + a[1] * x1 + a[2] * x2 + a[3] * x3;
				d[r] += a[0] * y0 + a[1] * y1 + a[2] * y2 + a[3] * y3;
			}
		}
		for (; k < K; k++) {
			ops_v8f x, y;
			OPS_V8_LOAD(x, B + k * N + j);
			OPS_V8_LOAD(y, B + k * N + j + 8);
			for (size_t r = 0; r < R; r++) {
				c[r] += A[r * K + k] * x;
				d[r] += A[r * K + k] * y;
			}
		}
		for (size_t r = 0; r < R; r++) {
			if (bias) {
				c[r] += bias[r];
				d[r] += bias[r];
			}
			OPS_V8_STORE(Y + r * N + j, c[r]);
			OPS_V8_STORE(Y + r * N + j + 8, d[r]);
		}
	}
	for (; j + 8 <= N; j += 8) {
		ops_v8f c[NN_ROWS_MAX] = {{0}};
		size_t k = 0;
		for (; k + 4 <= K; k += 4) {
			const float *b = B + k * N + j;
			ops_v8f x0, x1, x2, x3;
			OPS_V8_LOAD(x0, b);
			OPS_V8_LOAD(x1, b + N);
			OPS_V8_LOAD(x2, b + 2 * N);
			OPS_V8_LOAD(x3, b + 3 * N);
			OPS_UNROLL4
			for (size_t r = 0; r < R; r++) {
				const float *a = A + r * K + k;
				c[r] += a[0] * x0 + a[1] * x1 + a[2] * x2 + a[3] * x3;
			}
		}
		for (; k < K; k++) {
			ops_v8f x;
			OPS_V8_LOAD(x, B + k * N + j);
			for (size_t r = 0; r < R; r++)
				c[r] += A[r * K + k] * x;
		}
		for (size_t r = 0; r < R; r++) {
			if (bias)
				c[r] += bias[r];
			OPS_V8_STORE(Y + r * N + j, c[r]);
		}
	}
	for (; j < N; j++)
		for (size_t r = 0; r < R; r++) {
			const float *a = A + r * K;
			float y = 0.0f;
			size_t k = 0;
			for (; k + 4 <= K; k += 4)
				y += a[k] * B[k * N + j] + a[k + 1] * B[(k + 1) * N + j] +
				     a[k + 2] * B[(k + 2) * N + j] + a[k + 3] * B[(k + 3) * N + j];
			for (; k < K; k++)
				y += a[k] * B[k * N + j];
			Y[r * N + j] = bias ? y + bias[r] : y;
		}
}

/* Y = A B (+ bias[i] on row i) in blocks of four rows. */
static inline __attribute__((always_inline)) void
gemm_nn(size_t M, size_t N, size_t K, const float *A, const float *B, const float *bias, float *Y)
{
	size_t i = 0;
	/* Constant row counts, so each call unrolls and keeps c[] in registers. */
	for (; i + 4 <= M; i += 4)
		gemm_nn_rows(4, N, K, A + i * K, B, bias ? bias + i : NULL, Y + i * N);
	for (; i < M; i++)
		gemm_nn_rows(1, N, K, A + i * K, B, bias ? bias + i : NULL, Y + i * N);
}

OPS_SIMD_CLONES
void ops_gemm(int ta, int tb, size_t M, size_t N, size_t K, const float *A, const float *B,
              float *Y)
{
	if (!ta && tb) {
		for (size_t i = 0; i < M; i++) {
			size_t j = 0;
			for (; j + 2 <= N; j += 2)
				dot8x2(A + i * K, B + j * K, B + (j + 1) * K, K, Y + i * N + j);
			if (j < N)
				Y[i * N + j] = dot8(A + i * K, B + j * K, K);
		}
	} else if (!ta && !tb) {
		gemm_nn(M, N, K, A, B, NULL, Y);
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

OPS_SIMD_CLONES
void ops_gemm_bias(size_t M, size_t N, size_t K, const float *A, const float *B, const float *bias,
                   float *Y)
{
	gemm_nn(M, N, K, A, B, bias, Y);
}

/*
 * y[0..N) = a[0..K) Bt[K][N] for one row a: over k in order, y += a[k] *
 * Bt[k], 32 outputs (four vectors) at a time, then 8, then single outputs.
 */
OPS_SIMD_CLONES
static void gemv_t(size_t N, size_t K, const float *a, const float *bt, float *y)
{
	size_t j = 0;
	for (; j + 32 <= N; j += 32) {
		ops_v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
		const float *b = bt + j;
		for (size_t k = 0; k < K; k++, b += N) {
			float v = a[k];
			ops_v8f t;
			OPS_V8_LOAD(t, b);
			s0 += v * t;
			OPS_V8_LOAD(t, b + 8);
			s1 += v * t;
			OPS_V8_LOAD(t, b + 16);
			s2 += v * t;
			OPS_V8_LOAD(t, b + 24);
			s3 += v * t;
		}
		OPS_V8_STORE(y + j, s0);
		OPS_V8_STORE(y + j + 8, s1);
		OPS_V8_STORE(y + j + 16, s2);
		OPS_V8_STORE(y + j + 24, s3);
	}
	for (; j + 8 <= N; j += 8) {
		ops_v8f s0 = {0};
		const float *b = bt + j;
		for (size_t k = 0; k < K; k++, b += N) {
			ops_v8f t;
			OPS_V8_LOAD(t, b);
			s0 += a[k] * t;
		}
		OPS_V8_STORE(y + j, s0);
	}
	for (; j < N; j++) {
		float s = 0.0f;
		for (size_t k = 0; k < K; k++)
			s += a[k] * bt[k * N + j];
		y[j] = s;
	}
}

int ops_gemm_plan(struct ops_node *n, const struct tensor *b)
{
	n->gemm_bt = NULL;
	if (!b || b->dtype != TENSOR_FLOAT || b->ndim != 2 || !n->p.trans_b || n->p.trans_a ||
	    b->nelem == 0)
		return 0;
	size_t N = (size_t)b->dims[0], K = (size_t)b->dims[1];
	float *bt = malloc(b->nelem * sizeof(float));
	if (!bt)
		return -1;
	const float *bd = b->data;
	for (size_t j = 0; j < N; j++)
		for (size_t k = 0; k < K; k++)
			bt[k * N + j] = bd[j * K + k];
	n->gemm_bt = bt;
	return 0;
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
	if (ops_new_dense(out, TENSOR_FLOAT, 2, od, err, errlen))
		return -1;
	float *y = (*out)->data;
	if (n->gemm_bt && M == 1)
		gemv_t(N, K, a->data, n->gemm_bt, y);
	else if (n->gemm_bt)
		ops_gemm(0, 0, M, N, K, a->data, n->gemm_bt, y);
	else
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
