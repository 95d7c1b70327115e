/*
 * server.c - the predictor's HTTP server (see server.h).
 *
 * Routing is a short table of path shapes; every answer goes through
 * reply(), which also counts it in the worker's metrics shard. Bodies are
 * rendered straight into the request's own output evbuffer, so a response is
 * never copied between buffers before it reaches the socket. A guard on each
 * connection's input answers a Content-Length over --max-body with a JSON 413
 * before evhttp sees that head (see "the body-size guard").
 */
#include "server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pmetrics.h"
#include "v2.h"

#define SERVER_MAX_HEADERS 16384
#define SERVER_MAX_PATH    1024
#define SERVER_MAX_SEGS    8
#define SERVER_BACKLOG     1024
#define SERVER_DRAIN_MS    300  /* on stop: time for replies in flight to be written */
#define GUARD_LINGER_MS    2000 /* after a guard's 413: how long to wait for the client's EOF */
#define GUARD_SWEEP_MS     1000 /* how often guards of freed connections are let go */

struct guard;

struct worker {
	struct server *srv;
	size_t index;
	struct event_base *base;
	struct evhttp *http;
	int fd;                            /* owned until evhttp accepts it */
	struct evhttp_bound_socket *bound; /* evhttp's listener on fd */
	struct tensor **outs;              /* scratch, n_outputs, empty between requests */
	struct evhttp_connection **conns;  /* set of admitted connections, conn_cap slots */
	size_t conn_cap, n_conns, max_conns;
	struct guard *guards; /* every guarded connection */
	struct event *sweep;  /* lets go of guards whose connection evhttp freed */
	pthread_t tid;
	int started;
	time_t date_sec; /* second the Date header below is for */
	char date[40];   /* "Sun, 06 Nov 1994 08:49:37 GMT", made once a second */
};

struct server {
	struct server_config cfg;
	const struct onnx_model *model;
	struct v2_sig sig;
	const struct onnx_value_info **in_vis; /* owned arrays of borrowed pointers */
	const struct onnx_value_info **out_vis;
	size_t label_out; /* index of the INT64 "label" output, or n_outputs */
	size_t prob_out;  /* index of the probabilities output, or n_outputs */
	struct pmetrics *metrics;
	int port;
	struct worker *workers;
	size_t n_workers;
};

static pthread_once_t server_evthread_once = PTHREAD_ONCE_INIT;
static int server_evthread_rc;

static void do_evthread_init(void)
{
	server_evthread_rc = evthread_use_pthreads();
}

/* ---- replies ------------------------------------------------------------ */

static const char *reason_of(int code)
{
	switch (code) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 413:
		return "Payload Too Large";
	case 503:
		return "Service Unavailable";
	case 500:
		return "Internal Server Error";
	}
	return "Error";
}

/*
 * The Date header, from the loop's cached clock, formatted once a second (as
 * evhttp would format it on every reply: RFC 1123, English names). NULL if
 * the clock cannot be read: evhttp then adds its own.
 */
static const char *worker_date(struct worker *w)
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct timeval tv;
	if (event_base_gettimeofday_cached(w->base, &tv) < 0)
		return NULL;
	if (!w->date[0] || tv.tv_sec != w->date_sec) {
		struct tm tm;
		time_t t = tv.tv_sec;
		if (!gmtime_r(&t, &tm) || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
		    tm.tm_mon > 11)
			return NULL;
		snprintf(w->date, sizeof(w->date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
		         days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
		         tm.tm_hour, tm.tm_min, tm.tm_sec);
		w->date_sec = t;
	}
	return w->date;
}

/*
 * Send what is in the request's output buffer; count it. libevent 2.1 would
 * send the body of a HEAD reply too: keep its length, drop the bytes.
 */
static void reply(struct worker *w, struct evhttp_request *req, int code, const char *ctype)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", ctype);
	const char *date = worker_date(w);
	if (date)
		evhttp_add_header(h, "Date", date);
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		struct evbuffer *out = evhttp_request_get_output_buffer(req);
		char len[24];
		snprintf(len, sizeof(len), "%zu", evbuffer_get_length(out));
		evhttp_add_header(h, "Content-Length", len);
		evbuffer_drain(out, evbuffer_get_length(out));
	}
	evhttp_send_reply(req, code, reason_of(code), NULL);
	pmetrics_request(w->srv->metrics, w->index, code);
}

