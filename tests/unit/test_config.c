/*
 * test_config.c - unit tests for router/config.c: the YAML loader, its units,
 * defaults, every kind of error with its exact line and column, hostile input
 * (aliases, deep nesting, huge scalars, oversized files) and the example
 * configs in conf/.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char err[CONFIG_ERR_MAX];

/* Two variants and the keys every config needs; lines 1-6, so extra lines start at 7. */
#define MIN                                                                                        \
	"variants:\n"                                                                              \
	"  blue: {endpoints: [http://127.0.0.1:9001]}\n"                                           \
	"  green: {endpoints: [http://127.0.0.1:9002]}\n"                                          \
	"strategy: canary\n"                                                                       \
	"stable: blue\n"                                                                           \
	"candidate: green\n"

static struct config *load(const char *yaml)
{
	return config_load_buffer("t.yaml", yaml, strlen(yaml), err, sizeof(err));
}

/* Does err hold a line that starts with prefix and contains what? */
static int has_error(const char *prefix, const char *what)
{
	const char *line = err;
	while (*line) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char buf[1200];
		snprintf(buf, sizeof(buf), "%.*s", (int)len, line);
		if (strncmp(buf, prefix, strlen(prefix)) == 0 && strstr(buf, what) != NULL)
			return 1;
		if (!end)
			break;
		line = end + 1;
	}
	return 0;
}

/* Load yaml, expect failure with an error line "prefix...what...". */
static void expect_err_(const char *yaml, const char *prefix, const char *what, int line)
{
	struct config *cfg = load(yaml);
	if (cfg != NULL) {
		config_free(cfg);
		fail_msg("line %d: config loaded, expected \"%s ... %s\"", line, prefix, what);
	}
	if (!has_error(prefix, what))
		fail_msg("line %d: expected \"%s ... %s\", got:\n%s", line, prefix, what, err);
}
#define expect_err(y, p, w) expect_err_(y, p, w, __LINE__)

static struct config *load_ok_(const char *yaml, int line)
{
	struct config *cfg = load(yaml);
	if (cfg == NULL)
		fail_msg("line %d: config refused:\n%s", line, err);
	return cfg;
}
#define load_ok(y) load_ok_(y, __LINE__)

static size_t count_lines(const char *s)
{
	size_t n = *s ? 1 : 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* ---------------------------------------------------------------- units */

static void test_parse_size(void **state)
{
	static const struct {
		const char *in;
		size_t out;
	} ok[] = {
	    {"0", 0},
	    {"17", 17},
	    {"17B", 17},
	    {"1KiB", 1024},
	    {"16 KiB", 16 * 1024},
	    {"16MiB", 16u << 20},
	    {"2GiB", 2ull << 30},
	    {"3k", 3000},
	    {"3K", 3000},
	    {"3kB", 3000},
	    {"3KB", 3000},
	    {"5M", 5000000},
	    {"5MB", 5000000},
	    {"1G", 1000000000},
	    {"1GB", 1000000000},
	};
	static const char *bad[] = {"",
	                            "KiB",
	                            "-1",
	                            "1.5MiB",
	                            "16XB",
	                            "16 ",
	                            "16  KiB",
	                            "16kib",
	                            "1e3",
	                            "99999999999999999999",
	                            "18446744073709551615GiB"};
	char why[256];
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		size_t v = 12345;
		if (config_parse_size(ok[i].in, &v, why, sizeof(why)) != 0)
			fail_msg("\"%s\": %s", ok[i].in, why);
		assert_int_equal(v, ok[i].out);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t v = 12345;
		why[0] = 0;
		if (config_parse_size(bad[i], &v, why, sizeof(why)) == 0)
			fail_msg("\"%s\" parsed as %zu", bad[i], v);
		assert_int_equal(v, 12345);
		assert_true(why[0] != 0);
	}
	assert_int_equal(config_parse_size("16XB", &(size_t){0}, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "\"XB\""));
}

static void test_parse_duration(void **state)
{
	static const struct {
		const char *in;
		uint32_t ms;
	} ok[] = {
	    {"0", 0},          {"5", 5000},     {"5s", 5000},
	    {"250ms", 250},    {"250 ms", 250}, {"1500us", 2},
	    {"1us", 1},        {"1000us", 1},   {"2m", 120000},
	    {"1h", 3600000},   {"1.5s", 1500},  {"0.25s", 250},
	    {"1.0001s", 1001}, {"0.5ms", 1},    {"4294967s", 4294967000u},
	};
	static const char *bad[] = {
	    "",   "s",    "-1s", "5 sec",      "5S",       "1.s",   ".5s",
	    "1d", "1e3s", "5s ", "1.1234567s", "4294968s", "1194h", "99999999999999999999h"};
	char why[256];
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint32_t v = 7;
		if (config_parse_duration_ms(ok[i].in, &v, why, sizeof(why)) != 0)
			fail_msg("\"%s\": %s", ok[i].in, why);
		assert_int_equal(v, ok[i].ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint32_t v = 7;
		if (config_parse_duration_ms(bad[i], &v, why, sizeof(why)) == 0)
			fail_msg("\"%s\" parsed as %u", bad[i], v);
		assert_int_equal(v, 7);
	}
}

static void test_parse_percent(void **state)
{
	static const struct {
		const char *in;
		uint32_t bp;
	} ok[] = {
	    {"0", 0},   {"100", 10000},  {"12.5", 1250},   {"12.50", 1250}, {"0.01", 1},
	    {"5", 500}, {"99.99", 9999}, {"100.0", 10000}, {"007", 700},
	};
	static const char *bad[] = {"",   "-1",  "100.01", "101",   "12.345", "12.",
	                            ".5", "1e1", "12,5",   "12.5%", "abc",    "1000"};
	char why[256];
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint32_t v = 7;
		if (config_parse_percent_bp(ok[i].in, &v, why, sizeof(why)) != 0)
			fail_msg("\"%s\": %s", ok[i].in, why);
		assert_int_equal(v, ok[i].bp);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint32_t v = 7;
		if (config_parse_percent_bp(bad[i], &v, why, sizeof(why)) == 0)
			fail_msg("\"%s\" parsed as %u", bad[i], v);
		assert_int_equal(v, 7);
	}
}

