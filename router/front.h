/*
 * front.h - Turnout's own HTTP/1.1 server, shared by the router's proxy
 * listener and the predictor's data plane (one per worker thread, on its
 * event loop; plain TCP or TLS).
 *
 * Per connection one persistent read event stays armed; a request's head and
 * body are read into the connection's buffer and parsed in place by a strict
 * parser with hard limits; the answer is written at once (writev of head and
 * body), the write event armed only when the socket would block. Pipelined
 * requests wait in the buffer and are answered in order. Malformed input is
 * answered by the front end itself with a JSON error and the backend sees
 * nothing. The admin/status/metrics servers stay on evhttp.
 */
#ifndef TURNOUT_FRONT_H
#define TURNOUT_FRONT_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
struct ssl_st;
struct front;
struct front_req;

#define FRONT_MAX_FIELDS 100  /* header fields per request; more get 431 */
#define FRONT_MAX_TARGET 8000 /* request-target bytes; longer gets 414 */

/* A complete, checked request (the callback owns nothing: answer it with front_reply). */
typedef void (*front_request_cb)(struct front_req *req, void *arg);

/* The client went away before its answer: req is gone after this call returns. */
typedef void (*front_abort_cb)(struct front_req *req, void *arg);

struct front_config {
	size_t max_header;          /* head bytes (request line + fields), limits.max_header */
	size_t max_body;            /* decoded body bytes, limits.max_body */
	uint32_t client_timeout_ms; /* whole request from its first byte; also idle keep-alive */
	uint32_t max_conns;         /* past it a new connection gets 503 + close */
	struct ssl_st *(*new_ssl)(int fd);     /* TLS: a server SSL for fd (NULL: plain TCP) */
	void (*on_conns)(size_t n, void *arg); /* open connections changed to n (may be NULL) */
	front_request_cb on_request;
	void (*on_flushed)(void *arg);             /* an answer was written or dropped (draining) */
	void (*on_refused)(int status, void *arg); /* the front end answered an error itself */
	void *arg;
};

/*
 * A front end accepting on listen_fd (non-blocking; ownership passes, even on
 * failure) on base. Returns NULL with a reason in err. Free with front_free.
 */
struct front *front_new(struct event_base *base, int listen_fd, const struct front_config *cfg,
                        char *err, size_t errlen);

/* Close every connection and the listener; free. Accepts NULL. Loop thread only. */
void front_free(struct front *f);

/*
 * Stop accepting, close connections that have no request in flight or being
 * written, and answer every later request with Connection: close.
 */
void front_drain(struct front *f);

/* Answers handed over and not yet fully written. */
size_t front_unflushed(const struct front *f);

/* ---- a request (valid from the request callback until front_reply or its abort) ---- */

const char *front_req_method(const struct front_req *r); /* e.g. "POST" */
const char *front_req_target(const struct front_req *r); /* origin-form, starts with '/' */
int front_req_is_head(const struct front_req *r);
const char *front_req_peer(const struct front_req *r); /* the client's IP address text */

/* The first field named name (any case), or NULL. The value has no surrounding OWS. */
const char *front_req_header(const struct front_req *r, const char *name);

/* The i-th field in arrival order: 1 with *name, *value set, or 0 past the last. */
int front_req_field(const struct front_req *r, size_t i, const char **name, const char **value);

/* The body (de-chunked), NULL when empty; stays put until the answer. */
const void *front_req_body(const struct front_req *r, size_t *len);

/* Called if the client goes away while the request is in flight (replaces any earlier). */
void front_req_set_abort(struct front_req *r, front_abort_cb cb, void *arg);

/*
 * Answer r: status, the header lines in head[0..head_len) ("Name: value\r\n"
 * each; no Connection, no Transfer-Encoding; a Content-Length only if the
 * caller vouches it is right, has_length), and the body: the bytes of body
 * (moved out: body is left empty) or bytes[0..len) (copied if needed). The
 * front end adds the status line, Content-Length and Connection. close: the
 * connection ends after this answer. r is gone when this returns.
 */
void front_reply(struct front_req *r, int status, const char *head, size_t head_len, int has_length,
                 struct evbuffer *body, const void *bytes, size_t len, int close);

/*
 * A JSON error answer {"error":message,"cause":cause} plus extra header lines
 * (may be NULL); message is JSON-escaped here. r is gone when this returns.
 */
void front_reply_error(struct front_req *r, int status, const char *cause, const char *message,
                       const char *extra_head, int close);

/* ---- the parser, exposed for tests and the fuzzer ---- */

/* One field of a parsed head: offsets into the parsed buffer, NUL-terminated there. */
struct front_field {
	uint32_t name, value, name_len, value_len;
};

struct front_head {
	uint32_t method, target, target_len, len; /* len: the head's bytes, final CRLF included */
	int minor;                                /* HTTP/1.minor */
	int head_method, connect;
	int keep_alive;         /* after the version and Connection header */
	int chunked;            /* Transfer-Encoding: chunked */
	int expect_continue;    /* Expect: 100-continue */
	int64_t content_length; /* -1 when absent */
	size_t n_fields;
	struct front_field fields[FRONT_MAX_FIELDS];
};

/*
 * Parse the head at the start of buf[0..n) (modified in place: names and
 * values NUL-terminated). Returns 1 with h filled, 0 if the head is not
 * complete yet (and within max_header), or -1 with the status to answer
 * (400, 413, 414, 431, 501, 505, 417) in *status, a cause word in *cause and
 * the reason in err; the connection cannot be trusted after -1.
 */
int front_parse_head(char *buf, size_t n, size_t max_header, size_t max_body, struct front_head *h,
                     int *status, const char **cause, char *err, size_t errlen);

#endif
