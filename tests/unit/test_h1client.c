/*
 * test_h1client.c - unit tests for router/h1client.c against a tiny scripted
 * HTTP server on 127.0.0.1 running on the same event_base: each test sets the
 * raw bytes the server answers and how it behaves (close after the answer,
 * close instead of answering, never answer, read late), then checks what the
 * engine reports and how many connections the server accepted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <netdb.h>
#include <time.h>

#include "h1client.h"
#include "resolve.h"
#include "upstream.h"

#define MAX_CONNS 8

enum srv_mode {
	SRV_ANSWER,       /* answer each request with reply */
	SRV_ANSWER_CLOSE, /* answer, then close */
	SRV_SILENT,       /* read, never answer */
	SRV_CLOSE_2ND,    /* answer the first request of a connection, close on the second */
	SRV_CLOSE_NOW,    /* close on the request, no answer */
};

struct srv;

struct sconn {
	struct srv *s;
	int fd;
	struct event *ev;
	struct evbuffer *in;
	int served;
};

struct srv {
	struct event_base *base;
	int lfd, port;
	struct event *lev;
	int accepts, requests;
	enum srv_mode mode;
	const char *reply;
	size_t reply_len;
	int echo_len;           /* answer "<body bytes>:<sum of body bytes mod 65521>" */
	int read_delay_ms;      /* do not read a connection until this long after accept */
	int trickle;            /* answer 7 bytes at a time, 2 ms apart */
	uint64_t last_body_sum; /* of the last request body */
	char last_req[1024];    /* the last request's first bytes */
	struct sconn conns[MAX_CONNS];
};

struct fixture {
	struct event_base *base;
	struct srv srv;
	struct h1client *c;
};

struct outcome {
	int done;
	enum upstream_err err;
	long status;
	char body[512];
	size_t body_len;
	char detail[256];
	char link[64];
	char all[16384]; /* every response header as "key: value\n", in order */
	uint64_t elapsed_us;
};

static void sconn_close(struct sconn *k)
{
	if (k->ev)
		event_free(k->ev);
	if (k->in)
		evbuffer_free(k->in);
	if (k->fd >= 0)
		close(k->fd);
	memset(k, 0, sizeof(*k));
	k->fd = -1;
}

/* Whether buf holds a whole request (head + Content-Length body); its length in *len. */
static int whole_request(struct evbuffer *buf, size_t *len, size_t *body_at)
{
	struct evbuffer_ptr p = evbuffer_search(buf, "\r\n\r\n", 4, NULL);
	if (p.pos < 0)
		return 0;
	size_t head = (size_t)p.pos + 4;
	char *h = (char *)evbuffer_pullup(buf, (ev_ssize_t)head);
	size_t cl = 0;
	for (size_t i = 0; i + 16 < head; i++)
		if (strncasecmp(h + i, "\r\nContent-Length:", 17) == 0)
			cl = strtoul(h + i + 17, NULL, 10);
	if (evbuffer_get_length(buf) < head + cl)
		return 0;
	*len = head + cl;
	*body_at = head;
	return 1;
}

struct trickle {
	struct event_base *base;
	struct sconn *k;
	const char *p;
	size_t left;
};

static void on_trickle(evutil_socket_t fd, short what, void *arg)
{
	struct trickle *t = arg;
	size_t n = t->left < 7 ? t->left : 7;
	(void)fd;
	(void)what;
	assert_int_equal(write(t->k->fd, t->p, n), (ssize_t)n);
	t->p += n;
	t->left -= n;
	struct timeval tv = {0, 2000};
	if (t->left == 0 || event_base_once(t->base, -1, EV_TIMEOUT, on_trickle, t, &tv) < 0)
		free(t);
}

