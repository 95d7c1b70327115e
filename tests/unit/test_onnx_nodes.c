/*
 * test_onnx_nodes.c - the ONNX project's own node tests (Debian's
 * libonnx-testdata) run against predictor/onnx.c.
 *
 * Walks /usr/share/libonnx-testdata/data/node/<test>/: loads model.onnx; a
 * model the runtime refuses at load is skipped with the refusal as reason;
 * otherwise every test_data_set_N is run and each output compared with
 * output_N.pb at the ONNX backend-test tolerance, |got - want| <= atol +
 * rtol * |want| with rtol 1e-3, atol 1e-7 (NaN equals NaN; FLOAT16 and
 * BFLOAT16 by their float values; integers and booleans exactly). Prints passed/failed/skipped and
 * the skipped tests' operators; fails if any test the runtime accepted fails, or if one of the
 * operators issue 3 requires (REQUIRED_OPS) has no passing single-operator
 * node test (so a loader regression cannot hide among the skips). With
 * TURNOUT_ONNX_NODES_REPORT=FILE it also writes the summary as Markdown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "onnx.h"
#include "onnx.pb-c.h"
#include "onnx_proto.h"

#define NODE_DIR  "/usr/share/libonnx-testdata/data/node"
#define MAX_TESTS 4096
#define MAX_IO    32
#define RTOL      1e-3
#define ATOL      1e-7

/* The operators the runtime must implement (issue 3): each must pass at least
 * one node test whose model uses that operator alone. */
static const char *const REQUIRED_OPS[] = {
    "Gemm",        "MatMul",  "Add",      "Sub",       "Mul",    "Div",
    "Relu",        "Sigmoid", "Tanh",     "Softmax",   "Conv",   "MaxPool",
    "AveragePool", "Flatten", "Reshape",  "Transpose", "Concat", "BatchNormalization",
    "ArgMax",      "Cast",    "Constant", "Identity",
};
#define N_REQUIRED (sizeof(REQUIRED_OPS) / sizeof(REQUIRED_OPS[0]))

struct skip {
	char test[128];
	char ops[256];
	char reason[256];
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Operator types used by a model file, for the skip list ("Abs,Add"). */
static void model_ops(const char *path, char *out, size_t len)
{
	snprintf(out, len, "?");
	FILE *f = fopen(path, "rb");
	if (!f)
		return;
	static unsigned char buf[1 << 22];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, n, buf);
	if (!mp || !mp->graph) {
		if (mp)
			onnx__model_proto__free_unpacked(mp, NULL);
		return;
	}
	out[0] = 0;
	for (size_t i = 0; i < mp->graph->n_node; i++) {
		const char *op = mp->graph->node[i]->op_type;
		if (!op || strstr(out, op))
			continue;
		size_t l = strlen(out);
		snprintf(out + l, len - l, "%s%s", l ? "," : "", op);
	}
	onnx__model_proto__free_unpacked(mp, NULL);
}

static int compare(const struct tensor *got, const struct tensor *want, char *why, size_t len)
{
	if (got->dtype != want->dtype) {
		snprintf(why, len, "dtype %d, expected %d", got->dtype, want->dtype);
		return -1;
	}
	int same = got->ndim == want->ndim;
	for (int d = 0; same && d < got->ndim; d++)
		same = got->dims[d] == want->dims[d];
	if (!same || got->nelem != want->nelem) {
		snprintf(why, len, "shape differs (rank %d vs %d, %zu vs %zu elements)", got->ndim,
		         want->ndim, got->nelem, want->nelem);
		return -1;
	}
	for (size_t i = 0; i < got->nelem; i++) {
		double g, w;
		switch (got->dtype) {
		case TENSOR_FLOAT:
			g = ((const float *)got->data)[i];
			w = ((const float *)want->data)[i];
			break;
		case TENSOR_DOUBLE:
			g = ((const double *)got->data)[i];
			w = ((const double *)want->data)[i];
			break;
		case TENSOR_FLOAT16:
			g = tensor_f16_to_float(((const uint16_t *)got->data)[i]);
			w = tensor_f16_to_float(((const uint16_t *)want->data)[i]);
			break;
		case TENSOR_BFLOAT16:
			g = tensor_bf16_to_float(((const uint16_t *)got->data)[i]);
			w = tensor_bf16_to_float(((const uint16_t *)want->data)[i]);
			break;
		case TENSOR_INT64:
			if (((const int64_t *)got->data)[i] != ((const int64_t *)want->data)[i])
				goto bad_int;
			continue;
		default: {
			size_t es = tensor_dtype_size(got->dtype);
			if (memcmp((const char *)got->data + i * es,
			           (const char *)want->data + i * es, es))
				goto bad_int;
			continue;
		}
		}
		if (isnan(w) && isnan(g))
			continue;
		if (isinf(w) && g == w)
			continue;
		/*
		 * ONNX before 1.14 made its BFLOAT16 expectations by truncating, we
		 * round to nearest even: allow one bfloat16 step (2^-7 relative).
		 */
		double rtol = got->dtype == TENSOR_BFLOAT16 ? 1.0 / 128 : RTOL;
		if (!(fabs(g - w) <= ATOL + rtol * fabs(w))) {
			snprintf(why, len, "element %zu: got %.9g, expected %.9g", i, g, w);
			return -1;
		}
	}
	return 0;
bad_int:
	snprintf(why, len, "integer element differs");
	return -1;
}

