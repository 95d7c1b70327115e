/*
 * h1client.c - the built-in HTTP/1.1 upstream client: what HAProxy and nginx
 * do for plain-HTTP backends, without libcurl's per-transfer setup, URL
 * parsing and liveness polls.
 *
 * Endpoints (scheme + authority) are parsed once and cached; each keeps a
 * LIFO stack of idle keep-alive connections (at most maxidle in the engine).
 * A connection owns one persistent EV_READ event for its whole life, so
 * taking it from the pool or giving it back costs no epoll_ctl; readable while
 * idle means the peer closed or sent junk, and it is closed. The request is
 * written at once with sendmsg (head + body, no copy of the body unless asked);
 * EV_WRITE is armed only on EAGAIN. The response is parsed with hard limits
 * (status line, header count and bytes, body size) and the body lands in the
 * result's evbuffer (read straight into it once the head is parsed).
 *
 * Host names (localhost too) are resolved by router/resolve.c on a thread of
 * its own: the loop never waits on DNS. An endpoint keeps the last good answer
 * (up to 8 addresses) and asks again when a new connection is needed and the
 * answer is older than the refresh interval (60 s, libcurl's DNS cache
 * default), or after no address would take a connection; meanwhile, and when
 * a refresh fails (logged once), the last good answer serves. A new connection
 * tries the addresses in order, from the one that took the last one. Requests
 * for a name never resolved yet wait (bounded) for the first answer.
 *
 * Errors keep the proxy's retry contract: UPSTREAM_ERR_CONNECT only when the
 * request cannot have reached a backend. A reused connection that dies before
 * any response byte (the keep-alive race) gets the request once more on a
 * fresh connection, as libcurl does; a failed connect then is a "reset".
 */
#include "h1client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "resolve.h"
#include "upstream.h"

#define H1_HEADER_ARENA          4096        /* response header entries of one transfer, reused */
#define H1_MAX_RESP_HEADERS      256         /* as the libcurl engine */
#define H1_MAX_RESP_HEADER_BYTES (64 * 1024) /* status line + header lines */
#define H1_MAX_LINE              (8 * 1024 + 512)
#define H1_MAX_KEY               255
/* request line + limits.max_header (<= 1 MiB) + the forwarding headers we add */
#define H1_MAX_REQ_HEAD   (1024 * 1024 + 64 * 1024)
#define H1_MAX_ENDPOINTS  256 /* more distinct endpoints go through libcurl */
#define H1_MAX_AUTHORITY  300
#define H1_READ_CHUNK     16384
#define H1_BODY_READ_MAX  (256 * 1024)
#define H1_MAX_FREE_XFERS 256
#define H1_MAX_TIMEOUTS   8
#define H1_MAX_CHUNK_LINE 1024
#define H1_MAX_WAITING    1024 /* requests per endpoint waiting for a first answer */
#define H1_DNS_REFRESH_MS 60000

struct h1_xfer;

struct h1_conn;

struct h1_endpoint {
	struct h1client *c;
	char authority[H1_MAX_AUTHORITY + 1]; /* "host:port" as written: the cache key */
	size_t alen;
	int usable;  /* 0: not ours (a malformed authority): libcurl reports it */
	int literal; /* an IP address: addrs[0] forever, no lookups */
	char host[H1_MAX_AUTHORITY + 1], port[8];
	struct sockaddr_storage addrs[RESOLVE_MAX_ADDRS]; /* the last good answer */
	socklen_t lens[RESOLVE_MAX_ADDRS];
	size_t n_addrs;
	size_t prefer;           /* the address that took the last new connection */
	uint64_t resolved_us;    /* when addrs came; 0: refresh at the next connect */
	int resolving;           /* a lookup is on its way */
	int failing;             /* the last lookup failed (logged once) */
	unsigned gen;            /* lookups started */
	struct h1_xfer *waiting; /* FIFO of transfers waiting for a first answer */
	size_t n_waiting;
	struct h1_conn *idle; /* LIFO stack of idle connections */
	struct h1_endpoint *next;
};

enum h1_state {
	H1_RESOLVING,  /* waiting for the first answer for the endpoint's name */
	H1_CONNECTING, /* waiting for the connect */
	H1_STATUS,     /* waiting for a status line */
	H1_HEADERS,
	H1_BODY_LENGTH,
	H1_CHUNK_SIZE,
	H1_CHUNK_DATA,
	H1_CHUNK_CRLF,
	H1_TRAILERS,
	H1_BODY_CLOSE, /* delimited by the peer's close */
	H1_DONE,
};

struct h1_conn {
	struct h1client *c;
	struct h1_endpoint *ep;
	int fd;
	struct event *rev; /* EV_READ | EV_PERSIST, added from connect to close */
	struct event *wev; /* EV_WRITE, armed on EAGAIN and while connecting */
	size_t addr_i;     /* which of ep->addrs */
	struct evbuffer *rb;
	struct h1_xfer *x;           /* NULL while idle */
	int reused;                  /* served a response before */
	int in_idle;                 /* on ep->idle */
	struct h1_conn *prev, *next; /* in ep->idle while idle */
};

struct h1_xfer {
	struct upstream_transfer hdr; /* first: upstream_cancel dispatches on it */
	struct h1client *c;
	struct h1_endpoint *ep;
	struct h1_conn *conn;
	struct event *tmo; /* whole-transfer timeout, and deferred failures */
	char *head;        /* the request head, kept across reuse of this struct */
	size_t head_len, head_cap;
	const char *body;
	size_t body_len;
	char *body_copy;
	size_t sent; /* bytes of head + body written */
	int is_head, resent, keepalive, has_cl, has_te, te_chunked, close_token, http10;
	int writing; /* the request is not all written yet */
	int in_1xx;  /* reading an interim response's headers */
	int pending; /* fail with pending_err from the timer event */
	int waiting; /* on ep->waiting */
	int fresh;   /* started by the answer it waited for: no refresh for it */
	unsigned wait_gen;
	size_t tried; /* addresses tried for this connection */
	int conn_errno;
	struct h1_xfer *wnext; /* in ep->waiting */
	uint64_t cl;
	enum h1_state state;
	enum upstream_err pending_err;
	long status;
	uint64_t remaining; /* body bytes (Content-Length) or chunk bytes left */
	size_t got;         /* response bytes seen */
	size_t header_count, header_bytes;
	struct evkeyvalq headers; /* entries in harena, or malloc'd one block each past it */
	char *harena;             /* kept across transfers; H1_HEADER_ARENA bytes */
	size_t harena_used;
	struct evbuffer *body_buf;
	size_t max_response;
	upstream_done_cb cb;
	void *arg;
	uint64_t start_us;
	char detail[512];
	struct h1_xfer *prev, *next; /* in c->xfers, or c->free_xfers (next) */
};

struct h1client {
	struct event_base *base;
	size_t maxidle, n_idle, n_xfers, n_free, connects;
	struct h1_endpoint *eps;
	size_t n_eps;
	struct h1_xfer *xfers, *free_xfers;
	struct {
		uint32_t ms;
		const struct timeval *tv;
	} timeouts[H1_MAX_TIMEOUTS];
	size_t n_timeouts;
	struct resolver *resolver; /* made with the first name to resolve */
	uint32_t refresh_ms;
};