/* Units through the loader, with the key's bounds. */
static void test_units_in_config(void **state)
{
	struct config *cfg = load_ok(MIN "limits: {max_body: 1GiB, max_header: 1KiB,\n"
	                                 "  client_timeout: 1.5s, upstream_timeout: 250ms,\n"
	                                 "  drain_timeout: 0}\n"
	                                 "canary: {percent: 12.5}\n"
	                                 "shadow: {percent: \"0.01\", log_body_max: 0}\n");
	assert_int_equal(cfg->limits.max_body, 1u << 30);
	assert_int_equal(cfg->limits.max_header, 1024);
	assert_int_equal(cfg->limits.client_timeout_ms, 1500);
	assert_int_equal(cfg->limits.upstream_timeout_ms, 250);
	assert_int_equal(cfg->limits.drain_timeout_ms, 0);
	assert_int_equal(cfg->canary_percent_bp, 1250);
	assert_int_equal(cfg->shadow.percent_bp, 1);
	assert_int_equal(cfg->shadow.log_body_max, 0);
	/* shadow.timeout follows limits.upstream_timeout when not set. */
	assert_int_equal(cfg->shadow.timeout_ms, 250);
	config_free(cfg);
}

/* ---------------------------------------------------------------- defaults and a full config */

static void test_defaults(void **state)
{
	struct config *cfg = load_ok(MIN);
	assert_string_equal(cfg->file, "t.yaml");
	assert_int_equal(strlen(cfg->hash_hex), 64);
	assert_string_equal(cfg->listen_host, "0.0.0.0");
	assert_int_equal(cfg->listen_port, 8080);
	assert_int_equal(cfg->workers, 0);
	assert_null(cfg->admin_socket);
	assert_null(cfg->admin_http_host);
	assert_null(cfg->admin_group);
	assert_null(cfg->admin_allow_uids);
	assert_int_equal(cfg->n_admin_allow_uids, 0);
	assert_null(cfg->admin_audit_log);
	assert_null(cfg->state_file);
	assert_int_equal(cfg->n_variants, 2);
	assert_int_equal(cfg->strategy, CONFIG_STRATEGY_CANARY);
	assert_int_equal(cfg->stable, 0);
	assert_int_equal(cfg->candidate, 1);
	assert_int_equal(cfg->canary_percent_bp, 0);
	assert_int_equal(cfg->sticky, CONFIG_STICKY_NONE);
	assert_null(cfg->sticky_name);
	assert_string_equal(cfg->salt, "");
	assert_int_equal(cfg->shadow.percent_bp, 0);
	assert_int_equal(cfg->shadow.max_inflight, 256);
	assert_int_equal(cfg->shadow.timeout_ms, 5000);
	assert_int_equal(cfg->shadow.n_rules, 0);
	assert_int_equal(cfg->shadow.n_ignore, 0);
	assert_null(cfg->shadow.log_path);
	assert_int_equal(cfg->shadow.log_body_max, 4096);
	assert_int_equal(cfg->shadow.redact, 0);
	assert_string_equal(cfg->override_header, "X-Turnout-Variant");
	assert_int_equal(cfg->limits.max_body, 16u << 20);
	assert_int_equal(cfg->limits.max_header, 16u << 10);
	assert_int_equal(cfg->limits.client_timeout_ms, 30000);
	assert_int_equal(cfg->limits.upstream_timeout_ms, 5000);
	assert_int_equal(cfg->limits.max_connections, 20000);
	assert_int_equal(cfg->limits.max_inflight, 4096);
	assert_int_equal(cfg->limits.drain_timeout_ms, 10000);
	assert_int_equal(cfg->health.enabled, 1);
	assert_string_equal(cfg->health.path, "/v2/health/ready");
	assert_int_equal(cfg->health.interval_ms, 2000);
	assert_int_equal(cfg->health.timeout_ms, 1000);
	assert_int_equal(cfg->health.healthy_threshold, 2);
	assert_int_equal(cfg->health.unhealthy_threshold, 3);
	assert_null(cfg->tls.cert);
	assert_null(cfg->tls.key);
	assert_null(cfg->upstream_tls.ca);
	assert_int_equal(cfg->upstream_tls.verify, 1);
	assert_null(cfg->access_log);
	assert_string_equal(cfg->log_level, "info");
	config_free(cfg);
}

static const char full_yaml[] =
    "listen: \"[::1]:18080\"\n"
    "workers: 3\n"
    "admin:\n"
    "  socket: /tmp/t.sock\n"
    "  http: 127.0.0.1:19090\n"
    "  group: turnout-ops\n"
    "  allow_uids: [0, 1000, 4294967294]\n"
    "  audit_log: /tmp/audit.log\n"
    "state_file: /tmp/state.json\n"
    "variants:\n"
    "  v1: {endpoints: [http://127.0.0.1:9001, \"http://[::1]:9011/\"]}\n"
    "  v2-b_2:\n"
    "    endpoints:\n"
    "      - https://model.example:443\n"
    "  v3: {endpoints: [http://localhost:9003]}\n"
    "strategy: shadow\n"
    "stable: v2-b_2\n"
    "candidate: v1\n"
    "canary: {percent: 33.33, sticky: \"cookie:uid\", salt: s-1}\n"
    "shadow:\n"
    "  percent: 50\n"
    "  max_inflight: 7\n"
    "  timeout: 750ms\n"
    "  compare:\n"
    "    - {path: \"outputs[name=label].data\", mode: exact}\n"
    "    - {path: \"a.b[0].c\", mode: numeric, tolerance: 1e-3, rel_tolerance: 0.01}\n"
    "    - {path: \"[0].x\", mode: argmax}\n"
    "  ignore: [id, \"outputs[0].name\"]\n"
    "  log: /tmp/dis.jsonl\n"
    "  log_body_max: 1KiB\n"
    "  redact: true\n"
    "override_header: null\n"
    "limits: {max_body: 10MiB, max_header: 8KiB, client_timeout: 1m, upstream_timeout: 2s,\n"
    "         max_connections: 10, max_inflight: 20, drain_timeout: 1h}\n"
    "health: {enabled: false, path: /ping, interval: 500ms, timeout: 100ms,\n"
    "         healthy_threshold: 1, unhealthy_threshold: 100}\n"
    "tls: {cert: /c.pem, key: /k.pem}\n"
    "upstream_tls: {ca: /ca.pem, verify: false}\n"
    "access_log: stderr\n"
    "log_level: debug\n";

