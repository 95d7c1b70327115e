/*
 * front.c - the proxy listener's HTTP/1.1 connections (see front.h).
 *
 * States of a connection: HEAD (waiting for / reading a request head) ->
 * BODY (reading its body) -> INFLIGHT (handed to the request callback) ->
 * WRITING (the answer did not fit in the socket) -> HEAD again, or closed.
 * conn_set_state is the one place that changes state.
 *
 * The read event stays armed for the connection's whole life: bytes that
 * arrive while a request is in flight (pipelining) wait in the buffer, up to
 * its size; a full buffer stops reading until the answer is out. Answers go
 * out with one writev (head + body); only what the socket does not take is
 * copied into an evbuffer, and only then is the write event armed. A
 * connection is freed from a deferred event, never inside its own callback.
 *
 * Time limits are kept without a timer per connection: each connection holds
 * a deadline (a request's first byte + client_timeout; the end of an answer +
 * client_timeout while idle; a blocked write + client_timeout) and one sweep
 * per front end closes the expired ones, every FRONT_SWEEP_MS.
 */
#include "front.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "chunked.h"
#include "log.h"

#define FRONT_SWEEP_MS   250u
#define FRONT_BUF_MIN    (16u * 1024u) /* a connection's buffer, at least max_header + 1 KiB */
#define FRONT_CACHE_MAX  64            /* idle buffers and requests kept per front end */
#define FRONT_ACCEPT_MAX 32            /* connections accepted per wake-up */
#define FRONT_HEAD_MAX   (64u * 1024u) /* an answer's head in the scratch; larger: malloc */
#define FRONT_TLS_CHUNK  16384u        /* bytes per SSL_write */
#define FRONT_LINGER_MS  2000u         /* reading after a closing answer, at most */

enum conn_state {
	CONN_HEAD,
	CONN_BODY,
	CONN_INFLIGHT,
	CONN_WRITING,
};

enum deadline_kind {
	DL_NONE,
	DL_REQUEST,
	DL_IDLE,
	DL_WRITE,
};

struct front_conn;

struct front_req {
	struct front_conn *c;
	size_t body_off, body_len;
	size_t raw_end; /* bytes of buf this request used (head + body as stored) */
	front_abort_cb on_abort;
	void *abort_arg;
	struct front_req *next_free;
	struct front_head h;
};

struct front_conn {
	struct front *f;
	int fd;
	SSL *ssl;
	struct event *rev, *wev;
	enum conn_state state;
	char *buf;
	size_t len, cap;
	struct front_req *req;
	struct chunked ck;
	size_t raw; /* chunked: the next undecoded byte */
	uint64_t deadline_ms;
	enum deadline_kind dl;
	struct evbuffer *out;
	int close_after, dead, over_limit, in_process, read_stopped, unflushed;
	int lingering; /* answered with close: reading (and dropping) until the client's FIN */
	int read_wants_write; /* TLS: SSL_read needs the socket writable */
	char peer[INET6_ADDRSTRLEN];
	struct front_conn *prev, *next;
};

struct front {
	struct event_base *base;
	struct front_config cfg;
	int listen_fd;
	struct event *accept_ev, *sweep_ev, *reap_ev;
	struct front_conn *conns, *dead;
	size_t n_conns, unflushed, buf_cap;
	int draining;
	char *free_bufs[FRONT_CACHE_MAX];
	size_t n_free_bufs;
	struct front_req *free_reqs;
	size_t n_free_reqs;
};

static void process(struct front_conn *c);
static void conn_kill(struct front_conn *c, const char *why);

static const char *state_name(enum conn_state s)
{
	switch (s) {
	case CONN_HEAD:
		return "head";
	case CONN_BODY:
		return "body";
	case CONN_INFLIGHT:
		return "inflight";
	case CONN_WRITING:
		return "writing";
	}
	return "?";
}