static void on_conn_read(evutil_socket_t fd, short what, void *arg);
static void on_conn_write(evutil_socket_t fd, short what, void *arg);

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static const char *state_name(enum h1_state s)
{
	static const char *const names[] = {
	    [H1_RESOLVING] = "resolving",
	    [H1_CONNECTING] = "connecting",
	    [H1_STATUS] = "status",
	    [H1_HEADERS] = "headers",
	    [H1_BODY_LENGTH] = "body-length",
	    [H1_CHUNK_SIZE] = "chunk-size",
	    [H1_CHUNK_DATA] = "chunk-data",
	    [H1_CHUNK_CRLF] = "chunk-crlf",
	    [H1_TRAILERS] = "trailers",
	    [H1_BODY_CLOSE] = "body-close",
	    [H1_DONE] = "done",
	};
	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

#define H1_BIT(s) (1u << (s))

/*
 * The one place a transfer's state changes. Any state may start over
 * (STATUS: a fresh attempt) or end (DONE); the rest follow the response's
 * grammar. An impossible change aborts.
 */
static void xfer_set_state(struct h1_xfer *x, enum h1_state to)
{
	static const unsigned next[] = {
	    [H1_RESOLVING] = 0,
	    [H1_CONNECTING] = H1_BIT(H1_STATUS) | H1_BIT(H1_CONNECTING), /* the next address */
	    [H1_STATUS] = H1_BIT(H1_HEADERS) | H1_BIT(H1_CONNECTING) | H1_BIT(H1_RESOLVING),
	    [H1_HEADERS] = H1_BIT(H1_BODY_LENGTH) | H1_BIT(H1_CHUNK_SIZE) | H1_BIT(H1_BODY_CLOSE),
	    [H1_BODY_LENGTH] = 0,
	    [H1_CHUNK_SIZE] = H1_BIT(H1_CHUNK_DATA) | H1_BIT(H1_TRAILERS),
	    [H1_CHUNK_DATA] = H1_BIT(H1_CHUNK_CRLF),
	    [H1_CHUNK_CRLF] = H1_BIT(H1_CHUNK_SIZE),
	    [H1_TRAILERS] = 0,
	    [H1_BODY_CLOSE] = 0,
	    [H1_DONE] = 0,
	};
	if (to != H1_STATUS && to != H1_DONE && !(next[x->state] & H1_BIT(to))) {
		log_error("upstream: impossible state change %s -> %s", state_name(x->state),
		          state_name(to));
		abort();
	}
	log_debug("upstream: %s %s -> %s", x->ep ? x->ep->authority : "?", state_name(x->state),
	          state_name(to));
	x->state = to;
}

/* ---- endpoints ---- */

/* "http://AUTH[/...]" -> AUTH (pointer into url, length). 0, or -1 if not http://. */
static int split_url(const char *url, const char **auth, size_t *alen, const char **path)
{
	if (url == NULL || strncasecmp(url, "http://", 7) != 0)
		return -1;
	const char *a = url + 7;
	size_t n = strcspn(a, "/?#");
	*auth = a;
	*alen = n;
	*path = a + n;
	return n == 0 || n > H1_MAX_AUTHORITY ? -1 : 0;
}

/* A host name as getaddrinfo takes it: letters, digits, '-', '_', '.'. */
static int is_hostname(const char *h)
{
	size_t n = strlen(h);
	if (n == 0 || n > RESOLVE_MAX_HOST)
		return 0;
	return strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == n;
}

/*
 * "host[:port]" or "[v6][:port]" into ep->host and ep->port; a literal address
 * straight into addrs[0]. 0, or -1 if malformed.
 */
static int parse_authority(struct h1_endpoint *ep)
{
	const char *a = ep->authority, *port = NULL;
	size_t hl;
	if (a[0] == '[') {
		const char *end = strchr(a, ']');
		if (end == NULL)
			return -1;
		hl = (size_t)(end - a - 1);
		memcpy(ep->host, a + 1, hl);
		if (end[1] == ':')
			port = end + 2;
		else if (end[1] != '\0')
			return -1;
	} else {
		const char *colon = strchr(a, ':');
		hl = colon ? (size_t)(colon - a) : ep->alen;
		memcpy(ep->host, a, hl);
		port = colon ? colon + 1 : NULL;
	}
	ep->host[hl] = '\0';
	long p = 80;
	if (port != NULL) {
		char *end;
		p = strtol(port, &end, 10);
		if (*port == '\0' || *end != '\0' || p < 1 || p > 65535)
			return -1;
	}
	snprintf(ep->port, sizeof(ep->port), "%ld", p);
	struct sockaddr_in *v4 = (struct sockaddr_in *)&ep->addrs[0];
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ep->addrs[0];
	memset(&ep->addrs[0], 0, sizeof(ep->addrs[0]));
	ep->literal = 1;
	ep->n_addrs = 1;
	if (a[0] != '[' && inet_pton(AF_INET, ep->host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)p);
		ep->lens[0] = sizeof(*v4);
		return 0;
	}
	if (a[0] == '[' && inet_pton(AF_INET6, ep->host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)p);
		ep->lens[0] = sizeof(*v6);
		return 0;
	}
	ep->literal = 0;
	ep->n_addrs = 0;
	return a[0] != '[' && is_hostname(ep->host) ? 0 : -1;
}

/* The cached endpoint for an authority (most recently used first); NULL if full. */
static struct h1_endpoint *endpoint_get(struct h1client *c, const char *auth, size_t alen)
{
	struct h1_endpoint **pp = &c->eps;
	for (struct h1_endpoint *ep = c->eps; ep; pp = &ep->next, ep = ep->next) {
		if (ep->alen == alen && memcmp(ep->authority, auth, alen) == 0) {
			*pp = ep->next; /* to the front */
			ep->next = c->eps;
			c->eps = ep;
			return ep;
		}
	}
	if (c->n_eps >= H1_MAX_ENDPOINTS)
		return NULL;
	struct h1_endpoint *ep = calloc(1, sizeof(*ep));
	if (ep == NULL)
		return NULL;
	memcpy(ep->authority, auth, alen);
	ep->alen = alen;
	ep->c = c;
	ep->usable = parse_authority(ep) == 0;
	ep->next = c->eps;
	c->eps = ep;
	c->n_eps++;
	return ep;
}

static const char *request_url(const struct upstream_request *req)
{
	return req->url ? req->url : req->endpoint;
}

int h1client_serves(struct h1client *c, const struct upstream_request *req)
{
	const char *auth, *path;
	size_t alen;
	if (c == NULL || split_url(request_url(req), &auth, &alen, &path) < 0)
		return 0;
	struct h1_endpoint *ep = endpoint_get(c, auth, alen);
	return ep != NULL && ep->usable;
}

/* ---- connections ---- */

static void idle_remove(struct h1_conn *k)
{
	if (k->prev)
		k->prev->next = k->next;
	else
		k->ep->idle = k->next;
	if (k->next)
		k->next->prev = k->prev;
	k->prev = k->next = NULL;
	k->in_idle = 0;
	k->c->n_idle--;
}

/* Close and free a connection, idle or in use (its transfer then has none). */
static void conn_close(struct h1_conn *k)
{
	if (k == NULL)
		return;
	if (k->in_idle)
		idle_remove(k);
	if (k->x)
		k->x->conn = NULL;
	if (k->rev)
		event_free(k->rev);
	if (k->wev)
		event_free(k->wev);
	if (k->rb)
		evbuffer_free(k->rb);
	if (k->fd >= 0)
		close(k->fd);
	free(k);
}

