/*
 * v2.h - the KServe V2 / Open Inference Protocol JSON codec of the predictor.
 *
 * Turns an infer request body into tensors checked against the model's
 * signature (name, datatype, shape, element count, finite values), and renders
 * responses (infer, metadata, errors) straight into an evbuffer. It knows
 * nothing about HTTP or threads: the server (server.c) calls it, the unit test
 * and the fuzzer drive it directly.
 */
#ifndef TURNOUT_V2_H
#define TURNOUT_V2_H

#include <stddef.h>
#include <stdint.h>

#include "onnx.h"
#include "tensor.h"

struct evbuffer;

#define V2_ERR_MAX 512
/* Hard limits on what one request may carry. */
#define V2_MAX_INPUTS     64
#define V2_MAX_ELEMENTS   (16u * 1024 * 1024)
#define V2_MAX_ID_LEN     256
#define V2_MAX_JSON_DEPTH 64

/* What the codec needs to know about the served model (all borrowed). */
struct v2_sig {
	const char *model_name;
	const char *model_version;
	const struct onnx_value_info *const *inputs;
	size_t n_inputs;
	const struct onnx_value_info *const *outputs;
	size_t n_outputs;
};

/* A parsed, validated infer request. */
struct v2_request {
	char *id;               /* owned; NULL when the request had none */
	struct tensor **inputs; /* owned, n_inputs, in signature order */
	size_t n_inputs;
	unsigned char *want; /* owned, n_outputs flags: 1 = send this output */
	size_t n_outputs;
	int64_t batch; /* first dimension of the first input (1 for a scalar) */
};

/*
 * Parse and validate an infer request body (len bytes, need not be
 * NUL-terminated) against sig. Returns a new request (free with
 * v2_request_free) or NULL with err saying what and where, e.g.
 * "inputs[0].shape: expected [N,64], got [1,63]" or
 * "malformed JSON at line 1, column 7: ...".
 */
struct v2_request *v2_request_parse(const struct v2_sig *sig, const char *body, size_t len,
                                    char *err, size_t errlen);
/*
 * The same, always through the general (jansson) parser. v2_request_parse
 * first tries a strict single-pass scanner for the common case and falls
 * back to this one for anything else, including every error; tests and the
 * fuzzer call both and check that they agree.
 */
struct v2_request *v2_request_parse_general(const struct v2_sig *sig, const char *body, size_t len,
                                            char *err, size_t errlen);
/* Free a request and everything it owns. Accepts NULL. */
void v2_request_free(struct v2_request *req);

/*
 * Render the infer response for req: model_name, model_version, id (if the
 * request had one) and the wanted outputs (outputs[i] is graph output i, may
 * be NULL when not wanted). Appends to out. Returns 0, or -1 when out cannot
 * grow (out then holds a partial body the caller must discard).
 */
int v2_response_render(const struct v2_sig *sig, const struct v2_request *req,
                       struct tensor *const *outputs, struct evbuffer *out);

/* Append {"error": "msg"} (msg JSON-escaped) to out. Returns 0 or -1. */
int v2_error_render(struct evbuffer *out, const char *msg);
/* Append the model metadata object (name, versions, platform, inputs, outputs). */
int v2_model_metadata_render(const struct v2_sig *sig, struct evbuffer *out);
/* Append s as a JSON string literal (quotes included, escaped). Returns 0 or -1. */
int v2_json_string(struct evbuffer *out, const char *s);
/* Room v2_format_float needs: "-1.23456789e-45" and a NUL. */
#define V2_FLOAT_MAX 24
/*
 * Write f as a JSON number with 9 significant digits (enough to read back
 * the same float32), NUL-terminated, into buf (V2_FLOAT_MAX bytes); NaN and
 * infinities become null. Returns the length.
 */
size_t v2_format_float(char *buf, float f);
/*
 * Format a signature shape like "[N,64]" (dynamic dims shown as N) into buf.
 * Returns buf.
 */
char *v2_shape_str(char *buf, size_t buflen, int ndim, const int64_t *dims);

#endif
