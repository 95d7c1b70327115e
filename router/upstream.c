/*
 * upstream.c - the upstream transfer front: plain http:// to an address the
 * built-in client reaches goes to router/h1client.c; the rest (https://, host
 * names, or a request asking for libcurl) to a libcurl multi on libevent (the
 * curl multi-event.c / hiperfifo.c skeleton), one engine per worker thread.
 *
 * libcurl tells us which sockets to watch (on_curl_socket) and when to call it
 * back (on_curl_timer); we never call curl_multi_socket_action from those
 * callbacks: a 0 ms timeout arms a 0 ms libevent timer instead. Finished
 * transfers are collected after curl_multi_socket_action returns, removed from
 * the multi, and only then handed to their owner's callback, so callbacks may
 * submit or cancel transfers freely.
 */
#include "upstream.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "h1client.h"
#include "log.h"

#define UPSTREAM_MAX_RESP_HEADERS      256
#define UPSTREAM_MAX_RESP_HEADER_BYTES (64 * 1024)
#define UPSTREAM_MAX_LINE              (16 * 1024) /* a URL, a request header line */

struct upstream {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	struct curl_xfer *head; /* every transfer in the multi */
	size_t n;
	struct h1client *h1; /* the built-in HTTP/1.1 client */
};

struct curl_xfer {
	struct upstream_transfer hdr; /* first: kind UPSTREAM_KIND_CURL */
	struct upstream *u;
	CURL *easy;
	struct curl_slist *headers;
	char *method;
	char *body_copy;
	struct evbuffer *body;
	struct evkeyvalq resp_headers;
	size_t resp_header_count, resp_header_bytes;
	size_t max_response;
	int too_big, bad_headers;
	int head_done; /* the blank line after the headers went by: what follows are trailers */
	upstream_done_cb cb;
	void *arg;
	uint64_t start_us;
	char errbuf[CURL_ERROR_SIZE];
	struct curl_xfer *prev, *next;
};

struct sock_ctx {
	struct upstream *u;
	curl_socket_t fd;
	struct event *ev;
};

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

const char *upstream_err_name(enum upstream_err e)
{
	switch (e) {
	case UPSTREAM_OK:
		return "ok";
	case UPSTREAM_ERR_CONNECT:
		return "connect";
	case UPSTREAM_ERR_RESET:
		return "reset";
	case UPSTREAM_ERR_TIMEOUT:
		return "timeout";
	case UPSTREAM_ERR_PROTOCOL:
		return "protocol";
	case UPSTREAM_ERR_INTERNAL:
		return "internal";
	}
	return "unknown";
}

static void transfer_free(struct curl_xfer *t)
{
	if (t == NULL)
		return;
	struct upstream *u = t->u;
	if (t->prev)
		t->prev->next = t->next;
	else if (u->head == t)
		u->head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	if (u->n > 0)
		u->n--;
	if (t->easy)
		curl_easy_cleanup(t->easy);
	curl_slist_free_all(t->headers);
	evhttp_clear_headers(&t->resp_headers);
	if (t->body)
		evbuffer_free(t->body);
	free(t->body_copy);
	free(t->method);
	free(t);
}

static enum upstream_err map_curl_error(const struct curl_xfer *t, CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return t->bad_headers ? UPSTREAM_ERR_PROTOCOL : UPSTREAM_OK;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return UPSTREAM_ERR_CONNECT;
	case CURLE_OPERATION_TIMEDOUT:
		return UPSTREAM_ERR_TIMEOUT;
	case CURLE_GOT_NOTHING:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
		return UPSTREAM_ERR_RESET;
	case CURLE_OUT_OF_MEMORY:
		return UPSTREAM_ERR_INTERNAL;
	default:
		return UPSTREAM_ERR_PROTOCOL;
	}
}