static void test_full_config(void **state)
{
	struct config *cfg = load_ok(full_yaml);
	assert_string_equal(cfg->listen_host, "::1");
	assert_int_equal(cfg->listen_port, 18080);
	assert_int_equal(cfg->workers, 3);
	assert_string_equal(cfg->admin_socket, "/tmp/t.sock");
	assert_string_equal(cfg->admin_http_host, "127.0.0.1");
	assert_int_equal(cfg->admin_http_port, 19090);
	assert_string_equal(cfg->admin_group, "turnout-ops");
	assert_int_equal(cfg->n_admin_allow_uids, 3);
	assert_int_equal(cfg->admin_allow_uids[0], 0);
	assert_int_equal(cfg->admin_allow_uids[1], 1000);
	assert_int_equal(cfg->admin_allow_uids[2], 4294967294u);
	assert_string_equal(cfg->admin_audit_log, "/tmp/audit.log");
	assert_string_equal(cfg->state_file, "/tmp/state.json");

	assert_int_equal(cfg->n_variants, 3);
	assert_string_equal(cfg->variants[0].name, "v1");
	assert_int_equal(cfg->variants[0].n_endpoints, 2);
	assert_string_equal(cfg->variants[0].endpoints[0].url, "http://127.0.0.1:9001");
	assert_string_equal(cfg->variants[0].endpoints[0].host, "127.0.0.1");
	assert_int_equal(cfg->variants[0].endpoints[0].port, 9001);
	assert_int_equal(cfg->variants[0].endpoints[0].tls, 0);
	assert_string_equal(cfg->variants[0].endpoints[1].url, "http://[::1]:9011");
	assert_string_equal(cfg->variants[0].endpoints[1].host, "::1");
	assert_int_equal(cfg->variants[0].endpoints[1].port, 9011);
	assert_string_equal(cfg->variants[1].name, "v2-b_2");
	assert_string_equal(cfg->variants[1].endpoints[0].url, "https://model.example:443");
	assert_string_equal(cfg->variants[1].endpoints[0].host, "model.example");
	assert_int_equal(cfg->variants[1].endpoints[0].tls, 1);
	assert_string_equal(cfg->variants[2].endpoints[0].host, "localhost");
	assert_int_equal(config_variant_index(cfg, "v3"), 2);
	assert_int_equal(config_variant_index(cfg, "v4"), -1);

	assert_int_equal(cfg->strategy, CONFIG_STRATEGY_SHADOW);
	assert_string_equal(config_strategy_name(cfg->strategy), "shadow");
	assert_int_equal(cfg->stable, 1);
	assert_int_equal(cfg->candidate, 0);
	assert_int_equal(cfg->canary_percent_bp, 3333);
	assert_int_equal(cfg->sticky, CONFIG_STICKY_COOKIE);
	assert_string_equal(cfg->sticky_name, "uid");
	assert_string_equal(cfg->salt, "s-1");

	assert_int_equal(cfg->shadow.percent_bp, 5000);
	assert_int_equal(cfg->shadow.max_inflight, 7);
	assert_int_equal(cfg->shadow.timeout_ms, 750);
	assert_int_equal(cfg->shadow.n_rules, 3);
	assert_string_equal(cfg->shadow.rules[0].path, "outputs[name=label].data");
	assert_int_equal(cfg->shadow.rules[0].mode, CONFIG_COMPARE_EXACT);
	assert_string_equal(cfg->shadow.rules[1].path, "a.b[0].c");
	assert_int_equal(cfg->shadow.rules[1].mode, CONFIG_COMPARE_NUMERIC);
	assert_true(cfg->shadow.rules[1].abs_tolerance == 1e-3);
	assert_true(cfg->shadow.rules[1].rel_tolerance == 0.01);
	assert_int_equal(cfg->shadow.rules[2].mode, CONFIG_COMPARE_ARGMAX);
	assert_int_equal(cfg->shadow.n_ignore, 2);
	assert_string_equal(cfg->shadow.ignore[0], "id");
	assert_string_equal(cfg->shadow.ignore[1], "outputs[0].name");
	assert_string_equal(cfg->shadow.log_path, "/tmp/dis.jsonl");
	assert_int_equal(cfg->shadow.log_body_max, 1024);
	assert_int_equal(cfg->shadow.redact, 1);
	assert_null(cfg->override_header);

	assert_int_equal(cfg->limits.max_body, 10u << 20);
	assert_int_equal(cfg->limits.max_header, 8192);
	assert_int_equal(cfg->limits.client_timeout_ms, 60000);
	assert_int_equal(cfg->limits.upstream_timeout_ms, 2000);
	assert_int_equal(cfg->limits.max_connections, 10);
	assert_int_equal(cfg->limits.max_inflight, 20);
	assert_int_equal(cfg->limits.drain_timeout_ms, 3600000);
	assert_int_equal(cfg->health.enabled, 0);
	assert_string_equal(cfg->health.path, "/ping");
	assert_int_equal(cfg->health.interval_ms, 500);
	assert_int_equal(cfg->health.timeout_ms, 100);
	assert_int_equal(cfg->health.healthy_threshold, 1);
	assert_int_equal(cfg->health.unhealthy_threshold, 100);
	assert_string_equal(cfg->tls.cert, "/c.pem");
	assert_string_equal(cfg->tls.key, "/k.pem");
	assert_string_equal(cfg->upstream_tls.ca, "/ca.pem");
	assert_int_equal(cfg->upstream_tls.verify, 0);
	assert_string_equal(cfg->access_log, "stderr");
	assert_string_equal(cfg->log_level, "debug");
	config_free(cfg);
}

static void test_nullable_values(void **state)
{
	struct config *cfg = load_ok(MIN "override_header: \"\"\n"
	                                 "access_log: /var/log/turnout/access.log\n"
	                                 "admin: {socket: ~, http: null, allow_uids: []}\n"
	                                 "canary: {sticky: ip, salt: \"\"}\n"
	                                 "tls:\nshadow:\n");
	assert_null(cfg->override_header);
	assert_string_equal(cfg->access_log, "/var/log/turnout/access.log");
	assert_null(cfg->admin_socket);
	assert_null(cfg->admin_http_host);
	assert_int_equal(cfg->sticky, CONFIG_STICKY_IP);
	assert_null(cfg->sticky_name);
	assert_string_equal(cfg->salt, "");
	config_free(cfg);

	cfg = load_ok(MIN "access_log: \"off\"\ncanary: {sticky: \"header:X-User-Id\"}\n");
	assert_null(cfg->access_log);
	assert_int_equal(cfg->sticky, CONFIG_STICKY_HEADER);
	assert_string_equal(cfg->sticky_name, "X-User-Id");
	config_free(cfg);

	/* bluegreen needs no candidate. */
	cfg = load_ok("variants: {a: {endpoints: [http://10.0.0.1:80]}}\n"
	              "strategy: bluegreen\nstable: a\ncandidate: null\n");
	assert_int_equal(cfg->candidate, -1);
	assert_int_equal(cfg->strategy, CONFIG_STRATEGY_BLUEGREEN);
	config_free(cfg);
}

static void test_hash(void **state)
{
	/* sha256 of MIN, from `printf ... | sha256sum`. */
	struct config *a = load_ok(MIN);
	struct config *b = load_ok(MIN "# a comment changes the bytes\n");
	assert_string_equal(a->hash_hex,
	                    "de36240ec06cca5a3540cbcf390434ae34f7ec89769d3b7c711c44e27ec42799");
	assert_string_not_equal(a->hash_hex, b->hash_hex);
	config_free(a);
	config_free(b);
}

