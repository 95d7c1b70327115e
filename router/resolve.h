/*
 * resolve.h - host name resolution off the event loop: getaddrinfo (so
 * /etc/hosts, nsswitch.conf and resolv.conf apply, as with libcurl's threaded
 * resolver) on one thread per resolver, the answers delivered back on the
 * owner's event loop. router/h1client.c is its user.
 */
#ifndef TURNOUT_RESOLVE_H
#define TURNOUT_RESOLVE_H

#include <stddef.h>
#include <sys/socket.h>

#define RESOLVE_MAX_ADDRS 8   /* addresses kept per answer, in getaddrinfo's order */
#define RESOLVE_MAX_HOST  255 /* a DNS name's limit */
#define RESOLVE_MAX_QUEUE 256 /* lookups waiting for the thread */

struct event_base;
struct resolver;

/* One answer: err 0 and n >= 1 addresses (with their ports), or err != 0 and why. */
struct resolve_result {
	int err; /* 0, or getaddrinfo's EAI_* code */
	char why[128];
	size_t n;
	struct sockaddr_storage addrs[RESOLVE_MAX_ADDRS];
	socklen_t lens[RESOLVE_MAX_ADDRS];
};

/* Called on the owner's loop with the answer (valid during the call only). */
typedef void (*resolve_cb)(const struct resolve_result *res, void *arg);

/*
 * A test seam, run on the resolver thread before getaddrinfo with the host
 * name and the empty answer: it may sleep, and put addresses in res (then
 * getaddrinfo's follow them); it returns 0 to go on with the lookup, or an
 * EAI_* code that the real code then handles as getaddrinfo's answer.
 * Process-wide; NULL (the default) for none. Tests only.
 */
typedef int (*resolve_hook_fn)(const char *host, struct resolve_result *res);
void resolve_set_test_hook(resolve_hook_fn fn);

/*
 * A resolver answering on base. The thread starts with the first lookup.
 * Returns NULL with a reason in err. Free with resolve_free on base's thread.
 */
struct resolver *resolve_new(struct event_base *base, char *err, size_t errlen);

/*
 * Drop every lookup not answered yet (no callbacks) and stop the thread: it is
 * joined when idle, else left to finish its getaddrinfo and free what it
 * shares with us by itself. Accepts NULL.
 */
void resolve_free(struct resolver *r);

/*
 * Look up host (a name or a literal address) for TCP port (digits). cb runs
 * later on the loop, never from inside this call. 0, or -1 with a reason in err
 * (queue full, name too long, no thread): cb will then never run.
 */
int resolve_start(struct resolver *r, const char *host, const char *port, resolve_cb cb, void *arg,
                  char *err, size_t errlen);

#endif