static void conn_set_state(struct front_conn *c, enum conn_state to)
{
	static const unsigned char ok[4][4] = {
	    /* from HEAD */ {[CONN_BODY] = 1, [CONN_INFLIGHT] = 1, [CONN_WRITING] = 1},
	    /* BODY */ {[CONN_HEAD] = 1, [CONN_INFLIGHT] = 1, [CONN_WRITING] = 1},
	    /* INFLIGHT */ {[CONN_HEAD] = 1, [CONN_WRITING] = 1},
	    /* WRITING */ {[CONN_HEAD] = 1},
	};
	if (!ok[c->state][to]) {
		log_error("front: impossible state change %s -> %s", state_name(c->state),
		          state_name(to));
		abort();
	}
	c->state = to;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void set_deadline(struct front_conn *c, enum deadline_kind k)
{
	c->dl = k;
	c->deadline_ms = k == DL_NONE ? 0 : now_ms() + c->f->cfg.client_timeout_ms;
}

static void gauge(struct front *f)
{
	if (f->cfg.on_conns)
		f->cfg.on_conns(f->n_conns, f->cfg.arg);
}

/* ---- buffers and requests, recycled ---- */

static int buf_get(struct front_conn *c)
{
	struct front *f = c->f;
	if (c->buf != NULL)
		return 0;
	c->buf = f->n_free_bufs ? f->free_bufs[--f->n_free_bufs] : malloc(f->buf_cap);
	c->cap = f->buf_cap;
	return c->buf ? 0 : -1;
}

static void buf_put(struct front_conn *c)
{
	struct front *f = c->f;
	if (c->buf == NULL)
		return;
	if (c->cap == f->buf_cap && f->n_free_bufs < FRONT_CACHE_MAX)
		f->free_bufs[f->n_free_bufs++] = c->buf;
	else
		free(c->buf);
	c->buf = NULL;
	c->cap = c->len = 0;
}

/* Make room for need bytes in c's buffer (need within the front's bound). 0 or -1. */
static int buf_reserve(struct front_conn *c, size_t need)
{
	if (need <= c->cap)
		return 0;
	size_t cap = c->cap * 2 > need ? c->cap * 2 : need;
	size_t bound = c->f->buf_cap + c->f->cfg.max_body + CHUNKED_MAX_LINE + 16;
	if (cap > bound)
		cap = need > bound ? need : bound;
	char *p = malloc(cap); /* not realloc: a cached buffer must not be resized in place */
	if (p == NULL)
		return -1;
	size_t len = c->len;
	memcpy(p, c->buf, len);
	buf_put(c);
	c->buf = p;
	c->cap = cap;
	c->len = len;
	return 0;
}

static struct front_req *req_get(struct front_conn *c)
{
	struct front *f = c->f;
	struct front_req *r = f->free_reqs;
	if (r != NULL) {
		f->free_reqs = r->next_free;
		f->n_free_reqs--;
	} else if ((r = malloc(sizeof(*r))) == NULL) {
		return NULL;
	}
	r->c = c;
	r->body_off = r->body_len = r->raw_end = 0;
	r->on_abort = NULL;
	r->abort_arg = NULL;
	return r;
}

static void req_put(struct front *f, struct front_req *r)
{
	if (r == NULL)
		return;
	if (f->n_free_reqs < FRONT_CACHE_MAX) {
		r->next_free = f->free_reqs;
		f->free_reqs = r;
		f->n_free_reqs++;
	} else {
		free(r);
	}
}

/* ---- the request API ---- */

const char *front_req_method(const struct front_req *r)
{
	return r->c->buf + r->h.method;
}

const char *front_req_target(const struct front_req *r)
{
	return r->c->buf + r->h.target;
}

int front_req_is_head(const struct front_req *r)
{
	return r->h.head_method;
}

const char *front_req_peer(const struct front_req *r)
{
	return r->c->peer;
}

const char *front_req_header(const struct front_req *r, const char *name)
{
	size_t n = strlen(name);
	int first = name[0] | 0x20;
	const char *b = r->c->buf;
	for (size_t i = 0; i < r->h.n_fields; i++) {
		const struct front_field *f = &r->h.fields[i];
		if (f->name_len == n && (b[f->name] | 0x20) == first &&
		    strcasecmp(b + f->name, name) == 0)
			return b + f->value;
	}
	return NULL;
}

int front_req_field(const struct front_req *r, size_t i, const char **name, const char **value)
{
	if (i >= r->h.n_fields)
		return 0;
	*name = r->c->buf + r->h.fields[i].name;
	*value = r->c->buf + r->h.fields[i].value;
	return 1;
}

const void *front_req_body(const struct front_req *r, size_t *len)
{
	*len = r->body_len;
	return r->body_len ? r->c->buf + r->body_off : NULL;
}

void front_req_set_abort(struct front_req *r, front_abort_cb cb, void *arg)
{
	r->on_abort = cb;
	r->abort_arg = arg;
}

/* ---- writing ---- */

static const char *reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 206:
		return "Partial Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 304:
		return "Not Modified";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 417:
		return "Expectation Failed";
	case 422:
		return "Unprocessable Content";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	}
	return status < 300   ? "OK"
	       : status < 400 ? "Redirect"
	       : status < 500 ? "Client Error"
	                      : "Server Error";
}

