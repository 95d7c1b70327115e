/*
 * config.c - the router's YAML config loader: libyaml document -> struct config.
 *
 * Strict on purpose, because a config that loads is a config that will serve
 * live traffic. Before the document is built, one pass over libyaml's events
 * refuses aliases, anchors, explicit tags, a second document and nesting
 * deeper than MAX_DEPTH, so nothing later can expand or recurse on the input's
 * say. Then every section is a table of keys (name, type, bounds, default,
 * flags), in the manner of redis' static_configs[] and nginx's ngx_command_t:
 * defaults are applied by parsing each row's default text with the same
 * setter that parses the file, so a default can never be out of its own
 * bounds. Rules that tie several keys together (stable/candidate resolve,
 * tls cert+key, health timeout <= interval, ...) run after parsing, like
 * haproxy's check_config_validity().
 *
 * Every error is one line "FILE:LINE:COL: key.path: what is wrong", with the
 * 1-based position of the offending node; all are collected (the first
 * CONFIG_MAX_ERRORS are shown, the rest counted) so an operator fixes a file
 * in one round.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <yaml.h>

#define MAX_DEPTH       32     /* nesting of mappings/sequences; the schema needs 4 */
#define MAX_EVENTS      200000 /* libyaml events in one file */
#define PATH_BUF        256    /* key path shown in a message, e.g. "shadow.compare[3].mode" */
#define STR_MAX         4096   /* default longest string value (file paths) */
#define NAME_MAX_LEN    32     /* variant names */
#define TOKEN_MAX       64     /* header and cookie names */
#define CPATH_MAX       256    /* compare path, as compare.h's COMPARE_PATH_MAX */
#define CPATH_SEGMENTS  32     /* segments of a compare path, as COMPARE_SEGMENTS_MAX */
#define SOCKET_PATH_MAX 107    /* sizeof(sun_path) - 1 */
#define LINE_MAX_LEN    1024   /* one error line */

enum key_type {
	/* Scalar values. */
	KT_STR,
	KT_HOSTPORT,
	KT_WORKERS,
	KT_U32,
	KT_SIZE,
	KT_DURATION,
	KT_PERCENT,
	KT_BOOL,
	KT_DOUBLE,
	KT_ENUM,
	KT_ENUM_STR,
	KT_STICKY,
	KT_ACCESS_LOG,
	KT_VARREF,
	/* Collections. */
	KT_UIDS,
	KT_STRLIST,
	KT_SECTION,
	KT_VARIANTS,
	KT_ENDPOINTS,
	KT_RULES,
};

#define KEY_REQUIRED 1u /* a missing key is an error */
#define KEY_NULLABLE 2u /* null or "" means "off": NULL string, absent section */
#define KEY_EMPTY_OK 4u /* "" is a valid string value */

/* One row of a section's table. */
struct key {
	const char *name;
	enum key_type type;
	size_t off;  /* field offset from the section's base */
	size_t off2; /* second field: a host's port, an array's count */
	uint64_t min, max;
	const char *def; /* default, parsed like a value written in the file */
	unsigned flags;
	const struct key *sub;    /* KT_SECTION, KT_RULES, KT_VARIANTS items */
	const char *const *names; /* KT_ENUM, KT_ENUM_STR */
	int (*check)(const char *s, char *why, size_t whylen);
};

/* One load in progress. */
struct ctx {
	const char *name; /* file name in messages */
	const char *buf;  /* the file's bytes, for reader error positions */
	size_t len;
	yaml_document_t *doc;
	struct config *cfg;
	char *err;
	size_t errlen, errpos;
	unsigned n_err;
	int err_truncated;
	char path[PATH_BUF];
	size_t pathlen;
	yaml_node_t *ref[2]; /* stable, candidate value nodes (resolved last) */
};

/* ---------------------------------------------------------------- errors */

/* Copy s into out (size n) for a message: printable ASCII only, cut with "...". */
static const char *printable(const char *s, size_t len, char *out, size_t n)
{
	size_t j = 0;
	for (size_t i = 0; i < len && j + 4 < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		out[j++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
	}
	if (j + 4 >= n && len > j)
		memcpy(out + j, "...", 3), j += 3;
	out[j] = 0;
	return out;
}

static void verror_at(struct ctx *c, const yaml_mark_t *m, const char *fmt, va_list ap)
{
	char line[LINE_MAX_LEN];
	int n;

	c->n_err++;
	if (c->n_err > CONFIG_MAX_ERRORS || c->err == NULL || c->errlen == 0)
		return;
	if (m)
		n = snprintf(line, sizeof(line), "%s:%zu:%zu: ", c->name, m->line + 1,
		             m->column + 1);
	else
		n = snprintf(line, sizeof(line), "%s: ", c->name);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	if (c->pathlen > 0 && (size_t)n < sizeof(line)) {
		int k = snprintf(line + n, sizeof(line) - (size_t)n, "%s: ", c->path);
		if (k > 0)
			n = (size_t)(n + k) < sizeof(line) ? n + k : (int)sizeof(line) - 1;
	}
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	size_t ll = strlen(line);
	size_t sep = c->errpos > 0 ? 1 : 0;
	/* Keep room for the "N more errors" line. */
	if (c->errpos + sep + ll + 64 >= c->errlen) {
		c->err_truncated = 1;
		return;
	}
	if (sep)
		c->err[c->errpos++] = '\n';
	memcpy(c->err + c->errpos, line, ll + 1);
	c->errpos += ll;
}

/* Record an error at node n (NULL: no position) with the current key path. */
__attribute__((format(printf, 3, 4))) static void error_at(struct ctx *c, const yaml_node_t *n,
                                                           const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verror_at(c, n ? &n->start_mark : NULL, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 3, 4))) static void error_mark(struct ctx *c, const yaml_mark_t *m,
                                                             const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verror_at(c, m, fmt, ap);
	va_end(ap);
}

/* Append the count of errors that were not shown. */
static void errors_finish(struct ctx *c)
{
	unsigned shown = c->n_err < CONFIG_MAX_ERRORS ? c->n_err : CONFIG_MAX_ERRORS;
	if (c->err == NULL || c->errlen == 0 || (c->n_err <= shown && !c->err_truncated))
		return;
	char line[128];
	snprintf(line, sizeof(line), "%s%s: %u errors in all, not every one shown",
	         c->errpos > 0 ? "\n" : "", c->name, c->n_err);
	size_t ll = strlen(line);
	if (c->errpos + ll < c->errlen) {
		memcpy(c->err + c->errpos, line, ll + 1);
		c->errpos += ll;
	}
}

/* Key path: push ".name" or "[i]", pop back to a saved length. */
static size_t path_key(struct ctx *c, const char *name, size_t len)
{
	size_t saved = c->pathlen;
	char tmp[80];
	printable(name, len, tmp, sizeof(tmp));
	int n = snprintf(c->path + c->pathlen, sizeof(c->path) - c->pathlen, "%s%s",
	                 c->pathlen ? "." : "", tmp);
	if (n > 0)
		c->pathlen += (size_t)n < sizeof(c->path) - c->pathlen
		                  ? (size_t)n
		                  : sizeof(c->path) - 1 - c->pathlen;
	return saved;
}

static size_t path_index(struct ctx *c, size_t i)
{
	size_t saved = c->pathlen;
	int n = snprintf(c->path + c->pathlen, sizeof(c->path) - c->pathlen, "[%zu]", i);
	if (n > 0)
		c->pathlen += (size_t)n < sizeof(c->path) - c->pathlen
		                  ? (size_t)n
		                  : sizeof(c->path) - 1 - c->pathlen;
	return saved;
}

static void path_pop(struct ctx *c, size_t saved)
{
	c->pathlen = saved;
	c->path[saved] = 0;
}

/* ---------------------------------------------------------------- nodes */

static const char *sval(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static size_t slen(const yaml_node_t *n)
{
	return n->data.scalar.length;
}

/* A plain (unquoted) empty, "~" or "null" scalar is YAML's null. */
static int is_null(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return 0;
	const char *s = sval(n);
	return slen(n) == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
	       strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static const char *node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SEQUENCE_NODE:
		return "a sequence";
	default:
		return is_null(n) ? "null" : "a scalar";
	}
}

static yaml_node_t *node(struct ctx *c, int id)
{
	return yaml_document_get_node(c->doc, id);
}

/* Value of key in a mapping node, or NULL. */
static yaml_node_t *find_value(struct ctx *c, yaml_node_t *map, const char *key)
{
	if (map == NULL || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = node(c, p->key);
		if (k && k->type == YAML_SCALAR_NODE && strlen(key) == slen(k) &&
		    memcmp(sval(k), key, slen(k)) == 0)
			return node(c, p->value);
	}
	return NULL;
}

