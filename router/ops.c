/*
 * ops.c - operations glue (see ops.h): the admin command handlers, reload,
 * rollback, and the persisted overrides that tie them together.
 *
 * Every mutating command follows one path (commit): start from the overrides
 * in force, change them, check them against the running config
 * (state_apply), build the new snapshot, save the state file, and only then
 * publish. If any step fails nothing changes: a command is either done and
 * persisted, or refused with the reason.
 */
#include "ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "admin.h"
#include "config.h"
#include "log.h"
#include "metrics.h" /* observability: reload and rollback counters */
#include "route.h"
#include "shadow.h"
#include "state.h"
#include "stats.h"
#include "tls.h" /* resilience: reload the listener certificate too */
#include "watch.h"

struct ops {
	struct event_base *base;
	char *config_path;
	struct route_config *first; /* the config the workers started with (a reference) */
	struct stats *stats;
	struct admin *admin;
	struct watch *watch;
	struct turnout_state st;         /* the overrides in force (as saved) */
	char *state_path;                /* the running config's state_file, NULL = not persisted */
	char last_error[CONFIG_ERR_MAX]; /* of the last reload, "" = it worked */
	char pending[256];               /* settings changed by a reload that wait for a restart */
	int64_t last_reload_at;          /* unix seconds, 0 = none since start */
	uint64_t reloads, reload_failures;
	int64_t started_at;
};

/* ---- small helpers ---- */

static void iso_time(int64_t t, char *out, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *json_time(int64_t t)
{
	char buf[32];
	if (t <= 0)
		return json_null();
	iso_time(t, buf, sizeof(buf));
	return json_string(buf);
}

static json_t *json_percent(uint32_t bp)
{
	return json_real(bp / 100.0);
}

static const char *vname(const struct config *cfg, ssize_t i)
{
	return i >= 0 && (size_t)i < cfg->n_variants ? cfg->variants[i].name : "none";
}

static ssize_t find_variant(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_variants; i++) {
		if (strcmp(cfg->variants[i].name, name) == 0)
			return (ssize_t)i;
	}
	return -1;
}

static void copy_name(char *dst, const char *src)
{
	snprintf(dst, STATE_NAME_MAX, "%s", src ? src : "");
}

/* A percent as "12.5%", for messages. */
static const char *pct(uint32_t bp, char *buf, size_t n)
{
	if (bp % 100 == 0)
		snprintf(buf, n, "%u%%", bp / 100);
	else
		snprintf(buf, n, "%u.%02u%%", bp / 100, bp % 100);
	return buf;
}

/* ---- publishing ---- */

/* Build a snapshot for (rc, p) after the current one and publish it. */
static int publish(struct route_config *rc, const struct route_params *p, char *err, size_t errlen)
{
	struct route_snapshot *prev = route_acquire();
	uint64_t gen = route_current_generation() + 1;
	struct route_snapshot *s = route_snapshot_new(rc, p, gen, prev, err, errlen);
	route_release(prev);
	if (!s)
		return -1;
	route_publish(s);
	return 0;
}

/*
 * Make next the overrides in force: check it against the running config,
 * build the snapshot, save the state file, publish. On failure nothing
 * changed and err says why.
 */
static int commit(struct ops *o, struct turnout_state *next, char *err, size_t errlen)
{
	struct route_snapshot *cur = route_acquire();
	struct route_params p;
	int rc = -1;
	if (!cur) {
		snprintf(err, errlen, "no routing published yet");
		return -1;
	}
	next->changed_at = (int64_t)time(NULL);
	memcpy(next->config_hash, cur->cfg->hash_hex, sizeof(next->config_hash));
	if (state_apply(next, cur->cfg, &p) < 0) {
		snprintf(err, errlen, "override does not fit the running config");
		goto out;
	}
	struct route_snapshot *s =
	    route_snapshot_new(cur->rc, &p, route_current_generation() + 1, cur, err, errlen);
	if (!s)
		goto out;
	if (o->state_path && state_save(next, o->state_path, err, errlen) != 0) {
		route_snapshot_unref(s);
		goto out;
	}
	route_publish(s);
	o->st = *next;
	rc = 0;
out:
	route_release(cur);
	return rc;
}

/*
 * The overrides a new command starts from. A rollback in force becomes plain
 * overrides holding the rolled-back routing: the operator is acting, so the
 * rollback no longer "holds", but nothing it did is undone silently.
 */
static void begin(const struct ops *o, struct turnout_state *next)
{
	*next = o->st;
	if (next->flags & STATE_F_ROLLBACK)
		next->flags = STATE_F_STABLE | STATE_F_CANARY | STATE_F_SHADOW;
}

