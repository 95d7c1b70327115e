/*
 * main.c - turnout-predictor: flags, model loading (with its sha256 check),
 * and the process lifecycle around the HTTP server (server.c).
 *
 * The main thread blocks SIGTERM/SIGINT before any worker exists, so every
 * thread inherits the mask; it then waits for one with sigwait() and shuts
 * the workers down from ordinary code, not from a signal handler.
 */
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "onnx.h"
#include "server.h"

#define MAX_MODEL_BYTES  ((size_t)2 << 30) /* protobuf-c's own limit */
#define MAX_BODY_LIMIT   ((size_t)1 << 30)
#define MAX_CARD_BYTES   ((size_t)1 << 20)
#define DEFAULT_MAX_BODY ((size_t)4 << 20)
#define CONN_TIMEOUT_S   30
#define DEFAULT_MAX_CONN 4096

struct opts {
	const char *model, *name, *listen, *version, *sha256, *log_level;
	int threads;
	size_t max_body;
	size_t max_conns;
	int have_range;
	double range_min, range_max;
	char host[256];
	int port;
};

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: turnout-predictor --model FILE --name NAME --listen HOST:PORT [options]\n"
	        "Serve an ONNX model over the KServe V2 / Open Inference Protocol (HTTP/JSON).\n"
	        "  --model FILE          the .onnx model to serve\n"
	        "  --name NAME           model name used in URLs (/v2/models/NAME/infer)\n"
	        "  --listen HOST:PORT    address to listen on ([::1]:PORT for IPv6)\n"
	        "  --version V           model version served (default 1)\n"
	        "  --threads N           worker threads, 1..%d (default: number of CPUs)\n"
	        "  --sha256 HEX|card     refuse to start unless the model file has this SHA-256\n"
	        "                        (card: the sha256 row of the model card FILE.md)\n"
	        "  --max-body SIZE       largest request body, e.g. 512k, 4m (default 4m)\n"
	        "  --max-connections N   open client connections, split over the threads;\n"
	        "                        one more gets 503 (default 4096)\n"
	        "  --input-range MIN:MAX training range of input values, for the\n"
	        "                        predictor_inputs_out_of_range_total metric\n"
	        "  --log-level L         debug, info, warn or error (default info)\n"
	        "  --help                this text\n"
	        "  --version-info        print the program version and exit\n",
	        SERVER_MAX_THREADS);
}

/* "4m", "512k", "1000" -> bytes; -1 on junk or above the hard limit. */
static int parse_size(const char *s, size_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -1;
	unsigned long long mul = 1;
	if (*end == 'k' || *end == 'K')
		mul = 1024;
	else if (*end == 'm' || *end == 'M')
		mul = 1024 * 1024;
	else if (*end == 'g' || *end == 'G')
		mul = 1024 * 1024 * 1024;
	if (mul != 1)
		end++;
	if (*end || v == 0 || v > MAX_BODY_LIMIT / mul)
		return -1;
	*out = (size_t)(v * mul);
	return 0;
}

static int parse_range(const char *s, double *lo, double *hi)
{
	char *end;
	*lo = strtod(s, &end);
	if (end == s || *end != ':')
		return -1;
	const char *p = end + 1;
	*hi = strtod(p, &end);
	if (end == p || *end || !(*lo <= *hi))
		return -1;
	return 0;
}

/* HOST:PORT or [V6]:PORT into o->host, o->port. */
static int parse_listen(struct opts *o)
{
	const char *s = o->listen, *colon = strrchr(s, ':');
	if (!colon || colon == s)
		return -1;
	const char *h = s, *he = colon;
	if (*s == '[') {
		h = s + 1;
		he = strchr(s, ']');
		if (!he || he + 1 != colon)
			return -1;
	}
	if ((size_t)(he - h) >= sizeof(o->host) || he == h)
		return -1;
	memcpy(o->host, h, (size_t)(he - h));
	o->host[he - h] = 0;
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end || p < 0 || p > 65535)
		return -1;
	o->port = (int)p;
	return 0;
}

/* Names go into URLs: keep them to a safe alphabet. */
static int valid_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 128)
		return 0;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static int flag_error(const char *flag, const char *val, const char *why)
{
	fprintf(stderr, "turnout-predictor: %s %s: %s (see --help)\n", flag, val ? val : "", why);
	return 2;
}

enum {
	OPT_MODEL = 256,
	OPT_NAME,
	OPT_LISTEN,
	OPT_VERSION,
	OPT_THREADS,
	OPT_SHA,
	OPT_BODY,
	OPT_CONNS,
	OPT_RANGE,
	OPT_LOG,
	OPT_HELP,
	OPT_VINFO
};

