/*
 * fuzz_config.c - libFuzzer driver for the config loader (router/config.c).
 *
 * Feeds arbitrary bytes to config_load_buffer: whatever the input, the loader
 * must return a config or an error without crashing, leaking, hanging or
 * writing past the error buffer. A loaded config is checked for the
 * invariants its consumers rely on (indexes in range, strings present).
 * Seeds: tests/fuzz/corpus/fuzz_config/ (the example configs and broken ones).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static void check_invariants(const struct config *cfg)
{
	if (cfg->n_variants == 0 || cfg->n_variants > CONFIG_MAX_VARIANTS ||
	    cfg->stable >= cfg->n_variants || cfg->candidate >= (ssize_t)cfg->n_variants ||
	    (ssize_t)cfg->stable == cfg->candidate || cfg->listen_host == NULL ||
	    cfg->salt == NULL || cfg->log_level == NULL || cfg->health.path == NULL ||
	    cfg->canary_percent_bp > 10000 || cfg->shadow.percent_bp > 10000 ||
	    strlen(cfg->hash_hex) != 64)
		abort();
	/* The cross-field rules. */
	if ((cfg->strategy != CONFIG_STRATEGY_BLUEGREEN && cfg->candidate < 0) ||
	    (cfg->shadow.percent_bp > 0 && cfg->candidate < 0) ||
	    ((cfg->tls.cert == NULL) != (cfg->tls.key == NULL)) ||
	    cfg->health.timeout_ms > cfg->health.interval_ms || cfg->shadow.timeout_ms == 0)
		abort();
	for (size_t i = 0; i < cfg->n_variants; i++) {
		const struct config_variant *v = &cfg->variants[i];
		if (v->name == NULL || v->n_endpoints == 0 || v->n_endpoints > CONFIG_MAX_ENDPOINTS)
			abort();
		for (size_t j = 0; j < v->n_endpoints; j++)
			if (v->endpoints[j].port < 1 || v->endpoints[j].port > 65535)
				abort();
	}
	for (size_t i = 0; i < cfg->shadow.n_rules; i++)
		if (cfg->shadow.rules[i].path == NULL)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A guard byte after the buffer catches an unterminated error message. */
	char err[CONFIG_ERR_MAX + 1];
	err[CONFIG_ERR_MAX] = 0x5a;
	struct config *cfg =
	    config_load_buffer("fuzz.yaml", (const char *)data, size, err, CONFIG_ERR_MAX);
	if (err[CONFIG_ERR_MAX] != 0x5a || memchr(err, 0, CONFIG_ERR_MAX) == NULL)
		abort();
	if (cfg != NULL)
		check_invariants(cfg);
	else if (err[0] == 0)
		abort(); /* a refusal always says why */
	config_free(cfg);
	return 0;
}
