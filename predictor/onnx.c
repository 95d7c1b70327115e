/*
 * onnx.c - placeholder until the runtime lands: refuses every model, but
 * provides every function of onnx.h so the server links.
 */
#include "onnx.h"

#include <stdio.h>

struct onnx_model *onnx_model_load(const char *path, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: the ONNX runtime is not built yet", path);
	return NULL;
}

struct onnx_model *onnx_model_load_buffer(const char *name, const void *buf, size_t len,
                                          char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: the ONNX runtime is not built yet", name);
	return NULL;
}

void onnx_model_free(struct onnx_model *m)
{
}

size_t onnx_model_n_inputs(const struct onnx_model *m)
{
	return 0;
}

size_t onnx_model_n_outputs(const struct onnx_model *m)
{
	return 0;
}

const struct onnx_value_info *onnx_model_input(const struct onnx_model *m, size_t i)
{
	return NULL;
}

const struct onnx_value_info *onnx_model_output(const struct onnx_model *m, size_t i)
{
	return NULL;
}

int onnx_model_run(const struct onnx_model *m, struct tensor *const *inputs, size_t n_inputs,
                   struct tensor **outputs, char *err, size_t errlen)
{
	snprintf(err, errlen, "the ONNX runtime is not built yet");
	return -1;
}
