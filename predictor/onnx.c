/*
 * onnx.c - the ONNX runtime: load a ModelProto with protobuf-c into a run
 * plan, and run it.
 *
 * Load resolves every value name to a slot (an index), turns initializers and
 * Constant nodes into constant tensors, orders the nodes topologically, infers
 * each slot's dtype and lets each operator's prepare step read its attributes
 * and refuse what it cannot run. After load the protobuf is freed; a run does
 * no string lookups: it binds inputs to slots, calls the kernels in order,
 * frees each intermediate after its last use and hands the outputs over.
 * The model is never written after load, so runs may share it across threads.
 */
#include "onnx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_proto.h"
#include "ops/ops.h"

#define ONNX_MIN_OPSET  1
#define ONNX_MAX_OPSET  18
#define ONNX_MAX_VALUES (1 << 20) /* hard limit on named values in a graph */
#define RUN_STACK_SLOTS 128       /* runs with up to this many slots allocate no tables */

struct onnx_input {
	struct onnx_value_info info;
	int slot;
	char *dim_param[TENSOR_MAX_DIMS]; /* symbolic dimension names, for messages */
};

struct onnx_model {
	char *path;
	int opset;
	size_t n_slots;
	char **slot_name;             /* owned */
	enum tensor_dtype *slot_type; /* inferred at load */
	struct tensor **constant;     /* owned; NULL for computed slots */
	int *last_use;                /* last node reading the slot, -1 if none */
	unsigned char *is_output;     /* slot is a graph output: never freed early */
	size_t n_nodes;
	struct ops_node *nodes; /* in run order */
	size_t cap_nodes;
	size_t max_io; /* largest n_in + n_out of any node */
	size_t n_inputs;
	struct onnx_input *inputs;
	size_t n_outputs;
	struct onnx_value_info *outputs;
	int *output_slot;
};

/* ---- name -> slot table (open addressing, built only at load) ---- */

struct name_table {
	size_t cap;
	int *slot; /* -1 = empty */
};

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static int table_find(const struct onnx_model *m, const struct name_table *t, const char *name)
{
	for (size_t i = name_hash(name) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		if (t->slot[i] < 0 || strcmp(m->slot_name[t->slot[i]], name) == 0)
			return t->slot[i];
	}
}

static void table_put(const struct onnx_model *m, struct name_table *t, const char *name, int s)
{
	size_t i = name_hash(name) & (t->cap - 1);
	while (t->slot[i] >= 0)
		i = (i + 1) & (t->cap - 1);
	t->slot[i] = s;
}

/* ---- load ---- */

struct loader {
	struct onnx_model *m;
	struct name_table names;
	size_t cap_slots;
	char *err;
	size_t errlen;
};

/* Adds a named slot; returns its index or -1 (duplicate name or no memory). */
static int add_slot(struct loader *L, const char *name, const char *ctx)
{
	struct onnx_model *m = L->m;
	if (!name || !*name) {
		snprintf(L->err, L->errlen, "%s: %s has an empty name", m->path, ctx);
		return -1;
	}
	if (table_find(m, &L->names, name) >= 0) {
		snprintf(L->err, L->errlen, "%s: %s: value '%s' is defined twice", m->path, ctx,
		         name);
		return -1;
	}
	if (m->n_slots >= L->cap_slots) {
		snprintf(L->err, L->errlen, "%s: more than %zu values", m->path, L->cap_slots);
		return -1;
	}
	int s = (int)m->n_slots;
	m->slot_name[s] = strdup(name);
	if (!m->slot_name[s]) {
		snprintf(L->err, L->errlen, "%s: out of memory", m->path);
		return -1;
	}
	m->n_slots++;
	table_put(m, &L->names, name, s);
	return s;
}

static int loader_init(struct loader *L, const Onnx__GraphProto *g)
{
	struct onnx_model *m = L->m;
	size_t n = g->n_initializer + g->n_input;
	for (size_t i = 0; i < g->n_node; i++)
		n += g->node[i]->n_output;
	if (n > ONNX_MAX_VALUES) {
		snprintf(L->err, L->errlen, "%s: %zu values, above the limit of %d", m->path, n,
		         ONNX_MAX_VALUES);
		return -1;
	}
	L->cap_slots = n ? n : 1;
	L->names.cap = 16;
	while (L->names.cap < 2 * L->cap_slots)
		L->names.cap *= 2;
	L->names.slot = malloc(L->names.cap * sizeof(int));
	m->slot_name = calloc(L->cap_slots, sizeof(char *));
	m->slot_type = calloc(L->cap_slots, sizeof(enum tensor_dtype));
	m->constant = calloc(L->cap_slots, sizeof(struct tensor *));
	m->last_use = malloc(L->cap_slots * sizeof(int));
	m->is_output = calloc(L->cap_slots, 1);
	if (!L->names.slot || !m->slot_name || !m->slot_type || !m->constant || !m->last_use ||
	    !m->is_output) {
		snprintf(L->err, L->errlen, "%s: out of memory", m->path);
		return -1;
	}
	memset(L->names.slot, 0xff, L->names.cap * sizeof(int));
	for (size_t i = 0; i < L->cap_slots; i++)
		m->last_use[i] = -1;
	return 0;
}

