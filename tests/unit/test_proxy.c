/*
 * test_proxy.c - unit tests for router/proxy.c's header rules: hop-by-hop
 * detection (the client framing checks moved to the front end: test_front.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "proxy.h"

static void test_hop_by_hop(void **state)
{
	assert_true(proxy_is_hop_by_hop("connection", NULL));
	assert_true(proxy_is_hop_by_hop("Keep-Alive", NULL));
	assert_true(proxy_is_hop_by_hop("te", NULL));
	assert_true(proxy_is_hop_by_hop("Upgrade", NULL));
	assert_true(proxy_is_hop_by_hop("Proxy-Authorization", NULL));
	assert_false(proxy_is_hop_by_hop("X-Secret", NULL));
	assert_true(proxy_is_hop_by_hop("TRANSFER-ENCODING", NULL));
	assert_true(proxy_is_hop_by_hop("trailer", NULL));
	assert_false(proxy_is_hop_by_hop("Tea", NULL));
	assert_false(proxy_is_hop_by_hop("Content-Type", NULL));
	assert_false(proxy_is_hop_by_hop("", NULL));
	assert_true(proxy_is_hop_by_hop("X-Secret", "keep-alive, x-secret"));
	assert_true(proxy_is_hop_by_hop("X-Secret", "X-Secret"));
	assert_false(proxy_is_hop_by_hop("X-Secret", "X-Secretive, close"));
	assert_false(proxy_is_hop_by_hop("Content-Type", "close"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hop_by_hop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