static void srv_answer(struct srv *s, struct sconn *k, size_t body_len)
{
	if (s->trickle) {
		struct trickle *t = malloc(sizeof(*t));
		*t = (struct trickle){.base = s->base, .k = k, .p = s->reply, .left = s->reply_len};
		on_trickle(-1, 0, t);
		return;
	}
	if (s->echo_len) {
		char a[64];
		int n = snprintf(a, sizeof(a), "%zu:%llu", body_len,
		                 (unsigned long long)s->last_body_sum);
		char r[128];
		int m =
		    snprintf(r, sizeof(r), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", n, a);
		assert_int_equal(write(k->fd, r, (size_t)m), m);
		return;
	}
	assert_int_equal(write(k->fd, s->reply, s->reply_len), (ssize_t)s->reply_len);
}

static void on_sconn(evutil_socket_t fd, short what, void *arg)
{
	struct sconn *k = arg;
	struct srv *s = k->s;
	(void)what;
	int n = evbuffer_read(k->in, fd, 65536);
	if (n <= 0) {
		sconn_close(k);
		return;
	}
	size_t len, body_at;
	while (whole_request(k->in, &len, &body_at)) {
		s->requests++;
		memset(s->last_req, 0, sizeof(s->last_req));
		evbuffer_copyout(k->in, s->last_req,
		                 len < sizeof(s->last_req) ? len : sizeof(s->last_req) - 1);
		uint64_t sum = 0;
		unsigned char buf[4096];
		evbuffer_drain(k->in, body_at);
		for (size_t left = len - body_at; left > 0;) {
			size_t m = left < sizeof(buf) ? left : sizeof(buf);
			evbuffer_remove(k->in, buf, m);
			for (size_t i = 0; i < m; i++)
				sum = (sum + buf[i]) % 65521;
			left -= m;
		}
		s->last_body_sum = sum;
		if (s->mode == SRV_SILENT)
			continue;
		if (s->mode == SRV_CLOSE_NOW || (s->mode == SRV_CLOSE_2ND && k->served > 0)) {
			sconn_close(k);
			return;
		}
		srv_answer(s, k, len - body_at);
		k->served++;
		if (s->mode == SRV_ANSWER_CLOSE) {
			sconn_close(k);
			return;
		}
	}
}

static void on_read_later(evutil_socket_t fd, short what, void *arg)
{
	struct sconn *k = arg;
	(void)fd;
	(void)what;
	event_add(k->ev, NULL);
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct srv *s = arg;
	(void)what;
	int a = accept(fd, NULL, NULL);
	if (a < 0)
		return;
	s->accepts++;
	struct sconn *k = NULL;
	for (int i = 0; i < MAX_CONNS && k == NULL; i++)
		if (s->conns[i].ev == NULL)
			k = &s->conns[i];
	if (k == NULL) {
		close(a);
		return;
	}
	evutil_make_socket_nonblocking(a);
	k->s = s;
	k->fd = a;
	k->in = evbuffer_new();
	k->ev = event_new(s->base, a, EV_READ | EV_PERSIST, on_sconn, k);
	if (s->read_delay_ms) {
		struct timeval tv = {0, s->read_delay_ms * 1000};
		event_base_once(s->base, -1, EV_TIMEOUT, on_read_later, k, &tv);
	} else {
		event_add(k->ev, NULL);
	}
}

static void srv_reply(struct srv *s, const char *reply)
{
	s->reply = reply;
	s->reply_len = strlen(reply);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	char err[128];
	fx->base = event_base_new();
	struct srv *s = &fx->srv;
	s->base = fx->base;
	for (int i = 0; i < MAX_CONNS; i++)
		s->conns[i].fd = -1;
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	if (bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(s->lfd, 16) < 0 ||
	    getsockname(s->lfd, (struct sockaddr *)&sin, &len) < 0)
		return -1;
	s->port = ntohs(sin.sin_port);
	s->lev = event_new(fx->base, s->lfd, EV_READ | EV_PERSIST, on_accept, s);
	event_add(s->lev, NULL);
	srv_reply(s, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: yes\r\n\r\nhello");
	fx->c = h1client_new(fx->base, 4, err, sizeof(err));
	*state = fx;
	return fx->c ? 0 : -1;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	h1client_free(fx->c);
	for (int i = 0; i < MAX_CONNS; i++)
		if (fx->srv.conns[i].ev)
			sconn_close(&fx->srv.conns[i]);
	event_free(fx->srv.lev);
	close(fx->srv.lfd);
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
	memset(o->body, 0, sizeof(o->body));
	evbuffer_copyout(res->body, o->body, sizeof(o->body) - 1);
	snprintf(o->detail, sizeof(o->detail), "%s", res->detail);
	const char *h = evhttp_find_header(res->headers, "Link");
	snprintf(o->link, sizeof(o->link), "%s", h ? h : "");
	size_t at = 0;
	const struct evkeyval *kv;
	o->all[0] = '\0';
	TAILQ_FOREACH(kv, res->headers, next)
	{
		int n = snprintf(o->all + at, sizeof(o->all) - at, "%s: %s\n", kv->key, kv->value);
		if (n < 0 || (size_t)n >= sizeof(o->all) - at)
			break;
		at += (size_t)n;
	}
	o->elapsed_us = res->elapsed_us;
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

/* Run the loop for ms milliseconds. */
static void run_for(struct fixture *fx, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	event_base_loopexit(fx->base, &tv);
	event_base_dispatch(fx->base);
}

static struct upstream_transfer *submit_body(struct fixture *fx, const char *method,
                                             const char *body, size_t body_len, uint32_t timeout_ms,
                                             size_t max, struct outcome *o)
{
	char ep[64], err[256];
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", fx->srv.port);
	static const char block[] = "X-From: test\r\n";
	struct upstream_request r = {
	    .method = method,
	    .endpoint = ep,
	    .target = "/x",
	    .head_block = block,
	    .head_block_len = sizeof(block) - 1,
	    .body = body,
	    .body_len = body_len,
	    .timeout_ms = timeout_ms,
	    .max_response = max,
	    .cb = on_done,
	    .arg = o,
	};
	memset(o, 0, sizeof(*o));
	struct upstream_transfer *t = h1client_submit(fx->c, &r, err, sizeof(err));
	assert_non_null(t);
	return t;
}

static void get(struct fixture *fx, const char *method, size_t max, struct outcome *o)
{
	submit_body(fx, method, NULL, 0, 2000, max, o);
	run_until(fx, o);
	assert_int_equal(o->done, 1);
}

static void test_keepalive_reuse(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	for (int i = 0; i < 3; i++) {
		get(fx, "GET", 1024, &o);
		assert_int_equal(o.err, UPSTREAM_OK);
		assert_int_equal(o.status, 200);
		assert_string_equal(o.body, "hello");
	}
	assert_int_equal(fx->srv.accepts, 1);
	assert_int_equal(fx->srv.requests, 3);
	assert_int_equal(h1client_connects(fx->c), 1);
	assert_int_equal(h1client_idle(fx->c), 1);
	assert_int_equal(h1client_inflight(fx->c), 0);
}

static void test_chunked(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	srv_reply(&fx->srv, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	                    "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: t\r\n\r\n");
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_OK);
	assert_string_equal(o.body, "hello world");
	get(fx, "GET", 1024, &o); /* the connection is reusable after the last chunk */
	assert_string_equal(o.body, "hello world");
	assert_int_equal(fx->srv.accepts, 1);
	/* a chunked body over max_response */
	get(fx, "GET", 8, &o);
	assert_int_equal(o.err, UPSTREAM_ERR_PROTOCOL);
	assert_non_null(strstr(o.detail, "size limit"));
	/* a bad chunk size */
	srv_reply(&fx->srv, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_ERR_PROTOCOL);
	assert_non_null(strstr(o.detail, "chunk size"));
}

static void test_close_delimited(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	fx->srv.mode = SRV_ANSWER_CLOSE;
	srv_reply(&fx->srv, "HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nuntil the end");
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_OK);
	assert_string_equal(o.body, "until the end");
	assert_int_equal(h1client_idle(fx->c), 0); /* never pooled */
	get(fx, "GET", 1024, &o);
	assert_string_equal(o.body, "until the end");
	assert_int_equal(fx->srv.accepts, 2);
	/* over max_response */
	get(fx, "GET", 5, &o);
	assert_int_equal(o.err, UPSTREAM_ERR_PROTOCOL);
	/* HTTP/1.0 with a length and Connection: close are not pooled either */
	fx->srv.mode = SRV_ANSWER;
	srv_reply(&fx->srv, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
	get(fx, "GET", 1024, &o);
	assert_string_equal(o.body, "ok");
	assert_int_equal(h1client_idle(fx->c), 0);
	srv_reply(&fx->srv, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
	get(fx, "GET", 1024, &o);
	assert_string_equal(o.body, "ok");
	assert_int_equal(h1client_idle(fx->c), 0);
}

static void test_interim_and_no_body(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	srv_reply(&fx->srv,
	          "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
	          "Link: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_OK);
	assert_int_equal(o.status, 201);
	assert_string_equal(o.body, "ok");
	assert_string_equal(o.link, ""); /* 1xx headers are not the response's */
	/* HEAD: a length but no body, and the connection stays usable */
	srv_reply(&fx->srv, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
	get(fx, "HEAD", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_OK);
	assert_int_equal(o.body_len, 0);
	srv_reply(&fx->srv, "HTTP/1.1 204 No Content\r\n\r\n");
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.status, 204);
	srv_reply(&fx->srv, "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n");
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.status, 304);
	assert_int_equal(o.body_len, 0);
	srv_reply(&fx->srv, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
	get(fx, "GET", 1024, &o);
	assert_string_equal(o.body, "hello");
	assert_int_equal(fx->srv.accepts, 1);
}

static void test_garbage(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	static const char *const bad[] = {
	    "SSH-2.0-OpenSSH_9.2\r\n",
	    "HTTP/1.1 2x0 OK\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	    "HTTP/1.1 101 Switching Protocols\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		srv_reply(&fx->srv, bad[i]);
		get(fx, "GET", 1024, &o);
		assert_int_equal(o.err, UPSTREAM_ERR_PROTOCOL);
		assert_true(strlen(o.detail) > 10);
	}
	srv_reply(&fx->srv, bad[0]);
	get(fx, "GET", 1024, &o);
	assert_non_null(strstr(o.detail, "malformed status line 'SSH-2.0"));
	assert_int_equal(h1client_idle(fx->c), 0); /* a broken connection is not pooled */
}

static void test_header_limits(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	size_t cap = 300 * 16 + 64;
	char *r = malloc(cap);
	size_t n = (size_t)snprintf(r, cap, "HTTP/1.1 200 OK\r\n");
	for (int i = 0; i < 300; i++)
		n += (size_t)snprintf(r + n, cap - n, "X-H%d: v\r\n", i);
	snprintf(r + n, cap - n, "Content-Length: 0\r\n\r\n");
	srv_reply(&fx->srv, r);
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_ERR_PROTOCOL);
	assert_non_null(strstr(o.detail, "over the limit"));
	free(r);
	/* one line over 8 KiB */
	cap = 10000;
	r = malloc(cap);
	n = (size_t)snprintf(r, cap, "HTTP/1.1 200 OK\r\nX-Long: ");
	memset(r + n, 'a', 9000);
	snprintf(r + n + 9000, cap - n - 9000, "\r\n\r\n");
	srv_reply(&fx->srv, r);
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_ERR_PROTOCOL);
	free(r);
	/* a Content-Length over max_response fails before reading the body */
	srv_reply(&fx->srv, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
	get(fx, "GET", 99, &o);
	assert_int_equal(o.err, UPSTREAM_ERR_PROTOCOL);
	assert_non_null(strstr(o.detail, "size limit"));
}

/*
 * Many headers, past the transfer's 4 KiB header arena: every one arrives
 * intact and in order (the arena's and the heap's entries alike), twice over
 * a kept-alive connection so that a reused arena starts clean.
 */
static void test_many_headers(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	size_t cap = 200 * 80 + 64;
	char *r = malloc(cap), *want = malloc(cap);
	size_t n = (size_t)snprintf(r, cap, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
	size_t w = (size_t)snprintf(want, cap, "Content-Length: 2\n");
	for (int i = 0; i < 200; i++) {
		n += (size_t)snprintf(r + n, cap - n, "X-Header-%03d:  value %03d of the set \r\n",
		                      i, i);
		w += (size_t)snprintf(want + w, cap - w, "X-Header-%03d: value %03d of the set\n",
		                      i, i);
	}
	snprintf(r + n, cap - n, "\r\nok");
	srv_reply(&fx->srv, r);
	for (int round = 0; round < 2; round++) {
		get(fx, "GET", 1024, &o);
		assert_int_equal(o.err, UPSTREAM_OK);
		assert_int_equal(o.status, 200);
		assert_string_equal(o.body, "ok");
		assert_string_equal(o.all, want);
	}
	free(r);
	free(want);
}

static void test_timeout(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	fx->srv.mode = SRV_SILENT;
	submit_body(fx, "GET", NULL, 0, 200, 1024, &o);
	run_until(fx, &o);
	assert_int_equal(o.done, 1);
	assert_int_equal(o.err, UPSTREAM_ERR_TIMEOUT);
	assert_true(o.elapsed_us >= 190000 && o.elapsed_us < 2000000);
	assert_int_equal(h1client_idle(fx->c), 0);
}

static void test_refused(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	char ep[64], err[256];
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	getsockname(fd, (struct sockaddr *)&sin, &len);
	close(fd); /* a port nobody listens on */
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d/p", ntohs(sin.sin_port));
	struct upstream_request r = {
	    .method = "GET", .url = ep, .max_response = 10, .cb = on_done, .arg = &o};
	memset(&o, 0, sizeof(o));
	assert_non_null(h1client_submit(fx->c, &r, err, sizeof(err)));
	assert_int_equal(o.done, 0); /* never from inside submit */
	run_until(fx, &o);
	assert_int_equal(o.done, 1);
	assert_int_equal(o.err, UPSTREAM_ERR_CONNECT);
	assert_non_null(strstr(o.detail, "refused"));
}

static void test_idle_closed_by_peer(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	get(fx, "GET", 1024, &o);
	assert_int_equal(h1client_idle(fx->c), 1);
	sconn_close(&fx->srv.conns[0]); /* the backend's keep-alive timeout */
	for (int i = 0; i < 100 && h1client_idle(fx->c) > 0; i++)
		run_for(fx, 10);
	assert_int_equal(h1client_idle(fx->c), 0); /* noticed while idle */
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_OK);
	assert_int_equal(fx->srv.accepts, 2);
}

/* The keep-alive race: a reused connection dies on the request: sent once more. */
static void test_reused_dies(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	fx->srv.mode = SRV_CLOSE_2ND;
	get(fx, "GET", 1024, &o);
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_OK);
	assert_string_equal(o.body, "hello");
	assert_int_equal(fx->srv.accepts, 2);
	assert_int_equal(fx->srv.requests, 3); /* it did reach the backend twice */
	/* the same, but the re-send finds nobody listening: "reset", not "connect" */
	event_del(fx->srv.lev);
	close(fx->srv.lfd);
	fx->srv.lfd = socket(AF_INET, SOCK_STREAM, 0); /* teardown closes it */
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_ERR_RESET);
	assert_non_null(strstr(o.detail, "refused"));
}

/* An answer in 7-byte pieces: lines and chunks split across reads. */
static void test_trickle(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	fx->srv.trickle = 1;
	srv_reply(&fx->srv, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Link: yes\r\n\r\n"
	                    "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: t\r\n\r\n");
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_OK);
	assert_string_equal(o.body, "hello world");
	srv_reply(&fx->srv, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: "
	                    "26\r\n\r\nabcdefghijklmnopqrstuvwxyz");
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_OK);
	assert_string_equal(o.body, "abcdefghijklmnopqrstuvwxyz");
	assert_int_equal(fx->srv.accepts, 1);
}