static int load_initializers(struct loader *L, const Onnx__GraphProto *g)
{
	struct onnx_model *m = L->m;
	if (g->n_sparse_initializer) {
		snprintf(L->err, L->errlen, "%s: sparse initializers not supported", m->path);
		return -1;
	}
	for (size_t i = 0; i < g->n_initializer; i++) {
		const Onnx__TensorProto *tp = g->initializer[i];
		char what[300];
		snprintf(what, sizeof(what), "%s: initializer '%s'", m->path,
		         tp->name ? tp->name : "");
		int s = add_slot(L, tp->name, "initializer");
		if (s < 0)
			return -1;
		m->constant[s] = onnx_proto_tensor(tp, what, L->err, L->errlen);
		if (!m->constant[s])
			return -1;
		m->slot_type[s] = m->constant[s]->dtype;
	}
	return 0;
}

/* Reads a graph input/output declaration into info (dims -1 when symbolic). */
static int value_info(struct loader *L, const Onnx__ValueInfoProto *vi, const char *kind,
                      struct onnx_value_info *info, char **dim_param)
{
	struct onnx_model *m = L->m;
	const Onnx__TypeProto *tp = vi->type;
	info->name = vi->name;
	if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type) {
		snprintf(L->err, L->errlen, "%s: %s '%s': only tensor types are supported", m->path,
		         kind, vi->name ? vi->name : "");
		return -1;
	}
	const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
	int dt = tt->has_elem_type ? tt->elem_type : 0;
	if (tensor_dtype_size((enum tensor_dtype)dt) == 0 || dt == 0) {
		snprintf(L->err, L->errlen, "%s: %s '%s': dtype %s not supported", m->path, kind,
		         vi->name ? vi->name : "", ops_dtype_name(dt));
		return -1;
	}
	info->dtype = (enum tensor_dtype)dt;
	info->ndim = -1; /* unknown rank */
	if (!tt->shape)
		return 0;
	if (tt->shape->n_dim > TENSOR_MAX_DIMS) {
		snprintf(L->err, L->errlen, "%s: %s '%s': rank %zu above %d", m->path, kind,
		         vi->name, tt->shape->n_dim, TENSOR_MAX_DIMS);
		return -1;
	}
	info->ndim = (int)tt->shape->n_dim;
	for (int d = 0; d < info->ndim; d++) {
		const Onnx__TensorShapeProto__Dimension *dim = tt->shape->dim[d];
		int known =
		    dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
		    dim->dim_value >= 0;
		info->dims[d] = known ? dim->dim_value : -1;
		if (dim_param &&
		    dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
		    dim->dim_param && *dim->dim_param && !(dim_param[d] = strdup(dim->dim_param))) {
			snprintf(L->err, L->errlen, "%s: out of memory", m->path);
			return -1;
		}
	}
	return 0;
}

static int load_inputs(struct loader *L, const Onnx__GraphProto *g)
{
	struct onnx_model *m = L->m;
	m->inputs = calloc(g->n_input ? g->n_input : 1, sizeof(*m->inputs));
	if (!m->inputs) {
		snprintf(L->err, L->errlen, "%s: out of memory", m->path);
		return -1;
	}
	for (size_t i = 0; i < g->n_input; i++) {
		const Onnx__ValueInfoProto *vi = g->input[i];
		if (vi->name && table_find(m, &L->names, vi->name) >= 0)
			continue; /* backed by an initializer: not an input of the model */
		struct onnx_input *in = &m->inputs[m->n_inputs];
		in->slot = add_slot(L, vi->name, "graph input");
		if (in->slot < 0)
			return -1;
		m->n_inputs++;
		if (value_info(L, vi, "input", &in->info, in->dim_param))
			return -1;
		in->info.name = m->slot_name[in->slot];
		m->slot_type[in->slot] = in->info.dtype;
	}
	return 0;
}

/* Display name of node i for messages: its name, else its first output. */
static const char *node_label(const Onnx__NodeProto *np, char *buf, size_t len, size_t i)
{
	if (np->name && *np->name)
		return np->name;
	if (np->n_output && np->output[0] && *np->output[0])
		snprintf(buf, len, "#%zu -> %s", i, np->output[0]);
	else
		snprintf(buf, len, "#%zu", i);
	return buf;
}

