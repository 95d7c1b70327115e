/*
 * proxy.h - one live request's life on a worker: check the client's framing,
 * take the route snapshot, choose the variant and endpoint, forward through
 * the upstream engine, answer the client (front.c), record stats.
 */
#ifndef TURNOUT_PROXY_H
#define TURNOUT_PROXY_H

#include <stddef.h>
#include <stdint.h>

struct front_req;
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
	const struct front_req *req; /* headers: front_req_header, front_req_field */
	const char *client_ip;       /* the peer's address, appended to X-Forwarded-For */
	const void *req_body;
	size_t req_body_len;
	long status;
	const struct evkeyvalq *resp_headers;
	struct evbuffer *resp_body; /* do not drain: it is sent to the client next */
	uint64_t latency_us;
};

/* The front end's request callback of a worker (arg = struct worker *). */
void proxy_handle(struct front_req *req, void *arg);

/*
 * Answer every request still in flight on w with 503 (draining) and cancel
 * its upstream transfer. Worker thread only.
 */
void proxy_abort_all(struct worker *w);

/*
 * A header block being written ("Name: value\r\n" lines at p): past cap
 * only len grows, so a first pass into a small buffer learns the size needed.
 */
struct proxy_head_block {
	char *p;
	size_t len, cap;
};

/*
 * The headers a request forwards to a backend, into b: the client's fields
 * minus hop-by-hop, framing and the forwarding headers, then X-Forwarded-For
 * (ip appended to the client's), X-Forwarded-Host (the client's, else its
 * Host), X-Request-Id, and for a mirror X-Turnout-Shadow: 1. Live requests
 * and their mirrors use this one function, so both carry the same headers.
 */
void proxy_forward_headers(const struct front_req *req, const char *ip, const char *request_id,
                           int mirror, struct proxy_head_block *b);

/* Whether name is a hop-by-hop header, given the message's Connection header (may be NULL). */
int proxy_is_hop_by_hop(const char *name, const char *connection);

#endif
