/*
 * fuzz_onnx_load.c - libFuzzer driver for the ONNX loader: any byte string
 * given to onnx_model_load_buffer must load or be refused with a message,
 * never crash, leak or trip a sanitizer. A model that loads has its
 * signature read back. Seeds: tests/fuzz/corpus/fuzz_onnx_load/ (small
 * models from the ONNX node tests and truncations of them).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[ONNX_ERR_MAX];
	err[0] = 0;
	struct onnx_model *m = onnx_model_load_buffer("fuzz.onnx", data, size, err, sizeof(err));
	if (!m) {
		/* A refusal always says why. */
		if (strlen(err) < 10)
			__builtin_trap();
		return 0;
	}
	size_t sum = 0;
	for (size_t i = 0; i < onnx_model_n_inputs(m); i++)
		sum += strlen(onnx_model_input(m, i)->name);
	for (size_t i = 0; i < onnx_model_n_outputs(m); i++)
		sum += strlen(onnx_model_output(m, i)->name);
	(void)sum;
	onnx_model_free(m);
	return 0;
}
