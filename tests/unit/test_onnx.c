/*
 * test_onnx.c - unit tests for the loader and run plan (predictor/onnx.c,
 * onnx_proto.c): refusals at load name the file and the reason (missing,
 * empty, truncated, not a model, no graph, unknown operator with node name,
 * unsupported attribute value, opset, undefined input, cycle); initializers
 * in raw_data and typed fields, Constant nodes, unsorted nodes; run-time
 * errors; concurrent runs on one model.
 *
 * Models are built in memory with protobuf-c (struct mb) and packed, so
 * each case states its graph.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "onnx.h"
#include "onnx.pb-c.h"

#define MODELS TURNOUT_SRC_DIR "/predictor/models/"
#define MB_MAX 8

/* A model under construction; everything lives in this struct. */
struct mb {
	Onnx__ModelProto model;
	Onnx__GraphProto graph;
	Onnx__OperatorSetIdProto opset, *opsetp[1];
	Onnx__NodeProto node[MB_MAX], *nodep[MB_MAX];
	char *node_io[MB_MAX][8];
	Onnx__AttributeProto attr[MB_MAX][4], *attrp[MB_MAX][4];
	Onnx__ValueInfoProto vi[MB_MAX], *inp[MB_MAX], *outp[MB_MAX];
	Onnx__TypeProto tp[MB_MAX];
	Onnx__TypeProto__Tensor tt[MB_MAX];
	Onnx__TensorShapeProto shp[MB_MAX];
	Onnx__TensorShapeProto__Dimension dim[MB_MAX][4], *dimp[MB_MAX][4];
	Onnx__TensorProto init[MB_MAX], *initp[MB_MAX];
	int64_t init_dims[MB_MAX][4];
	size_t nvi;
};

static void mb_init(struct mb *b, int64_t opset)
{
	Onnx__ModelProto m = ONNX__MODEL_PROTO__INIT;
	Onnx__GraphProto g = ONNX__GRAPH_PROTO__INIT;
	Onnx__OperatorSetIdProto o = ONNX__OPERATOR_SET_ID_PROTO__INIT;
	memset(b, 0, sizeof(*b));
	b->model = m;
	b->graph = g;
	b->opset = o;
	b->opset.domain = "";
	b->opset.has_version = 1;
	b->opset.version = opset;
	b->opsetp[0] = &b->opset;
	b->model.n_opset_import = 1;
	b->model.opset_import = b->opsetp;
	b->model.has_ir_version = 1;
	b->model.ir_version = 7;
	b->model.graph = &b->graph;
	b->graph.node = b->nodep;
	b->graph.input = b->inp;
	b->graph.output = b->outp;
	b->graph.initializer = b->initp;
}

/* A value declaration; a dim of -1 becomes the symbolic "N". */
static Onnx__ValueInfoProto *mb_vi(struct mb *b, const char *name, int dtype, int ndim,
                                   const int64_t *dims)
{
	size_t i = b->nvi++;
	Onnx__ValueInfoProto vi = ONNX__VALUE_INFO_PROTO__INIT;
	Onnx__TypeProto tp = ONNX__TYPE_PROTO__INIT;
	Onnx__TypeProto__Tensor tt = ONNX__TYPE_PROTO__TENSOR__INIT;
	Onnx__TensorShapeProto sh = ONNX__TENSOR_SHAPE_PROTO__INIT;
	b->vi[i] = vi;
	b->tp[i] = tp;
	b->tt[i] = tt;
	b->shp[i] = sh;
	b->vi[i].name = (char *)name;
	b->vi[i].type = &b->tp[i];
	b->tp[i].value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
	b->tp[i].tensor_type = &b->tt[i];
	b->tt[i].has_elem_type = 1;
	b->tt[i].elem_type = dtype;
	if (ndim >= 0) {
		b->tt[i].shape = &b->shp[i];
		b->shp[i].n_dim = (size_t)ndim;
		b->shp[i].dim = b->dimp[i];
		for (int d = 0; d < ndim; d++) {
			Onnx__TensorShapeProto__Dimension dm =
			    ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
			b->dim[i][d] = dm;
			if (dims[d] < 0) {
				b->dim[i][d].value_case =
				    ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
				b->dim[i][d].dim_param = "N";
			} else {
				b->dim[i][d].value_case =
				    ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
				b->dim[i][d].dim_value = dims[d];
			}
			b->dimp[i][d] = &b->dim[i][d];
		}
	}
	return &b->vi[i];
}

