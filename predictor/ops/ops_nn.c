/*
 * ops_nn.c - neural-network operators: Conv (pads, strides, dilations, group,
 * auto_pad), MaxPool (also on uint8, with the optional Indices output) and
 * AveragePool (ceil_mode, count_include_pad), GlobalAveragePool,
 * GlobalMaxPool, BatchNormalization (inference, and opset 14+ training mode),
 * Softmax, LogSoftmax and Hardmax (opset 13 per-axis semantics, and the
 * flatten-to-2-D semantics of the older opsets).
 *
 * Convolution and pooling handle 1, 2 or 3 spatial dimensions by padding the
 * spatial shape to three (extra dimensions of size 1, kernel 1), so one loop
 * nest serves all of them.
 */
#include "ops.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE__
#include <xmmintrin.h>
#endif

#define SP 3 /* spatial dimensions after padding */
/* Largest unfolded input (floats) for the matrix-product convolution. */
#define CONV_COL_MAX ((size_t)4 << 20)
/* Unfolded input plus padded copy (floats) small enough for the stack. */
#define CONV_STACK_FLOATS 8192

static const enum tensor_dtype float_only[] = {TENSOR_FLOAT, 0};

/* Geometry of one convolution or pooling window walk, padded to SP dims. */
struct window {
	int64_t in[SP], out[SP], k[SP], s[SP], d[SP], pb[SP], pe[SP];
};

static int parse_auto_pad(const Onnx__NodeProto *np, int *out, char *err, size_t errlen)
{
	char s[32];
	if (ops_attr_string(np, "auto_pad", "NOTSET", s, sizeof(s), err, errlen))
		return -1;
	if (strcmp(s, "NOTSET") == 0)
		*out = OPS_PAD_NOTSET;
	else if (strcmp(s, "VALID") == 0)
		*out = OPS_PAD_VALID;
	else if (strcmp(s, "SAME_UPPER") == 0)
		*out = OPS_PAD_SAME_UPPER;
	else if (strcmp(s, "SAME_LOWER") == 0)
		*out = OPS_PAD_SAME_LOWER;
	else {
		snprintf(err, errlen, "auto_pad=%s not supported", s);
		return -1;
	}
	return 0;
}

/* Reads the window attributes shared by Conv and the pools. */
static int prepare_window(struct ops_node *n, const Onnx__NodeProto *np, char *err, size_t errlen)
{
	struct ops_params *p = &n->p;
	int ns, nd;
	if (parse_auto_pad(np, &p->auto_pad, err, errlen) ||
	    ops_attr_ints(np, "kernel_shape", p->kernel, SP, &p->nk, err, errlen) ||
	    ops_attr_ints(np, "strides", p->strides, SP, &ns, err, errlen) ||
	    ops_attr_ints(np, "dilations", p->dilations, SP, &nd, err, errlen) ||
	    ops_attr_ints(np, "pads", p->pads, 2 * SP, &p->npads, err, errlen))
		return -1;
	if (p->nk < 0)
		p->nk = 0;
	if (p->npads < 0)
		p->npads = 0;
	for (int i = ns < 0 ? 0 : ns; i < SP; i++)
		p->strides[i] = 1;
	for (int i = nd < 0 ? 0 : nd; i < SP; i++)
		p->dilations[i] = 1;
	int rank = p->nk ? p->nk : (ns > 0 ? ns : (nd > 0 ? nd : p->npads / 2));
	if ((ns > 0 && ns != rank) || (nd > 0 && nd != rank) ||
	    (p->npads && p->npads != 2 * rank) || (p->nk && p->nk != rank)) {
		snprintf(err, errlen, "kernel_shape, strides, dilations and pads disagree on rank");
		return -1;
	}
	for (int i = 0; i < SP; i++)
		if (p->strides[i] < 1 || p->dilations[i] < 1 || (i < p->nk && p->kernel[i] < 1)) {
			snprintf(err, errlen, "strides, dilations and kernel_shape must be >= 1");
			return -1;
		}
	for (int i = 0; i < p->npads; i++)
		if (p->pads[i] < 0 || p->pads[i] > OPS_WINDOW_MAX) {
			snprintf(err, errlen, "pads must be in 0..%lld", (long long)OPS_WINDOW_MAX);
			return -1;
		}
	for (int i = 0; i < SP; i++)
		if (p->strides[i] > OPS_WINDOW_MAX || p->dilations[i] > OPS_WINDOW_MAX ||
		    (i < p->nk && p->kernel[i] > OPS_WINDOW_MAX)) {
			snprintf(err, errlen, "strides, dilations and kernel_shape must be <= %lld",
			         (long long)OPS_WINDOW_MAX);
			return -1;
		}
	return 0;
}

/* Fills w from x's spatial shape, the kernel and the node's attributes. */
static int window_setup(const struct ops_params *p, const struct tensor *x, const int64_t *kernel,
                        int ceil_mode, struct window *w, char *err, size_t errlen)
{
	int ns = x->ndim - 2;
	if (ns < 1 || ns > SP || (p->nk && p->nk != ns) || (p->npads && p->npads != 2 * ns)) {
		char s[96];
		snprintf(err, errlen,
		         "input %s: expected [N,C,D1..Dk] with k = 1..3 matching the "
		         "kernel",
		         ops_shape_str(x->dims, x->ndim, s, sizeof(s)));
		return -1;
	}
	for (int i = 0; i < SP; i++) {
		int on = i < ns;
		w->in[i] = on ? x->dims[2 + i] : 1;
		w->k[i] = on ? kernel[i] : 1;
		w->s[i] = on ? p->strides[i] : 1;
		w->d[i] = on ? p->dilations[i] : 1;
		w->pb[i] = on && p->npads ? p->pads[i] : 0;
		w->pe[i] = on && p->npads ? p->pads[ns + i] : 0;
		int64_t ext = w->d[i] * (w->k[i] - 1) + 1;
		if (p->auto_pad == OPS_PAD_VALID) {
			w->pb[i] = w->pe[i] = 0;
		} else if (p->auto_pad == OPS_PAD_SAME_UPPER || p->auto_pad == OPS_PAD_SAME_LOWER) {
			int64_t o = (w->in[i] + w->s[i] - 1) / w->s[i];
			int64_t total = (o - 1) * w->s[i] + ext - w->in[i];
			if (total < 0)
				total = 0;
			w->pb[i] =
			    p->auto_pad == OPS_PAD_SAME_UPPER ? total / 2 : total - total / 2;
			w->pe[i] = total - w->pb[i];
		}
		int64_t span = w->in[i] + w->pb[i] + w->pe[i] - ext;
		if (span < 0) {
			snprintf(err, errlen, "kernel larger than the padded input");
			return -1;
		}
		w->out[i] = (ceil_mode ? (span + w->s[i] - 1) / w->s[i] : span / w->s[i]) + 1;
	}
	return 0;
}

/*
 * The same window with the ns real spatial axes moved last (the size-1 axes
 * first): the flattened order of outputs and kernel taps does not change,
 * and the innermost loops then run along a real row.
 */
static struct window window_inner(const struct window *w, int ns)
{
	struct window r;
	int sh = SP - ns;
	for (int i = 0; i < SP; i++) {
		int from = i - sh, on = from >= 0;
		r.in[i] = on ? w->in[from] : 1;
		r.out[i] = on ? w->out[from] : 1;
		r.k[i] = on ? w->k[from] : 1;
		r.s[i] = on ? w->s[from] : 1;
		r.d[i] = on ? w->d[from] : 1;
		r.pb[i] = on ? w->pb[from] : 0;
		r.pe[i] = on ? w->pe[from] : 0;
	}
	return r;
}

/* First and one-past-last output index whose input index o*s - pb + k*d is inside [0, in). */
static void valid_range(int64_t in, int64_t out, int64_t s, int64_t pb, int64_t kd, int64_t *lo,
                        int64_t *hi)
{
	int64_t a = pb - kd, b = in - 1 + pb - kd;
	*lo = a <= 0 ? 0 : (a + s - 1) / s;
	*hi = b < 0 ? 0 : b / s + 1;
	if (*hi > out)
		*hi = out;
	if (*lo > *hi)
		*lo = *hi;
}

