/*
 * test_onnx_repro.c - reproducibility of the bundled digits models: the C
 * runtime must give the reference's (PyTorch's) answers on the whole
 * held-out set.
 *
 * For predictor/models/digits-v1.onnx and digits-v2.onnx: run the held-out
 * pixels (digits-heldout.json) as one batch and one sample at a time, and
 * assert the labels equal the golden labels (digits-vN.golden.json) 100% and
 * every probability is within 1e-5 of the golden one. Prints the max
 * difference, the accuracy against the true labels and the mean
 * single-sample run time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "onnx.h"

#define MODELS   TURNOUT_SRC_DIR "/predictor/models/"
#define PROB_TOL 1e-5
#define NPIX     64
#define NCLASS   10

struct heldout {
	json_t *root;
	size_t n;
	struct tensor *pixels; /* [n,64] */
	const json_t *labels;
};

static int setup(void **state)
{
	static struct heldout h;
	json_error_t je;
	h.root = json_load_file(MODELS "digits-heldout.json", 0, &je);
	if (!h.root) {
		print_message("digits-heldout.json: %s at line %d\n", je.text, je.line);
		return -1;
	}
	const json_t *px = json_object_get(h.root, "pixels");
	h.labels = json_object_get(h.root, "labels");
	h.n = json_array_size(px);
	if (h.n == 0 || json_array_size(h.labels) != h.n)
		return -1;
	int64_t dims[2] = {(int64_t)h.n, NPIX};
	h.pixels = tensor_new("pixels", TENSOR_FLOAT, 2, dims);
	if (!h.pixels)
		return -1;
	float *d = h.pixels->data;
	for (size_t i = 0; i < h.n; i++) {
		const json_t *row = json_array_get(px, i);
		if (json_array_size(row) != NPIX)
			return -1;
		for (size_t j = 0; j < NPIX; j++)
			d[i * NPIX + j] = (float)json_number_value(json_array_get(row, j));
	}
	*state = &h;
	return 0;
}

static int teardown(void **state)
{
	struct heldout *h = *state;
	tensor_free(h->pixels);
	json_decref(h->root);
	return 0;
}

static size_t output_index(const struct onnx_model *m, const char *name)
{
	for (size_t i = 0; i < onnx_model_n_outputs(m); i++)
		if (strcmp(onnx_model_output(m, i)->name, name) == 0)
			return i;
	fail_msg("model has no output '%s'", name);
	return 0;
}

/* Compares rows [first, first+rows) of the outputs with the golden ones. */
static void check_rows(const struct heldout *h, const json_t *golden, struct tensor **out,
                       size_t ip, size_t il, size_t first, size_t rows, double *maxdiff,
                       size_t *correct)
{
	const json_t *gp = json_object_get(golden, "probabilities");
	const json_t *gl = json_object_get(golden, "labels");
	const float *p = out[ip]->data;
	const int64_t *l = out[il]->data;
	assert_int_equal(out[ip]->nelem, rows * NCLASS);
	assert_int_equal(out[il]->nelem, rows);
	for (size_t r = 0; r < rows; r++) {
		size_t i = first + r;
		const json_t *row = json_array_get(gp, i);
		assert_int_equal(json_array_size(row), NCLASS);
		for (size_t c = 0; c < NCLASS; c++) {
			double d =
			    fabs(p[r * NCLASS + c] - json_number_value(json_array_get(row, c)));
			if (d > *maxdiff)
				*maxdiff = d;
		}
		json_int_t want = json_integer_value(json_array_get(gl, i));
		if (l[r] != want)
			fail_msg("sample %zu: label %lld, golden %lld", i, (long long)l[r],
			         (long long)want);
		*correct += l[r] == json_integer_value(json_array_get(h->labels, i));
	}
}

static void repro(void **state, const char *version)
{
	struct heldout *h = *state;
	char path[512], err[ONNX_ERR_MAX];
	snprintf(path, sizeof(path), MODELS "digits-%s.onnx", version);
	struct onnx_model *m = onnx_model_load(path, err, sizeof(err));
	if (!m)
		fail_msg("%s", err);
	snprintf(path, sizeof(path), MODELS "digits-%s.golden.json", version);
	json_error_t je;
	json_t *golden = json_load_file(path, 0, &je);
	assert_non_null(golden);
	assert_int_equal(json_array_size(json_object_get(golden, "labels")), h->n);
	assert_int_equal(onnx_model_n_inputs(m), 1);
	assert_string_equal(onnx_model_input(m, 0)->name, "pixels");
	size_t ip = output_index(m, "probabilities"), il = output_index(m, "label");
	struct tensor *out[4] = {0};

	/* The whole set as one batch. */
	double maxdiff = 0;
	size_t correct = 0;
	if (onnx_model_run(m, &h->pixels, 1, out, err, sizeof(err)))
		fail_msg("batch run: %s", err);
	check_rows(h, golden, out, ip, il, 0, h->n, &maxdiff, &correct);
	for (size_t i = 0; i < onnx_model_n_outputs(m); i++)
		tensor_free(out[i]);
	print_message("%s batch of %zu: labels = golden 100%%, max |prob diff| %.3g, accuracy "
	              "%.4f\n",
	              version, h->n, maxdiff, (double)correct / (double)h->n);
	assert_true(maxdiff <= PROB_TOL);

	/* One sample at a time, as the server's hot path does. */
	int64_t dims[2] = {1, NPIX};
	struct tensor *one = tensor_new("pixels", TENSOR_FLOAT, 2, dims);
	assert_non_null(one);
	double smax = 0;
	size_t scorrect = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < h->n; i++) {
		memcpy(one->data, (const float *)h->pixels->data + i * NPIX, NPIX * sizeof(float));
		if (onnx_model_run(m, &one, 1, out, err, sizeof(err)))
			fail_msg("sample %zu: %s", i, err);
		check_rows(h, golden, out, ip, il, i, 1, &smax, &scorrect);
		for (size_t k = 0; k < onnx_model_n_outputs(m); k++)
			tensor_free(out[k]);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) /
	            1e3 / (double)h->n;
	print_message("%s single samples: labels = golden 100%%, max |prob diff| %.3g, accuracy "
	              "%.4f, %.2f us per run (incl. checks)\n",
	              version, smax, (double)scorrect / (double)h->n, us);
	assert_true(smax <= PROB_TOL);
	assert_int_equal(scorrect, correct);
	tensor_free(one);
	json_decref(golden);
	onnx_model_free(m);
}

static void test_v1(void **state)
{
	repro(state, "v1");
}

static void test_v2(void **state)
{
	repro(state, "v2");
}

/* A wrong shape is refused with the input's name and both shapes. */
static void test_bad_input_shape(void **state)
{
	char err[ONNX_ERR_MAX];
	struct onnx_model *m = onnx_model_load(MODELS "digits-v1.onnx", err, sizeof(err));
	assert_non_null(m);
	int64_t dims[2] = {1, 63};
	struct tensor *x = tensor_new("pixels", TENSOR_FLOAT, 2, dims);
	struct tensor *out[4] = {0};
	assert_int_equal(onnx_model_run(m, &x, 1, out, err, sizeof(err)), -1);
	print_message("%s\n", err);
	assert_non_null(strstr(err, "input 'pixels'"));
	assert_non_null(strstr(err, ",64]"));
	assert_non_null(strstr(err, "[1,63]"));
	assert_null(out[0]);
	tensor_free(x);
	onnx_model_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_v1),
	    cmocka_unit_test(test_v2),
	    cmocka_unit_test(test_bad_input_shape),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