/* The re-send never takes another pooled connection: they may all be dead. */
static void test_resend_fresh(void **state)
{
	struct fixture *fx = *state;
	struct outcome a, b;
	fx->srv.mode = SRV_CLOSE_2ND; /* every connection dies on its second request */
	submit_body(fx, "GET", NULL, 0, 2000, 1024, &a);
	submit_body(fx, "GET", NULL, 0, 2000, 1024, &b);
	run_until(fx, &a);
	run_until(fx, &b);
	assert_int_equal(a.err, UPSTREAM_OK);
	assert_int_equal(b.err, UPSTREAM_OK);
	assert_int_equal(h1client_idle(fx->c), 2);
	get(fx, "GET", 1024, &a);
	assert_int_equal(a.err, UPSTREAM_OK);
	assert_string_equal(a.body, "hello");
	assert_int_equal(fx->srv.accepts, 3); /* the re-send opened a new one */
}

/* A fresh connection that closes without an answer: a reset, never sent again. */
static void test_fresh_conn_closed(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	fx->srv.mode = SRV_CLOSE_NOW;
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_ERR_RESET);
	assert_non_null(strstr(o.detail, "without answering"));
	assert_int_equal(fx->srv.accepts, 1);
	assert_int_equal(fx->srv.requests, 1);
	/* closed in the middle of a body: a reset too */
	fx->srv.mode = SRV_ANSWER_CLOSE;
	srv_reply(&fx->srv, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf");
	get(fx, "GET", 1024, &o);
	assert_int_equal(o.err, UPSTREAM_ERR_RESET);
	assert_non_null(strstr(o.detail, "middle"));
}