/*
 * Adds one input channel's contribution to an output plane: for each kernel
 * tap, a scaled copy of the input over the output positions where the tap
 * lands inside the input, so the inner loop has no bounds checks.
 */
static void conv_plane(const struct window *w, const float *xc, const float *wc, float *y)
{
	for (int64_t k0 = 0; k0 < w->k[0]; k0++) {
		int64_t lo0, hi0;
		valid_range(w->in[0], w->out[0], w->s[0], w->pb[0], k0 * w->d[0], &lo0, &hi0);
		for (int64_t k1 = 0; k1 < w->k[1]; k1++) {
			int64_t lo1, hi1;
			valid_range(w->in[1], w->out[1], w->s[1], w->pb[1], k1 * w->d[1], &lo1,
			            &hi1);
			for (int64_t k2 = 0; k2 < w->k[2]; k2++) {
				int64_t lo2, hi2;
				valid_range(w->in[2], w->out[2], w->s[2], w->pb[2], k2 * w->d[2],
				            &lo2, &hi2);
				float wv = wc[(k0 * w->k[1] + k1) * w->k[2] + k2];
				int64_t s2 = w->s[2], off2 = k2 * w->d[2] - w->pb[2];
				for (int64_t o0 = lo0; o0 < hi0; o0++) {
					int64_t i0 = o0 * w->s[0] - w->pb[0] + k0 * w->d[0];
					for (int64_t o1 = lo1; o1 < hi1; o1++) {
						int64_t i1 = o1 * w->s[1] - w->pb[1] + k1 * w->d[1];
						const float *xr =
						    xc + (i0 * w->in[1] + i1) * w->in[2];
						float *yr = y + (o0 * w->out[1] + o1) * w->out[2];
						if (s2 == 1) {
							const float *xs = xr + off2;
							for (int64_t o2 = lo2; o2 < hi2; o2++)
								yr[o2] += wv * xs[o2];
						} else {
							for (int64_t o2 = lo2; o2 < hi2; o2++)
								yr[o2] += wv * xr[o2 * s2 + off2];
						}
					}
				}
			}
		}
	}
}

/*
 * Unfolds cg input channels into col[cg * ksz][osz]: row (c, k) holds, for
 * every output position, the input value kernel tap k reads there (0 in the
 * padding). The convolution is then one matrix product W[mg, cg*ksz] * col.
 */
static void im2col(const struct window *w, const float *x, int64_t cg, float *col)
{
	size_t isz = (size_t)(w->in[0] * w->in[1] * w->in[2]);
	size_t osz = (size_t)(w->out[0] * w->out[1] * w->out[2]);
	for (int64_t c = 0; c < cg; c++)
		for (int64_t k0 = 0; k0 < w->k[0]; k0++)
			for (int64_t k1 = 0; k1 < w->k[1]; k1++)
				for (int64_t k2 = 0; k2 < w->k[2]; k2++) {
					int64_t lo[SP], hi[SP];
					int64_t kk[SP] = {k0, k1, k2};
					for (int i = 0; i < SP; i++)
						valid_range(w->in[i], w->out[i], w->s[i], w->pb[i],
						            kk[i] * w->d[i], &lo[i], &hi[i]);
					memset(col, 0, osz * sizeof(*col));
					const float *xc = x + (size_t)c * isz;
					for (int64_t o0 = lo[0]; o0 < hi[0]; o0++) {
						int64_t i0 = o0 * w->s[0] - w->pb[0] + k0 * w->d[0];
						for (int64_t o1 = lo[1]; o1 < hi[1]; o1++) {
							int64_t i1 =
							    o1 * w->s[1] - w->pb[1] + k1 * w->d[1];
							const float *xr =
							    xc + (i0 * w->in[1] + i1) * w->in[2];
							float *cr =
							    col + (o0 * w->out[1] + o1) * w->out[2];
							int64_t s2 = w->s[2],
							        off = k2 * w->d[2] - w->pb[2];
							if (s2 == 1)
								memcpy(cr + lo[2], xr + lo[2] + off,
								       (size_t)(hi[2] - lo[2]) *
								           sizeof(*cr));
							else
								for (int64_t o2 = lo[2]; o2 < hi[2];
								     o2++)
									cr[o2] = xr[o2 * s2 + off];
						}
					}
					col += osz;
				}
}

typedef float v4f __attribute__((vector_size(16)));

/* dst[0..n) = src[0..n), eight and four floats at a time (the runs are short). */
static inline __attribute__((always_inline)) void copy_run(float *dst, const float *src, int64_t n)
{
	int64_t j = 0;
	for (; j + 8 <= n; j += 8) {
		ops_v8f v;
		OPS_V8_LOAD(v, src + j);
		OPS_V8_STORE(dst + j, v);
	}
	for (; j + 4 <= n; j += 4) {
		v4f v;
		memcpy(&v, src + j, sizeof(v));
		memcpy(dst + j, &v, sizeof(v));
	}
	for (; j < n; j++)
		dst[j] = src[j];
}

/* Size of the zero-padded copy of cg channels that im2col_dense reads. */
static size_t padded_size(const struct window *w, int64_t cg)
{
	size_t n = (size_t)cg;
	for (int i = 0; i < SP; i++)
		n *= (size_t)(w->in[i] + w->pb[i] + w->pe[i]);
	return n;
}

/*
 * im2col for strides and dilations of 1 (window from window_inner): copies
 * the cg channels into pad with their zero padding around them (padded_size
 * floats), after which every row of col is a sequence of plain runs of
 * w->out[2] floats. Same col as im2col.
 */
/*
 * The unfolding loop of im2col_dense, for runs of n floats; inlined with n
 * constant where the caller knows it, so that each run is one or two moves.
 * Rows of col are (c, k0, k1, k2); within a row, runs (o0, o1) in order.
 */
static inline __attribute__((always_inline)) void unfold_runs(const struct window *w,
                                                              const float *pad, int64_t cg,
                                                              int64_t P0, int64_t P1, int64_t P2,
                                                              int64_t n, float *col)
{
	for (int64_t c = 0; c < cg; c++)
		for (int64_t k0 = 0; k0 < w->k[0]; k0++)
			for (int64_t k1 = 0; k1 < w->k[1]; k1++)
				for (int64_t k2 = 0; k2 < w->k[2]; k2++) {
					const float *plane =
					    pad + ((c * P0 + k0) * P1 + k1) * P2 + k2;
					for (int64_t o0 = 0; o0 < w->out[0];
					     o0++, plane += P1 * P2) {
						const float *src = plane;
						for (int64_t o1 = 0; o1 < w->out[1];
						     o1++, src += P2, col += n)
							copy_run(col, src, n);
					}
				}
}

static void im2col_dense(const struct window *w, const float *x, int64_t cg, float *pad, float *col)
{
	int64_t P0 = w->in[0] + w->pb[0] + w->pe[0], P1 = w->in[1] + w->pb[1] + w->pe[1],
	        P2 = w->in[2] + w->pb[2] + w->pe[2];
	memset(pad, 0, padded_size(w, cg) * sizeof(*pad));
	for (int64_t c = 0; c < cg; c++)
		for (int64_t i0 = 0; i0 < w->in[0]; i0++)
			for (int64_t i1 = 0; i1 < w->in[1]; i1++)
				copy_run(
				    pad + ((c * P0 + i0 + w->pb[0]) * P1 + i1 + w->pb[1]) * P2 +
				        w->pb[2],
				    x + ((c * w->in[0] + i0) * w->in[1] + i1) * w->in[2], w->in[2]);
	if (w->out[2] == 4)
		unfold_runs(w, pad, cg, P0, P1, P2, 4, col);
	else if (w->out[2] == 8)
		unfold_runs(w, pad, cg, P0, P1, P2, 8, col);
	else
		unfold_runs(w, pad, cg, P0, P1, P2, w->out[2], col);
}

