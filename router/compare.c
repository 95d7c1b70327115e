/*
 * compare.c - the shadow comparator: rules and paths over two JSON answers.
 *
 * A rule path is compiled once into segments (key, [index], [field=value]).
 * Each comparison parses both bodies with jansson after a cheap pre-scan that
 * refuses bodies over COMPARE_BODY_MAX bytes or nested deeper than
 * COMPARE_DEPTH_MAX, so neither jansson nor our own recursion can be driven
 * deep. Values that differ are rendered into bounded buffers with
 * json_dump_callback, so a huge differing value costs at most
 * COMPARE_VALUE_MAX bytes in the outcome. Nothing here allocates after
 * compare_rules_new() except the parsed JSON trees, which are freed before
 * compare_responses() returns.
 *
 * Fast path: when the two answers are byte-identical (the common case of a
 * shadow that agrees) no tree is built. With no rules identical bytes agree
 * whatever they are; with rules they agree once an allocation-free scan has
 * shown the body is JSON jansson would load (anything it is not sure of, such
 * as non-ASCII strings or huge numbers, takes the full path), unless a rule is
 * argmax, which can fail on a single body.
 */
#include "log.h"
#include "compare.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum seg_kind {
	SEG_KEY,    /* .name */
	SEG_INDEX,  /* [3] */
	SEG_SELECT, /* [field=value] */
};

struct seg {
	enum seg_kind kind;
	const char *key;   /* SEG_KEY: key; SEG_SELECT: field (points into cpath.buf) */
	const char *value; /* SEG_SELECT: value text */
	size_t index;      /* SEG_INDEX */
	int value_is_num;  /* SEG_SELECT: value parses as a number */
	double value_num;
};

struct cpath {
	char *text; /* as written, for messages and the log */
	char *buf;  /* copy cut into NUL-terminated pieces that segs point into */
	char *keys; /* inside buf, after the copy: the keys, NUL-terminated */
	size_t keys_used;
	size_t n;
	struct seg *segs; /* one per byte of the path at most */
};

struct crule {
	struct cpath path;
	enum config_compare_mode mode;
	double abs_tol, rel_tol;
};

struct compare_rules {
	struct crule *rules;
	size_t n_rules;
	struct cpath *ignore;
	size_t n_ignore;
	int has_argmax; /* an argmax rule can fail on one body alone: no byte fast path */
};

enum parse_status {
	PARSE_OK,
	PARSE_NOT_JSON,
	PARSE_TOO_BIG,
	PARSE_TOO_DEEP,
};

/* ---- paths ---------------------------------------------------------------- */

/* Parse "[...]" starting at s[*i] == '['; the content is cut in place. */
static int parse_bracket(struct cpath *p, char *s, size_t *i, char *err, size_t errlen)
{
	size_t start = *i + 1, j = start;
	while (s[j] && s[j] != ']' && s[j] != '[')
		j++;
	if (s[j] != ']') {
		log_errbuf(err, errlen, "missing ']' after offset %zu", *i);
		return -1;
	}
	if (j == start) {
		log_errbuf(err, errlen, "empty [] at offset %zu", *i);
		return -1;
	}
	s[j] = 0;
	struct seg *g = &p->segs[p->n];
	char *content = s + start, *eq = strchr(content, '=');
	if (eq) {
		if (eq == content) {
			log_errbuf(err, errlen, "selector without a field name at offset %zu",
			           start);
			return -1;
		}
		*eq = 0;
		g->kind = SEG_SELECT;
		g->key = content;
		g->value = eq + 1;
		char *end;
		errno = 0;
		g->value_num = strtod(g->value, &end);
		g->value_is_num = *g->value && !*end && errno == 0;
	} else {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(content, &end, 10);
		if (*end || content[0] < '0' || content[0] > '9' || errno || v > 1u << 30) {
			log_errbuf(err, errlen,
			           "'%s' at offset %zu is neither an index nor field=value",
			           content, start);
			return -1;
		}
		g->kind = SEG_INDEX;
		g->index = (size_t)v;
	}
	p->n++;
	*i = j + 1;
	return 0;
}