static void test_big_body_partial_writes(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	size_t n = 8u << 20;
	char *body = malloc(n);
	uint64_t sum = 0;
	for (size_t i = 0; i < n; i++) {
		body[i] = (char)('a' + i % 23);
		sum = (sum + (unsigned char)body[i]) % 65521;
	}
	fx->srv.echo_len = 1;
	fx->srv.read_delay_ms = 100; /* the socket buffers fill: writes are partial */
	submit_body(fx, "POST", body, n, 10000, 1024, &o);
	for (int i = 0; i < 20 && !o.done; i++)
		run_until(fx, &o);
	assert_int_equal(o.done, 1);
	assert_int_equal(o.err, UPSTREAM_OK);
	char want[64];
	snprintf(want, sizeof(want), "%zu:%llu", n, (unsigned long long)sum);
	assert_string_equal(o.body, want);
	free(body);
}

static void test_cancel(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	fx->srv.mode = SRV_SILENT;
	struct upstream_transfer *t = submit_body(fx, "GET", NULL, 0, 0, 1024, &o);
	run_for(fx, 50);
	assert_int_equal(h1client_inflight(fx->c), 1);
	h1client_cancel(t);
	assert_int_equal(h1client_inflight(fx->c), 0);
	run_for(fx, 50);
	assert_int_equal(o.done, 0);
	/* and freeing with transfers in flight calls nobody */
	submit_body(fx, "GET", NULL, 0, 0, 1024, &o);
	run_for(fx, 20);
}