/* Hand a finished (already removed) transfer to its owner, then free it. */
static void complete(struct curl_xfer *t, CURLcode rc)
{
	struct upstream_result r = {0};
	r.err = map_curl_error(t, rc);
	/* resilience: libcurl re-sends on a fresh connection when a reused one dies
	 * before any answer byte; if that connect then fails, the request may already
	 * have reached the backend: say "reset", not "connect" (no retry elsewhere). */
	long sent = 0;
	if (r.err == UPSTREAM_ERR_CONNECT &&
	    curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK && sent > 0)
		r.err = UPSTREAM_ERR_RESET;
	if (r.err == UPSTREAM_OK)
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &r.status);
	r.headers = &t->resp_headers;
	r.body = t->body;
	if (r.err == UPSTREAM_OK)
		r.detail = "";
	else if (t->too_big)
		r.detail = "response body over the size limit";
	else if (t->bad_headers)
		r.detail = "response headers over the limit or malformed";
	else
		r.detail = t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc);
	r.elapsed_us = now_us() - t->start_us;
	upstream_done_cb cb = t->cb;
	void *arg = t->arg;
	cb(&r, arg);
	transfer_free(t);
}

static void check_multi_info(struct upstream *u)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(u->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		CURL *easy = msg->easy_handle;
		CURLcode rc = msg->data.result;
		struct curl_xfer *t = NULL;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
		curl_multi_remove_handle(u->multi, easy);
		complete(t, rc);
	}
}

static void on_timeout(evutil_socket_t fd, short events, void *arg)
{
	struct upstream *u = arg;
	int running;
	curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi_info(u);
}

static void on_socket_event(evutil_socket_t fd, short events, void *arg)
{
	struct sock_ctx *ctx = arg;
	struct upstream *u = ctx->u; /* ctx may be freed inside socket_action */
	int action = ((events & EV_READ) ? CURL_CSELECT_IN : 0) |
	             ((events & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	int running;
	curl_multi_socket_action(u->multi, fd, action, &running);
	check_multi_info(u);
}

/* CURLMOPT_SOCKETFUNCTION: watch, rewatch or forget a socket. */
static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct upstream *u = userp;
	struct sock_ctx *ctx = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (ctx) {
			event_free(ctx->ev);
			free(ctx);
			curl_multi_assign(u->multi, s, NULL);
		}
		return 0;
	}
	short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
	             ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
	if (ctx == NULL) {
		ctx = calloc(1, sizeof(*ctx));
		if (ctx == NULL)
			return -1;
		ctx->u = u;
		ctx->fd = s;
		curl_multi_assign(u->multi, s, ctx);
	} else {
		event_free(ctx->ev);
	}
	ctx->ev = event_new(u->base, s, kind, on_socket_event, ctx);
	if (ctx->ev == NULL || event_add(ctx->ev, NULL) < 0)
		return -1;
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: only (re)arm our timer; never drive curl from here. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct upstream *u = userp;
	if (timeout_ms < 0) {
		evtimer_del(u->timer);
		return 0;
	}
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	return evtimer_add(u->timer, &tv) < 0 ? -1 : 0;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct curl_xfer *t = arg;
	size_t n = size * nmemb;
	if (evbuffer_get_length(t->body) + n > t->max_response) {
		t->too_big = 1;
		return 0; /* aborts with CURLE_WRITE_ERROR */
	}
	if (evbuffer_add(t->body, ptr, n) < 0)
		return 0;
	return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct curl_xfer *t = arg;
	size_t n = size * nmemb;
	if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
		/* A new status line (after 1xx): headers start over. */
		evhttp_clear_headers(&t->resp_headers);
		t->resp_header_count = 0;
		t->head_done = 0;
		return n;
	}
	if (t->head_done)
		return n; /* trailer fields are dropped, as the built-in client does (RFC
		             9110 6.5.1) */
	if ((n == 2 && ptr[0] == '\r' && ptr[1] == '\n') || (n == 1 && ptr[0] == '\n'))
		t->head_done = 1;
	t->resp_header_bytes += n;
	if (++t->resp_header_count > UPSTREAM_MAX_RESP_HEADERS ||
	    t->resp_header_bytes > UPSTREAM_MAX_RESP_HEADER_BYTES) {
		t->bad_headers = 1;
		return 0;
	}
	const char *colon = memchr(ptr, ':', n);
	if (colon == NULL || colon == ptr || ptr[0] == ' ' || ptr[0] == '\t')
		return n; /* the blank line, or an obsolete folded line: skip */
	size_t klen = (size_t)(colon - ptr);
	const char *v = colon + 1;
	size_t vlen = n - klen - 1;
	while (vlen && (*v == ' ' || *v == '\t')) {
		v++;
		vlen--;
	}
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' ' ||
	                v[vlen - 1] == '\t'))
		vlen--;
	char key[256], val[8192];
	if (klen >= sizeof(key) || vlen >= sizeof(val)) {
		t->bad_headers = 1;
		return 0;
	}
	memcpy(key, ptr, klen);
	key[klen] = '\0';
	memcpy(val, v, vlen);
	val[vlen] = '\0';
	if (evhttp_add_header(&t->resp_headers, key, val) < 0) {
		t->bad_headers = 1;
		return 0;
	}
	return n;
}