static int is_default_domain(const char *d)
{
	return !d || !*d || strcmp(d, "ai.onnx") == 0;
}

/* Turns a Constant node into the constant tensor of its output slot. */
static int load_constant(struct loader *L, const Onnx__NodeProto *np, const char *label, int s)
{
	struct onnx_model *m = L->m;
	char what[400];
	snprintf(what, sizeof(what), "%s: node '%s' (Constant)", m->path, label);
	if (np->n_attribute != 1) {
		snprintf(L->err, L->errlen, "%s: needs exactly one value attribute", what);
		return -1;
	}
	const Onnx__AttributeProto *a = np->attribute[0];
	const char *an = a->name ? a->name : "";
	struct tensor *t = NULL;
	if (strcmp(an, "value") == 0 && a->t) {
		t = onnx_proto_tensor(a->t, what, L->err, L->errlen);
		if (!t)
			return -1;
	} else if (strcmp(an, "value_float") == 0 || strcmp(an, "value_int") == 0) {
		int fl = an[6] == 'f';
		t = tensor_new(NULL, fl ? TENSOR_FLOAT : TENSOR_INT64, 0, NULL);
		if (t && fl)
			*(float *)t->data = a->f;
		else if (t)
			*(int64_t *)t->data = a->i;
	} else if (strcmp(an, "value_floats") == 0 || strcmp(an, "value_ints") == 0) {
		int fl = an[6] == 'f';
		int64_t n = (int64_t)(fl ? a->n_floats : a->n_ints);
		t = tensor_new(NULL, fl ? TENSOR_FLOAT : TENSOR_INT64, 1, &n);
		if (t && n)
			memcpy(t->data, fl ? (void *)a->floats : (void *)a->ints,
			       (size_t)n * (fl ? sizeof(float) : sizeof(int64_t)));
	} else {
		snprintf(L->err, L->errlen, "%s: attribute '%s' not supported", what, an);
		return -1;
	}
	if (!t) {
		snprintf(L->err, L->errlen, "%s: out of memory", what);
		return -1;
	}
	m->constant[s] = t;
	m->slot_type[s] = t->dtype;
	return 0;
}

/* Number of names, ignoring trailing empty ones (omitted optional values). */
static size_t trim_names(char **names, size_t n)
{
	while (n && (!names[n - 1] || !*names[n - 1]))
		n--;
	return n;
}

/* Creates the output slots of every node, and the constants of Constant nodes. */
static int load_node_outputs(struct loader *L, const Onnx__GraphProto *g, int *const_node)
{
	for (size_t i = 0; i < g->n_node; i++) {
		const Onnx__NodeProto *np = g->node[i];
		char lb[300], ctx[400];
		const char *label = node_label(np, lb, sizeof(lb), i);
		snprintf(ctx, sizeof(ctx), "node '%s' (%s) output", label,
		         np->op_type ? np->op_type : "");
		size_t n_out = trim_names(np->output, np->n_output);
		for (size_t j = 0; j < n_out; j++) {
			if (!*np->output[j])
				continue;
			int s = add_slot(L, np->output[j], ctx);
			if (s < 0)
				return -1;
			if (j == 0 && np->op_type && strcmp(np->op_type, "Constant") == 0 &&
			    is_default_domain(np->domain)) {
				const_node[i] = 1;
				if (load_constant(L, np, label, s))
					return -1;
			}
		}
	}
	return 0;
}

