/*
 * watch.h - config file watcher: inotify on the file's directory, debounced.
 *
 * Editors often save by writing a new file and renaming it over the old one,
 * and Kubernetes swaps a "..data" symlink; a watch on the file itself would
 * lose track after the first such save. So the directory is watched and events
 * are filtered by name. Bursts of events (truncate, write, close, rename) are
 * coalesced: the callback runs on the event_base WATCH_SETTLE_MS after the
 * last event, and never later than WATCH_MAX_DELAY_MS after the first one.
 */
#ifndef TURNOUT_WATCH_H
#define TURNOUT_WATCH_H

#include <stddef.h>

struct event_base;
struct watch;

#define WATCH_SETTLE_MS    50
#define WATCH_MAX_DELAY_MS 300

/*
 * Watch the file at path; on a change call on_change(arg) from base's loop.
 * Returns the watcher (free with watch_free), or NULL with the reason in err
 * (no such directory, inotify limits reached).
 */
struct watch *watch_new(struct event_base *base, const char *path, void (*on_change)(void *arg),
                        void *arg, char *err, size_t errlen);

/* Number of change callbacks made so far (for tests and status). */
unsigned long watch_fired(const struct watch *w);

/* Stop watching. Accepts NULL. */
void watch_free(struct watch *w);

#endif