/* Decimal of v at the end of out (at least 20 bytes); returns the first digit. */
static char *u64_text(uint64_t v, char *end)
{
	*--end = '\0';
	do
		*--end = (char)('0' + v % 10);
	while (v /= 10);
	return end;
}

static void add(char *p, size_t *len, const char *s, size_t n)
{
	memcpy(p + *len, s, n);
	*len += n;
}

/* The answer's head into p (at least head_len + 160 bytes). Returns its length. */
static size_t build_head(char *p, int status, const char *head, size_t head_len, int has_length,
                         int send_length, uint64_t body_len, int close, int http10_keep)
{
	char num[24];
	size_t n = 0;
	add(p, &n, "HTTP/1.1 ", 9);
	char *s = u64_text((uint64_t)(status < 100 || status > 999 ? 500 : status), num + 24);
	add(p, &n, s, strlen(s));
	p[n++] = ' ';
	const char *rs = reason(status);
	add(p, &n, rs, strlen(rs));
	add(p, &n, "\r\n", 2);
	if (head_len)
		add(p, &n, head, head_len);
	if (!has_length && send_length) {
		add(p, &n, "Content-Length: ", 16);
		s = u64_text(body_len, num + 24);
		add(p, &n, s, strlen(s));
		add(p, &n, "\r\n", 2);
	}
	if (close)
		add(p, &n, "Connection: close\r\n", 19);
	else if (http10_keep)
		add(p, &n, "Connection: keep-alive\r\n", 24);
	add(p, &n, "\r\n", 2);
	return n;
}

/* Flush c->out. 1 all written, 0 would block (write event armed), -1 the client is gone. */
static int flush_out(struct front_conn *c)
{
	while (evbuffer_get_length(c->out) > 0) {
		if (c->ssl == NULL) {
			int n = evbuffer_write(c->out, c->fd);
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
				break;
			if (n <= 0)
				return -1;
			continue;
		}
		size_t len = evbuffer_get_length(c->out);
		int chunk = (int)(len < FRONT_TLS_CHUNK ? len : FRONT_TLS_CHUNK);
		unsigned char *p = evbuffer_pullup(c->out, chunk);
		if (p == NULL)
			return -1;
		ERR_clear_error();
		int n = SSL_write(c->ssl, p, chunk);
		if (n > 0) {
			evbuffer_drain(c->out, (size_t)n);
			continue;
		}
		int e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_WRITE)
			break;
		if (e == SSL_ERROR_WANT_READ)
			return 0; /* the persistent read event retries */
		ERR_clear_error();
		return -1;
	}
	if (evbuffer_get_length(c->out) == 0) {
		if (c->state == CONN_WRITING)
			event_del(c->wev);
		return 1;
	}
	event_add(c->wev, NULL);
	return 0;
}

/* The current request is answered (written or queued): forget it, keep what follows. */
static void request_done(struct front_conn *c)
{
	struct front_req *r = c->req;
	size_t used = r->raw_end;
	if (used < c->len)
		memmove(c->buf, c->buf + used, c->len - used);
	c->len -= used < c->len ? used : c->len;
	req_put(c->f, r);
	c->req = NULL;
}

/* Back to reading requests after an answer was fully written. */
static void answer_written(struct front_conn *c)
{
	if (c->state != CONN_HEAD)
		conn_set_state(c, CONN_HEAD);
	if (c->close_after || c->f->draining) {
		/* Lingering close: what the client still sends (a refused body) is read
		 * and dropped, so that closing does not reset the answer away. */
		if (c->ssl != NULL || c->f->draining || shutdown(c->fd, SHUT_WR) < 0) {
			conn_kill(c, NULL);
			return;
		}
		c->lingering = 1;
		c->len = 0;
		buf_put(c);
		c->dl = DL_IDLE;
		c->deadline_ms = now_ms() + FRONT_LINGER_MS;
		if (c->read_stopped) {
			c->read_stopped = 0;
			event_add(c->rev, NULL);
		}
		return;
	}
	if (c->read_stopped) {
		c->read_stopped = 0;
		event_add(c->rev, NULL);
	}
	if (c->len == 0) {
		buf_put(c);
		set_deadline(c, DL_IDLE);
		if (c->ssl != NULL && SSL_pending(c->ssl) > 0)
			event_active(c->rev, EV_READ, 0);
	} else if (!c->in_process) {
		event_active(c->rev, EV_READ, 0); /* pipelined bytes: parsed on the next turn */
	}
}