/* Back on top of its endpoint's stack if it can carry another request, else closed. */
static void conn_release(struct h1_conn *k, int keepalive)
{
	struct h1client *c = k->c;
	k->x = NULL;
	event_del(k->wev);
	if (!keepalive || evbuffer_get_length(k->rb) > 0 || c->n_idle >= c->maxidle) {
		conn_close(k);
		return;
	}
	k->reused = 1;
	k->in_idle = 1;
	k->prev = NULL;
	k->next = k->ep->idle;
	if (k->next)
		k->next->prev = k;
	k->ep->idle = k;
	c->n_idle++;
}

/* A new non-blocking connection to ep's address i; *now = 1 if already connected. NULL + errno. */
static struct h1_conn *conn_open(struct h1client *c, struct h1_endpoint *ep, size_t i, int *now)
{
	struct h1_conn *k = calloc(1, sizeof(*k));
	if (k == NULL)
		return NULL;
	k->c = c;
	k->ep = ep;
	k->addr_i = i;
	k->fd = socket(ep->addrs[i].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (k->fd < 0)
		goto fail;
	int one = 1;
	setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	k->rb = evbuffer_new();
	k->rev = event_new(c->base, k->fd, EV_READ | EV_PERSIST, on_conn_read, k);
	k->wev = event_new(c->base, k->fd, EV_WRITE, on_conn_write, k);
	if (k->rb == NULL || k->rev == NULL || k->wev == NULL) {
		errno = ENOMEM;
		goto fail;
	}
	c->connects++;
	*now = connect(k->fd, (struct sockaddr *)&ep->addrs[i], ep->lens[i]) == 0;
	if (!*now && errno != EINPROGRESS)
		goto fail;
	return k;
fail:;
	int e = errno;
	conn_close(k);
	errno = e;
	return NULL;
}

/* ---- transfers ---- */

static void on_xfer_timer(evutil_socket_t fd, short what, void *arg);

/* Take x off its endpoint's list of transfers waiting for a first answer. */
static void waiting_remove(struct h1_xfer *x)
{
	struct h1_endpoint *ep = x->ep;
	for (struct h1_xfer **pp = &ep->waiting; *pp != NULL; pp = &(*pp)->wnext) {
		if (*pp == x) {
			*pp = x->wnext;
			ep->n_waiting--;
			break;
		}
	}
	x->wnext = NULL;
	x->waiting = 0;
}

/* Drops the response headers: arena entries are reused, the others freed. */
static void headers_clear(struct h1_xfer *x)
{
	struct evkeyval *kv;
	while ((kv = TAILQ_FIRST(&x->headers)) != NULL) {
		TAILQ_REMOVE(&x->headers, kv, next);
		if (x->harena == NULL || (char *)kv < x->harena ||
		    (char *)kv >= x->harena + H1_HEADER_ARENA)
			free(kv);
	}
	x->harena_used = 0;
}

static void xfer_destroy(struct h1_xfer *x)
{
	if (x == NULL)
		return;
	if (x->tmo)
		event_free(x->tmo);
	if (x->body_buf)
		evbuffer_free(x->body_buf);
	headers_clear(x);
	free(x->harena);
	free(x->body_copy);
	free(x->head);
	free(x);
}

static struct h1_xfer *xfer_alloc(struct h1client *c)
{
	struct h1_xfer *x = c->free_xfers;
	if (x != NULL) {
		c->free_xfers = x->next;
		c->n_free--;
		struct event *tmo = x->tmo;
		struct evbuffer *b = x->body_buf;
		char *head = x->head, *harena = x->harena;
		size_t cap = x->head_cap;
		memset(x, 0, sizeof(*x));
		x->tmo = tmo, x->body_buf = b, x->head = head, x->head_cap = cap;
		x->harena = harena;
	} else {
		x = calloc(1, sizeof(*x));
		if (x == NULL)
			return NULL;
		TAILQ_INIT(&x->headers);
		x->tmo = evtimer_new(c->base, on_xfer_timer, x);
		x->body_buf = evbuffer_new();
		if (x->tmo == NULL || x->body_buf == NULL) {
			xfer_destroy(x);
			return NULL;
		}
	}
	x->c = c;
	x->hdr.kind = UPSTREAM_KIND_BUILTIN;
	TAILQ_INIT(&x->headers);
	x->next = c->xfers;
	if (c->xfers)
		c->xfers->prev = x;
	c->xfers = x;
	c->n_xfers++;
	return x;
}

/* Out of the in-flight list, connection closed, struct kept for the next transfer. */
static void xfer_recycle(struct h1_xfer *x)
{
	struct h1client *c = x->c;
	conn_close(x->conn);
	if (x->waiting)
		waiting_remove(x);
	if (x->prev)
		x->prev->next = x->next;
	else if (c->xfers == x)
		c->xfers = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->prev = x->next = NULL;
	c->n_xfers--;
	event_del(x->tmo);
	headers_clear(x);
	free(x->body_copy);
	x->body_copy = NULL;
	evbuffer_drain(x->body_buf, evbuffer_get_length(x->body_buf));
	if (c->n_free >= H1_MAX_FREE_XFERS || x->head_cap > 16384) {
		xfer_destroy(x);
		return;
	}
	x->next = c->free_xfers;
	c->free_xfers = x;
	c->n_free++;
}

/* Hand the result to the owner after the connection went back to the pool (or closed). */
static void complete(struct h1_xfer *x, enum upstream_err err, const char *detail)
{
	struct h1_conn *k = x->conn;
	if (k != NULL) {
		x->conn = NULL;
		conn_release(k, err == UPSTREAM_OK && x->keepalive && !x->writing);
	}
	event_del(x->tmo);
	xfer_set_state(x, H1_DONE);
	struct upstream_result r = {
	    .err = err,
	    .status = err == UPSTREAM_OK ? x->status : 0,
	    .headers = &x->headers,
	    .body = x->body_buf,
	    .detail = err == UPSTREAM_OK ? "" : detail,
	    .elapsed_us = now_us() - x->start_us,
	};
	x->cb(&r, x->arg);
	xfer_recycle(x);
}

/* complete() with a formatted detail kept in x. */
static void fail(struct h1_xfer *x, enum upstream_err err, const char *fmt, const char *a,
                 const char *b)
{
	snprintf(x->detail, sizeof(x->detail), fmt, a, b);
	complete(x, err, x->detail);
}

/* Fail from the event loop (safe from inside h1client_submit). */
static void fail_soon(struct h1_xfer *x, enum upstream_err err, const char *fmt, const char *a,
                      const char *b)
{
	conn_close(x->conn);
	snprintf(x->detail, sizeof(x->detail), fmt, a, b);
	x->pending = 1;
	x->pending_err = err;
	event_active(x->tmo, EV_TIMEOUT, 1);
}

static void on_xfer_timer(evutil_socket_t fd, short what, void *arg)
{
	struct h1_xfer *x = arg;
	(void)fd;
	(void)what;
	if (x->pending) {
		complete(x, x->pending_err, x->detail);
		return;
	}
	if (x->waiting) {
		fail(x, UPSTREAM_ERR_TIMEOUT, "no address for %s within the timeout%s", x->ep->host,
		     " (the resolver has not answered)");
		return;
	}
	conn_close(x->conn); /* mid-exchange: never reused */
	complete(x, UPSTREAM_ERR_TIMEOUT, "no full response within the timeout");
}

/* Write what is left of the request. 0 (done or EAGAIN: EV_WRITE armed), -1 + errno. */
static int xfer_send(struct h1_xfer *x)
{
	struct h1_conn *k = x->conn;
	struct iovec iov[2];
	int n = 0;
	if (x->sent < x->head_len) {
		iov[n].iov_base = x->head + x->sent;
		iov[n++].iov_len = x->head_len - x->sent;
	}
	size_t boff = x->sent > x->head_len ? x->sent - x->head_len : 0;
	if (boff < x->body_len) {
		iov[n].iov_base = (char *)x->body + boff;
		iov[n++].iov_len = x->body_len - boff;
	}
	while (n > 0) {
		struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(k->fd, &msg, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return event_add(k->wev, NULL) < 0 ? -1 : 0;
		if (w < 0)
			return -1;
		x->sent += (size_t)w;
		if (x->sent >= x->head_len + x->body_len)
			break;
		/* a partial write: the rest when the socket drains */
		return event_add(k->wev, NULL) < 0 ? -1 : 0;
	}
	x->writing = 0;
	return 0;
}

/* Reset the response side, for a fresh attempt. */
static void xfer_rewind(struct h1_xfer *x)
{
	headers_clear(x);
	evbuffer_drain(x->body_buf, evbuffer_get_length(x->body_buf));
	x->sent = 0;
	x->writing = 1;
	x->got = 0;
	x->status = 0;
	x->in_1xx = x->has_cl = x->has_te = x->te_chunked = x->close_token = x->http10 = 0;
	x->cl = x->remaining = 0;
	x->header_count = x->header_bytes = 0;
	xfer_set_state(x, H1_STATUS);
}

/* ---- names ---- */

static void on_resolved(const struct resolve_result *res, void *arg);
static void xfer_start(struct h1_xfer *x);

/* Ask for a fresh answer for ep's name unless one is on its way. 0, or -1 with why. */
static int ep_lookup(struct h1_endpoint *ep, char *why, size_t whylen)
{
	struct h1client *c = ep->c;
	if (ep->resolving)
		return 0;
	if (c->resolver == NULL && (c->resolver = resolve_new(c->base, why, whylen)) == NULL)
		return -1;
	if (resolve_start(c->resolver, ep->host, ep->port, on_resolved, ep, why, whylen) < 0)
		return -1;
	ep->resolving = 1;
	ep->gen++;
	log_debug("upstream: resolving %s", ep->host);
	return 0;
}

/* The transfers that waited for lookup gen, in order: started, or failed with why. */
static void waiting_run(struct h1_endpoint *ep, unsigned gen, const char *why)
{
	struct h1_xfer *x;
	/* a callback may cancel others or queue new ones (behind a new lookup): re-read the head */
	while ((x = ep->waiting) != NULL && x->wait_gen == gen) {
		waiting_remove(x);
		x->fresh = 1;
		if (why == NULL)
			xfer_start(x);
		else
			fail(x, UPSTREAM_ERR_CONNECT, "cannot resolve %s: %s", ep->host, why);
	}
}

/* The new answer's index of the address that took the last connection, else 0. */
static size_t same_address(const struct h1_endpoint *ep, const struct resolve_result *res)
{
	if (ep->prefer >= ep->n_addrs)
		return 0;
	for (size_t i = 0; i < res->n; i++)
		if (res->lens[i] == ep->lens[ep->prefer] &&
		    memcmp(&res->addrs[i], &ep->addrs[ep->prefer], res->lens[i]) == 0)
			return i;
	return 0;
}

/* The resolver answered (on the loop): keep a good answer, else the last good one. */
static void on_resolved(const struct resolve_result *res, void *arg)
{
	struct h1_endpoint *ep = arg;
	ep->resolving = 0;
	ep->resolved_us = now_us();
	if (res->err == 0) {
		if (ep->failing)
			log_info("upstream: %s resolves again (%zu addresses)", ep->host, res->n);
		ep->failing = 0;
		ep->prefer = same_address(ep, res);
		memcpy(ep->addrs, res->addrs, sizeof(ep->addrs));
		memcpy(ep->lens, res->lens, sizeof(ep->lens));
		ep->n_addrs = res->n;
		waiting_run(ep, ep->gen, NULL);
		return;
	}
	if (!ep->failing)
		log_warn("upstream: cannot resolve %s: %s%s", ep->host, res->why,
		         ep->n_addrs ? " (using the last good answer meanwhile)" : "");
	ep->failing = 1;
	waiting_run(ep, ep->gen, res->why);
}

/*
 * Before a new connection to a name: refresh an old answer (it serves
 * meanwhile), or queue x behind the first lookup. 1 if x waits (or fails
 * soon), 0 to connect now.
 */
static int xfer_need_name(struct h1_xfer *x)
{
	struct h1_endpoint *ep = x->ep;
	char why[160];
	if (ep->n_addrs > 0) {
		uint64_t age = now_us() - ep->resolved_us;
		int fresh = x->fresh;
		x->fresh = 0;
		if (!fresh && (ep->resolved_us == 0 || age >= (uint64_t)x->c->refresh_ms * 1000u) &&
		    ep_lookup(ep, why, sizeof(why)) < 0)
			log_debug("upstream: cannot refresh %s now: %s", ep->host, why);
		return 0;
	}
	if (ep->n_waiting >= H1_MAX_WAITING) {
		fail_soon(x, UPSTREAM_ERR_CONNECT, "cannot resolve %s: %s", ep->host,
		          "too many requests waiting for its first answer");
		return 1;
	}
	if (ep_lookup(ep, why, sizeof(why)) < 0) {
		fail_soon(x, UPSTREAM_ERR_CONNECT, "cannot resolve %s: %s", ep->host, why);
		return 1;
	}
	struct h1_xfer **pp = &ep->waiting;
	while (*pp != NULL)
		pp = &(*pp)->wnext;
	*pp = x;
	x->wnext = NULL;
	x->waiting = 1;
	x->wait_gen = ep->gen;
	ep->n_waiting++;
	xfer_set_state(x, H1_RESOLVING);
	return 1;
}

/* No address took a connection: fail x, and ask the name again (it may have moved). */
static void xfer_unreachable(struct h1_xfer *x)
{
	struct h1_endpoint *ep = x->ep;
	char why[160];
	if (!ep->literal) {
		ep->resolved_us = 0;
		if (ep_lookup(ep, why, sizeof(why)) < 0)
			log_debug("upstream: cannot refresh %s now: %s", ep->host, why);
	}
	fail_soon(x, x->resent ? UPSTREAM_ERR_RESET : UPSTREAM_ERR_CONNECT,
	          "cannot connect to %s: %s", ep->authority, strerror(x->conn_errno));
}

/*
 * A new connection for x: the endpoint's addresses in turn from the one that
 * took the last connection, each once; then x fails. May run inside
 * h1client_submit: failures are reported with fail_soon.
 */
static void xfer_connect(struct h1_xfer *x)
{
	struct h1_endpoint *ep = x->ep;
	while (x->tried < ep->n_addrs) {
		size_t i = (ep->prefer + x->tried++) % ep->n_addrs;
		int now = 0;
		struct h1_conn *k = conn_open(x->c, ep, i, &now);
		if (k == NULL) {
			x->conn_errno = errno;
			continue;
		}
		k->x = x;
		x->conn = k;
		if (!now) {
			xfer_set_state(x, H1_CONNECTING);
			if (event_add(k->wev, NULL) < 0)
				fail_soon(x, UPSTREAM_ERR_INTERNAL,
				          "cannot watch the connection to %s%s", ep->authority, "");
			return;
		}
		ep->prefer = i;
		if (event_add(k->rev, NULL) < 0 || xfer_send(x) < 0)
			fail_soon(x, UPSTREAM_ERR_RESET, "cannot send the request to %s: %s",
			          ep->authority, strerror(errno));
		return;
	}
	xfer_unreachable(x);
}

/*
 * Put the transfer on a connection and write: the most recently used idle one
 * (a dead one, refusing the write, is closed and the next tried), else a new
 * one; a re-send always on a new one (the pooled ones may be as dead as the
 * one that failed). May run inside h1client_submit: failures are reported
 * with fail_soon.
 */
static void xfer_start(struct h1_xfer *x)
{
	struct h1_endpoint *ep = x->ep;
	xfer_rewind(x);
	while (!x->resent && ep->idle != NULL) { /* a re-send goes on a fresh connection */
		struct h1_conn *k = ep->idle;
		idle_remove(k);
		k->x = x;
		x->conn = k;
		if (xfer_send(x) == 0)
			return;
		conn_close(k); /* nothing was written: as if it had never been there */
		xfer_rewind(x);
	}
	if (!ep->literal && xfer_need_name(x))
		return;
	x->tried = 0;
	x->conn_errno = 0;
	xfer_connect(x);
}

/*
 * The connection died before any response byte. If it was a reused one, the
 * keep-alive race: send once more on a fresh connection. Else a reset.
 */
static void xfer_lost(struct h1_xfer *x, const char *why)
{
	struct h1_conn *k = x->conn;
	if (k != NULL && k->reused && !x->resent && x->got == 0) {
		log_debug("upstream: keep-alive connection to %s lost (%s): sending again",
		          x->ep->authority, why);
		conn_close(k);
		x->resent = 1;
		xfer_start(x);
		return;
	}
	conn_close(k);
	if (x->got == 0)
		fail(x, UPSTREAM_ERR_RESET,
		     "the backend %s closed the connection without answering (%s)",
		     x->ep->authority, why);
	else
		fail(x, UPSTREAM_ERR_RESET,
		     "the backend %s closed the connection in the middle of the "
		     "response (%s)",
		     x->ep->authority, why);
}

static void on_conn_write(evutil_socket_t fd, short what, void *arg)
{
	struct h1_conn *k = arg;
	struct h1_xfer *x = k->x;
	(void)what;
	if (x == NULL)
		return;
	if (x->state == H1_CONNECTING) {
		int e = 0;
		socklen_t len = sizeof(e);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
			e = errno;
		if (e != 0) {
			log_debug("upstream: a connect to %s failed: %s", x->ep->authority,
			          strerror(e));
			conn_close(k);
			x->conn_errno = e;
			xfer_connect(x); /* the next address, or fail */
			return;
		}
		x->ep->prefer = k->addr_i;
		xfer_set_state(x, H1_STATUS);
		if (event_add(k->rev, NULL) < 0) {
			conn_close(k);
			fail(x, UPSTREAM_ERR_INTERNAL, "cannot watch the connection to %s%s",
			     x->ep->authority, "");
			return;
		}
	}
	if (xfer_send(x) < 0) {
		if (x->sent == 0)
			xfer_lost(x, strerror(errno));
		else {
			conn_close(k);
			fail(x, UPSTREAM_ERR_RESET, "cannot send the request to %s: %s",
			     x->ep->authority, strerror(errno));
		}
	}
}

/* ---- response parsing ---- */

/* A complete line at p (avail bytes): 1 (*len bytes, *used with its end), 0 more, -1 too long. */
static int next_line(const char *p, size_t avail, size_t max, size_t *len, size_t *used)
{
	const char *nl = memchr(p, '\n', avail);
	if (nl == NULL)
		return avail > max ? -1 : 0;
	size_t n = (size_t)(nl - p);
	*used = n + 1;
	if (n && p[n - 1] == '\r')
		n--;
	if (n > max)
		return -1;
	*len = n;
	return 1;
}

static int is_tchar(unsigned char ch)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch != 0 && memchr(extra, ch, sizeof(extra) - 1) != NULL);
}