static void reply_error(struct worker *w, struct evhttp_request *req, int code, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

static void reply_error(struct worker *w, struct evhttp_request *req, int code, const char *fmt,
                        ...)
{
	char msg[V2_ERR_MAX + 64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	evbuffer_drain(out, evbuffer_get_length(out));
	v2_error_render(out, msg);
	log_debug("%d %s: %s", code, evhttp_request_get_uri(req), msg);
	reply(w, req, code, "application/json");
}

static void reply_json(struct worker *w, struct evhttp_request *req, const char *json)
{
	evbuffer_add(evhttp_request_get_output_buffer(req), json, strlen(json));
	reply(w, req, 200, "application/json");
}

/* ---- infer -------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Input drift: how many values fall outside the training range. */
static void count_inputs(struct worker *w, const struct v2_request *vr)
{
	const struct server_config *c = &w->srv->cfg;
	uint64_t total = 0, out = 0;
	for (size_t i = 0; i < vr->n_inputs; i++) {
		const struct tensor *t = vr->inputs[i];
		total += t->nelem;
		if (!c->have_range || t->dtype != TENSOR_FLOAT)
			continue;
		const float *f = t->data;
		for (size_t k = 0; k < t->nelem; k++)
			out += f[k] < c->range_min || f[k] > c->range_max;
	}
	pmetrics_inputs(w->srv->metrics, w->index, total, out);
}

/* Predicted labels and mean top probability, when the model has those outputs. */
static void count_outputs(struct worker *w, struct tensor *const *outs)
{
	struct server *s = w->srv;
	if (s->label_out < s->sig.n_outputs && outs[s->label_out] &&
	    outs[s->label_out]->dtype == TENSOR_INT64)
		pmetrics_labels(s->metrics, w->index, outs[s->label_out]->data,
		                outs[s->label_out]->nelem);
	const struct tensor *p = s->prob_out < s->sig.n_outputs ? outs[s->prob_out] : NULL;
	if (!p || p->dtype != TENSOR_FLOAT || p->ndim < 1 || p->dims[p->ndim - 1] <= 0)
		return;
	size_t k = (size_t)p->dims[p->ndim - 1], rows = p->nelem / k;
	const float *f = p->data;
	double sum = 0;
	for (size_t r = 0; r < rows; r++) {
		float mx = f[r * k];
		for (size_t j = 1; j < k; j++)
			if (f[r * k + j] > mx)
				mx = f[r * k + j];
		sum += mx;
	}
	pmetrics_confidence(s->metrics, w->index, sum, rows);
}

static void free_outs(struct worker *w)
{
	for (size_t j = 0; j < w->srv->sig.n_outputs; j++) {
		tensor_free(w->outs[j]);
		w->outs[j] = NULL;
	}
}

static void do_infer(struct worker *w, struct evhttp_request *req)
{
	struct server *s = w->srv;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	if (len > s->cfg.max_body) {
		reply_error(w, req, 413,
		            "request body: %zu bytes is over the limit of %zu (--max-body)", len,
		            s->cfg.max_body);
		return;
	}
	const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
	if (!body) {
		reply_error(w, req, 500, "out of memory reading the request body");
		return;
	}
	char err[V2_ERR_MAX];
	struct v2_request *vr = v2_request_parse(&s->sig, body, len, err, sizeof(err));
	if (!vr) {
		reply_error(w, req, 400, "%s", err);
		return;
	}
	double t0 = now_s();
	int rc = onnx_model_run(s->model, vr->inputs, vr->n_inputs, w->outs, err, sizeof(err));
	double dt = now_s() - t0;
	if (rc < 0) {
		/* The runtime left nothing allocated; the slots hold nothing of ours. */
		memset(w->outs, 0, s->sig.n_outputs * sizeof(w->outs[0]));
		reply_error(w, req, 400, "inference: %s", err);
		v2_request_free(vr);
		return;
	}
	pmetrics_inference(s->metrics, w->index, dt, vr->batch);
	count_inputs(w, vr);
	count_outputs(w, w->outs);
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	if (v2_response_render(&s->sig, vr, w->outs, out) < 0)
		reply_error(w, req, 500, "out of memory rendering the response");
	else
		reply(w, req, 200, "application/json");
	free_outs(w);
	v2_request_free(vr);
}

/* ---- routing ------------------------------------------------------------ */

enum route_kind {
	R_NONE,
	R_LIVE,
	R_READY,
	R_SERVER_META,
	R_METRICS,
	R_MODEL_META,
	R_MODEL_READY,
	R_INFER,
	R_REPLIED, /* an error reply was already sent */
};

/* Split path into at most SERVER_MAX_SEGS segments (in place); -1 if too many. */
static int split_path(char *path, char **segs)
{
	int n = 0;
	for (char *p = path; *p;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		if (n == SERVER_MAX_SEGS)
			return -1;
		segs[n++] = p;
		while (*p && *p != '/')
			p++;
		if (*p)
			*p++ = 0;
	}
	return n;
}

/* /v2/models/NAME[/versions/V][/ready|/infer]; 404 replies are sent here. */
static enum route_kind route_model(struct worker *w, struct evhttp_request *req, char **segs, int n)
{
	const struct server_config *c = &w->srv->cfg;
	int k = 3;
	const char *version = NULL;
	if (n >= 5 && strcmp(segs[3], "versions") == 0) {
		version = segs[4];
		k = 5;
	}
	const char *tail = n == k ? "" : n == k + 1 ? segs[k] : NULL;
	enum route_kind kind = !tail                        ? R_NONE
	                       : !*tail                     ? R_MODEL_META
	                       : strcmp(tail, "ready") == 0 ? R_MODEL_READY
	                       : strcmp(tail, "infer") == 0 ? R_INFER
	                                                    : R_NONE;
	if (kind == R_NONE)
		return R_NONE;
	if (strcmp(segs[2], c->model_name) != 0) {
		reply_error(w, req, 404, "unknown model '%.128s' (this server serves '%s')",
		            segs[2], c->model_name);
		return R_REPLIED;
	}
	if (version && strcmp(version, c->model_version) != 0) {
		reply_error(w, req, 404,
		            "model '%s' has no version '%.64s' (it serves version '%s')",
		            c->model_name, version, c->model_version);
		return R_REPLIED;
	}
	return kind;
}

/* Which endpoint a path names; returns R_REPLIED when a reply was already sent. */
static enum route_kind route(struct worker *w, struct evhttp_request *req, const char *path)
{
	char buf[SERVER_MAX_PATH];
	char *segs[SERVER_MAX_SEGS];
	if (strlen(path) >= sizeof(buf))
		return R_NONE;
	strcpy(buf, path);
	int n = split_path(buf, segs);
	if (n == 1 && strcmp(segs[0], "metrics") == 0)
		return R_METRICS;
	if (n < 1 || strcmp(segs[0], "v2") != 0)
		return R_NONE;
	if (n == 1)
		return R_SERVER_META;
	if (n == 3 && strcmp(segs[1], "health") == 0)
		return strcmp(segs[2], "live") == 0    ? R_LIVE
		       : strcmp(segs[2], "ready") == 0 ? R_READY
		                                       : R_NONE;
	if (n >= 3 && strcmp(segs[1], "models") == 0)
		return route_model(w, req, segs, n);
	return R_NONE;
}

/* libevent 2.1 executes a request smuggled behind a second Content-Length. */
static int framing_ok(struct evhttp_request *req)
{
	int cl = 0, te = 0;
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	for (struct evkeyval *kv = h->tqh_first; kv; kv = kv->next.tqe_next) {
		cl += strcasecmp(kv->key, "Content-Length") == 0;
		te += strcasecmp(kv->key, "Transfer-Encoding") == 0;
	}
	return cl <= 1 && te <= 1 && !(cl && te);
}

static void do_metrics(struct worker *w, struct evhttp_request *req)
{
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	if (pmetrics_render(w->srv->metrics, out) < 0) {
		reply_error(w, req, 500, "out of memory rendering metrics");
		return;
	}
	reply(w, req, 200, "text/plain; version=0.0.4; charset=utf-8");
}

static void do_model_ready(struct worker *w, struct evhttp_request *req)
{
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	evbuffer_add_printf(out, "{\"name\":");
	v2_json_string(out, w->srv->cfg.model_name);
	evbuffer_add_printf(out, ",\"ready\":true}");
	reply(w, req, 200, "application/json");
}

static void do_server_meta(struct worker *w, struct evhttp_request *req)
{
	reply_json(w, req,
	           "{\"name\":\"turnout-predictor\",\"version\":\"" TURNOUT_VERSION
	           "\",\"extensions\":[]}");
}

static void do_model_meta(struct worker *w, struct evhttp_request *req)
{
	if (v2_model_metadata_render(&w->srv->sig, evhttp_request_get_output_buffer(req)) < 0) {
		reply_error(w, req, 500, "out of memory rendering metadata");
		return;
	}
	reply(w, req, 200, "application/json");
}

/* The request's path, never NULL ("/" when evhttp has none). */
static const char *req_path(struct evhttp_request *req)
{
	const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
	const char *path = u ? evhttp_uri_get_path(u) : NULL;
	return path && *path ? path : "/";
}

static void dispatch(struct worker *w, struct evhttp_request *req, enum route_kind kind)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	int is_post = kind == R_INFER;
	int ok = is_post ? cmd == EVHTTP_REQ_POST : cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
	if (!ok) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
		                  is_post ? "POST" : "GET, HEAD");
		reply_error(w, req, 405, "%s: method not allowed (use %s)", req_path(req),
		            is_post ? "POST" : "GET");
		return;
	}
	switch (kind) {
	case R_LIVE:
		reply_json(w, req, "{\"live\":true}");
		break;
	case R_READY:
		reply_json(w, req, "{\"ready\":true}");
		break;
	case R_SERVER_META:
		do_server_meta(w, req);
		break;
	case R_METRICS:
		do_metrics(w, req);
		break;
	case R_MODEL_META:
		do_model_meta(w, req);
		break;
	case R_MODEL_READY:
		do_model_ready(w, req);
		break;
	case R_INFER:
		do_infer(w, req);
		break;
	case R_NONE:
	case R_REPLIED:
		abort(); /* filtered by on_request */
	}
}

