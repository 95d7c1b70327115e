/*
 * route.h - routing decisions: which variant serves a request, which mirror.
 *
 * (Owned by the router core; this first version only fixes route_params, the
 * effective routing settings that the config gives and operator overrides
 * (state.c) may change.)
 */
#ifndef TURNOUT_ROUTE_H
#define TURNOUT_ROUTE_H

#include <stdint.h>
#include <sys/types.h>

#include "config.h"

/* The effective routing settings: config values with operator overrides applied. */
struct route_params {
	enum config_strategy strategy;
	size_t stable;      /* index into cfg->variants */
	ssize_t candidate;  /* index into cfg->variants, -1 = none */
	uint32_t canary_bp; /* basis points 0..10000 */
	uint32_t shadow_bp; /* basis points 0..10000 */
};

#endif