/* What the engine writes: request line, Host first, the block, our framing. */
static void test_request_bytes(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	char ep[64], err[256], want[256];
	submit_body(fx, "POST", "abc", 3, 0, 1024, &o);
	run_until(fx, &o);
	snprintf(want, sizeof(want),
	         "POST /x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-From: test\r\nContent-Length: "
	         "3\r\n\r\nabc",
	         fx->srv.port);
	assert_string_equal(fx->srv.last_req, want);
	/* libcurl-style lines: "Name;" is an empty header, "Name:" none, Host replaced */
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d/p?q=1", fx->srv.port);
	struct curl_slist *l = curl_slist_append(NULL, "X-Empty;");
	l = curl_slist_append(l, "Accept:");
	l = curl_slist_append(l, "Host: other");
	struct upstream_request r = {
	    .method = "GET", .url = ep, .headers = l, .max_response = 10, .cb = on_done, .arg = &o};
	memset(&o, 0, sizeof(o));
	assert_non_null(h1client_submit(fx->c, &r, err, sizeof(err)));
	run_until(fx, &o);
	assert_string_equal(fx->srv.last_req,
	                    "GET /p?q=1 HTTP/1.1\r\nX-Empty: \r\nHost: other\r\n\r\n");
	/* a header block that does not end in CRLF, a target with a space: refused at submit */
	r = (struct upstream_request){.method = "GET",
	                              .endpoint = ep,
	                              .target = "/",
	                              .head_block = "X: y",
	                              .head_block_len = 4,
	                              .cb = on_done,
	                              .arg = &o};
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", fx->srv.port);
	assert_null(h1client_submit(fx->c, &r, err, sizeof(err)));
	r.head_block_len = 0;
	r.target = "/a b";
	assert_null(h1client_submit(fx->c, &r, err, sizeof(err)));
	assert_int_equal(h1client_inflight(fx->c), 0);
	/* https and malformed authorities are not served: libcurl's; names are (no lookup here) */
	r.endpoint = "http://example.invalid:80";
	assert_int_equal(h1client_serves(fx->c, &r), 1);
	r.endpoint = "http://bad name:80";
	assert_int_equal(h1client_serves(fx->c, &r), 0);
	r.endpoint = "http://[localhost]:80";
	assert_int_equal(h1client_serves(fx->c, &r), 0);
	r.endpoint = "https://127.0.0.1:1";
	assert_int_equal(h1client_serves(fx->c, &r), 0);
	r.endpoint = "http://[::1]:1";
	assert_int_equal(h1client_serves(fx->c, &r), 1);
	r.endpoint = "http://localhost:1";
	assert_int_equal(h1client_serves(fx->c, &r), 1);
}