/* Fills node n from np: kernel, slot indices. Does not call prepare. */
static int build_node(struct loader *L, const Onnx__NodeProto *np, const char *label,
                      struct ops_node *n)
{
	struct onnx_model *m = L->m;
	const char *op = np->op_type ? np->op_type : "";
	n->opset = m->opset;
	if (!(n->name = strdup(label)) || !(n->op_type = strdup(op))) {
		snprintf(L->err, L->errlen, "%s: out of memory", m->path);
		return -1;
	}
	if (!is_default_domain(np->domain)) {
		snprintf(L->err, L->errlen,
		         "%s: node '%s' (%s): operator domain '%s' not supported", m->path, label,
		         op, np->domain);
		return -1;
	}
	n->kernel = ops_find(op);
	if (!n->kernel) {
		snprintf(L->err, L->errlen, "%s: node '%s' (%s): operator not supported", m->path,
		         label, op);
		return -1;
	}
	n->n_in = trim_names(np->input, np->n_input);
	n->n_out = trim_names(np->output, np->n_output);
	const struct ops_kernel *k = n->kernel;
	if ((int)n->n_in < k->min_in || (k->max_in >= 0 && (int)n->n_in > k->max_in) ||
	    (int)n->n_out < k->min_out || (int)n->n_out > k->max_out) {
		snprintf(L->err, L->errlen,
		         "%s: node '%s' (%s): %zu inputs and %zu outputs not supported", m->path,
		         label, op, n->n_in, n->n_out);
		return -1;
	}
	n->in = malloc((n->n_in + n->n_out + 1) * sizeof(int));
	if (!n->in) {
		snprintf(L->err, L->errlen, "%s: out of memory", m->path);
		return -1;
	}
	n->out = n->in + n->n_in;
	for (size_t j = 0; j < n->n_in; j++) {
		n->in[j] = -1;
		if (!*np->input[j]) {
			if ((int)j < k->min_in || k->max_in < 0) {
				snprintf(L->err, L->errlen,
				         "%s: node '%s' (%s): input %zu is required", m->path,
				         label, op, j);
				return -1;
			}
			continue;
		}
		n->in[j] = table_find(m, &L->names, np->input[j]);
		if (n->in[j] < 0) {
			snprintf(L->err, L->errlen,
			         "%s: node '%s' (%s): input '%s' is not produced by any node, "
			         "initializer or graph input",
			         m->path, label, op, np->input[j]);
			return -1;
		}
	}
	for (size_t j = 0; j < n->n_out; j++)
		n->out[j] = *np->output[j] ? table_find(m, &L->names, np->output[j]) : -1;
	if (n->n_in + n->n_out > m->max_io)
		m->max_io = n->n_in + n->n_out;
	return 0;
}

/* Runs the kernel's prepare step with the inferred input dtypes; sets output dtypes. */
static int prepare_node(struct loader *L, const Onnx__NodeProto *np, struct ops_node *n)
{
	struct onnx_model *m = L->m;
	enum tensor_dtype in_types[64], out_types[8];
	char why[OPS_ERR_MAX] = "";
	if (n->n_in > 64 || n->n_out > 8) {
		snprintf(L->err, L->errlen, "%s: node '%s' (%s): too many inputs or outputs",
		         m->path, n->name, n->op_type);
		return -1;
	}
	for (size_t j = 0; j < n->n_in; j++)
		in_types[j] = n->in[j] < 0 ? TENSOR_UNDEFINED : m->slot_type[n->in[j]];
	for (size_t j = 0; j < n->n_out; j++)
		out_types[j] = TENSOR_UNDEFINED;
	if (n->kernel->prepare(n, np, in_types, out_types, why, sizeof(why))) {
		snprintf(L->err, L->errlen, "%s: node '%s' (%s): %s", m->path, n->name, n->op_type,
		         why);
		return -1;
	}
	/* FLOAT16 and BFLOAT16 tensors are only converted, by Cast and CastLike. */
	int converter = strcmp(n->op_type, "Cast") == 0 || strcmp(n->op_type, "CastLike") == 0;
	for (size_t j = 0; !converter && j < n->n_in + n->n_out; j++) {
		enum tensor_dtype t = j < n->n_in ? in_types[j] : out_types[j - n->n_in];
		if (t == TENSOR_FLOAT16 || t == TENSOR_BFLOAT16) {
			snprintf(L->err, L->errlen,
			         "%s: node '%s' (%s): %s %zu: dtype %s is supported only by Cast "
			         "and CastLike",
			         m->path, n->name, n->op_type, j < n->n_in ? "input" : "output",
			         j < n->n_in ? j : j - n->n_in, ops_dtype_name((int)t));
			return -1;
		}
	}
	for (size_t j = 0; j < n->n_out; j++)
		if (n->out[j] >= 0)
			m->slot_type[n->out[j]] = out_types[j];
	return 0;
}

/*
 * Orders the non-Constant nodes so every input is ready before its reader
 * (graphs are usually sorted already: then one pass does it), builds them and
 * runs each prepare step with the inferred input dtypes.
 */