/*
 * Loads a test tensor for a model value of dtype want. ONNX stored bfloat16
 * test data as UINT16 (numpy has no bfloat16): such a file is read as the
 * BFLOAT16 bit patterns it holds when the model declares BFLOAT16.
 */
static struct tensor *load_tensor(const char *path, enum tensor_dtype want, char *err,
                                  size_t errlen)
{
	if (want != TENSOR_BFLOAT16)
		return onnx_tensor_load(path, err, errlen);
	struct tensor *t = NULL;
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: cannot open", path);
		return NULL;
	}
	static unsigned char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, n, buf);
	if (!tp) {
		snprintf(err, errlen, "%s: not a TensorProto", path);
		return NULL;
	}
	if (tp->has_data_type && tp->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__UINT16)
		tp->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16;
	t = onnx_proto_tensor(tp, path, err, errlen);
	onnx__tensor_proto__free_unpacked(tp, NULL);
	return t;
}

static int count_files(const char *dir, const char *prefix)
{
	char p[2048];
	int n = 0;
	for (; n < MAX_IO; n++) {
		struct stat st;
		snprintf(p, sizeof(p), "%s/%s_%d.pb", dir, prefix, n);
		if (stat(p, &st) != 0)
			break;
	}
	return n;
}

/*
 * Runs one data set; returns 0 on pass, -1 with why on failure, 1 with why
 * when the data set's input shape contradicts the model's declaration (a
 * defect of the test data, counted as a skip).
 */
static int run_set(const struct onnx_model *m, const char *dir, char *why, size_t len)
{
	struct tensor *in[MAX_IO] = {0}, *out[MAX_IO] = {0}, *want[MAX_IO] = {0};
	int ni = count_files(dir, "input"), no = count_files(dir, "output"), rc = -1;
	char p[2048], err[ONNX_ERR_MAX];
	if ((size_t)ni != onnx_model_n_inputs(m) || (size_t)no != onnx_model_n_outputs(m)) {
		snprintf(why, len, "data set has %d inputs/%d outputs, model %zu/%zu", ni, no,
		         onnx_model_n_inputs(m), onnx_model_n_outputs(m));
		return -1;
	}
	for (int i = 0; i < ni; i++) {
		const struct onnx_value_info *vi = onnx_model_input(m, (size_t)i);
		snprintf(p, sizeof(p), "%s/input_%d.pb", dir, i);
		if (!(in[i] = load_tensor(p, vi->dtype, err, sizeof(err)))) {
			snprintf(why, len, "%s", err);
			goto out;
		}
		/* Some ONNX data sets contradict their own model's input shape. */
		int same = in[i]->ndim == vi->ndim;
		for (int d = 0; same && d < vi->ndim; d++)
			same = vi->dims[d] < 0 || vi->dims[d] == in[i]->dims[d];
		if (!same) {
			snprintf(why, len,
			         "test data: input '%s' has rank %d / %zu elements, the model "
			         "declares another shape",
			         vi->name, in[i]->ndim, in[i]->nelem);
			rc = 1;
			goto out;
		}
	}
	for (int i = 0; i < no; i++) {
		snprintf(p, sizeof(p), "%s/output_%d.pb", dir, i);
		if (!(want[i] = load_tensor(p, onnx_model_output(m, (size_t)i)->dtype, err,
		                            sizeof(err)))) {
			snprintf(why, len, "%s", err);
			goto out;
		}
	}
	if (onnx_model_run(m, in, (size_t)ni, out, err, sizeof(err))) {
		snprintf(why, len, "run: %.400s", err);
		goto out;
	}
	rc = 0;
	for (int i = 0; i < no && rc == 0; i++) {
		char w[200];
		if (compare(out[i], want[i], w, sizeof(w))) {
			snprintf(why, len, "output %d: %s", i, w);
			rc = -1;
		}
	}
out:
	for (int i = 0; i < MAX_IO; i++) {
		tensor_free(in[i]);
		tensor_free(out[i]);
		tensor_free(want[i]);
	}
	return rc;
}