/* ---- Conv, direct (planned at load; see ops.h) ---- */

#define CONV_DIRECT_M_MAX 4096 /* output channels */
#define CONV_DIRECT_K_MAX 16   /* kernel rows and columns */
#if defined(__GNUC__) && !defined(__clang__)
#define CONV_UNROLL _Pragma("GCC unroll 16")
#else
#define CONV_UNROLL
#endif

struct ops_conv_plan {
	float *w; /* [C][KH][KW][M] */
	int64_t C, M, KH, KW;
	int relu;             /* Relu fused after */
	int pool;             /* MaxPool fused after (after the Relu) */
	int64_t pk[2], ps[2]; /* its window and strides; no pads, dilation 1, floor */
};

int ops_conv_plan(struct ops_node *n, const struct tensor *w)
{
	const struct ops_params *p = &n->p;
	n->conv = NULL;
	if (!w || w->dtype != TENSOR_FLOAT || w->ndim != 4 || p->group != 1)
		return 0;
	for (int i = 0; i < 2; i++)
		if (p->strides[i] != 1 || p->dilations[i] != 1)
			return 0;
	int64_t M = w->dims[0], C = w->dims[1], KH = w->dims[2], KW = w->dims[3];
	if (M < 8 || M % 8 || M > CONV_DIRECT_M_MAX || C < 1 || C > OPS_WINDOW_MAX || KH < 1 ||
	    KW < 1 || KH > CONV_DIRECT_K_MAX || KW > CONV_DIRECT_K_MAX)
		return 0;
	if (p->nk && (p->kernel[0] != KH || p->kernel[1] != KW))
		return 0; /* run_conv reports the mismatch */
	const float *wd = w->data;
	for (size_t i = 0; i < w->nelem; i++)
		if (!isfinite(wd[i]))
			return 0; /* 0 * inf in the padding must stay NaN: general path */
	struct ops_conv_plan *cp = calloc(1, sizeof(*cp));
	if (!cp || !(cp->w = malloc(w->nelem * sizeof(float)))) {
		free(cp);
		return -1;
	}
	cp->C = C;
	cp->M = M;
	cp->KH = KH;
	cp->KW = KW;
	for (int64_t m = 0; m < M; m++)
		for (int64_t c = 0; c < C; c++)
			for (int64_t t = 0; t < KH * KW; t++)
				cp->w[(c * KH * KW + t) * M + m] = wd[(m * C + c) * KH * KW + t];
	n->conv = cp;
	return 0;
}

int ops_conv_fuse_relu(struct ops_node *n)
{
	if (!n->conv || n->conv->relu || n->conv->pool)
		return -1;
	n->conv->relu = 1;
	return 0;
}

int ops_conv_fuse_pool(struct ops_node *n, const struct ops_node *pool)
{
	const struct ops_params *p = &pool->p;
	if (!n->conv || n->conv->pool || strcmp(pool->op_type, "MaxPool") != 0 ||
	    (pool->n_out > 1 && pool->out[1] >= 0) || p->nk != 2 || p->ceil_mode ||
	    p->auto_pad == OPS_PAD_SAME_UPPER || p->auto_pad == OPS_PAD_SAME_LOWER)
		return -1;
	for (int i = 0; i < p->npads; i++)
		if (p->pads[i] != 0)
			return -1;
	for (int i = 0; i < 2; i++)
		if (p->dilations[i] != 1 || p->kernel[i] > CONV_DIRECT_K_MAX)
			return -1;
	n->conv->pool = 1;
	for (int i = 0; i < 2; i++) {
		n->conv->pk[i] = p->kernel[i];
		n->conv->ps[i] = p->strides[i];
	}
	return 0;
}

void ops_conv_plan_free(struct ops_conv_plan *cp)
{
	if (!cp)
		return;
	free(cp->w);
	free(cp);
}

/* s += v * (eight floats at w), for nv (1..4, constant after inlining) vectors. */
#define CONV_MAC(nv, v, w, s0, s1, s2, s3)                                                         \
	do {                                                                                       \
		ops_v8f t_;                                                                        \
		OPS_V8_LOAD(t_, (w));                                                              \
		s0 += (v)*t_;                                                                      \
		if ((nv) > 1) {                                                                    \
			OPS_V8_LOAD(t_, (w) + 8);                                                  \
			s1 += (v)*t_;                                                              \
		}                                                                                  \
		if ((nv) > 2) {                                                                    \
			OPS_V8_LOAD(t_, (w) + 16);                                                 \
			s2 += (v)*t_;                                                              \
		}                                                                                  \
		if ((nv) > 3) {                                                                    \
			OPS_V8_LOAD(t_, (w) + 24);                                                 \
			s3 += (v)*t_;                                                              \
		}                                                                                  \
	} while (0)

/*
 * One output pixel, nv (1..4) vectors of eight output channels: the taps of
 * its window that fall inside the input (nh rows, nw columns; x and wk point
 * at the first of them, input planes of plane floats and rows of W; weights
 * [C][KH][KW][M] with K = KH * KW). Two running sums, one over the even
 * input channels and one over the odd ones (so that eight chains of
 * additions run at once), each over the channels, then kernel rows, then
 * columns; then their sum, + bias. The taps in the zero padding are left
 * out (an exact 0 * w term unless a weight is infinite: ops_conv_plan then
 * refuses the node). nh and nw are constants when inlined with them (3x3
 * kernels), which unrolls the taps.
 */
static inline __attribute__((always_inline)) void
conv_pixel(int nv, int64_t nh, int64_t nw, int64_t C, int64_t M, int64_t KW, int64_t K,
           const float *x, int64_t plane, int64_t W, const float *wk, const float *bias, float *out)
{
	ops_v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
	ops_v8f u0 = {0}, u1 = {0}, u2 = {0}, u3 = {0};
	int64_t c = 0;
	for (; c + 2 <= C; c += 2, x += 2 * plane, wk += 2 * K * M)
		CONV_UNROLL
	for (int64_t kh = 0; kh < nh; kh++)
		CONV_UNROLL
	for (int64_t kw = 0; kw < nw; kw++) {
		const float *wt = wk + (kh * KW + kw) * M;
		CONV_MAC(nv, x[kh * W + kw], wt, s0, s1, s2, s3);
		CONV_MAC(nv, x[plane + kh * W + kw], wt + K * M, u0, u1, u2, u3);
	}
	if (c < C)
		CONV_UNROLL
	for (int64_t kh = 0; kh < nh; kh++)
		CONV_UNROLL
	for (int64_t kw = 0; kw < nw; kw++)
		CONV_MAC(nv, x[kh * W + kw], wk + (kh * KW + kw) * M, s0, s1, s2, s3);
	s0 += u0;
	s1 += u1;
	s2 += u2;
	s3 += u3;
	if (bias) {
		ops_v8f b;
		OPS_V8_LOAD(b, bias);
		s0 += b;
		if (nv > 1) {
			OPS_V8_LOAD(b, bias + 8);
			s1 += b;
		}
		if (nv > 2) {
			OPS_V8_LOAD(b, bias + 16);
			s2 += b;
		}
		if (nv > 3) {
			OPS_V8_LOAD(b, bias + 24);
			s3 += b;
		}
	}
	OPS_V8_STORE(out, s0);
	if (nv > 1)
		OPS_V8_STORE(out + 8, s1);
	if (nv > 2)
		OPS_V8_STORE(out + 16, s2);
	if (nv > 3)
		OPS_V8_STORE(out + 24, s3);
}