static int load_nodes(struct loader *L, const Onnx__GraphProto *g)
{
	struct onnx_model *m = L->m;
	int *const_node = calloc(g->n_node + 1, sizeof(int));
	unsigned char *ready = calloc(m->n_slots + L->cap_slots + 1, 1);
	unsigned char *placed = calloc(g->n_node + 1, 1);
	int rc = -1;
	m->nodes = calloc(g->n_node + 1, sizeof(*m->nodes));
	m->cap_nodes = g->n_node + 1;
	if (!const_node || !ready || !placed || !m->nodes) {
		snprintf(L->err, L->errlen, "%s: out of memory", m->path);
		goto out;
	}
	if (load_node_outputs(L, g, const_node))
		goto out;
	for (size_t s = 0; s < m->n_slots; s++)
		ready[s] = m->constant[s] != NULL;
	for (size_t i = 0; i < m->n_inputs; i++)
		ready[m->inputs[i].slot] = 1;
	size_t todo = 0;
	for (size_t i = 0; i < g->n_node; i++)
		todo += !const_node[i];
	while (m->n_nodes < todo) {
		size_t before = m->n_nodes;
		for (size_t i = 0; i < g->n_node; i++) {
			if (const_node[i] || placed[i])
				continue;
			const Onnx__NodeProto *np = g->node[i];
			struct ops_node *n = &m->nodes[m->n_nodes];
			char lb[300];
			const char *label = node_label(np, lb, sizeof(lb), i);
			if (!n->kernel && build_node(L, np, label, n))
				goto out;
			int ok = 1;
			for (size_t j = 0; ok && j < n->n_in; j++)
				ok = n->in[j] < 0 || ready[n->in[j]];
			if (!ok) {
				free((void *)n->name);
				free((void *)n->op_type);
				free(n->in);
				memset(n, 0, sizeof(*n));
				continue;
			}
			placed[i] = 1;
			m->n_nodes++;
			if (prepare_node(L, np, n))
				goto out;
			for (size_t j = 0; j < n->n_out; j++)
				if (n->out[j] >= 0)
					ready[n->out[j]] = 1;
		}
		if (m->n_nodes == before) {
			snprintf(L->err, L->errlen, "%s: the graph has a cycle", m->path);
			goto out;
		}
	}
	rc = 0;
out:
	free(const_node);
	free(ready);
	free(placed);
	return rc;
}

static int load_outputs(struct loader *L, const Onnx__GraphProto *g)
{
	struct onnx_model *m = L->m;
	if (g->n_output == 0) {
		snprintf(L->err, L->errlen, "%s: the graph has no outputs", m->path);
		return -1;
	}
	m->outputs = calloc(g->n_output, sizeof(*m->outputs));
	m->output_slot = calloc(g->n_output, sizeof(int));
	if (!m->outputs || !m->output_slot) {
		snprintf(L->err, L->errlen, "%s: out of memory", m->path);
		return -1;
	}
	for (size_t i = 0; i < g->n_output; i++) {
		const Onnx__ValueInfoProto *vi = g->output[i];
		int s = vi->name ? table_find(m, &L->names, vi->name) : -1;
		if (s < 0) {
			snprintf(L->err, L->errlen, "%s: graph output '%s' is not produced",
			         m->path, vi->name ? vi->name : "");
			return -1;
		}
		m->n_outputs++;
		if (value_info(L, vi, "output", &m->outputs[i], NULL))
			return -1;
		m->outputs[i].name = m->slot_name[s];
		if (m->slot_type[s] != m->outputs[i].dtype) {
			snprintf(L->err, L->errlen,
			         "%s: graph output '%s' is declared %s but computed as %s", m->path,
			         vi->name, ops_dtype_name((int)m->outputs[i].dtype),
			         ops_dtype_name((int)m->slot_type[s]));
			return -1;
		}
		m->output_slot[i] = s;
		m->is_output[s] = 1;
	}
	return 0;
}

/* The default domain's opset, checked against what the kernels implement. */
static int load_opset(struct loader *L, const Onnx__ModelProto *mp)
{
	struct onnx_model *m = L->m;
	m->opset = -1;
	for (size_t i = 0; i < mp->n_opset_import; i++) {
		const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
		if (is_default_domain(o->domain))
			m->opset = o->has_version ? (int)o->version : 1;
	}
	if (m->opset < 0) {
		snprintf(L->err, L->errlen, "%s: no opset_import for the default ONNX domain",
		         m->path);
		return -1;
	}
	if (m->opset < ONNX_MIN_OPSET || m->opset > ONNX_MAX_OPSET) {
		snprintf(L->err, L->errlen, "%s: opset %d not supported (this runtime runs %d..%d)",
		         m->path, m->opset, ONNX_MIN_OPSET, ONNX_MAX_OPSET);
		return -1;
	}
	return 0;
}

/* How many nodes read slot s (each read counted), plus 1 if it is a graph output. */
static size_t slot_readers(const struct onnx_model *m, int s, size_t *reader)
{
	size_t n = m->is_output[s] ? 1 : 0;
	for (size_t i = 0; i < m->n_nodes; i++)
		for (size_t j = 0; j < m->nodes[i].n_in; j++)
			if (m->nodes[i].in[j] == s) {
				n++;
				*reader = i;
			}
	return n;
}