static const struct option long_opts[] = {
    {"model", required_argument, NULL, OPT_MODEL},
    {"name", required_argument, NULL, OPT_NAME},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"version", required_argument, NULL, OPT_VERSION},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"sha256", required_argument, NULL, OPT_SHA},
    {"max-body", required_argument, NULL, OPT_BODY},
    {"max-connections", required_argument, NULL, OPT_CONNS},
    {"input-range", required_argument, NULL, OPT_RANGE},
    {"log-level", required_argument, NULL, OPT_LOG},
    {"help", no_argument, NULL, OPT_HELP},
    {"version-info", no_argument, NULL, OPT_VINFO},
    {NULL, 0, NULL, 0},
};

/* One flag; returns 0, -1 to exit 0 (help), or an exit code > 0. */
static int set_opt(struct opts *o, int c, const char *arg)
{
	char *end;
	switch (c) {
	case OPT_MODEL:
		o->model = arg;
		return 0;
	case OPT_NAME:
		o->name = arg;
		return valid_name(arg) ? 0
		                       : flag_error("--name", arg, "use 1-128 of [A-Za-z0-9._-]");
	case OPT_LISTEN:
		o->listen = arg;
		return parse_listen(o) == 0 ? 0 : flag_error("--listen", arg, "expected HOST:PORT");
	case OPT_VERSION:
		o->version = arg;
		return valid_name(arg)
		           ? 0
		           : flag_error("--version", arg, "use 1-128 of [A-Za-z0-9._-]");
	case OPT_THREADS: {
		long n = strtol(arg, &end, 10);
		if (*arg == 0 || *end || n < 1 || n > SERVER_MAX_THREADS)
			return flag_error("--threads", arg, "expected 1..256");
		o->threads = (int)n;
		return 0;
	}
	case OPT_SHA:
		o->sha256 = arg;
		if (strcmp(arg, "card") != 0 &&
		    (strlen(arg) != 64 || strspn(arg, "0123456789abcdefABCDEF") != 64))
			return flag_error("--sha256", arg, "expected 64 hex digits or 'card'");
		return 0;
	case OPT_BODY:
		return parse_size(arg, &o->max_body) == 0
		           ? 0
		           : flag_error("--max-body", arg,
		                        "expected a size like 512k or 4m, up to 1g");
	case OPT_CONNS: {
		long n = strtol(arg, &end, 10);
		if (*arg == 0 || *end || n < 1 || n > SERVER_MAX_CONNS)
			return flag_error("--max-connections", arg, "expected 1..1000000");
		o->max_conns = (size_t)n;
		return 0;
	}
	case OPT_RANGE:
		o->have_range = 1;
		return parse_range(arg, &o->range_min, &o->range_max) == 0
		           ? 0
		           : flag_error("--input-range", arg, "expected MIN:MAX with MIN <= MAX");
	case OPT_LOG: {
		enum log_level l;
		o->log_level = arg;
		if (log_parse_level(arg, &l) < 0)
			return flag_error("--log-level", arg,
			                  "expected debug, info, warn or error");
		log_set_level(l);
		return 0;
	}
	case OPT_HELP:
		usage(stdout);
		return -1;
	case OPT_VINFO:
		printf("turnout-predictor %s\n", TURNOUT_VERSION);
		return -1;
	}
	usage(stderr);
	return 2;
}

static int parse_opts(struct opts *o, int argc, char **argv)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	*o = (struct opts){
	    .version = "1", .max_body = DEFAULT_MAX_BODY, .max_conns = DEFAULT_MAX_CONN};
	o->threads = ncpu < 1 ? 1 : ncpu > SERVER_MAX_THREADS ? SERVER_MAX_THREADS : (int)ncpu;
	int c;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		int rc = set_opt(o, c, optarg);
		if (rc != 0)
			return rc;
	}
	if (optind < argc)
		return flag_error("argument", argv[optind], "unexpected");
	if (!o->model || !o->name || !o->listen) {
		fprintf(stderr, "turnout-predictor: --model, --name and --listen are required\n");
		usage(stderr);
		return 2;
	}
	return 0;
}

/* Read the whole model file; returns a malloc'd buffer (caller frees) or NULL with err. */
static unsigned char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
	unsigned char *buf = NULL;
	FILE *f = fopen(path, "rb");
	struct stat st;
	if (!f || fstat(fileno(f), &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size > MAX_MODEL_BYTES) {
		snprintf(err, errlen, "%s: not a regular file of at most 2 GiB", path);
		goto fail;
	}
	*len = (size_t)st.st_size;
	if (!(buf = malloc(*len ? *len : 1))) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto fail;
	}
	if (fread(buf, 1, *len, f) != *len) {
		snprintf(err, errlen, "%s: short read", path);
		goto fail;
	}
	fclose(f);
	return buf;
fail:
	free(buf);
	if (f)
		fclose(f);
	return NULL;
}

/* Compare the SHA-256 of buf to want (hex); 0, or -1 with err naming both hashes. */
static int check_sha256(const char *path, const unsigned char *buf, size_t len, const char *want,
                        char *err, size_t errlen)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char got[2 * EVP_MAX_MD_SIZE + 1];
	if (!EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL)) {
		snprintf(err, errlen, "%s: cannot compute SHA-256", path);
		return -1;
	}
	for (unsigned int i = 0; i < mdlen; i++)
		snprintf(got + 2 * i, 3, "%02x", md[i]);
	if (strcasecmp(got, want) != 0) {
		snprintf(err, errlen, "%s: sha256 mismatch: expected %s, got %s", path, want, got);
		return -1;
	}
	return 0;
}

