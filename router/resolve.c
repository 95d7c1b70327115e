/*
 * resolve.c - getaddrinfo on a thread of its own, so that the event loop
 * never blocks on DNS (what libcurl's threaded resolver does, with one thread
 * per resolver instead of one per lookup).
 *
 * The loop queues jobs (bounded); the thread takes them in order, runs
 * getaddrinfo, and puts the answered job on a done list, then writes to an
 * eventfd that the loop watches; the loop takes the done list and calls the
 * callbacks. What the two sides share (queues, eventfd, flags) lives in a
 * struct freed by whichever side lets go of it last: getaddrinfo cannot be
 * interrupted, so resolve_free leaves a busy thread to finish on its own
 * rather than block the loop's shutdown behind a slow DNS server.
 */
#include "resolve.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

struct resolve_job {
	struct resolve_job *next;
	char host[RESOLVE_MAX_HOST + 1];
	char port[8];
	resolve_cb cb;
	void *arg;
	struct resolve_result res;
};

/* Between the loop and the thread: every field under mu. */
struct resolve_shared {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct resolve_job *todo, *todo_tail, *done, *done_tail;
	int efd;
	int stop;
	int busy; /* the thread is inside getaddrinfo */
	int refs; /* 2 while the thread runs, else 1 */
};

struct resolver {
	struct event_base *base;
	struct resolve_shared *sh;
	struct event *ev; /* on sh->efd */
	pthread_t th;
	int started;
	size_t pending;
};

static resolve_hook_fn test_hook;

void resolve_set_test_hook(resolve_hook_fn fn)
{
	__atomic_store_n(&test_hook, fn, __ATOMIC_SEQ_CST);
}

static void free_jobs(struct resolve_job *j)
{
	while (j != NULL) {
		struct resolve_job *next = j->next;
		free(j);
		j = next;
	}
}

/* Let go of sh (under its lock); the last one out frees it. */
static void shared_put(struct resolve_shared *sh)
{
	int last = --sh->refs == 0;
	pthread_mutex_unlock(&sh->mu);
	if (!last)
		return;
	free_jobs(sh->todo);
	free_jobs(sh->done);
	if (sh->efd >= 0)
		close(sh->efd);
	pthread_cond_destroy(&sh->cv);
	pthread_mutex_destroy(&sh->mu);
	free(sh);
}