static void set_message(json_t *reply, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_message(json_t *reply, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	json_object_set_new(reply, "message", json_string(buf));
}

/* ---- command handlers: canary, shadow ---- */

/* Parse a PERCENT argument; the running snapshot must have a candidate. */
static struct route_snapshot *percent_args(const struct admin_call *call, uint32_t *bp, char *err,
                                           size_t errlen)
{
	char why[256];
	if (config_parse_percent_bp(call->argv[1], bp, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "%s: PERCENT \"%.32s\": %s", call->argv[0], call->argv[1],
		         why);
		return NULL;
	}
	struct route_snapshot *cur = route_acquire();
	if (!cur) {
		snprintf(err, errlen, "no routing published yet");
		return NULL;
	}
	if (cur->params.candidate < 0) {
		snprintf(err, errlen, "%s: the config has no candidate variant", call->argv[0]);
		route_release(cur);
		return NULL;
	}
	return cur;
}

static int do_canary(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                     size_t errlen)
{
	struct ops *o = ctx;
	struct turnout_state next;
	uint32_t bp;
	char a[16], b[16];
	struct route_snapshot *cur = percent_args(call, &bp, err, errlen);
	if (!cur)
		return -1;
	struct route_params p = cur->params;
	const struct config *cfg = cur->cfg;
	int rc = -1;
	if (p.strategy != CONFIG_STRATEGY_CANARY) {
		snprintf(err, errlen, "canary: the strategy is %s, not canary",
		         config_strategy_name(p.strategy));
		goto out;
	}
	begin(o, &next);
	next.flags |= STATE_F_CANARY;
	next.canary_bp = bp;
	if (commit(o, &next, err, errlen) != 0)
		goto out;
	set_message(reply, "canary: %s of live traffic to %s (was %s)", pct(bp, a, sizeof(a)),
	            vname(cfg, p.candidate), pct(p.canary_bp, b, sizeof(b)));
	rc = 0;
out:
	route_release(cur);
	return rc;
}

static int do_shadow(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                     size_t errlen)
{
	struct ops *o = ctx;
	struct turnout_state next;
	uint32_t bp;
	char a[16], b[16];
	struct route_snapshot *cur = percent_args(call, &bp, err, errlen);
	if (!cur)
		return -1;
	struct route_params p = cur->params;
	const char *cand = vname(cur->cfg, p.candidate);
	begin(o, &next);
	next.flags |= STATE_F_SHADOW;
	next.shadow_bp = bp;
	int rc = commit(o, &next, err, errlen);
	if (rc == 0)
		set_message(reply, "shadow: mirroring %s of requests to %s (was %s)",
		            pct(bp, a, sizeof(a)), cand, pct(p.shadow_bp, b, sizeof(b)));
	route_release(cur);
	return rc;
}

/* ---- switch, promote ---- */

/* Check a switch to variant v of cur; 0, or -1 with err. */
static int switch_allowed(const struct route_snapshot *cur, const char *name, ssize_t v, int force,
                          char *err, size_t errlen)
{
	if (v < 0) {
		snprintf(err, errlen, "switch: no variant \"%.64s\" in %s", name, cur->cfg->file);
		return -1;
	}
	/* resilience: a dead target is the first thing to say */
	if (!route_variant_healthy(cur, (size_t)v) && !force) {
		snprintf(err, errlen,
		         "switch: %s has no healthy endpoint; use --force to switch anyway", name);
		return -1;
	}
	if (cur->params.strategy != CONFIG_STRATEGY_BLUEGREEN && !force) {
		snprintf(err, errlen,
		         "switch: the strategy is %s; use promote, or switch %s --force to make it "
		         "live for all traffic",
		         config_strategy_name(cur->params.strategy), name);
		return -1;
	}
	return 0;
}

/* Make variant v the stable one, the old stable the candidate, canary at 0. */
static void set_stable(struct turnout_state *next, const struct route_snapshot *cur, size_t v)
{
	const struct config *cfg = cur->cfg;
	copy_name(next->prev_stable, vname(cfg, (ssize_t)cur->params.stable));
	copy_name(next->stable, cfg->variants[v].name);
	if (v != cur->params.stable)
		copy_name(next->candidate, vname(cfg, (ssize_t)cur->params.stable));
	else if (cur->params.candidate >= 0)
		copy_name(next->candidate, vname(cfg, cur->params.candidate));
	else
		next->candidate[0] = 0;
	next->flags |= STATE_F_STABLE;
	if (cur->params.strategy == CONFIG_STRATEGY_CANARY) {
		next->flags |= STATE_F_CANARY;
		next->canary_bp = 0;
	}
}

static int do_switch(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                     size_t errlen)
{
	struct ops *o = ctx;
	struct turnout_state next;
	const char *name = call->argv[1];
	int force = call->argc > 2 && strcmp(call->argv[2], "--force") == 0;
	if (call->argc > 2 && !force) {
		snprintf(err, errlen, "usage: switch VARIANT [--force]");
		return -1;
	}
	struct route_snapshot *cur = route_acquire();
	if (!cur) {
		snprintf(err, errlen, "no routing published yet");
		return -1;
	}
	ssize_t v = find_variant(cur->cfg, name);
	int rc = switch_allowed(cur, name, v, force, err, errlen);
	if (rc == 0 && (size_t)v == cur->params.stable && !(o->st.flags & STATE_F_ROLLBACK)) {
		set_message(reply, "switch: %s is already live; nothing changed", name);
	} else if (rc == 0) {
		const char *old = vname(cur->cfg, (ssize_t)cur->params.stable);
		begin(o, &next);
		set_stable(&next, cur, (size_t)v);
		if ((size_t)v == cur->params.stable)
			copy_name(next.prev_stable, o->st.prev_stable);
		rc = commit(o, &next, err, errlen);
		if (rc == 0)
			set_message(reply, "switch: live traffic %s -> %s", old, name);
	}
	route_release(cur);
	return rc;
}

static int do_promote(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                      size_t errlen)
{
	struct ops *o = ctx;
	struct turnout_state next;
	struct route_snapshot *cur = route_acquire();
	if (!cur) {
		snprintf(err, errlen, "no routing published yet");
		return -1;
	}
	int rc = -1;
	ssize_t c = cur->params.candidate;
	/* resilience: like switch, refuse an unhealthy candidate unless --force */
	int force = call->argc > 1 && strcmp(call->argv[1], "--force") == 0;
	if (call->argc > 1 && !force) {
		snprintf(err, errlen, "usage: promote [--force]");
		goto out;
	}
	if (c < 0) {
		snprintf(err, errlen, "promote: the config has no candidate variant");
		goto out;
	}
	if (!route_variant_healthy(cur, (size_t)c) && !force) {
		snprintf(err, errlen,
		         "promote: %s has no healthy endpoint; use --force to promote anyway",
		         vname(cur->cfg, c));
		goto out;
	}
	const char *old = vname(cur->cfg, (ssize_t)cur->params.stable);
	begin(o, &next);
	set_stable(&next, cur, (size_t)c);
	next.flags |= STATE_F_CANARY | STATE_F_SHADOW;
	next.canary_bp = 0;
	next.shadow_bp = 0;
	if ((rc = commit(o, &next, err, errlen)) == 0)
		set_message(reply, "promote: %s is stable for 100%% of live traffic (was %s)",
		            vname(cur->cfg, c), old);
out:
	route_release(cur);
	return rc;
}

/* ---- rollback, resume ---- */

/* Where a rollback goes: the stable before the last switch, if known; else stay. */
static size_t known_good(const struct ops *o, const struct route_snapshot *cur)
{
	ssize_t g = o->st.prev_stable[0] ? find_variant(cur->cfg, o->st.prev_stable) : -1;
	return g >= 0 ? (size_t)g : cur->params.stable;
}

/* The rollback state for cur, and the list of what it changes. */
static void rollback_plan(const struct ops *o, const struct route_snapshot *cur,
                          struct turnout_state *next, json_t *actions)
{
	const struct config *cfg = cur->cfg;
	const struct route_params *p = &cur->params;
	size_t g = known_good(o, cur);
	char buf[256], a[16];
	*next = o->st;
	next->flags = STATE_F_ROLLBACK;
	copy_name(next->stable, cfg->variants[g].name);
	copy_name(next->candidate,
	          g == p->stable ? vname(cfg, p->candidate) : vname(cfg, (ssize_t)p->stable));
	if (g == p->stable && p->candidate < 0)
		next->candidate[0] = 0;
	next->canary_bp = 0;
	next->shadow_bp = 0;
	next->prev_stable[0] = 0;
	if (g != p->stable) {
		snprintf(buf, sizeof(buf), "live traffic %s -> %s", vname(cfg, (ssize_t)p->stable),
		         cfg->variants[g].name);
		json_array_append_new(actions, json_string(buf));
	}
	if (p->canary_bp && p->strategy == CONFIG_STRATEGY_CANARY) {
		snprintf(buf, sizeof(buf), "canary %s -> 0%%", pct(p->canary_bp, a, sizeof(a)));
		json_array_append_new(actions, json_string(buf));
	}
	if (p->shadow_bp) {
		snprintf(buf, sizeof(buf), "shadow mirroring %s -> 0%% (stopped)",
		         pct(p->shadow_bp, a, sizeof(a)));
		json_array_append_new(actions, json_string(buf));
	}
}

static int do_rollback(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                       size_t errlen)
{
	struct ops *o = ctx;
	struct turnout_state next;
	char since[32];
	if (o->st.flags & STATE_F_ROLLBACK) {
		iso_time(o->st.changed_at, since, sizeof(since));
		set_message(reply, "rollback already in force since %s (live: %s); nothing changed",
		            since, o->st.stable);
		json_object_set_new(reply, "actions", json_array());
		return 0;
	}
	struct route_snapshot *cur = route_acquire();
	if (!cur) {
		snprintf(err, errlen, "no routing published yet");
		return -1;
	}
	json_t *actions = json_array();
	rollback_plan(o, cur, &next, actions);
	int rc = commit(o, &next, err, errlen);
	route_release(cur);
	if (rc != 0) {
		json_decref(actions);
		return -1;
	}
	char did[768] = "";
	size_t n = json_array_size(actions), used = 0;
	for (size_t i = 0; i < n && used < sizeof(did); i++) {
		int w = snprintf(did + used, sizeof(did) - used, "%s%s", i ? "; " : "",
		                 json_string_value(json_array_get(actions, i)));
		used += w > 0 ? (size_t)w : 0;
	}
	metrics_note_rollback(); /* observability: turnout_rollbacks_total */
	set_message(reply, "rollback: %s; all live traffic on %s until resume or a changed config",
	            n ? did : "routing was already at the known-good state", next.stable);
	json_object_set_new(reply, "actions", actions);
	return 0;
}

static int do_resume(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                     size_t errlen)
{
	struct ops *o = ctx;
	struct turnout_state next = o->st;
	if (o->st.flags == 0) {
		set_message(reply, "resume: no override in force; nothing changed");
		return 0;
	}
	int was_rollback = (o->st.flags & STATE_F_ROLLBACK) != 0;
	next.flags = 0;
	if (commit(o, &next, err, errlen) != 0)
		return -1;
	set_message(reply, "resume: %s lifted; routing follows %s again",
	            was_rollback ? "rollback" : "overrides", o->config_path);
	return 0;
}

/* ---- reload ---- */

/* Settings that need new sockets or threads; "" when none changed. */
static void restart_needed(const struct config *a, const struct config *b, char *why, size_t n)
{
#define STRNE(x, y) (((x) == NULL) != ((y) == NULL) || ((x) && strcmp((x), (y)) != 0))
	why[0] = 0;
	if (STRNE(a->listen_host, b->listen_host) || a->listen_port != b->listen_port)
		snprintf(why, n, "listen");
	else if (a->workers != b->workers)
		snprintf(why, n, "workers");
	else if (STRNE(a->admin_socket, b->admin_socket) || STRNE(a->admin_group, b->admin_group))
		snprintf(why, n, "admin.socket/admin.group");
	else if (STRNE(a->admin_http_host, b->admin_http_host) ||
	         a->admin_http_port != b->admin_http_port)
		snprintf(why, n, "admin.http");
	else if (STRNE(a->tls.cert, b->tls.cert) || STRNE(a->tls.key, b->tls.key))
		snprintf(why, n, "tls");
#undef STRNE
}

/* Settings the workers read only when they start; a reload keeps them. */
static void start_only_changes(const struct config *a, const struct config *b, char *out, size_t n)
{
	const struct config_limits *x = &a->limits, *y = &b->limits;
	out[0] = 0;
	if (x->max_body != y->max_body || x->max_header != y->max_header ||
	    x->client_timeout_ms != y->client_timeout_ms ||
	    x->max_connections != y->max_connections || x->drain_timeout_ms != y->drain_timeout_ms)
		snprintf(out, n,
		         "limits (max_body, max_header, client_timeout, max_connections, "
		         "drain_timeout) changed: in force after a restart");
	else if ((a->access_log == NULL) != (b->access_log == NULL) ||
	         (a->access_log && strcmp(a->access_log, b->access_log) != 0))
		snprintf(out, n, "access_log changed: in force after a restart");
}

static void record_failure(struct ops *o, const char *err)
{
	o->reload_failures++;
	metrics_note_reload(0); /* observability: turnout_config_reloads_total */
	o->last_reload_at = (int64_t)time(NULL);
	snprintf(o->last_error, sizeof(o->last_error), "%s", err);
	log_error("reload: %s refused, the running config stays (generation %llu):\n%s",
	          o->config_path, (unsigned long long)route_current_generation(), err);
}

/* The overrides after a config change: all lifted, the rollback target kept. */
static int lift_overrides(struct ops *o, const struct route_snapshot *cur,
                          const struct config *ncfg, struct turnout_state *next)
{
	*next = o->st;
	int lifted = next->flags != 0;
	next->flags = 0;
	next->config_hash[0] = 0;
	size_t ns = ncfg->stable;
	/* a YAML switch of the stable variant is remembered for a later rollback */
	if (strcmp(ncfg->variants[ns].name, vname(cur->cfg, (ssize_t)cur->params.stable)) != 0)
		copy_name(next->prev_stable, vname(cur->cfg, (ssize_t)cur->params.stable));
	return lifted;
}

static int admin_options_of(const struct config *cfg, struct admin_options *ao)
{
	memset(ao, 0, sizeof(*ao));
	ao->path = cfg->admin_socket;
	ao->group = cfg->admin_group;
	ao->allow_uids = cfg->admin_allow_uids;
	ao->n_allow_uids = cfg->n_admin_allow_uids;
	ao->audit_log = cfg->admin_audit_log;
	return cfg->admin_socket != NULL;
}

/* Apply the parts of a new config that are not routing: log level, admin, state file. */
static int apply_side_settings(struct ops *o, const struct config *ncfg, char *err, size_t errlen)
{
	struct admin_options ao;
	enum log_level lvl;
	if (o->admin && admin_options_of(ncfg, &ao) &&
	    admin_reconfigure(o->admin, &ao, err, errlen) != 0)
		return -1;
	char *sp = ncfg->state_file ? strdup(ncfg->state_file) : NULL;
	if (ncfg->state_file && !sp) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	free(o->state_path);
	o->state_path = sp;
	if (ncfg->log_level && log_parse_level(ncfg->log_level, &lvl) == 0)
		log_set_level(lvl);
	return 0;
}

/* Publish ncfg (ownership taken) with the overrides lifted; 0 or -1 with err. */
static int reload_publish(struct ops *o, const struct route_snapshot *cur, struct config *ncfg,
                          char *err, size_t errlen)
{
	struct turnout_state next;
	struct route_params p;
	char serr[512];
	int lifted = lift_overrides(o, cur, ncfg, &next);
	state_apply(&next, ncfg, &p);
	struct route_config *rc = route_config_new(ncfg);
	if (!rc) {
		snprintf(err, errlen, "%s: out of memory", o->config_path);
		return -1;
	}
	int r = apply_side_settings(o, route_config_get(rc), err, errlen);
	if (r == 0)
		r = publish(rc, &p, err, errlen);
	route_config_unref(rc);
	if (r != 0)
		return -1;
	o->st = next;
	if (o->state_path && state_save(&o->st, o->state_path, serr, sizeof(serr)) != 0)
		log_warn("reload: %s (harmless: the overrides were made against another config)",
		         serr);
	log_info("reload: %s in force: generation %llu%s", o->config_path,
	         (unsigned long long)route_current_generation(),
	         lifted ? "; operator overrides lifted (the file changed)" : "");
	return 0;
}

void ops_set_stats(struct ops *o, struct stats *stats)
{
	o->stats = stats;
}

int ops_reload(struct ops *o, char *err, size_t errlen)
{
	struct route_snapshot *cur = route_acquire();
	char why[64];
	int rc = -1;
	if (!cur) {
		snprintf(err, errlen, "no routing published yet");
		return -1;
	}
	struct config *ncfg = config_load(o->config_path, err, errlen);
	if (!ncfg)
		goto fail;
	if (strcmp(ncfg->hash_hex, cur->cfg->hash_hex) == 0) {
		config_free(ncfg);
		rc = 1;
		goto done;
	}
	restart_needed(cur->cfg, ncfg, why, sizeof(why));
	if (why[0]) {
		snprintf(err, errlen, "%s: %s changed: restart needed (a reload cannot rebind it)",
		         o->config_path, why);
		config_free(ncfg);
		goto fail;
	}
	char pending[sizeof(o->pending)];
	start_only_changes(route_config_get(o->first), ncfg, pending, sizeof(pending));
	if (reload_publish(o, cur, ncfg, err, errlen) != 0)
		goto fail;
	memcpy(o->pending, pending, sizeof(pending));
	if (pending[0])
		log_warn("reload: %s: %s", o->config_path, pending);
	rc = 0;
done:
	o->reloads++;
	metrics_note_reload(1); /* observability: turnout_config_reloads_total */
	o->last_reload_at = (int64_t)time(NULL);
	o->last_error[0] = 0;
	route_release(cur);
	return rc;
fail:
	record_failure(o, err);
	route_release(cur);
	return -1;
}

static int do_reload(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                     size_t errlen)
{
	struct ops *o = ctx;
	/* resilience: `reload` also renews the TLS certificate (new connections only) */
	char terr[512];
	int trc = tls_server_reload(terr, sizeof(terr));
	if (trc < 0)
		log_error("reload: %s; the current certificate stays", terr);
	int rc = ops_reload(o, err, errlen);
	if (rc < 0)
		return -1;
	if (trc == 0)
		json_object_set_new(reply, "tls", json_string("certificate reloaded"));
	else if (trc < 0)
		json_object_set_new(reply, "tls", json_string(terr));
	json_object_set_new(reply, "result", json_string(rc == 0 ? "reloaded" : "unchanged"));
	json_object_set_new(reply, "generation",
	                    json_integer((json_int_t)route_current_generation()));
	if (rc == 1)
		set_message(reply, "reload: %s unchanged; nothing to do%s", o->config_path,
		            o->st.flags ? " (operator overrides still in force)" : "");
	else
		set_message(reply, "reload: %s in force (generation %llu)%s%s", o->config_path,
		            (unsigned long long)route_current_generation(),
		            o->pending[0] ? "; " : "", o->pending);
	return 0;
}

static void on_file_change(void *arg)
{
	char err[CONFIG_ERR_MAX];
	struct ops *o = arg;
	if (ops_reload(o, err, sizeof(err)) == 1)
		log_debug("watch: %s touched, content unchanged", o->config_path);
}

/* ---- status, stats ---- */

/* Mirrors of one variant slot (as a shadow target) and how often it agreed with live. */
static json_t *shadow_counters(int slot)
{
	struct shadow_variant_stats *sh = malloc(sizeof(*sh));
	json_t *j = json_object();
	if (!sh)
		return j;
	shadow_merge(slot, sh);
	uint64_t agree = sh->results[COMPARE_AGREE], dis = sh->results[COMPARE_DISAGREE];
	uint64_t errs = sh->results[COMPARE_ERROR], n = agree + dis + errs;
	json_object_set_new(j, "mirrored", json_integer((json_int_t)sh->mirrored));
	json_object_set_new(j, "agree", json_integer((json_int_t)agree));
	json_object_set_new(j, "disagree", json_integer((json_int_t)dis));
	json_object_set_new(j, "errors", json_integer((json_int_t)errs));
	/* agreement among compared pairs; errors count against it */
	json_object_set_new(j, "agreement", n ? json_real((double)agree / (double)n) : json_null());
	free(sh);
	return j;
}

/* Counters of one variant slot: requests, errors, latency quantiles, shadow agreement. */
static json_t *variant_counters(struct ops *o, int slot)
{
	json_t *j = json_object();
	if (!o->stats || slot < 0)
		return j;
	struct stats_variant *sv = malloc(sizeof(*sv));
	if (!sv)
		return j;
	stats_merge(o->stats, slot, sv);
	uint64_t req = 0;
	json_t *up = json_object();
	for (int i = 0; i < 6; i++)
		req += sv->status[i];
	for (int i = 0; i < STATS_ERR_N; i++)
		json_object_set_new(up, stats_err_name((enum stats_err)i),
		                    json_integer((json_int_t)sv->errors[i]));
	json_object_set_new(j, "requests", json_integer((json_int_t)req));
	/* errors: answers the client got as 5xx (upstream failures become 502/504) */
	json_object_set_new(j, "errors", json_integer((json_int_t)sv->status[5]));
	json_object_set_new(j, "upstream_errors", up);
	json_object_set_new(j, "status_2xx", json_integer((json_int_t)sv->status[2]));
	json_object_set_new(j, "status_4xx", json_integer((json_int_t)sv->status[4]));
	json_object_set_new(j, "status_5xx", json_integer((json_int_t)sv->status[5]));
	static const double qs[] = {0.5, 0.9, 0.99};
	static const char *const qn[] = {"p50_ms", "p90_ms", "p99_ms"};
	for (int i = 0; i < 3; i++)
		json_object_set_new(j, qn[i],
		                    json_real(stats_hist_quantile(&sv->hist, qs[i]) / 1000.0));
	free(sv);
	json_object_set_new(j, "shadow", shadow_counters(slot));
	return j;
}

static const char *role_of(const struct route_params *p, size_t i)
{
	if (i == p->stable)
		return "stable";
	if (p->candidate >= 0 && i == (size_t)p->candidate)
		return "candidate";
	return "idle";
}

static json_t *variants_json(struct ops *o, const struct route_snapshot *s, const char *only)
{
	json_t *vs = json_object();
	for (size_t i = 0; i < s->n_variants; i++) {
		const struct route_variant *v = &s->variants[i];
		if (only && strcmp(only, v->name) != 0)
			continue;
		json_t *j = variant_counters(o, v->stats_slot);
		size_t up = 0;
		for (size_t e = 0; e < v->n_endpoints; e++)
			up += atomic_load(&v->endpoints[e].healthy) != 0;
		json_object_set_new(j, "role", json_string(role_of(&s->params, i)));
		json_object_set_new(j, "healthy", json_boolean(up > 0));
		json_object_set_new(j, "endpoints_healthy", json_integer((json_int_t)up));
		json_object_set_new(j, "endpoints", json_integer((json_int_t)v->n_endpoints));
		json_object_set_new(vs, v->name, j);
	}
	return vs;
}

static json_t *override_json(const struct ops *o)
{
	json_t *j = state_to_json(&o->st);
	json_t *kinds = j ? json_object_get(j, "overrides") : NULL;
	json_t *out = json_object();
	json_object_set_new(out, "in_force", json_boolean(o->st.flags != 0));
	json_object_set_new(out, "rollback", json_boolean((o->st.flags & STATE_F_ROLLBACK) != 0));
	json_object_set(out, "kinds", kinds ? kinds : json_array());
	json_object_set_new(out, "since", json_time(o->st.flags ? o->st.changed_at : 0));
	json_object_set_new(out, "rollback_target",
	                    o->st.prev_stable[0] ? json_string(o->st.prev_stable) : json_null());
	json_object_set_new(out, "state_file",
	                    o->state_path ? json_string(o->state_path) : json_null());
	json_decref(j);
	return out;
}

static json_t *reload_json(const struct ops *o)
{
	json_t *j = json_object();
	json_object_set_new(j, "ok", json_boolean(o->last_error[0] == 0));
	json_object_set_new(j, "at", json_time(o->last_reload_at));
	json_object_set_new(j, "error",
	                    o->last_error[0] ? json_string(o->last_error) : json_null());
	json_object_set_new(j, "reloads", json_integer((json_int_t)o->reloads));
	json_object_set_new(j, "failures", json_integer((json_int_t)o->reload_failures));
	return j;
}

static int do_status(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                     size_t errlen)
{
	struct ops *o = ctx;
	struct route_snapshot *s = route_acquire();
	char a[16], b[16];
	if (!s) {
		snprintf(err, errlen, "no routing published yet");
		return -1;
	}
	const struct config *cfg = s->cfg;
	const struct route_params *p = &s->params;
	set_message(reply, "%s: stable %s, candidate %s, canary %s, shadow %s%s%s",
	            config_strategy_name(p->strategy), vname(cfg, (ssize_t)p->stable),
	            vname(cfg, p->candidate), pct(p->canary_bp, a, sizeof(a)),
	            pct(p->shadow_bp, b, sizeof(b)),
	            o->st.flags & STATE_F_ROLLBACK ? " [ROLLBACK IN FORCE]"
	            : o->st.flags                  ? " [operator override]"
	                                           : "",
	            o->last_error[0] ? " [LAST RELOAD FAILED]" : "");
	json_object_set_new(reply, "strategy", json_string(config_strategy_name(p->strategy)));
	json_object_set_new(reply, "stable", json_string(vname(cfg, (ssize_t)p->stable)));
	json_object_set_new(reply, "candidate",
	                    p->candidate >= 0 ? json_string(vname(cfg, p->candidate))
	                                      : json_null());
	json_object_set_new(reply, "canary_percent", json_percent(p->canary_bp));
	json_object_set_new(reply, "shadow_percent", json_percent(p->shadow_bp));
	json_object_set_new(reply, "config_file", json_string(o->config_path));
	json_object_set_new(reply, "config_hash", json_string(cfg->hash_hex));
	json_object_set_new(reply, "generation", json_integer((json_int_t)s->generation));
	json_object_set_new(reply, "override", override_json(o));
	json_object_set_new(reply, "last_reload", reload_json(o));
	json_object_set_new(reply, "started_at", json_time(o->started_at));
	json_object_set_new(reply, "restart_pending",
	                    o->pending[0] ? json_string(o->pending) : json_null());
	json_object_set_new(reply, "variants", variants_json(o, s, NULL));
	route_release(s);
	return 0;
}

static int do_stats(void *ctx, const struct admin_call *call, json_t *reply, char *err,
                    size_t errlen)
{
	struct ops *o = ctx;
	const char *only = call->argc > 1 ? call->argv[1] : NULL;
	struct route_snapshot *s = route_acquire();
	if (!s) {
		snprintf(err, errlen, "no routing published yet");
		return -1;
	}
	if (only && find_variant(s->cfg, only) < 0) {
		snprintf(err, errlen, "stats: no variant \"%.64s\" in %s", only, o->config_path);
		route_release(s);
		return -1;
	}
	json_object_set_new(reply, "variants", variants_json(o, s, only));
	char since[32];
	iso_time(o->started_at, since, sizeof(since));
	set_message(reply, "counters since %s", since);
	route_release(s);
	return 0;
}

static const struct admin_command ops_commands[] = {
    {"status", "status", 0, 0, 0, do_status},
    {"stats", "stats [VARIANT]", 0, 1, 0, do_stats},
    {"canary", "canary PERCENT", 1, 1, 1, do_canary},
    {"shadow", "shadow PERCENT", 1, 1, 1, do_shadow},
    {"switch", "switch VARIANT [--force]", 1, 2, 1, do_switch},
    {"promote", "promote [--force]", 0, 1, 1, do_promote}, /* resilience: --force */
    {"rollback", "rollback", 0, 0, 1, do_rollback},
    {"resume", "resume", 0, 0, 1, do_resume},
    {"reload", "reload", 0, 0, 1, do_reload},
};

/* ---- life cycle ---- */

/* Load the state file and republish with the overrides that still hold. */
static void restore_state(struct ops *o, const struct route_snapshot *cur)
{
	char err[1024];
	struct route_params p;
	int r = state_load(&o->st, o->state_path, err, sizeof(err));
	if (r < 0)
		log_error("state: %s; starting with no operator overrides", err);
	if (r != 0 || o->st.flags == 0)
		return;
	int ar = state_apply(&o->st, cur->cfg, &p);
	if (ar == 1 && publish(cur->rc, &p, err, sizeof(err)) == 0) {
		log_warn("state: operator overrides from %s in force again%s (since %lld)",
		         o->state_path, o->st.flags & STATE_F_ROLLBACK ? ": ROLLBACK" : "",
		         (long long)o->st.changed_at);
		return;
	}
	log_warn("state: overrides in %s %s; lifted", o->state_path,
	         ar == 0 ? "were made against another config" : "do not fit this config");
	o->st.flags = 0;
	o->st.config_hash[0] = 0;
	if (state_save(&o->st, o->state_path, err, sizeof(err)) != 0)
		log_warn("state: %s", err);
}

static int start_services(struct ops *o, const struct config *cfg, char *err, size_t errlen)
{
	struct admin_options ao;
	size_t n = sizeof(ops_commands) / sizeof(ops_commands[0]);
	if (admin_options_of(cfg, &ao) &&
	    !(o->admin = admin_new(o->base, &ao, ops_commands, n, o, err, errlen)))
		return -1;
	/* Not fatal: SIGHUP and `turnoutctl reload` still work without it. */
	o->watch = watch_new(o->base, o->config_path, on_file_change, o, err, errlen);
	if (!o->watch)
		log_warn("watch: %s; the file is reloaded only on SIGHUP or turnoutctl reload",
		         err);
	return 0;
}

struct ops *ops_new(struct event_base *base, const char *config_path, struct stats *stats,
                    char *err, size_t errlen)
{
	struct route_snapshot *cur = route_acquire();
	struct ops *o = calloc(1, sizeof(*o));
	if (!cur) {
		snprintf(err, errlen, "ops: no routing published yet");
		goto fail;
	}
	if (!o || !(o->config_path = strdup(config_path)) ||
	    (cur->cfg->state_file && !(o->state_path = strdup(cur->cfg->state_file)))) {
		snprintf(err, errlen, "ops: out of memory");
		goto fail;
	}
	o->base = base;
	o->stats = stats;
	o->first = cur->rc;
	route_config_ref(o->first);
	o->started_at = (int64_t)time(NULL);
	if (o->state_path)
		restore_state(o, cur);
	if (start_services(o, cur->cfg, err, errlen) != 0)
		goto fail;
	route_release(cur);
	return o;
fail:
	route_release(cur);
	ops_free(o);
	return NULL;
}

/* observability: what `turnoutctl status` shows beyond the snapshot, for GET /status. */
json_t *ops_status_json(struct ops *o)
{
	json_t *j = json_object();
	if (j == NULL || o == NULL)
		return j;
	json_object_set_new(j, "override", override_json(o));
	json_object_set_new(j, "last_reload", reload_json(o));
	json_object_set_new(j, "started_at", json_time(o->started_at));
	json_object_set_new(j, "restart_pending",
	                    o->pending[0] ? json_string(o->pending) : json_null());
	return j;
}

void ops_free(struct ops *o)
{
	if (!o)
		return;
	watch_free(o->watch);
	admin_free(o->admin);
	route_config_unref(o->first);
	free(o->state_path);
	free(o->config_path);
	free(o);
}