/* ---- connection cap ------------------------------------------------------
 *
 * evhttp (libevent 2.1) has no connection limit: each worker keeps the set of
 * connections it has answered (open addressing, at most half full, so a probe
 * always ends) and refuses the first request of one more with 503 and close.
 * A connection leaves the set in its close callback.
 */

static size_t conn_home(const struct worker *w, const struct evhttp_connection *c)
{
	uint64_t h = (uint64_t)(uintptr_t)c;
	h = (h ^ (h >> 29)) * 0x9E3779B97F4A7C15u;
	return (size_t)(h >> 32) & (w->conn_cap - 1);
}

/* The slot holding c, or the empty slot where it would go. */
static size_t conn_find(const struct worker *w, const struct evhttp_connection *c)
{
	size_t i = conn_home(w, c);
	while (w->conns[i] && w->conns[i] != c)
		i = (i + 1) & (w->conn_cap - 1);
	return i;
}

static void on_conn_close(struct evhttp_connection *c, void *arg)
{
	struct worker *w = arg;
	size_t mask = w->conn_cap - 1, i = conn_find(w, c);
	if (!w->conns[i])
		return;
	w->conns[i] = NULL;
	w->n_conns--;
	/* Backward shift: an entry may fill the hole unless its home lies in (hole, j]. */
	for (size_t j = (i + 1) & mask; w->conns[j]; j = (j + 1) & mask) {
		if (((j - conn_home(w, w->conns[j])) & mask) >= ((j - i) & mask)) {
			w->conns[i] = w->conns[j];
			w->conns[j] = NULL;
			i = j;
		}
	}
}

