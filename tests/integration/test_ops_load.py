#!/usr/bin/python3
"""Operations under continuous load (issue 6, "Done when").

Several client threads send requests through the router on keep-alive
connections for the whole run, while the main thread
  1. runs 100 cycles of `turnoutctl switch green` / `turnoutctl rollback`
     (blue/green), then
  2. rewrites the YAML 100 times, alternating the canary percent between 0 and
     100 (half saved by rename, half rewritten in place), waiting each time
     until `turnoutctl status` shows the new percent.
Every request must succeed (200, no connection error) and must have been
answered by a variant that the routing allowed at some moment while the
request was in flight: each change is timestamped (before it was asked for,
after it was in force) and, during that window, both the old and the new
variant are allowed; outside it, only the one in force.
"""

import bisect
import os
import sys
import threading
import time
import http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_ops import OpsRig, write_atomic, write_in_place  # noqa: E402

CLIENTS = 4
CYCLES = 100
REWRITES = 100
MAX_REQUESTS = 2_000_000  # per client: a bound, never reached in practice
MAX_SECONDS = 150  # per client: a bound on the whole run


class Load:
    """CLIENTS threads; each keeps one connection and records every request."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.records = [[] for _ in range(CLIENTS)]  # (t_start, t_end, variant)
        self.failures = [[] for _ in range(CLIENTS)]
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(CLIENTS)]

    def run(self, i):
        conn = None
        deadline = time.monotonic() + MAX_SECONDS
        for _ in range(MAX_REQUESTS):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            t0 = time.monotonic()
            try:
                conn.request("GET", f"/load/{i}")
                r = conn.getresponse()
                r.read()
                t1 = time.monotonic()
                if r.status != 200:
                    self.failures[i].append(f"status {r.status}")
                self.records[i].append((t0, t1, r.getheader("X-Turnout-Variant")))
            except (OSError, http.client.HTTPException) as e:
                self.failures[i].append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        return [r for rs in self.records for r in rs], [x for fs in self.failures for x in fs]


class Timeline:
    """What routing allowed when: segments (start, end, allowed variants)."""

    def __init__(self, t0, initial):
        self.segments = []
        self.current = set(initial)
        self.since = t0

    def change(self, asked, done, new):
        """A change asked for at `asked`, in force by `done`."""
        self.segments.append((self.since, asked, frozenset(self.current)))
        self.segments.append((asked, done, frozenset(self.current | set(new))))
        self.current = set(new)
        self.since = done

    def close(self, t):
        self.segments.append((self.since, t, frozenset(self.current)))
        self.starts = [s[0] for s in self.segments]

    def allowed(self, a, b):
        """Variants allowed at some moment in [a, b]."""
        out = set()
        i = max(0, bisect.bisect_right(self.starts, a) - 1)
        while i < len(self.segments) and self.segments[i][0] <= b:
            if self.segments[i][1] >= a:
                out |= self.segments[i][2]
            i += 1
        return out


def switch_cycles(rig, tl, f):
    for n in range(CYCLES):
        for args, new in ((("switch", "green"), {"green"}), (("rollback",), {"blue"})):
            asked = time.monotonic()
            rc, out, err = rig.ctl(*args)
            tl.change(asked, time.monotonic(), new)
            if rc != 0:
                f.check(False, f"cycle {n}: turnoutctl {' '.join(args)} failed: {err}")
                return


def yaml_rewrites(rig, tl, f):
    slowest = 0.0
    for n in range(REWRITES):
        pct = 100 if n % 2 == 0 else 0
        text = rig.yaml(strategy="canary", canary=pct) + f"# rewrite {n}\n"
        asked = time.monotonic()
        (write_atomic if n % 4 < 2 else write_in_place)(rig.cfg, text)
        try:
            harness.wait_for(lambda: rig.status()["canary_percent"] == pct, timeout=3,
                             interval=0.01, what=f"rewrite {n}: canary {pct}% in force")
        except AssertionError as e:
            f.check(False, str(e))
            return
        done = time.monotonic()
        slowest = max(slowest, done - asked)
        tl.change(asked, done, {"green"} if pct == 100 else {"blue"})
    print(f"{REWRITES} YAML rewrites: slowest in force after {slowest * 1000:.0f} ms")
    f.check(slowest < 1.0, f"every YAML rewrite in force within 1 s (slowest {slowest:.3f} s)")


def main():
    f = harness.Failures()
    rig = OpsRig()
    rig.start(rig.yaml(strategy="bluegreen"))
    load = Load(rig.port)
    t0 = time.monotonic()
    tl = Timeline(t0 - 1, {"blue"})
    load.start()
    harness.wait_for(lambda: sum(len(r) for r in load.records) > 20, timeout=10,
                     what="load running")
    switch_cycles(rig, tl, f)
    t1 = time.monotonic()
    # the same router goes canary by a YAML rewrite (this also lifts the rollback)
    yaml_rewrites(rig, tl, f)
    t2 = time.monotonic()
    time.sleep(0.2)  # a few requests after the last change
    records, failures = load.finish()
    tl.close(time.monotonic() + 1)

    bad = [(a, b, v, sorted(tl.allowed(a, b))) for a, b, v in records
           if v not in tl.allowed(a, b)]
    by_variant = {}
    for _, _, v in records:
        by_variant[v] = by_variant.get(v, 0) + 1
    print(f"{len(records)} requests ({by_variant}), switch/rollback cycles {t1 - t0:.1f} s, "
          f"rewrites {t2 - t1:.1f} s, {len(failures)} failed, {len(bad)} from a wrong variant")
    f.check(not failures, f"zero failed requests (got {len(failures)}: {failures[:5]})")
    f.check(not bad, f"every response from an allowed variant (wrong: {bad[:5]})")
    f.check(len(records) > 1000, f"the load was continuous ({len(records)} requests)")
    f.check(by_variant.get("blue", 0) > 100 and by_variant.get("green", 0) > 100,
            "both variants served (the checks had something to check)")
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM")
    f.finish()


if __name__ == "__main__":
    main()