/* The first 64-hex-digit word on a line of s that mentions sha256, into hex (65 bytes). */
static int find_sha_line(const char *s, size_t len, char *hex)
{
	const char *end = s + len;
	for (const char *line = s; line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		nl = nl ? nl : end;
		for (const char *p = line; memmem(line, (size_t)(nl - line), "sha256", 6) && p < nl;
		     p++) {
			size_t k = 0;
			while (p + k < nl && isxdigit((unsigned char)p[k]))
				k++;
			if (k == 64 && (p == line || !isxdigit((unsigned char)p[-1]))) {
				memcpy(hex, p, 64);
				hex[64] = 0;
				return 0;
			}
			p += k;
		}
		line = nl + 1;
	}
	return -1;
}

/*
 * "--sha256 card": the expected hash comes from the model card beside the
 * model (models/digits-v1.onnx -> models/digits-v1.md, the "| sha256 |
 * `HEX` |" row). Fills hex (65 bytes); -1 with err naming the card.
 */
static int card_sha256(const char *model, char *card, size_t cardlen, char *hex, char *err,
                       size_t errlen)
{
	size_t n = strlen(model), len = 0;
	if (n > 5 && strcmp(model + n - 5, ".onnx") == 0)
		n -= 5;
	if (n + 4 > cardlen) {
		snprintf(err, errlen, "%s: path too long", model);
		return -1;
	}
	memcpy(card, model, n);
	strcpy(card + n, ".md");
	unsigned char *buf = read_file(card, &len, err, errlen);
	if (!buf)
		return -1;
	int rc = len <= MAX_CARD_BYTES ? find_sha_line((const char *)buf, len, hex) : -1;
	free(buf);
	if (rc < 0)
		snprintf(err, errlen,
		         "%.400s: no line with 'sha256' and 64 hex digits (model card)", card);
	return rc;
}

static struct onnx_model *load_model(const struct opts *o, char *err, size_t errlen)
{
	char card[PATH_MAX], hex[65];
	const char *want = o->sha256;
	if (want && strcmp(want, "card") == 0) {
		if (card_sha256(o->model, card, sizeof(card), hex, err, errlen) < 0)
			return NULL;
		want = hex;
	}
	size_t len = 0;
	unsigned char *buf = read_file(o->model, &len, err, errlen);
	if (!buf)
		return NULL;
	struct onnx_model *m = NULL;
	if (!want || check_sha256(o->model, buf, len, want, err, errlen) == 0)
		m = onnx_model_load_buffer(o->model, buf, len, err, errlen);
	else if (want == hex)
		snprintf(err + strlen(err), errlen - strlen(err), " (expected hash from %.400s)",
		         card);
	free(buf);
	return m;
}

/*
 * Raise the open-file limit to its hard maximum: every client connection is
 * a descriptor, and evhttp (libevent 2.1) has no connection limit of its own.
 */
static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("cannot raise the open-file limit: %s", strerror(errno));
	}
}

/* Block the stop signals (inherited by the workers) and return the set. */
static void block_signals(sigset_t *set)
{
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	pthread_sigmask(SIG_BLOCK, set, NULL);
}

int main(int argc, char **argv)
{
	struct opts o;
	char err[SERVER_ERR_MAX + ONNX_ERR_MAX];
	log_init("turnout-predictor", LOG_LEVEL_INFO);
	int rc = parse_opts(&o, argc, argv);
	if (rc != 0)
		return rc < 0 ? 0 : rc;
	sigset_t set;
	block_signals(&set);
	raise_nofile();
	struct onnx_model *model = load_model(&o, err, sizeof(err));
	if (!model) {
		log_error("cannot load model: %s", err);
		return 1;
	}
	struct server_config cfg = {
	    .host = o.host,
	    .port = o.port,
	    .threads = o.threads,
	    .max_body = o.max_body,
	    .timeout_s = CONN_TIMEOUT_S,
	    .max_conns = o.max_conns,
	    .model_name = o.name,
	    .model_version = o.version,
	    .have_range = o.have_range,
	    .range_min = o.range_min,
	    .range_max = o.range_max,
	};
	struct server *srv = server_new(&cfg, model, err, sizeof(err));
	if (!srv || server_start(srv, err, sizeof(err)) < 0) {
		log_error("%s", err);
		server_free(srv);
		onnx_model_free(model);
		libevent_global_shutdown();
		return 1;
	}
	int sig = 0;
	sigwait(&set, &sig);
	log_info("%s: stopping", strsignal(sig));
	server_free(srv);
	onnx_model_free(model);
	libevent_global_shutdown();
	log_info("stopped");
	return 0;
}
