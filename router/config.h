/*
 * config.h - the router's configuration, as loaded from YAML.
 *
 * A struct config is the validated, immutable result of config_load(): every
 * field is in range, every name resolves, every cross-field rule holds. The
 * route snapshot (route.c) is built from it; nothing on the request path reads
 * YAML. The layout is public because route.c, admin.c and main.c all read it;
 * only config.c writes it.
 */
#ifndef TURNOUT_CONFIG_H
#define TURNOUT_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONFIG_ERR_MAX       8192 /* error buffer: many "file:line:col: ..." lines */
#define CONFIG_MAX_VARIANTS  16
#define CONFIG_MAX_ENDPOINTS 64         /* per variant */
#define CONFIG_MAX_RULES     32         /* shadow.compare rules */
#define CONFIG_MAX_IGNORE    32         /* shadow.ignore paths */
#define CONFIG_MAX_UIDS      64         /* admin.allow_uids */
#define CONFIG_MAX_ERRORS    50         /* errors reported per load; the rest are counted */
#define CONFIG_FILE_MAX      (1u << 20) /* a config file larger than 1 MiB is refused */

enum config_strategy {
	CONFIG_STRATEGY_SHADOW,
	CONFIG_STRATEGY_CANARY,
	CONFIG_STRATEGY_BLUEGREEN,
};

enum config_sticky {
	CONFIG_STICKY_NONE,
	CONFIG_STICKY_HEADER, /* sticky_name = header name */
	CONFIG_STICKY_COOKIE, /* sticky_name = cookie name */
	CONFIG_STICKY_IP,
};

/* The upstream HTTP client (upstream_client): router/h1client.c or libcurl for all. */
enum config_upstream_client {
	CONFIG_UPSTREAM_BUILTIN, /* default; https:// and host names still use libcurl */
	CONFIG_UPSTREAM_LIBCURL,
};

enum config_compare_mode {
	CONFIG_COMPARE_EXACT,
	CONFIG_COMPARE_NUMERIC,
	CONFIG_COMPARE_ARGMAX,
};

struct config_endpoint {
	char *url;  /* as written, e.g. "http://127.0.0.1:9001" (no trailing slash) */
	char *host; /* "127.0.0.1" */
	int port;
	int tls; /* 1 for https:// */
};

struct config_variant {
	char *name;
	struct config_endpoint *endpoints;
	size_t n_endpoints;
};

struct config_compare_rule {
	char *path; /* e.g. "outputs[name=label].data" */
	enum config_compare_mode mode;
	double abs_tolerance; /* numeric: |a-b| <= abs_tolerance ... */
	double rel_tolerance; /* ... or |a-b| <= rel_tolerance * max(|a|,|b|) */
};

struct config_health {
	char *path;                   /* default "/v2/health/ready" */
	uint32_t interval_ms;         /* default 2000 */
	uint32_t timeout_ms;          /* default 1000 */
	uint32_t healthy_threshold;   /* default 2 */
	uint32_t unhealthy_threshold; /* default 3 */
	int enabled;                  /* default 1 */
};

/* The client listener's TLS (issue 8): both or neither. */
struct config_tls {
	char *cert; /* PEM certificate chain, NULL = plain HTTP listener */
	char *key;  /* PEM private key, non-NULL exactly when cert is */
};

/* TLS towards https:// endpoints (issue 8). */
struct config_upstream_tls {
	char *ca;   /* CA bundle file, NULL = the system's default store */
	int verify; /* default 1: verify the peer's certificate and host name */
};

struct config_shadow {
	uint32_t percent_bp;   /* basis points 0..10000 (percent x 100) */
	uint32_t max_inflight; /* per worker, default 256 */
	uint32_t timeout_ms;   /* default: limits.upstream_timeout_ms */
	struct config_compare_rule *rules;
	size_t n_rules;
	char **ignore; /* top-level-or-path fields dropped before whole-body compare */
	size_t n_ignore;
	char *log_path;      /* disagreement JSONL log, NULL = off */
	size_t log_body_max; /* bytes of request body kept per line, default 4096 */
	int redact;          /* 1 = never log bodies */
};

