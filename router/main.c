/*
 * main.c - turnout: flags, lifecycle, and the main thread's loop.
 *
 * The main thread loads the config, publishes the first route snapshot, opens
 * one SO_REUSEPORT listening socket per worker, starts the workers, and then
 * runs its own event loop: signals and the admin HTTP server. It is the only
 * writer of routing state. SIGTERM/SIGINT: every worker stops accepting and
 * finishes its in-flight requests (up to limits.drain_timeout), then
 * everything is freed and the process exits 0. SIGHUP reloads the config
 * (routing only; listen/workers/limits need a restart); a bad file is refused
 * and the running snapshot stays.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "health.h"    /* resilience: active + passive health checks */
#include "accesslog.h" /* observability: access log */
#include "log.h"
#include "metrics.h" /* observability: /metrics, dashboard */
#include "ops.h"
#include "route.h"
#include "shadow.h" /* observability: shadow_log_reopen on SIGUSR1 */
#include "stats.h"
#include "status.h"
#include "tls.h" /* resilience: TLS listener, certificate reload */
#include "worker.h"

struct main_ctx {
	const char *config_path;
	struct event_base *base;
	struct route_config *rc;
	struct stats *stats;
	struct worker **workers;
	size_t n_workers;
	struct status *status;
	struct event *sig_term, *sig_int, *sig_hup;
	struct event *sig_usr1;  /* observability: reopen logs (logrotate) */
	struct metrics *metrics; /* observability: /metrics, /, /status/history */
	uint64_t generation;
	struct ops *ops;       /* ops.c: admin socket, persisted overrides, live reload */
	struct health *health; /* resilience: health.c, follows the current snapshot */
};

static void usage(FILE *f)
{
	fprintf(f, "usage: turnout -c FILE        run the router\n"
	           "       turnout -t -c FILE     check the config and exit (0 ok, 1 errors)\n"
	           "       turnout --help | --version\n"
	           "options:\n"
	           "  -c, --config FILE   YAML configuration (see docs/CONFIG.md)\n"
	           "  -t, --test          check the config, print every error, exit\n"
	           "  -h, --help          this text\n"
	           "  -V, --version       print the version\n");
}

static void on_stop(evutil_socket_t sig, short events, void *arg)
{
	struct main_ctx *m = arg;
	log_info("signal %d: draining and stopping", (int)sig);
	event_base_loopbreak(m->base);
}

/* SIGHUP: ops.c reloads (validate, keep the running config on error, re-apply
 * operator overrides that still hold, publish). */
static void on_reload(evutil_socket_t sig, short events, void *arg)
{
	struct main_ctx *m = arg;
	char err[CONFIG_ERR_MAX];
	log_info("SIGHUP: reloading %s", m->config_path);
	/* resilience: new certificate for new connections; open ones keep theirs */
	int trc = tls_server_reload(err, sizeof(err));
	if (trc < 0)
		log_error("SIGHUP: %s; the current certificate stays", err);
	else if (trc == 0)
		log_info("SIGHUP: TLS certificate reloaded");
	if (ops_reload(m->ops, err, sizeof(err)) == 1)
		log_info("reload: %s unchanged", m->config_path);
}

/* observability: SIGUSR1 reopens the access log and the disagreement logs. */
static void on_reopen(evutil_socket_t sig, short events, void *arg)
{
	log_info("SIGUSR1: reopening logs");
	accesslog_reopen();
	shadow_log_reopen();
}

static int start_workers(struct main_ctx *m, const struct config *cfg)
{
	char err[512];
	long n = cfg->workers > 0 ? cfg->workers : sysconf(_SC_NPROCESSORS_ONLN);
	m->n_workers = n > 0 ? (size_t)n : 1;
	m->stats = stats_new(m->n_workers);
	m->workers = calloc(m->n_workers, sizeof(*m->workers));
	if (m->stats == NULL || m->workers == NULL) {
		log_error("out of memory starting workers");
		return -1;
	}
	for (size_t i = 0; i < m->n_workers; i++) {
		int fd = worker_listen_socket(cfg->listen_host, cfg->listen_port, err, sizeof(err));
		if (fd < 0 ||
		    (m->workers[i] = worker_new(i, fd, cfg, m->n_workers, stats_shard(m->stats, i),
		                                err, sizeof(err))) == NULL) {
			log_error("%s", err);
			return -1;
		}
	}
	for (size_t i = 0; i < m->n_workers; i++) {
		if (worker_start(m->workers[i], err, sizeof(err)) < 0) {
			log_error("%s", err);
			return -1;
		}
	}
	return 0;
}

static int add_signal(struct main_ctx *m, struct event **ev, int sig, event_callback_fn cb)
{
	*ev = evsignal_new(m->base, sig, cb, m);
	return *ev && evsignal_add(*ev, NULL) == 0 ? 0 : -1;
}

