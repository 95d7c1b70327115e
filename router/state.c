/*
 * state.c - persisted runtime overrides (see state.h).
 *
 * The file is one small JSON object. It is written the crash-safe way (temp
 * file in the same directory, fsync, rename, fsync of the directory) so a
 * reader sees either the old or the new content, never half of one. A file
 * that does not parse or does not validate is renamed aside rather than
 * deleted, so an operator can look at what went wrong.
 */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATE_VERSION 1

static const struct {
	unsigned flag;
	const char *name;
} state_flag_names[] = {
    {STATE_F_STABLE, "stable"},
    {STATE_F_CANARY, "canary"},
    {STATE_F_SHADOW, "shadow"},
    {STATE_F_ROLLBACK, "rollback"},
};
#define STATE_N_FLAGS (sizeof(state_flag_names) / sizeof(state_flag_names[0]))

void state_clear(struct turnout_state *st)
{
	memset(st, 0, sizeof(*st));
}

static ssize_t find_variant(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_variants; i++) {
		if (cfg->variants[i].name && strcmp(cfg->variants[i].name, name) == 0)
			return (ssize_t)i;
	}
	return -1;
}

static void params_from_config(const struct config *cfg, struct route_params *out)
{
	out->strategy = cfg->strategy;
	out->stable = cfg->stable;
	out->candidate = cfg->candidate;
	out->canary_bp = cfg->canary_percent_bp;
	out->shadow_bp = cfg->shadow.percent_bp;
}

int state_apply(const struct turnout_state *st, const struct config *cfg, struct route_params *out)
{
	params_from_config(cfg, out);
	if (!st || st->flags == 0)
		return 0;
	if (strcmp(st->config_hash, cfg->hash_hex) != 0)
		return 0;
	struct route_params p = *out;
	if (st->flags & (STATE_F_STABLE | STATE_F_ROLLBACK)) {
		ssize_t s = find_variant(cfg, st->stable);
		ssize_t c = st->candidate[0] ? find_variant(cfg, st->candidate) : -1;
		if (s < 0 || (st->candidate[0] && c < 0) || s == c)
			return -1;
		p.stable = (size_t)s;
		p.candidate = c;
	}
	if (st->flags & (STATE_F_CANARY | STATE_F_ROLLBACK)) {
		if (st->canary_bp > 10000)
			return -1;
		p.canary_bp = st->canary_bp;
	}
	if (st->flags & (STATE_F_SHADOW | STATE_F_ROLLBACK)) {
		if (st->shadow_bp > 10000)
			return -1;
		p.shadow_bp = st->shadow_bp;
	}
	*out = p;
	return 1;
}

json_t *state_to_json(const struct turnout_state *st)
{
	json_t *flags = json_array();
	json_t *o = json_object();
	if (!flags || !o)
		goto fail;
	for (size_t i = 0; i < STATE_N_FLAGS; i++) {
		if ((st->flags & state_flag_names[i].flag) &&
		    json_array_append_new(flags, json_string(state_flag_names[i].name)) != 0)
			goto fail;
	}
	int rc = 0;
	rc |= json_object_set_new(o, "version", json_integer(STATE_VERSION));
	rc |= json_object_set_new(o, "overrides", flags);
	flags = NULL;
	rc |= json_object_set_new(o, "config_hash", json_string(st->config_hash));
	rc |= json_object_set_new(o, "stable", json_string(st->stable));
	rc |= json_object_set_new(o, "candidate", json_string(st->candidate));
	rc |= json_object_set_new(o, "canary_bp", json_integer(st->canary_bp));
	rc |= json_object_set_new(o, "shadow_bp", json_integer(st->shadow_bp));
	rc |= json_object_set_new(o, "prev_stable", json_string(st->prev_stable));
	rc |= json_object_set_new(o, "changed_at", json_integer(st->changed_at));
	if (rc != 0)
		goto fail;
	return o;
fail:
	json_decref(flags);
	json_decref(o);
	return NULL;
}