/* The lookup itself, on the thread: fills j->res. */
static void do_lookup(struct resolve_job *j)
{
	struct resolve_result *r = &j->res;
	struct addrinfo hints = {
	    .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	resolve_hook_fn hook = __atomic_load_n(&test_hook, __ATOMIC_SEQ_CST);
	r->err = hook ? hook(j->host, r) : 0;
	if (r->err == 0)
		r->err = getaddrinfo(j->host, j->port, &hints, &ai);
	if (r->err == EAI_SYSTEM) {
		snprintf(r->why, sizeof(r->why), "%m"); /* glibc: errno's text, thread-safe */
	} else if (r->err != 0) {
		snprintf(r->why, sizeof(r->why), "%s", gai_strerror(r->err));
	}
	for (struct addrinfo *p = ai; p && r->n < RESOLVE_MAX_ADDRS; p = p->ai_next) {
		if ((p->ai_family != AF_INET && p->ai_family != AF_INET6) ||
		    p->ai_addrlen > sizeof(r->addrs[0]))
			continue;
		memcpy(&r->addrs[r->n], p->ai_addr, p->ai_addrlen);
		r->lens[r->n++] = p->ai_addrlen;
	}
	if (ai != NULL)
		freeaddrinfo(ai);
	if (r->err == 0 && r->n == 0) {
		r->err = EAI_NODATA;
		snprintf(r->why, sizeof(r->why), "no IPv4 or IPv6 address");
	}
}

static void *thread_main(void *arg)
{
	struct resolve_shared *sh = arg;
	pthread_mutex_lock(&sh->mu);
	for (;;) {
		while (!sh->stop && sh->todo == NULL)
			pthread_cond_wait(&sh->cv, &sh->mu);
		if (sh->stop)
			break;
		struct resolve_job *j = sh->todo;
		sh->todo = j->next;
		if (sh->todo == NULL)
			sh->todo_tail = NULL;
		j->next = NULL;
		sh->busy = 1;
		pthread_mutex_unlock(&sh->mu);
		do_lookup(j);
		pthread_mutex_lock(&sh->mu);
		sh->busy = 0;
		if (sh->stop) {
			free(j);
			break;
		}
		if (sh->done_tail)
			sh->done_tail->next = j;
		else
			sh->done = j;
		sh->done_tail = j;
		uint64_t one = 1;
		if (write(sh->efd, &one, sizeof(one)) < 0) {
			/* the counter is nonzero already: the loop will look */
		}
	}
	shared_put(sh);
	return NULL;
}

/* The thread answered: hand every done job to its callback. */
static void on_answers(evutil_socket_t fd, short what, void *arg)
{
	struct resolver *r = arg;
	uint64_t n;
	(void)what;
	if (read(fd, &n, sizeof(n)) < 0) {
		/* EAGAIN: a spurious wake-up; the done list decides */
	}
	pthread_mutex_lock(&r->sh->mu);
	struct resolve_job *j = r->sh->done;
	r->sh->done = r->sh->done_tail = NULL;
	pthread_mutex_unlock(&r->sh->mu);
	while (j != NULL) {
		struct resolve_job *next = j->next;
		r->pending--;
		j->cb(&j->res, j->arg);
		free(j);
		j = next;
	}
}

struct resolver *resolve_new(struct event_base *base, char *err, size_t errlen)
{
	struct resolver *r = calloc(1, sizeof(*r));
	struct resolve_shared *sh = calloc(1, sizeof(*sh));
	if (r == NULL || sh == NULL) {
		free(sh);
		snprintf(err, errlen, "cannot create the resolver (out of memory)");
		goto fail;
	}
	r->base = base;
	r->sh = sh;
	sh->refs = 1;
	sh->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_init(&sh->mu, NULL);
	pthread_cond_init(&sh->cv, NULL);
	if (sh->efd < 0) {
		snprintf(err, errlen, "cannot create the resolver's eventfd: %s", strerror(errno));
		goto fail;
	}
	r->ev = event_new(base, sh->efd, EV_READ | EV_PERSIST, on_answers, r);
	if (r->ev == NULL || event_add(r->ev, NULL) < 0) {
		snprintf(err, errlen, "cannot watch the resolver's eventfd");
		goto fail;
	}
	return r;
fail:
	resolve_free(r);
	return NULL;
}

void resolve_free(struct resolver *r)
{
	if (r == NULL)
		return;
	if (r->ev)
		event_free(r->ev);
	struct resolve_shared *sh = r->sh;
	if (sh != NULL) {
		pthread_mutex_lock(&sh->mu);
		free_jobs(sh->todo);
		free_jobs(sh->done);
		sh->todo = sh->todo_tail = sh->done = sh->done_tail = NULL;
		sh->stop = 1;
		int busy = sh->busy;
		pthread_cond_signal(&sh->cv);
		pthread_mutex_unlock(&sh->mu);
		if (r->started && busy)
			pthread_detach(r->th); /* it frees sh when its lookup returns */
		else if (r->started)
			pthread_join(r->th, NULL);
		pthread_mutex_lock(&sh->mu);
		shared_put(sh);
	}
	free(r);
}

int resolve_start(struct resolver *r, const char *host, const char *port, resolve_cb cb, void *arg,
                  char *err, size_t errlen)
{
	if (strlen(host) > RESOLVE_MAX_HOST ||
	    strlen(port) >= sizeof(((struct resolve_job *)0)->port)) {
		snprintf(err, errlen, "host name or port too long");
		return -1;
	}
	if (r->pending >= RESOLVE_MAX_QUEUE) {
		snprintf(err, errlen, "%d lookups waiting already", RESOLVE_MAX_QUEUE);
		return -1;
	}
	if (!r->started) {
		sigset_t all, old;
		sigfillset(&all); /* signals are the main thread's business */
		pthread_sigmask(SIG_SETMASK, &all, &old);
		r->sh->refs++;
		int e = pthread_create(&r->th, NULL, thread_main, r->sh);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (e != 0) {
			r->sh->refs--;
			snprintf(err, errlen, "cannot start the resolver thread: %s", strerror(e));
			return -1;
		}
		r->started = 1;
	}
	struct resolve_job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	strcpy(j->host, host);
	strcpy(j->port, port);
	j->cb = cb;
	j->arg = arg;
	pthread_mutex_lock(&r->sh->mu);
	if (r->sh->todo_tail)
		r->sh->todo_tail->next = j;
	else
		r->sh->todo = j;
	r->sh->todo_tail = j;
	pthread_cond_signal(&r->sh->cv);
	pthread_mutex_unlock(&r->sh->mu);
	r->pending++;
	return 0;
}