static void test_node_suite(void **state)
{
	DIR *d = opendir(NODE_DIR);
	if (!d) {
		print_message("%s not found: install libonnx-testdata\n", NODE_DIR);
		fail();
	}
	char **names = calloc(MAX_TESTS, sizeof(char *));
	struct skip *skips = calloc(MAX_TESTS, sizeof(*skips));
	assert_non_null(names);
	assert_non_null(skips);
	size_t n = 0, passed = 0, failed = 0, skipped = 0, required_passed[N_REQUIRED] = {0};
	struct dirent *e;
	while ((e = readdir(d)) && n < MAX_TESTS)
		if (strncmp(e->d_name, "test_", 5) == 0)
			names[n++] = strdup(e->d_name);
	closedir(d);
	qsort(names, n, sizeof(char *), cmp_str);
	for (size_t t = 0; t < n; t++) {
		char dir[1024], model[1100], err[ONNX_ERR_MAX];
		snprintf(dir, sizeof(dir), "%s/%s", NODE_DIR, names[t]);
		snprintf(model, sizeof(model), "%s/model.onnx", dir);
		struct onnx_model *m = onnx_model_load(model, err, sizeof(err));
		if (!m) {
			struct skip *s = &skips[skipped++];
			snprintf(s->test, sizeof(s->test), "%s", names[t]);
			model_ops(model, s->ops, sizeof(s->ops));
			const char *r = strstr(err, "model.onnx: ");
			snprintf(s->reason, sizeof(s->reason), "%.200s", r ? r + 12 : err);
			continue;
		}
		int ok = 1, sets = 0, bad_data = 0;
		for (int k = 0; k < 16; k++) {
			char set[1200], why[512];
			struct stat st;
			snprintf(set, sizeof(set), "%s/test_data_set_%d", dir, k);
			if (stat(set, &st) != 0)
				break;
			sets++;
			int r = run_set(m, set, why, sizeof(why));
			if (r > 0) {
				struct skip *s = &skips[skipped++];
				snprintf(s->test, sizeof(s->test), "%s", names[t]);
				model_ops(model, s->ops, sizeof(s->ops));
				snprintf(s->reason, sizeof(s->reason), "%.200s", why);
				bad_data = 1;
				break;
			}
			if (r) {
				print_message("FAIL %s (set %d): %s\n", names[t], k, why);
				ok = 0;
				break;
			}
		}
		if (bad_data) {
			onnx_model_free(m);
			continue;
		}
		if (sets == 0) {
			print_message("FAIL %s: no test_data_set\n", names[t]);
			ok = 0;
		}
		ok ? passed++ : failed++;
		onnx_model_free(m);
		if (ok) {
			char ops[256];
			model_ops(model, ops, sizeof(ops));
			for (size_t r = 0; r < N_REQUIRED; r++)
				required_passed[r] += strcmp(ops, REQUIRED_OPS[r]) == 0;
		}
	}
	print_message("ONNX node tests: %zu passed, %zu failed, %zu skipped (of %zu; rtol %g, "
	              "atol %g)\n",
	              passed, failed, skipped, n, RTOL, ATOL);
	const char *report = getenv("TURNOUT_ONNX_NODES_REPORT");
	FILE *rf = report ? fopen(report, "w") : NULL;
	if (rf)
		fprintf(rf,
		        "%zu passed, %zu failed, %zu skipped (of %zu)\n\n| test | operators | "
		        "reason |\n|---|---|---|\n",
		        passed, failed, skipped, n);
	for (size_t i = 0; i < skipped; i++) {
		print_message("skip %s [%s]: %s\n", skips[i].test, skips[i].ops, skips[i].reason);
		if (rf)
			fprintf(rf, "| %s | %s | %s |\n", skips[i].test, skips[i].ops,
			        skips[i].reason);
	}
	if (rf)
		fclose(rf);
	for (size_t t = 0; t < n; t++)
		free(names[t]);
	free(names);
	free(skips);
	size_t required_missing = 0;
	for (size_t r = 0; r < N_REQUIRED; r++)
		if (required_passed[r] == 0) {
			print_message(
			    "FAIL required operator %s: no single-operator node test passed\n",
			    REQUIRED_OPS[r]);
			required_missing++;
		}
	print_message("required operators: %zu of %zu have passing node tests\n",
	              N_REQUIRED - required_missing, N_REQUIRED);
	assert_true(passed > 0);
	assert_int_equal(failed, 0);
	assert_int_equal(required_missing, 0);
}

/*
 * A one-node model op(x: xt[2]) -> y: yt[2] (with attribute to = yt for
 * Cast), serialized and loaded; returns the model or NULL with err.
 */