static char *dup_str(struct ctx *c, const char *s, size_t len)
{
	char *d = malloc(len + 1);
	if (d == NULL) {
		error_at(c, NULL, "out of memory");
		return NULL;
	}
	memcpy(d, s, len);
	d[len] = 0;
	return d;
}

/* ---------------------------------------------------------------- checks */

static int is_tchar(int ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* An HTTP header or cookie name (RFC 9110 token). */
static int check_token(const char *s, char *why, size_t n)
{
	size_t len = strlen(s);
	if (len > TOKEN_MAX) {
		snprintf(why, n, "is %zu bytes long, at most %d", len, TOKEN_MAX);
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		if (!is_tchar((unsigned char)s[i])) {
			snprintf(why, n, "is not a valid header name (character %zu)", i + 1);
			return -1;
		}
	}
	return 0;
}

static int check_no_ctl(const char *s, char *why, size_t n)
{
	for (size_t i = 0; s[i]; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch < 0x20 || ch == 0x7f) {
			snprintf(why, n, "contains a control character (byte %zu)", i + 1);
			return -1;
		}
	}
	return 0;
}

static int check_http_path(const char *s, char *why, size_t n)
{
	if (s[0] != '/') {
		snprintf(why, n, "must start with \"/\"");
		return -1;
	}
	for (size_t i = 0; s[i]; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch <= 0x20 || ch >= 0x7f) {
			snprintf(why, n, "contains a space or non-ASCII byte (byte %zu)", i + 1);
			return -1;
		}
	}
	return 0;
}

static int check_group(const char *s, char *why, size_t n)
{
	for (size_t i = 0; s[i]; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == '-' || ch == '.')) {
			snprintf(why, n, "is not a group name (character %zu)", i + 1);
			return -1;
		}
	}
	return 0;
}

static int is_name_char(int ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       ch == '_' || ch == '-';
}

static int check_variant_name(const char *s, size_t len, char *why, size_t n)
{
	if (len == 0 || len > NAME_MAX_LEN) {
		snprintf(why, n, "a variant name has 1 to %d characters", NAME_MAX_LEN);
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		if (!is_name_char((unsigned char)s[i])) {
			snprintf(why, n, "a variant name uses only A-Z a-z 0-9 _ - (character %zu)",
			         i + 1);
			return -1;
		}
	}
	return 0;
}

/*
 * A compare path: segments joined by ".", each a field name followed by any
 * number of selectors, "[N]" (array index) or "[field=value]" (first element
 * whose field equals value); the first segment may be selectors alone.
 */
static int check_cpath(const char *s, char *why, size_t n)
{
	size_t i = 0, segments = 0;
	if (strlen(s) > CPATH_MAX) {
		snprintf(why, n, "is longer than %d bytes", CPATH_MAX);
		return -1;
	}
	for (;;) {
		size_t start = i;
		while (is_name_char((unsigned char)s[i]))
			i++;
		if (i == start && (segments > 0 || s[i] != '[')) {
			snprintf(why, n, "expected a field name at offset %zu", i);
			return -1;
		}
		while (s[i] == '[') {
			size_t open = i++;
			if (s[i] >= '0' && s[i] <= '9') {
				while (s[i] >= '0' && s[i] <= '9')
					i++;
			} else {
				size_t f = i;
				while (is_name_char((unsigned char)s[i]))
					i++;
				if (i == f || s[i] != '=') {
					snprintf(why, n,
					         "a selector is [N] or [field=value] (offset %zu)",
					         open);
					return -1;
				}
				size_t v = ++i;
				while (s[i] && s[i] != ']' && s[i] != '[')
					i++;
				if (i == v) {
					snprintf(why, n, "empty selector value at offset %zu", v);
					return -1;
				}
			}
			if (s[i] != ']') {
				snprintf(why, n, "missing ']' at offset %zu", i);
				return -1;
			}
			i++;
		}
		if (++segments > CPATH_SEGMENTS) {
			snprintf(why, n, "has more than %d segments", CPATH_SEGMENTS);
			return -1;
		}
		if (s[i] == 0)
			return 0;
		if (s[i] != '.') {
			snprintf(why, n, "unexpected character at offset %zu", i);
			return -1;
		}
		i++;
	}
}

/* ---------------------------------------------------------------- units */

/* Up to 19 digits into *v; returns the count of digits read (0 = none, or too many). */
static size_t read_digits(const char *s, uint64_t *v)
{
	size_t i = 0;
	*v = 0;
	while (s[i] >= '0' && s[i] <= '9') {
		if (i == 19)
			return 0;
		*v = *v * 10 + (uint64_t)(s[i] - '0');
		i++;
	}
	return i;
}

/* Size with unit -> bytes; 0, or -1 with err (contract in config.h). Nothing allocated. */
int config_parse_size(const char *s, size_t *out, char *err, size_t errlen)
{
	static const struct {
		const char *unit;
		uint64_t mult;
	} units[] = {
	    {"", 1},
	    {"B", 1},
	    {"KiB", 1ull << 10},
	    {"MiB", 1ull << 20},
	    {"GiB", 1ull << 30},
	    {"k", 1000},
	    {"K", 1000},
	    {"kB", 1000},
	    {"KB", 1000},
	    {"M", 1000000},
	    {"MB", 1000000},
	    {"G", 1000000000},
	    {"GB", 1000000000},
	};
	uint64_t v;
	size_t nd = read_digits(s, &v);
	if (nd == 0) {
		snprintf(err, errlen, "not a size (a whole number with a unit such as KiB or MiB)");
		return -1;
	}
	const char *u = s + nd;
	if (*u == ' ' && u[1] != 0)
		u++;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(u, units[i].unit) != 0)
			continue;
		if (v > SIZE_MAX / units[i].mult) {
			snprintf(err, errlen, "too large");
			return -1;
		}
		*out = (size_t)(v * units[i].mult);
		return 0;
	}
	char tmp[40];
	snprintf(err, errlen, "unknown size unit \"%s\" (use B, KiB, MiB, GiB, kB, MB, GB)",
	         printable(u, strlen(u), tmp, sizeof(tmp)));
	return -1;
}

/* Duration with unit -> ms, microseconds rounded up; 0, or -1 with err. Nothing allocated. */
int config_parse_duration_ms(const char *s, uint32_t *out, char *err, size_t errlen)
{
	static const struct {
		const char *unit;
		uint64_t us;
	} units[] = {
	    {"", 1000000},  {"us", 1},          {"ms", 1000},
	    {"s", 1000000}, {"m", 60000000ull}, {"h", 3600000000ull},
	};
	uint64_t ip, frac = 0, scale = 1;
	size_t nd = read_digits(s, &ip), fd = 0;
	if (nd == 0) {
		snprintf(err, errlen, "not a duration (a number with a unit such as ms or s)");
		return -1;
	}
	const char *u = s + nd;
	if (*u == '.') {
		u++;
		while (u[fd] >= '0' && u[fd] <= '9') {
			if (fd == 6) {
				snprintf(err, errlen, "more than 6 decimals");
				return -1;
			}
			frac = frac * 10 + (uint64_t)(u[fd] - '0');
			scale *= 10;
			fd++;
		}
		if (fd == 0) {
			snprintf(err, errlen, "expected digits after \".\"");
			return -1;
		}
		u += fd;
	}
	if (*u == ' ' && u[1] != 0)
		u++;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(u, units[i].unit) != 0)
			continue;
		uint64_t mul = units[i].us;
		if (ip > (uint64_t)UINT32_MAX * 1000 / mul) {
			snprintf(err, errlen, "too large (at most 49 days)");
			return -1;
		}
		uint64_t us = ip * mul + (frac * mul + scale - 1) / scale;
		uint64_t ms = (us + 999) / 1000;
		if (ms > UINT32_MAX) {
			snprintf(err, errlen, "too large (at most 49 days)");
			return -1;
		}
		*out = (uint32_t)ms;
		return 0;
	}
	char tmp[40];
	snprintf(err, errlen, "unknown duration unit \"%s\" (use us, ms, s, m, h)",
	         printable(u, strlen(u), tmp, sizeof(tmp)));
	return -1;
}