/* "HTTP/1.x NNN ...": 0, or -1 (garbage). */
static int parse_status(struct h1_xfer *x, const char *l, size_t n)
{
	if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || (l[7] != '0' && l[7] != '1') || l[8] != ' ')
		return -1;
	long st = 0;
	for (int i = 9; i < 12; i++) {
		if (l[i] < '0' || l[i] > '9')
			return -1;
		st = st * 10 + (l[i] - '0');
	}
	if (st < 100 || (n > 12 && l[12] != ' '))
		return -1;
	x->status = st;
	x->http10 = l[7] == '0';
	x->in_1xx = st < 200;
	return 0;
}

/* Whether the comma-separated list v (n bytes) has token tok; *last = its last token is tok. */
static int has_token(const char *v, size_t n, const char *tok, int *last)
{
	size_t tl = strlen(tok);
	int found = 0;
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t' && v[i] != ';')
			i++;
		int is = i - s == tl && strncasecmp(v + s, tok, tl) == 0;
		found |= is;
		if (last && i > s)
			*last = is;
		while (i < n && v[i] != ',')
			i++;
	}
	return found;
}

/* The framing headers, as they go by (k: kl bytes). 0, or -1 with x->detail set. */
static int note_framing(struct h1_xfer *x, const char *k, size_t kl, const char *v, size_t vn)
{
	if (kl == 14 && strncasecmp(k, "Content-Length", 14) == 0) {
		uint64_t cl = 0;
		if (vn == 0 || vn > 19)
			goto bad_cl;
		for (size_t i = 0; i < vn; i++) {
			if (v[i] < '0' || v[i] > '9')
				goto bad_cl;
			cl = cl * 10 + (uint64_t)(v[i] - '0');
		}
		if (x->has_cl && cl != x->cl) {
			snprintf(x->detail, sizeof(x->detail),
			         "conflicting Content-Length headers");
			return -1;
		}
		x->has_cl = 1;
		x->cl = cl;
	} else if (kl == 17 && strncasecmp(k, "Transfer-Encoding", 17) == 0) {
		x->has_te = 1;
		has_token(v, vn, "chunked", &x->te_chunked);
	} else if (kl == 10 && strncasecmp(k, "Connection", 10) == 0) {
		x->close_token |= has_token(v, vn, "close", NULL);
	}
	return 0;
bad_cl:
	snprintf(x->detail, sizeof(x->detail), "invalid Content-Length '%.*s'",
	         (int)(vn > 40 ? 40 : vn), v);
	return -1;
}

