/*
 * route.h - routing decisions: which variant serves a request, which endpoint.
 *
 * The routing state is an immutable, reference-counted snapshot built by the
 * main thread from a struct config and a struct route_params (the config's
 * routing settings with operator overrides applied). The main thread publishes
 * a new snapshot with one atomic pointer store (route_publish); a request takes
 * the current one once on arrival (route_acquire) and releases it when it is
 * answered (route_release), so a switch is atomic and a reload loses nothing.
 *
 * The only mutable parts of a snapshot are the per-endpoint "healthy" flags
 * (written by health checks, atomically) and the round-robin cursors.
 */
#ifndef TURNOUT_ROUTE_H
#define TURNOUT_ROUTE_H

#include <stdatomic.h>
#include <stddef.h>
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

#define ROUTE_BUCKETS 10000u

/* A config shared by several snapshots; frees the config with the last reference. */
struct route_config;

struct route_endpoint {
	const struct config_endpoint *cfg; /* url, host, port, tls (owned by the config) */
	atomic_int healthy;                /* 1 = may take traffic; defaults to 1 */
	/* resilience: consecutive live failures (connect or 5xx), bumped by workers
	 * (health_passive_report), zero after any other answer; starts at 0. */
	atomic_uint fails;
};

struct route_variant {
	const char *name; /* owned by the config */
	int stats_slot;   /* stats.h slot for this variant name */
	struct route_endpoint *endpoints;
	size_t n_endpoints;
	atomic_uint rr; /* round-robin cursor, relaxed atomics */
};

struct route_snapshot {
	atomic_int refs;
	uint64_t generation;
	struct route_config *rc;
	const struct config *cfg; /* == the config inside rc, for reading */
	struct route_params params;
	struct route_variant *variants; /* cfg->n_variants entries, same order */
	size_t n_variants;
};

/*
 * Wrap cfg in a refcounted holder (one reference, owned by the caller).
 * Ownership of cfg passes to the holder: it is freed with config_free when the
 * last reference goes. Returns NULL on allocation failure (cfg is then freed).
 */
struct route_config *route_config_new(struct config *cfg);
void route_config_ref(struct route_config *rc);
/* Drop one reference; accepts NULL. */
void route_config_unref(struct route_config *rc);
const struct config *route_config_get(const struct route_config *rc);

/* The routing settings a config asks for, before any operator override. */
struct route_params route_params_from_config(const struct config *cfg);

/*
 * Build a snapshot from rc's config and params (checked against the config:
 * indices in range, candidate != stable). Takes its own reference on rc.
 * Endpoint health is copied from prev when prev has an endpoint with the same
 * variant name and url (prev may be NULL: everything starts healthy).
 * Returns a snapshot with one reference (the caller's), or NULL with a reason
 * in err. Main thread only (it registers stats slots).
 */
struct route_snapshot *route_snapshot_new(struct route_config *rc, const struct route_params *p,
                                          uint64_t generation, const struct route_snapshot *prev,
                                          char *err, size_t errlen);
void route_snapshot_ref(struct route_snapshot *s);
/* Drop one reference; frees at zero. Accepts NULL. Any thread. */
void route_snapshot_unref(struct route_snapshot *s);

/*
 * Make s the current snapshot. Takes over the caller's reference to s; the
 * previous current snapshot's publication reference is dropped once no reader
 * can still be taking it. Main thread only.
 */
void route_publish(struct route_snapshot *s);

/*
 * The current snapshot with a new reference (release with route_release), or
 * NULL if none was published. Any thread; lock-free.
 */
struct route_snapshot *route_acquire(void);
void route_release(struct route_snapshot *s);

/* Unpublish and drop the current snapshot (at exit). Main thread only. */
void route_shutdown(void);

/* The generation of the current snapshot, 0 if none. */
uint64_t route_current_generation(void);

/*
 * Canary bucket 0..9999 of a sticky key under a salt: the first 8 bytes of
 * SHA-256(salt || 0x00 || key), big-endian, modulo 10000. Stable across runs,
 * machines and replicas.
 */
uint32_t route_bucket(const char *salt, const char *key, size_t keylen);

/* A uniform random bucket 0..9999 (per-thread generator seeded from the OS). */
uint32_t route_random_bucket(void);

/*
 * The value of cookie name in a Cookie header ("a=1; b=2"). Returns a pointer
 * into header and sets *len, or NULL if absent.
 */
const char *route_cookie_value(const char *header, const char *name, size_t *len);

/*
 * Which variant serves live traffic for a canary bucket under params: the
 * candidate if the strategy is canary and bucket < canary_bp, else stable.
 */
size_t route_variant_for_bucket(const struct route_params *p, uint32_t bucket);

enum route_pick_result {
	ROUTE_PICK_OK,
	ROUTE_PICK_UNKNOWN_OVERRIDE, /* override names no variant: answer 400 */
	ROUTE_PICK_NO_HEALTHY,       /* chosen variant (and stable) have no healthy endpoint: 503 */
};

/*
 * Choose the live variant for a request. bucket is the canary bucket
 * (route_bucket or route_random_bucket). override is the override header's
 * value or NULL. A candidate with no healthy endpoint gives its share to
 * stable. Sets *variant (also on NO_HEALTHY, naming the variant that had no
 * endpoint) and returns the result.
 */
enum route_pick_result route_pick(const struct route_snapshot *s, uint32_t bucket,
                                  const char *override, size_t *variant);

/* Index of a healthy endpoint of variant v, round-robin; -1 if none is healthy. */
ssize_t route_endpoint_pick(struct route_snapshot *s, size_t v);

/* Whether variant v has at least one healthy endpoint. */
int route_variant_healthy(const struct route_snapshot *s, size_t v);

/* Set an endpoint's health flag (health checker; main thread). */
void route_set_healthy(struct route_snapshot *s, size_t v, size_t e, int healthy);

#endif
