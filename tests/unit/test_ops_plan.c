/*
 * test_ops_plan.c - unit tests for the kernels planned at load: the packed
 * Gemm of predictor/ops/ops_linalg.c (ops_gemm_plan: B^T for transB, any
 * number of rows of A, with C, alpha and beta, agrees with the unplanned
 * kernel on 200 random shapes) and the direct convolution of
 * predictor/ops/ops_nn.c (ops_conv_plan, ops_conv_fuse_*, ops_conv_run):
 * on 300 random shapes (channels, image sizes, kernels 1..5, uneven pads,
 * batch, bias or none) the planned kernel agrees with the general
 * unfold-and-multiply path within float rounding; a fused Relu, and a fused
 * Relu + MaxPool, give exactly the floats of the planned Conv followed by the
 * Relu and MaxPool kernels; the plan refuses what it does not cover (infinite
 * weights, groups, strides, dilations, channel counts not a multiple of 8)
 * and the fusion refuses pools it cannot do.
 *
 * The kernels are driven directly, as in test_ops.c: a NodeProto carries the
 * attributes, prepare runs as at load, then run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"

#define MAXA 8

/* A prepared node with its attributes (the storage prepare reads from). */
struct pnode {
	Onnx__AttributeProto attr[MAXA], *attrp[MAXA];
	size_t nattr;
	int64_t ints[MAXA][8];
	int slots[16];
	struct ops_node n;
	char err[OPS_ERR_MAX];
};

static void attr_ints(struct pnode *p, const char *name, size_t n, const int64_t *v)
{
	assert_true(p->nattr < MAXA);
	Onnx__AttributeProto init = ONNX__ATTRIBUTE_PROTO__INIT;
	Onnx__AttributeProto *a = &p->attr[p->nattr];
	*a = init;
	a->name = (char *)name;
	a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
	memcpy(p->ints[p->nattr], v, n * sizeof(int64_t));
	a->n_ints = n;
	a->ints = p->ints[p->nattr];
	p->attrp[p->nattr++] = a;
}

static void attr_int(struct pnode *p, const char *name, int64_t v)
{
	assert_true(p->nattr < MAXA);
	Onnx__AttributeProto init = ONNX__ATTRIBUTE_PROTO__INIT;
	Onnx__AttributeProto *a = &p->attr[p->nattr];
	*a = init;
	a->name = (char *)name;
	a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
	a->has_i = 1;
	a->i = v;
	p->attrp[p->nattr++] = a;
}

/* Runs prepare for op with n_in float inputs; 0 or -1 (p->err). */
static int prepare(struct pnode *p, const char *op, size_t n_in)
{
	Onnx__NodeProto np = ONNX__NODE_PROTO__INIT;
	np.n_attribute = p->nattr;
	np.attribute = p->attrp;
	np.op_type = (char *)op;
	memset(&p->n, 0, sizeof(p->n));
	p->n.name = "t";
	p->n.op_type = op;
	p->n.kernel = ops_find(op);
	assert_non_null(p->n.kernel);
	p->n.opset = 13;
	p->n.n_in = n_in;
	p->n.n_out = 1;
	p->n.in = p->slots;
	p->n.out = p->slots + 8;
	enum tensor_dtype types[3] = {TENSOR_FLOAT, TENSOR_FLOAT, TENSOR_FLOAT}, out = 0;
	return p->n.kernel->prepare(&p->n, &np, types, &out, p->err, sizeof(p->err));
}

static struct tensor *run(struct pnode *p, struct tensor *const *in)
{
	struct tensor *out = NULL;
	if (p->n.kernel->run(&p->n, (const struct tensor *const *)in, &out, p->err, sizeof(p->err)))
		fail_msg("%s: %s", p->n.op_type, p->err);
	assert_non_null(out);
	return out;
}

static struct tensor *rand_tensor(int ndim, const int64_t *dims, unsigned *seed, int zeros)
{
	struct tensor *t = tensor_new(NULL, TENSOR_FLOAT, ndim, dims);
	assert_non_null(t);
	float *d = t->data;
	for (size_t i = 0; i < t->nelem; i++)
		d[i] =
		    zeros && rand_r(seed) % 3 == 0 ? 0.0f : (float)(rand_r(seed) % 33 - 16) / 4.0f;
	return t;
}

static void expect_same_shape(const struct tensor *a, const struct tensor *b)
{
	assert_int_equal(a->ndim, b->ndim);
	for (int i = 0; i < a->ndim; i++)
		assert_int_equal(a->dims[i], b->dims[i]);
}