/* writev head + body straight to the socket; the rest is copied into c->out. */
static void send_answer(struct front_conn *c, const char *head, size_t hn, struct evbuffer *body,
                        const void *bytes, size_t blen)
{
	size_t sent = 0;
	if (c->ssl == NULL && (c->out == NULL || evbuffer_get_length(c->out) == 0)) {
		struct iovec iov[17];
		int n_iov = 1;
		iov[0].iov_base = (void *)head;
		iov[0].iov_len = hn;
		size_t total = hn;
		if (body != NULL) {
			struct evbuffer_iovec v[16];
			int k = evbuffer_peek(body, -1, NULL, v, 16);
			for (int i = 0; i < k && i < 16; i++) {
				iov[n_iov].iov_base = v[i].iov_base;
				iov[n_iov++].iov_len = v[i].iov_len;
				total += v[i].iov_len;
			}
		} else if (blen) {
			iov[n_iov].iov_base = (void *)bytes;
			iov[n_iov++].iov_len = blen;
			total += blen;
		}
		ssize_t w = writev(c->fd, iov, n_iov);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			if (body)
				evbuffer_drain(body, evbuffer_get_length(body));
			conn_kill(c, NULL);
			return;
		}
		sent = w > 0 ? (size_t)w : 0;
		size_t body_total = body ? evbuffer_get_length(body) : blen;
		if (sent == hn + body_total) {
			if (body)
				evbuffer_drain(body, body_total);
			answer_written(c);
			return;
		}
		(void)total;
	}
	if (c->out == NULL && (c->out = evbuffer_new()) == NULL) {
		conn_kill(c, "out of memory");
		return;
	}
	size_t hs = sent < hn ? sent : hn;
	size_t bs = sent - hs;
	evbuffer_add(c->out, head + hs, hn - hs);
	if (body != NULL) {
		evbuffer_drain(body, bs);
		evbuffer_add_buffer(c->out, body);
	} else if (blen > bs) {
		evbuffer_add(c->out, (const char *)bytes + bs, blen - bs);
	}
	int r = flush_out(c);
	if (r < 0) {
		conn_kill(c, NULL);
	} else if (r > 0) {
		answer_written(c);
	} else {
		conn_set_state(c, CONN_WRITING);
		c->unflushed = 1;
		c->f->unflushed++;
		set_deadline(c, DL_WRITE);
	}
}

static void reply_conn(struct front_conn *c, int status, const char *head, size_t head_len,
                       int has_length, struct evbuffer *body, const void *bytes, size_t len,
                       int close)
{
	struct front_req *r = c->req;
	int is_head = r != NULL && r->h.head_method;
	int minor = r != NULL ? r->h.minor : 1;
	if (r == NULL || !r->h.keep_alive || c->f->draining || c->over_limit)
		close = 1;
	c->close_after |= close;
	uint64_t body_len = body ? evbuffer_get_length(body) : len;
	int no_body = is_head || status == 204 || status == 304 || status < 200;
	if (no_body) {
		if (body)
			evbuffer_drain(body, body_len);
		body = NULL;
		len = 0;
	}
	static _Thread_local char scratch[FRONT_HEAD_MAX + 256];
	char *hp = head_len + 256 <= sizeof(scratch) ? scratch : malloc(head_len + 256);
	if (hp == NULL) {
		conn_kill(c, "out of memory");
		return;
	}
	size_t hn = build_head(hp, status, head, head_len, has_length,
	                       !(is_head || status == 204 || status == 304 || status < 200),
	                       body_len, c->close_after, minor == 0);
	if (r != NULL)
		request_done(c);
	send_answer(c, hp, hn, body, bytes, len);
	if (hp != scratch)
		free(hp);
}

