/*
 * config.c - placeholder until the YAML loader lands.
 */
#include "config.h"

#include <stdio.h>

struct config *config_load(const char *path, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: the config loader is not built yet", path);
	return NULL;
}