static void mb_input(struct mb *b, const char *name, int ndim, const int64_t *dims)
{
	b->inp[b->graph.n_input++] = mb_vi(b, name, TENSOR_FLOAT, ndim, dims);
}

static void mb_output(struct mb *b, const char *name, int dtype)
{
	b->outp[b->graph.n_output++] = mb_vi(b, name, dtype, -1, NULL);
}

/* A node; ins and outs are NULL-terminated lists of names. */
static Onnx__NodeProto *mb_node(struct mb *b, const char *op, const char *name,
                                const char *const *ins, const char *const *outs)
{
	size_t i = b->graph.n_node++;
	Onnx__NodeProto n = ONNX__NODE_PROTO__INIT;
	b->node[i] = n;
	b->nodep[i] = &b->node[i];
	Onnx__NodeProto *np = &b->node[i];
	np->op_type = (char *)op;
	np->name = (char *)name;
	np->input = b->node_io[i];
	while (ins[np->n_input])
		b->node_io[i][np->n_input] = (char *)ins[np->n_input], np->n_input++;
	np->output = b->node_io[i] + np->n_input;
	while (outs[np->n_output])
		np->output[np->n_output] = (char *)outs[np->n_output], np->n_output++;
	np->attribute = b->attrp[i];
	return np;
}

static Onnx__AttributeProto *mb_attr(struct mb *b, Onnx__NodeProto *np, const char *name, int type)
{
	size_t i = (size_t)(np - b->node), k = np->n_attribute++;
	Onnx__AttributeProto a = ONNX__ATTRIBUTE_PROTO__INIT;
	b->attr[i][k] = a;
	b->attrp[i][k] = &b->attr[i][k];
	b->attr[i][k].name = (char *)name;
	b->attr[i][k].has_type = 1;
	b->attr[i][k].type = type;
	return &b->attr[i][k];
}

/* A float initializer, in raw_data (little-endian) or float_data. */
static void mb_init_f(struct mb *b, const char *name, int ndim, const int64_t *dims, float *v,
                      int raw)
{
	size_t i = b->graph.n_initializer++, n = 1;
	Onnx__TensorProto t = ONNX__TENSOR_PROTO__INIT;
	b->init[i] = t;
	b->initp[i] = &b->init[i];
	Onnx__TensorProto *tp = &b->init[i];
	tp->name = (char *)name;
	tp->has_data_type = 1;
	tp->data_type = TENSOR_FLOAT;
	tp->n_dims = (size_t)ndim;
	tp->dims = b->init_dims[i];
	for (int d = 0; d < ndim; d++)
		n *= (size_t)(b->init_dims[i][d] = dims[d]);
	if (raw) {
		tp->has_raw_data = 1;
		tp->raw_data.data = (uint8_t *)v;
		tp->raw_data.len = n * sizeof(float);
	} else {
		tp->n_float_data = n;
		tp->float_data = v;
	}
}

static struct onnx_model *mb_load(struct mb *b, char *err, size_t errlen)
{
	size_t len = onnx__model_proto__get_packed_size(&b->model);
	uint8_t *buf = malloc(len ? len : 1);
	assert_non_null(buf);
	onnx__model_proto__pack(&b->model, buf);
	struct onnx_model *m = onnx_model_load_buffer("mem.onnx", buf, len, err, errlen);
	free(buf);
	return m;
}

