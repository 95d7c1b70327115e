/*
 * fuzz_admin.c - libFuzzer driver for the admin line protocol (router/admin.c).
 *
 * The input is split into lines as the server would split it; each line goes
 * through admin_parse_line and admin_dispatch with a table shaped like the
 * router's (arity limits, a mutating command, a failing handler). Checks the
 * parser's promises: every word is non-empty printable ASCII without blanks,
 * argc is within bounds, and every reply is a JSON object with "ok".
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "admin.h"

static int do_ok(void *ctx, const struct admin_call *call, json_t *reply, char *err, size_t errlen)
{
	json_t *args = json_array();
	for (int i = 0; i < call->argc; i++)
		json_array_append_new(args, json_string(call->argv[i]));
	json_object_set_new(reply, "args", args);
	json_object_set_new(reply, "message", json_string("done"));
	return 0;
}

static int do_fail(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                   size_t errlen)
{
	json_object_set_new(reply, "partial", json_true());
	return -1; /* no reason given: admin must supply one */
}

static const struct admin_command cmds[] = {
    {"status", "status", 0, 0, 0, do_ok},
    {"canary", "canary PERCENT", 1, 1, 1, do_ok},
    {"switch", "switch VARIANT [--force]", 1, 2, 1, do_ok},
    {"stats", "stats [VARIANT]", 0, 1, 0, do_ok},
    {"rollback", "rollback", 0, 0, 1, do_fail},
};

static void check_parse(const char *line, size_t len)
{
	struct admin_argv av;
	char err[256];
	if (admin_parse_line(line, len, &av, err, sizeof(err)) != 0) {
		if (!err[0])
			abort();
		return;
	}
	if (av.argc < 1 || av.argc > ADMIN_MAX_ARGS)
		abort();
	for (int i = 0; i < av.argc; i++) {
		size_t n = strlen(av.argv[i]);
		if (n == 0 || av.argv[i] < av.buf || av.argv[i] + n > av.buf + sizeof(av.buf))
			abort();
		for (size_t k = 0; k < n; k++) {
			unsigned char c = (unsigned char)av.argv[i][k];
			if (c <= ' ' || c > '~')
				abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	for (int lines = 0; p < end && lines < 64; lines++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		check_parse(p, len);
		const struct admin_command *which;
		json_t *r = admin_dispatch(cmds, sizeof(cmds) / sizeof(cmds[0]), NULL, 1000, 1, p,
		                           len, &which);
		if (!r || !json_is_boolean(json_object_get(r, "ok")))
			abort();
		if (json_is_false(json_object_get(r, "ok")) &&
		    (!json_string_value(json_object_get(r, "error")) ||
		     json_object_get(r, "partial")))
			abort();
		char *text = json_dumps(r, JSON_COMPACT);
		if (!text || strchr(text, '\n'))
			abort(); /* a reply must stay one line */
		free(text);
		json_decref(r);
		p += len + (nl ? 1 : 0);
	}
	return 0;
}