/*
 * A request head as big as limits.max_header allows (1 MiB) plus our own
 * forwarding headers is sent whole; past the engine's cap it is refused at
 * submit. A body pointer of NULL announces Content-Length 0, whatever
 * body_len says (the length announced is the length sent).
 */
static void test_big_head_and_null_body(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	char ep[64], err[256];
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", fx->srv.port);
	size_t big = 1000 * 1024; /* between the old 256 KiB cap and 1 MiB */
	char *block = malloc(big + 1);
	assert_non_null(block);
	memcpy(block, "X-Big: ", 7);
	memset(block + 7, 'a', big - 9);
	memcpy(block + big - 2, "\r\n", 2);
	block[big] = '\0';
	struct upstream_request r = {.method = "GET",
	                             .endpoint = ep,
	                             .target = "/big",
	                             .head_block = block,
	                             .head_block_len = big,
	                             .timeout_ms = 3000,
	                             .max_response = 1024,
	                             .cb = on_done,
	                             .arg = &o};
	memset(&o, 0, sizeof(o));
	assert_non_null(h1client_submit(fx->c, &r, err, sizeof(err)));
	run_until(fx, &o);
	assert_int_equal(o.done, 1);
	assert_int_equal(o.err, UPSTREAM_OK);
	assert_int_equal(o.status, 200);
	assert_int_equal(fx->srv.requests, 1);
	assert_non_null(strstr(fx->srv.last_req, "GET /big HTTP/1.1\r\n"));
	free(block);
	/* over the cap (request line + 1 MiB + 64 KiB): refused, nothing sent */
	big = 1024 * 1024 + 64 * 1024;
	block = malloc(big);
	assert_non_null(block);
	memcpy(block, "X-Big: ", 7);
	memset(block + 7, 'a', big - 9);
	memcpy(block + big - 2, "\r\n", 2);
	r.head_block = block;
	r.head_block_len = big;
	memset(&o, 0, sizeof(o));
	assert_null(h1client_submit(fx->c, &r, err, sizeof(err)));
	assert_non_null(strstr(err, "over"));
	free(block);
	/* POST with body NULL but a nonzero body_len: Content-Length: 0, answered */
	static const char small[] = "X-From: test\r\n";
	r = (struct upstream_request){.method = "POST",
	                              .endpoint = ep,
	                              .target = "/n",
	                              .head_block = small,
	                              .head_block_len = sizeof(small) - 1,
	                              .body = NULL,
	                              .body_len = 5,
	                              .timeout_ms = 2000,
	                              .max_response = 1024,
	                              .cb = on_done,
	                              .arg = &o};
	memset(&o, 0, sizeof(o));
	assert_non_null(h1client_submit(fx->c, &r, err, sizeof(err)));
	run_until(fx, &o);
	assert_int_equal(o.err, UPSTREAM_OK);
	assert_int_equal(o.status, 200);
	assert_non_null(strstr(fx->srv.last_req, "Content-Length: 0\r\n"));
}

/* ---- host names, through router/resolve.c and the system's getaddrinfo ---- */

/*
 * The resolver seam: counts lookups of "localhost" (the only name these tests
 * look up: it is in /etc/hosts, so no DNS packet leaves), sleeps, fails, or
 * puts a refused address in front of the real answer.
 */
static struct {
	int calls, answered;
	int delay_ms;
	int fail;      /* an EAI_* code */
	int dead_port; /* put 127.0.0.1:dead_port first */
} hook;

static int on_lookup(const char *host, struct resolve_result *res)
{
	if (strcmp(host, "localhost") != 0)
		return EAI_FAIL; /* never a DNS packet for anything else */
	__atomic_add_fetch(&hook.calls, 1, __ATOMIC_SEQ_CST);
	int ms = __atomic_load_n(&hook.delay_ms, __ATOMIC_SEQ_CST);
	if (ms > 0) {
		struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	int port = __atomic_load_n(&hook.dead_port, __ATOMIC_SEQ_CST);
	if (port) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&res->addrs[0];
		memset(sin, 0, sizeof(*sin));
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		res->lens[0] = sizeof(*sin);
		res->n = 1;
	}
	__atomic_add_fetch(&hook.answered, 1, __ATOMIC_SEQ_CST);
	return __atomic_load_n(&hook.fail, __ATOMIC_SEQ_CST);
}

