/*
 * ops_resize.c - Resize (opset 10..18 inputs; modes nearest with its four
 * rounding rules, linear and cubic, n-dimensional and separable) and the
 * older Upsample. Coordinate transformations: half_pixel, pytorch_half_pixel,
 * align_corners, asymmetric, tf_half_pixel_for_nn; tf_crop_and_resize and
 * the opset-18 attributes (antialias, axes, keep_aspect_ratio_policy) are
 * refused. Neighbours outside the input take the edge value, as the ONNX
 * reference does.
 *
 * Each axis gets a table (per output coordinate: up to four input indices and
 * weights); an output element sums the products over all axes' neighbours.
 */
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NB            4   /* neighbours per axis, at most (cubic) */
#define RS_MAX_COMBOS 256 /* neighbours of one output element: cubic on 4 axes */

enum rs_mode { RS_NEAREST, RS_LINEAR, RS_CUBIC };
enum rs_coord { RC_HALF_PIXEL, RC_PYTORCH_HALF_PIXEL, RC_ALIGN_CORNERS, RC_ASYMMETRIC, RC_TF_NN };
enum rs_round { RR_PREFER_FLOOR, RR_PREFER_CEIL, RR_FLOOR, RR_CEIL };

struct rs_tap {
	int n;
	int64_t idx[NB];
	double w[NB];
};

static int pick(const char *v, const char *const *names, int count, const char *what, int *out,
                char *err, size_t errlen)
{
	for (int i = 0; i < count; i++)
		if (strcmp(v, names[i]) == 0) {
			*out = i;
			return 0;
		}
	snprintf(err, errlen, "%s=%s not supported", what, v);
	return -1;
}

static int prepare_resize(struct ops_node *n, const Onnx__NodeProto *np,
                          const enum tensor_dtype *in_types, enum tensor_dtype *out_types,
                          char *err, size_t errlen)
{
	static const char *const modes[] = {"nearest", "linear", "cubic"};
	static const char *const coords[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
	                                     "asymmetric", "tf_half_pixel_for_nn"};
	static const char *const rounds[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
	                                     "ceil"};
	static const enum tensor_dtype float_only[] = {TENSOR_FLOAT, 0};
	char mode[32], coord[32], rnd[32];
	int64_t excl;
	int upsample = strcmp(n->op_type, "Upsample") == 0;
	if (ops_require_dtype(in_types[0], "X", float_only, err, errlen) ||
	    ops_attr_string(np, "mode", "nearest", mode, sizeof(mode), err, errlen) ||
	    ops_attr_string(np, "coordinate_transformation_mode",
	                    upsample || n->opset < 11 ? "asymmetric" : "half_pixel", coord,
	                    sizeof(coord), err, errlen) ||
	    ops_attr_string(np, "nearest_mode",
	                    upsample || n->opset < 11 ? "floor" : "round_prefer_floor", rnd,
	                    sizeof(rnd), err, errlen) ||
	    ops_attr_float(np, "cubic_coeff_a", -0.75f, &n->p.alpha, err, errlen) ||
	    ops_attr_int(np, "exclude_outside", 0, &excl, err, errlen))
		return -1;
	if (ops_attr(np, "antialias") || ops_attr(np, "axes") ||
	    ops_attr(np, "keep_aspect_ratio_policy") || ops_attr(np, "scales")) {
		snprintf(err, errlen,
		         "attributes antialias/axes/keep_aspect_ratio_policy/scales not "
		         "supported");
		return -1;
	}
	if (pick(mode, modes, 3, "mode", &n->p.auto_pad, err, errlen) ||
	    pick(coord, coords, 5, "coordinate_transformation_mode", &n->p.ceil_mode, err,
	         errlen) ||
	    pick(rnd, rounds, 4, "nearest_mode", &n->p.count_include_pad, err, errlen))
		return -1;
	n->p.keepdims = excl != 0;
	/* Which input holds scales and sizes depends on the opset. */
	n->p.legacy = upsample || n->opset < 11;
	static const enum tensor_dtype f[] = {TENSOR_FLOAT, 0}, l[] = {TENSOR_INT64, 0};
	for (size_t i = 1; i < n->n_in; i++) {
		int is_sizes = !n->p.legacy && i == 3;
		if (in_types[i] == TENSOR_UNDEFINED || (!n->p.legacy && i == 1))
			continue; /* roi only matters to tf_crop_and_resize */
		if (ops_require_dtype(in_types[i], is_sizes ? "sizes" : "scales", is_sizes ? l : f,
		                      err, errlen))
			return -1;
	}
	out_types[0] = TENSOR_FLOAT;
	return 0;
}