/* Drops node i (already folded into another): frees what it owns, closes the gap. */
static void drop_node(struct onnx_model *m, size_t i)
{
	struct ops_node *n = &m->nodes[i];
	free((void *)n->name);
	free((void *)n->op_type);
	free(n->in);
	ops_conv_plan_free(n->conv);
	free(n->gemm_bt);
	memmove(n, n + 1, (m->n_nodes - i - 1) * sizeof(*n));
	m->n_nodes--;
	memset(&m->nodes[m->n_nodes], 0, sizeof(*n));
}

/*
 * Folds the node that alone reads conv's output into conv when fuse accepts
 * it: conv then writes that node's output. Returns 1 if it did.
 */
static int fold_next(struct onnx_model *m, size_t i, const char *op)
{
	struct ops_node *n = &m->nodes[i];
	size_t r = 0;
	if (n->n_out != 1 || n->out[0] < 0 || slot_readers(m, n->out[0], &r) != 1)
		return 0;
	struct ops_node *next = &m->nodes[r];
	if (r <= i || strcmp(next->op_type, op) != 0 || next->n_in != 1 ||
	    next->in[0] != n->out[0] || next->out[0] < 0)
		return 0;
	if (strcmp(op, "Relu") == 0 ? ops_conv_fuse_relu(n) : ops_conv_fuse_pool(n, next))
		return 0;
	n->out[0] = next->out[0];
	drop_node(m, r);
	return 1;
}

/*
 * Plans the direct convolution for every Conv whose weights are constant, and
 * folds a Relu, then a MaxPool, that only it feeds into it; packs B^T of
 * every Gemm with a constant transposed B (see ops.h).
 */
static int plan_nodes(struct loader *L)
{
	struct onnx_model *m = L->m;
	for (size_t i = 0; i < m->n_nodes; i++) {
		struct ops_node *n = &m->nodes[i];
		if (n->n_in < 2 || n->in[1] < 0 || !m->constant[n->in[1]])
			continue;
		if (strcmp(n->op_type, "Gemm") == 0 && ops_gemm_plan(n, m->constant[n->in[1]])) {
			snprintf(L->err, L->errlen, "%s: out of memory", m->path);
			return -1;
		}
		if (strcmp(n->op_type, "Conv") != 0)
			continue;
		if (ops_conv_plan(n, m->constant[n->in[1]])) {
			snprintf(L->err, L->errlen, "%s: out of memory", m->path);
			return -1;
		}
		if (!n->conv)
			continue;
		fold_next(m, i, "Relu");
		fold_next(m, i, "MaxPool");
	}
	return 0;
}

static void compute_last_use(struct onnx_model *m)
{
	for (size_t i = 0; i < m->n_nodes; i++)
		for (size_t j = 0; j < m->nodes[i].n_in; j++)
			if (m->nodes[i].in[j] >= 0)
				m->last_use[m->nodes[i].in[j]] = (int)i;
}

struct onnx_model *onnx_model_load_buffer(const char *name, const void *buf, size_t len, char *err,
                                          size_t errlen)
{
	struct loader L = {.err = err, .errlen = errlen};
	Onnx__ModelProto *mp = NULL;
	struct onnx_model *m = calloc(1, sizeof(*m));
	if (!m || !(m->path = strdup(name ? name : "model"))) {
		snprintf(err, errlen, "%s: out of memory", name ? name : "model");
		goto fail;
	}
	L.m = m;
	if (len == 0) {
		snprintf(err, errlen, "%s: empty file", m->path);
		goto fail;
	}
	if (len > ONNX_FILE_MAX) {
		snprintf(err, errlen, "%s: %zu bytes, above the limit of %zu", m->path, len,
		         ONNX_FILE_MAX);
		goto fail;
	}
	mp = onnx__model_proto__unpack(NULL, len, buf);
	if (!mp) {
		onnx_proto_explain(m->path, "an ONNX ModelProto", buf, len, err, errlen);
		goto fail;
	}
	if (!mp->graph) {
		snprintf(err, errlen, "%s: not an ONNX model: no graph", m->path);
		goto fail;
	}
	if (load_opset(&L, mp) || loader_init(&L, mp->graph) || load_initializers(&L, mp->graph) ||
	    load_inputs(&L, mp->graph) || load_nodes(&L, mp->graph) ||
	    load_outputs(&L, mp->graph) || plan_nodes(&L))
		goto fail;
	compute_last_use(m);
	free(L.names.slot);
	onnx__model_proto__free_unpacked(mp, NULL);
	return m;
fail:
	free(L.names.slot);
	if (mp)
		onnx__model_proto__free_unpacked(mp, NULL);
	onnx_model_free(m);
	return NULL;
}

void onnx_set_tensor_limit(size_t bytes)
{
	ops_set_tensor_limit(bytes);
}

