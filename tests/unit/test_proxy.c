/*
 * test_proxy.c - unit tests for router/proxy.c's header rules: the client
 * framing checks (request smuggling defences) and hop-by-hop detection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "proxy.h"

/* Check a header list given as "Name", "value", ..., NULL. */
static int check(char *err, size_t errlen, ...)
{
	struct evkeyvalq h;
	TAILQ_INIT(&h);
	va_list ap;
	va_start(ap, errlen);
	for (const char *k; (k = va_arg(ap, const char *)) != NULL;)
		evhttp_add_header(&h, k, va_arg(ap, const char *));
	va_end(ap);
	err[0] = '\0';
	int rc = proxy_check_framing(&h, err, errlen);
	evhttp_clear_headers(&h);
	return rc;
}

static void test_framing_accepts(void **state)
{
	char err[128];
	assert_int_equal(check(err, sizeof(err), "Host", "a", NULL), 0);
	assert_int_equal(check(err, sizeof(err), "Content-Length", "12", NULL), 0);
	assert_int_equal(check(err, sizeof(err), "Transfer-Encoding", " Chunked ", NULL), 0);
}

static void test_framing_rejects(void **state)
{
	char err[128];
	assert_int_equal(
	    check(err, sizeof(err), "Content-Length", "5", "content-length", "5", NULL), -1);
	assert_non_null(strstr(err, "duplicate Content-Length"));
	assert_int_equal(check(err, sizeof(err), "Content-Length", "5, 6", NULL), -1);
	assert_non_null(strstr(err, "invalid Content-Length"));
	assert_int_equal(check(err, sizeof(err), "Content-Length", "-1", NULL), -1);
	assert_int_equal(
	    check(err, sizeof(err), "Content-Length", "4", "Transfer-Encoding", "chunked", NULL),
	    -1);
	assert_non_null(strstr(err, "both"));
	assert_int_equal(check(err, sizeof(err), "Transfer-Encoding", "gzip, chunked", NULL), -1);
	assert_non_null(strstr(err, "unsupported Transfer-Encoding"));
	assert_int_equal(check(err, sizeof(err), "Transfer-Encoding", "chunked",
	                       "Transfer-Encoding", "chunked", NULL),
	                 -1);
	assert_non_null(strstr(err, "duplicate Transfer-Encoding"));
}

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
	    cmocka_unit_test(test_framing_accepts),
	    cmocka_unit_test(test_framing_rejects),
	    cmocka_unit_test(test_hop_by_hop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