/* One header line: stored (not for a 1xx). 0, or -1 with x->detail set. */
static int parse_header(struct h1_xfer *x, const char *l, size_t n)
{
	if (l[0] == ' ' || l[0] == '\t')
		return 0; /* obsolete line folding: dropped, as libcurl's engine did */
	const char *colon = memchr(l, ':', n);
	size_t kl = colon ? (size_t)(colon - l) : 0;
	if (kl == 0 || kl > H1_MAX_KEY) {
		snprintf(x->detail, sizeof(x->detail), "malformed response header line '%.40s'", l);
		return -1;
	}
	for (size_t i = 0; i < kl; i++) {
		if (!is_tchar((unsigned char)l[i])) {
			snprintf(x->detail, sizeof(x->detail),
			         "byte 0x%02x in response header name '%.*s'", (unsigned char)l[i],
			         (int)kl, l);
			return -1;
		}
	}
	const char *v = colon + 1;
	size_t vn = n - kl - 1;
	while (vn && (*v == ' ' || *v == '\t'))
		v++, vn--;
	while (vn && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
		vn--;
	for (size_t i = 0; i < vn; i++) {
		unsigned char ch = (unsigned char)v[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
			snprintf(x->detail, sizeof(x->detail),
			         "control character 0x%02x in response header '%.*s'", ch, (int)kl,
			         l);
			return -1;
		}
	}
	if (x->in_1xx)
		return 0;
	if (note_framing(x, l, kl, v, vn) < 0)
		return -1;
	/* evhttp_add_header would validate and copy again (three mallocs): the
	 * entry, its name and its value are built here in one piece, in the
	 * transfer's arena while it has room. Only h1client frees them
	 * (headers_clear); readers see a plain evkeyvalq. */
	size_t need = (sizeof(struct evkeyval) + kl + 1 + vn + 1 + 15) & ~(size_t)15;
	char *mem;
	if (x->harena == NULL)
		x->harena = malloc(H1_HEADER_ARENA);
	if (x->harena != NULL && x->harena_used + need <= H1_HEADER_ARENA) {
		mem = x->harena + x->harena_used;
		x->harena_used += need;
	} else if ((mem = malloc(need)) == NULL) {
		snprintf(x->detail, sizeof(x->detail), "out of memory for a response header");
		return -1;
	}
	struct evkeyval *kv = (struct evkeyval *)(void *)mem;
	char *key = mem + sizeof(*kv), *val = key + kl + 1;
	memcpy(key, l, kl);
	key[kl] = '\0';
	memcpy(val, v, vn);
	val[vn] = '\0';
	kv->key = key;
	kv->value = val;
	TAILQ_INSERT_TAIL(&x->headers, kv, next);
	return 0;
}

/* The blank line after the headers: what frames the body. 0, or -1 with x->detail set. */
static int end_of_head(struct h1_xfer *x)
{
	x->keepalive = !x->http10 && !x->close_token;
	if (x->is_head || x->status == 204 || x->status == 304) {
		xfer_set_state(x, H1_DONE);
	} else if (x->has_te) {
		xfer_set_state(x, x->te_chunked ? H1_CHUNK_SIZE : H1_BODY_CLOSE);
		if (!x->te_chunked || x->has_cl)
			x->keepalive = 0;
	} else if (x->has_cl) {
		if (x->cl > x->max_response) {
			snprintf(x->detail, sizeof(x->detail), "response body over the size limit");
			return -1;
		}
		x->remaining = x->cl;
		xfer_set_state(x, x->cl ? H1_BODY_LENGTH : H1_DONE);
	} else {
		xfer_set_state(x, H1_BODY_CLOSE);
		x->keepalive = 0;
	}
	return 0;
}

/* "1a;ext" -> 0x1a. 0, or -1 with x->detail set. */
static int parse_chunk_size(struct h1_xfer *x, const char *l, size_t n)
{
	uint64_t v = 0;
	size_t i = 0;
	for (; i < n; i++) {
		char ch = l[i];
		int d = ch >= '0' && ch <= '9'   ? ch - '0'
		        : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
		        : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
		                                 : -1;
		if (d < 0)
			break;
		if (v > (UINT64_MAX >> 4))
			goto bad;
		v = v * 16 + (uint64_t)d;
	}
	if (i == 0 || (i < n && l[i] != ';' && l[i] != ' ' && l[i] != '\t'))
		goto bad;
	if (v > x->max_response - evbuffer_get_length(x->body_buf)) {
		snprintf(x->detail, sizeof(x->detail), "response body over the size limit");
		return -1;
	}
	x->remaining = v;
	xfer_set_state(x, v ? H1_CHUNK_DATA : H1_TRAILERS);
	return 0;
bad:
	snprintf(x->detail, sizeof(x->detail), "malformed chunk size line '%.*s'",
	         (int)(n > 40 ? 40 : n), l);
	return -1;
}

/*
 * One line at p + *pos in a state that reads lines. 1 consumed (*pos moved
 * past it), 0 need more, -1 error (x->detail).
 */
static int parse_line(struct h1_xfer *x, const char *p, size_t len, size_t *pos)
{
	const char *l = p + *pos;
	size_t n = 0, used = 0;
	size_t max = x->state == H1_CHUNK_SIZE || x->state == H1_CHUNK_CRLF ? H1_MAX_CHUNK_LINE
	                                                                    : H1_MAX_LINE;
	int r = next_line(l, len - *pos, max, &n, &used);
	if (r <= 0) {
		if (r < 0)
			snprintf(x->detail, sizeof(x->detail), "%s",
			         x->state == H1_STATUS ? "malformed or overlong status line"
			                               : "response line over the limit");
		return r;
	}
	if (x->state != H1_CHUNK_SIZE && x->state != H1_CHUNK_CRLF) {
		x->header_bytes += used;
		if (x->header_bytes > H1_MAX_RESP_HEADER_BYTES ||
		    (n && ++x->header_count > H1_MAX_RESP_HEADERS)) {
			snprintf(x->detail, sizeof(x->detail),
			         "response headers over the limit (%d fields, %d bytes)",
			         H1_MAX_RESP_HEADERS, H1_MAX_RESP_HEADER_BYTES);
			return -1;
		}
	}
	switch (x->state) {
	case H1_STATUS:
		if (parse_status(x, l, n) < 0) {
			snprintf(x->detail, sizeof(x->detail), "malformed status line '%.*s'",
			         (int)(n > 40 ? 40 : n), l);
			r = -1;
		} else if (x->status == 101) {
			snprintf(x->detail, sizeof(x->detail),
			         "unexpected 101 Switching Protocols");
			r = -1;
		} else {
			xfer_set_state(x, H1_HEADERS);
		}
		break;
	case H1_HEADERS:
		if (n > 0)
			r = parse_header(x, l, n) < 0 ? -1 : 1;
		else if (x->in_1xx) { /* an interim response: the real one follows */
			x->in_1xx = 0;
			x->header_count = 0;
			xfer_set_state(x, H1_STATUS);
		} else
			r = end_of_head(x) < 0 ? -1 : 1;
		break;
	case H1_CHUNK_SIZE:
		r = parse_chunk_size(x, l, n) < 0 ? -1 : 1;
		break;
	case H1_CHUNK_CRLF:
		if (n != 0) {
			snprintf(x->detail, sizeof(x->detail), "chunk data longer than its size");
			r = -1;
		}
		if (r > 0)
			xfer_set_state(x, H1_CHUNK_SIZE);
		break;
	case H1_TRAILERS:
		if (n == 0)
			xfer_set_state(x, H1_DONE); /* trailer fields are dropped */
		break;
	default:
		abort();
	}
	*pos += used;
	return r;
}

/* Body bytes from p (avail): 1 the body part ended, 0 need more, -1 (x->detail). */
static int take_body(struct h1_xfer *x, const char *p, size_t avail, size_t *pos)
{
	size_t n = avail;
	if (x->state == H1_BODY_CLOSE) {
		if (avail > x->max_response - evbuffer_get_length(x->body_buf)) {
			snprintf(x->detail, sizeof(x->detail), "response body over the size limit");
			return -1;
		}
	} else if (n > x->remaining) {
		n = (size_t)x->remaining;
	}
	if (n && evbuffer_add(x->body_buf, p, n) < 0) {
		snprintf(x->detail, sizeof(x->detail), "out of memory for the response body");
		return -1;
	}
	*pos += n;
	if (x->state == H1_BODY_CLOSE)
		return 0;
	x->remaining -= n;
	if (x->remaining > 0)
		return 0;
	xfer_set_state(x, x->state == H1_CHUNK_DATA ? H1_CHUNK_CRLF : H1_DONE);
	return 1;
}

/*
 * Run the parser over p (len bytes: the connection's buffer pulled up when
 * in_rb, else a fresh read that rb, empty, never saw); what is not consumed
 * stays in (or goes to) rb. Completes the transfer when done or broken.
 */
static void xfer_parse(struct h1_xfer *x, const char *p, size_t len, int in_rb)
{
	struct evbuffer *rb = x->conn->rb;
	size_t pos = 0;
	int r = 1;
	while (r > 0 && x->state != H1_DONE) {
		switch (x->state) {
		case H1_BODY_LENGTH:
		case H1_CHUNK_DATA:
		case H1_BODY_CLOSE:
			r = take_body(x, p + pos, len - pos, &pos);
			break;
		default:
			r = parse_line(x, p, len, &pos);
			break;
		}
	}
	/* before complete(): bytes left over keep the connection from the pool */
	if (r >= 0 && in_rb)
		evbuffer_drain(rb, pos);
	else if (r >= 0 && pos < len && evbuffer_add(rb, p + pos, len - pos) < 0) {
		snprintf(x->detail, sizeof(x->detail), "out of memory for the response");
		r = -1;
	}
	if (r < 0) {
		conn_close(x->conn);
		complete(x, UPSTREAM_ERR_PROTOCOL, x->detail);
		return;
	}
	if (x->state == H1_DONE)
		complete(x, UPSTREAM_OK, "");
}

/*
 * A read while the head (or a chunked body) is parsed: into a stack buffer,
 * parsed in place when nothing was left over from the last read (the usual
 * case: no buffer allocation), else appended to what was.
 */
static void read_and_parse(struct h1_xfer *x)
{
	struct h1_conn *k = x->conn;
	char buf[H1_READ_CHUNK];
	ssize_t n;
	do
		n = recv(k->fd, buf, sizeof(buf), 0);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n == 0 && x->state == H1_BODY_CLOSE) {
		x->keepalive = 0;
		complete(x, UPSTREAM_OK, "");
		return;
	}
	if (n <= 0) {
		xfer_lost(x, n == 0 ? "end of stream" : strerror(errno));
		return;
	}
	x->got += (size_t)n;
	if (evbuffer_get_length(k->rb) == 0) {
		xfer_parse(x, buf, (size_t)n, 0);
		return;
	}
	const char *p = NULL;
	if (evbuffer_add(k->rb, buf, (size_t)n) == 0)
		p = (const char *)evbuffer_pullup(k->rb, -1);
	if (p == NULL) {
		conn_close(k);
		complete(x, UPSTREAM_ERR_INTERNAL, "out of memory for the response");
		return;
	}
	xfer_parse(x, p, evbuffer_get_length(k->rb), 1);
}

