/*
 * tls.h - the client listener's TLS (OpenSSL 3 under evhttp).
 *
 * One process-wide server context, built by the main thread from the
 * certificate chain and key named in the config (tls.cert, tls.key): TLS 1.2
 * and 1.3 only, forward-secret AEAD ciphers for TLS 1.2, no renegotiation, no
 * compression. Workers hand tls_server_bevcb to evhttp_set_bevcb: each new
 * client connection gets an SSL from the context current at accept time.
 * tls_server_reload swaps in a context built from the same files; connections
 * already open keep the context they started with (an SSL holds a reference
 * to its SSL_CTX), so a certificate renewal drops nothing.
 */
#ifndef TURNOUT_TLS_H
#define TURNOUT_TLS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct bufferevent;

/*
 * Load cert (PEM chain) and key (PEM) into the server context and remember
 * the paths for tls_server_reload. Returns 0, or -1 with a reason naming the
 * file in err (nothing changes then). Main thread only.
 */
int tls_server_init(const char *cert, const char *key, char *err, size_t errlen);

/*
 * Build a new context from the remembered files and make it current for new
 * connections. Returns 0; -1 with a reason in err if the files do not load
 * (the current context stays); 1 if TLS is not configured. Main thread only.
 */
int tls_server_reload(char *err, size_t errlen);

/* Drop the context (after the workers are gone). Idempotent. Main thread only. */
void tls_server_shutdown(void);

/* Whether tls_server_init succeeded and no shutdown followed. */
int tls_server_enabled(void);

/*
 * evhttp_set_bevcb callback (any worker thread; arg unused): a new
 * bufferevent_openssl in accepting state on base, with no fd yet (evhttp sets
 * it). Returns NULL when TLS is not enabled or on allocation failure; evhttp
 * then uses a plain socket, which answers the client's TLS hello with 400.
 */
struct bufferevent *tls_server_bevcb(struct event_base *base, void *arg);

/* Handshakes begun since start (for tests and /status). */
unsigned long tls_server_accepted(void);

/*
 * The listener guard of one worker: it makes every client connection's
 * bufferevent (TLS when tls_server_init succeeded, else plain), and cuts off a
 * client that does not deliver a whole request within request_timeout_ms of
 * the request's first byte (slowloris: evhttp's own timeout is an inactivity
 * timeout that a client trickling bytes never trips). It keeps one reference
 * on each connection's bufferevent and lets it go at the first sweep after
 * evhttp freed it (evhttp has already sent the FIN then; only the descriptor's
 * close waits for the sweep, every TLS_SWEEP_MS). It also spots obs-fold and
 * control characters in request heads (see tls_listener_request).
 */
struct tls_listener;

#define TLS_SWEEP_MS 250u

/*
 * A guard on base (the worker's loop). use_tls: 1 = TLS connections (the
 * server context must exist). Returns NULL with a reason in err. Free with
 * tls_listener_free after evhttp_free, on the same thread.
 */
struct tls_listener *tls_listener_new(struct event_base *base, uint32_t request_timeout_ms,
                                      int use_tls, char *err, size_t errlen);

/* Release every connection reference and free. Accepts NULL. */
void tls_listener_free(struct tls_listener *l);

/*
 * evhttp_set_bevcb callback; arg is the struct tls_listener. Returns NULL on
 * allocation failure (evhttp then makes a plain bufferevent, unguarded).
 */
struct bufferevent *tls_listener_bevcb(struct event_base *base, void *arg);

/*
 * A whole request arrived on bev (the evhttp request callback): its clock
 * stops. Returns NULL if its head looked sound, else what was wrong (a static
 * string): an obs-fold (a header line starting with SP or HTAB, which evhttp
 * silently joins to the previous header) or a control character (NUL, which
 * evhttp's C strings would hide, and the like); the caller answers 400 and
 * closes. NULL also for a connection it does not know.
 */
const char *tls_listener_request(struct tls_listener *l, struct bufferevent *bev);

/* Connections the guard holds (open, or closed less than a sweep ago). */
size_t tls_listener_count(const struct tls_listener *l);

/* Connections cut off for a request not received in time, since start. */
unsigned long tls_listener_cut(const struct tls_listener *l);

#endif