/* Copy a JSON string member into dst (cap bytes with NUL); -1 with err if wrong. */
static int get_name(const json_t *obj, const char *key, char *dst, size_t cap, char *err,
                    size_t errlen)
{
	const json_t *v = json_object_get(obj, key);
	if (!json_is_string(v)) {
		snprintf(err, errlen, "\"%s\" is missing or not a string", key);
		return -1;
	}
	size_t n = json_string_length(v);
	const char *s = json_string_value(v);
	if (n >= cap || strlen(s) != n) {
		snprintf(err, errlen, "\"%s\" is too long or holds a NUL byte", key);
		return -1;
	}
	memcpy(dst, s, n + 1);
	return 0;
}

static int get_int(const json_t *obj, const char *key, json_int_t lo, json_int_t hi,
                   json_int_t *out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(obj, key);
	if (!json_is_integer(v)) {
		snprintf(err, errlen, "\"%s\" is missing or not an integer", key);
		return -1;
	}
	json_int_t x = json_integer_value(v);
	if (x < lo || x > hi) {
		snprintf(err, errlen, "\"%s\": %lld is out of range %lld..%lld", key, (long long)x,
		         (long long)lo, (long long)hi);
		return -1;
	}
	*out = x;
	return 0;
}

static int get_flags(const json_t *obj, unsigned *out, char *err, size_t errlen)
{
	const json_t *a = json_object_get(obj, "overrides");
	if (!json_is_array(a)) {
		snprintf(err, errlen, "\"overrides\" is missing or not an array");
		return -1;
	}
	unsigned flags = 0;
	size_t i;
	const json_t *v;
	json_array_foreach(a, i, v)
	{
		const char *s = json_string_value(v);
		size_t k = 0;
		while (s && k < STATE_N_FLAGS && strcmp(s, state_flag_names[k].name) != 0)
			k++;
		if (!s || k == STATE_N_FLAGS) {
			snprintf(err, errlen,
			         "\"overrides\"[%zu] is not one of stable, canary, "
			         "shadow, rollback",
			         i);
			return -1;
		}
		flags |= state_flag_names[k].flag;
	}
	*out = flags;
	return 0;
}

static int check_keys(const json_t *obj, char *err, size_t errlen)
{
	static const char *const known[] = {"version",   "overrides",   "config_hash",
	                                    "stable",    "candidate",   "canary_bp",
	                                    "shadow_bp", "prev_stable", "changed_at"};
	const char *key;
	const json_t *v;
	json_object_foreach((json_t *)obj, key, v)
	{
		size_t k = 0;
		while (k < sizeof(known) / sizeof(known[0]) && strcmp(key, known[k]) != 0)
			k++;
		if (k == sizeof(known) / sizeof(known[0])) {
			snprintf(err, errlen, "unknown key \"%.64s\"", key);
			return -1;
		}
	}
	return 0;
}

static int check_hash(const char *h, char *err, size_t errlen)
{
	size_t n = strlen(h);
	if (n != 0 && n != 64)
		goto bad;
	for (size_t i = 0; i < n; i++) {
		if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
			goto bad;
	}
	return 0;
bad:
	snprintf(err, errlen, "\"config_hash\" is not a sha256 hex digest");
	return -1;
}

int state_from_json(struct turnout_state *st, const json_t *obj, char *err, size_t errlen)
{
	struct turnout_state s;
	json_int_t ver, canary, shadow, at;
	state_clear(&s);
	state_clear(st);
	if (!json_is_object(obj)) {
		snprintf(err, errlen, "not a JSON object");
		return -1;
	}
	if (check_keys(obj, err, errlen) != 0 ||
	    get_int(obj, "version", STATE_VERSION, STATE_VERSION, &ver, err, errlen) != 0 ||
	    get_flags(obj, &s.flags, err, errlen) != 0 ||
	    get_name(obj, "config_hash", s.config_hash, sizeof(s.config_hash), err, errlen) != 0 ||
	    check_hash(s.config_hash, err, errlen) != 0 ||
	    get_name(obj, "stable", s.stable, sizeof(s.stable), err, errlen) != 0 ||
	    get_name(obj, "candidate", s.candidate, sizeof(s.candidate), err, errlen) != 0 ||
	    get_int(obj, "canary_bp", 0, 10000, &canary, err, errlen) != 0 ||
	    get_int(obj, "shadow_bp", 0, 10000, &shadow, err, errlen) != 0 ||
	    get_name(obj, "prev_stable", s.prev_stable, sizeof(s.prev_stable), err, errlen) != 0 ||
	    get_int(obj, "changed_at", 0, INT64_MAX, &at, err, errlen) != 0)
		return -1;
	if ((s.flags & (STATE_F_STABLE | STATE_F_ROLLBACK)) && s.stable[0] == 0) {
		snprintf(err, errlen, "\"stable\" is empty but a switch or rollback is in force");
		return -1;
	}
	if (s.flags != 0 && s.config_hash[0] == 0) {
		snprintf(err, errlen, "overrides are in force but \"config_hash\" is empty");
		return -1;
	}
	s.canary_bp = (uint32_t)canary;
	s.shadow_bp = (uint32_t)shadow;
	s.changed_at = (int64_t)at;
	*st = s;
	return 0;
}

