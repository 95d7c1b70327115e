/*
 * test_health.c - unit tests for router/health.c: the probe counters
 * (thresholds), the back-off sequence, passive reports on a real snapshot
 * (ejection once, reset by a good answer, nothing when disabled), and the
 * checker itself on a real event loop: a dead endpoint is marked down by its
 * probes, a passive ejection lasts its back-off and then ends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "config.h"
#include "health.h"
#include "log.h"
#include "route.h"
#include "stats.h"

/* A loopback port nobody listens on (bound, then closed). */
static int dead_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static struct route_snapshot *snapshot_for(const char *yaml, struct route_config **rcp)
{
	char err[CONFIG_ERR_MAX];
	struct config *cfg = config_load_buffer("test.yaml", yaml, strlen(yaml), err, sizeof(err));
	if (cfg == NULL)
		fail_msg("config: %s", err);
	struct route_config *rc = route_config_new(cfg);
	struct route_params p = route_params_from_config(cfg);
	struct route_snapshot *s = route_snapshot_new(rc, &p, 1, NULL, err, sizeof(err));
	assert_non_null(s);
	*rcp = rc;
	return s;
}

static char *config_text(int port, const char *health)
{
	char *buf = malloc(1024);
	snprintf(buf, 1024,
	         "listen: 127.0.0.1:1\n"
	         "variants:\n"
	         "  blue: { endpoints: [http://127.0.0.1:%d] }\n"
	         "strategy: bluegreen\n"
	         "stable: blue\n"
	         "health:\n%s",
	         port, health);
	return buf;
}

static void test_count_thresholds(void **state)
{
	struct health_counts c = {.up = 1};
	assert_int_equal(health_count(&c, 0, 2, 3), 0);
	assert_int_equal(health_count(&c, 0, 2, 3), 0);
	assert_int_equal(health_count(&c, 1, 2, 3), 0); /* a success breaks the run */
	assert_int_equal(health_count(&c, 0, 2, 3), 0);
	assert_int_equal(health_count(&c, 0, 2, 3), 0);
	assert_true(c.up);
	assert_int_equal(health_count(&c, 0, 2, 3), 1); /* third failure in a row */
	assert_false(c.up);
	assert_int_equal(health_count(&c, 0, 2, 3), 0); /* already down: no change */
	assert_int_equal(health_count(&c, 1, 2, 3), 0);
	assert_int_equal(health_count(&c, 0, 2, 3), 0);
	assert_int_equal(health_count(&c, 1, 2, 3), 0);
	assert_int_equal(health_count(&c, 1, 2, 3), 1); /* two successes in a row */
	assert_true(c.up);
	struct health_counts z = {.up = 1};
	assert_int_equal(health_count(&z, 0, 0, 0), 1); /* threshold 0 counts as 1 */
	assert_int_equal(health_count(&z, 1, 0, 0), 1);
}

static void test_backoff_sequence(void **state)
{
	uint32_t want[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
	uint32_t b = 0;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		b = health_backoff_ms(b);
		assert_int_equal(b, want[i]);
	}
	assert_int_equal(health_backoff_ms(UINT32_MAX), HEALTH_BACKOFF_MAX_MS);
}