/* "12.5" -> 1250 basis points; 0, or -1 with err. Nothing allocated. */
int config_parse_percent_bp(const char *s, uint32_t *out, char *err, size_t errlen)
{
	uint64_t ip, frac = 0;
	size_t nd = read_digits(s, &ip);
	if (nd == 0) {
		snprintf(err, errlen, "not a percent (0 to 100, at most two decimals)");
		return -1;
	}
	const char *p = s + nd;
	if (*p == '.') {
		p++;
		size_t fd = 0;
		while (p[fd] >= '0' && p[fd] <= '9') {
			if (fd == 2) {
				snprintf(err, errlen, "more than two decimals");
				return -1;
			}
			frac = frac * 10 + (uint64_t)(p[fd] - '0');
			fd++;
		}
		if (fd == 0) {
			snprintf(err, errlen, "expected digits after \".\"");
			return -1;
		}
		if (fd == 1)
			frac *= 10;
		p += fd;
	}
	if (*p != 0) {
		snprintf(err, errlen, "not a percent (0 to 100, at most two decimals)");
		return -1;
	}
	if (ip > 100 || ip * 100 + frac > 10000) {
		snprintf(err, errlen, "is above 100");
		return -1;
	}
	*out = (uint32_t)(ip * 100 + frac);
	return 0;
}

/* "16MiB", "1000B": the way a size limit is shown in a message. */
static const char *fmt_size(uint64_t v, char *out, size_t n)
{
	if (v >= (1ull << 30) && v % (1ull << 30) == 0)
		snprintf(out, n, "%" PRIu64 "GiB", v >> 30);
	else if (v >= (1ull << 20) && v % (1ull << 20) == 0)
		snprintf(out, n, "%" PRIu64 "MiB", v >> 20);
	else if (v >= 1024 && v % 1024 == 0)
		snprintf(out, n, "%" PRIu64 "KiB", v >> 10);
	else
		snprintf(out, n, "%" PRIu64 "B", v);
	return out;
}

static const char *fmt_ms(uint64_t v, char *out, size_t n)
{
	if (v >= 3600000 && v % 3600000 == 0)
		snprintf(out, n, "%" PRIu64 "h", v / 3600000);
	else if (v >= 60000 && v % 60000 == 0)
		snprintf(out, n, "%" PRIu64 "m", v / 60000);
	else if (v >= 1000 && v % 1000 == 0)
		snprintf(out, n, "%" PRIu64 "s", v / 1000);
	else
		snprintf(out, n, "%" PRIu64 "ms", v);
	return out;
}