/* fsync the directory holding path, so that a rename in it is durable. */
static int sync_dir_of(const char *path, char *err, size_t errlen)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -1;
	}
	const char *dir = dirname(buf);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0) {
		snprintf(err, errlen, "%s: cannot sync directory: %s", dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int state_save(const struct turnout_state *st, const char *path, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	char *text = NULL;
	int fd = -1;
	json_t *o = state_to_json(st);
	if (!o || !(text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS))) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto fail;
	}
	if (snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", path);
		goto fail;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
		goto fail;
	}
	size_t n = strlen(text);
	if (write_all(fd, text, n) != 0 || write_all(fd, "\n", 1) != 0 || fsync(fd) != 0) {
		snprintf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
		goto fail_unlink;
	}
	if (close(fd) != 0) {
		fd = -1;
		snprintf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
		goto fail_unlink;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		snprintf(err, errlen, "%s: cannot rename %s over it: %s", path, tmp,
		         strerror(errno));
		goto fail_unlink;
	}
	free(text);
	json_decref(o);
	return sync_dir_of(path, err, errlen);
fail_unlink:
	unlink(tmp);
fail:
	if (fd >= 0)
		close(fd);
	free(text);
	json_decref(o);
	return -1;
}

/* Rename a corrupt file aside; append where it went (or why not) to err. */
static void set_aside(const char *path, char *err, size_t errlen)
{
	char aside[PATH_MAX], stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	size_t used = strlen(err);
	if (snprintf(aside, sizeof(aside), "%s.corrupt-%s", path, stamp) >= (int)sizeof(aside) ||
	    rename(path, aside) != 0) {
		snprintf(err + used, errlen - used, "; could not set it aside: %s",
		         strerror(errno ? errno : ENAMETOOLONG));
		return;
	}
	snprintf(err + used, errlen - used, "; set aside as %s", aside);
}

/* Read the whole file (at most STATE_FILE_MAX bytes) into a new NUL-ended buffer. */
static char *read_file(int fd, size_t *len)
{
	char *buf = malloc(STATE_FILE_MAX + 1);
	size_t n = 0;
	if (!buf)
		return NULL;
	for (;;) {
		ssize_t r = read(fd, buf + n, STATE_FILE_MAX + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(buf);
			return NULL;
		}
		if (r == 0 || (n += (size_t)r) > STATE_FILE_MAX)
			break;
	}
	buf[n > STATE_FILE_MAX ? STATE_FILE_MAX : n] = 0;
	*len = n;
	return buf;
}

int state_load(struct turnout_state *st, const char *path, char *err, size_t errlen)
{
	char why[512];
	size_t len = 0;
	state_clear(st);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 1;
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	char *text = read_file(fd, &len);
	int read_errno = errno;
	close(fd);
	if (!text) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(read_errno));
		return -1;
	}
	json_error_t jerr;
	json_t *o = NULL;
	if (len > STATE_FILE_MAX) {
		snprintf(why, sizeof(why), "larger than %d bytes", STATE_FILE_MAX);
	} else if (!(o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr))) {
		snprintf(why, sizeof(why), "%d:%d: %s", jerr.line, jerr.column, jerr.text);
	} else if (state_from_json(st, o, why, sizeof(why)) == 0) {
		json_decref(o);
		free(text);
		return 0;
	}
	json_decref(o);
	free(text);
	snprintf(err, errlen, "%s: corrupt state file: %s", path, why);
	errno = 0;
	set_aside(path, err, errlen);
	state_clear(st);
	return -1;
}