void front_reply(struct front_req *r, int status, const char *head, size_t head_len, int has_length,
                 struct evbuffer *body, const void *bytes, size_t len, int close)
{
	struct front_conn *c = r->c;
	if (c->state != CONN_INFLIGHT || c->req != r) {
		log_error("front: an answer for a request that is not in flight");
		abort();
	}
	reply_conn(c, status, head, head_len, has_length, body, bytes, len, close);
}

/* JSON string body of s into out (cap > 6), truncated to fit. */
static size_t json_escape(char *out, size_t cap, const char *s)
{
	size_t n = 0;
	for (; *s && n + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			out[n++] = '\\';
			out[n++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
		} else {
			out[n++] = (char)ch;
		}
	}
	out[n] = '\0';
	return n;
}

static void error_conn(struct front_conn *c, int status, const char *cause, const char *message,
                       const char *extra, int close)
{
	char msg[1024], body[1200], head[1024];
	json_escape(msg, sizeof(msg), message);
	int bn = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"cause\":\"%s\"}\n", msg, cause);
	if (bn < 0 || (size_t)bn >= sizeof(body))
		bn = (int)strlen(body);
	int hn = snprintf(head, sizeof(head), "Content-Type: application/json\r\n%s%s",
	                  status == 503 ? "Retry-After: 1\r\n" : "", extra ? extra : "");
	if (hn < 0 || (size_t)hn >= sizeof(head))
		hn = (int)strlen(head);
	reply_conn(c, status, head, (size_t)hn, 0, NULL, body, (size_t)bn, close);
}

void front_reply_error(struct front_req *r, int status, const char *cause, const char *message,
                       const char *extra_head, int close)
{
	struct front_conn *c = r->c;
	if (c->state != CONN_INFLIGHT || c->req != r) {
		log_error("front: an error answer for a request that is not in flight");
		abort();
	}
	error_conn(c, status, cause, message, extra_head, close);
}

/* A request the front end refuses itself: answered, then the connection closes. */
static void refuse(struct front_conn *c, int status, const char *cause, const char *message)
{
	log_info("front: request from %s refused (%d %s): %s", c->peer, status, cause, message);
	if (c->req == NULL)
		c->req = req_get(c);
	if (c->req != NULL) {
		c->req->raw_end = c->len; /* nothing after it is read */
		c->req->h.keep_alive = 0;
		c->req->h.head_method = 0;
		c->req->h.minor = 1;
	}
	c->close_after = 1;
	if (c->state == CONN_BODY)
		conn_set_state(c, CONN_INFLIGHT);
	else if (c->state == CONN_HEAD)
		conn_set_state(c, CONN_INFLIGHT);
	if (c->f->cfg.on_refused)
		c->f->cfg.on_refused(status, c->f->cfg.arg);
	error_conn(c, status, cause, message, NULL, 1);
}

/* ---- reading ---- */

/* Read what the socket has. 1 bytes added, 0 nothing now, -1 EOF or error. */
static int read_some(struct front_conn *c)
{
	if (buf_get(c) < 0)
		return -1;
	if (c->len == c->cap)
		return 0;
	if (c->ssl == NULL) {
		ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
		if (n > 0) {
			c->len += (size_t)n;
			return 1;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return 0;
		return -1;
	}
	int got = 0;
	while (c->len < c->cap) {
		ERR_clear_error();
		int n = SSL_read(c->ssl, c->buf + c->len, (int)(c->cap - c->len));
		if (n > 0) {
			c->len += (size_t)n;
			got = 1;
			continue;
		}
		int e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_WANT_WRITE) {
			c->read_wants_write = 1;
			event_add(c->wev, NULL);
			break;
		}
		ERR_clear_error();
		return got ? 1 : -1; /* EOF (clean or not) or a TLS error */
	}
	return got;
}

/* The head is parsed: check what the front end decides itself, then read the body. */
static void start_request(struct front_conn *c)
{
	struct front_req *r = c->req;
	struct front_head *h = &r->h;
	r->body_off = h->len;
	if (h->chunked) {
		chunked_init(&c->ck);
		c->raw = h->len;
	}
	if ((h->content_length > 0 || h->chunked) && h->expect_continue) {
		size_t have = c->len - h->len;
		if (h->chunked || have < (size_t)h->content_length) {
			static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
			if (c->ssl == NULL) {
				ssize_t w = write(c->fd, cont, sizeof(cont) - 1);
				(void)w; /* a client that cannot take 25 bytes sends its body anyway
				          */
			} else {
				ERR_clear_error();
				if (SSL_write(c->ssl, cont, sizeof(cont) - 1) <= 0)
					ERR_clear_error();
			}
		}
	}
	conn_set_state(c, CONN_BODY);
}