static struct onnx_model *one_node(const char *op, int xt, int yt, char *err, size_t errlen)
{
	int64_t dim2 = 2;
	Onnx__TensorShapeProto__Dimension d = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT, *dp = &d;
	d.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
	d.dim_value = dim2;
	Onnx__TensorShapeProto shape = ONNX__TENSOR_SHAPE_PROTO__INIT;
	shape.n_dim = 1;
	shape.dim = &dp;
	Onnx__TypeProto__Tensor tt[2] = {ONNX__TYPE_PROTO__TENSOR__INIT,
	                                 ONNX__TYPE_PROTO__TENSOR__INIT};
	Onnx__TypeProto ty[2] = {ONNX__TYPE_PROTO__INIT, ONNX__TYPE_PROTO__INIT};
	Onnx__ValueInfoProto vi[2] = {ONNX__VALUE_INFO_PROTO__INIT, ONNX__VALUE_INFO_PROTO__INIT};
	Onnx__ValueInfoProto *vip[2] = {&vi[0], &vi[1]};
	for (int i = 0; i < 2; i++) {
		tt[i].has_elem_type = 1;
		tt[i].elem_type = i ? yt : xt;
		tt[i].shape = &shape;
		ty[i].value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
		ty[i].tensor_type = &tt[i];
		vi[i].name = (char *)(i ? "y" : "x");
		vi[i].type = &ty[i];
	}
	Onnx__AttributeProto to = ONNX__ATTRIBUTE_PROTO__INIT, *top = &to;
	to.name = "to";
	to.has_type = 1;
	to.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
	to.has_i = 1;
	to.i = yt;
	char *xin = "x", *yout = "y";
	Onnx__NodeProto node = ONNX__NODE_PROTO__INIT, *np = &node;
	node.op_type = (char *)op;
	node.n_input = 1;
	node.input = &xin;
	node.n_output = 1;
	node.output = &yout;
	if (strcmp(op, "Cast") == 0) {
		node.n_attribute = 1;
		node.attribute = &top;
	}
	Onnx__GraphProto g = ONNX__GRAPH_PROTO__INIT;
	g.name = "g";
	g.n_node = 1;
	g.node = &np;
	g.n_input = 1;
	g.input = &vip[0];
	g.n_output = 1;
	g.output = &vip[1];
	Onnx__OperatorSetIdProto ops = ONNX__OPERATOR_SET_ID_PROTO__INIT, *opsp = &ops;
	ops.has_version = 1;
	ops.version = 13;
	Onnx__ModelProto mp = ONNX__MODEL_PROTO__INIT;
	mp.has_ir_version = 1;
	mp.ir_version = 8;
	mp.n_opset_import = 1;
	mp.opset_import = &opsp;
	mp.graph = &g;
	static uint8_t buf[4096];
	size_t len = onnx__model_proto__get_packed_size(&mp);
	assert_true(len <= sizeof(buf));
	onnx__model_proto__pack(&mp, buf);
	return onnx_model_load_buffer("one_node", buf, len, err, errlen);
}

/* FLOAT16 and BFLOAT16 flow only through Cast and CastLike; others refuse at load. */
static void test_float16_only_cast(void **state)
{
	char err[ONNX_ERR_MAX];
	struct onnx_model *m =
	    one_node("Identity", TENSOR_FLOAT16, TENSOR_FLOAT16, err, sizeof(err));
	assert_null(m);
	assert_non_null(
	    strstr(err, "(Identity): input 0: dtype FLOAT16 is supported only by Cast"));
	m = one_node("Identity", TENSOR_BFLOAT16, TENSOR_BFLOAT16, err, sizeof(err));
	assert_null(m);
	assert_non_null(strstr(err, "dtype BFLOAT16 is supported only by Cast"));
	/* the same graph with Cast loads and runs: 0.1 -> 0x2e66, 65536 -> inf */
	m = one_node("Cast", TENSOR_FLOAT, TENSOR_FLOAT16, err, sizeof(err));
	if (!m)
		fail_msg("%s", err);
	assert_int_equal(onnx_model_output(m, 0)->dtype, TENSOR_FLOAT16);
	struct tensor *x = tensor_new("x", TENSOR_FLOAT, 1, (int64_t[]){2}), *y = NULL;
	assert_non_null(x);
	((float *)x->data)[0] = 0.1f;
	((float *)x->data)[1] = 65536.0f;
	assert_int_equal(onnx_model_run(m, &x, 1, &y, err, sizeof(err)), 0);
	assert_int_equal(y->dtype, TENSOR_FLOAT16);
	assert_int_equal(((uint16_t *)y->data)[0], 0x2e66);
	assert_int_equal(((uint16_t *)y->data)[1], 0x7c00);
	tensor_free(x);
	tensor_free(y);
	onnx_model_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_float16_only_cast),
	    cmocka_unit_test(test_node_suite),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