static int calls(void)
{
	return __atomic_load_n(&hook.calls, __ATOMIC_SEQ_CST);
}

static int setup_names(void **state)
{
	memset(&hook, 0, sizeof(hook));
	resolve_set_test_hook(on_lookup);
	return setup(state);
}

static int teardown_names(void **state)
{
	int r = teardown(state);
	resolve_set_test_hook(NULL);
	return r;
}

static struct upstream_transfer *submit_name(struct fixture *fx, uint32_t timeout_ms,
                                             struct outcome *o)
{
	char ep[64], err[256];
	snprintf(ep, sizeof(ep), "http://localhost:%d/n", fx->srv.port);
	struct upstream_request r = {.method = "GET",
	                             .url = ep,
	                             .timeout_ms = timeout_ms,
	                             .max_response = 1024,
	                             .cb = on_done,
	                             .arg = o};
	memset(o, 0, sizeof(*o));
	struct upstream_transfer *t = h1client_submit(fx->c, &r, err, sizeof(err));
	assert_non_null(t);
	assert_int_equal(o->done, 0); /* never from inside submit */
	return t;
}

static void get_name(struct fixture *fx, struct outcome *o)
{
	submit_name(fx, 2000, o);
	run_until(fx, o);
	assert_int_equal(o->done, 1);
	assert_int_equal(o->err, UPSTREAM_OK);
	assert_string_equal(o->body, "hello");
}

/* Run the loop until n lookups were answered (bounded: 5 s). */
static void wait_answered(struct fixture *fx, int n)
{
	for (int i = 0; i < 500 && __atomic_load_n(&hook.answered, __ATOMIC_SEQ_CST) < n; i++)
		run_for(fx, 10);
	assert_true(__atomic_load_n(&hook.answered, __ATOMIC_SEQ_CST) >= n);
	run_for(fx, 20); /* the answer's way back to the loop */
}

/* A port on 127.0.0.1 nobody listens on. */
static int closed_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	getsockname(fd, (struct sockaddr *)&sin, &len);
	close(fd);
	return ntohs(sin.sin_port);
}

static void test_name_lookup_cached(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	fx->srv.mode = SRV_ANSWER_CLOSE; /* every request needs a new connection */
	get_name(fx, &o);
	assert_int_equal(calls(), 1);
	for (int i = 0; i < 3; i++)
		get_name(fx, &o);
	assert_int_equal(calls(), 1); /* the answer is reused within the refresh interval */
	assert_int_equal(fx->srv.accepts, 4);
	assert_non_null(strstr(fx->srv.last_req, "Host: localhost:"));
}

static void test_name_refresh(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	h1client_set_dns_refresh(fx->c, 0); /* every new connection asks again */
	fx->srv.mode = SRV_ANSWER_CLOSE;
	get_name(fx, &o);
	wait_answered(fx, 1);
	get_name(fx, &o);
	wait_answered(fx, 2);
	assert_int_equal(calls(), 2);
	/* a slow refresh: the old answer serves meanwhile */
	hook.delay_ms = 400;
	get_name(fx, &o);
	assert_true(o.elapsed_us < 300000);
	assert_int_equal(calls(), 3);
	assert_int_equal(__atomic_load_n(&hook.answered, __ATOMIC_SEQ_CST), 2);
	/* while it runs, no second lookup is started */
	get_name(fx, &o);
	assert_int_equal(calls(), 3);
	wait_answered(fx, 3);
	/* a failing refresh: the last good answer still serves, and keeps serving */
	hook.delay_ms = 0;
	hook.fail = EAI_AGAIN;
	get_name(fx, &o);
	wait_answered(fx, 4);
	get_name(fx, &o);
	wait_answered(fx, 5);
	get_name(fx, &o);
	assert_int_equal(fx->srv.accepts, 7);
}

static void test_name_queued_behind_first(void **state)
{
	struct fixture *fx = *state;
	struct outcome o[3];
	hook.delay_ms = 300;
	for (int i = 0; i < 3; i++)
		submit_name(fx, 2000, &o[i]);
	for (int i = 0; i < 3; i++) {
		run_until(fx, &o[i]);
		assert_int_equal(o[i].done, 1);
		assert_int_equal(o[i].err, UPSTREAM_OK);
		assert_true(o[i].elapsed_us >= 250000);
	}
	assert_int_equal(calls(), 1); /* one lookup for all of them */
}