/* conv_pixel with the window size as constants for the shapes a 3x3 kernel meets. */
#define CONV_PIXEL_3X3(nv, nh, nw, ...)                                                            \
	do {                                                                                       \
		if ((nh) == 3 && (nw) == 3)                                                        \
			conv_pixel(nv, 3, 3, __VA_ARGS__);                                         \
		else if ((nh) == 3 && (nw) == 2)                                                   \
			conv_pixel(nv, 3, 2, __VA_ARGS__);                                         \
		else if ((nh) == 2 && (nw) == 3)                                                   \
			conv_pixel(nv, 2, 3, __VA_ARGS__);                                         \
		else if ((nh) == 2 && (nw) == 2)                                                   \
			conv_pixel(nv, 2, 2, __VA_ARGS__);                                         \
		else                                                                               \
			conv_pixel(nv, nh, nw, __VA_ARGS__);                                       \
	} while (0)

/* Every output pixel of one image x for nv vectors of channels from m. */
static inline __attribute__((always_inline)) void
conv_pixels(int nv, int k3, const struct ops_conv_plan *cp, const struct window *w, const float *x,
            int64_t m, const float *bias, float *acc)
{
	int64_t H = w->in[0], W = w->in[1], OH = w->out[0], OW = w->out[1];
	int64_t C = cp->C, M = cp->M, KW = cp->KW, K = cp->KH * KW, plane = H * W;
	const float *bm = bias ? bias + m : NULL;
	for (int64_t oh = 0; oh < OH; oh++) {
		int64_t ih0 = oh - w->pb[0];
		int64_t kh0 = ih0 < 0 ? -ih0 : 0, kh1 = H - ih0 < cp->KH ? H - ih0 : cp->KH;
		int64_t nh = kh1 > kh0 ? kh1 - kh0 : 0;
		for (int64_t ow = 0; ow < OW; ow++) {
			int64_t iw0 = ow - w->pb[1];
			int64_t kw0 = iw0 < 0 ? -iw0 : 0, kw1 = W - iw0 < KW ? W - iw0 : KW;
			int64_t nw = kw1 > kw0 ? kw1 - kw0 : 0;
			const float *xb = x + (nh && nw ? (ih0 + kh0) * W + iw0 + kw0 : 0);
			const float *wb = cp->w + (kh0 * KW + kw0) * M + m;
			float *o = acc + (oh * OW + ow) * M + m;
			if (k3)
				CONV_PIXEL_3X3(nv, nh, nw, C, M, KW, K, xb, plane, W, wb, bm, o);
			else
				conv_pixel(nv, nh, nw, C, M, KW, K, xb, plane, W, wb, bm, o);
		}
	}
}

/* acc[OH*OW][M] (pixel-major) for one image x [C][H][W]. */
OPS_SIMD_CLONES
static void conv_image(const struct ops_conv_plan *cp, const struct window *w, const float *x,
                       const float *bias, float *acc)
{
	int k3 = cp->KH == 3 && cp->KW == 3;
	for (int64_t m = 0; m < cp->M; m += 32) {
		int nv = (int)((cp->M - m) / 8);
		if (k3 && nv >= 4)
			conv_pixels(4, 1, cp, w, x, m, bias, acc);
		else if (k3 && nv == 2)
			conv_pixels(2, 1, cp, w, x, m, bias, acc);
		else if (nv >= 4)
			conv_pixels(4, 0, cp, w, x, m, bias, acc);
		else if (nv == 3)
			conv_pixels(3, 0, cp, w, x, m, bias, acc);
		else if (nv == 2)
			conv_pixels(2, 0, cp, w, x, m, bias, acc);
		else
			conv_pixels(1, 0, cp, w, x, m, bias, acc);
	}
}

/* *v = v > 0 ? v : 0 per lane (NaN and -0 give +0), as Relu. */
static inline __attribute__((always_inline)) void v8_relu(ops_v8f *v)
{
	typedef int32_t v8i __attribute__((vector_size(32)));
	ops_v8f zero = {0};
	v8i bits;
	v8i keep = *v > zero;
	memcpy(&bits, v, sizeof(bits));
	bits &= keep;
	memcpy(v, &bits, sizeof(bits));
}

/*
 * acc[P][M] (pixel-major, P = OH*OW) into y [M][PH*PW]: the fused MaxPool
 * (each max as v > m ? v : m from -inf, window row by row, as run_pool) and
 * Relu (after the max: the same floats as before it), or a plain transpose.
 */
/* *mx = v > *mx ? v : *mx per lane (MaxPool's step, as run_pool takes it). */
static inline __attribute__((always_inline)) void v8_max_step(ops_v8f *mx, const float *p)
{
	typedef int32_t v8i __attribute__((vector_size(32)));
	ops_v8f v;
	v8i gt, a, b;
	OPS_V8_LOAD(v, p);
	gt = v > *mx;
	memcpy(&a, &v, sizeof(a));
	memcpy(&b, mx, sizeof(b));
	a = (a & gt) | (b & ~gt);
	memcpy(mx, &a, sizeof(a));
}

OPS_SIMD_CLONES
static void conv_store(const struct ops_conv_plan *cp, int64_t OH, int64_t OW, const float *acc,
                       float *y)
{
	int64_t M = cp->M;
	int64_t PH = OH, PW = OW, kh = 1, kw = 1, sh = 1, sw = 1;
	if (cp->pool) {
		kh = cp->pk[0], kw = cp->pk[1], sh = cp->ps[0], sw = cp->ps[1];
		PH = (OH - kh) / sh + 1;
		PW = (OW - kw) / sw + 1;
	}
	int64_t plane = PH * PW;
	int two = kh == 2 && kw == 2;
	for (int64_t ph = 0; ph < PH; ph++)
		for (int64_t pw = 0; pw < PW; pw++) {
			const float *a0 = acc + (ph * sh * OW + pw * sw) * M;
			float *yo = y + ph * PW + pw;
			for (int64_t m = 0; m < M; m += 8, yo += 8 * plane) {
				ops_v8f mx;
				if (!cp->pool) {
					OPS_V8_LOAD(mx, a0 + m);
				} else {
					ops_v8f ninf = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
					                -INFINITY, -INFINITY, -INFINITY, -INFINITY};
					mx = ninf;
					if (two) {
						v8_max_step(&mx, a0 + m);
						v8_max_step(&mx, a0 + M + m);
						v8_max_step(&mx, a0 + OW * M + m);
						v8_max_step(&mx, a0 + (OW + 1) * M + m);
					} else {
						for (int64_t i = 0; i < kh; i++)
							for (int64_t j = 0; j < kw; j++)
								v8_max_step(
								    &mx, a0 + (i * OW + j) * M + m);
					}
				}
				if (cp->relu)
					v8_relu(&mx);
				yo[0] = mx[0];
				yo[plane] = mx[1];
				yo[2 * plane] = mx[2];
				yo[3 * plane] = mx[3];
				yo[4 * plane] = mx[4];
				yo[5 * plane] = mx[5];
				yo[6 * plane] = mx[6];
				yo[7 * plane] = mx[7];
			}
		}
}