static void test_passive_report(void **state)
{
	struct route_config *rc;
	char *y = config_text(9, "  unhealthy_threshold: 3\n");
	struct route_snapshot *s = snapshot_for(y, &rc);
	struct route_endpoint *ep = &s->variants[0].endpoints[0];
	assert_int_equal(health_passive_report(s, 0, 0, 1), 0);
	assert_int_equal(health_passive_report(s, 0, 0, 1), 0);
	assert_int_equal(health_passive_report(s, 0, 0, 0), 0); /* a good answer resets */
	assert_int_equal(atomic_load(&ep->fails), 0);
	assert_int_equal(health_passive_report(s, 0, 0, 1), 0);
	assert_int_equal(health_passive_report(s, 0, 0, 1), 0);
	assert_int_equal(atomic_load(&ep->healthy), 1);
	assert_int_equal(health_passive_report(s, 0, 0, 1), 1); /* ejected, said once */
	assert_int_equal(atomic_load(&ep->healthy), 0);
	assert_int_equal(health_passive_report(s, 0, 0, 1), 0);
	assert_int_equal(health_passive_report(s, 5, 0, 1), 0); /* out of range: ignored */
	assert_int_equal(health_passive_report(s, 0, 5, 1), 0);
	assert_int_equal(health_passive_report(NULL, 0, 0, 1), 0);
	route_snapshot_unref(s);
	route_config_unref(rc);
	free(y);

	y = config_text(9, "  enabled: false\n");
	s = snapshot_for(y, &rc);
	for (int i = 0; i < 10; i++)
		assert_int_equal(health_passive_report(s, 0, 0, 1), 0);
	assert_int_equal(atomic_load(&s->variants[0].endpoints[0].healthy), 1);
	route_snapshot_unref(s);
	route_config_unref(rc);
	free(y);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Run base until the endpoint's flag equals want or limit_ms pass; the time it took. */
static int64_t run_until(struct event_base *base, struct route_snapshot *s, int want,
                         uint64_t limit_ms)
{
	uint64_t t0 = mono_ms();
	while (mono_ms() - t0 < limit_ms) {
		if (atomic_load(&s->variants[0].endpoints[0].healthy) == want)
			return (int64_t)(mono_ms() - t0);
		struct timeval tv = {0, 20000};
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	return -1;
}

static void test_active_marks_dead_endpoint(void **state)
{
	struct route_config *rc;
	char *y = config_text(dead_port(), "  interval: 50ms\n  timeout: 40ms\n"
	                                   "  unhealthy_threshold: 3\n");
	struct route_snapshot *s = snapshot_for(y, &rc);
	route_snapshot_ref(s);
	route_publish(s);
	struct event_base *base = event_base_new();
	char err[256];
	struct health *h = health_new(base, err, sizeof(err));
	assert_non_null(h);
	int64_t took = run_until(base, s, 0, 5000);
	assert_true(took >= 0);
	/* three probes 50 ms apart: not before the third (about 100 ms) */
	assert_true(took >= 80);
	health_free(h);
	route_shutdown();
	route_snapshot_unref(s);
	route_config_unref(rc);
	event_base_free(base);
	free(y);
}

static void test_passive_ejection_ends(void **state)
{
	struct route_config *rc;
	/* active checks off the path: a long interval, the first probe fails only once */
	char *y = config_text(dead_port(), "  interval: 60s\n  unhealthy_threshold: 2\n");
	struct route_snapshot *s = snapshot_for(y, &rc);
	route_snapshot_ref(s);
	route_publish(s);
	struct event_base *base = event_base_new();
	char err[256];
	struct health *h = health_new(base, err, sizeof(err));
	assert_non_null(h);
	assert_int_equal(health_passive_report(s, 0, 0, 1), 0);
	assert_int_equal(health_passive_report(s, 0, 0, 1), 1);
	uint64_t t0 = mono_ms();
	int64_t back = run_until(base, s, 1, 4000);
	assert_true(back >= 0);
	uint64_t out = mono_ms() - t0;
	/* out for the first back-off (1 s), give or take a tick */
	assert_true(out >= HEALTH_BACKOFF_MIN_MS - HEALTH_TICK_MS);
	assert_true(out <= HEALTH_BACKOFF_MIN_MS + 3 * HEALTH_TICK_MS + 500);
	assert_int_equal(atomic_load(&s->variants[0].endpoints[0].fails), 0);
	health_free(h);
	route_shutdown();
	route_snapshot_unref(s);
	route_config_unref(rc);
	event_base_free(base);
	free(y);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_count_thresholds),
	    cmocka_unit_test(test_backoff_sequence),
	    cmocka_unit_test(test_passive_report),
	    cmocka_unit_test(test_active_marks_dead_endpoint),
	    cmocka_unit_test(test_passive_ejection_ends),
	};
	log_init("test_health", LOG_LEVEL_ERROR);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	stats_slots_reset();
	libevent_global_shutdown();
	return rc;
}