/* Admit the request's connection (once per connection); -1 when refused (reply sent). */
static int conn_admit(struct worker *w, struct evhttp_request *req)
{
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	if (!c)
		return 0;
	size_t i = conn_find(w, c);
	if (w->conns[i])
		return 0;
	if (w->n_conns >= w->max_conns) {
		struct evkeyvalq *h = evhttp_request_get_output_headers(req);
		evhttp_add_header(h, "Connection", "close");
		evhttp_add_header(h, "Retry-After", "1");
		reply_error(w, req, 503, "too many connections (at most %zu per thread)",
		            w->max_conns);
		return -1;
	}
	w->conns[i] = c;
	w->n_conns++;
	evhttp_connection_set_closecb(c, on_conn_close, w);
	return 0;
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct worker *w = arg;
	if (conn_admit(w, req) < 0)
		return;
	if (!framing_ok(req)) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		reply_error(w, req, 400,
		            "request framing: duplicate Content-Length or "
		            "Transfer-Encoding header");
		return;
	}
	const char *path = req_path(req);
	enum route_kind kind = route(w, req, path);
	if (kind == R_REPLIED)
		return;
	if (kind == R_NONE) {
		reply_error(w, req, 404, "no such endpoint: %.200s", path);
		return;
	}
	dispatch(w, req, kind);
}

/* ---- the body-size guard -------------------------------------------------
 *
 * libevent 2.1 answers a Content-Length over evhttp's limit itself, with an
 * HTML page. Each connection's input buffer is watched instead: the guard
 * reads every request head as it arrives (and only counts body bytes), and
 * when a head ends with a Content-Length over --max-body, it takes the
 * connection away from evhttp before evhttp sees that head end: it drops the
 * input, writes a JSON 413 with Connection: close, shuts down its writing
 * side once that is flushed and keeps dropping input until the client's EOF
 * (or GUARD_LINGER_MS), so no RST destroys the answer. Then evhttp's own
 * callbacks are put back and told of the EOF, and evhttp frees the
 * connection. The guard keeps a reference on the bufferevent; a sweep lets
 * go of guards whose connection evhttp freed (its callbacks are cleared).
 *
 * The guard steps aside (evhttp's own behaviour stays) for a chunked body,
 * a head it cannot read (duplicate or unparsable Content-Length), and an
 * oversized head pipelined behind a request evhttp has not finished.
 */

enum guard_state {
	G_HEAD,   /* reading a request head */
	G_BODY,   /* counting body bytes */
	G_OFF,    /* stepped aside for good */
	G_REJECT, /* took the connection over to answer 413 */
};

struct guard {
	struct bufferevent *bev; /* our reference */
	struct worker *w;
	enum guard_state state;
	uint64_t added, deleted; /* input bytes ever added, drained */
	uint64_t head_pos;       /* stream offset where the current head starts */
	uint64_t clen;           /* its Content-Length */
	uint64_t body_left;
	int n_clen, chunked, bad, seen_line;
	size_t line_len;
	char line[48]; /* the first bytes of the current head line, lowercased */
	/* evhttp's callbacks, while the guard holds the connection */
	bufferevent_data_cb ev_read, ev_write;
	bufferevent_event_cb ev_event;
	void *ev_arg;
	int eof, flushed;
	struct guard *prev, *next;
};

