/*
 * test_watch.c - unit tests for router/watch.c: a real inotify watch on a temp
 * directory, driven by a real event_base. Saves by rename and in place are
 * seen, other files in the directory are not, and a burst is coalesced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "watch.h"

struct fx {
	char dir[64];
	char path[128];
	struct event_base *base;
	struct watch *w;
	int calls;
};

static void on_change(void *arg)
{
	struct fx *f = arg;
	f->calls++;
}

static void put(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Run the loop for ms milliseconds, or until calls reaches want (want < 0: the whole time). */
static double run_for(struct fx *f, int ms, int want)
{
	double t0 = now_s();
	while ((now_s() - t0) * 1000 < ms) {
		if (want >= 0 && f->calls >= want)
			break;
		struct timeval tv = {0, 5000};
		event_base_loopexit(f->base, &tv);
		event_base_dispatch(f->base);
	}
	return now_s() - t0;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];
	strcpy(f->dir, "/tmp/turnout-test-watch-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/turnout.yaml", f->dir);
	put(f->path, "a: 1\n");
	f->base = event_base_new();
	f->w = watch_new(f->base, f->path, on_change, f, err, sizeof(err));
	if (!f->w)
		fail_msg("watch_new: %s", err);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char p[256];
	watch_free(f->w);
	event_base_free(f->base);
	const char *names[] = {"turnout.yaml", "turnout.yaml.tmp", "other.txt"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", f->dir, names[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

static void test_rename_replace_seen(void **state)
{
	struct fx *f = *state;
	char tmp[160];
	snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
	put(tmp, "a: 2\n");
	assert_int_equal(rename(tmp, f->path), 0);
	double took = run_for(f, 2000, 1);
	assert_int_equal(f->calls, 1);
	assert_true(took < 1.0);
	/* and again: the watch survives the inode change */
	put(tmp, "a: 3\n");
	assert_int_equal(rename(tmp, f->path), 0);
	run_for(f, 2000, 2);
	assert_int_equal(f->calls, 2);
	assert_int_equal(watch_fired(f->w), 2);
}

static void test_in_place_write_seen(void **state)
{
	struct fx *f = *state;
	put(f->path, "a: 4\n");
	double took = run_for(f, 2000, 1);
	assert_int_equal(f->calls, 1);
	assert_true(took < 1.0);
}

static void test_other_files_ignored(void **state)
{
	struct fx *f = *state;
	char other[160];
	snprintf(other, sizeof(other), "%s/other.txt", f->dir);
	put(other, "noise\n");
	run_for(f, 300, -1);
	assert_int_equal(f->calls, 0);
}

/* Many saves in a row give one callback, and not later than the max delay. */
static void test_burst_coalesced(void **state)
{
	struct fx *f = *state;
	double t0 = now_s();
	for (int i = 0; i < 20; i++)
		put(f->path, "a: 5\n");
	double burst = now_s() - t0;
	run_for(f, 2000, 1);
	double took = now_s() - t0;
	run_for(f, 200, -1); /* nothing more comes */
	assert_true(took < 1.0);
	/* a burst shorter than the settle time is one change (a very slow
	 * machine may split a longer one, never more than once per max delay) */
	if (burst * 1000 < WATCH_SETTLE_MS)
		assert_int_equal(f->calls, 1);
	else
		assert_true(f->calls >= 1 &&
		            f->calls <= 1 + (int)(burst * 1000 / WATCH_MAX_DELAY_MS) + 1);
}

static void test_missing_dir(void **state)
{
	char err[256];
	struct event_base *base = event_base_new();
	struct watch *w =
	    watch_new(base, "/nonexistent-turnout-dir/x.yaml", on_change, NULL, err, sizeof(err));
	assert_null(w);
	assert_non_null(strstr(err, "/nonexistent-turnout-dir"));
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_rename_replace_seen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_in_place_write_seen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_other_files_ignored, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_burst_coalesced, setup, teardown),
	    cmocka_unit_test(test_missing_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
