/*
 * tls.c - the client listener's TLS context and its reload (see tls.h).
 *
 * The current SSL_CTX pointer is guarded by a mutex held only to load it and
 * take a reference (SSL_CTX_up_ref) at accept time, or to swap it on reload:
 * a TLS handshake costs far more than this, and the request path proper takes
 * no lock. The old context is freed by OpenSSL when its last SSL goes.
 *
 * The listener guard (one per worker, no sharing) makes every client
 * connection's bufferevent, keeps a reference on it, and watches its input
 * buffer: the first byte of a request starts a clock that the request
 * callback stops (tls_listener_request). A sweep cuts off connections whose
 * clock ran past the timeout (shutdown of the descriptor: evhttp then sees
 * EOF and frees the connection) and lets go of connections evhttp freed
 * (their callbacks are cleared then). Because the reference keeps the
 * descriptor open until the sweep, the descriptor the sweep shuts down is
 * never a reused one.
 */
#include "tls.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "log.h"

#define TLS_PATH_MAX 4096

/* TLS 1.2: ECDHE key exchange and AEAD only (TLS 1.3 suites are all modern). */
#define TLS_CIPHERS_12                                                                             \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static pthread_mutex_t tls_lock = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *tls_ctx; /* guarded by tls_lock */
static char tls_cert[TLS_PATH_MAX], tls_key[TLS_PATH_MAX];
static atomic_ulong tls_accepted;

/* OpenSSL's queued error, as text, after what; the queue is cleared. */
static void ssl_error(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "unknown error";
	if (e != 0)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s: %s", what, buf);
	ERR_clear_error();
}

static SSL_CTX *ctx_build(const char *cert, const char *key, char *err, size_t errlen)
{
	char what[TLS_PATH_MAX + 64];
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		ssl_error(err, errlen, "tls: cannot create a context");
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1) {
		ssl_error(err, errlen, "tls: cannot set protocol versions and ciphers");
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	                             SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(what, sizeof(what), "tls.cert %s: cannot load the certificate chain",
		         cert);
		ssl_error(err, errlen, what);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
			snprintf(what, sizeof(what), "tls.key %s does not match tls.cert %s", key,
			         cert);
		else
			snprintf(what, sizeof(what), "tls.key %s: cannot load the private key",
			         key);
		ssl_error(err, errlen, what);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(what, sizeof(what), "tls.key %s does not match tls.cert %s", key, cert);
		ssl_error(err, errlen, what);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static void ctx_swap(SSL_CTX *next)
{
	pthread_mutex_lock(&tls_lock);
	SSL_CTX *old = tls_ctx;
	tls_ctx = next;
	pthread_mutex_unlock(&tls_lock);
	SSL_CTX_free(old); /* open connections hold their own references */
}

int tls_server_init(const char *cert, const char *key, char *err, size_t errlen)
{
	if (strlen(cert) >= TLS_PATH_MAX || strlen(key) >= TLS_PATH_MAX) {
		snprintf(err, errlen, "tls: certificate or key path too long");
		return -1;
	}
	SSL_CTX *ctx = ctx_build(cert, key, err, errlen);
	if (ctx == NULL)
		return -1;
	snprintf(tls_cert, sizeof(tls_cert), "%s", cert);
	snprintf(tls_key, sizeof(tls_key), "%s", key);
	ctx_swap(ctx);
	return 0;
}

int tls_server_reload(char *err, size_t errlen)
{
	if (!tls_server_enabled())
		return 1;
	SSL_CTX *ctx = ctx_build(tls_cert, tls_key, err, errlen);
	if (ctx == NULL)
		return -1;
	ctx_swap(ctx);
	return 0;
}

void tls_server_shutdown(void)
{
	ctx_swap(NULL);
	tls_cert[0] = tls_key[0] = '\0';
}

int tls_server_enabled(void)
{
	pthread_mutex_lock(&tls_lock);
	int on = tls_ctx != NULL;
	pthread_mutex_unlock(&tls_lock);
	return on;
}

unsigned long tls_server_accepted(void)
{
	return atomic_load_explicit(&tls_accepted, memory_order_relaxed);
}

struct bufferevent *tls_server_bevcb(struct event_base *base, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&tls_lock);
	SSL_CTX *ctx = tls_ctx;
	if (ctx != NULL)
		SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&tls_lock);
	if (ctx == NULL)
		return NULL;
	SSL *ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	if (ssl == NULL) {
		ERR_clear_error();
		log_error("tls: cannot allocate a connection (out of memory)");
		return NULL;
	}
	/* With BEV_OPT_CLOSE_ON_FREE the bufferevent frees the SSL and closes the fd. */
	struct bufferevent *bev = bufferevent_openssl_socket_new(
	    base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		log_error("tls: cannot allocate a connection (out of memory)");
		return NULL;
	}
	/* Clients that close without close_notify are common; their EOF is an EOF. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	atomic_fetch_add_explicit(&tls_accepted, 1, memory_order_relaxed);
	return bev;
}

/* ---- the listener guard (slowloris) ---- */