/* A whole number, possibly negative, so that "-1" gets "is below 0". */
static int parse_int(const char *s, int64_t *out)
{
	uint64_t v;
	int neg = s[0] == '-';
	size_t nd = read_digits(s + neg, &v);
	if (nd == 0 || s[neg + nd] != 0 || v > INT64_MAX)
		return -1;
	*out = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

static int range_check(const struct key *k, int64_t v, char *why, size_t n)
{
	if (v < 0 || (uint64_t)v < k->min) {
		snprintf(why, n, "is below the minimum %" PRIu64, k->min);
		return -1;
	}
	if ((uint64_t)v > k->max) {
		snprintf(why, n, "is above the maximum %" PRIu64, k->max);
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------- values */

static int is_ipv4_literal(const char *h)
{
	for (size_t i = 0; h[i]; i++)
		if (!(h[i] == '.' || (h[i] >= '0' && h[i] <= '9')))
			return 0;
	return 1;
}

/* "[v6]" at the start of s into h (without brackets); *colon = what follows "]". */
static int parse_host_v6(const char *s, char *h, size_t hn, const char **colon, char *why, size_t n)
{
	char q[72];
	const char *close = strchr(s, ']');
	if (close == NULL || close[1] != ':') {
		snprintf(why, n, "expected [IPv6]:port");
		return -1;
	}
	size_t hl = (size_t)(close - s - 1);
	if (hl >= hn) {
		snprintf(why, n, "host is too long");
		return -1;
	}
	memcpy(h, s + 1, hl);
	h[hl] = 0;
	struct in6_addr a6;
	if (inet_pton(AF_INET6, h, &a6) != 1) {
		snprintf(why, n, "\"%s\" is not an IPv6 address", printable(h, hl, q, sizeof(q)));
		return -1;
	}
	*colon = close + 1;
	return 0;
}

/* A host name or IPv4 address before the last ':' of s into h; *colon = that ':'. */
static int parse_host_name(const char *s, char *h, size_t hn, const char **colon, char *why,
                           size_t n)
{
	char q[72];
	const char *c = strrchr(s, ':');
	if (c == NULL) {
		snprintf(why, n, "expected host:port");
		return -1;
	}
	size_t hl = (size_t)(c - s);
	if (memchr(s, ':', hl) != NULL) {
		snprintf(why, n, "an IPv6 address needs brackets, as in [::1]:8080");
		return -1;
	}
	if (hl == 0 || hl > 253 || hl >= hn) {
		snprintf(why, n, "host must have 1 to 253 characters");
		return -1;
	}
	memcpy(h, s, hl);
	h[hl] = 0;
	for (size_t i = 0; i < hl; i++) {
		if (!(is_name_char((unsigned char)h[i]) || h[i] == '.') || h[i] == '_') {
			snprintf(why, n, "host has a bad character at position %zu", i + 1);
			return -1;
		}
	}
	struct in_addr a4;
	if (is_ipv4_literal(h) && inet_pton(AF_INET, h, &a4) != 1) {
		snprintf(why, n, "\"%s\" is not an IPv4 address", printable(h, hl, q, sizeof(q)));
		return -1;
	}
	*colon = c;
	return 0;
}

/*
 * "host:port" or "[v6]:port" into a new *host (IPv6 without brackets) and
 * *port 1..65535. Returns 0, or -1 with why.
 */
static int parse_hostport(const char *s, char **host, int *port, char *why, size_t n)
{
	const char *colon;
	char h[256];
	int r = s[0] == '[' ? parse_host_v6(s, h, sizeof(h), &colon, why, n)
	                    : parse_host_name(s, h, sizeof(h), &colon, why, n);
	if (r != 0)
		return -1;
	uint64_t p;
	size_t nd = read_digits(colon + 1, &p);
	if (nd == 0 || nd > 5 || colon[1 + nd] != 0 || p < 1 || p > 65535) {
		snprintf(why, n, "port must be a number from 1 to 65535");
		return -1;
	}
	*host = strdup(h);
	if (*host == NULL) {
		snprintf(why, n, "out of memory");
		return -1;
	}
	*port = (int)p;
	return 0;
}

/* "http(s)://host:port" (one trailing "/" allowed) into ep. */
static int parse_endpoint(const char *s, struct config_endpoint *ep, char *why, size_t n)
{
	const char *rest;
	char hp[300];

	if (strncmp(s, "http://", 7) == 0)
		rest = s + 7, ep->tls = 0;
	else if (strncmp(s, "https://", 8) == 0)
		rest = s + 8, ep->tls = 1;
	else {
		snprintf(why, n, "must be http://host:port or https://host:port");
		return -1;
	}
	size_t rl = strlen(rest);
	if (rl > 0 && rest[rl - 1] == '/')
		rl--;
	if (rl == 0 || rl >= sizeof(hp) || strcspn(rest, "/?#@") < rl) {
		snprintf(why, n, "must be http(s)://host:port with no path, query or user");
		return -1;
	}
	memcpy(hp, rest, rl);
	hp[rl] = 0;
	if (parse_hostport(hp, &ep->host, &ep->port, why, n) != 0)
		return -1;
	size_t ul = (size_t)(rest - s) + rl;
	ep->url = malloc(ul + 1);
	if (ep->url == NULL) {
		snprintf(why, n, "out of memory");
		return -1;
	}
	memcpy(ep->url, s, ul);
	ep->url[ul] = 0;
	return 0;
}

static void set_str(char **dst, char *v)
{
	free(*dst);
	*dst = v;
}

static int set_sticky(struct ctx *c, const char *s, char *why, size_t n)
{
	struct config *cfg = c->cfg;
	const char *name = NULL;
	enum config_sticky kind;

	if (strcmp(s, "none") == 0)
		kind = CONFIG_STICKY_NONE;
	else if (strcmp(s, "ip") == 0)
		kind = CONFIG_STICKY_IP;
	else if (strncmp(s, "header:", 7) == 0)
		kind = CONFIG_STICKY_HEADER, name = s + 7;
	else if (strncmp(s, "cookie:", 7) == 0)
		kind = CONFIG_STICKY_COOKIE, name = s + 7;
	else {
		snprintf(why, n, "expected none, ip, header:NAME or cookie:NAME");
		return -1;
	}
	if (name && (name[0] == 0 || check_token(name, why, n) != 0)) {
		if (name[0] == 0)
			snprintf(why, n, "the header or cookie name is missing");
		return -1;
	}
	char *d = NULL;
	if (name && (d = strdup(name)) == NULL) {
		snprintf(why, n, "out of memory");
		return -1;
	}
	cfg->sticky = kind;
	set_str(&cfg->sticky_name, d);
	return 0;
}

static int set_access_log(struct ctx *c, const char *s, int null, char *why, size_t n)
{
	char *d = NULL;
	if (!null && s[0] != 0 && strcmp(s, "off") != 0) {
		if (check_no_ctl(s, why, n) != 0)
			return -1;
		if ((d = strdup(s)) == NULL) {
			snprintf(why, n, "out of memory");
			return -1;
		}
	}
	set_str(&c->cfg->access_log, d);
	return 0;
}

static int set_string(const struct key *k, char *base, const char *s, size_t len, int null,
                      char *why, size_t n)
{
	char **dst = (char **)(base + k->off);
	size_t max = k->max ? k->max : STR_MAX;

	if (null || (len == 0 && !(k->flags & KEY_EMPTY_OK))) {
		if (!(k->flags & KEY_NULLABLE)) {
			snprintf(why, n,
			         null ? "expected a string, got null" : "must not be empty");
			return -1;
		}
		set_str(dst, NULL);
		return 0;
	}
	if (len > max) {
		snprintf(why, n, "is %zu bytes long, at most %zu", len, max);
		return -1;
	}
	if (strlen(s) != len) {
		snprintf(why, n, "contains a NUL byte");
		return -1;
	}
	if (check_no_ctl(s, why, n) != 0 || (k->check && k->check(s, why, n) != 0))
		return -1;
	char *d = strdup(s);
	if (d == NULL) {
		snprintf(why, n, "out of memory");
		return -1;
	}
	set_str(dst, d);
	return 0;
}

static int set_enum(const struct key *k, char *base, const char *s, char *why, size_t n)
{
	for (int i = 0; k->names[i]; i++) {
		if (strcmp(s, k->names[i]) != 0)
			continue;
		if (k->type == KT_ENUM) {
			*(int *)(base + k->off) = i;
			return 0;
		}
		char *d = strdup(s);
		if (d == NULL) {
			snprintf(why, n, "out of memory");
			return -1;
		}
		set_str((char **)(base + k->off), d);
		return 0;
	}
	size_t used = (size_t)snprintf(why, n, "expected one of");
	for (int i = 0; k->names[i] && used < n; i++)
		used += (size_t)snprintf(why + used, n - used, "%s %s", i ? "," : "", k->names[i]);
	return -1;
}

static int set_number(const struct key *k, char *base, const char *s, char *why, size_t n)
{
	int64_t v;
	if (k->type == KT_WORKERS && strcmp(s, "auto") == 0) {
		*(int *)(base + k->off) = 0;
		return 0;
	}
	if (parse_int(s, &v) != 0) {
		snprintf(why, n,
		         k->type == KT_WORKERS ? "expected \"auto\" or a whole number"
		                               : "expected a whole number");
		return -1;
	}
	if (range_check(k, v, why, n) != 0)
		return -1;
	if (k->type == KT_WORKERS)
		*(int *)(base + k->off) = (int)v;
	else
		*(uint32_t *)(base + k->off) = (uint32_t)v;
	return 0;
}

static int set_double(const struct key *k, char *base, const char *s, char *why, size_t n)
{
	char *end;
	if (s[0] == 0 || strspn(s, "0123456789.eE+-") != strlen(s)) {
		snprintf(why, n, "expected a number such as 0.001 or 1e-3");
		return -1;
	}
	errno = 0;
	double v = strtod(s, &end);
	if (*end != 0 || errno != 0 || !isfinite(v)) {
		snprintf(why, n, "expected a number such as 0.001 or 1e-3");
		return -1;
	}
	if (v < (double)k->min || v > (double)k->max) {
		snprintf(why, n, "must be from %" PRIu64 " to %" PRIu64, k->min, k->max);
		return -1;
	}
	*(double *)(base + k->off) = v;
	return 0;
}

static int set_unit(const struct key *k, char *base, const char *s, char *why, size_t n)
{
	char a[32], b[32];
	if (k->type == KT_SIZE) {
		size_t v;
		if (config_parse_size(s, &v, why, n) != 0)
			return -1;
		if (v < k->min || v > k->max) {
			snprintf(why, n, "must be from %s to %s", fmt_size(k->min, a, sizeof(a)),
			         fmt_size(k->max, b, sizeof(b)));
			return -1;
		}
		*(size_t *)(base + k->off) = v;
		return 0;
	}
	uint32_t v;
	if (k->type == KT_PERCENT)
		return config_parse_percent_bp(s, (uint32_t *)(base + k->off), why, n);
	if (config_parse_duration_ms(s, &v, why, n) != 0)
		return -1;
	if (v < k->min || v > k->max) {
		snprintf(why, n, "must be from %s to %s", fmt_ms(k->min, a, sizeof(a)),
		         fmt_ms(k->max, b, sizeof(b)));
		return -1;
	}
	*(uint32_t *)(base + k->off) = v;
	return 0;
}

/*
 * Set the scalar value s (len bytes; null = YAML null) of row k into base.
 * Returns 0, or -1 with why. v is the value node, NULL for a default.
 */
static int set_scalar(struct ctx *c, const struct key *k, char *base, yaml_node_t *v, const char *s,
                      size_t len, int null, char *why, size_t n)
{
	if (null && !(k->flags & KEY_NULLABLE) && k->type != KT_ACCESS_LOG) {
		snprintf(why, n, "expected a value, got null");
		return -1;
	}
	if (k->type != KT_STR && strlen(s) != len) {
		snprintf(why, n, "contains a NUL byte");
		return -1;
	}
	switch (k->type) {
	case KT_STR:
		return set_string(k, base, s, len, null, why, n);
	case KT_HOSTPORT: {
		char **host = (char **)(base + k->off);
		int *port = (int *)(base + k->off2);
		char *h = NULL;
		int p = 0;
		if ((null || len == 0) && !(k->flags & KEY_NULLABLE)) {
			snprintf(why, n, "must not be empty");
			return -1;
		}
		if (!(null || len == 0) && parse_hostport(s, &h, &p, why, n) != 0)
			return -1;
		set_str(host, h);
		*port = p;
		return 0;
	}
	case KT_WORKERS:
	case KT_U32:
		return set_number(k, base, s, why, n);
	case KT_SIZE:
	case KT_DURATION:
	case KT_PERCENT:
		return set_unit(k, base, s, why, n);
	case KT_BOOL:
		if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
			*(int *)(base + k->off) = 1;
		else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 ||
		         strcmp(s, "FALSE") == 0)
			*(int *)(base + k->off) = 0;
		else {
			snprintf(why, n, "expected true or false");
			return -1;
		}
		return 0;
	case KT_DOUBLE:
		return set_double(k, base, s, why, n);
	case KT_ENUM:
	case KT_ENUM_STR:
		return set_enum(k, base, s, why, n);
	case KT_STICKY:
		return set_sticky(c, s, why, n);
	case KT_ACCESS_LOG:
		return set_access_log(c, s, null, why, n);
	case KT_VARREF:
		if (!null && check_variant_name(s, len, why, n) != 0)
			return -1;
		c->ref[k->off] = null ? NULL : v;
		return 0;
	default:
		abort(); /* collections never reach here */
	}
}

/* ---------------------------------------------------------------- tables */

static const char *const strategy_names[] = {"shadow", "canary", "bluegreen", NULL};
static const char *const mode_names[] = {"exact", "numeric", "argmax", NULL};
static const char *const upstream_client_names[] = {"builtin", "libcurl", NULL};
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};

#define CFG(f)  offsetof(struct config, f)
#define SHD(f)  offsetof(struct config_shadow, f)
#define LIM(f)  offsetof(struct config_limits, f)
#define HLT(f)  offsetof(struct config_health, f)
#define RUL(f)  offsetof(struct config_compare_rule, f)
#define MS_HOUR 3600000ull

/* The tables read best one row per key, so clang-format leaves them alone. */
/* clang-format off */
static const struct key admin_keys[] = {
	{.name = "socket", .type = KT_STR, .off = CFG(admin_socket), .max = SOCKET_PATH_MAX,
	 .flags = KEY_NULLABLE},
	{.name = "http", .type = KT_HOSTPORT, .off = CFG(admin_http_host),
	 .off2 = CFG(admin_http_port), .flags = KEY_NULLABLE},
	{.name = "group", .type = KT_STR, .off = CFG(admin_group), .max = 32,
	 .flags = KEY_NULLABLE, .check = check_group},
	{.name = "allow_uids", .type = KT_UIDS, .off = CFG(admin_allow_uids),
	 .off2 = CFG(n_admin_allow_uids), .max = CONFIG_MAX_UIDS},
	{.name = "audit_log", .type = KT_STR, .off = CFG(admin_audit_log), .flags = KEY_NULLABLE},
	{0},
};

static const struct key canary_keys[] = {
	{.name = "percent", .type = KT_PERCENT, .off = CFG(canary_percent_bp), .def = "0"},
	{.name = "sticky", .type = KT_STICKY, .def = "none"},
	{.name = "salt", .type = KT_STR, .off = CFG(salt), .max = 256, .def = "",
	 .flags = KEY_EMPTY_OK},
	{0},
};

static const struct key rule_keys[] = {
	{.name = "path", .type = KT_STR, .off = RUL(path), .max = CPATH_MAX,
	 .flags = KEY_REQUIRED, .check = check_cpath},
	{.name = "mode", .type = KT_ENUM, .off = RUL(mode), .names = mode_names, .def = "exact"},
	{.name = "tolerance", .type = KT_DOUBLE, .off = RUL(abs_tolerance), .max = 1000000000,
	 .def = "0"},
	{.name = "rel_tolerance", .type = KT_DOUBLE, .off = RUL(rel_tolerance), .max = 1,
	 .def = "0"},
	{0},
};

static const struct key shadow_keys[] = {
	{.name = "percent", .type = KT_PERCENT, .off = SHD(percent_bp), .def = "0"},
	{.name = "max_inflight", .type = KT_U32, .off = SHD(max_inflight), .min = 1,
	 .max = 65536, .def = "256"},
	/* No default here: limits.upstream_timeout, filled in by check_config(). */
	{.name = "timeout", .type = KT_DURATION, .off = SHD(timeout_ms), .min = 1,
	 .max = MS_HOUR},
	{.name = "compare", .type = KT_RULES, .off = SHD(rules), .off2 = SHD(n_rules),
	 .max = CONFIG_MAX_RULES, .sub = rule_keys},
	{.name = "ignore", .type = KT_STRLIST, .off = SHD(ignore), .off2 = SHD(n_ignore),
	 .max = CONFIG_MAX_IGNORE, .check = check_cpath},
	{.name = "log", .type = KT_STR, .off = SHD(log_path), .flags = KEY_NULLABLE},
	{.name = "log_body_max", .type = KT_SIZE, .off = SHD(log_body_max), .max = 16u << 20,
	 .def = "4KiB"},
	{.name = "redact", .type = KT_BOOL, .off = SHD(redact), .def = "false"},
	{0},
};

static const struct key limits_keys[] = {
	{.name = "max_body", .type = KT_SIZE, .off = LIM(max_body), .min = 1, .max = 1u << 30,
	 .def = "16MiB"},
	{.name = "max_header", .type = KT_SIZE, .off = LIM(max_header), .min = 1024,
	 .max = 1u << 20, .def = "16KiB"},
	{.name = "client_timeout", .type = KT_DURATION, .off = LIM(client_timeout_ms), .min = 1,
	 .max = MS_HOUR, .def = "30s"},
	{.name = "upstream_timeout", .type = KT_DURATION, .off = LIM(upstream_timeout_ms),
	 .min = 1, .max = MS_HOUR, .def = "5s"},
	{.name = "max_connections", .type = KT_U32, .off = LIM(max_connections), .min = 1,
	 .max = 1000000, .def = "20000"},
	{.name = "max_inflight", .type = KT_U32, .off = LIM(max_inflight), .min = 1,
	 .max = 1000000, .def = "4096"},
	{.name = "drain_timeout", .type = KT_DURATION, .off = LIM(drain_timeout_ms),
	 .max = MS_HOUR, .def = "10s"},
	{0},
};

static const struct key health_keys[] = {
	{.name = "enabled", .type = KT_BOOL, .off = HLT(enabled), .def = "true"},
	{.name = "path", .type = KT_STR, .off = HLT(path), .max = 1024,
	 .def = "/v2/health/ready", .check = check_http_path},
	{.name = "interval", .type = KT_DURATION, .off = HLT(interval_ms), .min = 10,
	 .max = MS_HOUR, .def = "2s"},
	{.name = "timeout", .type = KT_DURATION, .off = HLT(timeout_ms), .min = 1,
	 .max = MS_HOUR, .def = "1s"},
	{.name = "healthy_threshold", .type = KT_U32, .off = HLT(healthy_threshold), .min = 1,
	 .max = 100, .def = "2"},
	{.name = "unhealthy_threshold", .type = KT_U32, .off = HLT(unhealthy_threshold),
	 .min = 1, .max = 100, .def = "3"},
	{0},
};

static const struct key tls_keys[] = {
	{.name = "cert", .type = KT_STR, .off = offsetof(struct config_tls, cert),
	 .flags = KEY_NULLABLE},
	{.name = "key", .type = KT_STR, .off = offsetof(struct config_tls, key),
	 .flags = KEY_NULLABLE},
	{0},
};

static const struct key upstream_tls_keys[] = {
	{.name = "ca", .type = KT_STR, .off = offsetof(struct config_upstream_tls, ca),
	 .flags = KEY_NULLABLE},
	{.name = "verify", .type = KT_BOOL, .off = offsetof(struct config_upstream_tls, verify),
	 .def = "true"},
	{0},
};

static const struct key variant_keys[] = {
	{.name = "endpoints", .type = KT_ENDPOINTS,
	 .off = offsetof(struct config_variant, endpoints),
	 .off2 = offsetof(struct config_variant, n_endpoints), .max = CONFIG_MAX_ENDPOINTS,
	 .flags = KEY_REQUIRED},
	{0},
};

/* The top level. Sections with .off = 0 (admin, canary) write struct config directly. */
static const struct key root_keys[] = {
	{.name = "listen", .type = KT_HOSTPORT, .off = CFG(listen_host),
	 .off2 = CFG(listen_port), .def = "0.0.0.0:8080"},
	{.name = "workers", .type = KT_WORKERS, .off = CFG(workers), .min = 1, .max = 1024,
	 .def = "auto"},
	{.name = "admin", .type = KT_SECTION, .sub = admin_keys, .flags = KEY_NULLABLE},
	{.name = "state_file", .type = KT_STR, .off = CFG(state_file), .flags = KEY_NULLABLE},
	{.name = "variants", .type = KT_VARIANTS, .sub = variant_keys,
	 .max = CONFIG_MAX_VARIANTS, .flags = KEY_REQUIRED},
	{.name = "strategy", .type = KT_ENUM, .off = CFG(strategy), .names = strategy_names,
	 .flags = KEY_REQUIRED},
	/* .off of a variant reference is its slot in ctx.ref[]: 0 stable, 1 candidate. */
	{.name = "stable", .type = KT_VARREF, .off = 0, .flags = KEY_REQUIRED},
	{.name = "candidate", .type = KT_VARREF, .off = 1, .flags = KEY_NULLABLE},
	{.name = "canary", .type = KT_SECTION, .sub = canary_keys, .flags = KEY_NULLABLE},
	{.name = "shadow", .type = KT_SECTION, .off = CFG(shadow), .sub = shadow_keys,
	 .flags = KEY_NULLABLE},
	{.name = "override_header", .type = KT_STR, .off = CFG(override_header),
	 .def = "X-Turnout-Variant", .flags = KEY_NULLABLE, .check = check_token},
	{.name = "limits", .type = KT_SECTION, .off = CFG(limits), .sub = limits_keys,
	 .flags = KEY_NULLABLE},
	{.name = "health", .type = KT_SECTION, .off = CFG(health), .sub = health_keys,
	 .flags = KEY_NULLABLE},
	{.name = "tls", .type = KT_SECTION, .off = CFG(tls), .sub = tls_keys,
	 .flags = KEY_NULLABLE},
	{.name = "upstream_tls", .type = KT_SECTION, .off = CFG(upstream_tls),
	 .sub = upstream_tls_keys, .flags = KEY_NULLABLE},
	{.name = "upstream_client", .type = KT_ENUM, .off = CFG(upstream_client),
	 .names = upstream_client_names, .def = "builtin"},
	{.name = "access_log", .type = KT_ACCESS_LOG, .def = "off"},
	{.name = "log_level", .type = KT_ENUM_STR, .off = CFG(log_level), .names = level_names,
	 .def = "info"},
	{0},
};
/* clang-format on */

/* ---------------------------------------------------------------- parsing */

static void parse_section(struct ctx *c, yaml_node_t *map, const yaml_mark_t *where,
                          const struct key *table, char *base);

/*
 * Apply every row's default (recursing into sections). A default is parsed
 * like a written value, so it can only fail for lack of memory (or a wrong
 * table, which test_defaults catches).
 */
static void apply_defaults(struct ctx *c, const struct key *table, char *base)
{
	char why[256];
	for (const struct key *k = table; k->name; k++) {
		if (k->type == KT_SECTION)
			apply_defaults(c, k->sub, base + k->off);
		else if (k->def && set_scalar(c, k, base, NULL, k->def, strlen(k->def), 0, why,
		                              sizeof(why)) != 0)
			error_at(c, NULL, "default of %s: %s", k->name, why);
	}
}

static void parse_scalar_value(struct ctx *c, const struct key *k, char *base, yaml_node_t *v)
{
	static const char *const expect[] = {
	    [KT_STR] = "a string",
	    [KT_HOSTPORT] = "host:port",
	    [KT_WORKERS] = "\"auto\" or a number",
	    [KT_U32] = "a number",
	    [KT_SIZE] = "a size such as 16MiB",
	    [KT_DURATION] = "a duration such as 5s",
	    [KT_PERCENT] = "a percent such as 12.5",
	    [KT_BOOL] = "true or false",
	    [KT_DOUBLE] = "a number",
	    [KT_ENUM] = "a name",
	    [KT_ENUM_STR] = "a name",
	    [KT_STICKY] = "none, ip, header:NAME or cookie:NAME",
	    [KT_ACCESS_LOG] = "off, stderr or a file path",
	    [KT_VARREF] = "a variant name",
	};
	char why[384], q[72];

	if (v->type != YAML_SCALAR_NODE) {
		error_at(c, v, "expected %s, got %s", expect[k->type], node_kind(v));
		return;
	}
	if (set_scalar(c, k, base, v, sval(v), slen(v), is_null(v), why, sizeof(why)) == 0)
		return;
	if (is_null(v) || slen(v) == 0)
		error_at(c, v, "%s", why);
	else if (strncmp(why, "is ", 3) == 0)
		error_at(c, v, "\"%s\" %s", printable(sval(v), slen(v), q, sizeof(q)), why);
	else
		error_at(c, v, "\"%s\": %s", printable(sval(v), slen(v), q, sizeof(q)), why);
}

/* A sequence of scalars: each passed to item(); n limited to k->max. Returns the count or -1. */
static int seq_check(struct ctx *c, const struct key *k, yaml_node_t *v, int allow_empty)
{
	if (v->type != YAML_SEQUENCE_NODE) {
		error_at(c, v, "expected a sequence, got %s", node_kind(v));
		return -1;
	}
	size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
	if (n > k->max) {
		error_at(c, v, "has %zu entries, at most %" PRIu64, n, k->max);
		return -1;
	}
	if (n == 0 && !allow_empty) {
		error_at(c, v, "must not be empty");
		return -1;
	}
	return (int)n;
}

static yaml_node_t *seq_item(struct ctx *c, yaml_node_t *seq, size_t i)
{
	return node(c, seq->data.sequence.items.start[i]);
}

static void parse_uids(struct ctx *c, const struct key *k, char *base, yaml_node_t *v)
{
	int n = seq_check(c, k, v, 1);
	if (n <= 0)
		return;
	uid_t *uids = calloc((size_t)n, sizeof(*uids));
	if (uids == NULL) {
		error_at(c, v, "out of memory");
		return;
	}
	free(*(uid_t **)(base + k->off));
	*(uid_t **)(base + k->off) = uids;
	size_t *count = (size_t *)(base + k->off2);
	*count = 0;
	for (int i = 0; i < n; i++) {
		yaml_node_t *it = seq_item(c, v, (size_t)i);
		size_t saved = path_index(c, (size_t)i);
		int64_t u;
		if (it->type != YAML_SCALAR_NODE || strlen(sval(it)) != slen(it) ||
		    parse_int(sval(it), &u) != 0 || u < 0 || u >= (int64_t)UINT32_MAX)
			error_at(c, it, "expected a uid (a number from 0 to 4294967294)");
		else
			uids[(*count)++] = (uid_t)u;
		path_pop(c, saved);
	}
}

static void parse_strlist(struct ctx *c, const struct key *k, char *base, yaml_node_t *v)
{
	int n = seq_check(c, k, v, 1);
	if (n <= 0)
		return;
	char **list = calloc((size_t)n, sizeof(*list));
	if (list == NULL) {
		error_at(c, v, "out of memory");
		return;
	}
	*(char ***)(base + k->off) = list;
	size_t *count = (size_t *)(base + k->off2);
	struct key item = {.type = KT_STR, .max = CPATH_MAX, .check = k->check};
	for (int i = 0; i < n; i++) {
		yaml_node_t *it = seq_item(c, v, (size_t)i);
		size_t saved = path_index(c, (size_t)i);
		item.off = *count * sizeof(char *);
		parse_scalar_value(c, &item, (char *)list, it);
		if (list[*count] != NULL)
			(*count)++;
		path_pop(c, saved);
	}
}

static void parse_endpoints(struct ctx *c, const struct key *k, char *base, yaml_node_t *v)
{
	char why[256], q[72];
	int n = seq_check(c, k, v, 0);
	if (n <= 0)
		return;
	struct config_endpoint *eps = calloc((size_t)n, sizeof(*eps));
	if (eps == NULL) {
		error_at(c, v, "out of memory");
		return;
	}
	*(struct config_endpoint **)(base + k->off) = eps;
	size_t *count = (size_t *)(base + k->off2);
	for (int i = 0; i < n; i++) {
		yaml_node_t *it = seq_item(c, v, (size_t)i);
		size_t saved = path_index(c, (size_t)i);
		struct config_endpoint *ep = &eps[*count];
		if (it->type != YAML_SCALAR_NODE || is_null(it)) {
			error_at(c, it, "expected a URL such as http://127.0.0.1:9001, got %s",
			         node_kind(it));
		} else if (strlen(sval(it)) != slen(it)) {
			error_at(c, it, "contains a NUL byte");
		} else if (parse_endpoint(sval(it), ep, why, sizeof(why)) != 0) {
			error_at(c, it, "\"%s\": %s", printable(sval(it), slen(it), q, sizeof(q)),
			         why);
			free(ep->host);
			free(ep->url);
			memset(ep, 0, sizeof(*ep));
		} else {
			for (size_t j = 0; j < *count; j++) {
				if (strcmp(eps[j].url, ep->url) == 0) {
					error_at(c, it, "\"%s\" is listed twice", ep->url);
					break;
				}
			}
			(*count)++;
		}
		path_pop(c, saved);
	}
}

static void parse_rules(struct ctx *c, const struct key *k, char *base, yaml_node_t *v)
{
	int n = seq_check(c, k, v, 1);
	if (n <= 0)
		return;
	struct config_compare_rule *rules = calloc((size_t)n, sizeof(*rules));
	if (rules == NULL) {
		error_at(c, v, "out of memory");
		return;
	}
	*(struct config_compare_rule **)(base + k->off) = rules;
	size_t *count = (size_t *)(base + k->off2);
	for (int i = 0; i < n; i++) {
		yaml_node_t *it = seq_item(c, v, (size_t)i);
		struct config_compare_rule *r = &rules[i];
		size_t saved = path_index(c, (size_t)i);
		*count = (size_t)i + 1;
		apply_defaults(c, k->sub, (char *)r);
		parse_section(c, it, &it->start_mark, k->sub, (char *)r);
		if (r->mode != CONFIG_COMPARE_NUMERIC &&
		    (r->abs_tolerance != 0 || r->rel_tolerance != 0)) {
			yaml_node_t *t = find_value(c, it, "tolerance");
			size_t s2 = path_key(c, t ? "tolerance" : "rel_tolerance", t ? 9 : 13);
			error_at(c, t ? t : find_value(c, it, "rel_tolerance"),
			         "a tolerance applies only to mode numeric");
			path_pop(c, s2);
		}
		path_pop(c, saved);
	}
}

static void parse_variants(struct ctx *c, const struct key *k, yaml_node_t *v)
{
	struct config *cfg = c->cfg;
	char why[128], q[72];

	if (v->type != YAML_MAPPING_NODE) {
		error_at(c, v, "expected a mapping of variant names, got %s", node_kind(v));
		return;
	}
	size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
	if (n == 0) {
		error_at(c, v, "at least one variant is needed");
		return;
	}
	if (n > k->max) {
		error_at(c, v, "%zu variants, at most %" PRIu64, n, k->max);
		return;
	}
	cfg->variants = calloc(n, sizeof(*cfg->variants));
	if (cfg->variants == NULL) {
		error_at(c, v, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		yaml_node_pair_t *p = &v->data.mapping.pairs.start[i];
		yaml_node_t *kn = node(c, p->key), *vn = node(c, p->value);
		if (kn->type != YAML_SCALAR_NODE) {
			error_at(c, kn, "a variant name must be a string, got %s", node_kind(kn));
			continue;
		}
		size_t saved = path_key(c, sval(kn), slen(kn));
		if (check_variant_name(sval(kn), slen(kn), why, sizeof(why)) != 0) {
			error_at(c, kn, "\"%s\": %s", printable(sval(kn), slen(kn), q, sizeof(q)),
			         why);
		} else if (config_variant_index(cfg, sval(kn)) >= 0) {
			error_at(c, kn, "variant defined twice");
		} else {
			struct config_variant *var = &cfg->variants[cfg->n_variants++];
			var->name = dup_str(c, sval(kn), slen(kn));
			parse_section(c, vn, &vn->start_mark, k->sub, (char *)var);
		}
		path_pop(c, saved);
	}
}

static void parse_value(struct ctx *c, const struct key *k, char *base, yaml_node_t *v)
{
	switch (k->type) {
	case KT_SECTION:
		if (is_null(v) && (k->flags & KEY_NULLABLE))
			return;
		parse_section(c, v, &v->start_mark, k->sub, base + k->off);
		return;
	case KT_VARIANTS:
		parse_variants(c, k, v);
		return;
	case KT_ENDPOINTS:
		parse_endpoints(c, k, base, v);
		return;
	case KT_RULES:
		if (!is_null(v))
			parse_rules(c, k, base, v);
		return;
	case KT_UIDS:
		if (!is_null(v))
			parse_uids(c, k, base, v);
		return;
	case KT_STRLIST:
		if (!is_null(v))
			parse_strlist(c, k, base, v);
		return;
	default:
		parse_scalar_value(c, k, base, v);
	}
}

/*
 * Parse mapping map (NULL = an empty document) against table into base:
 * unknown and duplicate keys, then each value, then the missing required
 * keys, reported at where (the mapping's start).
 */
static void parse_section(struct ctx *c, yaml_node_t *map, const yaml_mark_t *where,
                          const struct key *table, char *base)
{
	const yaml_node_t *seen[32] = {0};
	size_t nrows = 0;
	while (table[nrows].name)
		nrows++;
	if (nrows > sizeof(seen) / sizeof(seen[0]))
		abort(); /* a table grew past seen[]: make seen[] larger */

	if (map != NULL && map->type != YAML_MAPPING_NODE) {
		error_at(c, map, "expected a mapping, got %s", node_kind(map));
		return;
	}
	for (yaml_node_pair_t *p = map ? map->data.mapping.pairs.start : NULL;
	     map && p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *kn = node(c, p->key), *vn = node(c, p->value);
		if (kn->type != YAML_SCALAR_NODE) {
			error_at(c, kn, "a key must be a string, got %s", node_kind(kn));
			continue;
		}
		size_t saved = path_key(c, sval(kn), slen(kn)), i;
		for (i = 0; i < nrows; i++)
			if (strlen(table[i].name) == slen(kn) &&
			    memcmp(table[i].name, sval(kn), slen(kn)) == 0)
				break;
		if (i == nrows) {
			error_at(c, kn, "unknown key");
		} else if (seen[i]) {
			error_at(c, kn, "duplicate key (first at line %zu, column %zu)",
			         seen[i]->start_mark.line + 1, seen[i]->start_mark.column + 1);
		} else {
			seen[i] = kn;
			parse_value(c, &table[i], base, vn);
		}
		path_pop(c, saved);
	}
	for (size_t i = 0; i < nrows; i++) {
		if (!(table[i].flags & KEY_REQUIRED) || seen[i])
			continue;
		size_t saved = path_key(c, table[i].name, strlen(table[i].name));
		error_mark(c, where, "missing required key");
		path_pop(c, saved);
	}
}

/* ---------------------------------------------------------------- cross-field rules */

/* "a, b, c": the defined variant names, for "no variant named x" messages. */
static const char *variant_list(const struct config *cfg, char *out, size_t n)
{
	size_t used = 0;
	out[0] = 0;
	for (size_t i = 0; i < cfg->n_variants && used < n; i++)
		used += (size_t)snprintf(out + used, n - used, "%s%s", i ? ", " : "",
		                         cfg->variants[i].name ? cfg->variants[i].name : "?");
	return out;
}

static ssize_t resolve_ref(struct ctx *c, int which)
{
	yaml_node_t *v = c->ref[which];
	char names[256], q[72];
	ssize_t idx = config_variant_index(c->cfg, sval(v));
	if (idx < 0) {
		size_t saved = path_key(c, which ? "candidate" : "stable", which ? 9 : 6);
		error_at(c, v, "no variant named \"%s\" (defined: %s)",
		         printable(sval(v), slen(v), q, sizeof(q)),
		         variant_list(c->cfg, names, sizeof(names)));
		path_pop(c, saved);
	}
	return idx;
}

static void error_key(struct ctx *c, yaml_node_t *at, const char *path, const char *fmt,
                      const char *arg)
{
	size_t saved = path_key(c, path, strlen(path));
	error_at(c, at, fmt, arg);
	path_pop(c, saved);
}

static int is_wildcard(const char *host)
{
	return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

/* Rules that involve more than one key, once everything is parsed. */
static void check_config(struct ctx *c, yaml_node_t *root)
{
	struct config *cfg = c->cfg;
	ssize_t stable = -1;

	if (c->ref[0] && (stable = resolve_ref(c, 0)) >= 0)
		cfg->stable = (size_t)stable;
	if (c->ref[1]) {
		ssize_t cand = resolve_ref(c, 1);
		if (cand >= 0 && cand == stable)
			error_key(c, c->ref[1], "candidate", "the same variant as stable%s", "");
		else
			cfg->candidate = cand;
	} else if (cfg->strategy != CONFIG_STRATEGY_BLUEGREEN && find_value(c, root, "strategy")) {
		error_key(c, find_value(c, root, "strategy"), "candidate",
		          "missing, strategy %s needs a candidate variant",
		          config_strategy_name(cfg->strategy));
	}
	yaml_node_t *shadow = find_value(c, root, "shadow");
	if (cfg->shadow.percent_bp > 0 && c->ref[1] == NULL)
		error_key(c, find_value(c, shadow, "percent"), "shadow.percent",
		          "mirrors to the candidate, but no candidate is set%s", "");
	if (cfg->shadow.timeout_ms == 0)
		cfg->shadow.timeout_ms = cfg->limits.upstream_timeout_ms;
	if ((cfg->tls.cert == NULL) != (cfg->tls.key == NULL))
		error_key(c, find_value(c, root, "tls"), "tls",
		          "cert and key go together; %s is missing",
		          cfg->tls.cert ? "key" : "cert");
	if (cfg->health.timeout_ms > cfg->health.interval_ms) {
		char a[32], b[32];
		size_t saved = path_key(c, "health.timeout", 14);
		error_at(c, find_value(c, find_value(c, root, "health"), "timeout"),
		         "%s is longer than health.interval (%s)",
		         fmt_ms(cfg->health.timeout_ms, a, sizeof(a)),
		         fmt_ms(cfg->health.interval_ms, b, sizeof(b)));
		path_pop(c, saved);
	}
	if (cfg->admin_http_host && cfg->admin_http_port == cfg->listen_port &&
	    (strcmp(cfg->admin_http_host, cfg->listen_host) == 0 || is_wildcard(cfg->listen_host) ||
	     is_wildcard(cfg->admin_http_host)))
		error_key(c, find_value(c, find_value(c, root, "admin"), "http"), "admin.http",
		          "is the same address as listen%s", "");
}

/* ---------------------------------------------------------------- the two passes */

static void syntax_error(struct ctx *c, yaml_parser_t *p)
{
	yaml_mark_t m = p->problem_mark;
	/* libyaml's loader fails some allocations without setting an error. */
	if (p->error == YAML_MEMORY_ERROR || p->error == YAML_NO_ERROR) {
		error_at(c, NULL, "out of memory");
		return;
	}
	if (p->error == YAML_READER_ERROR) {
		/* Reader errors carry a byte offset, not a line: count it out. */
		m.line = m.column = 0;
		for (size_t i = 0; i < p->problem_offset && i < c->len; i++) {
			if (c->buf[i] == '\n')
				m.line++, m.column = 0;
			else
				m.column++;
		}
	}
	const char *what = p->problem ? p->problem : "unknown error";
	if (p->context)
		error_mark(c, &m, "YAML syntax error: %s %s started at line %zu, column %zu", what,
		           p->context, p->context_mark.line + 1, p->context_mark.column + 1);
	else
		error_mark(c, &m, "YAML syntax error: %s", what);
}

static int event_has_anchor_or_tag(struct ctx *c, yaml_event_t *ev)
{
	yaml_char_t *anchor = NULL, *tag = NULL;
	int implicit = 1;
	if (ev->type == YAML_SCALAR_EVENT) {
		anchor = ev->data.scalar.anchor;
		tag = ev->data.scalar.tag;
		implicit = ev->data.scalar.plain_implicit || ev->data.scalar.quoted_implicit;
	} else if (ev->type == YAML_SEQUENCE_START_EVENT) {
		anchor = ev->data.sequence_start.anchor;
		tag = ev->data.sequence_start.tag;
		implicit = ev->data.sequence_start.implicit;
	} else if (ev->type == YAML_MAPPING_START_EVENT) {
		anchor = ev->data.mapping_start.anchor;
		tag = ev->data.mapping_start.tag;
		implicit = ev->data.mapping_start.implicit;
	}
	char q[72];
	if (anchor) {
		error_mark(c, &ev->start_mark, "anchors (&%s) are not allowed in a config",
		           printable((char *)anchor, strlen((char *)anchor), q, sizeof(q)));
		return 1;
	}
	if (tag && !implicit) {
		error_mark(c, &ev->start_mark, "tags (%s) are not allowed in a config",
		           printable((char *)tag, strlen((char *)tag), q, sizeof(q)));
		return 1;
	}
	return 0;
}

/* Where the event walk stands. */
struct walk {
	int depth, docs;
	int bad;  /* an error was reported: do not load the document */
	int done; /* stop walking */
};

static void on_event(struct ctx *c, yaml_event_t *ev, struct walk *w)
{
	char q[72];
	switch (ev->type) {
	case YAML_ALIAS_EVENT:
		error_mark(c, &ev->start_mark, "aliases (*%s) are not allowed in a config",
		           printable((char *)ev->data.alias.anchor,
		                     strlen((char *)ev->data.alias.anchor), q, sizeof(q)));
		w->bad = 1;
		break;
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT:
		if (++w->depth > MAX_DEPTH) {
			error_mark(c, &ev->start_mark, "nested deeper than %d levels", MAX_DEPTH);
			w->bad = w->done = 1;
		}
		w->bad |= event_has_anchor_or_tag(c, ev);
		break;
	case YAML_SCALAR_EVENT:
		w->bad |= event_has_anchor_or_tag(c, ev);
		break;
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		w->depth--;
		break;
	case YAML_DOCUMENT_START_EVENT:
		if (++w->docs > 1) {
			error_mark(c, &ev->start_mark, "only one YAML document is allowed");
			w->bad = w->done = 1;
		}
		break;
	case YAML_STREAM_END_EVENT:
		w->done = 1;
		break;
	default:
		break;
	}
}

/*
 * Walk the events once, before the document is built: refuse what could
 * expand (aliases), confuse (anchors, tags, several documents) or exhaust
 * (deep nesting, too many nodes). Returns 0 when the document may be loaded.
 */
static int prepass(struct ctx *c)
{
	yaml_parser_t p;
	yaml_event_t ev;
	struct walk w = {0};
	size_t events = 0;

	if (!yaml_parser_initialize(&p)) {
		error_at(c, NULL, "out of memory");
		return -1;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)c->buf, c->len);
	while (!w.done) {
		if (!yaml_parser_parse(&p, &ev)) {
			syntax_error(c, &p);
			w.bad = 1;
			break;
		}
		on_event(c, &ev, &w);
		yaml_event_delete(&ev);
		if (++events > MAX_EVENTS && !w.done) {
			error_at(c, NULL, "more than %d YAML nodes", MAX_EVENTS);
			w.bad = w.done = 1;
		}
	}
	yaml_parser_delete(&p);
	return w.bad ? -1 : 0;
}

/* Load the one document and fill c->cfg from it; errors are collected in c. */
static void load_document(struct ctx *c)
{
	yaml_parser_t p;
	yaml_document_t doc;
	static const yaml_mark_t top = {0, 0, 0};

	if (!yaml_parser_initialize(&p)) {
		error_at(c, NULL, "out of memory");
		return;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)c->buf, c->len);
	if (!yaml_parser_load(&p, &doc)) {
		syntax_error(c, &p);
		yaml_parser_delete(&p);
		return;
	}
	c->doc = &doc;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root && is_null(root))
		root = NULL;
	if (root && root->type != YAML_MAPPING_NODE)
		error_at(c, root, "the top level must be a mapping of keys, got %s",
		         node_kind(root));
	else
		parse_section(c, root, root ? &root->start_mark : &top, root_keys, (char *)c->cfg);
	check_config(c, root);
	c->doc = NULL;
	yaml_document_delete(&doc);
	yaml_parser_delete(&p);
}