/* ---------------------------------------------------------------- errors, each with its place */

static void test_unknown_keys(void **state)
{
	expect_err(MIN "lisen: 1.2.3.4:80\n", "t.yaml:7:1: lisen: ", "unknown key");
	expect_err(MIN "admin:\n  sokcet: /x\n", "t.yaml:8:3: admin.sokcet: ", "unknown key");
	expect_err(MIN "shadow: {compare: [{path: a, mood: exact}]}\n",
	           "t.yaml:7:30: shadow.compare[0].mood: ", "unknown key");
	expect_err("variants:\n  blue: {endpoints: [http://a:1], weight: 5}\n"
	           "strategy: bluegreen\nstable: blue\n",
	           "t.yaml:2:35: variants.blue.weight: ", "unknown key");
	expect_err(MIN "? [a, b]\n: 1\n", "t.yaml:7:3: ", "a key must be a string, got a sequence");
	expect_err(MIN "<<: {listen: 1.1.1.1:1}\n", "t.yaml:7:1: <<: ", "unknown key");
}

static void test_duplicate_keys(void **state)
{
	expect_err(MIN "stable: green\n",
	           "t.yaml:7:1: stable: ", "duplicate key (first at line 5, column 1)");
	expect_err(MIN "limits: {max_body: 1MiB, max_body: 2MiB}\n",
	           "t.yaml:7:26: limits.max_body: ", "duplicate key (first at line 7, column 10)");
	expect_err("variants:\n  a: {endpoints: [http://a:1]}\n  a: {endpoints: [http://a:2]}\n"
	           "strategy: bluegreen\nstable: a\n",
	           "t.yaml:3:3: variants.a: ", "variant defined twice");
}