static void expect_refused(struct mb *b, const char *a, const char *c)
{
	char err[ONNX_ERR_MAX] = "";
	struct onnx_model *m = mb_load(b, err, sizeof(err));
	print_message("%s\n", err);
	assert_null(m);
	assert_non_null(strstr(err, "mem.onnx: "));
	if (a)
		assert_non_null(strstr(err, a));
	if (c)
		assert_non_null(strstr(err, c));
}

static char *write_tmp(const void *data, size_t len)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/test_onnx.XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	return path;
}

static void test_file_errors(void **state)
{
	char err[ONNX_ERR_MAX];
	assert_null(onnx_model_load("/nonexistent/x.onnx", err, sizeof(err)));
	assert_non_null(strstr(err, "/nonexistent/x.onnx: cannot open"));
	char *p = write_tmp("", 0);
	assert_null(onnx_model_load(p, err, sizeof(err)));
	assert_non_null(strstr(err, p));
	assert_non_null(strstr(err, "empty"));
	unlink(p);
	const char *text = "hello, world\n";
	p = write_tmp(text, strlen(text));
	assert_null(onnx_model_load(p, err, sizeof(err)));
	print_message("%s\n", err);
	assert_non_null(strstr(err, p));
	assert_non_null(strstr(err, "not an ONNX ModelProto"));
	unlink(p);
}

/* Every truncation of a real model is refused (never a crash), naming the file. */
static void test_truncated(void **state)
{
	FILE *f = fopen(MODELS "digits-v1.onnx", "rb");
	assert_non_null(f);
	static char buf[1 << 20];
	size_t len = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	assert_true(len > 1000);
	char err[ONNX_ERR_MAX];
	size_t refused = 0, tried = 0;
	for (size_t cut = 0; cut < len; cut += (cut < 64 ? 1 : 37)) {
		struct onnx_model *m =
		    onnx_model_load_buffer("cut.onnx", buf, cut, err, sizeof(err));
		tried++;
		if (!m) {
			refused++;
			assert_non_null(strstr(err, "cut.onnx: "));
		}
		onnx_model_free(m);
	}
	/* a protobuf cut between top-level fields can parse; all others must not */
	assert_true(refused >= tried - 3);
	assert_null(onnx_model_load_buffer("cut.onnx", buf, len / 2, err, sizeof(err)));
	print_message("%s\n", err);
	assert_non_null(strstr(err, "truncated"));
	struct onnx_model *m = onnx_model_load_buffer("whole.onnx", buf, len, err, sizeof(err));
	assert_non_null(m);
	onnx_model_free(m);
}

static void test_no_graph(void **state)
{
	struct mb b;
	mb_init(&b, 13);
	b.model.graph = NULL;
	expect_refused(&b, "no graph", NULL);
}

static void test_unknown_op(void **state)
{
	struct mb b;
	mb_init(&b, 13);
	mb_input(&b, "x", 1, (int64_t[]){2});
	mb_node(&b, "Relu", "r", (const char *[]){"x", NULL}, (const char *[]){"h", NULL});
	mb_node(&b, "FooBar", "mystery", (const char *[]){"h", NULL}, (const char *[]){"y", NULL});
	mb_output(&b, "y", TENSOR_FLOAT);
	expect_refused(&b, "node 'mystery' (FooBar)", "operator not supported");
}

