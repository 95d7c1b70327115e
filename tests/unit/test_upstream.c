/*
 * test_upstream.c - unit tests for router/upstream.c against a real evhttp
 * server on 127.0.0.1 running on the same event_base: GET and POST with an
 * owned body copy, response headers, a refused port, a timeout, a response
 * over max_response, cancel (no callback), and the same request (endpoint +
 * target + header block) through the built-in client and through libcurl.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "upstream.h"

struct fixture {
	struct event_base *base;
	struct evhttp *http;
	struct upstream *up;
	int port;
	int server_conns; /* connections the server saw */
	struct event *slow_ev;
	struct evhttp_request *slow_req;
};

struct outcome {
	int done;
	enum upstream_err err;
	long status;
	char body[256];
	size_t body_len;
	char header[64];
};

static void on_slow_timer(evutil_socket_t fd, short ev, void *arg)
{
	struct fixture *fx = arg;
	evhttp_send_reply(fx->slow_req, 200, "OK", NULL);
	fx->slow_req = NULL;
}

/* /echo: body back; /big: 4 KiB; /slow: answer after 2 s; else "hello". */
static void on_server(struct evhttp_request *req, void *arg)
{
	struct fixture *fx = arg;
	const char *uri = evhttp_request_get_uri(req);
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	evhttp_add_header(evhttp_request_get_output_headers(req), "X-Test", "yes");
	if (strcmp(uri, "/hdr") == 0) { /* the request's X-From, and whether X-Empty came */
		const struct evkeyvalq *in = evhttp_request_get_input_headers(req);
		const char *from = evhttp_find_header(in, "X-From");
		const char *empty = evhttp_find_header(in, "X-Empty");
		evbuffer_add_printf(out, "%s|%s", from ? from : "-", empty ? "empty" : "none");
	} else if (strcmp(uri, "/echo") == 0) {
		evbuffer_add_buffer(out, evhttp_request_get_input_buffer(req));
	} else if (strcmp(uri, "/big") == 0) {
		for (int i = 0; i < 4096; i++)
			evbuffer_add(out, "x", 1);
	} else if (strcmp(uri, "/slow") == 0) {
		fx->slow_req = req;
		struct timeval tv = {2, 0};
		evtimer_add(fx->slow_ev, &tv);
		return;
	} else {
		evbuffer_add_printf(out, "hello");
	}
	evhttp_send_reply(req, strcmp(uri, "/missing") == 0 ? 404 : 200, "OK", NULL);
}

static struct evhttp_bound_socket *bind_any(struct fixture *fx)
{
	struct evhttp_bound_socket *b = evhttp_bind_socket_with_handle(fx->http, "127.0.0.1", 0);
	if (b == NULL)
		return NULL;
	struct sockaddr_storage ss;
	ev_socklen_t len = sizeof(ss);
	getsockname(evhttp_bound_socket_get_fd(b), (struct sockaddr *)&ss, &len);
	fx->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return b;
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	char err[128];
	fx->base = event_base_new();
	fx->http = evhttp_new(fx->base);
	evhttp_set_gencb(fx->http, on_server, fx);
	fx->slow_ev = evtimer_new(fx->base, on_slow_timer, fx);
	if (bind_any(fx) == NULL)
		return -1;
	fx->up = upstream_new(fx->base, 8, err, sizeof(err));
	*state = fx;
	return fx->up ? 0 : -1;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	upstream_free(fx->up);
	if (fx->slow_req)
		evhttp_send_reply(fx->slow_req, 200, "OK", NULL);
	evhttp_free(fx->http);
	event_free(fx->slow_ev);
	event_base_free(fx->base);
	free(fx);
	return 0;
}

static void on_done(const struct upstream_result *res, void *arg)
{
	struct outcome *o = arg;
	o->done++;
	o->err = res->err;
	o->status = res->status;
	o->body_len = evbuffer_get_length(res->body);
	evbuffer_copyout(res->body, o->body, sizeof(o->body) - 1);
	const char *h = evhttp_find_header(res->headers, "X-Test");
	snprintf(o->header, sizeof(o->header), "%s", h ? h : "");
}

/* Run the loop until o is done or 5 s pass (bounded). */
static void run_until(struct fixture *fx, struct outcome *o)
{
	for (int i = 0; i < 500 && !o->done; i++) {
		struct timeval tv = {0, 10000};
		event_base_loopexit(fx->base, &tv);
		event_base_dispatch(fx->base);
	}
}

static struct upstream_transfer *submit(struct fixture *fx, const char *method, const char *path,
                                        const char *body, uint32_t timeout_ms, size_t max,
                                        struct outcome *o)
{
	char url[128], err[256];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", fx->port, path);
	struct upstream_request r = {
	    .method = method,
	    .url = url,
	    .headers = curl_slist_append(NULL, "X-From: test"),
	    .body = body,
	    .body_len = body ? strlen(body) : 0,
	    .copy_body = 1,
	    .timeout_ms = timeout_ms,
	    .max_response = max,
	    .cb = on_done,
	    .arg = o,
	};
	return upstream_submit(fx->up, &r, err, sizeof(err));
}

