/*
 * upstream.h - HTTP transfers to backends, driven by the worker's libevent
 * loop: a built-in HTTP/1.1 client (router/h1client.c) for http:// endpoints
 * at literal addresses or localhost, and one libcurl multi per engine for the
 * rest (https://, host names) or when the request asks for libcurl.
 *
 * A worker owns one struct upstream. Anything running on that worker's thread
 * (the live proxy path, shadow mirroring, health checks of the worker) can
 * submit an independent transfer and gets one completion callback, always
 * called from the event loop (never from inside upstream_submit or a libcurl
 * callback). Each engine keeps its own keep-alive pool, bounded by maxconns.
 */
#ifndef TURNOUT_UPSTREAM_H
#define TURNOUT_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
struct evkeyvalq;
struct curl_slist;
struct upstream;
struct upstream_transfer;

enum upstream_err {
	UPSTREAM_OK,
	UPSTREAM_ERR_CONNECT,  /* refused, unreachable, resolve failure */
	UPSTREAM_ERR_RESET,    /* connection reset/closed before a full response */
	UPSTREAM_ERR_TIMEOUT,  /* no full response within the timeout */
	UPSTREAM_ERR_PROTOCOL, /* garbage, bad framing, response over max_response */
	UPSTREAM_ERR_INTERNAL, /* could not start the transfer (memory, libcurl) */
};

/* What a completed transfer gives its callback; valid only during the callback. */
struct upstream_result {
	enum upstream_err err;
	long status;               /* HTTP status, 0 on error */
	struct evkeyvalq *headers; /* final response's headers (the callback may read) */
	struct evbuffer *body;     /* response body (the callback may drain/move it) */
	const char *detail;        /* libcurl's message on error, "" otherwise */
	uint64_t elapsed_us;       /* submit to completion */
};

/* Called once per transfer that was not cancelled. arg is the request's arg. */
typedef void (*upstream_done_cb)(const struct upstream_result *res, void *arg);

/* Which client runs a transfer (the config's upstream_client). */
enum upstream_client {
	UPSTREAM_CLIENT_BUILTIN, /* default: built-in for plain http:// it can reach, else libcurl
	                          */
	UPSTREAM_CLIENT_LIBCURL, /* always libcurl */
};

struct upstream_request {
	const char *method;   /* "GET", "POST", ...; copied */
	const char *url;      /* full URL; copied. NULL: endpoint + target below */
	const char *endpoint; /* with url NULL: "http(s)://host:port" (no path), e.g. a config
	                         endpoint; the engine caches its parse */
	const char *target;   /* with url NULL: path and query, starting with '/'; copied */
	struct curl_slist
	    *headers; /* "Name: value" lines; ownership passes on submit (even on failure) */
	const char *head_block; /* or, with headers NULL: "Name: value\r\n" lines, no Host,
	                           Content-Length or Transfer-Encoding; copied */
	size_t head_block_len;
	enum upstream_client client; /* 0 = UPSTREAM_CLIENT_BUILTIN */
	const void *body;            /* request body or NULL */
	size_t body_len;
	int copy_body;       /* 1: upstream keeps its own copy; 0: caller keeps body alive until
	                        done/cancel */
	uint32_t timeout_ms; /* whole transfer; 0 = none */
	size_t max_response; /* response body limit in bytes (past it: UPSTREAM_ERR_PROTOCOL) */
	const char *ca_file; /* https: CA bundle (PEM), NULL = the system's store; copied */
	int tls_insecure;    /* https: 1 = do not verify the peer (default 0: verify) */
	upstream_done_cb cb;
	void *arg;
};

/*
 * A transfer engine on base. maxconns bounds each keep-alive pool (idle
 * connections of the built-in client; CURLMOPT_MAXCONNECTS). Returns NULL with a reason in err.
 * Free with upstream_free on the thread that runs base.
 */
struct upstream *upstream_new(struct event_base *base, long maxconns, char *err, size_t errlen);

/* Cancel every transfer (no callbacks) and free. Accepts NULL. */
void upstream_free(struct upstream *u);

/*
 * Start a transfer. Returns a handle valid until its callback has run or it is
 * cancelled; NULL with a reason in err (the callback is then never called).
 * Must be called on u's thread; never from inside a libcurl callback (a
 * completion callback is fine). A request that reached no response byte on a
 * reused keep-alive connection is sent once more on a fresh connection; if
 * that connect fails the error is UPSTREAM_ERR_RESET (the backend may have
 * read it), not UPSTREAM_ERR_CONNECT.
 */
struct upstream_transfer *upstream_submit(struct upstream *u, const struct upstream_request *req,
                                          char *err, size_t errlen);

/* Abort a transfer whose callback has not run yet; the callback never runs. */
void upstream_cancel(struct upstream_transfer *t);

/* Transfers in progress on u. */
size_t upstream_inflight(const struct upstream *u);

/* "ok", "connect", "reset", "timeout", "protocol", "internal". */
const char *upstream_err_name(enum upstream_err e);

#endif