static void test_aliases_and_anchors(void **state)
{
	expect_err("variants: &v\n  a: {endpoints: [http://a:1]}\nstrategy: bluegreen\nstable: a\n",
	           "t.yaml:1:11: ", "anchors (&v) are not allowed");
	expect_err("variants:\n  a: {endpoints: &e [http://a:1]}\n  b: {endpoints: *e}\n"
	           "strategy: bluegreen\nstable: a\n",
	           "t.yaml:3:18: ", "aliases (*e) are not allowed");
	expect_err(MIN "salt: !!binary aGVsbG8=\n", "t.yaml:7:7: ", "tags (");
	/* Billion laughs: refused before anything is expanded, every alias reported. */
	char doc[4096];
	size_t n = 0;
	n += (size_t)snprintf(doc + n, sizeof(doc) - n, "a0: &a0 [lol, lol, lol, lol, lol]\n");
	for (int i = 1; i < 10; i++)
		n += (size_t)snprintf(doc + n, sizeof(doc) - n,
		                      "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i,
		                      i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
	expect_err(doc, "t.yaml:2:10: ", "aliases (*a0) are not allowed");
	assert_true(has_error("t.yaml: ", "errors in all"));
}

static void test_wrong_types(void **state)
{
	expect_err(MIN "listen: {host: a}\n",
	           "t.yaml:7:9: listen: ", "expected host:port, got a mapping");
	expect_err(MIN "limits: [1, 2]\n",
	           "t.yaml:7:9: limits: ", "expected a mapping, got a sequence");
	expect_err(MIN "canary: 5\n", "t.yaml:7:9: canary: ", "expected a mapping, got a scalar");
	expect_err(MIN "workers: many\n",
	           "t.yaml:7:10: workers: ", "\"many\": expected \"auto\" or a whole number");
	expect_err(MIN "workers: 1.5\n", "t.yaml:7:10: workers: ", "expected \"auto\"");
	expect_err(MIN "health: {enabled: yes}\n",
	           "t.yaml:7:19: health.enabled: ", "expected true or false");
	expect_err(MIN "shadow: {compare: {path: a}}\n",
	           "t.yaml:7:19: shadow.compare: ", "expected a sequence, got a mapping");
	expect_err(MIN "shadow: {compare: [a.b]}\n",
	           "t.yaml:7:20: shadow.compare[0]: ", "expected a mapping, got a scalar");
	expect_err(MIN "shadow: {compare: [{path: a, mode: numeric, tolerance: abc}]}\n",
	           "t.yaml:7:56: shadow.compare[0].tolerance: ", "expected a number");
	expect_err(MIN "shadow: {compare: [{path: a, mode: numeric, tolerance: -1}]}\n",
	           "t.yaml:7:56: shadow.compare[0].tolerance: ", "must be from 0");
	expect_err(MIN "shadow: {compare: [{path: a, mode: numeric, tolerance: .nan}]}\n",
	           "t.yaml:7:56: shadow.compare[0].tolerance: ", "expected a number");
	expect_err(MIN "canary: {salt: [x]}\n",
	           "t.yaml:7:16: canary.salt: ", "expected a string, got a sequence");
	expect_err(MIN "log_level: loud\n",
	           "t.yaml:7:12: log_level: ", "expected one of debug, info, warn, error");
	expect_err(MIN "access_log: [a]\n", "t.yaml:7:13: access_log: ", "got a sequence");
	expect_err(MIN "canary: {sticky: header}\n",
	           "t.yaml:7:18: canary.sticky: ", "expected none, ip, header:NAME or cookie:NAME");
	expect_err(MIN "canary: {sticky: \"header:X User\"}\n",
	           "t.yaml:7:18: canary.sticky: ", "not a valid header name");
	expect_err(MIN "override_header: \"X-A:B\"\n",
	           "t.yaml:7:18: override_header: ", "not a valid header name");
	expect_err(MIN "health: {path: ping}\n",
	           "t.yaml:7:16: health.path: ", "must start with \"/\"");
	expect_err(MIN "admin: {allow_uids: [0, -1, x]}\n",
	           "t.yaml:7:25: admin.allow_uids[1]: ", "expected a uid");
	assert_true(has_error("t.yaml:7:29: admin.allow_uids[2]: ", "expected a uid"));
	expect_err(MIN "admin: {group: \"a b\"}\n",
	           "t.yaml:7:16: admin.group: ", "not a group name");
	expect_err(MIN "canary: {salt: \"a\\0b\"}\n", "t.yaml:7:16: canary.salt: ", "NUL byte");
	expect_err(MIN "canary: {salt: \"a\\nb\"}\n",
	           "t.yaml:7:16: canary.salt: ", "control character");
}

static void test_null_where_required(void **state)
{
	expect_err(MIN "listen:\n", "t.yaml:7:8: listen: ", "expected a value, got null");
	expect_err(MIN "listen: \"\"\n", "t.yaml:7:9: listen: ", "must not be empty");
	expect_err(MIN "canary: {percent: ~}\n", "t.yaml:7:19: canary.percent: ", "got null");
	expect_err("variants:\nstrategy: bluegreen\nstable: a\n",
	           "t.yaml:1:10: variants: ", "expected a mapping of variant names, got null");
	expect_err("variants: {a: }\nstrategy: bluegreen\nstable: a\n",
	           "t.yaml:1:15: variants.a: ", "expected a mapping, got null");
	expect_err(MIN "health: {path: \"\"}\n", "t.yaml:7:16: health.path: ", "must not be empty");
}

static void test_out_of_range(void **state)
{
	expect_err(MIN "canary: {percent: 140}\n",
	           "t.yaml:7:19: canary.percent: ", "\"140\" is above 100");
	expect_err(MIN "canary: {percent: 12.345}\n",
	           "t.yaml:7:19: canary.percent: ", "more than two decimals");
	expect_err(MIN "canary: {percent: -5}\n", "t.yaml:7:19: canary.percent: ", "not a percent");
	expect_err(MIN "workers: 0\n", "t.yaml:7:10: workers: ", "\"0\" is below the minimum 1");
	expect_err(MIN "workers: 2000\n",
	           "t.yaml:7:10: workers: ", "\"2000\" is above the maximum 1024");
	expect_err(MIN "listen: 127.0.0.1:0\n",
	           "t.yaml:7:9: listen: ", "port must be a number from 1 to 65535");
	expect_err(MIN "listen: 127.0.0.1:65536\n", "t.yaml:7:9: listen: ", "port must be");
	expect_err(MIN "limits: {max_header: 512}\n",
	           "t.yaml:7:22: limits.max_header: ", "must be from 1KiB to 1MiB");
	expect_err(MIN "limits: {max_body: 2GiB}\n",
	           "t.yaml:7:20: limits.max_body: ", "must be from 1B to 1GiB");
	expect_err(MIN "limits: {client_timeout: 0}\n",
	           "t.yaml:7:26: limits.client_timeout: ", "must be from 1ms to 1h");
	expect_err(MIN "limits: {upstream_timeout: 2h}\n",
	           "t.yaml:7:28: limits.upstream_timeout: ", "must be from 1ms to 1h");
	expect_err(MIN "limits: {max_connections: 0}\n",
	           "t.yaml:7:27: limits.max_connections: ", "below the minimum 1");
	expect_err(MIN "health: {unhealthy_threshold: 101}\n",
	           "t.yaml:7:31: health.unhealthy_threshold: ", "above the maximum 100");
	expect_err(MIN "shadow: {max_inflight: 99999999999999999999}\n",
	           "t.yaml:7:24: shadow.max_inflight: ", "expected a whole number");
	expect_err(MIN "shadow: {compare: [{path: a, mode: numeric, rel_tolerance: 2}]}\n",
	           "t.yaml:7:60: shadow.compare[0].rel_tolerance: ", "must be from 0 to 1");
	char y[512] = MIN "canary: {salt: ";
	memset(y + strlen(y), 'x', 257);
	strcat(y, "}\n");
	expect_err(y, "t.yaml:7:16: canary.salt: ", "is 257 bytes long, at most 256");
}

static void test_variant_refs(void **state)
{
	const char *v =
	    "variants:\n  blue: {endpoints: [http://a:1]}\n  green: {endpoints: [http://a:2]}\n";
	char y[1024];
	snprintf(y, sizeof(y), "%sstrategy: canary\nstable: blue\ncandidate: blue\n", v);
	expect_err(y, "t.yaml:6:12: candidate: ", "the same variant as stable");
	snprintf(y, sizeof(y), "%sstrategy: canary\nstable: purple\ncandidate: green\n", v);
	expect_err(y, "t.yaml:5:9: stable: ", "no variant named \"purple\" (defined: blue, green)");
	snprintf(y, sizeof(y), "%sstrategy: canary\nstable: blue\ncandidate: red\n", v);
	expect_err(y, "t.yaml:6:12: candidate: ", "no variant named \"red\"");
	snprintf(y, sizeof(y), "%sstrategy: canary\nstable: blue\n", v);
	expect_err(y, "t.yaml:4:11: candidate: ", "missing, strategy canary needs a candidate");
	snprintf(y, sizeof(y), "%sstrategy: shadow\nstable: blue\ncandidate:\n", v);
	expect_err(y, "t.yaml:4:11: candidate: ", "strategy shadow needs a candidate");
	snprintf(y, sizeof(y), "%sstrategy: bluegreen\nstable: blue\nshadow: {percent: 5}\n", v);
	expect_err(y, "t.yaml:6:19: shadow.percent: ", "no candidate is set");
	snprintf(y, sizeof(y), "%sstrategy: canary\nstable: \"bad name\"\ncandidate: green\n", v);
	expect_err(y, "t.yaml:5:9: stable: ", "a variant name uses only");
	snprintf(y, sizeof(y), "%sstrategy: purple\nstable: blue\ncandidate: green\n", v);
	expect_err(y, "t.yaml:4:11: strategy: ", "expected one of shadow, canary, bluegreen");
}

static void test_variants(void **state)
{
	char y[8192];
	size_t n = (size_t)snprintf(y, sizeof(y), "variants:\n");
	for (int i = 0; i < CONFIG_MAX_VARIANTS + 1; i++)
		n += (size_t)snprintf(y + n, sizeof(y) - n, "  v%d: {endpoints: [http://a:%d]}\n",
		                      i, i + 1);
	snprintf(y + n, sizeof(y) - n, "strategy: bluegreen\nstable: v0\n");
	expect_err(y, "t.yaml:2:3: variants: ", "17 variants, at most 16");

	expect_err("variants: {}\nstrategy: bluegreen\nstable: a\n",
	           "t.yaml:1:11: variants: ", "at least one variant is needed");
	expect_err(
	    "variants:\n  abcdefghijabcdefghijabcdefghijabc: {endpoints: [http://a:1]}\n"
	    "strategy: bluegreen\nstable: a\n",
	    "t.yaml:2:3: variants.abcdefghijabcdefghijabcdefghijabc: ", "1 to 32 characters");
	expect_err("variants:\n  blue: {}\nstrategy: bluegreen\nstable: blue\n",
	           "t.yaml:2:9: variants.blue.endpoints: ", "missing required key");
	expect_err("variants:\n  blue: {endpoints: []}\nstrategy: bluegreen\nstable: blue\n",
	           "t.yaml:2:21: variants.blue.endpoints: ", "must not be empty");

	n = (size_t)snprintf(y, sizeof(y), "variants:\n  a:\n    endpoints:\n");
	for (int i = 0; i < CONFIG_MAX_ENDPOINTS + 1; i++)
		n += (size_t)snprintf(y + n, sizeof(y) - n, "      - http://a:%d\n", i + 1);
	snprintf(y + n, sizeof(y) - n, "strategy: bluegreen\nstable: a\n");
	expect_err(y, "t.yaml:4:7: variants.a.endpoints: ", "has 65 entries, at most 64");
}

static void test_endpoints(void **state)
{
	static const struct {
		const char *ep, *what;
	} bad[] = {
	    {"ftp://a:1", "must be http://host:port or https://host:port"},
	    {"http://a", "expected host:port"},
	    {"http://a:", "port must be"},
	    {"http://a:99999", "port must be"},
	    {"http://a:1/v2", "with no path"},
	    {"http://a:1?x", "with no path"},
	    {"http://u@a:1", "with no path"},
	    {"http://a:1//", "with no path"},
	    {"http://:1", "host must have 1 to 253"},
	    {"HTTP://a:1", "must be http://"},
	    {"http://::1:80", "an IPv6 address needs brackets"},
	    {"http://[::g]:80", "is not an IPv6 address"},
	    {"http://999.1.1.1:80", "is not an IPv4 address"},
	    {"http://a_b:80", "host has a bad character"},
	    {"http://a:1", "is listed twice"},
	    {"", "must be http://"},
	};
	char y[512];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(y, sizeof(y),
		         "variants:\n  a:\n    endpoints:\n      - http://a:1\n      - \"%s\"\n"
		         "strategy: bluegreen\nstable: a\n",
		         bad[i].ep);
		expect_err(y, "t.yaml:5:9: variants.a.endpoints[1]: ", bad[i].what);
	}
	struct config *cfg =
	    load_ok("variants:\n  a: {endpoints: [\"https://[2001:db8::1]:8443/\","
	            " http://my-host.internal:80]}\nstrategy: bluegreen\nstable: a\n");
	assert_string_equal(cfg->variants[0].endpoints[0].url, "https://[2001:db8::1]:8443");
	assert_string_equal(cfg->variants[0].endpoints[0].host, "2001:db8::1");
	assert_int_equal(cfg->variants[0].endpoints[0].port, 8443);
	assert_int_equal(cfg->variants[0].endpoints[0].tls, 1);
	assert_string_equal(cfg->variants[0].endpoints[1].host, "my-host.internal");
	config_free(cfg);
}

