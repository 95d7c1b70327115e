/*
 * tensor.c - dense tensors (see tensor.h).
 */
#include "tensor.h"

#include <stdlib.h>
#include <string.h>

size_t tensor_dtype_size(enum tensor_dtype t)
{
	switch (t) {
	case TENSOR_FLOAT:
	case TENSOR_INT32:
		return 4;
	case TENSOR_INT64:
	case TENSOR_DOUBLE:
		return 8;
	case TENSOR_UINT8:
	case TENSOR_INT8:
	case TENSOR_BOOL:
		return 1;
	case TENSOR_UNDEFINED:
		break;
	}
	return 0;
}

const char *tensor_dtype_v2_name(enum tensor_dtype t)
{
	switch (t) {
	case TENSOR_FLOAT:
		return "FP32";
	case TENSOR_INT32:
		return "INT32";
	case TENSOR_INT64:
		return "INT64";
	case TENSOR_DOUBLE:
		return "FP64";
	case TENSOR_UINT8:
		return "UINT8";
	case TENSOR_INT8:
		return "INT8";
	case TENSOR_BOOL:
		return "BOOL";
	case TENSOR_UNDEFINED:
		break;
	}
	return NULL;
}

struct tensor *tensor_new(const char *name, enum tensor_dtype dtype, int ndim, const int64_t *dims)
{
	size_t esize = tensor_dtype_size(dtype);
	if (esize == 0 || ndim < 0 || ndim > TENSOR_MAX_DIMS)
		return NULL;
	size_t nelem = 1;
	for (int i = 0; i < ndim; i++) {
		if (dims[i] < 0)
			return NULL;
		if (dims[i] != 0 && nelem > SIZE_MAX / esize / (size_t)dims[i])
			return NULL;
		nelem *= (size_t)dims[i];
	}
	struct tensor *t = calloc(1, sizeof(*t));
	if (!t)
		goto fail;
	t->dtype = dtype;
	t->ndim = ndim;
	if (ndim)
		memcpy(t->dims, dims, sizeof(dims[0]) * (size_t)ndim);
	t->nelem = nelem;
	/* calloc(0) may return NULL; keep one byte so data is never NULL. */
	t->data = calloc(nelem ? nelem : 1, esize);
	if (!t->data)
		goto fail;
	if (name && !(t->name = strdup(name)))
		goto fail;
	return t;
fail:
	tensor_free(t);
	return NULL;
}

void tensor_free(struct tensor *t)
{
	if (!t)
		return;
	free(t->name);
	free(t->data);
	free(t);
}