/* Read into buf at most want bytes: >0, 0 at EOF, -1 (errno; EAGAIN: nothing yet). */
static ssize_t read_into(int fd, struct evbuffer *buf, size_t want)
{
	struct evbuffer_iovec v;
	if (evbuffer_reserve_space(buf, (ev_ssize_t)want, &v, 1) < 1) {
		errno = ENOMEM;
		return -1;
	}
	size_t len = v.iov_len < want ? v.iov_len : want;
	ssize_t n;
	do
		n = recv(fd, v.iov_base, len, 0);
	while (n < 0 && errno == EINTR);
	v.iov_len = n > 0 ? (size_t)n : 0;
	evbuffer_commit_space(buf, &v, 1);
	return n;
}

static void on_conn_read(evutil_socket_t fd, short what, void *arg)
{
	struct h1_conn *k = arg;
	struct h1_xfer *x = k->x;
	(void)what;
	if (x == NULL) { /* idle: the peer closed, or sent what nobody asked for */
		conn_close(k);
		return;
	}
	if ((x->state != H1_BODY_LENGTH && x->state != H1_BODY_CLOSE) ||
	    evbuffer_get_length(k->rb) > 0) {
		read_and_parse(x);
		return;
	}
	/* a body with a length or up to the close: straight into the result */
	size_t room = x->max_response - evbuffer_get_length(x->body_buf);
	size_t want = x->state == H1_BODY_LENGTH && x->remaining < H1_BODY_READ_MAX
	                  ? (size_t)x->remaining
	                  : H1_BODY_READ_MAX;
	if (x->state == H1_BODY_CLOSE && want > room)
		want = room + 1; /* one byte over tells the limit is passed */
	ssize_t n = read_into(fd, x->body_buf, want);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n > 0) {
		x->got += (size_t)n;
		if (x->state == H1_BODY_CLOSE) {
			if (evbuffer_get_length(x->body_buf) > x->max_response) {
				conn_close(k);
				complete(x, UPSTREAM_ERR_PROTOCOL,
				         "response body over the size limit");
			}
			return;
		}
		x->remaining -= (uint64_t)n;
		if (x->remaining == 0)
			complete(x, UPSTREAM_OK, "");
		return;
	}
	if (n == 0 && x->state == H1_BODY_CLOSE) {
		x->keepalive = 0;
		complete(x, UPSTREAM_OK, "");
		return;
	}
	xfer_lost(x, n == 0 ? "end of stream" : strerror(errno));
}