/* Parse a key starting at s[*i]; the key runs until '.', '[' or the end. */
static int parse_key(struct cpath *p, char *s, size_t *i, char *err, size_t errlen)
{
	size_t j = *i;
	while (s[j] && s[j] != '.' && s[j] != '[') {
		if (s[j] == ']') {
			log_errbuf(err, errlen, "unexpected ']' at offset %zu", j);
			return -1;
		}
		j++;
	}
	if (j == *i) {
		log_errbuf(err, errlen, "empty field name at offset %zu", *i);
		return -1;
	}
	/* Keys are copied after the path text so that the '[' that may follow
	 * stays in place for the bracket parser. */
	char *key = p->keys + p->keys_used;
	memcpy(key, s + *i, j - *i);
	key[j - *i] = 0;
	p->keys_used += j - *i + 1;
	p->segs[p->n].kind = SEG_KEY;
	p->segs[p->n].key = key;
	p->n++;
	*i = j;
	return 0;
}

static void cpath_clear(struct cpath *p)
{
	free(p->text);
	free(p->buf);
	free(p->segs);
	memset(p, 0, sizeof(*p));
}

/* Compile text into p (which owns copies). Returns 0, or -1 with err filled. */
static int cpath_compile(struct cpath *p, const char *text, char *err, size_t errlen)
{
	memset(p, 0, sizeof(*p));
	if (!text || !*text) {
		log_errbuf(err, errlen, "empty path");
		return -1;
	}
	if (strlen(text) > COMPARE_PATH_MAX) {
		log_errbuf(err, errlen, "path longer than %d bytes", COMPARE_PATH_MAX);
		return -1;
	}
	size_t len = strlen(text), i = 0;
	p->text = strdup(text);
	p->buf = malloc(2 * len + 2);
	p->segs = calloc(len, sizeof(*p->segs)); /* each segment takes at least one byte */
	if (!p->text || !p->buf || !p->segs) {
		log_errbuf(err, errlen, "out of memory");
		goto fail;
	}
	memcpy(p->buf, text, len + 1);
	p->keys = p->buf + len + 1;
	char *s = p->buf;
	int need_key = s[0] != '[';
	while (i < len) {
		if (p->n == COMPARE_SEGMENTS_MAX) {
			log_errbuf(err, errlen, "more than %d segments", COMPARE_SEGMENTS_MAX);
			goto fail;
		}
		int rc;
		if (need_key) {
			rc = parse_key(p, s, &i, err, errlen);
			need_key = 0;
		} else if (s[i] == '[') {
			rc = parse_bracket(p, s, &i, err, errlen);
		} else if (s[i] == '.') {
			s[i] = 0;
			i++;
			if (i >= len) {
				log_errbuf(err, errlen, "path ends with '.'");
				goto fail;
			}
			need_key = 1;
			continue;
		} else {
			log_errbuf(err, errlen, "unexpected '%c' at offset %zu", s[i], i);
			goto fail;
		}
		if (rc < 0)
			goto fail;
	}
	return 0;
fail:
	cpath_clear(p);
	return -1;
}

static int select_matches(const json_t *elem, const struct seg *g)
{
	const json_t *f = json_is_object(elem) ? json_object_get(elem, g->key) : NULL;
	if (!f)
		return 0;
	if (json_is_string(f))
		return json_string_length(f) == strlen(g->value) &&
		       memcmp(json_string_value(f), g->value, json_string_length(f)) == 0;
	if (json_is_number(f))
		return g->value_is_num && json_number_value(f) == g->value_num;
	if (json_is_true(f))
		return strcmp(g->value, "true") == 0;
	if (json_is_false(f))
		return strcmp(g->value, "false") == 0;
	return 0;
}

/* Index of the element of array a that segment g designates, or -1. */
static ssize_t seg_array_index(const json_t *a, const struct seg *g)
{
	if (!json_is_array(a))
		return -1;
	if (g->kind == SEG_INDEX)
		return g->index < json_array_size(a) ? (ssize_t)g->index : -1;
	for (size_t k = 0; k < json_array_size(a); k++)
		if (select_matches(json_array_get(a, k), g))
			return (ssize_t)k;
	return -1;
}

static json_t *seg_step(json_t *v, const struct seg *g)
{
	if (g->kind == SEG_KEY)
		return json_is_object(v) ? json_object_get(v, g->key) : NULL;
	ssize_t k = seg_array_index(v, g);
	return k < 0 ? NULL : json_array_get(v, (size_t)k);
}