static void guard_head_reset(struct guard *g, uint64_t pos)
{
	g->state = G_HEAD;
	g->head_pos = pos;
	g->clen = g->body_left = 0;
	g->n_clen = g->chunked = g->bad = g->seen_line = 0;
	g->line_len = 0;
}

/* One header line ended: note Content-Length and Transfer-Encoding. */
static void guard_line(struct guard *g)
{
	if (!g->seen_line) {
		g->seen_line = 1; /* the request line */
		return;
	}
	size_t n = g->line_len < sizeof(g->line) ? g->line_len : sizeof(g->line);
	if (n >= 18 && memcmp(g->line, "transfer-encoding:", 18) == 0) {
		g->chunked = 1;
		return;
	}
	if (n < 15 || memcmp(g->line, "content-length:", 15) != 0)
		return;
	g->n_clen++;
	size_t i = 15, digits = 0;
	uint64_t v = 0;
	while (i < n && (g->line[i] == ' ' || g->line[i] == '\t'))
		i++;
	for (; i < n && g->line[i] >= '0' && g->line[i] <= '9'; i++, digits++)
		v = v * 10 + (uint64_t)(g->line[i] - '0');
	while (i < n && (g->line[i] == ' ' || g->line[i] == '\t'))
		i++;
	if (digits == 0 || digits > 18 || i != n || g->line_len > sizeof(g->line))
		g->bad = 1;
	g->clen = v;
}

static void guard_read(struct bufferevent *bev, void *arg);
static void guard_write(struct bufferevent *bev, void *arg);
static void guard_event(struct bufferevent *bev, short what, void *arg);

/* Answer 413 in evhttp's place; the caller checked that evhttp is between requests. */
static void guard_reject(struct guard *g)
{
	struct server *s = g->w->srv;
	char msg[160];
	snprintf(msg, sizeof(msg), "request body: %llu bytes is over the limit of %zu (--max-body)",
	         (unsigned long long)g->clen, s->cfg.max_body);
	struct evbuffer *body = evbuffer_new();
	struct evbuffer *out = bufferevent_get_output(g->bev);
	if (!body || v2_error_render(body, msg) < 0 ||
	    evbuffer_add_printf(out,
	                        "HTTP/1.1 413 Payload Too Large\r\n"
	                        "Content-Type: application/json\r\n"
	                        "Content-Length: %zu\r\n"
	                        "Connection: close\r\n\r\n",
	                        evbuffer_get_length(body)) < 0 ||
	    evbuffer_add_buffer(out, body) < 0) {
		evbuffer_drain(out, evbuffer_get_length(out));
		g->state = G_OFF; /* out of memory: evhttp answers */
		if (body)
			evbuffer_free(body);
		return;
	}
	evbuffer_free(body);
	bufferevent_getcb(g->bev, &g->ev_read, &g->ev_write, &g->ev_event, &g->ev_arg);
	bufferevent_setcb(g->bev, guard_read, guard_write, guard_event, g);
	bufferevent_enable(g->bev, EV_READ | EV_WRITE);
	g->state = G_REJECT;
	pmetrics_request(s->metrics, g->w->index, 413);
	log_debug("413: %s", msg);
}

/* A head ended at stream offset pos: follow its body, or answer 413. */
static void guard_head_end(struct guard *g, uint64_t pos)
{
	if (g->chunked || g->bad || g->n_clen > 1) {
		g->state = G_OFF; /* evhttp and framing_ok judge these */
		return;
	}
	if (g->clen > g->w->srv->cfg.max_body) {
		bufferevent_data_cb r = NULL, wr = NULL;
		bufferevent_event_cb e = NULL;
		void *arg = NULL;
		bufferevent_getcb(g->bev, &r, &wr, &e, &arg);
		/* Only when evhttp is reading this very head, nothing of its own pending. */
		if (g->deleted < g->head_pos || !r || !e ||
		    evbuffer_get_length(bufferevent_get_output(g->bev)) > 0)
			g->state = G_OFF;
		else
			guard_reject(g);
		return;
	}
	uint64_t clen = g->clen; /* the reset clears it */
	guard_head_reset(g, pos);
	if (clen > 0) {
		g->body_left = clen;
		g->state = G_BODY;
	}
}

/* Follow n new input bytes starting at stream offset pos. */
static void guard_scan(struct guard *g, const unsigned char *p, size_t n, uint64_t pos)
{
	size_t i = 0;
	while (i < n && g->state < G_OFF) {
		if (g->state == G_BODY) {
			uint64_t k = n - i < g->body_left ? n - i : g->body_left;
			i += (size_t)k;
			g->body_left -= k;
			if (g->body_left == 0)
				guard_head_reset(g, pos + i);
			continue;
		}
		unsigned char b = p[i++];
		if (b == '\n') {
			if (g->line_len > 0)
				guard_line(g);
			else if (g->seen_line)
				guard_head_end(g, pos + i);
			else
				g->head_pos = pos + i; /* an empty line before the request */
			g->line_len = 0;
		} else if (b != '\r') {
			if (g->line_len < sizeof(g->line))
				g->line[g->line_len] = (char)(b >= 'A' && b <= 'Z' ? b + 32 : b);
			g->line_len++;
		}
	}
}