struct upstream *upstream_new(struct event_base *base, long maxconns, char *err, size_t errlen)
{
	struct upstream *u = calloc(1, sizeof(*u));
	if (u == NULL)
		goto oom;
	u->base = base;
	u->multi = curl_multi_init();
	u->timer = evtimer_new(base, on_timeout, u);
	if (u->multi == NULL || u->timer == NULL)
		goto oom;
	curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
	curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
	curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
	curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, maxconns > 0 ? maxconns : 256L);
	u->h1 = h1client_new(base, maxconns > 0 ? (size_t)maxconns : 256u, err, errlen);
	if (u->h1 == NULL) {
		upstream_free(u);
		return NULL;
	}
	return u;
oom:
	snprintf(err, errlen, "cannot create the upstream engine (out of memory)");
	upstream_free(u);
	return NULL;
}

void upstream_free(struct upstream *u)
{
	if (u == NULL)
		return;
	h1client_free(u->h1);
	while (u->head != NULL) {
		struct curl_xfer *t = u->head;
		curl_multi_remove_handle(u->multi, t->easy);
		transfer_free(t);
	}
	if (u->multi)
		curl_multi_cleanup(u->multi); /* may call on_curl_socket(REMOVE) */
	if (u->timer)
		event_free(u->timer);
	free(u);
}

size_t upstream_inflight(const struct upstream *u)
{
	return u->n + h1client_inflight(u->h1);
}

static int has_header(const struct curl_slist *l, const char *name)
{
	size_t n = strlen(name);
	for (; l; l = l->next)
		if (strncasecmp(l->data, name, n) == 0 && (l->data[n] == ':' || l->data[n] == ';'))
			return 1;
	return 0;
}

/* Keep libcurl from adding headers the client did not send. */
static int finish_headers(struct curl_xfer *t)
{
	static const char *const suppress[] = {"Expect", "Content-Type", "Accept"};
	char line[64];
	for (size_t i = 0; i < sizeof(suppress) / sizeof(suppress[0]); i++) {
		if (has_header(t->headers, suppress[i]))
			continue;
		snprintf(line, sizeof(line), "%s:", suppress[i]);
		struct curl_slist *l = curl_slist_append(t->headers, line);
		if (l == NULL)
			return -1;
		t->headers = l;
	}
	return 0;
}

static int set_method(struct curl_xfer *t, const struct upstream_request *req)
{
	CURL *e = t->easy;
	int with_body = req->body_len > 0 || strcmp(req->method, "POST") == 0 ||
	                strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0;
	if (strcmp(req->method, "HEAD") == 0)
		return curl_easy_setopt(e, CURLOPT_NOBODY, 1L) == CURLE_OK ? 0 : -1;
	if (with_body) {
		const void *body = req->body_len ? req->body : "";
		if (req->copy_body && req->body_len) {
			t->body_copy = malloc(req->body_len);
			if (t->body_copy == NULL)
				return -1;
			memcpy(t->body_copy, req->body, req->body_len);
			body = t->body_copy;
		}
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
	} else {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	}
	if (strcmp(req->method, with_body ? "POST" : "GET") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->method);
	return 0;
}

/* The request's URL: url, or endpoint + target (in buf). NULL if too long. */
static const char *full_url(const struct upstream_request *req, char *buf, size_t len)
{
	if (req->url)
		return req->url;
	int n = snprintf(buf, len, "%s%s", req->endpoint ? req->endpoint : "",
	                 req->target ? req->target : "/");
	return n > 0 && (size_t)n < len ? buf : NULL;
}