static void test_bad_attribute(void **state)
{
	struct mb b;
	mb_init(&b, 13);
	mb_input(&b, "x", 4, (int64_t[]){1, 1, 4, 4});
	Onnx__NodeProto *np = mb_node(&b, "MaxPool", "pool1", (const char *[]){"x", NULL},
	                              (const char *[]){"y", NULL});
	Onnx__AttributeProto *a =
	    mb_attr(&b, np, "kernel_shape", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
	int64_t k[2] = {2, 2};
	a->n_ints = 2;
	a->ints = k;
	a = mb_attr(&b, np, "auto_pad", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
	a->has_s = 1;
	a->s.data = (uint8_t *)"WEIRD";
	a->s.len = 5;
	mb_output(&b, "y", TENSOR_FLOAT);
	expect_refused(&b, "node 'pool1' (MaxPool)", "auto_pad=WEIRD not supported");
	/* an attribute of the wrong type */
	a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
	expect_refused(&b, "node 'pool1' (MaxPool)", "'auto_pad' is not of type STRING");
}

static void test_graph_errors(void **state)
{
	struct mb b;
	mb_init(&b, 99);
	mb_input(&b, "x", 1, (int64_t[]){2});
	mb_node(&b, "Relu", "r", (const char *[]){"x", NULL}, (const char *[]){"y", NULL});
	mb_output(&b, "y", TENSOR_FLOAT);
	expect_refused(&b, "opset 99 not supported", NULL);
	/* input never produced */
	mb_init(&b, 13);
	mb_input(&b, "x", 1, (int64_t[]){2});
	mb_node(&b, "Add", "a", (const char *[]){"x", "ghost", NULL}, (const char *[]){"y", NULL});
	mb_output(&b, "y", TENSOR_FLOAT);
	expect_refused(&b, "node 'a' (Add): input 'ghost' is not produced", NULL);
	/* an omitted input where the operator needs one */
	mb_init(&b, 13);
	mb_input(&b, "x", 1, (int64_t[]){2});
	Onnx__NodeProto *cat = mb_node(&b, "Concat", "cat", (const char *[]){"x", "", "x", NULL},
	                               (const char *[]){"y", NULL});
	Onnx__AttributeProto *ax =
	    mb_attr(&b, cat, "axis", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
	ax->has_i = 1;
	mb_output(&b, "y", TENSOR_FLOAT);
	expect_refused(&b, "node 'cat' (Concat): input 1 is required", NULL);
	mb_init(&b, 13);
	mb_input(&b, "x", 1, (int64_t[]){2});
	mb_input(&b, "s", 1, (int64_t[]){1});
	b.tt[1].elem_type = TENSOR_INT64;
	mb_node(&b, "Slice", "sl", (const char *[]){"x", "s", "", NULL},
	        (const char *[]){"y", NULL});
	mb_output(&b, "y", TENSOR_FLOAT);
	expect_refused(&b, "node 'sl' (Slice): inputs starts and ends are required", NULL);
	/* a cycle */
	mb_init(&b, 13);
	mb_input(&b, "x", 1, (int64_t[]){2});
	mb_node(&b, "Add", "a", (const char *[]){"x", "q", NULL}, (const char *[]){"p", NULL});
	mb_node(&b, "Relu", "b", (const char *[]){"p", NULL}, (const char *[]){"q", NULL});
	mb_output(&b, "q", TENSOR_FLOAT);
	expect_refused(&b, "cycle", NULL);
	/* a value produced twice */
	mb_init(&b, 13);
	mb_input(&b, "x", 1, (int64_t[]){2});
	mb_node(&b, "Relu", "a", (const char *[]){"x", NULL}, (const char *[]){"y", NULL});
	mb_node(&b, "Relu", "b", (const char *[]){"x", NULL}, (const char *[]){"y", NULL});
	mb_output(&b, "y", TENSOR_FLOAT);
	expect_refused(&b, "'y' is defined twice", NULL);
	/* output declared with the wrong dtype */
	mb_init(&b, 13);
	mb_input(&b, "x", 1, (int64_t[]){2});
	mb_node(&b, "Relu", "a", (const char *[]){"x", NULL}, (const char *[]){"y", NULL});
	mb_output(&b, "y", TENSOR_INT64);
	expect_refused(&b, "declared INT64 but computed as FLOAT", NULL);
	/* an initializer whose data does not match its dims */
	mb_init(&b, 13);
	float w[2] = {1, 2};
	mb_init_f(&b, "w", 1, (int64_t[]){3}, w, 1);
	b.init[0].raw_data.len = 8;
	mb_input(&b, "x", 1, (int64_t[]){3});
	mb_node(&b, "Add", "a", (const char *[]){"x", "w", NULL}, (const char *[]){"y", NULL});
	mb_output(&b, "y", TENSOR_FLOAT);
	expect_refused(&b, "initializer 'w'", "3 elements expected");
}

/*
 * y = x * w + c with w in raw_data, b in float_data added by a later node,
 * c from a Constant node, nodes listed in reverse order; "w" also listed as
 * a graph input (backed by its initializer, so not a model input).
 */
static void test_run_plan(void **state)
{
	struct mb b;
	mb_init(&b, 13);
	float w[3] = {1, 2, 3}, bias[3] = {0.5f, 0.5f, 0.5f}, cv[3] = {10, 20, 30};
	mb_init_f(&b, "w", 1, (int64_t[]){3}, w, 1);
	mb_init_f(&b, "bias", 1, (int64_t[]){3}, bias, 0);
	mb_input(&b, "x", 2, (int64_t[]){-1, 3});
	mb_input(&b, "w", 1, (int64_t[]){3});
	mb_node(&b, "Add", "last", (const char *[]){"t", "bias", NULL},
	        (const char *[]){"y", NULL});
	mb_node(&b, "Add", "mid", (const char *[]){"xw", "c", NULL}, (const char *[]){"t", NULL});
	mb_node(&b, "Mul", "first", (const char *[]){"x", "w", NULL}, (const char *[]){"xw", NULL});
	Onnx__NodeProto *cn =
	    mb_node(&b, "Constant", "const", (const char *[]){NULL}, (const char *[]){"c", NULL});
	Onnx__AttributeProto *a =
	    mb_attr(&b, cn, "value_floats", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
	a->n_floats = 3;
	a->floats = cv;
	mb_output(&b, "y", TENSOR_FLOAT);
	mb_output(&b, "c", TENSOR_FLOAT); /* a constant as output: copied */
	mb_output(&b, "x", TENSOR_FLOAT); /* an input as output: copied */
	char err[ONNX_ERR_MAX] = "";
	struct onnx_model *m = mb_load(&b, err, sizeof(err));
	if (!m)
		fail_msg("%s", err);
	assert_int_equal(onnx_model_n_inputs(m), 1);
	assert_int_equal(onnx_model_n_outputs(m), 3);
	const struct onnx_value_info *in = onnx_model_input(m, 0);
	assert_string_equal(in->name, "x");
	assert_int_equal(in->ndim, 2);
	assert_int_equal(in->dims[0], -1);
	assert_int_equal(in->dims[1], 3);
	assert_null(onnx_model_input(m, 1));

	struct tensor *x = tensor_new("x", TENSOR_FLOAT, 2, (int64_t[]){2, 3});
	float xv[6] = {1, 1, 1, 2, 2, 2};
	memcpy(x->data, xv, sizeof(xv));
	struct tensor *out[3] = {0};
	if (onnx_model_run(m, &x, 1, out, err, sizeof(err)))
		fail_msg("%s", err);
	float want[6] = {11.5f, 22.5f, 33.5f, 12.5f, 24.5f, 36.5f};
	assert_int_equal(out[0]->nelem, 6);
	assert_memory_equal(out[0]->data, want, sizeof(want));
	assert_string_equal(out[0]->name, "y");
	assert_memory_equal(out[1]->data, cv, sizeof(cv));
	assert_memory_equal(out[2]->data, xv, sizeof(xv));
	assert_ptr_not_equal(out[2], x);
	for (int i = 0; i < 3; i++)
		tensor_free(out[i]);

	/* run-time refusals leave no outputs behind */
	struct tensor *bad = tensor_new("x", TENSOR_FLOAT, 2, (int64_t[]){2, 4});
	memset(out, 0, sizeof(out));
	assert_int_equal(onnx_model_run(m, &bad, 1, out, err, sizeof(err)), -1);
	assert_string_equal(err, "input 'x': expected [N,3], got [2,4]");
	assert_null(out[0]);
	tensor_free(bad);
	bad = tensor_new("x", TENSOR_INT64, 2, (int64_t[]){2, 3});
	assert_int_equal(onnx_model_run(m, &bad, 1, out, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "expected dtype FLOAT, got INT64"));
	tensor_free(bad);
	assert_int_equal(onnx_model_run(m, NULL, 0, out, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "expected 1 inputs, got 0"));
	tensor_free(x);
	onnx_model_free(m);
}

/*
 * Conv -> Relu -> MaxPool with constant weights: the loader plans the direct
 * convolution and folds the Relu and the pool into it when nothing else reads
 * what they pass on; an intermediate that is also a graph output keeps its
 * values. Checked against a naive reference (quarters: exact in any order).
 */
static void fusion_case(const char *extra_output)
{
	enum { C = 2, H = 6, W = 6, M = 8 };
	static float w[M * C * 9], bias[M];
	float x[C * H * W], conv[M * H * W], relu[M * H * W], pool[M * 9];
	unsigned seed = 99;
	for (size_t i = 0; i < M * C * 9; i++)
		w[i] = (float)(rand_r(&seed) % 17 - 8) / 4.0f;
	for (size_t i = 0; i < M; i++)
		bias[i] = (float)(rand_r(&seed) % 17 - 8) / 4.0f;
	for (size_t i = 0; i < C * H * W; i++)
		x[i] = (float)(rand_r(&seed) % 9) / 4.0f;
	for (int m = 0; m < M; m++)
		for (int oh = 0; oh < H; oh++)
			for (int ow = 0; ow < W; ow++) {
				float s = bias[m];
				for (int c = 0; c < C; c++)
					for (int kh = 0; kh < 3; kh++)
						for (int kw = 0; kw < 3; kw++) {
							int ih = oh + kh - 1, iw = ow + kw - 1;
							if (ih >= 0 && ih < H && iw >= 0 && iw < W)
								s += x[(c * H + ih) * W + iw] *
								     w[((m * C + c) * 3 + kh) * 3 +
								       kw];
						}
				conv[(m * H + oh) * W + ow] = s;
				relu[(m * H + oh) * W + ow] = s > 0 ? s : 0;
			}
	for (int m = 0; m < M; m++)
		for (int ph = 0; ph < 3; ph++)
			for (int pw = 0; pw < 3; pw++) {
				float mx = -INFINITY;
				for (int i = 0; i < 2; i++)
					for (int j = 0; j < 2; j++) {
						float v =
						    relu[(m * H + 2 * ph + i) * W + 2 * pw + j];
						mx = v > mx ? v : mx;
					}
				pool[(m * 3 + ph) * 3 + pw] = mx;
			}

	struct mb b;
	mb_init(&b, 13);
	mb_init_f(&b, "W", 4, (int64_t[]){M, C, 3, 3}, w, 1);
	mb_init_f(&b, "B", 1, (int64_t[]){M}, bias, 0);
	mb_input(&b, "x", 4, (int64_t[]){-1, C, H, W});
	Onnx__NodeProto *cn = mb_node(&b, "Conv", "conv", (const char *[]){"x", "W", "B", NULL},
	                              (const char *[]){"c", NULL});
	Onnx__AttributeProto *a =
	    mb_attr(&b, cn, "pads", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
	static int64_t pads[4] = {1, 1, 1, 1}, k2[2] = {2, 2};
	a->n_ints = 4;
	a->ints = pads;
	mb_node(&b, "Relu", "relu", (const char *[]){"c", NULL}, (const char *[]){"r", NULL});
	Onnx__NodeProto *pn = mb_node(&b, "MaxPool", "pool", (const char *[]){"r", NULL},
	                              (const char *[]){"p", NULL});
	a = mb_attr(&b, pn, "kernel_shape", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
	a->n_ints = 2;
	a->ints = k2;
	a = mb_attr(&b, pn, "strides", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
	a->n_ints = 2;
	a->ints = k2;
	mb_output(&b, "p", TENSOR_FLOAT);
	if (extra_output)
		mb_output(&b, extra_output, TENSOR_FLOAT);
	char err[ONNX_ERR_MAX] = "";
	struct onnx_model *m = mb_load(&b, err, sizeof(err));
	if (!m)
		fail_msg("%s", err);
	struct tensor *in = tensor_new("x", TENSOR_FLOAT, 4, (int64_t[]){1, C, H, W});
	memcpy(in->data, x, sizeof(x));
	struct tensor *out[2] = {0};
	if (onnx_model_run(m, &in, 1, out, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(out[0]->nelem, M * 9);
	assert_int_equal(out[0]->dims[2], 3);
	assert_memory_equal(out[0]->data, pool, sizeof(pool));
	if (extra_output) {
		assert_string_equal(out[1]->name, extra_output);
		assert_int_equal(out[1]->nelem, M * H * W);
		assert_memory_equal(out[1]->data, extra_output[0] == 'c' ? conv : relu,
		                    sizeof(conv));
	}
	tensor_free(out[0]);
	tensor_free(out[1]);
	tensor_free(in);
	onnx_model_free(m);
}

static void test_conv_fusion(void **state)
{
	(void)state;
	fusion_case(NULL); /* Conv+Relu+MaxPool as one node */
	fusion_case("r");  /* the Relu's output is read twice: only the Relu is folded */
	fusion_case("c");  /* the Conv's output is read twice: nothing is folded */
}

/* A kernel failing mid-graph: the message names node and operator, nothing leaks. */
static void test_run_kernel_error(void **state)
{
	struct mb b;
	mb_init(&b, 13);
	mb_input(&b, "x", 1, (int64_t[]){-1});
	mb_input(&b, "shape", 1, (int64_t[]){1});
	b.tt[1].elem_type = TENSOR_INT64;
	mb_node(&b, "Relu", "pre", (const char *[]){"x", NULL}, (const char *[]){"h", NULL});
	mb_node(&b, "Reshape", "reshape1", (const char *[]){"h", "shape", NULL},
	        (const char *[]){"y", NULL});
	mb_output(&b, "y", TENSOR_FLOAT);
	mb_output(&b, "h", TENSOR_FLOAT);
	char err[ONNX_ERR_MAX] = "";
	struct onnx_model *m = mb_load(&b, err, sizeof(err));
	if (!m)
		fail_msg("%s", err);
	struct tensor *in[2] = {tensor_new("x", TENSOR_FLOAT, 1, (int64_t[]){6}),
	                        tensor_new("shape", TENSOR_INT64, 1, (int64_t[]){1})};
	((int64_t *)in[1]->data)[0] = 4;
	struct tensor *out[2] = {0};
	assert_int_equal(onnx_model_run(m, in, 2, out, err, sizeof(err)), -1);
	print_message("%s\n", err);
	assert_non_null(strstr(err, "node 'reshape1' (Reshape): cannot reshape [6] to [4]"));
	assert_null(out[0]);
	((int64_t *)in[1]->data)[0] = -1;
	assert_int_equal(onnx_model_run(m, in, 2, out, err, sizeof(err)), 0);
	assert_int_equal(out[0]->dims[0], 6);
	assert_int_equal(out[1]->dims[0], 6);
	tensor_free(out[0]);
	tensor_free(out[1]);
	tensor_free(in[0]);
	tensor_free(in[1]);
	onnx_model_free(m);
}

struct worker {
	const struct onnx_model *m;
	const float *want; /* probabilities of the sample */
	int64_t label;
	int bad;
};

static void *do_runs(void *arg)
{
	struct worker *w = arg;
	struct tensor *x = tensor_new("pixels", TENSOR_FLOAT, 2, (int64_t[]){1, 64});
	for (int i = 0; i < 64; i++)
		((float *)x->data)[i] = (float)((i * 7) % 17);
	char err[ONNX_ERR_MAX];
	for (int r = 0; r < 300 && !w->bad; r++) {
		struct tensor *out[2] = {0};
		if (onnx_model_run(w->m, &x, 1, out, err, sizeof(err))) {
			w->bad = 1;
			break;
		}
		if (memcmp(out[0]->data, w->want, 10 * sizeof(float)) ||
		    ((int64_t *)out[1]->data)[0] != w->label)
			w->bad = 1;
		tensor_free(out[0]);
		tensor_free(out[1]);
	}
	tensor_free(x);
	return NULL;
}

/* Four threads share one model; every run gives the single-threaded answer. */
static void test_threads(void **state)
{
	char err[ONNX_ERR_MAX];
	struct onnx_model *m = onnx_model_load(MODELS "digits-v2.onnx", err, sizeof(err));
	if (!m)
		fail_msg("%s", err);
	struct worker w[4] = {{0}};
	pthread_t th[4];
	struct tensor *x = tensor_new("pixels", TENSOR_FLOAT, 2, (int64_t[]){1, 64});
	for (int i = 0; i < 64; i++)
		((float *)x->data)[i] = (float)((i * 7) % 17);
	struct tensor *out[2] = {0};
	assert_int_equal(onnx_model_run(m, &x, 1, out, err, sizeof(err)), 0);
	for (int t = 0; t < 4; t++) {
		w[t].m = m;
		w[t].want = out[0]->data;
		w[t].label = ((int64_t *)out[1]->data)[0];
		assert_int_equal(pthread_create(&th[t], NULL, do_runs, &w[t]), 0);
	}
	for (int t = 0; t < 4; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(w[t].bad, 0);
	}
	tensor_free(out[0]);
	tensor_free(out[1]);
	tensor_free(x);
	onnx_model_free(m);
}

static void test_tensor_load(void **state)
{
	char err[ONNX_ERR_MAX];
	struct tensor *t = onnx_tensor_load(
	    "/usr/share/libonnx-testdata/data/node/test_relu/test_data_set_0/input_0.pb", err,
	    sizeof(err));
	if (!t)
		fail_msg("%s", err);
	assert_int_equal(t->dtype, TENSOR_FLOAT);
	assert_int_equal(t->ndim, 3);
	tensor_free(t);
	assert_null(onnx_tensor_load_buffer("junk.pb", "\xff\xff", 2, err, sizeof(err)));
	assert_non_null(strstr(err, "junk.pb: "));
}

/*
 * A tensor freed and allocated again (possibly the same block, from the
 * per-thread cache) is zeroed by tensor_new, has its new shape, and
 * tensor_new_uninit gives a block of the right size.
 */
static void test_tensor_reuse(void **state)
{
	int64_t d1[2] = {3, 50}, d2[3] = {2, 5, 7};
	for (int round = 0; round < 3; round++) {
		struct tensor *t = tensor_new_uninit("x", TENSOR_FLOAT, 2, d1);
		assert_non_null(t);
		assert_int_equal(t->nelem, 150);
		memset(t->data, 0xab, t->nelem * sizeof(float));
		tensor_free(t);
		struct tensor *u = tensor_new(NULL, TENSOR_INT64, 3, d2);
		assert_non_null(u);
		assert_null(u->name);
		assert_int_equal(u->ndim, 3);
		assert_int_equal(u->nelem, 70);
		for (size_t i = 0; i < u->nelem; i++)
			assert_int_equal(((const int64_t *)u->data)[i], 0);
		tensor_free(u);
	}
	/* larger than the cache keeps: plain allocation, still zeroed */
	int64_t big[1] = {(int64_t)(TENSOR_CACHE_MAX_BYTES / sizeof(float)) + 1};
	struct tensor *b = tensor_new(NULL, TENSOR_FLOAT, 1, big);
	assert_non_null(b);
	assert_true(((const float *)b->data)[b->nelem - 1] == 0.0f);
	tensor_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_file_errors),      cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_no_graph),         cmocka_unit_test(test_unknown_op),
	    cmocka_unit_test(test_bad_attribute),    cmocka_unit_test(test_graph_errors),
	    cmocka_unit_test(test_run_plan),         cmocka_unit_test(test_conv_fusion),
	    cmocka_unit_test(test_run_kernel_error), cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_tensor_load),      cmocka_unit_test(test_tensor_reuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