/* Advance the chunked body. 1 complete, 0 need more, -1 refused (answered). */
static int chunked_body(struct front_conn *c)
{
	struct front_req *r = c->req;
	char err[160];
	size_t out = r->body_len;
	long used = chunked_decode(&c->ck, c->buf + c->raw, c->len - c->raw, c->buf + r->body_off,
	                           &out, c->f->cfg.max_body, err, sizeof(err));
	if (used < 0) {
		int big = strstr(err, "over the limit") != NULL;
		char msg[256];
		snprintf(msg, sizeof(msg), "%s%s", err, big ? " (limits.max_body)" : "");
		refuse(c, big ? 413 : 400, big ? "body_too_large" : "bad_framing", msg);
		return -1;
	}
	r->body_len = out;
	/* keep the undecoded tail right after the decoded body */
	size_t tail = c->len - c->raw - (size_t)used, at = r->body_off + out;
	memmove(c->buf + at, c->buf + c->raw + (size_t)used, tail);
	c->len = at + tail;
	c->raw = at;
	if (c->ck.state != CHUNKED_DONE)
		return 0;
	r->raw_end = at;
	return 1;
}

/* Hand the complete request over. */
static void dispatch(struct front_conn *c)
{
	struct front_req *r = c->req;
	conn_set_state(c, CONN_INFLIGHT);
	set_deadline(c, DL_NONE);
	if (c->over_limit) {
		if (c->f->cfg.on_refused)
			c->f->cfg.on_refused(503, c->f->cfg.arg);
		error_conn(c, 503, "max_connections", "too many client connections", NULL, 1);
		return;
	}
	c->f->cfg.on_request(r, c->f->cfg.arg);
}

/* Parse and dispatch whatever the buffer holds, as far as the state allows. */
static void process(struct front_conn *c)
{
	struct front *f = c->f;
	c->in_process++;
	while (!c->dead) {
		if (c->state == CONN_HEAD) {
			if (c->len == 0)
				break;
			if (c->dl != DL_REQUEST)
				set_deadline(c, DL_REQUEST);
			if (c->req == NULL && (c->req = req_get(c)) == NULL) {
				conn_kill(c, "out of memory");
				break;
			}
			int status = 0;
			const char *cause = NULL;
			char err[256];
			int r = front_parse_head(c->buf, c->len, f->cfg.max_header, f->cfg.max_body,
			                         &c->req->h, &status, &cause, err, sizeof(err));
			if (r == 0)
				break;
			if (r < 0) {
				refuse(c, status, cause, err);
				break;
			}
			start_request(c);
			continue;
		}
		if (c->state != CONN_BODY)
			break;
		struct front_req *r = c->req;
		if (r->h.chunked) {
			int k = chunked_body(c);
			if (k < 0)
				break;
			if (k == 0) {
				if (c->len == c->cap && buf_reserve(c, c->cap * 2) < 0)
					conn_kill(c, "out of memory");
				break;
			}
		} else {
			size_t cl = r->h.content_length > 0 ? (size_t)r->h.content_length : 0;
			size_t need = r->body_off + cl;
			if (c->len < need) {
				if (buf_reserve(c, need) < 0)
					conn_kill(c, "out of memory");
				break;
			}
			r->body_len = cl;
			r->raw_end = need;
		}
		dispatch(c);
	}
	c->in_process--;
	if (!c->dead && c->len == c->cap &&
	    (c->state == CONN_INFLIGHT || c->state == CONN_WRITING) && !c->read_stopped) {
		c->read_stopped = 1; /* pipelined bytes fill the buffer: wait for the answer */
		event_del(c->rev);
	}
}

static void on_write(evutil_socket_t fd, short events, void *arg);