/* ---- the engine ---- */

struct h1client *h1client_new(struct event_base *base, size_t maxidle, char *err, size_t errlen)
{
	struct h1client *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		snprintf(err, errlen, "cannot create the HTTP/1.1 client (out of memory)");
		return NULL;
	}
	c->base = base;
	c->maxidle = maxidle;
	c->refresh_ms = H1_DNS_REFRESH_MS;
	return c;
}

void h1client_free(struct h1client *c)
{
	if (c == NULL)
		return;
	resolve_free(c->resolver); /* no answers from here on */
	while (c->xfers != NULL)
		h1client_cancel(&c->xfers->hdr);
	while (c->eps != NULL) {
		struct h1_endpoint *ep = c->eps;
		while (ep->idle != NULL)
			conn_close(ep->idle);
		c->eps = ep->next;
		free(ep);
	}
	while (c->free_xfers != NULL) {
		struct h1_xfer *x = c->free_xfers;
		c->free_xfers = x->next;
		xfer_destroy(x);
	}
	free(c);
}

void h1client_set_dns_refresh(struct h1client *c, uint32_t ms)
{
	if (c != NULL)
		c->refresh_ms = ms;
}

size_t h1client_inflight(const struct h1client *c)
{
	return c ? c->n_xfers : 0;
}

size_t h1client_connects(const struct h1client *c)
{
	return c ? c->connects : 0;
}