/*
 * Values are quarters in -4..4, so every product is a multiple of 1/16 and
 * every sum of up to 125 of them is exact in any order: a missing or misplaced
 * tap is off by 1/16 at least. The tolerance is only for the general path's
 * own rounding should the sizes ever grow.
 */
static void expect_close(const struct tensor *got, const struct tensor *want, const char *what)
{
	expect_same_shape(got, want);
	const float *g = got->data, *w = want->data;
	for (size_t i = 0; i < got->nelem; i++)
		if (fabsf(g[i] - w[i]) > 1e-3f + 1e-5f * fabsf(w[i]))
			fail_msg("%s: element %zu: got %.9g, want %.9g", what, i, g[i], w[i]);
}

static void expect_equal(const struct tensor *got, const struct tensor *want, const char *what)
{
	expect_same_shape(got, want);
	if (memcmp(got->data, want->data, got->nelem * sizeof(float)) != 0)
		fail_msg("%s: not the same floats", what);
}

static void test_direct_matches_general(void **state)
{
	(void)state;
	unsigned seed = 12345;
	int planned = 0;
	for (int iter = 0; iter < 300; iter++) {
		int64_t N = 1 + rand_r(&seed) % 2, C = 1 + rand_r(&seed) % 5;
		int64_t M = 8 * (1 + rand_r(&seed) % 5);
		int64_t KH = 1 + rand_r(&seed) % 5, KW = iter % 4 ? 3 : 1 + rand_r(&seed) % 5;
		if (iter % 4)
			KH = 3; /* most cases take the unrolled 3x3 kernels */
		int64_t pads[4];
		for (int i = 0; i < 4; i++)
			pads[i] = rand_r(&seed) % 3;
		int64_t H = KH - pads[0] - pads[2] + rand_r(&seed) % 8;
		int64_t W = KW - pads[1] - pads[3] + rand_r(&seed) % 8;
		if (H < 1)
			H = 1;
		if (W < 1)
			W = 1;
		if (H + pads[0] + pads[2] < KH || W + pads[1] + pads[3] < KW)
			continue;
		int bias = rand_r(&seed) % 2;
		struct pnode p = {0};
		attr_ints(&p, "pads", 4, pads);
		assert_int_equal(prepare(&p, "Conv", bias ? 3 : 2), 0);
		struct tensor *in[3] = {rand_tensor(4, (int64_t[]){N, C, H, W}, &seed, 1),
		                        rand_tensor(4, (int64_t[]){M, C, KH, KW}, &seed, 0),
		                        bias ? rand_tensor(1, (int64_t[]){M}, &seed, 0) : NULL};
		struct tensor *ref = run(&p, in); /* n.conv NULL: the general path */
		assert_int_equal(ops_conv_plan(&p.n, in[1]), 0);
		assert_non_null(p.n.conv);
		planned++;
		struct tensor *got = run(&p, in);
		char what[128];
		snprintf(what, sizeof(what),
		         "N%lld C%lld M%lld %lldx%lld k%lldx%lld pads %lld,%lld,%lld,%lld",
		         (long long)N, (long long)C, (long long)M, (long long)H, (long long)W,
		         (long long)KH, (long long)KW, (long long)pads[0], (long long)pads[1],
		         (long long)pads[2], (long long)pads[3]);
		expect_close(got, ref, what);

		/* Fused Relu, then fused MaxPool: the floats of the separate kernels. */
		struct pnode relu = {0};
		assert_int_equal(prepare(&relu, "Relu", 1), 0);
		struct tensor *r = run(&relu, &got);
		assert_int_equal(ops_conv_fuse_relu(&p.n), 0);
		struct tensor *fr = run(&p, in);
		expect_equal(fr, r, "fused Relu");
		int64_t pk[2] = {1 + rand_r(&seed) % 2, 1 + rand_r(&seed) % 2};
		int64_t ps[2] = {1 + rand_r(&seed) % 2, 1 + rand_r(&seed) % 2};
		if (got->dims[2] >= pk[0] && got->dims[3] >= pk[1]) {
			struct pnode pool = {0};
			attr_ints(&pool, "kernel_shape", 2, pk);
			attr_ints(&pool, "strides", 2, ps);
			assert_int_equal(prepare(&pool, "MaxPool", 1), 0);
			struct tensor *pr = run(&pool, &r);
			assert_int_equal(ops_conv_fuse_pool(&p.n, &pool.n), 0);
			struct tensor *fp = run(&p, in);
			expect_equal(fp, pr, "fused Relu + MaxPool");
			tensor_free(pr);
			tensor_free(fp);
		}
		ops_conv_plan_free(p.n.conv);
		for (int i = 0; i < 3; i++)
			tensor_free(in[i]);
		tensor_free(ref);
		tensor_free(got);
		tensor_free(r);
		tensor_free(fr);
	}
	assert_true(planned > 200);
}