static void test_name_first_lookup_fails(void **state)
{
	struct fixture *fx = *state;
	struct outcome o[2];
	hook.fail = EAI_NONAME;
	hook.delay_ms = 50;
	submit_name(fx, 2000, &o[0]);
	submit_name(fx, 2000, &o[1]);
	for (int i = 0; i < 2; i++) {
		run_until(fx, &o[i]);
		assert_int_equal(o[i].done, 1);
		assert_int_equal(o[i].err, UPSTREAM_ERR_CONNECT);
		assert_non_null(strstr(o[i].detail, "cannot resolve localhost"));
		assert_non_null(strstr(o[i].detail, gai_strerror(EAI_NONAME)));
	}
	assert_int_equal(calls(), 1);
	assert_int_equal(fx->srv.accepts, 0);
	/* failures are not cached: the next request asks again */
	hook.fail = 0;
	get_name(fx, &o[0]);
	assert_int_equal(calls(), 2);
}

static void test_name_timeout_and_cancel_while_waiting(void **state)
{
	struct fixture *fx = *state;
	struct outcome o[3];
	hook.delay_ms = 400;
	submit_name(fx, 100, &o[0]);
	struct upstream_transfer *t = submit_name(fx, 2000, &o[1]);
	submit_name(fx, 2000, &o[2]);
	run_until(fx, &o[0]);
	assert_int_equal(o[0].err, UPSTREAM_ERR_TIMEOUT);
	assert_non_null(strstr(o[0].detail, "localhost"));
	assert_true(o[0].elapsed_us < 300000);
	h1client_cancel(t);
	run_until(fx, &o[2]);
	assert_int_equal(o[2].err, UPSTREAM_OK);
	assert_int_equal(o[1].done, 0); /* cancelled: never called */
	assert_int_equal(h1client_inflight(fx->c), 0);
}

static void test_name_addresses_in_order(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	hook.dead_port = closed_port(); /* answer: 127.0.0.1:dead, then localhost's own */
	fx->srv.mode = SRV_ANSWER_CLOSE;
	get_name(fx, &o);
	assert_int_equal(h1client_connects(fx->c), 2); /* refused, then the next address */
	get_name(fx, &o);
	assert_int_equal(h1client_connects(fx->c), 3); /* straight to the one that worked */
	assert_int_equal(calls(), 1);
	/* no address takes a connection: connect error, and the name is asked again */
	hook.dead_port = 0;
	fx->srv.mode = SRV_ANSWER;
	event_del(fx->srv.lev);
	close(fx->srv.lfd);
	fx->srv.lfd = socket(AF_INET, SOCK_STREAM, 0); /* for teardown to close */
	submit_name(fx, 2000, &o);
	run_until(fx, &o);
	assert_int_equal(o.err, UPSTREAM_ERR_CONNECT);
	assert_non_null(strstr(o.detail, "localhost"));
	wait_answered(fx, 2);
	assert_int_equal(calls(), 2);
}

static void test_name_free_while_resolving(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	hook.delay_ms = 300;
	submit_name(fx, 2000, &o);
	for (int i = 0; i < 100 && calls() == 0; i++)
		run_for(fx, 5);
	assert_int_equal(calls(), 1); /* the thread is inside the lookup */
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	h1client_free(fx->c);
	fx->c = NULL;
	clock_gettime(CLOCK_MONOTONIC, &b);
	long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	assert_true(ms < 200); /* not waiting for the lookup */
	run_for(fx, 400);      /* the thread finishes and frees what it shared, by itself */
	assert_int_equal(o.done, 0);
	assert_int_equal(__atomic_load_n(&hook.answered, __ATOMIC_SEQ_CST), 1);
}

/* Last: the process ends while the thread is still inside a lookup (LSan must stay quiet). */
static void test_name_exit_while_resolving(void **state)
{
	struct fixture *fx = *state;
	struct outcome o;
	hook.delay_ms = 1500;
	submit_name(fx, 2000, &o);
	for (int i = 0; i < 100 && calls() == 0; i++)
		run_for(fx, 5);
	assert_int_equal(calls(), 1);
	h1client_free(fx->c);
	fx->c = NULL;
	assert_int_equal(o.done, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_keepalive_reuse, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_chunked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_delimited, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_interim_and_no_body, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_header_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_headers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idle_closed_by_peer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reused_dies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_trickle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resend_fresh, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fresh_conn_closed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_big_body_partial_writes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_request_bytes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_big_head_and_null_body, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_name_lookup_cached, setup_names, teardown_names),
	    cmocka_unit_test_setup_teardown(test_name_refresh, setup_names, teardown_names),
	    cmocka_unit_test_setup_teardown(test_name_queued_behind_first, setup_names,
	                                    teardown_names),
	    cmocka_unit_test_setup_teardown(test_name_first_lookup_fails, setup_names,
	                                    teardown_names),
	    cmocka_unit_test_setup_teardown(test_name_timeout_and_cancel_while_waiting, setup_names,
	                                    teardown_names),
	    cmocka_unit_test_setup_teardown(test_name_addresses_in_order, setup_names,
	                                    teardown_names),
	    cmocka_unit_test_setup_teardown(test_name_free_while_resolving, setup_names,
	                                    teardown_names),
	    cmocka_unit_test_setup_teardown(test_name_exit_while_resolving, setup_names,
	                                    teardown_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
