/*
 * onnx.c - placeholder until the runtime lands: refuses every model.
 */
#include "onnx.h"

#include <stdio.h>

struct onnx_model *onnx_model_load(const char *path, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: the ONNX runtime is not built yet", path);
	return NULL;
}