static int setup(struct main_ctx *m, struct config *cfg)
{
	char err[512];
	m->rc = route_config_new(cfg);
	if (m->rc == NULL)
		return -1;
	struct route_params p = route_params_from_config(cfg);
	struct route_snapshot *s =
	    route_snapshot_new(m->rc, &p, ++m->generation, NULL, err, sizeof(err));
	if (s == NULL) {
		log_error("%s: %s", cfg->file, err);
		return -1;
	}
	route_publish(s);
	if (add_signal(m, &m->sig_term, SIGTERM, on_stop) < 0 ||
	    add_signal(m, &m->sig_int, SIGINT, on_stop) < 0 ||
	    add_signal(m, &m->sig_hup, SIGHUP, on_reload) < 0 ||
	    add_signal(m, &m->sig_usr1, SIGUSR1, on_reopen) < 0) {
		log_error("cannot install signal handlers");
		return -1;
	}
	/* ops.c: restore persisted overrides before traffic, start the admin socket
	 * and the config watcher. */
	m->ops = ops_new(m->base, m->config_path, NULL, err, sizeof(err));
	if (m->ops == NULL) {
		log_error("%s", err);
		return -1;
	}
	/* observability: the access log is open before the first request */
	if (accesslog_open(cfg->access_log, err, sizeof(err)) < 0) {
		log_error("%s: %s", cfg->file, err);
		return -1;
	}
	/* resilience: the TLS context exists before a worker can accept */
	if (cfg->tls.cert && tls_server_init(cfg->tls.cert, cfg->tls.key, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return -1;
	}
	if (start_workers(m, cfg) < 0)
		return -1;
	ops_set_stats(m->ops, m->stats); /* ops.c: counters for status/stats */
	/* resilience: health checks on this loop (probes, passive ejection back-off) */
	m->health = health_new(m->base, err, sizeof(err));
	if (m->health == NULL) {
		log_error("%s", err);
		return -1;
	}
	if (cfg->admin_http_host) {
		m->status = status_new(m->base, cfg->admin_http_host, cfg->admin_http_port,
		                       m->stats, err, sizeof(err));
		if (m->status == NULL) {
			log_error("%s", err);
			return -1;
		}
		/* observability: /metrics, the dashboard and its history on the admin port */
		m->metrics =
		    metrics_new(m->base, status_http(m->status), m->stats, err, sizeof(err));
		if (m->metrics == NULL) {
			log_error("%s", err);
			return -1;
		}
		/* observability: /status also shows overrides, reloads, recent actions */
		status_set_extra(m->status, metrics_status_extra, m->ops);
	}
	log_info("listening on %s:%d with %zu worker(s), strategy %s", cfg->listen_host,
	         cfg->listen_port, m->n_workers, config_strategy_name(cfg->strategy));
	return 0;
}

static void teardown(struct main_ctx *m)
{
	for (size_t i = 0; m->workers && i < m->n_workers; i++)
		if (m->workers[i])
			worker_drain(m->workers[i]);
	for (size_t i = 0; m->workers && i < m->n_workers; i++)
		if (m->workers[i])
			worker_join(m->workers[i]);
	for (size_t i = 0; m->workers && i < m->n_workers; i++)
		worker_free(m->workers[i]);
	free(m->workers);
	tls_server_shutdown();    /* resilience: after the workers */
	health_free(m->health);   /* resilience: before the loop and libcurl go */
	ops_free(m->ops);         /* ops.c */
	metrics_free(m->metrics); /* observability */
	status_free(m->status);
	accesslog_close(); /* observability: after the workers' last lines */
	route_shutdown();
	route_config_unref(m->rc);
	stats_free(m->stats);
	stats_slots_reset();
	struct event *evs[] = {m->sig_term, m->sig_int, m->sig_hup, m->sig_usr1};
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i])
			event_free(evs[i]);
	if (m->base)
		event_base_free(m->base);
}

/* Load the config at path, or print every error (one per line) and return NULL. */
static struct config *load_or_report(const char *path)
{
	char err[CONFIG_ERR_MAX];
	struct config *cfg = config_load(path, err, sizeof(err));
	if (cfg == NULL) {
		fprintf(stderr, "%s", err);
		if (err[0] && err[strlen(err) - 1] != '\n')
			fputc('\n', stderr);
	}
	return cfg;
}

static int check_config(const char *path)
{
	struct config *cfg = load_or_report(path);
	if (cfg == NULL) {
		fprintf(stderr, "turnout: configuration file %s test failed\n", path);
		return 1;
	}
	config_free(cfg);
	printf("turnout: configuration file %s test is successful\n", path);
	return 0;
}

static int run(const char *path)
{
	struct config *cfg = load_or_report(path);
	if (cfg == NULL)
		return 1;
	enum log_level lvl;
	if (cfg->log_level && log_parse_level(cfg->log_level, &lvl) == 0)
		log_set_level(lvl);
	struct main_ctx m = {.config_path = path};
	int rc = 1;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || evthread_use_pthreads() < 0 ||
	    (m.base = event_base_new()) == NULL) {
		log_error("cannot initialise libcurl/libevent");
		config_free(cfg);
		goto out;
	}
	if (setup(&m, cfg) == 0) {
		event_base_dispatch(m.base);
		rc = 0;
	}
out:
	teardown(&m);
	curl_global_cleanup();
	libevent_global_shutdown();
	log_info("stopped");
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"test", no_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = NULL;
	int test = 0, c;
	signal(SIGPIPE, SIG_IGN);
	log_init("turnout", LOG_LEVEL_INFO);
	while ((c = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("turnout %s\n", TURNOUT_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (path == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}
	return test ? check_config(path) : run(path);
}
