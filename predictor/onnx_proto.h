/*
 * onnx_proto.h - the protobuf side of the ONNX runtime (internal to
 * predictor/onnx*.c): reading a file with a size limit, explaining why
 * protobuf-c refused a buffer, and converting a TensorProto into a tensor.
 */
#ifndef TURNOUT_ONNX_PROTO_H
#define TURNOUT_ONNX_PROTO_H

#include <stddef.h>

#include "onnx.pb-c.h"
#include "tensor.h"

/* Largest model or tensor file loaded (protobuf-c needs about twice this). */
#define ONNX_FILE_MAX ((size_t)512 << 20)

/*
 * Read the whole file at path into *buf (caller frees) and *len. Returns 0,
 * or -1 with err naming the file and the reason (unreadable, empty, over
 * ONNX_FILE_MAX).
 */
int onnx_proto_read_file(const char *path, void **buf, size_t *len, char *err, size_t errlen);

/*
 * Say why protobuf-c could not unpack buf as a message: walks the top-level
 * wire format and names the first truncated or malformed field. Writes
 * "<name>: <reason>" to err.
 */
void onnx_proto_explain(const char *name, const char *what, const void *buf, size_t len, char *err,
                        size_t errlen);

/*
 * Convert a TensorProto (raw_data little-endian, or the typed repeated
 * fields) into a new tensor named after it (caller frees with tensor_free).
 * Returns NULL with err (prefixed by what, e.g. "initializer 'W'") for an
 * unsupported dtype, external data, a data size that does not match the dims,
 * or allocation failure.
 */
struct tensor *onnx_proto_tensor(const Onnx__TensorProto *tp, const char *what, char *err,
                                 size_t errlen);

#endif
