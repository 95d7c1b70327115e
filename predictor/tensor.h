/*
 * tensor.h - dense n-dimensional tensors for the predictor runtime.
 *
 * A tensor owns its data buffer (row-major, C order) and its name. Shapes have
 * at most TENSOR_MAX_DIMS dimensions; a dimension of -1 means "unknown" and
 * only appears in model signatures, never in a tensor holding data.
 */
#ifndef TURNOUT_TENSOR_H
#define TURNOUT_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define TENSOR_MAX_DIMS        8
#define TENSOR_CACHE_SLOTS     32
#define TENSOR_CACHE_MAX_BYTES ((size_t)64 << 10)

enum tensor_dtype {
	TENSOR_UNDEFINED = 0,
	TENSOR_FLOAT = 1, /* values match onnx TensorProto.DataType */
	TENSOR_UINT8 = 2,
	TENSOR_INT8 = 3,
	TENSOR_INT32 = 6,
	TENSOR_INT64 = 7,
	TENSOR_BOOL = 9,
	TENSOR_FLOAT16 = 10, /* IEEE half; only Cast and CastLike compute on it */
	TENSOR_DOUBLE = 11,
	TENSOR_BFLOAT16 = 16, /* bfloat16; only Cast and CastLike compute on it */
};

struct tensor {
	char *name; /* owned, may be NULL */
	enum tensor_dtype dtype;
	int ndim;
	int64_t dims[TENSOR_MAX_DIMS];
	void *data; /* owned, nelem * tensor_dtype_size(dtype) bytes */
	size_t nelem;
	size_t cap; /* private to tensor.c: bytes the allocation holds for data */
};

/* Bytes per element, 0 for TENSOR_UNDEFINED. */
size_t tensor_dtype_size(enum tensor_dtype t);
/* "FP32", "INT64", ... (KServe V2 datatype names); NULL if none. */
const char *tensor_dtype_v2_name(enum tensor_dtype t);

/*
 * 16-bit floats, as stored in FLOAT16 / BFLOAT16 tensors (the bit pattern in a
 * uint16_t). *_to_float is exact. *_from_double rounds to nearest, ties to
 * even, in one step; values beyond the largest finite number become infinity
 * with the sign kept, NaN stays NaN (a quiet NaN), and results below the
 * smallest normal number become subnormals or signed zero. No failure cases.
 */
float tensor_f16_to_float(uint16_t h);
uint16_t tensor_f16_from_double(double d);
float tensor_bf16_to_float(uint16_t h);
uint16_t tensor_bf16_from_double(double d);

/*
 * Allocate a tensor of the given type and shape, data zeroed. name is copied
 * (may be NULL). Returns NULL on allocation failure or a bad shape (negative
 * dims, more than TENSOR_MAX_DIMS, element count overflow). Free with tensor_free.
 */
struct tensor *tensor_new(const char *name, enum tensor_dtype dtype, int ndim, const int64_t *dims);
/*
 * Same as tensor_new, but the data is left uninitialized: for a caller that
 * writes every element before anything reads it.
 */
struct tensor *tensor_new_uninit(const char *name, enum tensor_dtype dtype, int ndim,
                                 const int64_t *dims);
/*
 * Free a tensor and its data. Accepts NULL. A tensor and its data are one
 * allocation; a freed one of at most TENSOR_CACHE_MAX_BYTES may be kept in a
 * small per-thread cache (TENSOR_CACHE_SLOTS) for the thread's next
 * tensor_new, so that a model run in a loop does not go to malloc. The cache
 * is freed when the thread exits, and is off in AddressSanitizer builds so
 * that a use after free is still caught.
 */
void tensor_free(struct tensor *t);

#endif
