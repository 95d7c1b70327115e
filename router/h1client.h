/*
 * h1client.h - the built-in HTTP/1.1 client engine behind upstream.h: plain
 * http:// to literal IPv4/IPv6 addresses and host names (resolved off the
 * loop by router/resolve.c, answers cached), with a per-worker keep-alive
 * pool. upstream.c is its only user: it sends https:// through libcurl.
 */
#ifndef TURNOUT_H1CLIENT_H
#define TURNOUT_H1CLIENT_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct upstream_request;
struct h1client;

/* Which engine runs a transfer. */
enum upstream_engine_kind {
	UPSTREAM_KIND_CURL,
	UPSTREAM_KIND_BUILTIN,
};

/*
 * The first member of both engines' transfers (private to upstream.c and
 * h1client.c), so that upstream_cancel can dispatch on it.
 */
struct upstream_transfer {
	enum upstream_engine_kind kind;
};

/*
 * An engine on base keeping at most maxidle idle connections in total.
 * Returns NULL with a reason in err. Free with h1client_free on base's thread.
 */
struct h1client *h1client_new(struct event_base *base, size_t maxidle, char *err, size_t errlen);

/* Cancel every transfer (no callbacks), close every connection, free. Accepts NULL. */
void h1client_free(struct h1client *c);

/*
 * How old (ms) a name's answer may be before a new connection asks again
 * (default 60000, libcurl's DNS cache; 0: at every new connection).
 */
void h1client_set_dns_refresh(struct h1client *c, uint32_t ms);

/*
 * Whether the engine serves this request's URL (req->url, or req->endpoint):
 * http:// to a literal address or a host name. Parsed once per endpoint and
 * cached; no lookup here.
 */
int h1client_serves(struct h1client *c, const struct upstream_request *req);

/*
 * Start a transfer the engine serves (h1client_serves said 1). Takes ownership
 * of req->headers (even on failure). Returns the handle, or NULL with a reason
 * in err (the callback is then never called). The callback always runs from
 * the event loop, never from inside this call.
 */
struct upstream_transfer *h1client_submit(struct h1client *c, const struct upstream_request *req,
                                          char *err, size_t errlen);

/* Abort a transfer whose callback has not run; the callback never runs. */
void h1client_cancel(struct upstream_transfer *t);

/* Transfers in progress. */
size_t h1client_inflight(const struct h1client *c);

/* Connections opened so far, and idle ones now (tests, debugging). */
size_t h1client_connects(const struct h1client *c);
size_t h1client_idle(const struct h1client *c);

#endif