/* The plan leaves alone what the direct kernel does not cover. */
static void test_plan_refuses(void **state)
{
	(void)state;
	unsigned seed = 7;
	struct pnode p = {0};
	assert_int_equal(prepare(&p, "Conv", 2), 0);
	struct tensor *w = rand_tensor(4, (int64_t[]){8, 2, 3, 3}, &seed, 0);
	((float *)w->data)[5] = INFINITY; /* 0 * inf in the padding is NaN */
	assert_int_equal(ops_conv_plan(&p.n, w), 0);
	assert_null(p.n.conv);
	tensor_free(w);
	w = rand_tensor(4, (int64_t[]){12, 2, 3, 3}, &seed, 0); /* 12 channels */
	assert_int_equal(ops_conv_plan(&p.n, w), 0);
	assert_null(p.n.conv);
	tensor_free(w);
	w = rand_tensor(3, (int64_t[]){8, 2, 3}, &seed, 0); /* 1-D */
	assert_int_equal(ops_conv_plan(&p.n, w), 0);
	assert_null(p.n.conv);
	tensor_free(w);

	w = rand_tensor(4, (int64_t[]){8, 1, 3, 3}, &seed, 0);
	struct pnode g = {0};
	attr_int(&g, "group", 2);
	assert_int_equal(prepare(&g, "Conv", 2), 0);
	assert_int_equal(ops_conv_plan(&g.n, w), 0);
	assert_null(g.n.conv);
	struct pnode s = {0};
	attr_ints(&s, "strides", 2, (int64_t[]){2, 2});
	assert_int_equal(prepare(&s, "Conv", 2), 0);
	assert_int_equal(ops_conv_plan(&s.n, w), 0);
	assert_null(s.n.conv);
	struct pnode d = {0};
	attr_ints(&d, "dilations", 2, (int64_t[]){1, 2});
	assert_int_equal(prepare(&d, "Conv", 2), 0);
	assert_int_equal(ops_conv_plan(&d.n, w), 0);
	assert_null(d.n.conv);

	/* Pools the fusion cannot do: padded, ceil_mode, dilated, SAME. */
	struct pnode ok = {0};
	assert_int_equal(prepare(&ok, "Conv", 2), 0);
	assert_int_equal(ops_conv_plan(&ok.n, w), 0);
	assert_non_null(ok.n.conv);
	struct pnode pp = {0};
	attr_ints(&pp, "kernel_shape", 2, (int64_t[]){2, 2});
	attr_ints(&pp, "pads", 4, (int64_t[]){0, 1, 0, 1});
	assert_int_equal(prepare(&pp, "MaxPool", 1), 0);
	assert_int_equal(ops_conv_fuse_pool(&ok.n, &pp.n), -1);
	struct pnode pc = {0};
	attr_ints(&pc, "kernel_shape", 2, (int64_t[]){2, 2});
	attr_int(&pc, "ceil_mode", 1);
	assert_int_equal(prepare(&pc, "MaxPool", 1), 0);
	assert_int_equal(ops_conv_fuse_pool(&ok.n, &pc.n), -1);
	struct pnode pd = {0};
	attr_ints(&pd, "kernel_shape", 2, (int64_t[]){2, 2});
	attr_ints(&pd, "dilations", 2, (int64_t[]){2, 2});
	assert_int_equal(prepare(&pd, "MaxPool", 1), 0);
	assert_int_equal(ops_conv_fuse_pool(&ok.n, &pd.n), -1);
	struct pnode pa = {0};
	attr_ints(&pa, "kernel_shape", 2, (int64_t[]){2, 2});
	Onnx__AttributeProto init = ONNX__ATTRIBUTE_PROTO__INIT;
	pa.attr[pa.nattr] = init;
	pa.attr[pa.nattr].name = "auto_pad";
	pa.attr[pa.nattr].type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
	pa.attr[pa.nattr].has_s = 1;
	pa.attr[pa.nattr].s.data = (uint8_t *)"SAME_UPPER";
	pa.attr[pa.nattr].s.len = strlen("SAME_UPPER");
	pa.attrp[pa.nattr] = &pa.attr[pa.nattr];
	pa.nattr++;
	assert_int_equal(prepare(&pa, "MaxPool", 1), 0);
	assert_int_equal(ops_conv_fuse_pool(&ok.n, &pa.n), -1);
	/* Relu after a fused pool would change the order: refused. */
	struct pnode pool = {0};
	attr_ints(&pool, "kernel_shape", 2, (int64_t[]){2, 2});
	assert_int_equal(prepare(&pool, "MaxPool", 1), 0);
	assert_int_equal(ops_conv_fuse_pool(&ok.n, &pool.n), 0);
	assert_int_equal(ops_conv_fuse_relu(&ok.n), -1);
	assert_int_equal(ops_conv_fuse_pool(&ok.n, &pool.n), -1);
	ops_conv_plan_free(ok.n.conv);
	tensor_free(w);
}