static void test_get_and_post(void **state)
{
	struct fixture *fx = *state;
	struct outcome o = {0};
	assert_non_null(submit(fx, "GET", "/", NULL, 2000, 1024, &o));
	assert_int_equal(upstream_inflight(fx->up), 1);
	run_until(fx, &o);
	assert_int_equal(o.done, 1);
	assert_int_equal(o.err, UPSTREAM_OK);
	assert_int_equal(o.status, 200);
	assert_string_equal(o.body, "hello");
	assert_string_equal(o.header, "yes");
	assert_int_equal(upstream_inflight(fx->up), 0);

	char body[32];
	strcpy(body, "payload-123");
	struct outcome p = {0};
	assert_non_null(submit(fx, "POST", "/echo", body, 2000, 1024, &p));
	memset(body, 'z', sizeof(body) - 1); /* the transfer owns its copy */
	run_until(fx, &p);
	assert_int_equal(p.err, UPSTREAM_OK);
	assert_string_equal(p.body, "payload-123");

	struct outcome n = {0};
	assert_non_null(submit(fx, "GET", "/missing", NULL, 2000, 1024, &n));
	run_until(fx, &n);
	assert_int_equal(n.err, UPSTREAM_OK);
	assert_int_equal(n.status, 404);
}

static void test_errors(void **state)
{
	struct fixture *fx = *state;
	struct outcome big = {0};
	assert_non_null(submit(fx, "GET", "/big", NULL, 2000, 1000, &big));
	run_until(fx, &big);
	assert_int_equal(big.err, UPSTREAM_ERR_PROTOCOL);

	struct outcome slow = {0};
	assert_non_null(submit(fx, "GET", "/slow", NULL, 200, 1024, &slow));
	run_until(fx, &slow);
	assert_int_equal(slow.err, UPSTREAM_ERR_TIMEOUT);
	assert_string_equal(upstream_err_name(slow.err), "timeout");

	/* A port with no listener: bind one, learn it, close it. */
	int saved = fx->port;
	struct evhttp *tmp = evhttp_new(fx->base);
	struct evhttp_bound_socket *b = evhttp_bind_socket_with_handle(tmp, "127.0.0.1", 0);
	struct sockaddr_storage ss;
	ev_socklen_t len = sizeof(ss);
	getsockname(evhttp_bound_socket_get_fd(b), (struct sockaddr *)&ss, &len);
	fx->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	evhttp_free(tmp);
	struct outcome refused = {0};
	assert_non_null(submit(fx, "GET", "/", NULL, 2000, 1024, &refused));
	run_until(fx, &refused);
	fx->port = saved;
	assert_int_equal(refused.err, UPSTREAM_ERR_CONNECT);
}

static void test_cancel(void **state)
{
	struct fixture *fx = *state;
	struct outcome o = {0};
	struct upstream_transfer *t = submit(fx, "GET", "/slow", NULL, 5000, 1024, &o);
	assert_non_null(t);
	struct outcome after = {0};
	for (int i = 0; i < 5; i++) {
		struct timeval tv = {0, 10000};
		event_base_loopexit(fx->base, &tv);
		event_base_dispatch(fx->base);
	}
	upstream_cancel(t);
	assert_int_equal(upstream_inflight(fx->up), 0);
	/* The engine still works after a cancel; the cancelled callback never runs. */
	assert_non_null(submit(fx, "GET", "/", NULL, 2000, 1024, &after));
	run_until(fx, &after);
	assert_int_equal(after.err, UPSTREAM_OK);
	assert_int_equal(o.done, 0);
}

/* A transfer still running when the engine is freed: no callback, no leak. */
static void test_free_with_inflight(void **state)
{
	struct fixture *fx = *state;
	struct outcome o = {0};
	assert_non_null(submit(fx, "GET", "/slow", NULL, 5000, 1024, &o));
	struct timeval tv = {0, 20000};
	event_base_loopexit(fx->base, &tv);
	event_base_dispatch(fx->base);
	upstream_free(fx->up);
	fx->up = NULL;
	assert_int_equal(o.done, 0);
}

/* endpoint + target + head_block: both clients send the same request. */
static void test_both_clients(void **state)
{
	struct fixture *fx = *state;
	char ep[64], err[256];
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", fx->port);
	static const char block[] = "X-From: block\r\nX-Empty: \r\n";
	for (int c = 0; c < 2; c++) {
		struct outcome o = {0};
		struct upstream_request r = {
		    .method = "POST",
		    .endpoint = ep,
		    .target = "/hdr",
		    .head_block = block,
		    .head_block_len = sizeof(block) - 1,
		    .client = c ? UPSTREAM_CLIENT_LIBCURL : UPSTREAM_CLIENT_BUILTIN,
		    .body = "x",
		    .body_len = 1,
		    .timeout_ms = 2000,
		    .max_response = 1024,
		    .cb = on_done,
		    .arg = &o,
		};
		assert_non_null(upstream_submit(fx->up, &r, err, sizeof(err)));
		assert_int_equal(upstream_inflight(fx->up), 1);
		run_until(fx, &o);
		assert_int_equal(o.err, UPSTREAM_OK);
		assert_string_equal(o.body, "block|empty");
		assert_string_equal(o.header, "yes");
	}
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_get_and_post, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_free_with_inflight, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_both_clients, setup, teardown),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	libevent_global_shutdown();
	return rc;
}
