/*
 * server.h - the predictor's HTTP server: KServe V2 REST over libevent evhttp.
 *
 * N worker threads, each with its own event_base, evhttp and listening socket
 * bound to the same address with SO_REUSEPORT (the kernel spreads
 * connections), its own metrics shard, and no locks on the request path. A
 * request is parsed, run through the model and answered inside its callback.
 */
#ifndef TURNOUT_SERVER_H
#define TURNOUT_SERVER_H

#include <stddef.h>

#include "onnx.h"

#define SERVER_ERR_MAX     512
#define SERVER_MAX_THREADS 256
#define SERVER_MAX_CONNS   1000000

struct server_config {
	const char *host;          /* numeric address or host name to listen on */
	int port;                  /* 0: pick a free port (see server_port) */
	int threads;               /* 1..SERVER_MAX_THREADS */
	size_t max_body;           /* bytes; larger bodies get 413 */
	int timeout_s;             /* idle/read/write timeout of a connection */
	size_t max_conns;          /* open connections, split evenly over the threads */
	const char *model_name;    /* as served in URLs and responses */
	const char *model_version; /* idem */
	int have_range;            /* count input values outside [range_min, range_max] */
	double range_min, range_max;
};

struct server;

/*
 * Create the server: resolve cfg->host, create and bind one SO_REUSEPORT
 * socket per thread, set up each thread's event_base and evhttp. model and the
 * strings in cfg are borrowed and must outlive the server. Returns NULL with
 * err ("listen 127.0.0.1:80: Permission denied") on failure; nothing is left
 * open. Free with server_free.
 */
struct server *server_new(const struct server_config *cfg, const struct onnx_model *model,
                          char *err, size_t errlen);
/* The port actually listened on. */
int server_port(const struct server *s);
/* Start the worker threads. Returns 0, or -1 with err (threads already started are stopped). */
int server_start(struct server *s, char *err, size_t errlen);
/* Ask every worker loop to exit and join the threads. Safe to call twice, or before start. */
void server_stop(struct server *s);
/* Stop (if needed) and free everything, closing the sockets. Accepts NULL. */
void server_free(struct server *s);

#endif
