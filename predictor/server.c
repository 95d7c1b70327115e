/*
 * server.c - the predictor's HTTP server (see server.h).
 *
 * Each worker thread runs Turnout's HTTP/1.1 front end (router/front.c, the
 * same as the router's proxy listener) on its own loop and SO_REUSEPORT
 * socket. Routing is a short table of path shapes; every answer goes through
 * reply(), which also counts it in the worker's metrics shard. Bodies are
 * rendered into the worker's output evbuffer and moved (not copied) to the
 * connection. The front end itself answers malformed requests, connections
 * over --max-connections (503) and bodies over --max-body in either framing
 * (413) with JSON errors, before a route is looked at.
 */
#include "server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
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

#include "front.h"
#include "log.h"
#include "pmetrics.h"
#include "v2.h"

#define SERVER_MAX_HEADERS 16384
#define SERVER_MAX_PATH    1024
#define SERVER_MAX_SEGS    8
#define SERVER_BACKLOG     1024
#define SERVER_DRAIN_MS    300 /* on stop: time for replies in flight to be written */

struct worker {
	struct server *srv;
	size_t index;
	struct event_base *base;
	struct front *front;  /* the HTTP/1.1 server on this worker's loop */
	int fd;               /* owned until the front end takes it */
	struct evbuffer *out; /* the answer being rendered; empty between requests */
	struct tensor **outs; /* scratch, n_outputs, empty between requests */
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

/*
 * The Date header, from the loop's cached clock, formatted once a second
 * (RFC 1123, English names). NULL if the clock cannot be read: the answer
 * then has none.
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
 * Answer r with the worker's output buffer as the body (moved out); count it.
 * extra: more header lines ("Name: value\r\n" each) or NULL. The front end
 * adds the status line, Content-Length and Connection, and sends no body
 * bytes for HEAD (whose Content-Length, the GET one, is added here).
 */
/* Appends s to head[*n..cap), or leaves *n at cap when it does not fit. */
static void head_put(char *head, size_t *n, size_t cap, const char *s)
{
	size_t l = strlen(s);
	if (*n + l < cap) {
		memcpy(head + *n, s, l);
		*n += l;
	} else {
		*n = cap;
	}
}

static void reply_extra(struct worker *w, struct front_req *r, int code, const char *ctype,
                        const char *extra)
{
	char head[320], len[48] = "";
	size_t n = 0;
	const char *date = worker_date(w);
	int is_head = front_req_is_head(r);
	if (is_head) /* the length GET would have, which the front end leaves to us */
		snprintf(len, sizeof(len), "Content-Length: %zu\r\n", evbuffer_get_length(w->out));
	/* Pieces copied, not printf'd: this runs for every answer. */
	head_put(head, &n, sizeof(head), "Content-Type: ");
	head_put(head, &n, sizeof(head), ctype);
	head_put(head, &n, sizeof(head), "\r\n");
	if (date) {
		head_put(head, &n, sizeof(head), "Date: ");
		head_put(head, &n, sizeof(head), date);
		head_put(head, &n, sizeof(head), "\r\n");
	}
	head_put(head, &n, sizeof(head), len);
	head_put(head, &n, sizeof(head), extra ? extra : "");
	if (n >= sizeof(head)) { /* cannot happen with our own headers: keep whole lines */
		n = 0;
		head_put(head, &n, sizeof(head), "Content-Type: application/json\r\n");
	}
	front_reply(r, code, head, n, is_head, w->out, NULL, 0, 0);
	pmetrics_request(w->srv->metrics, w->index, code);
}

static void reply(struct worker *w, struct front_req *r, int code, const char *ctype)
{
	reply_extra(w, r, code, ctype, NULL);
}

static void reply_error_extra(struct worker *w, struct front_req *r, int code, const char *extra,
                              const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void reply_error_extra(struct worker *w, struct front_req *r, int code, const char *extra,
                              const char *fmt, ...)
{
	char msg[V2_ERR_MAX + 64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	evbuffer_drain(w->out, evbuffer_get_length(w->out));
	v2_error_render(w->out, msg);
	log_debug("%d %s: %s", code, front_req_target(r), msg);
	reply_extra(w, r, code, "application/json", extra);
}

#define reply_error(w, r, code, ...) reply_error_extra(w, r, code, NULL, __VA_ARGS__)

static void reply_json(struct worker *w, struct front_req *r, const char *json)
{
	evbuffer_add(w->out, json, strlen(json));
	reply(w, r, 200, "application/json");
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

static void do_infer(struct worker *w, struct front_req *req)
{
	struct server *s = w->srv;
	size_t len = 0;
	const char *body = front_req_body(req, &len); /* the front end enforced --max-body */
	if (!body)
		body = "";
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
	struct evbuffer *out = w->out;
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
static enum route_kind route_model(struct worker *w, struct front_req *req, char **segs, int n)
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
static enum route_kind route(struct worker *w, struct front_req *req, const char *path)
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

static void do_metrics(struct worker *w, struct front_req *req)
{
	struct evbuffer *out = w->out;
	if (pmetrics_render(w->srv->metrics, out) < 0) {
		reply_error(w, req, 500, "out of memory rendering metrics");
		return;
	}
	reply(w, req, 200, "text/plain; version=0.0.4; charset=utf-8");
}

static void do_model_ready(struct worker *w, struct front_req *req)
{
	struct evbuffer *out = w->out;
	evbuffer_add_printf(out, "{\"name\":");
	v2_json_string(out, w->srv->cfg.model_name);
	evbuffer_add_printf(out, ",\"ready\":true}");
	reply(w, req, 200, "application/json");
}

static void do_server_meta(struct worker *w, struct front_req *req)
{
	reply_json(w, req,
	           "{\"name\":\"turnout-predictor\",\"version\":\"" TURNOUT_VERSION
	           "\",\"extensions\":[]}");
}

static void do_model_meta(struct worker *w, struct front_req *req)
{
	if (v2_model_metadata_render(&w->srv->sig, w->out) < 0) {
		reply_error(w, req, 500, "out of memory rendering metadata");
		return;
	}
	reply(w, req, 200, "application/json");
}

/*
 * The path of the request target (up to '?' or '#') into buf; "/" when it
 * is empty or does not fit (no endpoint has a path that long).
 */
static const char *req_path(struct front_req *req, char *buf, size_t cap)
{
	const char *t = front_req_target(req);
	size_t n = strcspn(t, "?#");
	if (n == 0 || n >= cap)
		n = 0;
	memcpy(buf, n ? t : "/", n ? n : 1);
	buf[n ? n : 1] = '\0';
	return buf;
}

static void dispatch(struct worker *w, struct front_req *req, const char *path,
                     enum route_kind kind)
{
	const char *m = front_req_method(req);
	int is_post = kind == R_INFER;
	int ok = is_post ? strcmp(m, "POST") == 0 : strcmp(m, "GET") == 0 || front_req_is_head(req);
	if (!ok) {
		reply_error_extra(w, req, 405, is_post ? "Allow: POST\r\n" : "Allow: GET, HEAD\r\n",
		                  "%s: method not allowed (use %s)", path,
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

/* The front end answered a request itself (400, 413, 501, 503, ...): count it. */
static void on_refused(int status, void *arg)
{
	struct worker *w = arg;
	pmetrics_request(w->srv->metrics, w->index, status);
}

static void on_request(struct front_req *req, void *arg)
{
	struct worker *w = arg;
	char buf[SERVER_MAX_PATH];
	const char *path = req_path(req, buf, sizeof(buf));
	if (strcspn(front_req_target(req), "?#") >= sizeof(buf)) {
		reply_error(w, req, 404, "no such endpoint: %.200s", front_req_target(req));
		return;
	}
	enum route_kind kind = route(w, req, path);
	if (kind == R_REPLIED)
		return;
	if (kind == R_NONE) {
		reply_error(w, req, 404, "no such endpoint: %.200s", path);
		return;
	}
	dispatch(w, req, path, kind);
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
	size_t max_conns = (s->cfg.max_conns + s->n_workers - 1) / s->n_workers;
	struct front_config fc = {
	    .max_header = SERVER_MAX_HEADERS,
	    .max_body = s->cfg.max_body,
	    .client_timeout_ms = (uint32_t)s->cfg.timeout_s * 1000u,
	    .max_conns = (uint32_t)max_conns,
	    .on_request = on_request,
	    .on_refused = on_refused,
	    .arg = w,
	};
	w->outs = calloc(s->sig.n_outputs ? s->sig.n_outputs : 1, sizeof(w->outs[0]));
	w->out = evbuffer_new();
	w->base = event_base_new();
	if (!w->outs || !w->out || !w->base) {
		snprintf(err, errlen, "worker %zu: out of memory", w->index);
		return -1;
	}
	char why[256];
	int fd = w->fd;
	w->fd = -1; /* the front end owns it now, even on failure */
	if (!(w->front = front_new(w->base, fd, &fc, why, sizeof(why)))) {
		snprintf(err, errlen, "worker %zu: %s", w->index, why);
		return -1;
	}
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
 * Runs in the worker's own thread (the front end is not thread-safe): stop
 * accepting, then give replies still being written SERVER_DRAIN_MS to reach
 * their clients before the loop ends.
 */
static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct timeval grace = {0, SERVER_DRAIN_MS * 1000};
	(void)fd;
	(void)what;
	front_drain(w->front);
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
		front_free(w->front);
		if (w->out)
			evbuffer_free(w->out);
		if (w->base)
			event_base_free(w->base);
		if (w->fd >= 0)
			close(w->fd);
		free(w->outs);
	}
	free(s->workers);
	pmetrics_free(s->metrics);
	free(s->in_vis);
	free(s->out_vis);
	free(s);
}