static int hash_hex(const char *buf, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
		ERR_clear_error(); /* leave no stale error for the thread's next TLS call */
		return -1;
	}
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* ---------------------------------------------------------------- public */

/*
 * Parse buf (len bytes, not necessarily NUL-terminated; NULL = empty) as the
 * config named name. Returns a config the caller frees with config_free(), or
 * NULL with every error in err (lines joined by '\n', always NUL-terminated when
 * errlen > 0). buf and name are not kept.
 */
struct config *config_load_buffer(const char *name, const char *buf, size_t len, char *err,
                                  size_t errlen)
{
	struct ctx c = {.name = name, .buf = buf, .len = len, .err = err, .errlen = errlen};
	struct config *cfg = NULL;

	if (err && errlen)
		err[0] = 0;
	if (buf == NULL)
		buf = "", len = 0;
	if (len > CONFIG_FILE_MAX) {
		error_at(&c, NULL, "the file is larger than %u bytes", CONFIG_FILE_MAX);
		goto fail;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL || (cfg->file = strdup(name)) == NULL) {
		error_at(&c, NULL, "out of memory");
		goto fail;
	}
	if (hash_hex(buf, len, cfg->hash_hex) != 0) {
		error_at(&c, NULL, "cannot compute the sha256 (out of memory)");
		goto fail;
	}
	c.cfg = cfg;
	cfg->candidate = -1;
	apply_defaults(&c, root_keys, (char *)cfg);
	if (prepass(&c) != 0)
		goto fail;
	load_document(&c);
	if (c.n_err > 0)
		goto fail;
	return cfg;
fail:
	errors_finish(&c);
	config_free(cfg);
	return NULL;
}