/* The value at path p under root (borrowed), or NULL when it is missing. */
static json_t *cpath_resolve(json_t *root, const struct cpath *p, size_t upto)
{
	json_t *v = root;
	for (size_t k = 0; k < upto && v; k++)
		v = seg_step(v, &p->segs[k]);
	return v;
}

/* Remove the value at path p from root, if present. */
static void cpath_remove(json_t *root, const struct cpath *p)
{
	if (p->n == 0)
		return;
	json_t *parent = cpath_resolve(root, p, p->n - 1);
	const struct seg *last = &p->segs[p->n - 1];
	if (!parent)
		return;
	if (last->kind == SEG_KEY) {
		if (json_is_object(parent))
			json_object_del(parent, last->key);
		return;
	}
	ssize_t k = seg_array_index(parent, last);
	if (k >= 0)
		json_array_remove(parent, (size_t)k);
}

int compare_path_check(const char *path, char *err, size_t errlen)
{
	struct cpath p;
	if (cpath_compile(&p, path, err, errlen) < 0)
		return -1;
	cpath_clear(&p);
	return 0;
}

/* ---- rules ---------------------------------------------------------------- */

struct compare_rules *compare_rules_new(const struct config_shadow *cfg, char *err, size_t errlen)
{
	char why[192];
	struct compare_rules *r = calloc(1, sizeof(*r));
	if (!r)
		goto oom;
	if (!cfg)
		return r;
	if (cfg->n_rules > CONFIG_MAX_RULES) {
		log_errbuf(err, errlen, "shadow.compare: %zu rules, at most %d", cfg->n_rules,
		           CONFIG_MAX_RULES);
		goto fail;
	}
	if (cfg->n_rules) {
		r->rules = calloc(cfg->n_rules, sizeof(*r->rules));
		if (!r->rules)
			goto oom;
	}
	for (size_t i = 0; i < cfg->n_rules; i++) {
		const struct config_compare_rule *c = &cfg->rules[i];
		if (cpath_compile(&r->rules[i].path, c->path, why, sizeof(why)) < 0) {
			log_errbuf(err, errlen, "shadow.compare[%zu].path: '%s': %s", i,
			           c->path ? c->path : "", why);
			goto fail;
		}
		r->n_rules++;
		if (!(c->abs_tolerance >= 0) || !(c->rel_tolerance >= 0)) {
			log_errbuf(err, errlen, "shadow.compare[%zu]: tolerance must be >= 0", i);
			goto fail;
		}
		r->rules[i].mode = c->mode;
		r->has_argmax |= c->mode == CONFIG_COMPARE_ARGMAX;
		r->rules[i].abs_tol = c->abs_tolerance;
		r->rules[i].rel_tol = c->rel_tolerance;
	}
	if (cfg->n_ignore) {
		r->ignore = calloc(cfg->n_ignore, sizeof(*r->ignore));
		if (!r->ignore)
			goto oom;
	}
	for (size_t i = 0; i < cfg->n_ignore; i++) {
		if (cpath_compile(&r->ignore[i], cfg->ignore[i], why, sizeof(why)) < 0) {
			log_errbuf(err, errlen, "shadow.ignore[%zu]: '%s': %s", i,
			           cfg->ignore[i] ? cfg->ignore[i] : "", why);
			goto fail;
		}
		r->n_ignore++;
	}
	return r;
oom:
	log_errbuf(err, errlen, "shadow.compare: out of memory");
fail:
	compare_rules_free(r);
	return NULL;
}

void compare_rules_free(struct compare_rules *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_rules; i++)
		cpath_clear(&r->rules[i].path);
	for (size_t i = 0; i < r->n_ignore; i++)
		cpath_clear(&r->ignore[i]);
	free(r->rules);
	free(r->ignore);
	free(r);
}

size_t compare_rules_count(const struct compare_rules *r)
{
	return r ? r->n_rules : 0;
}

const char *compare_rule_path(const struct compare_rules *r, size_t i)
{
	return r && i < r->n_rules ? r->rules[i].path.text : NULL;
}

/* ---- parsing -------------------------------------------------------------- */