struct onnx_model *onnx_model_load(const char *path, char *err, size_t errlen)
{
	void *buf;
	size_t len;
	if (onnx_proto_read_file(path, &buf, &len, err, errlen))
		return NULL;
	struct onnx_model *m = onnx_model_load_buffer(path, buf, len, err, errlen);
	free(buf);
	return m;
}

void onnx_model_free(struct onnx_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_slots; i++) {
		free(m->slot_name[i]);
		tensor_free(m->constant[i]);
	}
	for (size_t i = 0; i < m->cap_nodes; i++) {
		free((void *)m->nodes[i].name);
		free((void *)m->nodes[i].op_type);
		free(m->nodes[i].in);
		ops_conv_plan_free(m->nodes[i].conv);
		free(m->nodes[i].gemm_bt);
	}
	for (size_t i = 0; i < m->n_inputs; i++)
		for (int d = 0; d < TENSOR_MAX_DIMS; d++)
			free(m->inputs[i].dim_param[d]);
	free(m->nodes);
	free(m->slot_name);
	free(m->slot_type);
	free(m->constant);
	free(m->last_use);
	free(m->is_output);
	free(m->inputs);
	free(m->outputs);
	free(m->output_slot);
	free(m->path);
	free(m);
}

size_t onnx_model_n_inputs(const struct onnx_model *m)
{
	return m->n_inputs;
}

size_t onnx_model_n_outputs(const struct onnx_model *m)
{
	return m->n_outputs;
}

const struct onnx_value_info *onnx_model_input(const struct onnx_model *m, size_t i)
{
	return i < m->n_inputs ? &m->inputs[i].info : NULL;
}

const struct onnx_value_info *onnx_model_output(const struct onnx_model *m, size_t i)
{
	return i < m->n_outputs ? &m->outputs[i] : NULL;
}

/* ---- run ---- */

/* "[N,64]" with symbolic names where the model has them. */
static const char *declared_shape(const struct onnx_input *in, char *buf, size_t len)
{
	size_t off = 0;
	int w = snprintf(buf, len, "[");
	off = w > 0 ? (size_t)w : 0;
	for (int d = 0; d < in->info.ndim && off < len; d++) {
		const char *sep = d ? "," : "";
		if (in->info.dims[d] >= 0)
			w = snprintf(buf + off, len - off, "%s%lld", sep,
			             (long long)in->info.dims[d]);
		else
			w = snprintf(buf + off, len - off, "%s%s", sep,
			             in->dim_param[d] ? in->dim_param[d] : "?");
		off += w > 0 ? (size_t)w : 0;
	}
	if (off < len)
		snprintf(buf + off, len - off, "]");
	return buf;
}

static int check_input(const struct onnx_input *in, const struct tensor *t, char *err,
                       size_t errlen)
{
	char want[128], got[128];
	if (!t) {
		snprintf(err, errlen, "input '%s': missing", in->info.name);
		return -1;
	}
	if (t->dtype != in->info.dtype) {
		snprintf(err, errlen, "input '%s': expected dtype %s, got %s", in->info.name,
		         ops_dtype_name((int)in->info.dtype), ops_dtype_name((int)t->dtype));
		return -1;
	}
	int ok = t->ndim >= 0 && t->ndim <= TENSOR_MAX_DIMS &&
	         (in->info.ndim < 0 || t->ndim == in->info.ndim);
	size_t n = 1;
	for (int d = 0; ok && d < t->ndim; d++) {
		ok = t->dims[d] >= 0 &&
		     (in->info.ndim < 0 || in->info.dims[d] < 0 || in->info.dims[d] == t->dims[d]);
		n *= (size_t)t->dims[d];
	}
	if (ok && n != t->nelem) {
		snprintf(err, errlen, "input '%s': %zu elements for shape %s", in->info.name,
		         t->nelem, ops_shape_str(t->dims, t->ndim, got, sizeof(got)));
		return -1;
	}
	if (!ok) {
		snprintf(err, errlen, "input '%s': expected %s, got %s", in->info.name,
		         declared_shape(in, want, sizeof(want)),
		         ops_shape_str(t->dims, t->ndim < 0 ? 0 : t->ndim, got, sizeof(got)));
		return -1;
	}
	return 0;
}

/* Per-run state: value table and the tensors this run owns. */
struct run_state {
	const struct tensor **val;
	struct tensor **owned;
	const struct tensor **args;
	struct tensor **res;
};

static struct tensor *tensor_copy(const struct tensor *t, const char *name)
{
	struct tensor *c = tensor_new(name, t->dtype, t->ndim, t->dims);
	if (c)
		memcpy(c->data, t->data, t->nelem * tensor_dtype_size(t->dtype));
	return c;
}

