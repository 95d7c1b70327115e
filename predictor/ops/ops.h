/*
 * ops.h - operator kernels of the predictor's ONNX runtime.
 *
 * Each ONNX operator is a row in a table (struct ops_kernel): a prepare step
 * that runs once at model load, reads the node's attributes into struct
 * ops_params, checks the input dtypes and refuses what the kernel cannot run
 * (with a reason), and a run step that computes output tensors from input
 * tensors. Run steps only read the node and their inputs, so one node may run
 * in several threads at once. Shapes are checked at run time, since the batch
 * dimension is only known then.
 */
#ifndef TURNOUT_OPS_H
#define TURNOUT_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "onnx.pb-c.h"
#include "tensor.h"

#define OPS_ERR_MAX 256
/* Largest tensor a kernel allocates; a bigger result is a run-time error. */
#define OPS_TENSOR_MAX_BYTES ((size_t)1 << 30)
/* Largest window parameter (kernel, stride, dilation, pad) and group count accepted. */
#define OPS_WINDOW_MAX ((int64_t)1 << 20)

/* Attributes, parsed once at load; each kernel uses the fields it needs. */
struct ops_params {
	int64_t axis;
	int keepdims;
	int select_last_index;
	int64_t to; /* Cast */
	float alpha, beta, gamma, epsilon;
	float min, max; /* Clip before opset 11 */
	int trans_a, trans_b;
	int auto_pad; /* enum ops_auto_pad */
	int ceil_mode;
	int count_include_pad;
	int64_t group;
	int nk; /* spatial rank of kernel_shape, 0 if not given */
	int64_t kernel[TENSOR_MAX_DIMS];
	int64_t strides[TENSOR_MAX_DIMS];
	int64_t dilations[TENSOR_MAX_DIMS];
	int npads; /* 0 or 2 * spatial rank */
	int64_t pads[2 * TENSOR_MAX_DIMS];
	int nperm; /* Transpose, -1 if not given */
	int64_t perm[TENSOR_MAX_DIMS];
	int naxes; /* axes attribute, -1 if not given */
	int64_t axes[TENSOR_MAX_DIMS];
	int allowzero;
	int noop_with_empty_axes;
	int legacy;        /* op-specific: semantics of an older opset */
	int storage_order; /* MaxPool Indices: 0 row-major, 1 column-major */
	float momentum;    /* BatchNormalization training mode */
	int training;      /* BatchNormalization training_mode */
};

enum ops_auto_pad {
	OPS_PAD_NOTSET,
	OPS_PAD_VALID,
	OPS_PAD_SAME_UPPER,
	OPS_PAD_SAME_LOWER,
};

struct ops_kernel;

/* One node of a loaded graph. Names point into the model's storage. */
struct ops_node {
	const char *name;
	const char *op_type;
	const struct ops_kernel *kernel;
	int opset; /* of the default domain */
	struct ops_params p;
	size_t n_in, n_out;
	int *in;                    /* value slots, -1 for an omitted optional input */
	int *out;                   /* value slots */
	struct ops_conv_plan *conv; /* Conv with a direct kernel planned at load, or NULL */
	float *gemm_bt; /* Gemm with a constant B and transB: B^T [K][N], packed at load */
};

/*
 * The direct convolution (ops_nn.c): for a Conv node with a constant 4-D
 * float weight whose values are all finite, group 1, strides and dilations 1
 * and output channels a multiple of 8, the weights are repacked at load as
 * [C][KH][KW][M], and a run sums every output pixel for eight output channels
 * per vector over the taps inside the input (no unfolded copy; the taps in
 * the zero padding add exactly 0 with finite weights). The loader may fuse a
 * following Relu and then a MaxPool without padding into the node
 * (ops_conv_fuse_*) when nothing else reads the intermediate values.
 */
struct ops_conv_plan;
/*
 * Plans n (a prepared Conv) with its weight tensor w: returns 0 and sets
 * n->conv when the direct kernel applies, 0 leaving n->conv NULL when it does
 * not, -1 on allocation failure.
 */
