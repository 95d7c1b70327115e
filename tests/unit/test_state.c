/*
 * test_state.c - unit tests for router/state.c: applying overrides to the
 * config's routing, and the state file (atomic save, load, corrupt files set
 * aside).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state.h"

#define HASH_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HASH_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

/* A config with variants blue, green, red: canary strategy, stable blue, candidate green. */
struct fixture {
	struct config cfg;
	struct config_variant v[3];
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	static char *names[] = {"blue", "green", "red"};
	for (int i = 0; i < 3; i++)
		f->v[i].name = names[i];
	f->cfg.variants = f->v;
	f->cfg.n_variants = 3;
	f->cfg.strategy = CONFIG_STRATEGY_CANARY;
	f->cfg.stable = 0;
	f->cfg.candidate = 1;
	f->cfg.canary_percent_bp = 1000;
	f->cfg.shadow.percent_bp = 500;
	memcpy(f->cfg.hash_hex, HASH_A, 65);
	strcpy(f->dir, "/tmp/turnout-test-state-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/state.json", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	DIR *d = opendir(f->dir);
	struct dirent *e;
	char p[512];
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(f->dir);
	free(f);
	return 0;
}

static int count_files(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	while (d && (e = readdir(d))) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
			n++;
	}
	if (d)
		closedir(d);
	return n;
}

static void write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void test_apply_empty_gives_config(void **state)
{
	struct fixture *f = *state;
	struct turnout_state st;
	struct route_params p;
	state_clear(&st);
	assert_int_equal(state_apply(&st, &f->cfg, &p), 0);
	assert_int_equal(p.strategy, CONFIG_STRATEGY_CANARY);
	assert_int_equal(p.stable, 0);
	assert_int_equal(p.candidate, 1);
	assert_int_equal(p.canary_bp, 1000);
	assert_int_equal(p.shadow_bp, 500);
	assert_int_equal(state_apply(NULL, &f->cfg, &p), 0);
	assert_int_equal(p.canary_bp, 1000);
}

static void test_apply_overrides(void **state)
{
	struct fixture *f = *state;
	struct turnout_state st;
	struct route_params p;
	state_clear(&st);
	memcpy(st.config_hash, HASH_A, 65);
	st.flags = STATE_F_CANARY;
	st.canary_bp = 2500;
	assert_int_equal(state_apply(&st, &f->cfg, &p), 1);
	assert_int_equal(p.canary_bp, 2500);
	assert_int_equal(p.shadow_bp, 500); /* not overridden */
	assert_int_equal(p.stable, 0);

	st.flags = STATE_F_STABLE | STATE_F_SHADOW;
	strcpy(st.stable, "red");
	strcpy(st.candidate, "blue");
	st.shadow_bp = 0;
	assert_int_equal(state_apply(&st, &f->cfg, &p), 1);
	assert_int_equal(p.stable, 2);
	assert_int_equal(p.candidate, 0);
	assert_int_equal(p.canary_bp, 1000);
	assert_int_equal(p.shadow_bp, 0);

	st.candidate[0] = 0; /* no candidate */
	assert_int_equal(state_apply(&st, &f->cfg, &p), 1);
	assert_int_equal(p.candidate, -1);
}

static void test_apply_rollback_sets_everything(void **state)
{
	struct fixture *f = *state;
	struct turnout_state st;
	struct route_params p;
	state_clear(&st);
	memcpy(st.config_hash, HASH_A, 65);
	st.flags = STATE_F_ROLLBACK;
	strcpy(st.stable, "blue");
	strcpy(st.candidate, "green");
	st.canary_bp = 0;
	st.shadow_bp = 0;
	assert_int_equal(state_apply(&st, &f->cfg, &p), 1);
	assert_int_equal(p.stable, 0);
	assert_int_equal(p.candidate, 1);
	assert_int_equal(p.canary_bp, 0);
	assert_int_equal(p.shadow_bp, 0);
}

/* A changed config (other hash) lifts every override. */
static void test_apply_changed_config_lifts(void **state)
{
	struct fixture *f = *state;
	struct turnout_state st;
	struct route_params p;
	state_clear(&st);
	memcpy(st.config_hash, HASH_B, 65);
	st.flags = STATE_F_ROLLBACK;
	strcpy(st.stable, "green");
	assert_int_equal(state_apply(&st, &f->cfg, &p), 0);
	assert_int_equal(p.stable, 0);
	assert_int_equal(p.canary_bp, 1000);
}

static void test_apply_unknown_variant(void **state)
{
	struct fixture *f = *state;
	struct turnout_state st;
	struct route_params p;
	state_clear(&st);
	memcpy(st.config_hash, HASH_A, 65);
	st.flags = STATE_F_STABLE | STATE_F_CANARY;
	strcpy(st.stable, "purple");
	st.canary_bp = 9000;
	assert_int_equal(state_apply(&st, &f->cfg, &p), -1);
	assert_int_equal(p.stable, 0); /* the config's routing, untouched */
	assert_int_equal(p.canary_bp, 1000);
	strcpy(st.stable, "blue");
	strcpy(st.candidate, "blue"); /* stable == candidate is inconsistent */
	assert_int_equal(state_apply(&st, &f->cfg, &p), -1);
}

