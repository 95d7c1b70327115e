/*
 * tls.c - the client listener's TLS context and its reload (see tls.h).
 *
 * The current SSL_CTX pointer is guarded by a mutex held only to load it and
 * take a reference (SSL_CTX_up_ref) at accept time, or to swap it on reload:
 * a TLS handshake costs far more than this, and the request path proper takes
 * no lock. The old context is freed by OpenSSL when its last SSL goes.
 *
 * Connections themselves (handshake, reads, writes, time limits) are the
 * proxy listener's front end's (front.c): it asks for one SSL per accepted
 * socket.
 */
#include "tls.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

SSL *tls_server_ssl_new(int fd)
{
	pthread_mutex_lock(&tls_lock);
	SSL_CTX *ctx = tls_ctx;
	if (ctx != NULL)
		SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&tls_lock);
	if (ctx == NULL)
		return NULL;
	SSL *ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		ERR_clear_error();
		log_error("tls: cannot allocate a connection (out of memory)");
		return NULL;
	}
	SSL_set_accept_state(ssl);
	/* answers are written from an evbuffer that may move between retries */
	SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	atomic_fetch_add_explicit(&tls_accepted, 1, memory_order_relaxed);
	return ssl;
}