static void guard_on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct guard *g = arg;
	uint64_t pos = g->added;
	g->added += info->n_added;
	g->deleted += info->n_deleted;
	if (info->n_added == 0 || g->state >= G_OFF)
		return;
	if (g->state == G_BODY && g->body_left > info->n_added) {
		g->body_left -= info->n_added; /* the hot path: body bytes are only counted */
		return;
	}
	size_t len = evbuffer_get_length(buf);
	struct evbuffer_ptr at;
	if (info->n_added > len ||
	    evbuffer_ptr_set(buf, &at, len - info->n_added, EVBUFFER_PTR_SET) < 0) {
		g->state = G_OFF;
		return;
	}
	struct evbuffer_iovec vec[8];
	int nv = evbuffer_peek(buf, (ev_ssize_t)info->n_added, &at, vec, 8);
	if (nv > 8) { /* too scattered to follow cheaply: step aside */
		g->state = G_OFF;
		return;
	}
	for (int i = 0; i < nv; i++) {
		guard_scan(g, vec[i].iov_base, vec[i].iov_len, pos);
		pos += vec[i].iov_len;
	}
}

/* Give the connection back to evhttp with the event that ends it; evhttp frees it. */
static void guard_hand_back(struct guard *g, short what)
{
	g->state = G_OFF;
	bufferevent_setcb(g->bev, g->ev_read, g->ev_write, g->ev_event, g->ev_arg);
	g->ev_event(g->bev, what, g->ev_arg);
}

static void guard_read(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	evbuffer_drain(in, evbuffer_get_length(in));
}

static void guard_write(struct bufferevent *bev, void *arg)
{
	struct guard *g = arg;
	if (g->flushed || evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	g->flushed = 1;
	evutil_socket_t fd = bufferevent_getfd(bev);
	if (fd >= 0)
		shutdown(fd, SHUT_WR);
	bufferevent_disable(bev, EV_WRITE);
	if (g->eof) {
		guard_hand_back(g, BEV_EVENT_READING | BEV_EVENT_EOF);
		return;
	}
	struct timeval linger = {GUARD_LINGER_MS / 1000, (GUARD_LINGER_MS % 1000) * 1000};
	bufferevent_set_timeouts(bev, &linger, NULL);
	bufferevent_enable(bev, EV_READ);
}

static void guard_event(struct bufferevent *bev, short what, void *arg)
{
	struct guard *g = arg;
	/* The client finished sending before the answer was written: write it first. */
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && !g->flushed) {
		g->eof = 1;
		return;
	}
	guard_hand_back(g, what);
}

static void guard_release(struct worker *w, struct guard *g)
{
	if (g->prev)
		g->prev->next = g->next;
	else
		w->guards = g->next;
	if (g->next)
		g->next->prev = g->prev;
	evbuffer_remove_cb(bufferevent_get_input(g->bev), guard_on_input, g);
	bufferevent_decref(g->bev); /* evhttp's free already ran: this finalizes it */
	free(g);
}

static void guard_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	for (struct guard *g = w->guards, *next; g; g = next) {
		next = g->next;
		bufferevent_data_cb r = NULL, wr = NULL;
		bufferevent_event_cb e = NULL;
		void *cbarg = NULL;
		bufferevent_getcb(g->bev, &r, &wr, &e, &cbarg);
		if (!r && !wr && !e) /* evhttp frees a connection with its callbacks cleared */
			guard_release(w, g);
	}
}

/* evhttp's bufferevent factory: every connection gets a guard. */
static struct bufferevent *guard_bevcb(struct event_base *base, void *arg)
{
	struct worker *w = arg;
	/* Without BEV_OPT_CLOSE_ON_FREE, as evhttp's own: evhttp closes the socket itself. */
	struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
	if (!bev)
		return NULL;
	struct guard *g = calloc(1, sizeof(*g));
	if (!g || !evbuffer_add_cb(bufferevent_get_input(bev), guard_on_input, g)) {
		free(g);
		return bev; /* unguarded, but served */
	}
	g->bev = bev;
	g->w = w;
	bufferevent_incref(bev);
	g->next = w->guards;
	if (w->guards)
		w->guards->prev = g;
	w->guards = g;
	return bev;
}

/* ---- sockets, threads, lifecycle ---------------------------------------- */

static int listen_socket(const struct sockaddr *sa, socklen_t salen, int reuseport, char *err,
                         size_t errlen)
{
	int one = 1;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
	    bind(fd, sa, salen) < 0 || (reuseport && listen(fd, SERVER_BACKLOG) < 0))
		goto fail;
	return fd;
fail:
	snprintf(err, errlen, "%s", strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static int sockaddr_port(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
	                                       : ((const struct sockaddr_in *)ss)->sin_port);
}

