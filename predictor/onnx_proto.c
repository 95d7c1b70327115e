/*
 * onnx_proto.c - file reading, protobuf failure diagnosis and TensorProto
 * conversion for the ONNX runtime (see onnx_proto.h), plus the public
 * onnx_tensor_load* functions of onnx.h that read one serialized TensorProto
 * (the format of the ONNX test suite's input_N.pb / output_N.pb).
 */
#include "onnx_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "onnx.h"
#include "ops/ops.h"

int onnx_proto_read_file(const char *path, void **buf, size_t *len, char *err, size_t errlen)
{
	*buf = NULL;
	*len = 0;
	FILE *f = fopen(path, "rb");
	char *data = NULL;
	struct stat st;
	if (!f) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		goto fail;
	}
	if (st.st_size == 0) {
		snprintf(err, errlen, "%s: empty file", path);
		goto fail;
	}
	if ((unsigned long long)st.st_size > ONNX_FILE_MAX) {
		snprintf(err, errlen, "%s: %lld bytes, above the limit of %zu", path,
		         (long long)st.st_size, ONNX_FILE_MAX);
		goto fail;
	}
	size_t n = (size_t)st.st_size;
	data = malloc(n);
	if (!data) {
		snprintf(err, errlen, "%s: out of memory reading %zu bytes", path, n);
		goto fail;
	}
	if (fread(data, 1, n, f) != n) {
		snprintf(err, errlen, "%s: read error", path);
		goto fail;
	}
	fclose(f);
	*buf = data;
	*len = n;
	return 0;
fail:
	free(data);
	fclose(f);
	return -1;
}

/* Reads a varint at *off; -1 if it runs past len or over 10 bytes. */
static int get_varint(const uint8_t *p, size_t len, size_t *off, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 70; shift += 7) {
		if (*off >= len)
			return -1;
		uint8_t b = p[(*off)++];
		if (shift < 64)
			*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return 0;
	}
	return -1;
}

void onnx_proto_explain(const char *name, const char *what, const void *buf, size_t len, char *err,
                        size_t errlen)
{
	const uint8_t *p = buf;
	size_t off = 0;
	if (len == 0) {
		snprintf(err, errlen, "%s: empty", name);
		return;
	}
	while (off < len) {
		size_t at = off;
		uint64_t key, v;
		if (get_varint(p, len, &off, &key)) {
			snprintf(err, errlen,
			         "%s: truncated or corrupt at byte %zu of %zu (field key)", name,
			         at, len);
			return;
		}
		uint64_t field = key >> 3;
		unsigned wt = (unsigned)(key & 7);
		if (field == 0 || wt == 3 || wt == 4 || wt > 5) {
			snprintf(err, errlen,
			         "%s: not %s: bad field key at byte %zu (field %llu, wire type %u)",
			         name, what, at, (unsigned long long)field, wt);
			return;
		}
		size_t need = wt == 1 ? 8 : (wt == 5 ? 4 : 0);
		if (wt == 0 && get_varint(p, len, &off, &v)) {
			snprintf(err, errlen, "%s: truncated at byte %zu of %zu (field %llu)", name,
			         at, len, (unsigned long long)field);
			return;
		}
		if (wt == 2) {
			if (get_varint(p, len, &off, &v)) {
				snprintf(err, errlen,
				         "%s: truncated at byte %zu of %zu (field %llu)", name, at,
				         len, (unsigned long long)field);
				return;
			}
			if (v > len - off) {
				snprintf(
				    err, errlen,
				    "%s: truncated: field %llu at byte %zu declares %llu bytes, "
				    "only %zu remain (file of %zu bytes)",
				    name, (unsigned long long)field, at, (unsigned long long)v,
				    len - off, len);
				return;
			}
			need = (size_t)v;
		}
		if (need > len - off) {
			snprintf(err, errlen, "%s: truncated at byte %zu of %zu (field %llu)", name,
			         at, len, (unsigned long long)field);
			return;
		}
		off += need;
	}
	snprintf(err, errlen,
	         "%s: not %s: a nested message is corrupt or fields have the wrong types", name,
	         what);
}

static int supported_dtype(int t)
{
	return t == TENSOR_FLOAT || t == TENSOR_UINT8 || t == TENSOR_INT8 || t == TENSOR_INT32 ||
	       t == TENSOR_INT64 || t == TENSOR_BOOL || t == TENSOR_DOUBLE || t == TENSOR_FLOAT16 ||
	       t == TENSOR_BFLOAT16;
}

