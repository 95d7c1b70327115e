/*
 * compare.h - judge a live answer against its shadow: agree, disagree or error.
 *
 * Rules come from the shadow section of the config (struct config_shadow).
 * Each rule names a path into the JSON response and a mode:
 *   path   a.b   a[0]   outputs[name=label].data   (a selector [field=value]
 *          picks the first array element that is an object whose field equals
 *          value, as a string, or as a number when the field is a number)
 *   exact    the two values are equal JSON values
 *   numeric  the same, but numbers agree when |a-b| <= abs_tolerance or
 *            |a-b| <= rel_tolerance * max(|a|,|b|); arrays must have the
 *            same length, everything that is not a number compares exactly
 *   argmax   both values are non-empty arrays of numbers with the same index
 *            of the maximum element; on ties the first maximum wins
 * A path missing from both answers agrees; missing from one disagrees.
 *
 * With no rules, both bodies compare whole as JSON values (key order and
 * number formatting do not matter: 1 == 1.0), after the `ignore` paths are
 * removed; if neither body is JSON they compare byte for byte. Status codes
 * are always compared first. Bodies over COMPARE_BODY_MAX bytes or nested
 * deeper than COMPARE_DEPTH_MAX are not parsed: the pair is an error.
 *
 * The rules are immutable after compare_rules_new(), so one object may be
 * shared by every worker thread.
 */
#ifndef TURNOUT_COMPARE_H
#define TURNOUT_COMPARE_H

#include <stddef.h>

#include "config.h"

#define COMPARE_BODY_MAX     (16u * 1024 * 1024) /* bytes of one body we agree to parse */
#define COMPARE_DEPTH_MAX    64                  /* JSON nesting we agree to parse */
#define COMPARE_PATH_MAX     256                 /* bytes of a path, rule or found difference */
#define COMPARE_VALUE_MAX    512                 /* bytes of JSON text kept per differing value */
#define COMPARE_SEGMENTS_MAX 128 /* keys and [..] in one rule path: never binding at 256 bytes */

enum compare_result {
	COMPARE_AGREE,
	COMPARE_DISAGREE,
	COMPARE_ERROR,
};

/* Where the pair differed (or failed). */
enum compare_where {
	COMPARE_WHERE_NONE,   /* agree */
	COMPARE_WHERE_STATUS, /* status codes differ */
	COMPARE_WHERE_BODY,   /* whole-body comparison (no rules) */
	COMPARE_WHERE_RULE,   /* rule number `rule` */
};

struct compare_outcome {
	enum compare_result result;
	enum compare_where where;
	int rule; /* index into the rules when where == COMPARE_WHERE_RULE, else -1 */
	/* Path of the difference: the rule's path, or for a whole-body comparison
	 * the first differing path found, e.g. "outputs[0].data[3]" ("" = root). */
	char path[COMPARE_PATH_MAX + 1];
	/* Both values at that path as compact JSON text; "" when absent. When the
	 * text did not fit it is cut and the *_truncated flag is set (then it is
	 * no longer valid JSON). */
	char live_value[COMPARE_VALUE_MAX];
	char shadow_value[COMPARE_VALUE_MAX];
	int live_truncated, shadow_truncated;
	char error[256]; /* for COMPARE_ERROR: what failed, e.g. "shadow body: not JSON" */
	/* Per-rule result, for per-rule counters (n_rules entries are valid). */
	size_t n_rules;
	enum compare_result rule_result[CONFIG_MAX_RULES];
};

struct compare_rules;

/*
 * Compile the compare rules and ignore paths of cfg (which is not kept: the
 * result owns copies). Returns a new object (free with compare_rules_free), or
 * NULL with err filled, e.g. "shadow.compare[1].path: missing ']' at offset 9".
 * cfg may be NULL (no rules, no ignores).
 */
struct compare_rules *compare_rules_new(const struct config_shadow *cfg, char *err, size_t errlen);

/* Free the rules. Accepts NULL. */
void compare_rules_free(struct compare_rules *rules);

/* Number of compare rules (0 = whole-body comparison). */
size_t compare_rules_count(const struct compare_rules *rules);

/* The path text of rule i (owned by rules), or NULL when i is out of range. */
const char *compare_rule_path(const struct compare_rules *rules, size_t i);

/*
 * Compare one pair of answers. A status <= 0 means the shadow failed before it
 * answered (then the pair is an error). Bodies need not be NUL-terminated.
 * Fills *out completely (no allocation: nothing to free) and returns its
 * result. Never fails otherwise; safe to call from many threads at once.
 */
enum compare_result compare_responses(const struct compare_rules *rules, int live_status,
                                      const char *live_body, size_t live_len, int shadow_status,
                                      const char *shadow_body, size_t shadow_len,
                                      struct compare_outcome *out);

/* Reset an outcome to "agree, nothing differs". */
void compare_outcome_clear(struct compare_outcome *out);

/* "agree", "disagree", "error". */
const char *compare_result_name(enum compare_result r);

/*
 * Check that path is valid rule syntax. Returns 0, or -1 with the reason in
 * err (the config loader may call it to give a file:line:col error).
 */
int compare_path_check(const char *path, char *err, size_t errlen);

/*
 * Write src[0..len) into dst as a quoted JSON string, NUL-terminated, using at
 * most cap bytes. Valid UTF-8 passes through; control characters and bytes
 * that are not UTF-8 become \u00XX (so the result is always valid JSON). When
 * the input does not fit it is cut between characters and *truncated is set.
 * Returns the length written (without the NUL).
 */
size_t compare_json_escape(char *dst, size_t cap, const char *src, size_t len, int *truncated);

#endif