/*
 * Resolve host:port and open one listening socket per worker on the same
 * address. A probe bind without SO_REUSEPORT comes first: it fails if anyone
 * (say, a forgotten predictor) already listens there, which SO_REUSEPORT
 * would otherwise silently allow; for port 0 it also picks the port.
 */
static int open_sockets(struct server *s, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	char port[16], why[256];
	snprintf(port, sizeof(port), "%d", s->cfg.port);
	int rc = getaddrinfo(s->cfg.host, port, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "listen %s:%d: %s", s->cfg.host, s->cfg.port,
		         gai_strerror(rc));
		return -1;
	}
	struct sockaddr_storage ss;
	socklen_t sslen = (socklen_t)ai->ai_addrlen;
	memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	int probe = listen_socket((struct sockaddr *)&ss, sslen, 0, why, sizeof(why));
	if (probe < 0) {
		snprintf(err, errlen, "listen %s:%d: %s", s->cfg.host, s->cfg.port, why);
		return -1;
	}
	getsockname(probe, (struct sockaddr *)&ss, &sslen);
	close(probe);
	s->port = sockaddr_port(&ss);
	for (size_t i = 0; i < s->n_workers; i++) {
		int fd = listen_socket((struct sockaddr *)&ss, sslen, 1, why, sizeof(why));
		if (fd < 0) {
			snprintf(err, errlen, "listen %s:%d: %s", s->cfg.host, s->port, why);
			return -1;
		}
		s->workers[i].fd = fd;
	}
	return 0;
}

static int worker_init(struct server *s, struct worker *w, char *err, size_t errlen)
{
	w->outs = calloc(s->sig.n_outputs ? s->sig.n_outputs : 1, sizeof(w->outs[0]));
	w->max_conns = (s->cfg.max_conns + s->n_workers - 1) / s->n_workers;
	for (w->conn_cap = 16; w->conn_cap < 2 * w->max_conns;)
		w->conn_cap *= 2;
	w->conns = calloc(w->conn_cap, sizeof(w->conns[0]));
	w->base = event_base_new();
	w->http = w->base ? evhttp_new(w->base) : NULL;
	if (!w->outs || !w->conns || !w->http) {
		snprintf(err, errlen, "worker %zu: out of memory", w->index);
		return -1;
	}
	evhttp_set_max_body_size(w->http, (ev_ssize_t)s->cfg.max_body);
	evhttp_set_max_headers_size(w->http, SERVER_MAX_HEADERS);
	evhttp_set_timeout(w->http, s->cfg.timeout_s);
	/* Read (and drop) an oversized body before closing, so the client sees the 413. */
	evhttp_set_flags(w->http, EVHTTP_SERVER_LINGERING_CLOSE);
	evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                        EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH |
	                                        EVHTTP_REQ_TRACE);
	evhttp_set_gencb(w->http, on_request, w);
	evhttp_set_bevcb(w->http, guard_bevcb, w);
	struct timeval sweep = {GUARD_SWEEP_MS / 1000, (GUARD_SWEEP_MS % 1000) * 1000};
	if (!(w->sweep = event_new(w->base, -1, EV_PERSIST, guard_sweep, w)) ||
	    event_add(w->sweep, &sweep) < 0) {
		snprintf(err, errlen, "worker %zu: out of memory", w->index);
		return -1;
	}
	if (!(w->bound = evhttp_accept_socket_with_handle(w->http, w->fd))) {
		snprintf(err, errlen, "worker %zu: cannot accept on its socket", w->index);
		return -1;
	}
	w->fd = -1; /* evhttp owns it now */
	return 0;
}

/*
 * Which outputs feed the label and confidence metrics: an INT64 output named
 * "label" and an FP32 output named "probabilities" (classes on the last
 * axis). Other models simply do not get those two metrics; guessing at an
 * arbitrary float output would publish a meaningless "confidence".
 */
static void find_metric_outputs(struct server *s)
{
	s->label_out = s->prob_out = s->sig.n_outputs;
	for (size_t j = 0; j < s->sig.n_outputs; j++) {
		const struct onnx_value_info *vi = s->sig.outputs[j];
		if (!vi->name)
			continue;
		if (strcmp(vi->name, "label") == 0 && vi->dtype == TENSOR_INT64)
			s->label_out = j;
		if (strcmp(vi->name, "probabilities") == 0 && vi->dtype == TENSOR_FLOAT &&
		    vi->ndim >= 1)
			s->prob_out = j;
	}
}

static size_t label_count(const struct server *s)
{
	if (s->label_out == s->sig.n_outputs || s->prob_out == s->sig.n_outputs)
		return 0;
	const struct onnx_value_info *p = s->sig.outputs[s->prob_out];
	int64_t k = p->dims[p->ndim - 1];
	return k > 0 && k <= PMETRICS_MAX_LABELS ? (size_t)k : 0;
}

