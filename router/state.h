/*
 * state.h - persisted runtime overrides: what operators changed with turnoutctl.
 *
 * The YAML file is the source of truth for routing; an operator may override
 * it at run time (switch the stable variant, set the canary or shadow percent,
 * roll back). Those overrides live in a struct turnout_state, are saved to
 * state_file atomically after every change and loaded at start, so a crash or
 * a restart never silently undoes an operator's decision. Every override is
 * tied to the hash of the config it was made against: a config whose content
 * changed lifts them all (the file is the source of truth again), an unchanged
 * one keeps them.
 *
 * Variants are stored by name, not index, so that a state file stays
 * meaningful even if the variant list is reordered.
 */
#ifndef TURNOUT_STATE_H
#define TURNOUT_STATE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "route.h"

#define STATE_NAME_MAX 128         /* variant name, with its NUL */
#define STATE_FILE_MAX (64 * 1024) /* a state file larger than this is corrupt */

/* Which overrides are in force (bits of turnout_state.flags). */
enum state_flag {
	STATE_F_STABLE = 1u << 0, /* stable and candidate set by switch / promote */
	STATE_F_CANARY = 1u << 1, /* canary_bp set by `canary PERCENT` */
	STATE_F_SHADOW = 1u << 2, /* shadow_bp set by `shadow PERCENT` */
	/* rollback in force: stable, candidate, canary_bp and shadow_bp are the
	 * last known-good routing it rolled back to; it holds until `resume` or a
	 * changed config. */
	STATE_F_ROLLBACK = 1u << 3,
};

/* The runtime overrides. Plain data: copy it by assignment. */
struct turnout_state {
	unsigned flags;              /* STATE_F_* bits; 0 = the config rules alone */
	char config_hash[65];        /* sha256 hex of the config the overrides were made against */
	char stable[STATE_NAME_MAX]; /* with STATE_F_STABLE or STATE_F_ROLLBACK */
	char candidate[STATE_NAME_MAX]; /* "" = none */
	uint32_t canary_bp;             /* with STATE_F_CANARY or STATE_F_ROLLBACK */
	uint32_t shadow_bp;             /* with STATE_F_SHADOW or STATE_F_ROLLBACK */
	/* the live stable before the last switch or promote: where a later
	 * rollback returns to ("" = unknown) */
	char prev_stable[STATE_NAME_MAX];
	int64_t changed_at; /* unix seconds of the last change, 0 = never */
};

/* Reset to "no overrides". */
void state_clear(struct turnout_state *st);

/*
 * Apply st to the routing that cfg gives, writing the effective routing to
 * *out. out is always filled from cfg first; then, when st holds overrides
 * made against this very config (same hash), they replace the matching
 * fields. Pure: no I/O, no globals.
 * Returns 1 when overrides were applied, 0 when none apply (st NULL or empty,
 * or made against another config: the caller should clear and save the state,
 * since a changed config lifts them), -1 when st names a variant that cfg does
 * not have or is otherwise inconsistent with it (out holds cfg's routing).
 */
int state_apply(const struct turnout_state *st, const struct config *cfg, struct route_params *out);

/*
 * Write st to path atomically: a temp file in the same directory, fsync,
 * rename over path, fsync the directory. Returns 0, or -1 with the reason
 * (naming the file) in err; on failure the old file is left as it was.
 */
int state_save(const struct turnout_state *st, const char *path, char *err, size_t errlen);

/*
 * Load path into *st. Returns 0 when loaded, 1 when there is no such file
 * (*st cleared: a fresh start), -1 when the file could not be read or was
 * corrupt: *st is cleared, a corrupt file is renamed aside to
 * "PATH.corrupt-YYYYmmddTHHMMSSZ" and err says why and where it went. Never
 * fatal for the caller: start with no overrides.
 */
int state_load(struct turnout_state *st, const char *path, char *err, size_t errlen);

/* The state as a JSON object (as saved); caller owns the reference. NULL on ENOMEM. */
json_t *state_to_json(const struct turnout_state *st);

/*
 * Fill *st from a JSON object as written by state_to_json. Returns 0, or -1
 * with what is wrong in err (*st then cleared). Unknown keys are refused.
 */
int state_from_json(struct turnout_state *st, const json_t *obj, char *err, size_t errlen);

#endif
