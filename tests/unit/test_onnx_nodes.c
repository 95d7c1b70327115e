/*
 * test_onnx_nodes.c - the ONNX project's own node tests (Debian's
 * libonnx-testdata) run against predictor/onnx.c.
 *
 * Walks /usr/share/libonnx-testdata/data/node/<test>/: loads model.onnx; a
 * model the runtime refuses at load is skipped with the refusal as reason;
 * otherwise every test_data_set_N is run and each output compared with
 * output_N.pb at the ONNX backend-test tolerance, |got - want| <= atol +
 * rtol * |want| with rtol 1e-3, atol 1e-7 (NaN equals NaN; integers and
 * booleans exactly). Prints passed/failed/skipped and the skipped tests'
 * operators; fails if any test the runtime accepted fails, or if one of the
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
		if (!(fabs(g - w) <= ATOL + RTOL * fabs(w))) {
			snprintf(why, len, "element %zu: got %.9g, expected %.9g", i, g, w);
			return -1;
		}
	}
	return 0;
bad_int:
	snprintf(why, len, "integer element differs");
	return -1;
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

/* Runs one data set; returns 0 on pass, -1 with why. */
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
		snprintf(p, sizeof(p), "%s/input_%d.pb", dir, i);
		if (!(in[i] = onnx_tensor_load(p, err, sizeof(err)))) {
			snprintf(why, len, "%s", err);
			goto out;
		}
	}
	for (int i = 0; i < no; i++) {
		snprintf(p, sizeof(p), "%s/output_%d.pb", dir, i);
		if (!(want[i] = onnx_tensor_load(p, err, sizeof(err)))) {
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
		int ok = 1, sets = 0;
		for (int k = 0; k < 16; k++) {
			char set[1200], why[512];
			struct stat st;
			snprintf(set, sizeof(set), "%s/test_data_set_%d", dir, k);
			if (stat(set, &st) != 0)
				break;
			sets++;
			if (run_set(m, set, why, sizeof(why))) {
				print_message("FAIL %s (set %d): %s\n", names[t], k, why);
				ok = 0;
				break;
			}
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_node_suite),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