int ops_conv_run(const struct ops_node *n, const struct tensor *x, const struct tensor *b,
                 struct tensor **out, char *err, size_t errlen)
{
	const struct ops_conv_plan *cp = n->conv;
	char s1[96];
	if (x->ndim != 4 || x->dims[1] != cp->C || (b && (b->ndim != 1 || b->dims[0] != cp->M))) {
		snprintf(err, errlen, "X %s%s: shapes do not fit the weight [%lld,%lld,%lld,%lld]",
		         ops_shape_str(x->dims, x->ndim, s1, sizeof(s1)), b ? " and B" : "",
		         (long long)cp->M, (long long)cp->C, (long long)cp->KH, (long long)cp->KW);
		return -1;
	}
	int64_t kernel[2] = {cp->KH, cp->KW};
	struct window w;
	if (window_setup(&n->p, x, kernel, 0, &w, err, errlen))
		return -1;
	int64_t N = x->dims[0], OH = w.out[0], OW = w.out[1];
	int64_t od[4] = {N, cp->M, OH, OW};
	if (cp->pool) {
		if (OH < cp->pk[0] || OW < cp->pk[1]) {
			snprintf(err, errlen,
			         "fused MaxPool: kernel larger than the %lldx%lld input",
			         (long long)OH, (long long)OW);
			return -1;
		}
		od[2] = (OH - cp->pk[0]) / cp->ps[0] + 1;
		od[3] = (OW - cp->pk[1]) / cp->ps[1] + 1;
	}
	if (ops_new_dense(out, TENSOR_FLOAT, 4, od, err, errlen))
		return -1;
	/* One image's un-pooled output, pixel-major: on the stack when small. */
	size_t asz = (size_t)(OH * OW * cp->M);
	float stack[CONV_STACK_FLOATS], *acc = stack;
	if (asz > CONV_STACK_FLOATS) {
		size_t bytes = asz * sizeof(float);
		if (bytes > OPS_TENSOR_MAX_BYTES || !(acc = malloc(bytes))) {
			snprintf(err, errlen, "out of memory for a %lldx%lld x %lld-channel output",
			         (long long)OH, (long long)OW, (long long)cp->M);
			tensor_free(*out);
			*out = NULL;
			return -1;
		}
	}
	size_t isz = (size_t)(w.in[0] * w.in[1]), osz = (size_t)(od[2] * od[3]);
	const float *xd = x->data, *bd = b ? b->data : NULL;
	float *y = (*out)->data;
	for (int64_t i = 0; i < N; i++) {
		conv_image(cp, &w, xd + (size_t)i * (size_t)cp->C * isz, bd, acc);
		conv_store(cp, OH, OW, acc, y + (size_t)i * (size_t)cp->M * osz);
	}
	if (acc != stack)
		free(acc);
	return 0;
}

/* ---- Conv ---- */

static int prepare_conv(struct ops_node *n, const Onnx__NodeProto *np,
                        const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                        size_t errlen)
{
	for (size_t i = 0; i < n->n_in; i++)
		if (in_types[i] != TENSOR_UNDEFINED &&
		    ops_require_dtype(in_types[i], "input", float_only, err, errlen))
			return -1;
	if (prepare_window(n, np, err, errlen) ||
	    ops_attr_int(np, "group", 1, &n->p.group, err, errlen))
		return -1;
	if (n->p.group < 1 || n->p.group > OPS_WINDOW_MAX) {
		snprintf(err, errlen, "group=%lld not supported", (long long)n->p.group);
		return -1;
	}
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

static int run_conv(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                    char *err, size_t errlen)
{
	const struct tensor *x = in[0], *wt = in[1], *b = n->n_in > 2 ? in[2] : NULL;
	const struct ops_params *p = &n->p;
	char s1[96], s2[96];
	if (n->conv)
		return ops_conv_run(n, x, b, out, err, errlen);
	if (wt->ndim != x->ndim || x->ndim < 3)
		goto bad;
	int64_t N = x->dims[0], C = x->dims[1], M = wt->dims[0], G = p->group;
	if (C % G || M % G || wt->dims[1] != C / G || (b && (b->ndim != 1 || b->dims[0] != M)))
		goto bad;
	int64_t kernel[SP];
	for (int i = 0; i < x->ndim - 2 && i < SP; i++) {
		kernel[i] = wt->dims[2 + i];
		if (p->nk && p->kernel[i] != kernel[i])
			goto bad;
	}
	struct window w;
	if (window_setup(p, x, kernel, 0, &w, err, errlen))
		return -1;
	int64_t od[TENSOR_MAX_DIMS] = {N, M};
	for (int i = 0; i < x->ndim - 2; i++)
		od[2 + i] = w.out[i];
	if (ops_new_dense(out, TENSOR_FLOAT, x->ndim, od, err, errlen))
		return -1;
	const float *xd = x->data, *wd = wt->data, *bd = b ? b->data : NULL;
	float *y = (*out)->data;
	int64_t cg = C / G, mg = M / G;
	size_t isz = (size_t)(w.in[0] * w.in[1] * w.in[2]);
	size_t osz = (size_t)(w.out[0] * w.out[1] * w.out[2]);
	size_t ksz = (size_t)(w.k[0] * w.k[1] * w.k[2]);
	size_t rows = (size_t)cg * ksz;
	struct window wi = window_inner(&w, x->ndim - 2);
	/* Small unfolds (the common case) use the stack and the padded copy. */
	float stack[CONV_STACK_FLOATS], *col = NULL, *pad = NULL;
	int dense = 1;
	for (int i = 0; i < SP; i++)
		dense = dense && w.s[i] == 1 && w.d[i] == 1;
	size_t psz = padded_size(&wi, cg);
	if (dense && rows * osz <= CONV_STACK_FLOATS && psz <= CONV_STACK_FLOATS - rows * osz) {
		col = stack;
		pad = stack + rows * osz;
	} else if (rows * osz <= CONV_COL_MAX) {
		col = malloc((rows * osz > 0 ? rows * osz : 1) * sizeof(float));
	}
	for (int64_t nn = 0; nn < N; nn++)
		for (int64_t g = 0; g < G; g++) {
			const float *xg = xd + ((size_t)nn * (size_t)C + (size_t)(g * cg)) * isz;
			float *yg = y + ((size_t)nn * (size_t)M + (size_t)(g * mg)) * osz;
			const float *wg = wd + (size_t)(g * mg) * rows;
			if (col) {
				if (pad)
					im2col_dense(&wi, xg, cg, pad, col);
				else
					im2col(&wi, xg, cg, col);
				ops_gemm_bias((size_t)mg, osz, rows, wg, col,
				              bd ? bd + g * mg : NULL, yg);
				continue;
			}
			for (int64_t m = 0; m < mg; m++) { /* too large to unfold: direct */
				float *ym = yg + (size_t)m * osz;
				for (size_t i = 0; i < osz; i++)
					ym[i] = bd ? bd[g * mg + m] : 0.0f;
				for (int64_t c = 0; c < cg; c++)
					conv_plane(&w, xg + (size_t)c * isz,
					           wg + ((size_t)m * (size_t)cg + (size_t)c) * ksz,
					           ym);
			}
		}
	if (col != stack)
		free(col);
	return 0;
bad:
	snprintf(err, errlen, "X %s, W %s%s: shapes do not fit (group %lld)",
	         ops_shape_str(x->dims, x->ndim, s1, sizeof(s1)),
	         ops_shape_str(wt->dims, wt->ndim, s2, sizeof(s2)), b ? " and B" : "",
	         (long long)p->group);
	return -1;
}

/* ---- MaxPool, AveragePool ---- */

static const enum tensor_dtype float_uint8[] = {TENSOR_FLOAT, TENSOR_UINT8, 0};

/*
 * MaxPool's Indices: the flat index of (i0, i1, i2) in one [D1..Dk] plane,
 * row-major (storage_order 0) or column-major (1), of the ns real spatial dims.
 */
static int64_t window_index(const struct window *w, int colmajor, int ns, int64_t i0, int64_t i1,
                            int64_t i2)
{
	if (!colmajor)
		return (i0 * w->in[1] + i1) * w->in[2] + i2;
	int64_t idx[SP] = {i0, i1, i2}, r = 0;
	for (int i = ns - 1; i >= 0; i--)
		r = r * w->in[i] + idx[i];
	return r;
}

static int prepare_pool(struct ops_node *n, const Onnx__NodeProto *np,
                        const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
                        size_t errlen)
{
	int64_t ceil_mode, cip, storage;
	int is_max = strcmp(n->op_type, "MaxPool") == 0;
	if (ops_require_dtype(in_types[0], "input", is_max ? float_uint8 : float_only, err,
	                      errlen) ||
	    prepare_window(n, np, err, errlen) ||
	    ops_attr_int(np, "ceil_mode", 0, &ceil_mode, err, errlen) ||
	    ops_attr_int(np, "count_include_pad", 0, &cip, err, errlen) ||
	    ops_attr_int(np, "storage_order", 0, &storage, err, errlen))
		return -1;
	if (n->p.nk == 0) {
		snprintf(err, errlen, "attribute 'kernel_shape' is required");
		return -1;
	}
	if (storage != 0 && storage != 1) {
		snprintf(err, errlen, "storage_order=%lld: must be 0 or 1", (long long)storage);
		return -1;
	}
	n->p.ceil_mode = ceil_mode != 0;
	n->p.count_include_pad = cip != 0;
	n->p.legacy = is_max; /* 1 = max, 0 = average */
	n->p.storage_order = (int)storage;
	out_types[0] = in_types[0];
	if (n->n_out > 1)
		out_types[1] = TENSOR_INT64;
	return 0;
}

/* One axis of a pooling window without dilation: the taps [*a, *b) inside
 * the input, and the count with the end padding included. */
static void pool_axis(const struct window *w, int i, int64_t o, int64_t *a, int64_t *b,
                      int64_t *with_pad)
{
	int64_t st = o * w->s[i] - w->pb[i], en = st + w->k[i];
	int64_t lim = w->in[i] + w->pe[i];
	*with_pad = (en < lim ? en : lim) - st;
	*a = st < 0 ? 0 : st;
	*b = en < w->in[i] ? en : w->in[i];
	if (*b < *a)
		*b = *a;
}

#define POOL_ROW_MAX 512 /* longest output row pool_dense takes */

/*
 * y[o] = max(max(y[o], q[2o]), q[2o+1]) for o in 0..n-1, each max written as
 * v > acc ? v : acc (MAXPS is exactly that, NaN and signed zeros included),
 * four outputs at a time; returns how many outputs it did (the rest: scalar).
 */
static int64_t max_pairs4(float *y, const float *q, int64_t n)
{
	int64_t o = 0;
#ifdef __SSE__
	for (; o + 4 <= n; o += 4) {
		__m128 lo = _mm_loadu_ps(q + 2 * o), hi = _mm_loadu_ps(q + 2 * o + 4);
		__m128 acc = _mm_loadu_ps(y + o);
		acc = _mm_max_ps(_mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)), acc);
		acc = _mm_max_ps(_mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)), acc);
		_mm_storeu_ps(y + o, acc);
	}