static int build_sig(struct server *s)
{
	size_t ni = onnx_model_n_inputs(s->model), no = onnx_model_n_outputs(s->model);
	s->in_vis = calloc(ni ? ni : 1, sizeof(s->in_vis[0]));
	s->out_vis = calloc(no ? no : 1, sizeof(s->out_vis[0]));
	if (!s->in_vis || !s->out_vis)
		return -1;
	for (size_t i = 0; i < ni; i++)
		s->in_vis[i] = onnx_model_input(s->model, i);
	for (size_t i = 0; i < no; i++)
		s->out_vis[i] = onnx_model_output(s->model, i);
	s->sig =
	    (struct v2_sig){s->cfg.model_name, s->cfg.model_version, s->in_vis, ni, s->out_vis, no};
	find_metric_outputs(s);
	return 0;
}

struct server *server_new(const struct server_config *cfg, const struct onnx_model *model,
                          char *err, size_t errlen)
{
	struct server *s = NULL;
	pthread_once(&server_evthread_once, do_evthread_init);
	if (server_evthread_rc < 0) {
		snprintf(err, errlen, "libevent: cannot enable threads");
		return NULL;
	}
	if (cfg->max_conns < 1 || cfg->max_conns > SERVER_MAX_CONNS) {
		snprintf(err, errlen, "max connections: %zu is not in 1..%d", cfg->max_conns,
		         SERVER_MAX_CONNS);
		return NULL;
	}
	if (cfg->threads < 1 || cfg->threads > SERVER_MAX_THREADS) {
		snprintf(err, errlen, "threads: %d is not in 1..%d", cfg->threads,
		         SERVER_MAX_THREADS);
		return NULL;
	}
	if (!(s = calloc(1, sizeof(*s))))
		goto oom;
	s->cfg = *cfg;
	s->model = model;
	s->port = cfg->port;
	s->n_workers = (size_t)cfg->threads;
	if (build_sig(s) < 0 || !(s->workers = calloc(s->n_workers, sizeof(s->workers[0]))))
		goto oom;
	for (size_t i = 0; i < s->n_workers; i++)
		s->workers[i] = (struct worker){.srv = s, .index = i, .fd = -1};
	if (!(s->metrics = pmetrics_new(s->n_workers, label_count(s))))
		goto oom;
	if (open_sockets(s, err, errlen) < 0)
		goto fail;
	for (size_t i = 0; i < s->n_workers; i++)
		if (worker_init(s, &s->workers[i], err, errlen) < 0)
			goto fail;
	return s;
oom:
	snprintf(err, errlen, "out of memory");
fail:
	server_free(s);
	return NULL;
}

int server_port(const struct server *s)
{
	return s->port;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	event_base_dispatch(w->base);
	return NULL;
}

int server_start(struct server *s, char *err, size_t errlen)
{
	for (size_t i = 0; i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];
		int rc = pthread_create(&w->tid, NULL, worker_main, w);
		if (rc != 0) {
			snprintf(err, errlen, "worker %zu: pthread_create: %s", i, strerror(rc));
			server_stop(s);
			return -1;
		}
		w->started = 1;
	}
	log_info("serving model '%s' version '%s' on %s:%d with %zu thread%s", s->cfg.model_name,
	         s->cfg.model_version, s->cfg.host, s->port, s->n_workers,
	         s->n_workers == 1 ? "" : "s");
	return 0;
}

/*
 * Runs in the worker's own thread (evhttp is not thread-safe): stop
 * accepting, then give replies still being written SERVER_DRAIN_MS to reach
 * their clients before the loop ends.
 */
static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct timeval grace = {0, SERVER_DRAIN_MS * 1000};
	if (w->bound) {
		evhttp_del_accept_socket(w->http, w->bound);
		w->bound = NULL;
	}
	event_base_loopexit(w->base, &grace);
}

void server_stop(struct server *s)
{
	if (!s || !s->workers)
		return;
	struct timeval now = {0, 0};
	for (size_t i = 0; i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];
		if (w->started && event_base_once(w->base, -1, EV_TIMEOUT, on_stop, w, &now) < 0)
			event_base_loopbreak(w->base);
	}
	for (size_t i = 0; i < s->n_workers; i++) {
		if (s->workers[i].started)
			pthread_join(s->workers[i].tid, NULL);
		s->workers[i].started = 0;
	}
}

void server_free(struct server *s)
{
	if (!s)
		return;
	server_stop(s);
	for (size_t i = 0; s->workers && i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];
		if (w->http)
			evhttp_free(w->http);
		if (w->sweep)
			event_free(w->sweep);
		while (w->guards) /* evhttp_free freed every connection */
			guard_release(w, w->guards);
		if (w->base)
			event_base_free(w->base);
		if (w->fd >= 0)
			close(w->fd);
		free(w->outs);
		free(w->conns); /* after evhttp_free, whose close callbacks use it */
	}
	free(s->workers);
	pmetrics_free(s->metrics);
	free(s->in_vis);
	free(s->out_vis);
	free(s);
}