static int run_node(const struct onnx_model *m, size_t i, struct run_state *st, char *err,
                    size_t errlen)
{
	const struct ops_node *n = &m->nodes[i];
	char why[OPS_ERR_MAX] = "";
	for (size_t j = 0; j < n->n_in; j++)
		st->args[j] = n->in[j] >= 0 ? st->val[n->in[j]] : NULL;
	for (size_t j = 0; j < n->n_out; j++)
		st->res[j] = NULL;
	int rc = n->kernel->run(n, st->args, st->res, why, sizeof(why));
	for (size_t j = 0; rc == 0 && j < n->n_out; j++)
		if (!st->res[j] ||
		    (n->out[j] >= 0 && st->res[j]->dtype != m->slot_type[n->out[j]])) {
			/* a kernel out of step with its prepare step: refuse, never misread */
			snprintf(why, sizeof(why), "output %zu not computed as planned", j);
			rc = -1;
		}
	if (rc) {
		for (size_t j = 0; j < n->n_out; j++)
			tensor_free(st->res[j]);
		snprintf(err, errlen, "node '%s' (%s): %s", n->name, n->op_type, why);
		return -1;
	}
	for (size_t j = 0; j < n->n_out; j++) {
		int s = n->out[j];
		if (s < 0) {
			tensor_free(st->res[j]);
			continue;
		}
		st->owned[s] = st->res[j];
		st->val[s] = st->res[j];
	}
	/* Intermediates nobody reads later go now, to keep the working set small. */
	for (size_t j = 0; j < n->n_in; j++) {
		int s = n->in[j];
		if (s >= 0 && st->owned[s] && m->last_use[s] == (int)i && !m->is_output[s]) {
			tensor_free(st->owned[s]);
			st->owned[s] = NULL;
			st->val[s] = NULL;
		}
	}
	return 0;
}

/* Hands graph outputs to the caller: moves what the run owns, copies the rest. */
static int collect_outputs(const struct onnx_model *m, struct run_state *st,
                           struct tensor **outputs, char *err, size_t errlen)
{
	for (size_t i = 0; i < m->n_outputs; i++) {
		int s = m->output_slot[i];
		struct tensor *t = st->owned[s];
		if (t) {
			st->owned[s] = NULL;
			free(t->name);
			t->name = strdup(m->slot_name[s]);
		} else {
			t = st->val[s] ? tensor_copy(st->val[s], m->slot_name[s]) : NULL;
		}
		outputs[i] = t;
		if (!t || !t->name) {
			snprintf(err, errlen, "output '%s': out of memory", m->slot_name[s]);
			for (size_t j = 0; j <= i; j++) {
				tensor_free(outputs[j]);
				outputs[j] = NULL;
			}
			return -1;
		}
	}
	return 0;
}

int onnx_model_run(const struct onnx_model *m, struct tensor *const *inputs, size_t n_inputs,
                   struct tensor **outputs, char *err, size_t errlen)
{
	if (n_inputs != m->n_inputs) {
		snprintf(err, errlen, "expected %zu inputs, got %zu", m->n_inputs, n_inputs);
		return -1;
	}
	for (size_t i = 0; i < n_inputs; i++)
		if (check_input(&m->inputs[i], inputs[i], err, errlen))
			return -1;
	const struct tensor *val_stack[RUN_STACK_SLOTS];
	struct tensor *owned_stack[RUN_STACK_SLOTS];
	void *io_stack[16];
	struct run_state st = {val_stack, owned_stack, NULL, NULL};
	void *heap = NULL;
	int rc = -1;
	if (m->n_slots > RUN_STACK_SLOTS || m->max_io > 16) {
		heap = calloc(2 * m->n_slots + m->max_io + 1, sizeof(void *));
		if (!heap) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		st.val = heap;
		st.owned = (struct tensor **)heap + m->n_slots;
		st.args = (const struct tensor **)heap + 2 * m->n_slots;
	} else {
		st.args = (const struct tensor **)io_stack;
	}
	for (size_t s = 0; s < m->n_slots; s++) {
		st.val[s] = m->constant[s];
		st.owned[s] = NULL;
	}
	for (size_t i = 0; i < n_inputs; i++)
		st.val[m->inputs[i].slot] = inputs[i];
	for (size_t i = 0; i < m->n_nodes; i++) {
		st.res = (struct tensor **)(st.args + m->nodes[i].n_in);
		if (run_node(m, i, &st, err, errlen))
			goto out;
	}
	rc = collect_outputs(m, &st, outputs, err, errlen);
out:
	for (size_t s = 0; s < m->n_slots; s++)
		tensor_free(st.owned[s]);
	free(heap);
	return rc;
}