/* head_block ("Name: value\r\n" lines) into "Name: value" / "Name;" slist lines. */
static struct curl_slist *block_to_slist(const char *b, size_t len)
{
	struct curl_slist *l = NULL;
	char line[UPSTREAM_MAX_LINE];
	const char *end = b + len;
	while (b < end) {
		const char *eol = memchr(b, '\n', (size_t)(end - b));
		size_t n = (size_t)((eol ? eol : end) - b);
		const char *next = eol ? eol + 1 : end;
		if (n && b[n - 1] == '\r')
			n--;
		const char *colon = memchr(b, ':', n);
		if (colon == NULL || n + 2 > sizeof(line))
			goto fail;
		size_t kl = (size_t)(colon - b);
		const char *v = colon + 1;
		while (v < b + n && (*v == ' ' || *v == '\t'))
			v++;
		size_t vl = (size_t)(b + n - v);
		memcpy(line, b, kl);
		if (vl == 0) { /* "Name;" sends an empty header; "Name:" would delete it */
			line[kl] = ';';
			line[kl + 1] = '\0';
		} else {
			memcpy(line + kl, ": ", 2);
			memcpy(line + kl + 2, v, vl);
			line[kl + 2 + vl] = '\0';
		}
		struct curl_slist *r = curl_slist_append(l, line);
		if (r == NULL)
			goto fail;
		l = r;
		b = next;
	}
	return l;
fail:
	curl_slist_free_all(l);
	return NULL;
}

static int setup_easy(struct curl_xfer *t, const struct upstream_request *req)
{
	CURL *e = t->easy;
	char buf[UPSTREAM_MAX_LINE];
	const char *url = full_url(req, buf, sizeof(buf));
	if (url == NULL || curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK)
		return -1;
	curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)t);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
	if (req->timeout_ms) {
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)req->timeout_ms);
	}
	if (req->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
	if (req->tls_insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (finish_headers(t) < 0)
		return -1;
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
	return set_method(t, req);
}

struct upstream_transfer *upstream_submit(struct upstream *u, const struct upstream_request *req,
                                          char *err, size_t errlen)
{
	if (req->client != UPSTREAM_CLIENT_LIBCURL && h1client_serves(u->h1, req))
		return h1client_submit(u->h1, req, err, errlen);
	struct curl_xfer *t = calloc(1, sizeof(*t));
	struct curl_slist *headers = req->headers;
	if (t != NULL && headers == NULL && req->head_block_len > 0) {
		headers = block_to_slist(req->head_block, req->head_block_len);
		if (headers == NULL) {
			free(t);
			snprintf(err, errlen, "malformed or overlong request header block");
			return NULL;
		}
	}
	if (t == NULL) {
		curl_slist_free_all(req->headers);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	TAILQ_INIT(&t->resp_headers);
	t->hdr.kind = UPSTREAM_KIND_CURL;
	t->u = u;
	t->headers = headers;
	t->next = u->head;
	if (u->head)
		u->head->prev = t;
	u->head = t;
	u->n++;
	t->cb = req->cb;
	t->arg = req->arg;
	t->max_response = req->max_response;
	t->start_us = now_us();
	t->method = strdup(req->method);
	t->body = evbuffer_new();
	t->easy = curl_easy_init();
	if (t->method == NULL || t->body == NULL || t->easy == NULL)
		goto fail;
	if (setup_easy(t, req) < 0)
		goto fail;
	CURLMcode mc = curl_multi_add_handle(u->multi, t->easy);
	if (mc != CURLM_OK) {
		snprintf(err, errlen, "cannot start the transfer: %s", curl_multi_strerror(mc));
		transfer_free(t);
		return NULL;
	}
	return &t->hdr;
fail:
	snprintf(err, errlen, "cannot set up the transfer to %s%s",
	         req->url        ? req->url
	         : req->endpoint ? req->endpoint
	                         : "?",
	         req->url      ? ""
	         : req->target ? req->target
	                       : "");
	transfer_free(t);
	return NULL;
}

void upstream_cancel(struct upstream_transfer *h)
{
	if (h == NULL)
		return;
	if (h->kind == UPSTREAM_KIND_BUILTIN) {
		h1client_cancel(h);
		return;
	}
	struct curl_xfer *t = (struct curl_xfer *)h;
	curl_multi_remove_handle(t->u->multi, t->easy);
	transfer_free(t);
}
