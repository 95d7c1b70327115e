/*
 * fuzz_compare.c - libFuzzer driver for router/compare.c: rule paths, the
 * JSON comparator and the JSON string escaper.
 *
 * Input layout: byte 0 picks the mode (0 exact, 1 numeric, 2 argmax, 3 no
 * rules with the path as an ignore path); then the rule path up to '\n'; then
 * the live body up to the first NUL byte; the rest is the shadow body.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"

static void check_escape(const char *s, size_t n)
{
	char out[64];
	int t;
	size_t len = compare_json_escape(out, sizeof(out), s, n, &t);
	if (len >= sizeof(out) || out[len] != 0 || out[0] != '"' || out[len - 1] != '"')
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int mode = data[0] % 4;
	const char *p = (const char *)data + 1;
	size_t rest = size - 1;
	const char *nl = memchr(p, '\n', rest);
	if (!nl)
		return 0;
	char *path = strndup(p, (size_t)(nl - p));
	if (!path)
		return 0;
	rest -= (size_t)(nl - p) + 1;
	const char *live = nl + 1;
	const char *nul = memchr(live, 0, rest);
	size_t live_len = nul ? (size_t)(nul - live) : rest;
	const char *shadow = nul ? nul + 1 : live + rest;
	size_t shadow_len = nul ? rest - live_len - 1 : 0;

	char err[256];
	compare_path_check(path, err, sizeof(err));
	struct config_compare_rule rule = {path, (enum config_compare_mode)mode, 1e-3, 1e-6};
	struct config_shadow cfg = {0};
	if (mode == 3) {
		cfg.ignore = &path;
		cfg.n_ignore = 1;
	} else {
		cfg.rules = &rule;
		cfg.n_rules = 1;
	}
	struct compare_rules *r = compare_rules_new(&cfg, err, sizeof(err));
	struct compare_outcome o;
	compare_responses(r, 200, live, live_len, 200, shadow, shadow_len, &o);
	if (strlen(o.live_value) >= COMPARE_VALUE_MAX || strlen(o.path) >= COMPARE_PATH_MAX)
		abort();
	/* a pair compared with itself always agrees (unless it cannot be judged) */
	enum compare_result self =
	    compare_responses(r, 200, live, live_len, 200, live, live_len, &o);
	if (self == COMPARE_DISAGREE)
		abort();
	check_escape(live, live_len);
	compare_rules_free(r);
	free(path);
	return 0;
}