/* Deepest [ / { nesting of buf outside strings, stopping early past limit. */
static int scan_depth(const char *buf, size_t len, int limit)
{
	int depth = 0, max = 0, in_str = 0;
	for (size_t i = 0; i < len; i++) {
		char c = buf[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		if (c == '"') {
			in_str = 1;
		} else if (c == '[' || c == '{') {
			if (++depth > max)
				max = depth;
			if (max > limit)
				return max;
		} else if ((c == ']' || c == '}') && depth > 0) {
			depth--;
		}
	}
	return max;
}

static enum parse_status parse_body(const char *buf, size_t len, json_t **out, char *why,
                                    size_t whylen)
{
	*out = NULL;
	if (len > COMPARE_BODY_MAX) {
		log_errbuf(why, whylen, "%zu bytes, over the %u-byte compare limit", len,
		           COMPARE_BODY_MAX);
		return PARSE_TOO_BIG;
	}
	if (scan_depth(buf ? buf : "", len, COMPARE_DEPTH_MAX) > COMPARE_DEPTH_MAX) {
		log_errbuf(why, whylen, "JSON nested deeper than %d", COMPARE_DEPTH_MAX);
		return PARSE_TOO_DEEP;
	}
	json_error_t je;
	*out = json_loadb(buf ? buf : "", len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
	/* Integers beyond 64 bits are refused by jansson as integers: retry as reals. */
	if (!*out && json_error_code(&je) == json_error_numeric_overflow)
		*out = json_loadb(buf, len,
		                  JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
	if (!*out) {
		log_errbuf(why, whylen, "not JSON (line %d column %d: %s)", je.line, je.column,
		           je.text);
		return PARSE_NOT_JSON;
	}
	return PARSE_OK;
}

/* ---- byte fast path -------------------------------------------------------- */

struct scan {
	const unsigned char *p, *end;
};

static void scan_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int scan_lit(struct scan *s, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return 0;
	s->p += n;
	return 1;
}

static int scan_digits(struct scan *s, size_t *n)
{
	const unsigned char *start = s->p;
	while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
		s->p++;
	*n = (size_t)(s->p - start);
	return *n > 0;
}

/* A number jansson surely loads: at most 18 integer digits, exponents of 2 digits. */
static int scan_number(struct scan *s)
{
	size_t n_int, n_frac = 0, n_exp = 0;
	if (s->p < s->end && *s->p == '-')
		s->p++;
	const unsigned char *first = s->p;
	if (!scan_digits(s, &n_int) || n_int > 18 || (n_int > 1 && *first == '0'))
		return 0;
	if (s->p < s->end && *s->p == '.') {
		s->p++;
		if (!scan_digits(s, &n_frac) || n_frac > 64)
			return 0;
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
		s->p++;
		if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
			s->p++;
		if (!scan_digits(s, &n_exp) || n_exp > 2)
			return 0;
	}
	return 1;
}

static int hex4(const unsigned char *p, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned c = p[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			d = (c | 0x20) - 'a' + 10;
		else
			return 0;
		*v = *v << 4 | d;
	}
	return 1;
}

/* A string of printable ASCII and simple escapes (no NUL, no surrogates). */
static int scan_string(struct scan *s)
{
	/* locals: a store through s->p could alias the bytes, so the compiler would reload */
	const unsigned char *p = s->p, *end = s->end;
	unsigned v;
	if (p >= end || *p != '"')
		return 0;
	for (p++; p < end; p++) {
		unsigned c = *p;
		if (c == '"') {
			s->p = p + 1;
			return 1;
		}
		if (c < 0x20 || c >= 0x7f)
			return 0;
		if (c != '\\')
			continue;
		if (++p >= end)
			return 0;
		if (*p == 'u') {
			if (end - p < 5 || !hex4(p + 1, &v) || v == 0 ||
			    (v >= 0xd800 && v <= 0xdfff))
				return 0;
			p += 4;
		} else if (*p == 0 || !strchr("\"\\/bfnrt", *p)) {
			return 0;
		}
	}
	return 0;
}

static int scan_value(struct scan *s, int depth);

static int scan_container(struct scan *s, int depth, unsigned char close)
{
	if (depth >= COMPARE_DEPTH_MAX)
		return 0;
	s->p++;
	scan_ws(s);
	if (s->p < s->end && *s->p == close) {
		s->p++;
		return 1;
	}
	for (;;) {
		if (close == '}') {
			if (!scan_string(s))
				return 0;
			scan_ws(s);
			if (s->p >= s->end || *s->p++ != ':')
				return 0;
			scan_ws(s);
		}
		if (!scan_value(s, depth + 1))
			return 0;
		scan_ws(s);
		if (s->p >= s->end)
			return 0;
		if (*s->p == close) {
			s->p++;
			return 1;
		}
		if (*s->p++ != ',')
			return 0;
		scan_ws(s);
	}
}

static int scan_value(struct scan *s, int depth)
{
	if (s->p >= s->end)
		return 0;
	switch (*s->p) {
	case '{':
		return scan_container(s, depth, '}');
	case '[':
		return scan_container(s, depth, ']');
	case '"':
		return scan_string(s);
	case 't':
		return scan_lit(s, "true");
	case 'f':
		return scan_lit(s, "false");
	case 'n':
		return scan_lit(s, "null");
	default:
		return scan_number(s);
	}
}

/* Whether buf is one JSON value that parse_body surely loads (1), or not sure (0). */
static int json_plain(const char *buf, size_t len)
{
	struct scan s = {(const unsigned char *)buf, (const unsigned char *)buf + len};
	if (len > COMPARE_BODY_MAX)
		return 0;
	scan_ws(&s);
	if (!scan_value(&s, 0))
		return 0;
	scan_ws(&s);
	return s.p == s.end;
}

/* Byte-identical answers that every rule must find in agreement (see the top). */
static int same_bytes_agree(const struct compare_rules *rules, const char *a, size_t alen,
                            const char *b, size_t blen)
{
	if (alen != blen || (alen && memcmp(a, b, alen) != 0))
		return 0;
	if (rules->n_rules == 0)
		return 1;
	return !rules->has_argmax && json_plain(a, alen);
}

/* ---- value comparison ----------------------------------------------------- */

struct diff {
	char path[COMPARE_PATH_MAX];
	size_t len;  /* current length of path */
	int numeric; /* compare numbers with tolerance */
	double abs_tol, rel_tol;
	int found;           /* a difference was found: path and a/b are set */
	const json_t *a, *b; /* values at the difference (either may be NULL) */
};

/* Append a segment to d->path; returns the previous length to restore. */
static size_t diff_push(struct diff *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t diff_push(struct diff *d, const char *fmt, ...)
{
	size_t old = d->len;
	if (d->len < sizeof(d->path) - 1) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(d->path + d->len, sizeof(d->path) - d->len, fmt, ap);
		va_end(ap);
		if (n > 0)
			d->len += (size_t)n;
		if (d->len >= sizeof(d->path))
			d->len = sizeof(d->path) - 1;
	}
	return old;
}

static void diff_pop(struct diff *d, size_t old)
{
	d->len = old;
	d->path[old] = 0;
}

static int diff_mark(struct diff *d, const json_t *a, const json_t *b)
{
	if (!d->found) {
		d->found = 1;
		d->a = a;
		d->b = b;
	}
	return 0;
}

static int numbers_agree(double x, double y, const struct diff *d)
{
	if (x == y)
		return 1;
	if (!d->numeric)
		return 0;
	double diff = fabs(x - y);
	if (diff <= d->abs_tol)
		return 1;
	double m = fmax(fabs(x), fabs(y));
	return diff <= d->rel_tol * m;
}

static int values_equal(const json_t *a, const json_t *b, struct diff *d);

/* Keys may hold NUL bytes (JSON_ALLOW_NUL): look them up by length. */
static int objects_equal(const json_t *a, const json_t *b, struct diff *d)
{
	const char *k;
	size_t klen;
	const json_t *va;
	json_object_keylen_foreach((json_t *)a, k, klen, va)
	{
		const json_t *vb = json_object_getn(b, k, klen);
		size_t old = diff_push(d, d->len ? ".%s" : "%s", k);
		int eq = vb ? values_equal(va, vb, d) : diff_mark(d, va, NULL);
		if (!eq)
			return 0;
		diff_pop(d, old);
	}
	const json_t *vb;
	json_object_keylen_foreach((json_t *)b, k, klen, vb)
	{
		if (!json_object_getn(a, k, klen)) {
			diff_push(d, d->len ? ".%s" : "%s", k);
			return diff_mark(d, NULL, vb);
		}
	}
	return 1;
}

static int arrays_equal(const json_t *a, const json_t *b, struct diff *d)
{
	if (json_array_size(a) != json_array_size(b))
		return diff_mark(d, a, b);
	for (size_t i = 0; i < json_array_size(a); i++) {
		size_t old = diff_push(d, "[%zu]", i);
		if (!values_equal(json_array_get(a, i), json_array_get(b, i), d))
			return 0;
		diff_pop(d, old);
	}
	return 1;
}

/* 1 when a and b are equal JSON values; else 0 with the first difference in d. */
static int values_equal(const json_t *a, const json_t *b, struct diff *d)
{
	if (json_is_number(a) && json_is_number(b))
		return numbers_agree(json_number_value(a), json_number_value(b), d) ||
		       diff_mark(d, a, b);
	if (json_typeof(a) != json_typeof(b))
		return diff_mark(d, a, b);
	switch (json_typeof(a)) {
	case JSON_OBJECT:
		return objects_equal(a, b, d);
	case JSON_ARRAY:
		return arrays_equal(a, b, d);
	case JSON_STRING:
		return (json_string_length(a) == json_string_length(b) &&
		        memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) ==
		            0) ||
		       diff_mark(d, a, b);
	default: /* true, false, null: equal types are equal values */
		return 1;
	}
}

/* Index of the first maximum of a non-empty array of numbers, or -1. */
static ssize_t argmax(const json_t *v)
{
	if (!json_is_array(v) || json_array_size(v) == 0)
		return -1;
	ssize_t best = -1;
	double max = 0;
	for (size_t i = 0; i < json_array_size(v); i++) {
		const json_t *e = json_array_get(v, i);
		if (!json_is_number(e))
			return -1;
		double x = json_number_value(e);
		if (best < 0 || x > max) {
			best = (ssize_t)i;
			max = x;
		}
	}
	return best;
}

/* ---- rendering ------------------------------------------------------------ */

struct sink {
	char *buf;
	size_t cap, len;
	int truncated;
};

static int on_dump(const char *s, size_t n, void *data)
{
	struct sink *k = data;
	size_t room = k->cap - 1 - k->len;
	if (n > room) {
		memcpy(k->buf + k->len, s, room);
		k->len += room;
		k->truncated = 1;
		return -1; /* stop dumping: the rest would not fit */
	}
	memcpy(k->buf + k->len, s, n);
	k->len += n;
	return 0;
}

static void render(const json_t *v, char *buf, size_t cap, int *truncated)
{
	struct sink k = {buf, cap, 0, 0};
	buf[0] = 0;
	if (v)
		json_dump_callback(v, on_dump, &k,
		                   JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
	buf[k.len] = 0;
	*truncated = k.truncated;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xBF;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4;
	else
		return 0;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return len;
}

size_t compare_json_escape(char *dst, size_t cap, const char *src, size_t len, int *truncated)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)src;
	size_t o = 0, i = 0;
	*truncated = 0;
	if (cap < 3) {
		if (cap)
			dst[0] = 0;
		*truncated = len > 0;
		return 0;
	}
	dst[o++] = '"';
	while (i < len) {
		char tmp[8];
		size_t tn = 0, adv = 1;
		unsigned char c = s[i];
		size_t seq = utf8_seq(s + i, len - i);
		if (c == '"' || c == '\\') {
			tmp[tn++] = '\\';
			tmp[tn++] = (char)c;
		} else if (c < 0x20 || seq == 0) {
			/* control characters, and bytes that are not UTF-8, as \u00XX */
			memcpy(tmp, "\\u00", 4);
			tmp[4] = hex[c >> 4];
			tmp[5] = hex[c & 15];
			tn = 6;
		} else {
			memcpy(tmp, s + i, seq);
			tn = seq;
			adv = seq;
		}
		if (o + tn + 2 > cap) { /* keep room for the closing quote and NUL */
			*truncated = 1;
			break;
		}
		memcpy(dst + o, tmp, tn);
		o += tn;
		i += adv;
	}
	dst[o++] = '"';
	dst[o] = 0;
	return o;
}

/* ---- comparison ----------------------------------------------------------- */

void compare_outcome_clear(struct compare_outcome *out)
{
	memset(out, 0, sizeof(*out));
	out->result = COMPARE_AGREE;
	out->where = COMPARE_WHERE_NONE;
	out->rule = -1;
}

const char *compare_result_name(enum compare_result r)
{
	switch (r) {
	case COMPARE_AGREE:
		return "agree";
	case COMPARE_DISAGREE:
		return "disagree";
	case COMPARE_ERROR:
		return "error";
	}
	return "?";
}

static enum compare_result outcome_set(struct compare_outcome *out, enum compare_result r,
                                       enum compare_where where, int rule, const char *path)
{
	out->result = r;
	out->where = where;
	out->rule = rule;
	snprintf(out->path, sizeof(out->path), "%s", path ? path : "");
	return r;
}

static void outcome_values(struct compare_outcome *out, const json_t *a, const json_t *b)
{
	render(a, out->live_value, sizeof(out->live_value), &out->live_truncated);
	render(b, out->shadow_value, sizeof(out->shadow_value), &out->shadow_truncated);
}

/* Judge one rule; fills out's values when the rule does not agree. */
static enum compare_result rule_judge(const struct crule *r, json_t *live, json_t *shadow,
                                      struct compare_outcome *tmp)
{
	json_t *a = cpath_resolve(live, &r->path, r->path.n);
	json_t *b = cpath_resolve(shadow, &r->path, r->path.n);
	if (!a && !b)
		return COMPARE_AGREE;
	enum compare_result res = COMPARE_AGREE;
	if (!a || !b) {
		res = COMPARE_DISAGREE;
	} else if (r->mode == CONFIG_COMPARE_ARGMAX) {
		ssize_t ia = argmax(a), ib = argmax(b);
		if (ia < 0 || ib < 0) {
			snprintf(tmp->error, sizeof(tmp->error),
			         "rule %s: %s value is not a non-empty array of numbers",
			         r->path.text, ia < 0 ? "live" : "shadow");
			res = COMPARE_ERROR;
		} else if (ia != ib) {
			res = COMPARE_DISAGREE;
		}
	} else {
		struct diff d = {.numeric = r->mode == CONFIG_COMPARE_NUMERIC,
		                 .abs_tol = r->abs_tol,
		                 .rel_tol = r->rel_tol};
		if (!values_equal(a, b, &d))
			res = COMPARE_DISAGREE;
	}
	if (res != COMPARE_AGREE)
		outcome_values(tmp, a, b);
	return res;
}

static enum compare_result compare_by_rules(const struct compare_rules *rules, json_t *live,
                                            json_t *shadow, struct compare_outcome *out)
{
	int first_err = -1, first_dis = -1;
	struct compare_outcome tmp;
	out->n_rules = rules->n_rules;
	for (size_t i = 0; i < rules->n_rules; i++) {
		compare_outcome_clear(&tmp);
		enum compare_result r = rule_judge(&rules->rules[i], live, shadow, &tmp);
		out->rule_result[i] = r;
		/* Report the first definite disagreement; an error only if there is none. */
		if ((r == COMPARE_DISAGREE && first_dis < 0) ||
		    (r == COMPARE_ERROR && first_err < 0 && first_dis < 0)) {
			memcpy(out->live_value, tmp.live_value, sizeof(out->live_value));
			memcpy(out->shadow_value, tmp.shadow_value, sizeof(out->shadow_value));
			out->live_truncated = tmp.live_truncated;
			out->shadow_truncated = tmp.shadow_truncated;
			memcpy(out->error, tmp.error, sizeof(out->error));
			*(r == COMPARE_DISAGREE ? &first_dis : &first_err) = (int)i;
		}
	}
	if (first_dis >= 0)
		return outcome_set(out, COMPARE_DISAGREE, COMPARE_WHERE_RULE, first_dis,
		                   rules->rules[first_dis].path.text);
	if (first_err >= 0)
		return outcome_set(out, COMPARE_ERROR, COMPARE_WHERE_RULE, first_err,
		                   rules->rules[first_err].path.text);
	return COMPARE_AGREE;
}

static enum compare_result compare_whole(const struct compare_rules *rules, json_t *live,
                                         json_t *shadow, struct compare_outcome *out)
{
	for (size_t i = 0; i < rules->n_ignore; i++) {
		cpath_remove(live, &rules->ignore[i]);
		cpath_remove(shadow, &rules->ignore[i]);
	}
	struct diff d = {0};
	if (values_equal(live, shadow, &d))
		return COMPARE_AGREE;
	outcome_values(out, d.a, d.b);
	return outcome_set(out, COMPARE_DISAGREE, COMPARE_WHERE_BODY, -1, d.path);
}

static enum compare_result compare_bytes(const char *a, size_t alen, const char *b, size_t blen,
                                         struct compare_outcome *out)
{
	if (alen == blen && (alen == 0 || memcmp(a, b, alen) == 0))
		return COMPARE_AGREE;
	size_t show = COMPARE_VALUE_MAX / 8; /* escaping may grow each byte to 6 */
	int t;
	compare_json_escape(out->live_value, sizeof(out->live_value), a, alen < show ? alen : show,
	                    &t);
	out->live_truncated = alen > show;
	compare_json_escape(out->shadow_value, sizeof(out->shadow_value), b,
	                    blen < show ? blen : show, &t);
	out->shadow_truncated = blen > show;
	return outcome_set(out, COMPARE_DISAGREE, COMPARE_WHERE_BODY, -1, "");
}

static enum compare_result compare_status(int live_status, int shadow_status,
                                          struct compare_outcome *out)
{
	if (shadow_status <= 0 || live_status <= 0) {
		snprintf(out->error, sizeof(out->error), "%s failed before answering",
		         shadow_status <= 0 ? "shadow" : "live");
		return outcome_set(out, COMPARE_ERROR, COMPARE_WHERE_STATUS, -1, "status");
	}
	if (live_status == shadow_status)
		return COMPARE_AGREE;
	snprintf(out->live_value, sizeof(out->live_value), "%d", live_status);
	snprintf(out->shadow_value, sizeof(out->shadow_value), "%d", shadow_status);
	return outcome_set(out, COMPARE_DISAGREE, COMPARE_WHERE_STATUS, -1, "status");
}

static void set_all_rules(struct compare_outcome *out, size_t n, enum compare_result r)
{
	out->n_rules = n;
	for (size_t i = 0; i < n; i++)
		out->rule_result[i] = r;
}

enum compare_result compare_responses(const struct compare_rules *rules, int live_status,
                                      const char *live_body, size_t live_len, int shadow_status,
                                      const char *shadow_body, size_t shadow_len,
                                      struct compare_outcome *out)
{
	static const struct compare_rules none = {0};
	if (!rules)
		rules = &none;
	compare_outcome_clear(out);
	enum compare_result r = compare_status(live_status, shadow_status, out);
	if (r != COMPARE_AGREE) {
		set_all_rules(out, rules->n_rules, r);
		return r;
	}
	if (same_bytes_agree(rules, live_body, live_len, shadow_body, shadow_len)) {
		set_all_rules(out, rules->n_rules, COMPARE_AGREE);
		return COMPARE_AGREE;
	}
	json_t *live = NULL, *shadow = NULL;
	char lwhy[160], swhy[160];
	enum parse_status lp = parse_body(live_body, live_len, &live, lwhy, sizeof(lwhy));
	enum parse_status sp = parse_body(shadow_body, shadow_len, &shadow, swhy, sizeof(swhy));
	if (lp == PARSE_OK && sp == PARSE_OK) {
		r = rules->n_rules ? compare_by_rules(rules, live, shadow, out)
		                   : compare_whole(rules, live, shadow, out);
	} else if (rules->n_rules == 0 && lp != PARSE_OK && sp != PARSE_OK) {
		r = compare_bytes(live_body, live_len, shadow_body, shadow_len, out);
	} else if (rules->n_rules == 0 && (lp == PARSE_NOT_JSON || sp == PARSE_NOT_JSON)) {
		/* one answer is JSON, the other is not: they differ as bodies */
		r = compare_bytes(live_body, live_len, shadow_body, shadow_len, out);
	} else {
		snprintf(out->error, sizeof(out->error), "%s body: %s",
		         lp != PARSE_OK ? "live" : "shadow", lp != PARSE_OK ? lwhy : swhy);
		r = outcome_set(out, COMPARE_ERROR, COMPARE_WHERE_BODY, -1, "");
		set_all_rules(out, rules->n_rules, COMPARE_ERROR);
	}
	json_decref(live);
	json_decref(shadow);
	return r;
}
