/*
 * watch.c - config file watcher (see watch.h).
 *
 * One inotify descriptor, non-blocking, read from the event loop. Only
 * events naming the watched file (or a "..data" symlink swap) count; the rest
 * of the directory is noise. IN_MODIFY is ignored on purpose: a file being
 * written in several steps is only worth reading once it is closed
 * (IN_CLOSE_WRITE) or moved into place (IN_MOVED_TO).
 */
#include "watch.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"

struct watch {
	int fd;
	int wd;
	char *dir;
	char *name; /* basename of the watched file */
	struct event *ev_read;
	struct event *ev_settle;
	struct timespec first; /* first event of the current burst, tv_sec 0 = none */
	void (*on_change)(void *arg);
	void *arg;
	unsigned long fired;
};

static long ms_since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

static void on_settle(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;
	w->first.tv_sec = 0;
	w->fired++;
	w->on_change(w->arg);
}

/* A relevant event arrived: (re)arm the settle timer within the max delay. */
static void note_change(struct watch *w)
{
	long delay = WATCH_SETTLE_MS;
	if (w->first.tv_sec == 0) {
		clock_gettime(CLOCK_MONOTONIC, &w->first);
	} else {
		long left = WATCH_MAX_DELAY_MS - ms_since(&w->first);
		if (left < delay)
			delay = left < 0 ? 0 : left;
	}
	struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
	evtimer_add(w->ev_settle, &tv);
}

static int relevant(const struct watch *w, const struct inotify_event *e)
{
	if (e->mask & (IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF))
		return 1;
	if (e->len == 0)
		return 0;
	return strcmp(e->name, w->name) == 0 || strcmp(e->name, "..data") == 0;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;
	char buf[16 * (sizeof(struct inotify_event) + NAME_MAX + 1)]
	    __attribute__((aligned(__alignof__(struct inotify_event))));
	for (int rounds = 0; rounds < 64; rounds++) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0) {
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				log_warn("watch: %s: read: %s", w->dir, strerror(errno));
			return;
		}
		int hit = 0;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *e = (const struct inotify_event *)p;
			hit |= relevant(w, e);
			if (e->mask & IN_IGNORED)
				log_warn("watch: %s: directory went away; no more live reloads",
				         w->dir);
			p += sizeof(*e) + e->len;
		}
		if (hit)
			note_change(w);
	}
}

struct watch *watch_new(struct event_base *base, const char *path, void (*on_change)(void *arg),
                        void *arg, char *err, size_t errlen)
{
	char d[PATH_MAX], b[PATH_MAX];
	struct watch *w = calloc(1, sizeof(*w));
	if (!w)
		goto oom;
	w->fd = -1;
	w->on_change = on_change;
	w->arg = arg;
	if (snprintf(d, sizeof(d), "%s", path) >= (int)sizeof(d)) {
		snprintf(err, errlen, "%s: path too long", path);
		goto fail;
	}
	memcpy(b, d, sizeof(b));
	if (!(w->dir = strdup(dirname(d))) || !(w->name = strdup(basename(b))))
		goto oom;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		snprintf(err, errlen, "%s: inotify_init1: %s", path, strerror(errno));
		goto fail;
	}
	w->wd = inotify_add_watch(w->fd, w->dir,
	                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
	                              IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF);
	if (w->wd < 0) {
		snprintf(err, errlen, "%s: cannot watch directory %s: %s", path, w->dir,
		         strerror(errno));
		goto fail;
	}
	w->ev_read = event_new(base, w->fd, EV_READ | EV_PERSIST, on_read, w);
	w->ev_settle = evtimer_new(base, on_settle, w);
	if (!w->ev_read || !w->ev_settle || event_add(w->ev_read, NULL) != 0)
		goto oom;
	return w;
oom:
	snprintf(err, errlen, "%s: out of memory", path);
fail:
	watch_free(w);
	return NULL;
}

unsigned long watch_fired(const struct watch *w)
{
	return w->fired;
}

void watch_free(struct watch *w)
{
	if (!w)
		return;
	if (w->ev_read)
		event_free(w->ev_read);
	if (w->ev_settle)
		event_free(w->ev_settle);
	if (w->fd >= 0)
		close(w->fd);
	free(w->dir);
	free(w->name);
	free(w);
}