#else
	(void)y;
	(void)q;
	(void)n;
#endif
	return o;
}

/*
 * MaxPool (is_max) or AveragePool without dilation and without Indices, a
 * whole output row at a time: for each input row of the window, in order,
 * every output of the row takes its taps of that input row, in order. So
 * each output sees the same taps in the same order as in the general walk in
 * run_pool, without a bounds test per tap. Needs w->out[2] <= POOL_ROW_MAX.
 */
static void pool_dense(const struct window *w, int is_max, int cip, const float *x, size_t planes,
                       float *y)
{
	int64_t a2[POOL_ROW_MAX], b2[POOL_ROW_MAX], p2[POOL_ROW_MAX];
	int64_t n2 = w->out[2];
	int pairs = 1; /* every window along the row has exactly two taps inside */
	for (int64_t o2 = 0; o2 < n2; o2++) {
		pool_axis(w, 2, o2, &a2[o2], &b2[o2], &p2[o2]);
		pairs = pairs && b2[o2] - a2[o2] == 2;
	}
	int packed = pairs; /* ... and the pairs follow each other: a 2x2-stride-2 row */
	for (int64_t o2 = 0; packed && o2 < n2; o2++)
		packed = a2[o2] == a2[0] + 2 * o2;
	size_t isz = (size_t)(w->in[0] * w->in[1] * w->in[2]);
	float init = is_max ? -INFINITY : 0.0f;
	for (size_t pl = 0; pl < planes; pl++) {
		const float *xp = x + pl * isz;
		for (int64_t o0 = 0; o0 < w->out[0]; o0++) {
			int64_t a0, b0, p0;
			pool_axis(w, 0, o0, &a0, &b0, &p0);
			for (int64_t o1 = 0; o1 < w->out[1]; o1++, y += n2) {
				int64_t a1, b1, p1;
				pool_axis(w, 1, o1, &a1, &b1, &p1);
				for (int64_t o2 = 0; o2 < n2; o2++)
					y[o2] = init;
				for (int64_t i0 = a0; i0 < b0; i0++)
					for (int64_t i1 = a1; i1 < b1; i1++) {
						const float *xr =
						    xp + (i0 * w->in[1] + i1) * w->in[2];
						if (is_max && pairs) { /* 2-wide taps, all inside */
							int64_t o2 = 0;
							if (packed)
								o2 = max_pairs4(y, xr + a2[0], n2);
							for (; o2 < n2; o2++) {
								const float *q = xr + a2[o2];
								float acc = y[o2];
								acc = q[0] > acc ? q[0] : acc;
								acc = q[1] > acc ? q[1] : acc;
								y[o2] = acc;
							}
							continue;
						}
						for (int64_t o2 = 0; o2 < n2; o2++) {
							float acc = y[o2];
							if (is_max)
								for (int64_t i2 = a2[o2];
								     i2 < b2[o2]; i2++)
									acc = xr[i2] > acc ? xr[i2]
									                   : acc;
							else
								for (int64_t i2 = a2[o2];
								     i2 < b2[o2]; i2++)
									acc += xr[i2];
							y[o2] = acc;
						}
					}
				if (is_max)
					continue;
				for (int64_t o2 = 0; o2 < n2; o2++) {
					int64_t div =
					    cip ? p0 * p1 * p2[o2]
					        : (b0 - a0) * (b1 - a1) * (b2[o2] - a2[o2]);
					y[o2] = div ? y[o2] / (float)div : 0.0f;
				}
			}
		}
	}
}

/* A 2-D window (from window_inner) of 2x2, stride 2, no padding, no dilation, whole windows. */
static int pool_is_2x2(const struct window *w)
{
	return w->in[0] == 1 && w->out[0] == 1 && w->k[0] == 1 && w->pb[0] == 0 && w->pe[0] == 0 &&
	       w->k[1] == 2 && w->k[2] == 2 && w->s[1] == 2 && w->s[2] == 2 && w->d[1] == 1 &&
	       w->d[2] == 1 && w->pb[1] == 0 && w->pb[2] == 0 && 2 * w->out[1] <= w->in[1] &&
	       2 * w->out[2] <= w->in[2];
}

/*
 * MaxPool 2x2 stride 2 over planes of [H,W] into [OH,OW]: each output is
 * acc = -inf, then acc = v > acc ? v : acc for the taps (2i,2j), (2i,2j+1),
 * (2i+1,2j), (2i+1,2j+1) in that order, as in the general walk; four
 * outputs at a time with MAXPS (the same expression) where SSE is there.
 */
static void pool_max2x2(const float *x, size_t planes, int64_t H, int64_t W, int64_t OH, int64_t OW,
                        float *y)
{
	for (size_t pl = 0; pl < planes; pl++, x += H * W)
		for (int64_t oh = 0; oh < OH; oh++, y += OW) {
			const float *r0 = x + 2 * oh * W, *r1 = r0 + W;
			int64_t o = 0;
#ifdef __SSE__
			for (; o + 4 <= OW; o += 4) {
				__m128 a0 = _mm_loadu_ps(r0 + 2 * o),
				       a1 = _mm_loadu_ps(r0 + 2 * o + 4);
				__m128 b0 = _mm_loadu_ps(r1 + 2 * o),
				       b1 = _mm_loadu_ps(r1 + 2 * o + 4);
				__m128 acc = _mm_set1_ps(-INFINITY);
				acc = _mm_max_ps(_mm_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0)),
				                 acc);
				acc = _mm_max_ps(_mm_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1)),
				                 acc);
				acc = _mm_max_ps(_mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0)),
				                 acc);
				acc = _mm_max_ps(_mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1)),
				                 acc);
				_mm_storeu_ps(y + o, acc);
			}
#endif
			for (; o < OW; o++) {
				float acc = -INFINITY;
				acc = r0[2 * o] > acc ? r0[2 * o] : acc;
				acc = r0[2 * o + 1] > acc ? r0[2 * o + 1] : acc;
				acc = r1[2 * o] > acc ? r1[2 * o] : acc;
				acc = r1[2 * o + 1] > acc ? r1[2 * o + 1] : acc;
				y[o] = acc;
			}
		}
}