struct tls_conn {
	struct bufferevent *bev; /* our reference */
	uint64_t since_ms;       /* first byte of the request being received, 0 = none */
	int in_body;             /* the request's header block ended */
	int at_line_start;       /* the last header byte seen was LF */
	size_t line_len;         /* bytes of the current header line (CR not counted) */
	const char *bad;         /* what was wrong in this request's header block, or NULL */
	struct tls_listener *l;
	struct tls_conn *prev, *next;
};

struct tls_listener {
	struct event_base *base;
	struct event *sweep;
	uint32_t timeout_ms;
	int use_tls;
	struct tls_conn *conns; /* every guarded connection */
	size_t n;
	struct tls_conn **set; /* open addressing by bev pointer, power-of-two capacity */
	size_t cap;
	unsigned long cut;
};

static uint64_t base_now_ms(struct event_base *base)
{
	struct timeval tv;
	event_base_gettimeofday_cached(base, &tv);
	return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static size_t ptr_hash(const void *p, size_t cap)
{
	uint64_t x = (uint64_t)(uintptr_t)p;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (size_t)(x & (cap - 1));
}

static int set_grow(struct tls_listener *l)
{
	size_t cap = l->cap ? l->cap * 2 : 64;
	struct tls_conn **set = calloc(cap, sizeof(*set));
	if (set == NULL)
		return -1;
	for (size_t i = 0; i < l->cap; i++) {
		if (l->set[i] == NULL)
			continue;
		size_t j = ptr_hash(l->set[i]->bev, cap);
		while (set[j] != NULL)
			j = (j + 1) & (cap - 1);
		set[j] = l->set[i];
	}
	free(l->set);
	l->set = set;
	l->cap = cap;
	return 0;
}

static struct tls_conn *set_find(const struct tls_listener *l, const struct bufferevent *bev)
{
	for (size_t i = l->cap ? ptr_hash(bev, l->cap) : 0, n = 0; n < l->cap;
	     i = (i + 1) & (l->cap - 1), n++) {
		if (l->set[i] == NULL)
			return NULL;
		if (l->set[i]->bev == bev)
			return l->set[i];
	}
	return NULL;
}

/* Backward-shift deletion keeps probing correct without tombstones. */
static void set_remove(struct tls_listener *l, const struct tls_conn *c)
{
	size_t mask = l->cap - 1, i = ptr_hash(c->bev, l->cap);
	for (size_t n = 0; l->set[i] != c; i = (i + 1) & mask, n++)
		if (l->set[i] == NULL || n >= l->cap)
			return;
	l->set[i] = NULL;
	for (size_t j = (i + 1) & mask; l->set[j] != NULL; j = (j + 1) & mask) {
		size_t home = ptr_hash(l->set[j]->bev, l->cap);
		if (((j - home) & mask) >= ((j - i) & mask)) {
			l->set[i] = l->set[j];
			l->set[j] = NULL;
			i = j;
		}
	}
}

/* Follow header bytes: obs-fold is a header line starting with SP or HTAB. */
static void scan_header_bytes(struct tls_conn *c, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n && !c->in_body; i++) {
		unsigned char b = p[i];
		if (c->at_line_start && (b == ' ' || b == '\t') && c->bad == NULL)
			c->bad =
			    "obsolete line folding (a header line starting with a space or tab)";
		if (((b < 0x20 && b != '\t' && b != '\r' && b != '\n') || b == 0x7f) &&
		    c->bad == NULL)
			c->bad = "control character in the request head";
		c->at_line_start = 0;
		if (b == '\n') {
			if (c->line_len == 0 && c->since_ms != 0)
				c->in_body = 1; /* the blank line: headers are over */
			c->line_len = 0;
			c->at_line_start = 1;
		} else if (b != '\r') {
			c->line_len++;
		}
	}
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct tls_conn *c = arg;
	if (info->n_added == 0)
		return;
	if (c->since_ms == 0) {
		c->since_ms = base_now_ms(c->l->base);
		c->at_line_start = 0; /* the request line is not a continuation */
		c->line_len = 0;
	}
	if (c->in_body)
		return;
	struct evbuffer_ptr at;
	size_t len = evbuffer_get_length(buf);
	if (info->n_added > len ||
	    evbuffer_ptr_set(buf, &at, len - info->n_added, EVBUFFER_PTR_SET) < 0)
		return;
	struct evbuffer_iovec vec[8];
	int nv = evbuffer_peek(buf, (ev_ssize_t)info->n_added, &at, vec, 8);
	for (int i = 0; i < nv && i < 8; i++)
		scan_header_bytes(c, vec[i].iov_base, vec[i].iov_len);
}