/*
 * Read path (a regular file of at most CONFIG_FILE_MAX bytes) and load it as
 * config_load_buffer() does; cfg->file is a copy of path. Caller frees the
 * result with config_free(); NULL with err filled on any failure.
 */
struct config *config_load(const char *path, char *err, size_t errlen)
{
	struct config *cfg = NULL;
	char *buf = NULL;
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		goto out;
	}
	buf = malloc(CONFIG_FILE_MAX + 1);
	if (buf == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf + len, CONFIG_FILE_MAX + 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0 || (len += (size_t)r) > CONFIG_FILE_MAX)
			break;
	}
	cfg = config_load_buffer(path, buf, len, err, errlen);
out:
	free(buf);
	close(fd);
	return cfg;
}

/* Free cfg and every string and array it owns. Accepts NULL. */
void config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	free(cfg->file);
	free(cfg->listen_host);
	free(cfg->admin_socket);
	free(cfg->admin_http_host);
	free(cfg->admin_group);
	free(cfg->admin_allow_uids);
	free(cfg->admin_audit_log);
	free(cfg->state_file);
	for (size_t i = 0; i < cfg->n_variants; i++) {
		struct config_variant *v = &cfg->variants[i];
		for (size_t j = 0; j < v->n_endpoints; j++) {
			free(v->endpoints[j].url);
			free(v->endpoints[j].host);
		}
		free(v->endpoints);
		free(v->name);
	}
	free(cfg->variants);
	free(cfg->sticky_name);
	free(cfg->salt);
	for (size_t i = 0; i < cfg->shadow.n_rules; i++)
		free(cfg->shadow.rules[i].path);
	free(cfg->shadow.rules);
	for (size_t i = 0; i < cfg->shadow.n_ignore; i++)
		free(cfg->shadow.ignore[i]);
	free(cfg->shadow.ignore);
	free(cfg->shadow.log_path);
	free(cfg->override_header);
	free(cfg->health.path);
	free(cfg->tls.cert);
	free(cfg->tls.key);
	free(cfg->upstream_tls.ca);
	free(cfg->access_log);
	free(cfg->log_level);
	free(cfg);
}

/* Index of the variant called name in cfg->variants, or -1. */
ssize_t config_variant_index(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_variants; i++)
		if (cfg->variants[i].name && strcmp(cfg->variants[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

/* Static name of a strategy, as written in the config. */
const char *config_strategy_name(enum config_strategy s)
{
	switch (s) {
	case CONFIG_STRATEGY_SHADOW:
		return "shadow";
	case CONFIG_STRATEGY_CANARY:
		return "canary";
	case CONFIG_STRATEGY_BLUEGREEN:
		return "bluegreen";
	}
	return "unknown";
}