static int run_pool(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                    char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	const struct ops_params *p = &n->p;
	struct window w;
	if (window_setup(p, x, p->kernel, p->ceil_mode, &w, err, errlen))
		return -1;
	int64_t od[TENSOR_MAX_DIMS] = {x->dims[0], x->dims[1]};
	for (int i = 0; i < x->ndim - 2; i++)
		od[2 + i] = w.out[i];
	if (ops_new(out, TENSOR_FLOAT, x->ndim, od, err, errlen))
		return -1;
	int64_t *ind = NULL;
	if (n->n_out > 1) {
		if (ops_new(&out[1], TENSOR_INT64, x->ndim, od, err, errlen))
			return -1;
		ind = out[1]->data;
	}
	/* A uint8 input is pooled in float (exact for 0..255) and converted back. */
	float *xf = NULL;
	if (x->dtype == TENSOR_UINT8) {
		if (!(xf = malloc((x->nelem ? x->nelem : 1) * sizeof(float)))) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		for (size_t i = 0; i < x->nelem; i++)
			xf[i] = ((const uint8_t *)x->data)[i];
	}
	int is_max = p->legacy;
	size_t planes = (size_t)(x->dims[0] * x->dims[1]);
	size_t isz = (size_t)(w.in[0] * w.in[1] * w.in[2]);
	float *y = (*out)->data;
	struct window wi = window_inner(&w, x->ndim - 2);
	if (!ind && is_max && pool_is_2x2(&wi)) {
		pool_max2x2(xf ? xf : x->data, planes, wi.in[1], wi.in[2], wi.out[1], wi.out[2], y);
		planes = 0; /* done */
	} else if (!ind && w.d[0] == 1 && w.d[1] == 1 && w.d[2] == 1 && wi.out[2] <= POOL_ROW_MAX) {
		pool_dense(&wi, is_max, p->count_include_pad, xf ? xf : x->data, planes, y);
		planes = 0; /* done */
	}
	for (size_t pl = 0; pl < planes; pl++) {
		const float *xp = (xf ? xf : (const float *)x->data) + pl * isz;
		for (int64_t o0 = 0; o0 < w.out[0]; o0++)
			for (int64_t o1 = 0; o1 < w.out[1]; o1++)
				for (int64_t o2 = 0; o2 < w.out[2]; o2++) {
					int64_t o[SP] = {o0, o1, o2};
					float acc = is_max ? -INFINITY : 0.0f;
					int64_t cnt = 0, cnt_pad = 1, arg = 0;
					int64_t lo[SP], hi[SP];
					for (int i = 0; i < SP; i++) {
						int64_t st = o[i] * w.s[i] - w.pb[i];
						int64_t en = st + (w.k[i] - 1) * w.d[i] + 1;
						int64_t lim = w.in[i] + w.pe[i];
						int64_t pe = en < lim ? en : lim;
						cnt_pad *= (pe - st + w.d[i] - 1) / w.d[i];
						lo[i] = st;
						hi[i] = en;
					}
					for (int64_t i0 = lo[0]; i0 < hi[0]; i0 += w.d[0]) {
						if (i0 < 0 || i0 >= w.in[0])
							continue;
						for (int64_t i1 = lo[1]; i1 < hi[1]; i1 += w.d[1]) {
							if (i1 < 0 || i1 >= w.in[1])
								continue;
							const float *xr =
							    xp + (i0 * w.in[1] + i1) * w.in[2];
							for (int64_t i2 = lo[2]; i2 < hi[2];
							     i2 += w.d[2]) {
								if (i2 < 0 || i2 >= w.in[2])
									continue;
								float v = xr[i2];
								if (is_max) {
									if (ind &&
									    (v > acc || cnt == 0))
										arg = window_index(
										    &w,
										    p->storage_order,
										    x->ndim - 2, i0,
										    i1, i2);
									acc = v > acc ? v : acc;
								} else
									acc += v;
								cnt++;
							}
						}
					}
					if (!is_max) {
						int64_t div = p->count_include_pad ? cnt_pad : cnt;
						acc = div ? acc / (float)div : 0.0f;
					}
					if (ind)
						*ind++ = (int64_t)(pl * isz) + arg;
					*y++ = acc;
				}
	}
	if (xf) {
		free(xf);
		struct tensor *f = *out;
		*out = NULL;
		if (ops_new(out, TENSOR_UINT8, f->ndim, f->dims, err, errlen)) {
			tensor_free(f);
			return -1;
		}
		/* A window that lies wholly in the padding has no maximum: 0. */
		for (size_t i = 0; i < f->nelem; i++) {
			float v = ((const float *)f->data)[i];
			((uint8_t *)(*out)->data)[i] = v >= 0.0f ? (uint8_t)v : 0;
		}
		tensor_free(f);
	}
	return 0;
}

/* ---- GlobalAveragePool, GlobalMaxPool ---- */