static void conn_release(struct tls_listener *l, struct tls_conn *c)
{
	set_remove(l, c);
	if (c->prev)
		c->prev->next = c->next;
	else
		l->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	l->n--;
	evbuffer_remove_cb(bufferevent_get_input(c->bev), on_input, c); /* c goes now */
	bufferevent_decref(c->bev); /* evhttp's free already ran: this finalizes it */
	free(c);
}

/* evhttp frees a connection's bufferevent with its callbacks cleared. */
static int conn_freed_by_evhttp(struct bufferevent *bev)
{
	bufferevent_data_cb r = NULL, w = NULL;
	bufferevent_event_cb e = NULL;
	void *arg = NULL;
	bufferevent_getcb(bev, &r, &w, &e, &arg);
	return r == NULL && w == NULL && e == NULL;
}

static void on_sweep(evutil_socket_t fd, short events, void *arg)
{
	struct tls_listener *l = arg;
	uint64_t now = base_now_ms(l->base);
	for (struct tls_conn *c = l->conns, *next; c != NULL; c = next) {
		next = c->next;
		if (conn_freed_by_evhttp(c->bev)) {
			conn_release(l, c);
			continue;
		}
		if (c->since_ms == 0 || now - c->since_ms <= l->timeout_ms)
			continue;
		/* The fd is still ours (our reference keeps it open): no reuse race. */
		evutil_socket_t s = bufferevent_getfd(c->bev);
		c->since_ms = 0;
		l->cut++;
		log_warn("client connection cut off: no whole request within %u ms of its first "
		         "byte (client_timeout)",
		         l->timeout_ms);
		if (s >= 0)
			shutdown(s, SHUT_RDWR); /* evhttp reads EOF and frees the connection */
	}
}

struct tls_listener *tls_listener_new(struct event_base *base, uint32_t request_timeout_ms,
                                      int use_tls, char *err, size_t errlen)
{
	struct tls_listener *l = calloc(1, sizeof(*l));
	if (l == NULL || set_grow(l) < 0)
		goto fail;
	l->base = base;
	l->timeout_ms = request_timeout_ms;
	l->use_tls = use_tls;
	l->sweep = event_new(base, -1, EV_PERSIST, on_sweep, l);
	struct timeval tv = {0, TLS_SWEEP_MS * 1000};
	if (l->sweep == NULL || event_add(l->sweep, &tv) < 0)
		goto fail;
	return l;
fail:
	snprintf(err, errlen, "listener: out of memory");
	tls_listener_free(l);
	return NULL;
}

void tls_listener_free(struct tls_listener *l)
{
	if (l == NULL)
		return;
	if (l->sweep)
		event_free(l->sweep);
	while (l->conns != NULL)
		conn_release(l, l->conns);
	free(l->set);
	free(l);
}

struct bufferevent *tls_listener_bevcb(struct event_base *base, void *arg)
{
	struct tls_listener *l = arg;
	struct bufferevent *bev = l->use_tls
	                              ? tls_server_bevcb(base, NULL)
	                              : bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		return NULL;
	struct tls_conn *c = calloc(1, sizeof(*c));
	if (c == NULL || ((l->n + 1) * 2 > l->cap && set_grow(l) < 0) ||
	    evbuffer_add_cb(bufferevent_get_input(bev), on_input, c) == NULL) {
		free(c);
		return bev; /* unguarded, but served */
	}
	c->bev = bev;
	c->l = l;
	bufferevent_incref(bev);
	size_t i = ptr_hash(bev, l->cap);
	while (l->set[i] != NULL)
		i = (i + 1) & (l->cap - 1);
	l->set[i] = c;
	c->next = l->conns;
	if (l->conns)
		l->conns->prev = c;
	l->conns = c;
	l->n++;
	return bev;
}

const char *tls_listener_request(struct tls_listener *l, struct bufferevent *bev)
{
	struct tls_conn *c = l && bev ? set_find(l, bev) : NULL;
	if (c == NULL)
		return NULL;
	const char *bad = c->bad;
	c->since_ms = 0;
	c->in_body = 0;
	c->bad = NULL;
	return bad;
}

size_t tls_listener_count(const struct tls_listener *l)
{
	return l ? l->n : 0;
}

unsigned long tls_listener_cut(const struct tls_listener *l)
{
	return l ? l->cut : 0;
}
