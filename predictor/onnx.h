/*
 * onnx.h - load an ONNX model (protobuf-c) and run it in plain C float32.
 *
 * A loaded model is immutable: onnx_model_run() may be called from several
 * threads at once on the same model, each call allocating its own
 * intermediate tensors.
 */
#ifndef TURNOUT_ONNX_H
#define TURNOUT_ONNX_H

#include <stddef.h>

#include "tensor.h"

#define ONNX_ERR_MAX 512

struct onnx_model;

/*
 * A graph input or output as the model declares it: dims -1 = dynamic (a
 * symbolic dimension such as N); ndim -1 = the model gives no shape at all
 * (any rank); ndim 0 = a scalar.
 */
struct onnx_value_info {
	const char *name;
	enum tensor_dtype dtype;
	int ndim;
	int64_t dims[TENSOR_MAX_DIMS];
};

/*
 * Load the model at path. Returns a model (free with onnx_model_free) or NULL
 * with err saying why, naming the file: unreadable, truncated/corrupt
 * protobuf, or an operator this runtime cannot run ("node 'conv1' (Conv):
 * auto_pad=SAME_LOWER not supported").
 */
struct onnx_model *onnx_model_load(const char *path, char *err, size_t errlen);
/* Same from memory; name is used in messages. */
struct onnx_model *onnx_model_load_buffer(const char *name, const void *buf, size_t len, char *err,
                                          size_t errlen);
/* Free a model. Accepts NULL. */
void onnx_model_free(struct onnx_model *m);

size_t onnx_model_n_inputs(const struct onnx_model *m);
size_t onnx_model_n_outputs(const struct onnx_model *m);
const struct onnx_value_info *onnx_model_input(const struct onnx_model *m, size_t i);
const struct onnx_value_info *onnx_model_output(const struct onnx_model *m, size_t i);

/*
 * Run the graph. inputs[i] is bound to graph input i (in declaration order,
 * initializer-backed inputs excluded). On success returns 0 and sets
 * outputs[0..n_outputs-1] to new tensors in graph output order (caller frees
 * each with tensor_free); outputs must have room for onnx_model_n_outputs().
 * On failure returns -1, fills err (e.g. "input 'pixels': expected [N,64],
 * got [1,63]") and leaves no allocation behind.
 */
int onnx_model_run(const struct onnx_model *m, struct tensor *const *inputs, size_t n_inputs,
                   struct tensor **outputs, char *err, size_t errlen);

/*
 * Lower the largest tensor a run may create (default and maximum 1 GiB); a
 * run needing more fails with a message. Call once before any run (e.g. from
 * main, or a fuzzer); 0 restores the default.
 */
void onnx_set_tensor_limit(size_t bytes);

/*
 * Read one serialized ONNX TensorProto (as the ONNX test suite's
 * input_N.pb / output_N.pb files) into a new tensor (caller frees with
 * tensor_free). Returns NULL with err naming the file and the reason.
 */
struct tensor *onnx_tensor_load(const char *path, char *err, size_t errlen);
/* Same from memory; name is used in messages. */
struct tensor *onnx_tensor_load_buffer(const char *name, const void *buf, size_t len, char *err,
                                       size_t errlen);

#endif
