/*
 * tls.h - the client listener's TLS (OpenSSL 3 under the front end).
 *
 * One process-wide server context, built by the main thread from the
 * certificate chain and key named in the config (tls.cert, tls.key): TLS 1.2
 * and 1.3 only, forward-secret AEAD ciphers for TLS 1.2, no renegotiation, no
 * compression. Each new client connection of the front end (front.c) gets an
 * SSL from the context current at accept time (tls_server_ssl_new).
 * tls_server_reload swaps in a context built from the same files; connections
 * already open keep the context they started with (an SSL holds a reference
 * to its SSL_CTX), so a certificate renewal drops nothing.
 */
#ifndef TURNOUT_TLS_H
#define TURNOUT_TLS_H

#include <stddef.h>
#include <stdint.h>

struct ssl_st;

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
 * A server-side SSL for the accepted socket fd (any worker thread), from the
 * context current now, in accepting state (the first SSL_read handshakes).
 * Returns NULL when TLS is not enabled or on allocation failure. The caller
 * frees it with SSL_free (the descriptor stays the caller's).
 */
struct ssl_st *tls_server_ssl_new(int fd);

/* Handshakes begun since start (for tests and /status). */
unsigned long tls_server_accepted(void);

#endif