int ops_conv_plan(struct ops_node *n, const struct tensor *w);
/* Fuses a Relu (pool) node into planned conv node n: 0, or -1 if it cannot. */
int ops_conv_fuse_relu(struct ops_node *n);
int ops_conv_fuse_pool(struct ops_node *n, const struct ops_node *pool);
/* Frees a plan (NULL is fine). */
void ops_conv_plan_free(struct ops_conv_plan *cp);
/*
 * Plans a prepared Gemm node n with its constant B: for transB=1 (and
 * transA=0), stores B^T as n->gemm_bt so that a run multiplies rows of A
 * against contiguous rows of B^T, eight outputs per vector (the sum over k
 * in order, one k at a time, for a single row of A). Returns 0 (planned or
 * not), -1 on allocation failure. The caller frees n->gemm_bt.
 */
int ops_gemm_plan(struct ops_node *n, const struct tensor *b);
/*
 * Runs a planned Conv: x [N,C,H,W], optional bias [M]; *out is the new output
 * tensor. Returns 0, or -1 with err.
 */
int ops_conv_run(const struct ops_node *n, const struct tensor *x, const struct tensor *b,
                 struct tensor **out, char *err, size_t errlen);

/*
 * prepare: called once at load with the node's attributes and the dtypes of
 * its inputs (TENSOR_UNDEFINED for an omitted optional input). Fills n->p and
 * out_types[0..n->n_out-1]. Returns 0, or -1 with err saying why the node
 * cannot run ("auto_pad=SAME_LOWER not supported"); the caller adds the node
 * name and operator.
 *
 * run: in[i] is NULL for an omitted optional input. Sets out[0..n_out-1] to
 * new tensors (the caller owns them, and frees any left set after a failure).
 * Returns 0, or -1 with err (e.g. a shape mismatch).
 */
struct ops_kernel {
	const char *op_type;
	int min_in, max_in; /* max_in -1 = variadic */
	int min_out, max_out;
	int (*prepare)(struct ops_node *n, const Onnx__NodeProto *np,
	               const enum tensor_dtype *in_types, enum tensor_dtype *out_types, char *err,
	               size_t errlen);
	int (*run)(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
	           char *err, size_t errlen);
	const void *impl; /* family-specific: the element function of a unary op, ... */
};

/* The kernel for an operator of the default ONNX domain, or NULL. */
const struct ops_kernel *ops_find(const char *op_type);
/* Tables of each family (NULL-terminated by op_type), gathered by ops_find. */
extern const struct ops_kernel ops_elementwise_kernels[];
extern const struct ops_kernel ops_linalg_kernels[];
extern const struct ops_kernel ops_nn_kernels[];
extern const struct ops_kernel ops_shape_kernels[];
extern const struct ops_kernel ops_reduce_kernels[];
extern const struct ops_kernel ops_logic_kernels[];
extern const struct ops_kernel ops_tensor_kernels[];
extern const struct ops_kernel ops_misc_kernels[];
extern const struct ops_kernel ops_extra_kernels[];
extern const struct ops_kernel ops_resize_kernels[];

/* Attribute helpers: the attribute named name of np, or NULL. */
const Onnx__AttributeProto *ops_attr(const Onnx__NodeProto *np, const char *name);
/*
 * Read an INT / FLOAT / STRING / INTS attribute, or the default when absent.
 * Return 0, or -1 with err when the attribute has the wrong type or (INTS)
 * more than max values.
 */
int ops_attr_int(const Onnx__NodeProto *np, const char *name, int64_t def, int64_t *out, char *err,
                 size_t errlen);
int ops_attr_float(const Onnx__NodeProto *np, const char *name, float def, float *out, char *err,
                   size_t errlen);
/*
 * Advance a row-major index idx over dims (ndim of them), like an odometer:
 * returns 1, or 0 when it wrapped around to all zeros.
 */
int ops_index_next(int64_t *idx, const int64_t *dims, int ndim);

int ops_attr_string(const Onnx__NodeProto *np, const char *name, const char *def, char *out,
                    size_t outlen, char *err, size_t errlen);
int ops_attr_ints(const Onnx__NodeProto *np, const char *name, int64_t *out, int max, int *n,
                  char *err, size_t errlen);

