/*
 * fuzz_onnx_load.c - libFuzzer driver for the ONNX loader: any byte string
 * given to onnx_model_load_buffer must load or be refused with a message,
 * never crash, leak or trip a sanitizer. A model that loads is also run once
 * on small inputs made from the same bytes (symbolic dimensions 2, at most
 * 4096 elements per input, 1 MiB per tensor), so attribute values that pass
 * the loader are exercised by the kernels too. Seeds:
 * tests/fuzz/corpus/fuzz_onnx_load/ (small models from the ONNX node tests
 * and truncations of them).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "onnx.h"

#define FUZZ_MAX_IO    16
#define FUZZ_MAX_ELEMS 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An input tensor shaped like the declaration, filled from the fuzz bytes. */
static struct tensor *make_input(const struct onnx_value_info *vi, const uint8_t *data, size_t size)
{
	int64_t dims[TENSOR_MAX_DIMS] = {2};
	int ndim = vi->ndim < 0 ? 1 : vi->ndim;
	size_t n = 1;
	for (int d = 0; d < ndim && vi->ndim >= 0; d++) {
		dims[d] = vi->dims[d] < 0 ? 2 : vi->dims[d];
		if (dims[d] > FUZZ_MAX_ELEMS)
			return NULL;
		n *= (size_t)dims[d];
		if (n > FUZZ_MAX_ELEMS)
			return NULL;
	}
	struct tensor *t = tensor_new(vi->name, vi->dtype, ndim, dims);
	for (size_t i = 0; t && i < t->nelem; i++) {
		int v = size ? (int)data[i % size] - 128 : 0;
		switch (t->dtype) {
		case TENSOR_FLOAT:
			((float *)t->data)[i] = (float)v / 16.0f;
			break;
		case TENSOR_DOUBLE:
			((double *)t->data)[i] = v / 16.0;
			break;
		case TENSOR_INT64:
			((int64_t *)t->data)[i] = v % 5;
			break;
		case TENSOR_INT32:
			((int32_t *)t->data)[i] = v % 5;
			break;
		default:
			((uint8_t *)t->data)[i] = (uint8_t)(v & 1);
			break;
		}
	}
	return t;
}

static void run_once(const struct onnx_model *m, const uint8_t *data, size_t size)
{
	size_t ni = onnx_model_n_inputs(m), no = onnx_model_n_outputs(m);
	struct tensor *in[FUZZ_MAX_IO] = {0}, *out[FUZZ_MAX_IO] = {0};
	char err[ONNX_ERR_MAX];
	if (ni > FUZZ_MAX_IO || no > FUZZ_MAX_IO)
		return;
	for (size_t i = 0; i < ni; i++)
		if (!(in[i] = make_input(onnx_model_input(m, i), data, size)))
			goto out;
	if (onnx_model_run(m, in, ni, out, err, sizeof(err)) == 0) {
		for (size_t i = 0; i < no; i++)
			tensor_free(out[i]);
	} else if (strlen(err) < 5) {
		__builtin_trap(); /* a failed run always says why */
	}
out:
	for (size_t i = 0; i < ni; i++)
		tensor_free(in[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[ONNX_ERR_MAX];
	err[0] = 0;
	onnx_set_tensor_limit((size_t)1 << 20);
	struct onnx_model *m = onnx_model_load_buffer("fuzz.onnx", data, size, err, sizeof(err));
	if (!m) {
		if (strlen(err) < 10) /* a refusal always says why */
			__builtin_trap();
		return 0;
	}
	run_once(m, data, size);
	onnx_model_free(m);
	return 0;
}
