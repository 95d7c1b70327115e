/*
 * test_compare.c - unit tests for router/compare.c: paths, selectors, modes,
 * tolerances, argmax ties, missing fields, type mismatches, whole-body JSON
 * equality, non-JSON bodies, and huge or deeply nested input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"

/* A rule set from (path, mode, abs, rel) rows and ignore paths. */
static struct compare_rules *rules_of(const struct config_compare_rule *rows, size_t n,
                                      char **ignore, size_t n_ignore)
{
	struct config_shadow cfg = {0};
	cfg.rules = (struct config_compare_rule *)rows;
	cfg.n_rules = n;
	cfg.ignore = ignore;
	cfg.n_ignore = n_ignore;
	char err[256] = "";
	struct compare_rules *r = compare_rules_new(&cfg, err, sizeof(err));
	if (!r)
		fail_msg("compare_rules_new: %s", err);
	return r;
}

static enum compare_result cmp(const struct compare_rules *r, const char *a, const char *b,
                               struct compare_outcome *out)
{
	return compare_responses(r, 200, a, strlen(a), 200, b, strlen(b), out);
}

static void test_path_syntax(void **state)
{
	char err[192];
	assert_int_equal(compare_path_check("a", err, sizeof(err)), 0);
	assert_int_equal(compare_path_check("a.b.c", err, sizeof(err)), 0);
	assert_int_equal(compare_path_check("a[0]", err, sizeof(err)), 0);
	assert_int_equal(compare_path_check("[2].x", err, sizeof(err)), 0);
	assert_int_equal(compare_path_check("outputs[name=label].data", err, sizeof(err)), 0);
	assert_int_equal(compare_path_check("a[1][2]", err, sizeof(err)), 0);
	const char *bad[] = {"",     "a.",    ".a", "a..b",  "a[",    "a[]",
	                     "a[x]", "a[=v]", "a]", "a[0]b", "a[-1]", "a[0"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		if (compare_path_check(bad[i], err, sizeof(err)) != -1)
			fail_msg("path '%s' accepted", bad[i]);
		assert_true(strlen(err) > 0);
	}
	char longp[COMPARE_PATH_MAX + 10];
	memset(longp, 'a', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = 0;
	assert_int_equal(compare_path_check(longp, err, sizeof(err)), -1);
	/* exactly COMPARE_PATH_MAX bytes is allowed (the config loader's limit too) */
	char maxp[COMPARE_PATH_MAX + 1];
	memset(maxp, 'a', COMPARE_PATH_MAX);
	maxp[COMPARE_PATH_MAX] = 0;
	assert_int_equal(compare_path_check(maxp, err, sizeof(err)), 0);
	/* the most segments a path of that length can have */
	char many[COMPARE_PATH_MAX + 1] = "a";
	for (int i = 0; i < COMPARE_PATH_MAX / 2 - 1; i++)
		strcat(many, ".a");
	if (compare_path_check(many, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	char idx[COMPARE_PATH_MAX + 1] = "a";
	for (int i = 0; i < 80; i++)
		strcat(idx, "[0]");
	assert_int_equal(compare_path_check(idx, err, sizeof(err)), 0);
}

static void test_rules_new_errors(void **state)
{
	struct config_compare_rule rows[2] = {{"a", CONFIG_COMPARE_EXACT, 0, 0},
	                                      {"b[oops", CONFIG_COMPARE_EXACT, 0, 0}};
	struct config_shadow cfg = {.rules = rows, .n_rules = 2};
	char err[256] = "";
	assert_null(compare_rules_new(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "shadow.compare[1].path"));
	assert_non_null(strstr(err, "b[oops"));
	char *ign[] = {"ok", "bad."};
	struct config_shadow cfg2 = {.ignore = ign, .n_ignore = 2};
	assert_null(compare_rules_new(&cfg2, err, sizeof(err)));
	assert_non_null(strstr(err, "shadow.ignore[1]"));
	rows[1].path = "b";
	rows[1].abs_tolerance = -1;
	assert_null(compare_rules_new(&cfg, err, sizeof(err)));
	assert_non_null(strstr(err, "tolerance"));
	struct compare_rules *none = compare_rules_new(NULL, err, sizeof(err));
	assert_non_null(none);
	assert_int_equal(compare_rules_count(none), 0);
	compare_rules_free(none);
	compare_rules_free(NULL);
}

static void test_selector_exact(void **state)
{
	struct config_compare_rule rows[] = {
	    {"outputs[name=label].data", CONFIG_COMPARE_EXACT, 0, 0}};
	struct compare_rules *r = rules_of(rows, 1, NULL, 0);
	struct compare_outcome o;
	const char *v1 = "{\"model_name\":\"a\",\"outputs\":[{\"name\":\"probabilities\","
	                 "\"data\":[0.1,0.9]},{\"name\":\"label\",\"data\":[1]}]}";
	/* Same label, different probabilities, other order, other model name: agree. */
	const char *v2 = "{\"outputs\":[{\"name\":\"label\",\"data\":[1.0]},{\"name\":"
	                 "\"probabilities\",\"data\":[0.3,0.7]}],\"model_name\":\"b\"}";
	const char *v3 = "{\"outputs\":[{\"name\":\"label\",\"data\":[7]}]}";
	assert_int_equal(cmp(r, v1, v2, &o), COMPARE_AGREE);
	assert_int_equal(o.n_rules, 1);
	assert_int_equal(o.rule_result[0], COMPARE_AGREE);
	assert_int_equal(cmp(r, v1, v3, &o), COMPARE_DISAGREE);
	assert_int_equal(o.where, COMPARE_WHERE_RULE);
	assert_int_equal(o.rule, 0);
	assert_string_equal(o.path, "outputs[name=label].data");
	assert_string_equal(o.live_value, "[1]");
	assert_string_equal(o.shadow_value, "[7]");
	assert_int_equal(o.rule_result[0], COMPARE_DISAGREE);
	compare_rules_free(r);
}

static void test_index_and_numeric_selector(void **state)
{
	struct config_compare_rule rows[] = {{"a.b[1]", CONFIG_COMPARE_EXACT, 0, 0},
	                                     {"items[id=2].v", CONFIG_COMPARE_EXACT, 0, 0},
	                                     {"flags[on=true].n", CONFIG_COMPARE_EXACT, 0, 0}};
	struct compare_rules *r = rules_of(rows, 3, NULL, 0);
	struct compare_outcome o;
	const char *x = "{\"a\":{\"b\":[0,\"x\"]},\"items\":[{\"id\":1,\"v\":\"p\"},{\"id\":2,"
	                "\"v\":\"q\"}],\"flags\":[{\"on\":false,\"n\":1},{\"on\":true,\"n\":2}]}";
	const char *y = "{\"a\":{\"b\":[5,\"x\"]},\"items\":[{\"id\":2.0,\"v\":\"q\"},{\"id\":1,"
	                "\"v\":\"z\"}],\"flags\":[{\"on\":true,\"n\":2}]}";
	assert_int_equal(cmp(r, x, y, &o), COMPARE_AGREE);
	const char *z = "{\"a\":{\"b\":[0,\"y\"]},\"items\":[{\"id\":2,\"v\":\"q\"}],\"flags\":"
	                "[{\"on\":true,\"n\":3}]}";
	assert_int_equal(cmp(r, x, z, &o), COMPARE_DISAGREE);
	assert_int_equal(o.rule, 0); /* the first differing rule is reported */
	assert_string_equal(o.live_value, "\"x\"");
	assert_string_equal(o.shadow_value, "\"y\"");
	assert_int_equal(o.rule_result[0], COMPARE_DISAGREE);
	assert_int_equal(o.rule_result[1], COMPARE_AGREE);
	assert_int_equal(o.rule_result[2], COMPARE_DISAGREE);
	compare_rules_free(r);
}

static void test_missing_fields(void **state)
{
	struct config_compare_rule rows[] = {
	    {"outputs[name=label].data", CONFIG_COMPARE_EXACT, 0, 0}};
	struct compare_rules *r = rules_of(rows, 1, NULL, 0);
	struct compare_outcome o;
	const char *has = "{\"outputs\":[{\"name\":\"label\",\"data\":[3]}]}";
	const char *lacks = "{\"outputs\":[{\"name\":\"other\",\"data\":[3]}]}";
	assert_int_equal(cmp(r, has, lacks, &o), COMPARE_DISAGREE);
	assert_string_equal(o.live_value, "[3]");
	assert_string_equal(o.shadow_value, ""); /* missing */
	assert_int_equal(cmp(r, lacks, has, &o), COMPARE_DISAGREE);
	assert_string_equal(o.live_value, "");
	/* missing from both answers: nothing to disagree about */
	assert_int_equal(cmp(r, lacks, "{\"error\":\"x\"}", &o), COMPARE_AGREE);
	/* path through a non-object / out-of-range index is missing, not a crash */
	assert_int_equal(cmp(r, "{\"outputs\":5}", "[1,2]", &o), COMPARE_AGREE);
	compare_rules_free(r);
}

static void test_numeric_tolerance(void **state)
{
	struct config_compare_rule rows[] = {{"p", CONFIG_COMPARE_NUMERIC, 1e-3, 0}};
	struct compare_rules *r = rules_of(rows, 1, NULL, 0);
	struct compare_outcome o;
	assert_int_equal(cmp(r, "{\"p\":[0.5,0.25]}", "{\"p\":[0.5009,0.2491]}", &o),
	                 COMPARE_AGREE);
	assert_int_equal(cmp(r, "{\"p\":[0.5,0.25]}", "{\"p\":[0.5011,0.25]}", &o),
	                 COMPARE_DISAGREE);
	assert_string_equal(o.live_value, "[0.5,0.25]");
	assert_string_equal(o.shadow_value, "[0.5011,0.25]");
	/* lengths differ */
	assert_int_equal(cmp(r, "{\"p\":[0.5]}", "{\"p\":[0.5,0.5]}", &o), COMPARE_DISAGREE);
	/* type mismatch inside numeric: a string is not close to a number */
	assert_int_equal(cmp(r, "{\"p\":[0.5]}", "{\"p\":[\"0.5\"]}", &o), COMPARE_DISAGREE);
	assert_int_equal(cmp(r, "{\"p\":1}", "{\"p\":1.0005}", &o), COMPARE_AGREE);
	compare_rules_free(r);

	/* relative: 1% of the larger magnitude */
	struct config_compare_rule rel[] = {{"p", CONFIG_COMPARE_NUMERIC, 0, 0.01}};
	r = rules_of(rel, 1, NULL, 0);
	assert_int_equal(cmp(r, "{\"p\":1000}", "{\"p\":1009}", &o), COMPARE_AGREE);
	assert_int_equal(cmp(r, "{\"p\":1000}", "{\"p\":1011}", &o), COMPARE_DISAGREE);
	assert_int_equal(cmp(r, "{\"p\":-1000}", "{\"p\":-990}", &o), COMPARE_AGREE);
	/* relative alone never accepts 0 against non-zero: that needs abs_tolerance */
	assert_int_equal(cmp(r, "{\"p\":0}", "{\"p\":1e-300}", &o), COMPARE_DISAGREE);
	assert_int_equal(cmp(r, "{\"p\":0}", "{\"p\":0.0}", &o), COMPARE_AGREE);
	assert_int_equal(cmp(r, "{\"p\":0}", "{\"p\":0.1}", &o), COMPARE_DISAGREE);
	compare_rules_free(r);

	/* exact mode has no tolerance even for tiny differences */
	struct config_compare_rule ex[] = {{"p", CONFIG_COMPARE_EXACT, 1, 1}};
	r = rules_of(ex, 1, NULL, 0);
	assert_int_equal(cmp(r, "{\"p\":0.5}", "{\"p\":0.5000001}", &o), COMPARE_DISAGREE);
	assert_int_equal(cmp(r, "{\"p\":2}", "{\"p\":2.0}", &o), COMPARE_AGREE);
	compare_rules_free(r);
}

static void test_argmax(void **state)
{
	struct config_compare_rule rows[] = {{"p", CONFIG_COMPARE_ARGMAX, 0, 0}};
	struct compare_rules *r = rules_of(rows, 1, NULL, 0);
	struct compare_outcome o;
	assert_int_equal(cmp(r, "{\"p\":[0.1,0.7,0.2]}", "{\"p\":[0.3,0.4,0.3]}", &o),
	                 COMPARE_AGREE);
	assert_int_equal(cmp(r, "{\"p\":[0.1,0.7,0.2]}", "{\"p\":[0.5,0.4,0.1]}", &o),
	                 COMPARE_DISAGREE);
	/* ties: the first maximum wins, so [1,1] has argmax 0 */
	assert_int_equal(cmp(r, "{\"p\":[0.5,0.5]}", "{\"p\":[0.9,0.1]}", &o), COMPARE_AGREE);
	assert_int_equal(cmp(r, "{\"p\":[0.5,0.5]}", "{\"p\":[0.1,0.9]}", &o), COMPARE_DISAGREE);
	assert_int_equal(cmp(r, "{\"p\":[-3,-1,-1]}", "{\"p\":[0,5,5]}", &o), COMPARE_AGREE);
	/* not an array of numbers: an error naming the side */
	assert_int_equal(cmp(r, "{\"p\":[0.5,0.5]}", "{\"p\":\"zero\"}", &o), COMPARE_ERROR);
	assert_non_null(strstr(o.error, "shadow value"));
	assert_int_equal(o.rule_result[0], COMPARE_ERROR);
	assert_int_equal(cmp(r, "{\"p\":[]}", "{\"p\":[1]}", &o), COMPARE_ERROR);
	assert_non_null(strstr(o.error, "live value"));
	assert_int_equal(cmp(r, "{\"p\":[1,null]}", "{\"p\":[1]}", &o), COMPARE_ERROR);
	compare_rules_free(r);
}

/* A disagreement on one rule wins over an error on another; errors count per rule. */
static void test_disagree_beats_error(void **state)
{
	struct config_compare_rule rows[] = {{"p", CONFIG_COMPARE_ARGMAX, 0, 0},
	                                     {"l", CONFIG_COMPARE_EXACT, 0, 0}};
	struct compare_rules *r = rules_of(rows, 2, NULL, 0);
	struct compare_outcome o;
	assert_int_equal(cmp(r, "{\"p\":\"x\",\"l\":1}", "{\"p\":[1],\"l\":2}", &o),
	                 COMPARE_DISAGREE);
	assert_int_equal(o.rule, 1);
	assert_int_equal(o.rule_result[0], COMPARE_ERROR);
	assert_int_equal(o.rule_result[1], COMPARE_DISAGREE);
	assert_int_equal(cmp(r, "{\"p\":\"x\",\"l\":1}", "{\"p\":[1],\"l\":1}", &o), COMPARE_ERROR);
	assert_int_equal(o.rule, 0);
	compare_rules_free(r);
}

static void test_whole_body(void **state)
{
	struct compare_rules *r = rules_of(NULL, 0, NULL, 0);
	struct compare_outcome o;
	/* key order and number formatting do not matter */
	assert_int_equal(cmp(r, "{\"a\":1,\"b\":[1,2.5,{\"c\":null}]}",
	                     " { \"b\" : [1.0, 25e-1, {\"c\":null}], \"a\": 1e0 } ", &o),
	                 COMPARE_AGREE);
	assert_int_equal(
	    cmp(r, "{\"a\":1,\"b\":[1,2,{\"c\":true}]}", "{\"a\":1,\"b\":[1,2,{\"c\":false}]}", &o),
	    COMPARE_DISAGREE);
	assert_int_equal(o.where, COMPARE_WHERE_BODY);
	assert_string_equal(o.path, "b[2].c");
	assert_string_equal(o.live_value, "true");
	assert_string_equal(o.shadow_value, "false");
	/* a key only one side has */
	assert_int_equal(cmp(r, "{\"a\":1}", "{\"a\":1,\"z\":[1]}", &o), COMPARE_DISAGREE);
	assert_string_equal(o.path, "z");
	assert_string_equal(o.live_value, "");
	assert_string_equal(o.shadow_value, "[1]");
	assert_int_equal(cmp(r, "{\"a\":1,\"y\":2}", "{\"a\":1}", &o), COMPARE_DISAGREE);
	assert_string_equal(o.path, "y");
	/* type mismatch at the root */
	assert_int_equal(cmp(r, "[1]", "{\"0\":1}", &o), COMPARE_DISAGREE);
	assert_string_equal(o.path, "");
	/* scalars at the root and strings with the same prefix */
	assert_int_equal(cmp(r, "\"abc\"", "\"abcd\"", &o), COMPARE_DISAGREE);
	assert_int_equal(cmp(r, "null", "null", &o), COMPARE_AGREE);
	/* strings with an escaped NUL compare by their whole length */
	assert_int_equal(cmp(r, "[\"a\\u0000b\"]", "[\"a\\u0000c\"]", &o), COMPARE_DISAGREE);
	assert_string_equal(o.path, "[0]");
	assert_int_equal(cmp(r, "[\"a\\u0000b\"]", "[\"a\\u0000b\"]", &o), COMPARE_AGREE);
	/* ... and keys too */
	assert_int_equal(cmp(r, "{\"a\\u0000b\":1}", "{\"a\\u0000b\":1}", &o), COMPARE_AGREE);
	assert_int_equal(cmp(r, "{\"a\\u0000b\":1}", "{\"a\\u0000c\":1}", &o), COMPARE_DISAGREE);
	/* big integers beyond 64 bits still parse (as reals) */
	assert_int_equal(cmp(r, "[123456789012345678901234567890]", "[1.2345678901234568e29]", &o),
	                 COMPARE_AGREE);
	compare_rules_free(r);
}

static void test_ignore(void **state)
{
	char *ign[] = {"id", "model_version", "outputs[name=timing]", "meta.t[0]"};
	struct compare_rules *r = rules_of(NULL, 0, ign, 4);
	struct compare_outcome o;
	const char *a = "{\"id\":\"1\",\"model_version\":\"1\",\"outputs\":[{\"name\":\"timing\","
	                "\"data\":[3]},{\"name\":\"label\",\"data\":[4]}],\"meta\":{\"t\":[1,2]}}";
	const char *b = "{\"id\":\"2\",\"model_version\":\"2\",\"outputs\":[{\"name\":\"label\","
	                "\"data\":[4]},{\"name\":\"timing\",\"data\":[9]}],\"meta\":{\"t\":[7,2]}}";
	assert_int_equal(cmp(r, a, b, &o), COMPARE_AGREE);
	const char *c = "{\"id\":\"2\",\"outputs\":[{\"name\":\"label\",\"data\":[5]}],\"meta\":"
	                "{\"t\":[7,2]}}";
	assert_int_equal(cmp(r, a, c, &o), COMPARE_DISAGREE);
	assert_string_equal(o.path, "outputs[0].data[0]");
	assert_string_equal(o.live_value, "4");
	assert_string_equal(o.shadow_value, "5");
	compare_rules_free(r);
}

static void test_status_always_compared(void **state)
{
	struct compare_rules *r = rules_of(NULL, 0, NULL, 0);
	struct compare_outcome o;
	assert_int_equal(compare_responses(r, 200, "{}", 2, 500, "{}", 2, &o), COMPARE_DISAGREE);
	assert_int_equal(o.where, COMPARE_WHERE_STATUS);
	assert_string_equal(o.live_value, "200");
	assert_string_equal(o.shadow_value, "500");
	assert_int_equal(compare_responses(r, 200, "{}", 2, 0, NULL, 0, &o), COMPARE_ERROR);
	assert_non_null(strstr(o.error, "shadow"));
	/* NULL rules behave as no rules */
	assert_int_equal(compare_responses(NULL, 404, "x", 1, 404, "x", 1, &o), COMPARE_AGREE);
	compare_rules_free(r);
}

static void test_non_json(void **state)
{
	struct compare_rules *r = rules_of(NULL, 0, NULL, 0);
	struct compare_outcome o;
	assert_int_equal(cmp(r, "hello world", "hello world", &o), COMPARE_AGREE);
	assert_int_equal(cmp(r, "", "", &o), COMPARE_AGREE);
	assert_int_equal(cmp(r, "hello world", "hello World", &o), COMPARE_DISAGREE);
	assert_int_equal(o.where, COMPARE_WHERE_BODY);
	assert_string_equal(o.live_value, "\"hello world\"");
	/* one JSON, one not: they differ as bodies */
	assert_int_equal(cmp(r, "{\"a\":1}", "<html>", &o), COMPARE_DISAGREE);
	/* binary bytes are escaped into valid JSON text */
	const char bin[] = {'a', (char)0xff, '"', 0x01, (char)0xc3, (char)0xa9};
	assert_int_equal(compare_responses(r, 200, bin, sizeof(bin), 200, "b", 1, &o),
	                 COMPARE_DISAGREE);
	assert_string_equal(o.live_value, "\"a\\u00ff\\\"\\u0001\xc3\xa9\"");
	json_t *j = json_loads(o.live_value, JSON_DECODE_ANY, NULL);
	assert_non_null(j);
	json_decref(j);
	compare_rules_free(r);

	/* with rules, a body that is not JSON is an error naming the side */
	struct config_compare_rule rows[] = {{"a", CONFIG_COMPARE_EXACT, 0, 0}};
	r = rules_of(rows, 1, NULL, 0);
	assert_int_equal(cmp(r, "{\"a\":1}", "{\"a\":", &o), COMPARE_ERROR);
	assert_non_null(strstr(o.error, "shadow body: not JSON"));
	assert_int_equal(o.rule_result[0], COMPARE_ERROR);
	assert_int_equal(cmp(r, "oops", "{\"a\":1}", &o), COMPARE_ERROR);
	assert_non_null(strstr(o.error, "live body"));
	compare_rules_free(r);
}

static void test_json_escape_bounds(void **state)
{
	char out[16];
	int t;
	size_t n = compare_json_escape(out, sizeof(out), "\x01\x02\x03\x04", 4, &t);
	assert_true(t); /* each control byte needs 6 bytes: only two fit */
	assert_int_equal(n, strlen(out));
	assert_string_equal(out, "\"\\u0001\\u0002\"");
	/* a multi-byte character is never cut */
	n = compare_json_escape(out, 6, "ab\xe2\x82\xac", 5, &t);
	assert_true(t);
	assert_string_equal(out, "\"ab\"");
	n = compare_json_escape(out, sizeof(out), "", 0, &t);
	assert_false(t);
	assert_string_equal(out, "\"\"");
	/* overlong encodings and surrogates are not UTF-8 */
	compare_json_escape(out, sizeof(out), "\xc0\xaf", 2, &t);
	assert_string_equal(out, "\"\\u00c0\\u00af\"");
	compare_json_escape(out, sizeof(out), "\xed\xa0\x80", 3, &t);
	assert_true(t);
}

/* Deep nesting is refused before jansson sees it; the pair is an error, not a crash. */
static void test_deep_nesting(void **state)
{
	size_t depth = 100000;
	char *deep = malloc(2 * depth + 1);
	assert_non_null(deep);
	memset(deep, '[', depth);
	memset(deep + depth, ']', depth);
	deep[2 * depth] = 0;
	struct config_compare_rule rows[] = {{"a", CONFIG_COMPARE_EXACT, 0, 0}};
	struct compare_rules *r = rules_of(rows, 1, NULL, 0);
	struct compare_outcome o;
	assert_int_equal(cmp(r, "{\"a\":1}", deep, &o), COMPARE_ERROR);
	assert_non_null(strstr(o.error, "deeper"));
	compare_rules_free(r);
	/* whole-body: one side too deep is an error; both too deep compare as bytes */
	r = rules_of(NULL, 0, NULL, 0);
	assert_int_equal(cmp(r, "{\"a\":1}", deep, &o), COMPARE_ERROR);
	assert_int_equal(cmp(r, deep, deep, &o), COMPARE_AGREE);
	/* exactly at the limit still parses; brackets inside strings do not count */
	char at[2 * COMPARE_DEPTH_MAX + 16];
	memset(at, '[', COMPARE_DEPTH_MAX);
	memset(at + COMPARE_DEPTH_MAX, ']', COMPARE_DEPTH_MAX);
	at[2 * COMPARE_DEPTH_MAX] = 0;
	assert_int_equal(cmp(r, at, at, &o), COMPARE_AGREE);
	assert_int_equal(cmp(r,
	                     "{\"a\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
	                     "[[[[[[[[[[[[[[[[[[\\\"\"}",
	                     "{\"a\":\"x\"}", &o),
	                 COMPARE_DISAGREE);
	assert_string_equal(o.path, "a");
	compare_rules_free(r);
	free(deep);
}

/* Huge bodies: values in the outcome stay bounded; over the cap is an error. */
static void test_huge(void **state)
{
	size_t n = 200000;
	size_t cap = n * 8 + 64;
	char *a = malloc(cap), *b = malloc(cap);
	assert_non_null(a);
	assert_non_null(b);
	size_t la = (size_t)snprintf(a, cap, "{\"p\":[");
	for (size_t i = 0; i < n; i++)
		la += (size_t)snprintf(a + la, cap - la, "%s%zu", i ? "," : "", i % 1000);
	la += (size_t)snprintf(a + la, cap - la, "]}");
	memcpy(b, a, la + 1);
	b[la - 3] = '7'; /* change the last element */
	struct config_compare_rule rows[] = {{"p", CONFIG_COMPARE_EXACT, 0, 0}};
	struct compare_rules *r = rules_of(rows, 1, NULL, 0);
	struct compare_outcome o;
	assert_int_equal(cmp(r, a, a, &o), COMPARE_AGREE);
	assert_int_equal(cmp(r, a, b, &o), COMPARE_DISAGREE);
	assert_true(o.live_truncated);
	assert_true(o.shadow_truncated);
	assert_true(strlen(o.live_value) < COMPARE_VALUE_MAX);
	assert_int_equal(strncmp(o.live_value, "[0,1,2,3", 8), 0);
	compare_rules_free(r);
	/* whole-body: the differing element is found and shown alone */
	r = rules_of(NULL, 0, NULL, 0);
	assert_int_equal(cmp(r, a, b, &o), COMPARE_DISAGREE);
	char want[64];
	snprintf(want, sizeof(want), "p[%zu]", n - 1);
	assert_string_equal(o.path, want);
	assert_false(o.live_truncated);
	compare_rules_free(r);
	free(a);
	free(b);

	/* over COMPARE_BODY_MAX: not parsed */
	size_t big = COMPARE_BODY_MAX + 10;
	char *h = malloc(big);
	assert_non_null(h);
	memset(h, ' ', big);
	h[0] = '1';
	r = rules_of(rows, 1, NULL, 0);
	assert_int_equal(compare_responses(r, 200, "{\"p\":1}", 7, 200, h, big, &o), COMPARE_ERROR);
	assert_non_null(strstr(o.error, "compare limit"));
	compare_rules_free(r);
	free(h);
}

/*
 * The byte fast path: identical answers must be judged exactly as the full
 * parse judges them. The same body with a trailing space is not identical
 * (full path) but is the same JSON, so both judgements must match, rule by
 * rule, for every body, valid or not, that the fast path's scan sees.
 */
static void test_identical_bytes(void **state)
{
	static const struct config_compare_rule rows[] = {
	    {.path = "a", .mode = CONFIG_COMPARE_EXACT},
	    {.path = "outputs[name=p].data", .mode = CONFIG_COMPARE_NUMERIC, .abs_tolerance = 1e-3},
	};
	static const struct config_compare_rule argmax_row[] = {
	    {.path = "a", .mode = CONFIG_COMPARE_ARGMAX},
	};
	char deep64[200] = "", deep65[200] = "";
	for (int i = 0; i < 64; i++)
		strcat(deep64, "[");
	for (int i = 0; i < 64; i++)
		strcat(deep64, "]");
	for (int i = 0; i < 65; i++)
		strcat(deep65, "[");
	for (int i = 0; i < 65; i++)
		strcat(deep65, "]");
	const char *bodies[] = {
	    "{\"a\":3,\"outputs\":[{\"name\":\"p\",\"data\":[0.1,0.9e-2,-1E+2]}]}",
	    "{ \"a\" : [1, 2.5, true, false, null, \"x\\n\\u00e9\\/\"] }",
	    "hello",
	    "",
	    "   ",
	    "{\"a\":1",
	    "{\"a\":1,}",
	    "[1,]",
	    "01",
	    "-",
	    "1.",
	    "1e",
	    "3",
	    "\"x\"",
	    "null",
	    "{} x",
	    "{\"a\":1e400}",
	    "{\"a\":123456789012345678901234567890}",
	    "{\"a\":\"\\ud800\"}",
	    "{\"a\":\"\\u0000\"}",
	    "{\"\\u0000\":1}",
	    "{\"a\":\"caf\xc3\xa9\"}",
	    "{\"a\":\"\xff\"}",
	    "{\"a\":\"tab\there\"}",
	    "{\"a\":\"\\q\"}",
	    "{\"a\":1,\"a\":2}",
	    "{\"a\" 1}",
	    "[\"unterminated]",
	    deep64,
	    deep65,
	};
	struct compare_rules *sets[] = {rules_of(rows, 2, NULL, 0),
	                                rules_of(argmax_row, 1, NULL, 0)};
	struct compare_outcome same, spaced;
	for (size_t k = 0; k < sizeof(sets) / sizeof(sets[0]); k++) {
		for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
			const char *b = bodies[i];
			size_t n = strlen(b);
			char *sp = malloc(n + 2);
			assert_non_null(sp);
			memcpy(sp, b, n);
			memcpy(sp + n, " ", 2);
			enum compare_result r1 =
			    compare_responses(sets[k], 200, b, n, 200, b, n, &same);
			enum compare_result r2 =
			    compare_responses(sets[k], 200, b, n, 200, sp, n + 1, &spaced);
			if (r1 != r2)
				fail_msg("rules %zu, body %zu '%s': identical %s, full parse %s", k,
				         i, b, compare_result_name(r1), compare_result_name(r2));
			assert_int_equal(same.n_rules, spaced.n_rules);
			for (size_t j = 0; j < same.n_rules; j++)
				if (same.rule_result[j] != spaced.rule_result[j])
					fail_msg("rules %zu, body %zu, rule %zu: %s vs %s", k, i, j,
					         compare_result_name(same.rule_result[j]),
					         compare_result_name(spaced.rule_result[j]));
			free(sp);
		}
		compare_rules_free(sets[k]);
	}
	/* the judgements are not all alike: the test can tell the paths apart */
	struct compare_rules *r = rules_of(rows, 2, NULL, 0);
	assert_int_equal(cmp(r, bodies[0], bodies[0], &same), COMPARE_AGREE);
	assert_int_equal(same.n_rules, 2);
	assert_int_equal(same.rule_result[1], COMPARE_AGREE);
	assert_int_equal(cmp(r, "hello", "hello", &same), COMPARE_ERROR);
	assert_non_null(strstr(same.error, "not JSON"));
	assert_int_equal(cmp(r, deep65, deep65, &same), COMPARE_ERROR);
	compare_rules_free(r);
	/* with no rules identical bytes agree, JSON or not; status still counts */
	r = rules_of(NULL, 0, NULL, 0);
	assert_int_equal(cmp(r, "hello", "hello", &same), COMPARE_AGREE);
	assert_int_equal(cmp(r, "", "", &same), COMPARE_AGREE);
	assert_int_equal(compare_responses(r, 200, "{}", 2, 500, "{}", 2, &same), COMPARE_DISAGREE);
	assert_int_equal(same.where, COMPARE_WHERE_STATUS);
	compare_rules_free(r);
}

/* ---- randomized: the fast path against the full parse --------------------- */

struct gen {
	char buf[8192];
	size_t len;
	uint32_t seed;
};

static uint32_t gen_rand(struct gen *g)
{
	g->seed = g->seed * 1103515245u + 12345u;
	return (g->seed >> 8) & 0xffffff;
}

static void gen_put(struct gen *g, const char *s)
{
	size_t n = strlen(s);
	if (g->len + n < sizeof(g->buf))
		memcpy(g->buf + g->len, s, n), g->len += n;
}

static void gen_ws(struct gen *g)
{
	static const char *const ws[] = {"", "", "", " ", "\n", "\t\r\n ", "\v"};
	gen_put(g, ws[gen_rand(g) % (sizeof(ws) / sizeof(ws[0]))]);
}

static void gen_value(struct gen *g, int depth)
{
	static const char *const atoms[] = {"0",
	                                    "-0",
	                                    "1",
	                                    "-12.5",
	                                    "0.001e-3",
	                                    "1E+2",
	                                    "1e99",
	                                    "1e400",
	                                    "01",
	                                    "1.",
	                                    "-",
	                                    "1e",
	                                    "123456789012345678",
	                                    "1234567890123456789",
	                                    "99999999999999999999999",
	                                    ".5",
	                                    "+1",
	                                    "0x10",
	                                    "NaN",
	                                    "true",
	                                    "false",
	                                    "null",
	                                    "tru",
	                                    "nul",
	                                    "\"\"",
	                                    "\"a\"",
	                                    "\"\\u00e9\"",
	                                    "\"\\ud83d\\ude00\"",
	                                    "\"\\ud800\"",
	                                    "\"\\u0000\"",
	                                    "\"\\n\\t\\/\\\\\\\"\"",
	                                    "\"\\x\"",
	                                    "\"caf\xc3\xa9\"",
	                                    "\"\xff\"",
	                                    "\"a\tb\"",
	                                    "\"\x7f\"",
	                                    "\"unterminated"};
	uint32_t r = gen_rand(g) % 10;
	gen_ws(g);
	if (depth > 70 || r < 5) {
		gen_put(g, atoms[gen_rand(g) % (sizeof(atoms) / sizeof(atoms[0]))]);
	} else if (r < 7 || depth > 60) {
		/* long runs of nesting reach the depth limit */
		gen_put(g, "[");
		size_t n = gen_rand(g) % 3;
		for (size_t i = 0; i < n; i++) {
			if (i)
				gen_put(g, ",");
			gen_value(g, depth + 1);
		}
		gen_put(g, "]");
	} else {
		static const char *const keys[] = {"\"a\"", "\"b\"", "\"\\u0061\"", "\"\\u0000\"",
		                                   "\"a\\u0000\""};
		gen_put(g, "{");
		size_t n = gen_rand(g) % 4;
		for (size_t i = 0; i < n; i++) {
			if (i)
				gen_put(g, ",");
			gen_ws(g);
			gen_put(g, keys[gen_rand(g) % (sizeof(keys) / sizeof(keys[0]))]);
			gen_ws(g);
			gen_put(g, ":");
			gen_value(g, depth + 1);
		}
		gen_put(g, "}");
	}
	gen_ws(g);
}

/*
 * 20000 generated bodies (valid JSON, near misses, a few random byte flips,
 * nesting around the limit), each judged identical (fast path) and against
 * itself plus a trailing space (full parse), under four rule sets: the
 * judgement and every rule's must match.
 */
static void test_identical_bytes_random(void **state)
{
	static const struct config_compare_rule exact[] = {
	    {.path = "a", .mode = CONFIG_COMPARE_EXACT}};
	static const struct config_compare_rule num[] = {
	    {.path = "a", .mode = CONFIG_COMPARE_NUMERIC, .abs_tolerance = 1e-6},
	    {.path = "b[0]", .mode = CONFIG_COMPARE_EXACT}};
	static const struct config_compare_rule am[] = {
	    {.path = "a", .mode = CONFIG_COMPARE_ARGMAX}};
	char *ign[] = {"b"};
	struct compare_rules *sets[] = {rules_of(NULL, 0, ign, 1), rules_of(exact, 1, NULL, 0),
	                                rules_of(num, 2, NULL, 0), rules_of(am, 1, NULL, 0)};
	static struct gen g;
	static char sp[sizeof(g.buf) + 1];
	struct compare_outcome same, spaced;
	size_t agreed = 0, fast_paths = 0;
	g.seed = 12345;
	for (int i = 0; i < 20000; i++) {
		g.len = 0;
		if (i % 50 == 0) { /* deep nesting, at and past COMPARE_DEPTH_MAX */
			int d = 60 + (int)(gen_rand(&g) % 10);
			for (int k = 0; k < d; k++)
				gen_put(&g, k % 2 ? "[" : "{\"a\":");
			for (int k = d - 1; k >= 0; k--)
				gen_put(&g, k % 2 ? "]" : "}");
		} else {
			gen_value(&g, 0);
		}
		if (gen_rand(&g) % 8 == 0 && g.len) /* a random byte flip */
			g.buf[gen_rand(&g) % g.len] = (char)(gen_rand(&g) & 0xff);
		memcpy(sp, g.buf, g.len);
		sp[g.len] = ' ';
		for (size_t k = 0; k < sizeof(sets) / sizeof(sets[0]); k++) {
			enum compare_result r1 =
			    compare_responses(sets[k], 200, g.buf, g.len, 200, g.buf, g.len, &same);
			/* with no rules the full path compares non-JSON as bytes: not comparable */
			if (k == 0)
				continue;
			enum compare_result r2 = compare_responses(sets[k], 200, g.buf, g.len, 200,
			                                           sp, g.len + 1, &spaced);
			agreed += r1 == COMPARE_AGREE;
			fast_paths += r1 == COMPARE_AGREE && r2 == COMPARE_AGREE;
			if (r1 != r2)
				fail_msg("rules %zu, body %d '%.*s': identical %s, full parse %s",
				         k, i, (int)g.len, g.buf, compare_result_name(r1),
				         compare_result_name(r2));
			for (size_t j = 0; j < same.n_rules; j++)
				if (same.rule_result[j] != spaced.rule_result[j])
					fail_msg("rules %zu, body %d, rule %zu differs", k, i, j);
		}
	}
	/* the generator reaches both sides: agreements and errors */
	assert_true(agreed > 5000 && agreed < 3 * 20000);
	assert_true(fast_paths > 0);
	for (size_t k = 0; k < sizeof(sets) / sizeof(sets[0]); k++)
		compare_rules_free(sets[k]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_path_syntax),
	    cmocka_unit_test(test_rules_new_errors),
	    cmocka_unit_test(test_selector_exact),
	    cmocka_unit_test(test_index_and_numeric_selector),
	    cmocka_unit_test(test_missing_fields),
	    cmocka_unit_test(test_numeric_tolerance),
	    cmocka_unit_test(test_argmax),
	    cmocka_unit_test(test_disagree_beats_error),
	    cmocka_unit_test(test_whole_body),
	    cmocka_unit_test(test_ignore),
	    cmocka_unit_test(test_status_always_compared),
	    cmocka_unit_test(test_non_json),
	    cmocka_unit_test(test_json_escape_bounds),
	    cmocka_unit_test(test_deep_nesting),
	    cmocka_unit_test(test_huge),
	    cmocka_unit_test(test_identical_bytes),
	    cmocka_unit_test(test_identical_bytes_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