size_t h1client_idle(const struct h1client *c)
{
	return c ? c->n_idle : 0;
}

void h1client_cancel(struct upstream_transfer *t)
{
	if (t == NULL)
		return;
	struct h1_xfer *x = (struct h1_xfer *)t;
	xfer_recycle(x); /* closes its connection: it may be mid-exchange */
}

/* ---- building the request ---- */

static int head_put(struct h1_xfer *x, const char *s, size_t n)
{
	if (x->head_len + n > x->head_cap) {
		size_t cap = x->head_cap ? x->head_cap : 1024;
		while (cap < x->head_len + n)
			cap *= 2;
		if (cap > H1_MAX_REQ_HEAD)
			cap = H1_MAX_REQ_HEAD; /* doubling may pass a limit that is no power of 2 */
		if (cap < x->head_len + n)
			return -1;
		char *p = realloc(x->head, cap);
		if (p == NULL)
			return -1;
		x->head = p;
		x->head_cap = cap;
	}
	memcpy(x->head + x->head_len, s, n);
	x->head_len += n;
	return 0;
}

static int head_puts(struct h1_xfer *x, const char *s)
{
	return head_put(x, s, strlen(s));
}

/* libcurl-style "Name: value" / "Name;" (empty) / "Name:" (removes a default) lines. */
static int head_put_slist(struct h1_xfer *x, const struct curl_slist *l, int *own_host)
{
	for (; l; l = l->next) {
		const char *s = l->data;
		size_t n = strlen(s);
		size_t kl = strcspn(s, ":;");
		if (kl == 0 || kl == n || strpbrk(s, "\r\n") != NULL)
			return -1;
		const char *v = s + kl + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		if (s[kl] == ':' && *v == '\0')
			continue; /* "Name:" removes one of libcurl's own headers: we add none */
		if ((kl == 14 && strncasecmp(s, "Content-Length", 14) == 0) ||
		    (kl == 17 && strncasecmp(s, "Transfer-Encoding", 17) == 0))
			continue; /* framing is ours */
		if (kl == 4 && strncasecmp(s, "Host", 4) == 0)
			*own_host = 1;
		if (head_put(x, s, kl) < 0 || head_put(x, ": ", 2) < 0 || head_puts(x, v) < 0 ||
		    head_put(x, "\r\n", 2) < 0)
			return -1;
	}
	return 0;
}

static int build_head(struct h1_xfer *x, const struct upstream_request *req, const char *path)
{
	char num[48]; /* "Content-Length: " + 20 digits + CRLF */
	int own_host = 0;
	size_t host_at;
	x->head_len = 0;
	if (head_puts(x, req->method) < 0 || head_put(x, " ", 1) < 0)
		return -1;
	const char *target = req->url ? path : req->target;
	if (target == NULL || *target == '\0')
		target = "/";
	if (*target != '/' || strpbrk(target, " \r\n") != NULL)
		return -1;
	if (head_puts(x, target) < 0 || head_put(x, " HTTP/1.1\r\n", 11) < 0)
		return -1;
	host_at = x->head_len;
	if (req->headers) {
		if (head_put_slist(x, req->headers, &own_host) < 0)
			return -1;
	} else if (req->head_block_len) {
		const char *b = req->head_block;
		size_t n = req->head_block_len;
		if (n < 2 || b[n - 2] != '\r' || b[n - 1] != '\n' || head_put(x, b, n) < 0)
			return -1;
	}
	if (!own_host) { /* Host first, as clients send it */
		size_t rest = x->head_len - host_at;
		size_t hl = 8 + x->ep->alen;
		if (head_put(x, "Host: ", 6) < 0 ||
		    head_put(x, x->ep->authority, x->ep->alen) < 0 || head_put(x, "\r\n", 2) < 0)
			return -1;
		char *h = x->head + host_at;
		/* rotate the Host line in front of the others, in place */
		if (rest) {
			char tmp[H1_MAX_AUTHORITY + 8];
			memcpy(tmp, h + rest, hl);
			memmove(h + hl, h, rest);
			memcpy(h, tmp, hl);
		}
	}
	/* the length announced is the length sent (x->body_len: 0 without a body) */
	size_t blen = req->body ? req->body_len : 0;
	int with_body = blen > 0 || strcmp(req->method, "POST") == 0 ||
	                strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0;
	if (with_body) { /* digits by hand: snprintf costs 800 instructions a request */
		char digits[24];
		size_t nd = 0, n = 0;
		do {
			digits[nd++] = (char)('0' + blen % 10);
			blen /= 10;
		} while (blen);
		memcpy(num, "Content-Length: ", 16);
		n = 16;
		while (nd)
			num[n++] = digits[--nd];
		num[n++] = '\r';
		num[n++] = '\n';
		if (head_put(x, num, n) < 0)
			return -1;
	}
	return head_put(x, "\r\n", 2);
}

static const struct timeval *common_timeout(struct h1client *c, uint32_t ms, struct timeval *tv)
{
	for (size_t i = 0; i < c->n_timeouts; i++)
		if (c->timeouts[i].ms == ms)
			return c->timeouts[i].tv;
	tv->tv_sec = ms / 1000;
	tv->tv_usec = (ms % 1000) * 1000;
	if (c->n_timeouts >= H1_MAX_TIMEOUTS)
		return tv;
	const struct timeval *ct = event_base_init_common_timeout(c->base, tv);
	if (ct == NULL)
		return tv;
	c->timeouts[c->n_timeouts].ms = ms;
	c->timeouts[c->n_timeouts++].tv = ct;
	return ct;
}

struct upstream_transfer *h1client_submit(struct h1client *c, const struct upstream_request *req,
                                          char *err, size_t errlen)
{
	const char *auth, *path;
	size_t alen;
	struct h1_xfer *x = NULL;
	if (split_url(request_url(req), &auth, &alen, &path) < 0) {
		snprintf(err, errlen, "not an http:// URL");
		goto fail;
	}
	struct h1_endpoint *ep = endpoint_get(c, auth, alen);
	if (ep == NULL || !ep->usable) {
		snprintf(err, errlen, "the built-in client cannot reach %.*s", (int)alen, auth);
		goto fail;
	}
	x = xfer_alloc(c);
	if (x == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	x->ep = ep;
	x->cb = req->cb;
	x->arg = req->arg;
	x->max_response = req->max_response;
	x->start_us = now_us();
	x->is_head = strcmp(req->method, "HEAD") == 0;
	if (build_head(x, req, path) < 0) {
		snprintf(err, errlen,
		         "cannot build the request to %.*s (bad target or header, or "
		         "over 1088 KiB)",
		         (int)alen, auth);
		goto fail;
	}
	curl_slist_free_all(req->headers);
	x->body = req->body;
	x->body_len = req->body ? req->body_len : 0;
	if (req->copy_body && x->body_len) {
		x->body_copy = malloc(x->body_len);
		if (x->body_copy == NULL) {
			snprintf(err, errlen, "out of memory");
			xfer_recycle(x);
			return NULL;
		}
		memcpy(x->body_copy, req->body, x->body_len);
		x->body = x->body_copy;
	}
	if (req->timeout_ms) {
		struct timeval tv;
		event_add(x->tmo, common_timeout(c, req->timeout_ms, &tv));
	}
	xfer_start(x);
	return &x->hdr;
fail:
	curl_slist_free_all(req->headers);
	if (x)
		xfer_recycle(x);
	return NULL;
}