/*
 * Eight floats as one value (GCC vector extensions: two SSE registers in the
 * baseline build, one AVX register where a kernel is built for AVX2). Load
 * and store with the macros, unaligned; a function taking or returning one
 * would change the calling convention between those builds.
 */
typedef float ops_v8f __attribute__((vector_size(32)));
#define OPS_V8_LOAD(v, p)  memcpy(&(v), (p), sizeof(ops_v8f))
#define OPS_V8_STORE(p, v) memcpy((p), &(v), sizeof(ops_v8f))

/*
 * Y[M,N] = op(A) op(B) in float32 (op = transpose when ta/tb); Y need not be
 * zeroed. Used by Gemm, MatMul and Conv.
 */
void ops_gemm(int ta, int tb, size_t M, size_t N, size_t K, const float *A, const float *B,
              float *Y);
/*
 * Y[M,N] = A B + bias, bias[i] added to row i after its product (bias may be
 * NULL): the same floats as ops_gemm(0, 0, ...) followed by that addition.
 */
void ops_gemm_bias(size_t M, size_t N, size_t K, const float *A, const float *B, const float *bias,
                   float *Y);

/* Kernels worth a second build for AVX2 (picked once at run time, GCC on x86-64). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define OPS_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define OPS_SIMD_CLONES
#endif

/* Shape helpers. */
/* "[2,3,4]" into buf; returns buf. */
const char *ops_shape_str(const int64_t *dims, int ndim, char *buf, size_t len);
/* Normalize axis (may be negative) against rank; -1 with err if out of range. */
int ops_axis(int64_t axis, int rank, int64_t *out, char *err, size_t errlen);
/*
 * numpy broadcast of a and b into out (rank max of both); returns 0 or -1 with
 * err naming both shapes.
 */
int ops_broadcast_shape(const struct tensor *a, const struct tensor *b, int64_t *out, int *ndim,
                        char *err, size_t errlen);
/*
 * numpy broadcasting of up to OPS_BCAST_MAX operands: ops_bcast_init computes
 * the output shape (b->dims, b->ndim) and each operand's strides (0 where it
 * broadcasts); -1 with err if the shapes do not broadcast. ops_bcast_run then
 * calls row once per innermost output row with the byte addresses of each
 * operand's first element, their innermost element strides (0 or 1) and the
 * row length.
 */
#define OPS_BCAST_MAX 4
struct ops_bcast {
	int ndim;
	int64_t dims[TENSOR_MAX_DIMS];
	size_t n;
	size_t st[OPS_BCAST_MAX][TENSOR_MAX_DIMS];
};
int ops_bcast_init(struct ops_bcast *b, const struct tensor *const *t, size_t n,
                   const int64_t *extra, int extra_ndim, char *err, size_t errlen);
void ops_bcast_run(const struct ops_bcast *b, const struct tensor *const *t, struct tensor *out,
                   void (*row)(const void *ctx, char *o, const char *const *in,
                               const size_t *stride, size_t len),
                   const void *ctx);

/*
 * Lower the per-tensor limit below OPS_TENSOR_MAX_BYTES (0 restores it). Set it
 * once before any run; runs read it without locking.
 */
void ops_set_tensor_limit(size_t bytes);
/* Allocate an output tensor; -1 with err on failure or above the tensor limit. */
int ops_new(struct tensor **out, enum tensor_dtype dtype, int ndim, const int64_t *dims, char *err,
            size_t errlen);
/* Same as ops_new with the data uninitialized: for kernels that write every element. */
int ops_new_dense(struct tensor **out, enum tensor_dtype dtype, int ndim, const int64_t *dims,
                  char *err, size_t errlen);
/* Element count of a shape. */
size_t ops_numel(const int64_t *dims, int ndim);
/* Reads element i of an integer tensor (INT64 or INT32) as int64. */
int64_t ops_get_int(const struct tensor *t, size_t i);
/* Requires dtype to be one of the listed (0-terminated); -1 with err otherwise. */
int ops_require_dtype(enum tensor_dtype t, const char *what, const enum tensor_dtype *ok, char *err,
                      size_t errlen);
/* Name of an ONNX data type for messages ("FLOAT", "INT64", "FLOAT16"...). */
const char *ops_dtype_name(int onnx_type);

#endif
