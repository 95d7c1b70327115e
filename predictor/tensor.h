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

#define TENSOR_MAX_DIMS 8

enum tensor_dtype {
	TENSOR_UNDEFINED = 0,
	TENSOR_FLOAT = 1, /* values match onnx TensorProto.DataType */
	TENSOR_UINT8 = 2,
	TENSOR_INT8 = 3,
	TENSOR_INT32 = 6,
	TENSOR_INT64 = 7,
	TENSOR_BOOL = 9,
	TENSOR_DOUBLE = 11,
};

struct tensor {
	char *name; /* owned, may be NULL */
	enum tensor_dtype dtype;
	int ndim;
	int64_t dims[TENSOR_MAX_DIMS];
	void *data; /* owned, nelem * tensor_dtype_size(dtype) bytes */
	size_t nelem;
};

/* Bytes per element, 0 for TENSOR_UNDEFINED. */
size_t tensor_dtype_size(enum tensor_dtype t);
/* "FP32", "INT64", ... (KServe V2 datatype names); NULL if none. */
const char *tensor_dtype_v2_name(enum tensor_dtype t);

/*
 * Allocate a tensor of the given type and shape, data zeroed. name is copied
 * (may be NULL). Returns NULL on allocation failure or a bad shape (negative
 * dims, more than TENSOR_MAX_DIMS, element count overflow). Free with tensor_free.
 */
struct tensor *tensor_new(const char *name, enum tensor_dtype dtype, int ndim, const int64_t *dims);
/* Free a tensor and its data. Accepts NULL. */
void tensor_free(struct tensor *t);

#endif