struct config_limits {
	size_t max_body;              /* default 16 MiB */
	size_t max_header;            /* default 16 KiB */
	uint32_t client_timeout_ms;   /* default 30 s */
	uint32_t upstream_timeout_ms; /* default 5 s */
	uint32_t max_connections;     /* default 20000 */
	uint32_t max_inflight;        /* per worker, default 4096 */
	uint32_t drain_timeout_ms;    /* default 10 s */
};

struct config {
	char *file;        /* path as given */
	char hash_hex[65]; /* sha256 of the file's bytes */

	char *listen_host; /* "0.0.0.0"; an IPv6 literal without brackets ("::1") */
	int listen_port;
	int workers; /* 0 = auto (one per CPU), else 1..1024 */

	char *admin_socket;    /* NULL = no admin socket */
	char *admin_http_host; /* NULL = no admin HTTP */
	int admin_http_port;
	char *admin_group; /* NULL = socket mode 0600, else 0660 + chgrp */
	uid_t *admin_allow_uids;
	size_t n_admin_allow_uids; /* 0 = any uid that can open the socket */
	char *admin_audit_log;     /* NULL = stderr */

	char *state_file; /* NULL = runtime overrides are not persisted */

	struct config_variant *variants;
	size_t n_variants;

	enum config_strategy strategy;
	size_t stable;     /* index into variants */
	ssize_t candidate; /* index into variants, -1 = none */

	uint32_t canary_percent_bp; /* basis points 0..10000 */
	enum config_sticky sticky;
	char *sticky_name;
	char *salt; /* never NULL, default "" */

	struct config_shadow shadow;
	char *override_header; /* default "X-Turnout-Variant", NULL = disabled */
	struct config_limits limits;
	struct config_health health;
	struct config_tls tls;
	struct config_upstream_tls upstream_tls;
	enum config_upstream_client upstream_client; /* default builtin */

	char *access_log; /* NULL = off, "stderr", or a path */
	char *log_level;  /* "debug" | "info" | "warn" | "error", default "info" */
};

/*
 * Load and validate the YAML file at path. On success returns a new config
 * (caller frees with config_free). On failure returns NULL and fills err with
 * one line per error, each "FILE:LINE:COL: key.path: what is wrong" (lines
 * joined by '\n', no trailing newline); every error found is reported, up to
 * CONFIG_MAX_ERRORS and a last line counting them all. Errors with no place
 * (cannot open, too large) read "FILE: what is wrong".
 */
struct config *config_load(const char *path, char *err, size_t errlen);

/* Same, from a buffer; name is used in error messages in place of a path. */
struct config *config_load_buffer(const char *name, const char *buf, size_t len, char *err,
                                  size_t errlen);

/* Free a config and everything it owns. Accepts NULL. */
void config_free(struct config *cfg);

/* Index of the variant called name, or -1. */
ssize_t config_variant_index(const struct config *cfg, const char *name);

/* "canary", "shadow", "bluegreen". */
const char *config_strategy_name(enum config_strategy s);

/*
 * Parse a size: digits, optionally one space, then a unit: B; KiB, MiB, GiB
 * (powers of 1024); kB/KB/k, MB/M, GB/G (powers of 1000); a bare number is
 * bytes. Or a duration: digits with up to 6 decimals, then us, ms, s, m or h
 * (a bare number is seconds; microseconds round up to whole milliseconds).
 * Return 0 and set *out, or -1 with a reason in err (a NUL-terminated
 * sentence fragment such as "unknown unit \"XB\"").
 */
int config_parse_size(const char *s, size_t *out, char *err, size_t errlen);
int config_parse_duration_ms(const char *s, uint32_t *out, char *err, size_t errlen);

/*
 * Parse a percent "0".."100" with at most two decimals into basis points
 * (0..10000). Return 0, or -1 with a reason in err.
 */
int config_parse_percent_bp(const char *s, uint32_t *out, char *err, size_t errlen);

#endif