static void test_compare_paths(void **state)
{
	static const char *good[] = {"a",
	                             "a.b",
	                             "a.b[0].c",
	                             "outputs[name=label].data",
	                             "outputs[name=probabilities].data[3]",
	                             "[0]",
	                             "[0][1].x",
	                             "a[k=some value].b",
	                             "x-y_z.0"};
	static const struct {
		const char *p, *what;
	} bad[] = {
	    {"a..b", "expected a field name at offset 2"},
	    {"a.", "expected a field name at offset 2"},
	    {".a", "expected a field name at offset 0"},
	    {"outputs[name=label.data", "missing ']' at offset 23"},
	    {"a[]", "a selector is [N] or [field=value]"},
	    {"a[name]", "a selector is [N] or [field=value]"},
	    {"a[name=]", "empty selector value"},
	    {"a[1x]", "missing ']'"},
	    {"a b", "unexpected character at offset 1"},
	    {"a.[0]", "expected a field name at offset 2"},
	};
	char y[512];
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(y, sizeof(y),
		         MIN "shadow: {compare: [{path: \"%s\"}], ignore: [\"%s\"]}\n", good[i],
		         good[i]);
		struct config *cfg = load_ok(y);
		assert_string_equal(cfg->shadow.rules[0].path, good[i]);
		assert_string_equal(cfg->shadow.ignore[0], good[i]);
		config_free(cfg);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(y, sizeof(y), MIN "shadow:\n  compare:\n    - {path: \"%s\"}\n", bad[i].p);
		expect_err(y, "t.yaml:9:14: shadow.compare[0].path: ", bad[i].what);
		snprintf(y, sizeof(y), MIN "shadow:\n  ignore: [ok, \"%s\"]\n", bad[i].p);
		expect_err(y, "t.yaml:8:16: shadow.ignore[1]: ", bad[i].what);
	}
	expect_err(MIN "shadow: {compare: [{path: a, mode: exact, tolerance: 0.1}]}\n",
	           "t.yaml:7:54: shadow.compare[0].tolerance: ", "applies only to mode numeric");
	expect_err(MIN "shadow: {compare: [{mode: exact}]}\n",
	           "t.yaml:7:20: shadow.compare[0].path: ", "missing required key");
}

static void test_cross_checks(void **state)
{
	expect_err(MIN "tls: {cert: /c.pem}\n",
	           "t.yaml:7:6: tls: ", "cert and key go together; key is missing");
	expect_err(MIN "tls: {key: /k.pem}\n", "t.yaml:7:6: tls: ", "cert is missing");
	expect_err(MIN "health: {interval: 1s, timeout: 2s}\n",
	           "t.yaml:7:33: health.timeout: ", "2s is longer than health.interval (1s)");
	expect_err(MIN "listen: 127.0.0.1:80\nadmin: {http: \"127.0.0.1:80\"}\n",
	           "t.yaml:8:15: admin.http: ", "is the same address as listen");
	expect_err(MIN "admin: {http: \"127.0.0.1:8080\"}\n",
	           "t.yaml:7:15: admin.http: ", "is the same address as listen");
	struct config *cfg = load_ok(MIN "tls: {cert: /c.pem, key: /k.pem}\n");
	config_free(cfg);
}

static void test_missing_required(void **state)
{
	expect_err("", "t.yaml:1:1: variants: ", "missing required key");
	assert_true(has_error("t.yaml:1:1: strategy: ", "missing required key"));
	assert_true(has_error("t.yaml:1:1: stable: ", "missing required key"));
	expect_err("# only a comment\n", "t.yaml:1:1: variants: ", "missing required key");
	expect_err("listen: 127.0.0.1:1\nvariants: {a: {endpoints: [http://a:1]}}\nstable: a\n",
	           "t.yaml:1:1: strategy: ", "missing required key");
	expect_err("- a\n- b\n",
	           "t.yaml:1:1: ", "the top level must be a mapping of keys, got a sequence");
	expect_err("just a string\n", "t.yaml:1:1: ", "the top level must be a mapping");
}