static void test_save_load_roundtrip(void **state)
{
	struct fixture *f = *state;
	struct turnout_state st, back;
	char err[512];
	struct stat sb;
	state_clear(&st);
	memcpy(st.config_hash, HASH_A, 65);
	st.flags = STATE_F_ROLLBACK | STATE_F_SHADOW;
	strcpy(st.stable, "blue");
	strcpy(st.candidate, "green");
	strcpy(st.prev_stable, "green");
	st.canary_bp = 0;
	st.shadow_bp = 1234;
	st.changed_at = 1790000000;
	assert_int_equal(state_save(&st, f->path, err, sizeof(err)), 0);
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(count_files(f->dir, "state.json.tmp"), 0);
	assert_int_equal(state_load(&back, f->path, err, sizeof(err)), 0);
	assert_memory_equal(&st, &back, sizeof(st));

	/* saving again replaces the content */
	st.flags = 0;
	assert_int_equal(state_save(&st, f->path, err, sizeof(err)), 0);
	assert_int_equal(state_load(&back, f->path, err, sizeof(err)), 0);
	assert_int_equal(back.flags, 0);
	assert_string_equal(back.stable, "blue");
}

static void test_load_missing(void **state)
{
	struct fixture *f = *state;
	struct turnout_state st;
	char err[512];
	memset(&st, 0x55, sizeof(st));
	assert_int_equal(state_load(&st, f->path, err, sizeof(err)), 1);
	assert_int_equal(st.flags, 0);
	assert_int_equal(st.stable[0], 0);
}

/* Each corrupt file is reported, set aside (not deleted), and leaves an empty state. */
static void test_load_corrupt_set_aside(void **state)
{
	struct fixture *f = *state;
	static const char *bad[] = {
	    "{\"version\": 1, \"overrides\": [",
	    "not json at all",
	    "[1, 2, 3]",
	    "{\"version\": 2, \"overrides\": [], \"config_hash\": \"\", \"stable\": \"\", "
	    "\"candidate\": \"\", \"canary_bp\": 0, \"shadow_bp\": 0, \"prev_stable\": \"\", "
	    "\"changed_at\": 0}",
	    "{\"version\": 1, \"overrides\": [\"canary\"], \"config_hash\": \"" HASH_A "\", "
	    "\"stable\": \"\", \"candidate\": \"\", \"canary_bp\": 10001, \"shadow_bp\": 0, "
	    "\"prev_stable\": \"\", \"changed_at\": 0}",
	    "{\"version\": 1, \"overrides\": [\"explode\"], \"config_hash\": \"" HASH_A "\", "
	    "\"stable\": \"\", \"candidate\": \"\", \"canary_bp\": 1, \"shadow_bp\": 0, "
	    "\"prev_stable\": \"\", \"changed_at\": 0}",
	    "{\"version\": 1, \"overrides\": [], \"config_hash\": \"\", \"stable\": \"\", "
	    "\"candidate\": \"\", \"canary_bp\": 0, \"shadow_bp\": 0, \"prev_stable\": \"\", "
	    "\"changed_at\": 0, \"extra\": true}",
	    "{\"version\": 1, \"overrides\": [\"rollback\"], \"config_hash\": \"" HASH_A "\", "
	    "\"stable\": \"\", \"candidate\": \"\", \"canary_bp\": 0, \"shadow_bp\": 0, "
	    "\"prev_stable\": \"\", \"changed_at\": 0}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct turnout_state st;
		char err[1024];
		write_text(f->path, bad[i]);
		assert_int_equal(state_load(&st, f->path, err, sizeof(err)), -1);
		assert_int_equal(st.flags, 0);
		assert_non_null(strstr(err, f->path));
		assert_non_null(strstr(err, "corrupt"));
		assert_non_null(strstr(err, "set aside as"));
		assert_int_equal(access(f->path, F_OK), -1);
		assert_true(count_files(f->dir, "state.json.corrupt-") >= 1);
	}
}

static void test_load_too_large(void **state)
{
	struct fixture *f = *state;
	struct turnout_state st;
	char err[1024];
	FILE *fp = fopen(f->path, "w");
	assert_non_null(fp);
	for (int i = 0; i < STATE_FILE_MAX + 10; i++)
		fputc(' ', fp);
	fclose(fp);
	assert_int_equal(state_load(&st, f->path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "larger than"));
}

static void test_save_unwritable_dir(void **state)
{
	struct turnout_state st;
	char err[512];
	state_clear(&st);
	assert_int_equal(state_save(&st, "/nonexistent-dir/state.json", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent-dir/state.json"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_apply_empty_gives_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_apply_overrides, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_apply_rollback_sets_everything, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_apply_changed_config_lifts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_apply_unknown_variant, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_save_load_roundtrip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_load_missing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_load_corrupt_set_aside, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_load_too_large, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_save_unwritable_dir, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