static void on_read(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	struct front_conn *c = arg;
	if (c->lingering) {
		char drop[4096];
		for (int i = 0; i < 16; i++) {
			ssize_t n = read(c->fd, drop, sizeof(drop));
			if (n > 0)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
				return;
			conn_kill(c, NULL);
			return;
		}
		return; /* more on the next turn (the deadline bounds it) */
	}
	if (c->state == CONN_WRITING && c->ssl != NULL) {
		on_write(fd, EV_WRITE, c); /* an SSL_write that wanted to read */
		if (c->dead || c->state == CONN_WRITING)
			return;
	}
	int r = read_some(c);
	if (r < 0) {
		conn_kill(c, NULL);
		return;
	}
	if (c->state == CONN_HEAD || c->state == CONN_BODY)
		process(c);
	else if (c->len == c->cap && !c->read_stopped) {
		c->read_stopped = 1;
		event_del(c->rev);
	}
}

static void on_write(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	struct front_conn *c = arg;
	if (c->read_wants_write) {
		c->read_wants_write = 0;
		if (c->state != CONN_WRITING)
			event_del(c->wev);
		on_read(fd, EV_READ, c);
		if (c->dead)
			return;
	}
	if (c->state != CONN_WRITING)
		return;
	int r = flush_out(c);
	if (r < 0) {
		conn_kill(c, NULL);
		return;
	}
	if (r == 0)
		return;
	c->unflushed = 0;
	c->f->unflushed--;
	answer_written(c);
	if (!c->dead) {
		if (c->f->cfg.on_flushed)
			c->f->cfg.on_flushed(c->f->cfg.arg);
		process(c);
	}
}

/* ---- connections ---- */

static void conn_unlink(struct front_conn **list, struct front_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		*list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void conn_push(struct front_conn **list, struct front_conn *c)
{
	c->prev = NULL;
	c->next = *list;
	if (*list)
		(*list)->prev = c;
	*list = c;
}

static void conn_free(struct front_conn *c)
{
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->out)
		evbuffer_free(c->out);
	req_put(c->f, c->req);
	buf_put(c);
	free(c);
}

/*
 * Close c now (descriptor, TLS) and free it from the reap event. A request in
 * flight is aborted through its callback first; an answer being written no
 * longer counts as unflushed.
 */
static void conn_kill(struct front_conn *c, const char *why)
{
	struct front *f = c->f;
	if (c->dead)
		return;
	c->dead = 1;
	if (why)
		log_info("front: connection from %s closed: %s", c->peer, why);
	if (c->state == CONN_INFLIGHT && c->req != NULL && c->req->on_abort != NULL) {
		front_abort_cb cb = c->req->on_abort;
		c->req->on_abort = NULL;
		cb(c->req, c->req->abort_arg);
	}
	event_del(c->rev);
	event_del(c->wev);
	if (c->ssl != NULL) {
		SSL_set_quiet_shutdown(c->ssl, 1);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	close(c->fd);
	c->fd = -1;
	conn_unlink(&f->conns, c);
	conn_push(&f->dead, c);
	f->n_conns--;
	gauge(f);
	if (c->unflushed) {
		c->unflushed = 0;
		f->unflushed--;
	}
	event_active(f->reap_ev, EV_READ, 0);
	if (f->cfg.on_flushed)
		f->cfg.on_flushed(f->cfg.arg);
}

static void on_reap(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	struct front *f = arg;
	while (f->dead != NULL) {
		struct front_conn *c = f->dead;
		conn_unlink(&f->dead, c);
		conn_free(c);
	}
}

static void peer_text(struct front_conn *c, const struct sockaddr_storage *ss)
{
	c->peer[0] = '\0';
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, c->peer,
		          sizeof(c->peer));
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, c->peer,
		          sizeof(c->peer));
}