static void test_syntax_errors(void **state)
{
	expect_err(MIN "listen: [1, 2\n",
	           "t.yaml:8:1: ", "YAML syntax error: did not find expected");
	expect_err("variants:\n  a: 1\n b: 2\n", "t.yaml:3:2: ", "YAML syntax error");
	expect_err("a: 'unterminated\n", "t.yaml:2:1: ", "YAML syntax error");
	expect_err(MIN "salt: \"\xff\xfe\"\n", "t.yaml:7:8: ", "YAML syntax error: invalid");
	expect_err("a: 1\n---\nb: 2\n", "t.yaml:2:1: ", "only one YAML document is allowed");
	expect_err(MIN "\tlisten: 1\n", "t.yaml:7:1: ", "YAML syntax error");
}

/* Every error is reported, up to CONFIG_MAX_ERRORS lines and a count of the rest. */
static void test_many_errors(void **state)
{
	static char y[16384];
	size_t n = (size_t)snprintf(y, sizeof(y), MIN);
	for (int i = 0; i < 100; i++)
		n += (size_t)snprintf(y + n, sizeof(y) - n, "bad%d: 1\n", i);
	assert_null(load(y));
	assert_int_equal(count_lines(err), CONFIG_MAX_ERRORS + 1);
	assert_true(has_error("t.yaml:7:1: bad0: ", "unknown key"));
	assert_true(has_error("t.yaml:56:1: bad49: ", "unknown key"));
	assert_false(has_error("t.yaml:57:1: bad50: ", "unknown key"));
	assert_true(has_error("t.yaml: ", "100 errors in all"));

	/* Three unrelated mistakes: three lines, in file order. */
	assert_null(load(MIN "workers: x\nlimits: {max_body: 1XB}\nlog_level: y\n"));
	assert_int_equal(count_lines(err), 3);
	assert_true(strncmp(err, "t.yaml:7:10: workers: ", 22) == 0);

	/* A tiny buffer is never overrun and stays NUL-terminated. */
	char small[40];
	memset(small, 'Z', sizeof(small));
	assert_null(config_load_buffer("t.yaml", y, strlen(y), small, sizeof(small)));
	assert_true(memchr(small, 0, sizeof(small)) != NULL);
}

/* Deep nesting is refused by depth, before libyaml builds the document. */
static void test_deep_nesting(void **state)
{
	size_t depth = 100000;
	char *y = malloc(2 * depth + 32);
	assert_non_null(y);
	size_t n = (size_t)sprintf(y, "listen: ");
	memset(y + n, '[', depth);
	memset(y + n + depth, ']', depth);
	y[n + 2 * depth] = 0;
	expect_err(y, "t.yaml:1:", "nested deeper than 32 levels");
	/* Block-style nesting, mappings in mappings. */
	n = 0;
	for (int i = 0; i < 40 && n + 100 < 2 * depth; i++)
		n += (size_t)sprintf(y + n, "%*sk%d:\n", 2 * i, "", i);
	expect_err(y, "t.yaml:33:", "nested deeper than 32 levels");
	free(y);
}

static void test_huge_inputs(void **state)
{
	/* A 600 KiB scalar in a 1 MiB file: refused by the key's length bound. */
	size_t big = 600 * 1024;
	char *y = malloc(big + 256);
	assert_non_null(y);
	size_t n = (size_t)sprintf(y, MIN "canary: {salt: ");
	memset(y + n, 'x', big);
	strcpy(y + n + big, "}\n");
	expect_err(y, "t.yaml:7:16: canary.salt: ", "is 614400 bytes long, at most 256");
	free(y);

	/* A file over CONFIG_FILE_MAX is refused whole, without parsing. */
	size_t len = CONFIG_FILE_MAX + 1;
	y = malloc(len);
	assert_non_null(y);
	memset(y, '#', len);
	assert_null(config_load_buffer("t.yaml", y, len, err, sizeof(err)));
	assert_non_null(strstr(err, "t.yaml: the file is larger than 1048576 bytes"));

	/* Many small nodes, within the size limit: the node budget stops it. */
	n = 0;
	n += (size_t)sprintf(y + n, "x: [");
	while (n + 8 < CONFIG_FILE_MAX)
		n += (size_t)sprintf(y + n, "1,");
	n += (size_t)sprintf(y + n, "1]");
	assert_null(config_load_buffer("t.yaml", y, n, err, sizeof(err)));
	assert_non_null(strstr(err, "more than 200000 YAML nodes"));
	free(y);
}

/* ---------------------------------------------------------------- allocation failure */

/*
 * Fail each allocation in turn (curl's runtests -t): the loader must refuse
 * with a message, leak nothing and never crash, whichever allocation fails.
 * malloc is replaced for the whole program by forwarding to glibc's own
 * __libc_* functions, so it runs only without ASan, which owns malloc there.
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define TEST_CONFIG_OWNS_NO_MALLOC 1 /* clang's sanitizers own malloc */
#endif
#endif
#if !defined(__SANITIZE_ADDRESS__) && !defined(TEST_CONFIG_OWNS_NO_MALLOC) && defined(__GLIBC__)
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

static long alloc_fail_at = -1; /* index of the allocation to fail, -1 = none */
static long alloc_count;        /* allocations since armed */
static long alloc_live;         /* allocated minus freed blocks since armed */
static void *alloc_fail_caller; /* the code that got the NULL */

/* Where a debugger stops to see who got the NULL: "break on_injected_failure". */
__attribute__((noinline)) static void on_injected_failure(void)
{
	__asm__ volatile("");
}

static int alloc_fails(void *caller)
{
	if (alloc_fail_at < 0 || alloc_count++ != alloc_fail_at)
		return 0;
	alloc_fail_caller = caller;
	on_injected_failure();
	return 1;
}

/*
 * Was the NULL handed to libyaml or OpenSSL? Their own failure paths may leak
 * (libyaml 0.2.5's loader drops a half-built mapping's pair stack when the
 * node stack cannot grow); ours, including libc's strdup, must not.
 */
static int failed_in_library(void)
{
	Dl_info info;
	if (!dladdr(alloc_fail_caller, &info) || info.dli_fname == NULL)
		return 0;
	return strstr(info.dli_fname, "libyaml") != NULL ||
	       strstr(info.dli_fname, "libcrypto") != NULL;
}

void *malloc(size_t n)
{
	if (alloc_fails(__builtin_return_address(0)))
		return NULL;
	void *p = __libc_malloc(n);
	alloc_live += p != NULL;
	return p;
}

void *calloc(size_t n, size_t size)
{
	if (alloc_fails(__builtin_return_address(0)))
		return NULL;
	void *p = __libc_calloc(n, size);
	alloc_live += p != NULL;
	return p;
}