/* A planned node checks its input against the packed weight. */
static void test_run_shape_error(void **state)
{
	(void)state;
	unsigned seed = 3;
	struct pnode p = {0};
	assert_int_equal(prepare(&p, "Conv", 2), 0);
	struct tensor *in[2] = {rand_tensor(4, (int64_t[]){1, 3, 5, 5}, &seed, 0),
	                        rand_tensor(4, (int64_t[]){8, 2, 3, 3}, &seed, 0)};
	assert_int_equal(ops_conv_plan(&p.n, in[1]), 0);
	assert_non_null(p.n.conv);
	struct tensor *out = NULL;
	assert_int_equal(
	    p.n.kernel->run(&p.n, (const struct tensor *const *)in, &out, p.err, sizeof(p.err)),
	    -1);
	assert_null(out);
	assert_non_null(strstr(p.err, "[1,3,5,5]"));
	ops_conv_plan_free(p.n.conv);
	tensor_free(in[0]);
	tensor_free(in[1]);
}

static void test_gemm_plan(void **state)
{
	(void)state;
	unsigned seed = 4242;
	for (int iter = 0; iter < 200; iter++) {
		int64_t M = 1 + rand_r(&seed) % 3, N = 1 + rand_r(&seed) % 70,
		        K = 1 + rand_r(&seed) % 70;
		int with_c = rand_r(&seed) % 2;
		struct pnode p = {0};
		attr_int(&p, "transB", 1);
		if (iter % 3 == 0) {
			Onnx__AttributeProto init = ONNX__ATTRIBUTE_PROTO__INIT;
			p.attr[p.nattr] = init;
			p.attr[p.nattr].name = "alpha";
			p.attr[p.nattr].type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
			p.attr[p.nattr].has_f = 1;
			p.attr[p.nattr].f = 0.5f;
			p.attrp[p.nattr] = &p.attr[p.nattr];
			p.nattr++;
		}
		assert_int_equal(prepare(&p, "Gemm", with_c ? 3 : 2), 0);
		struct tensor *in[3] = {rand_tensor(2, (int64_t[]){M, K}, &seed, 1),
		                        rand_tensor(2, (int64_t[]){N, K}, &seed, 0),
		                        with_c ? rand_tensor(1, (int64_t[]){N}, &seed, 0) : NULL};
		struct tensor *ref = run(&p, in);
		assert_int_equal(ops_gemm_plan(&p.n, in[1]), 0);
		assert_non_null(p.n.gemm_bt);
		struct tensor *got = run(&p, in);
		char what[64];
		snprintf(what, sizeof(what), "Gemm M%lld N%lld K%lld", (long long)M, (long long)N,
		         (long long)K);
		expect_close(got, ref, what);
		free(p.n.gemm_bt);
		for (int i = 0; i < 3; i++)
			tensor_free(in[i]);
		tensor_free(ref);
		tensor_free(got);
	}
	/* Nothing to pack without transB, or with transA. */
	unsigned s2 = 1;
	struct tensor *b = rand_tensor(2, (int64_t[]){4, 4}, &s2, 0);
	struct pnode p = {0};
	assert_int_equal(prepare(&p, "Gemm", 2), 0);
	assert_int_equal(ops_gemm_plan(&p.n, b), 0);
	assert_null(p.n.gemm_bt);
	struct pnode q = {0};
	attr_int(&q, "transA", 1);
	attr_int(&q, "transB", 1);
	assert_int_equal(prepare(&q, "Gemm", 2), 0);
	assert_int_equal(ops_gemm_plan(&q.n, b), 0);
	assert_null(q.n.gemm_bt);
	tensor_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_direct_matches_general),
	    cmocka_unit_test(test_plan_refuses),
	    cmocka_unit_test(test_run_shape_error),
	    cmocka_unit_test(test_gemm_plan),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