/*
 * Input coordinate of output coordinate x. As in the ONNX reference, the
 * resized length is in * scale, unrounded (it differs from the output size
 * when a scale does not divide evenly).
 */
static double coord_of(int mode, int64_t x, double scale, int64_t in)
{
	double lr = (double)in * scale;
	switch (mode) {
	case RC_PYTORCH_HALF_PIXEL:
		return lr > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
	case RC_ALIGN_CORNERS:
		return lr == 1 ? 0.0 : (double)x * (double)(in - 1) / (lr - 1);
	case RC_ASYMMETRIC:
		return x / scale;
	case RC_TF_NN:
		return (x + 0.5) / scale;
	default:
		return (x + 0.5) / scale - 0.5;
	}
}

static void cubic_coeffs(double r, double A, double *c)
{
	double s = 1 - r;
	c[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
	c[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
	c[2] = ((A + 2) * s - (A + 3)) * s * s + 1;
	c[3] = ((A * (s + 1) - 5 * A) * (s + 1) + 8 * A) * (s + 1) - 4 * A;
}

/* The neighbours and weights of output coordinate x along one axis. */
static void make_tap(const struct ops_params *p, int64_t x, double scale, int64_t in,
                     struct rs_tap *t)
{
	double xo = coord_of(p->ceil_mode, x, scale, in);
	double fl = floor(xo);
	int integral = xo == fl;
	double r = integral ? 1.0 : xo - fl;
	if (p->auto_pad == RS_NEAREST) {
		int up;
		if (integral)
			up = 0, fl = xo;
		else if (p->count_include_pad == RR_PREFER_FLOOR)
			up = r > 0.5;
		else if (p->count_include_pad == RR_PREFER_CEIL)
			up = r >= 0.5;
		else
			up = p->count_include_pad == RR_CEIL;
		double v = fl + up;
		v = v < 0 ? 0 : (v > (double)(in - 1) ? (double)(in - 1) : v);
		t->n = 1;
		t->idx[0] = (int64_t)v;
		t->w[0] = 1;
		return;
	}
	int nb = p->auto_pad == RS_LINEAR ? 2 : 4;
	double c[NB];
	if (nb == 2) {
		c[0] = 1 - r;
		c[1] = r;
	} else {
		cubic_coeffs(r, p->alpha, c);
	}
	/* the nb nearest positions (ties to the lower), kept inside the edge padding */
	double lim_lo = -(double)(nb / 2), lim_hi = (double)(in - 1 + nb / 2);
	double start = integral ? xo - nb / 2 : fl - nb / 2 + 1;
	if (start < lim_lo)
		start = lim_lo;
	if (start + nb - 1 > lim_hi)
		start = lim_hi - (nb - 1);
	double sum = 0;
	t->n = 0;
	for (int k = 0; k < nb; k++) {
		double pos = start + k;
		int outside = pos < 0 || pos > (double)(in - 1);
		double w = p->keepdims && outside ? 0 : c[k];
		if (w == 0)
			continue; /* zero weights only cost time */
		t->w[t->n] = w;
		t->idx[t->n++] = pos < 0 ? 0 : (pos > (double)(in - 1) ? in - 1 : (int64_t)pos);
		sum += w;
	}
	if (t->n == 0) { /* all weights zero: the value is 0 */
		t->n = 1;
		t->idx[0] = 0;
		t->w[0] = 0;
	}
	if (p->keepdims && sum != 0)
		for (int k = 0; k < t->n; k++)
			t->w[k] /= sum;
}

static int run_resize(const struct ops_node *n, const struct tensor *const *in, struct tensor **out,
                      char *err, size_t errlen)
{
	const struct tensor *x = in[0];
	const struct tensor *scales =
	    n->p.legacy ? (n->n_in > 1 ? in[1] : NULL) : (n->n_in > 2 ? in[2] : NULL);
	const struct tensor *sizes = !n->p.legacy && n->n_in > 3 ? in[3] : NULL;
	int r = x->ndim;
	int64_t od[TENSOR_MAX_DIMS] = {0};
	double sc[TENSOR_MAX_DIMS] = {0};
	if (sizes && sizes->nelem == 0)
		sizes = NULL;
	if (scales && scales->nelem == 0)
		scales = NULL;
	if ((sizes ? sizes->nelem : (scales ? scales->nelem : 0)) != (size_t)r || r == 0) {
		snprintf(err, errlen, "need %d scales or sizes", r);
		return -1;
	}
	for (int d = 0; d < r; d++) {
		if (sizes) {
			od[d] = ((const int64_t *)sizes->data)[d];
			sc[d] = x->dims[d] ? (double)od[d] / (double)x->dims[d] : 1;
		} else {
			sc[d] = ((const float *)scales->data)[d];
			double o = floor((double)x->dims[d] * sc[d]);
			od[d] = o >= 0 && o < 1e12 ? (int64_t)o : -1;
		}
		if (od[d] < 0 || !(sc[d] > 0) || (x->dims[d] == 0 && od[d] > 0)) {
			snprintf(err, errlen, "bad scale or size for axis %d", d);
			return -1;
		}
	}
	if (ops_new(out, TENSOR_FLOAT, r, od, err, errlen))
		return -1;
	/* One tap table per axis. */
	size_t total = 0, off[TENSOR_MAX_DIMS];
	for (int d = 0; d < r; d++) {
		off[d] = total;
		total += (size_t)od[d];
	}
	struct rs_tap *taps = malloc((total ? total : 1) * sizeof(*taps));
	if (!taps) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (int d = 0; d < r; d++)
		for (int64_t o = 0; o < od[d]; o++)
			make_tap(&n->p, o, sc[d], x->dims[d], &taps[off[d] + (size_t)o]);
	size_t combos = 1;
	for (int d = 0; d < r; d++) {
		int most = 1;
		for (int64_t o = 0; o < od[d]; o++)
			if (taps[off[d] + (size_t)o].n > most)
				most = taps[off[d] + (size_t)o].n;
		combos *= (size_t)most;
	}
	if (combos > RS_MAX_COMBOS) {
		free(taps);
		snprintf(err, errlen,
		         "interpolation over too many axes (%zu neighbours per output)", combos);
		return -1;
	}
	size_t xs[TENSOR_MAX_DIMS], acc = 1;
	for (int d = r - 1; d >= 0; d--) {
		xs[d] = acc;
		acc *= (size_t)x->dims[d];
	}
	const float *xd = x->data;
	float *y = (*out)->data;
	int64_t idx[TENSOR_MAX_DIMS] = {0};
	for (size_t e = 0; e < (*out)->nelem; e++) {
		const struct rs_tap *t[TENSOR_MAX_DIMS];
		int k[TENSOR_MAX_DIMS] = {0};
		for (int d = 0; d < r; d++)
			t[d] = &taps[off[d] + (size_t)idx[d]];
		double sum = 0;
		for (;;) { /* every combination of the axes' neighbours */
			double w = 1;
			size_t at = 0;
			for (int d = 0; d < r; d++) {
				w *= t[d]->w[k[d]];
				at += (size_t)t[d]->idx[k[d]] * xs[d];
			}
			sum += w * xd[at];
			int d = r - 1;
			while (d >= 0 && ++k[d] == t[d]->n)
				k[d--] = 0;
			if (d < 0)
				break;
		}
		y[e] = (float)sum;
		for (int d = r - 1; d >= 0; d--) {
			if (++idx[d] < od[d])
				break;
			idx[d] = 0;
		}
	}
	free(taps);
	return 0;
}

const struct ops_kernel ops_resize_kernels[] = {
    {"Resize", 1, 4, 1, 1, prepare_resize, run_resize, NULL},
    {"Upsample", 2, 2, 1, 1, prepare_resize, run_resize, NULL},
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL},
};
