/*
 * proxy.h - one live request's life on a worker: check the client's framing,
 * take the route snapshot, choose the variant and endpoint, forward with
 * libcurl, answer the client, record stats.
 */
#ifndef TURNOUT_PROXY_H
#define TURNOUT_PROXY_H

#include <stddef.h>
#include <stdint.h>

struct evhttp_request;
struct evkeyvalq;
struct evbuffer;
struct worker;
struct route_snapshot;

/*
 * A completed live exchange, as the shadow room sees it (all borrowed; valid
 * only during the call that receives it: copy what must outlive it).
 */
struct proxy_live {
	struct worker *w;
	struct route_snapshot *snap; /* the request's snapshot (take a ref to keep it) */
	size_t variant;              /* index into snap->variants that served it */
	const char *method;
	const char *uri; /* path and query as the client sent them */
	const char *request_id;
	const struct evkeyvalq *req_headers;
	const char *client_ip; /* the peer's address, appended to X-Forwarded-For */
	const void *req_body;
	size_t req_body_len;
	long status;
	const struct evkeyvalq *resp_headers;
	struct evbuffer *resp_body; /* do not drain: it is sent to the client next */
	uint64_t latency_us;
};

/* The evhttp generic callback of a worker (arg = struct worker *). */
void proxy_handle(struct evhttp_request *req, void *arg);

/*
 * Answer every request still in flight on w with 503 (draining) and cancel
 * its upstream transfer. Worker thread only.
 */
void proxy_abort_all(struct worker *w);

/*
 * Check a request's framing headers: at most one Content-Length (a valid
 * decimal), no Content-Length together with Transfer-Encoding, and no
 * Transfer-Encoding but a single "chunked". Returns 0, or -1 with a reason in
 * err (the caller answers 400 and closes).
 */
int proxy_check_framing(const struct evkeyvalq *headers, char *err, size_t errlen);

/*
 * evhttp_send_reply(req, code, NULL, body) that also tracks, for draining, that
 * the answer is not yet fully written (w->unflushed). body may be NULL.
 */
void proxy_send_reply(struct worker *w, struct evhttp_request *req, int code,
                      struct evbuffer *body);

/* Whether name is a hop-by-hop header, given the message's Connection header (may be NULL). */
int proxy_is_hop_by_hop(const char *name, const char *connection);

#endif