void *realloc(void *old, size_t n)
{
	if (alloc_fails(__builtin_return_address(0)))
		return NULL;
	void *p = __libc_realloc(old, n);
	alloc_live += (old == NULL && p != NULL) - (old != NULL && n == 0 && p == NULL);
	return p;
}

void free(void *p)
{
	alloc_live -= p != NULL;
	__libc_free(p);
}

static void test_allocation_failures(void **state)
{
	/* Warm up: OpenSSL and libc allocate once, on first use, and keep it. */
	struct config *ref = load_ok(full_yaml);
	long i, total = -1, library_leaks = 0;
	for (i = 0; i < 100000 && total < 0; i++) {
		long live_before = alloc_live;
		alloc_count = 0;
		alloc_fail_at = i;
		struct config *cfg = load(full_yaml);
		long used = alloc_count;
		alloc_fail_at = -1;
		if (cfg != NULL) {
			/* OpenSSL tolerates some failures inside EVP; the result is whole. */
			assert_string_equal(cfg->hash_hex, ref->hash_hex);
			assert_int_equal(cfg->n_variants, ref->n_variants);
			assert_int_equal(cfg->shadow.n_rules, ref->shadow.n_rules);
			assert_string_equal(cfg->log_level, ref->log_level);
			if (used <= i)
				total = i; /* nothing failed: past the last allocation */
		} else if (!has_error("t.yaml", "out of memory")) {
			fail_msg("allocation %ld failed, but the error does not say so:\n%s", i,
			         err);
		}
		config_free(cfg);
		if (alloc_live != live_before && failed_in_library())
			library_leaks++;
		else if (alloc_live != live_before)
			fail_msg("allocation %ld failed: %ld blocks leaked", i,
			         alloc_live - live_before);
	}
	config_free(ref);
	assert_true(total > 100); /* the loop did walk through real allocations */
	print_message(
	    "failed each of %ld allocations in turn (%ld leaked inside libyaml/OpenSSL)\n", total,
	    library_leaks);
}
#else
static void test_allocation_failures(void **state)
{
	skip();
}
#endif

/* ---------------------------------------------------------------- files */

static void test_load_file(void **state)
{
	char path[] = "/tmp/test_config_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, MIN, strlen(MIN)), (ssize_t)strlen(MIN));
	close(fd);
	struct config *a = config_load(path, err, sizeof(err));
	struct config *b = load_ok(MIN);
	assert_non_null(a);
	assert_string_equal(a->file, path);
	assert_string_equal(a->hash_hex, b->hash_hex);
	config_free(a);
	config_free(b);

	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "workers: 0\n", 11), 11);
	close(fd);
	assert_null(config_load(path, err, sizeof(err)));
	char want[128];
	snprintf(want, sizeof(want), "%s:7:10: workers: ", path);
	assert_true(has_error(want, "below the minimum 1"));
	unlink(path);

	assert_null(config_load(path, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot open: No such file or directory"));
	assert_null(config_load("/tmp", err, sizeof(err)));
	assert_non_null(strstr(err, "/tmp: not a regular file"));
	config_free(NULL);
}

static struct config *load_example(const char *name)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/conf/%s", TURNOUT_SRC_DIR, name);
	struct config *cfg = config_load(path, err, sizeof(err));
	if (cfg == NULL)
		fail_msg("%s refused:\n%s", path, err);
	return cfg;
}

static void test_examples(void **state)
{
	struct config *cfg = load_example("turnout.yaml");
	assert_string_equal(cfg->listen_host, "127.0.0.1");
	assert_int_equal(cfg->listen_port, 8080);
	assert_int_equal(cfg->n_variants, 2);
	ssize_t blue = config_variant_index(cfg, "blue"),
	        green = config_variant_index(cfg, "green");
	assert_true(blue >= 0 && green >= 0);
	assert_string_equal(cfg->variants[blue].endpoints[0].url, "http://127.0.0.1:9001");
	assert_string_equal(cfg->variants[green].endpoints[0].url, "http://127.0.0.1:9002");
	assert_int_equal(cfg->strategy, CONFIG_STRATEGY_CANARY);
	assert_int_equal(cfg->stable, (size_t)blue);
	assert_int_equal(cfg->candidate, green);
	assert_int_equal(cfg->canary_percent_bp, 1000);
	assert_int_equal(cfg->sticky, CONFIG_STICKY_HEADER);
	assert_string_equal(cfg->sticky_name, "X-User-Id");
	assert_string_equal(cfg->admin_socket, "/run/turnout/admin.sock");
	assert_string_equal(cfg->admin_http_host, "127.0.0.1");
	assert_int_equal(cfg->admin_http_port, 9090);
	assert_string_equal(cfg->state_file, "/var/lib/turnout/state.json");
	assert_int_equal(cfg->shadow.n_rules, 1);
	assert_string_equal(cfg->shadow.rules[0].path, "outputs[name=label].data");
	assert_int_equal(cfg->shadow.rules[0].mode, CONFIG_COMPARE_EXACT);
	config_free(cfg);

	static const char *others[] = {"canary.yaml", "shadow.yaml", "bluegreen.yaml"};
	static const enum config_strategy want[] = {CONFIG_STRATEGY_CANARY, CONFIG_STRATEGY_SHADOW,
	                                            CONFIG_STRATEGY_BLUEGREEN};
	for (size_t i = 0; i < 3; i++) {
		cfg = load_example(others[i]);
		assert_int_equal(cfg->strategy, want[i]);
		assert_int_equal(cfg->n_variants, 2);
		config_free(cfg);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_size),
	    cmocka_unit_test(test_parse_duration),
	    cmocka_unit_test(test_parse_percent),
	    cmocka_unit_test(test_units_in_config),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_full_config),
	    cmocka_unit_test(test_nullable_values),
	    cmocka_unit_test(test_hash),
	    cmocka_unit_test(test_unknown_keys),
	    cmocka_unit_test(test_duplicate_keys),
	    cmocka_unit_test(test_aliases_and_anchors),
	    cmocka_unit_test(test_wrong_types),
	    cmocka_unit_test(test_null_where_required),
	    cmocka_unit_test(test_out_of_range),
	    cmocka_unit_test(test_variant_refs),
	    cmocka_unit_test(test_variants),
	    cmocka_unit_test(test_endpoints),
	    cmocka_unit_test(test_compare_paths),
	    cmocka_unit_test(test_cross_checks),
	    cmocka_unit_test(test_missing_required),
	    cmocka_unit_test(test_syntax_errors),
	    cmocka_unit_test(test_many_errors),
	    cmocka_unit_test(test_deep_nesting),
	    cmocka_unit_test(test_huge_inputs),
	    cmocka_unit_test(test_allocation_failures),
	    cmocka_unit_test(test_load_file),
	    cmocka_unit_test(test_examples),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