static int prepare_global_pool(struct ops_node *n, const Onnx__NodeProto *np,
                               const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                               char *err, size_t errlen)
{
	if (ops_require_dtype(in_types[0], "input", float_only, err, errlen))
		return -1;
	n->p.legacy = strcmp(n->op_type, "GlobalMaxPool") == 0;
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

static int run_global_pool(const struct ops_node *n, const struct tensor *const *in,
                           struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	if (x->ndim < 3) {
		char s[96];
		snprintf(err, errlen, "input %s: expected [N,C,D1..Dk]",
		         ops_shape_str(x->dims, x->ndim, s, sizeof(s)));
		return -1;
	}
	int64_t od[TENSOR_MAX_DIMS];
	for (int i = 0; i < x->ndim; i++)
		od[i] = i < 2 ? x->dims[i] : 1;
	if (ops_new(out, TENSOR_FLOAT, x->ndim, od, err, errlen))
		return -1;
	size_t planes = (size_t)(x->dims[0] * x->dims[1]);
	size_t len = ops_numel(x->dims + 2, x->ndim - 2);
	const float *xd = x->data;
	float *y = (*out)->data;
	for (size_t pl = 0; pl < planes; pl++) {
		float acc = n->p.legacy ? -INFINITY : 0.0f;
		for (size_t i = 0; i < len; i++) {
			float v = xd[pl * len + i];
			acc = n->p.legacy ? (v > acc ? v : acc) : acc + v;
		}
		y[pl] = n->p.legacy ? acc : (len ? acc / (float)len : 0.0f);
	}
	return 0;
}

/* ---- BatchNormalization ---- */

static int prepare_batchnorm(struct ops_node *n, const Onnx__NodeProto *np,
                             const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                             char *err, size_t errlen)
{
	int64_t training;
	for (size_t i = 0; i < n->n_in; i++)
		if (ops_require_dtype(in_types[i], "input", float_only, err, errlen))
			return -1;
	if (ops_attr_float(np, "epsilon", 1e-5f, &n->p.epsilon, err, errlen) ||
	    ops_attr_float(np, "momentum", 0.9f, &n->p.momentum, err, errlen) ||
	    ops_attr_int(np, "training_mode", 0, &training, err, errlen))
		return -1;
	/* Opset 14+: training_mode=1 adds running_mean and running_var outputs. */
	if ((training && n->opset < 14) || (!training && n->n_out > 1) || n->n_out > 3) {
		snprintf(err, errlen,
		         "training_mode=%lld with %zu outputs not supported (opset 14+ training "
		         "mode has Y, running_mean, running_var)",
		         (long long)training, n->n_out);
		return -1;
	}
	n->p.training = training != 0;
	if (ops_attr(np, "spatial") || ops_attr(np, "is_test") || ops_attr(np, "consumed_inputs")) {
		snprintf(err, errlen, "attributes of opset < 9 not supported");
		return -1;
	}
	for (size_t i = 0; i < n->n_out; i++)
		out_types[i] = TENSOR_FLOAT;
	return 0;
}

/*
 * Training mode: the per-channel mean and (population) variance of x over the
 * batch and spatial dimensions into mean[C] and var[C] (double sums).
 */
static void batch_stats(const struct tensor *x, int64_t C, size_t outer, size_t inner, float *mean,
                        float *var)
{
	const float *xd = x->data;
	double cnt = (double)outer * (double)inner;
	for (int64_t c = 0; c < C; c++) {
		double s = 0.0, q = 0.0;
		for (size_t o = 0; o < outer; o++) {
			const float *r = xd + (o * (size_t)C + (size_t)c) * inner;
			for (size_t i = 0; i < inner; i++)
				s += r[i];
		}
		double m = cnt > 0 ? s / cnt : 0.0;
		for (size_t o = 0; o < outer; o++) {
			const float *r = xd + (o * (size_t)C + (size_t)c) * inner;
			for (size_t i = 0; i < inner; i++)
				q += (r[i] - m) * (r[i] - m);
		}
		mean[c] = (float)m;
		var[c] = cnt > 0 ? (float)(q / cnt) : 0.0f;
	}
}

static int run_batchnorm(const struct ops_node *n, const struct tensor *const *in,
                         struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t C = x->ndim >= 2 ? x->dims[1] : 1;
	for (int i = 1; i < 5; i++)
		if (in[i]->nelem != (size_t)C) {
			char s[96];
			snprintf(err, errlen, "input %d has %zu elements, expected C=%lld of X %s",
			         i, in[i]->nelem, (long long)C,
			         ops_shape_str(x->dims, x->ndim, s, sizeof(s)));
			return -1;
		}
	if (ops_new(out, TENSOR_FLOAT, x->ndim, x->dims, err, errlen))
		return -1;
	const float *sc = in[1]->data, *bi = in[2]->data, *mu = in[3]->data, *var = in[4]->data;
	size_t inner = x->ndim > 2 ? ops_numel(x->dims + 2, x->ndim - 2) : 1;
	size_t outer = x->ndim >= 1 ? (size_t)x->dims[0] : 1;
	if (n->p.training) {
		/* Normalize with the batch statistics; blend them into the running ones. */
		struct tensor *bm = NULL, *bv = NULL;
		int64_t cd[1] = {C};
		if (ops_new(&bm, TENSOR_FLOAT, 1, cd, err, errlen) ||
		    ops_new(&bv, TENSOR_FLOAT, 1, cd, err, errlen)) {
			tensor_free(bm);
			return -1;
		}
		float *m = bm->data, *v = bv->data;
		batch_stats(x, C, outer, inner, m, v);
		float mom = n->p.momentum;
		for (size_t k = 1; k < n->n_out; k++) {
			const float *run = k == 1 ? mu : var, *cur = k == 1 ? m : v;
			if (ops_new(&out[k], TENSOR_FLOAT, in[3]->ndim, in[3]->dims, err, errlen)) {
				tensor_free(bm);
				tensor_free(bv);
				return -1;
			}
			float *r = out[k]->data;
			for (int64_t c = 0; c < C; c++)
				r[c] = run[c] * mom + cur[c] * (1.0f - mom);
		}
		const float *xd = x->data;
		float *y = (*out)->data;
		for (size_t o = 0; o < outer; o++)
			for (int64_t c = 0; c < C; c++) {
				float inv = sc[c] / sqrtf(v[c] + n->p.epsilon);
				size_t base = (o * (size_t)C + (size_t)c) * inner;
				for (size_t i = 0; i < inner; i++)
					y[base + i] = (xd[base + i] - m[c]) * inv + bi[c];
			}
		tensor_free(bm);
		tensor_free(bv);
		return 0;
	}
	const float *xd = x->data;
	float *y = (*out)->data;
	for (size_t o = 0; o < outer; o++)
		for (int64_t c = 0; c < C; c++) {
			float inv = sc[c] / sqrtf(var[c] + n->p.epsilon);
			size_t base = (o * (size_t)C + (size_t)c) * inner;
			for (size_t i = 0; i < inner; i++)
				y[base + i] = (xd[base + i] - mu[c]) * inv + bi[c];
		}
	return 0;
}

/* ---- Softmax, LogSoftmax, Hardmax ---- */

enum softmax_kind { SOFTMAX, LOG_SOFTMAX, HARDMAX };

static int prepare_softmax(struct ops_node *n, const Onnx__NodeProto *np,
                           const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                           char *err, size_t errlen)
{
	if (ops_require_dtype(in_types[0], "input", float_only, err, errlen))
		return -1;
	n->p.legacy = n->opset < 13;
	if (ops_attr_int(np, "axis", n->p.legacy ? 1 : -1, &n->p.axis, err, errlen))
		return -1;
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

static int run_softmax(const struct ops_node *n, const struct tensor *const *in,
                       struct tensor **out, char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	int64_t axis;
	if (x->ndim == 0) {
		snprintf(err, errlen, "input must have rank >= 1");
		return -1;
	}
	if (ops_axis(n->p.axis, x->ndim, &axis, err, errlen))
		return -1;
	size_t outer = ops_numel(x->dims, (int)axis), len, inner;
	if (n->p.legacy) { /* coerce to 2-D [outer, rest] */
		len = ops_numel(x->dims + axis, x->ndim - (int)axis);
		inner = 1;
	} else {
		len = (size_t)x->dims[axis];
		inner = ops_numel(x->dims + axis + 1, x->ndim - (int)axis - 1);
	}
	if (ops_new(out, TENSOR_FLOAT, x->ndim, x->dims, err, errlen))
		return -1;
	const float *xd = x->data;
	float *y = (*out)->data;
	enum softmax_kind kind = (enum softmax_kind)(intptr_t)n->kernel->impl;
	for (size_t o = 0; o < outer; o++)
		for (size_t i = 0; i < inner; i++) {
			const float *xr = xd + o * len * inner + i;
			float *yr = y + o * len * inner + i;
			float mx = -INFINITY;
			size_t arg = 0;
			for (size_t j = 0; j < len; j++)
				if (xr[j * inner] > mx || j == 0) {
					mx = xr[j * inner];
					arg = j;
				}
			if (kind == HARDMAX) {
				for (size_t j = 0; j < len; j++)
					yr[j * inner] = j == arg ? 1.0f : 0.0f;
				continue;
			}
			float sum = 0.0f;
			for (size_t j = 0; j < len; j++) {
				float e = expf(xr[j * inner] - mx);
				yr[j * inner] = e;
				sum += e;
			}
			if (kind == LOG_SOFTMAX) {
				float ls = logf(sum);
				for (size_t j = 0; j < len; j++)
					yr[j * inner] = xr[j * inner] - mx - ls;
			} else {
				for (size_t j = 0; j < len; j++)
					yr[j * inner] /= sum;
			}
		}
	return 0;
}

const struct ops_kernel ops_nn_kernels[] = {
    {"Conv", 2, 3, 1, 1, prepare_conv, run_conv, NULL},
    {"MaxPool", 1, 1, 1, 2, prepare_pool, run_pool, NULL},
    {"AveragePool", 1, 1, 1, 1, prepare_pool, run_pool, NULL},
    {"GlobalAveragePool", 1, 1, 1, 1, prepare_global_pool, run_global_pool, NULL},
    {"GlobalMaxPool", 1, 1, 1, 1, prepare_global_pool, run_global_pool, NULL},
    {"BatchNormalization", 5, 5, 1, 5, prepare_batchnorm, run_batchnorm, NULL},
    {"Softmax", 1, 1, 1, 1, prepare_softmax, run_softmax, (const void *)(intptr_t)SOFTMAX},
    {"LogSoftmax", 1, 1, 1, 1, prepare_softmax, run_softmax, (const void *)(intptr_t)LOG_SOFTMAX},
    {"Hardmax", 1, 1, 1, 1, prepare_softmax, run_softmax, (const void *)(intptr_t)HARDMAX},
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};