/* Copies n little-endian elements of size esz into dst (host order). */
static void copy_le(void *dst, const uint8_t *src, size_t n, size_t esz)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	uint8_t *d = dst;
	for (size_t i = 0; i < n; i++)
		for (size_t b = 0; b < esz; b++)
			d[i * esz + b] = src[i * esz + esz - 1 - b];
#else
	memcpy(dst, src, n * esz);
#endif
}

struct tensor *onnx_proto_tensor(const Onnx__TensorProto *tp, const char *what, char *err,
                                 size_t errlen)
{
	int dt = tp->has_data_type ? tp->data_type : 0;
	if (!supported_dtype(dt)) {
		snprintf(err, errlen, "%s: dtype %s not supported", what, ops_dtype_name(dt));
		return NULL;
	}
	if ((tp->has_data_location &&
	     tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) ||
	    tp->n_external_data) {
		snprintf(err, errlen, "%s: external data not supported", what);
		return NULL;
	}
	if (tp->segment) {
		snprintf(err, errlen, "%s: segmented tensors not supported", what);
		return NULL;
	}
	if (tp->n_dims > TENSOR_MAX_DIMS) {
		snprintf(err, errlen, "%s: rank %zu above %d", what, tp->n_dims, TENSOR_MAX_DIMS);
		return NULL;
	}
	/* Count elements before allocating: the data present bounds the size. */
	size_t esz = tensor_dtype_size((enum tensor_dtype)dt), nelem = 1;
	for (size_t i = 0; i < tp->n_dims; i++) {
		if (tp->dims[i] < 0 ||
		    (tp->dims[i] > 0 && nelem > ONNX_FILE_MAX / (size_t)tp->dims[i])) {
			snprintf(err, errlen, "%s: bad dims", what);
			return NULL;
		}
		nelem *= (size_t)tp->dims[i];
	}
	size_t have;
	if (tp->has_raw_data)
		have = tp->raw_data.len / esz;
	else if (dt == TENSOR_FLOAT)
		have = tp->n_float_data;
	else if (dt == TENSOR_INT64)
		have = tp->n_int64_data;
	else if (dt == TENSOR_DOUBLE)
		have = tp->n_double_data;
	else
		have = tp->n_int32_data;
	if (have != nelem || (tp->has_raw_data && tp->raw_data.len != nelem * esz)) {
		snprintf(err, errlen, "%s: %zu elements expected from dims, data holds %zu", what,
		         nelem, have);
		return NULL;
	}
	struct tensor *t = tensor_new(tp->name && *tp->name ? tp->name : NULL,
	                              (enum tensor_dtype)dt, (int)tp->n_dims, tp->dims);
	if (!t) {
		snprintf(err, errlen, "%s: out of memory", what);
		return NULL;
	}
	if (nelem == 0) {
		/* nothing to copy (the data pointers may be NULL) */
	} else if (tp->has_raw_data) {
		copy_le(t->data, tp->raw_data.data, nelem, esz);
	} else if (dt == TENSOR_FLOAT) {
		memcpy(t->data, tp->float_data, nelem * esz);
	} else if (dt == TENSOR_INT64) {
		memcpy(t->data, tp->int64_data, nelem * esz);
	} else if (dt == TENSOR_DOUBLE) {
		memcpy(t->data, tp->double_data, nelem * esz);
	} else {
		for (size_t i = 0; i < nelem; i++) {
			int32_t v = tp->int32_data[i];
			if (dt == TENSOR_INT32)
				((int32_t *)t->data)[i] = v;
			else if (dt == TENSOR_FLOAT16 || dt == TENSOR_BFLOAT16)
				((uint16_t *)t->data)[i] = (uint16_t)v; /* the bit pattern */
			else if (dt == TENSOR_INT8)
				((int8_t *)t->data)[i] = (int8_t)v;
			else
				((uint8_t *)t->data)[i] = (uint8_t)v;
		}
	}
	return t;
}

struct tensor *onnx_tensor_load_buffer(const char *name, const void *buf, size_t len, char *err,
                                       size_t errlen)
{
	Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, len, buf);
	if (!tp) {
		onnx_proto_explain(name, "an ONNX TensorProto", buf, len, err, errlen);
		return NULL;
	}
	char what[256];
	snprintf(what, sizeof(what), "%s: tensor", name);
	struct tensor *t = onnx_proto_tensor(tp, what, err, errlen);
	onnx__tensor_proto__free_unpacked(tp, NULL);
	return t;
}

struct tensor *onnx_tensor_load(const char *path, char *err, size_t errlen)
{
	void *buf;
	size_t len;
	if (onnx_proto_read_file(path, &buf, &len, err, errlen))
		return NULL;
	struct tensor *t = onnx_tensor_load_buffer(path, buf, len, err, errlen);
	free(buf);
	return t;
}