static void conn_new(struct front *f, int fd, const struct sockaddr_storage *ss)
{
	struct front_conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto fail;
	c->f = f;
	c->fd = fd;
	peer_text(c, ss);
	c->rev = event_new(f->base, fd, EV_READ | EV_PERSIST, on_read, c);
	c->wev = event_new(f->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
	if (c->rev == NULL || c->wev == NULL)
		goto fail;
	if (f->cfg.new_ssl && (c->ssl = f->cfg.new_ssl(fd)) == NULL)
		goto fail;
	if (event_add(c->rev, NULL) < 0)
		goto fail;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->over_limit = f->n_conns >= f->cfg.max_conns;
	set_deadline(c, DL_IDLE);
	conn_push(&f->conns, c);
	f->n_conns++;
	gauge(f);
	return;
fail:
	log_error("front: cannot set up a client connection (out of memory)");
	if (c != NULL) {
		if (c->ssl)
			SSL_free(c->ssl);
		if (c->rev)
			event_free(c->rev);
		if (c->wev)
			event_free(c->wev);
		free(c);
	}
	close(fd);
}

static void on_accept(evutil_socket_t fd, short events, void *arg)
{
	(void)events;
	struct front *f = arg;
	for (int i = 0; i < FRONT_ACCEPT_MAX; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int s = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (s < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("front: accept: %s", strerror(errno));
			return;
		}
		if (f->n_conns >= 2 * (size_t)f->cfg.max_conns + 16) {
			close(s); /* far past the limit: not even a 503 */
			continue;
		}
		conn_new(f, s, &ss);
	}
}

static void on_sweep(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	struct front *f = arg;
	uint64_t now = now_ms();
	struct front_conn *c = f->conns, *next;
	for (; c != NULL; c = next) {
		next = c->next;
		if (c->dl == DL_NONE || now < c->deadline_ms)
			continue;
		if (c->dl == DL_REQUEST) {
			log_info(
			    "front: client connection cut off: %s sent no whole request within "
			    "client_timeout (%u ms)",
			    c->peer, f->cfg.client_timeout_ms);
			conn_kill(c, NULL);
		} else if (c->dl == DL_WRITE) {
			conn_kill(c, "the client read nothing within client_timeout");
		} else {
			conn_kill(c, NULL); /* idle keep-alive */
		}
	}
}

struct front *front_new(struct event_base *base, int listen_fd, const struct front_config *cfg,
                        char *err, size_t errlen)
{
	struct front *f = calloc(1, sizeof(*f));
	if (f == NULL)
		goto fail;
	f->base = base;
	f->cfg = *cfg;
	f->listen_fd = listen_fd;
	f->buf_cap =
	    cfg->max_header + 1024 > FRONT_BUF_MIN ? cfg->max_header + 1024 : FRONT_BUF_MIN;
	f->accept_ev = event_new(base, listen_fd, EV_READ | EV_PERSIST, on_accept, f);
	f->sweep_ev = event_new(base, -1, EV_PERSIST, on_sweep, f);
	f->reap_ev = event_new(base, -1, 0, on_reap, f);
	if (f->accept_ev == NULL || f->sweep_ev == NULL || f->reap_ev == NULL)
		goto fail;
	uint32_t ms = cfg->client_timeout_ms / 4 < FRONT_SWEEP_MS ? cfg->client_timeout_ms / 4
	                                                          : FRONT_SWEEP_MS;
	if (ms < 10)
		ms = 10;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if (event_add(f->accept_ev, NULL) < 0 || event_add(f->sweep_ev, &tv) < 0)
		goto fail;
	return f;
fail:
	snprintf(err, errlen, "front end: cannot set up (out of memory)");
	if (f == NULL)
		close(listen_fd);
	front_free(f);
	return NULL;
}

void front_drain(struct front *f)
{
	if (f->draining)
		return;
	f->draining = 1;
	if (f->accept_ev) {
		event_free(f->accept_ev);
		f->accept_ev = NULL;
	}
	if (f->listen_fd >= 0) {
		close(f->listen_fd);
		f->listen_fd = -1;
	}
	struct front_conn *c = f->conns, *next;
	for (; c != NULL; c = next) {
		next = c->next;
		if (c->state == CONN_HEAD || c->state == CONN_BODY || c->lingering)
			conn_kill(c, NULL);
		else
			c->close_after = 1;
	}
}

void front_free(struct front *f)
{
	if (f == NULL)
		return;
	f->cfg.on_flushed = NULL;
	while (f->conns != NULL)
		conn_kill(f->conns, NULL);
	on_reap(-1, 0, f);
	if (f->accept_ev)
		event_free(f->accept_ev);
	if (f->sweep_ev)
		event_free(f->sweep_ev);
	if (f->reap_ev)
		event_free(f->reap_ev);
	if (f->listen_fd >= 0)
		close(f->listen_fd);
	while (f->n_free_bufs)
		free(f->free_bufs[--f->n_free_bufs]);
	while (f->free_reqs) {
		struct front_req *r = f->free_reqs;
		f->free_reqs = r->next_free;
		free(r);
	}
	free(f);
}

size_t front_unflushed(const struct front *f)
{
	return f ? f->unflushed : 0;
}
