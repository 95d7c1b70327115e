"""Shadow pairs that end in an error, by cause, with real backends.

1. timeout: the shadow backend answers after 3 s, shadow.timeout is 200 ms.
   Every pair counts as an error with cause "timeout" (none compared), and no
   client waited for the shadow: each answer comes from live well before the
   shadow could have answered.
2. invalid: a rule the answers cannot satisfy (argmax of a number) makes every
   pair an error with cause "invalid", counted per rule too.
3. bytes: 10 MiB mirrors held by a stuck shadow fill the worker's byte budget;
   the rest are dropped with the reason "bytes" (counted, never queued).
"""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

ROUTER = """
listen: 127.0.0.1:{{port}}
workers: 1
admin:
  http: 127.0.0.1:{{admin_port}}
variants:
  live:   {{{{ endpoints: [http://127.0.0.1:{live}] }}}}
  shadow: {{{{ endpoints: [http://127.0.0.1:{shadow}] }}}}
strategy: shadow
stable: live
candidate: shadow
health:
  enabled: false
shadow:
  percent: 100
  max_inflight: 64
  timeout: {timeout}
{rules}"""

N = 10


def shadow_stats(admin_port):
    st, _, data = harness.http_request(admin_port, "GET", "/status", timeout=5)
    assert st == 200, st
    for v in json.loads(data)["shadow"]["variants"]:
        if v["name"] == "shadow":
            return v
    raise AssertionError("no shadow stats")


def run(f, live, shadow, timeout, rules, what):
    router = backend.start_router(ROUTER.format(live=live.port, shadow=shadow.port,
                                                timeout=timeout, rules=rules))
    slowest = 0.0
    for i in range(N):
        t0 = time.monotonic()
        s, h, b = harness.http_request(router.port, "POST", f"/p?i={i}", body=b"x" * i)
        slowest = max(slowest, time.monotonic() - t0)
        f.check(s == 200 and h.get("x-turnout-variant") == "live" and
                json.loads(b)["backend"] == "live", f"{what}: request {i} answered by live ({s})")

    def settled():
        v = shadow_stats(router.admin_port)
        return v if v["agree"] + v["disagree"] + v["error"] >= N else None

    v = harness.wait_for(settled, timeout=20, what=f"{what}: every pair counted")
    f.check(v["mirrored"] == N and v["error"] == N and v["agree"] + v["disagree"] == 0,
            f"{what}: {N} mirrors, {N} errors, none compared ({v['mirrored']} {v['agree']} "
            f"{v['disagree']} {v['error']})")
    f.check(router.stop(signal.SIGTERM) == 0, f"{what}: router exits 0 on SIGTERM")
    return v, slowest


def main():
    f = harness.Failures()
    live = backend.start_backend("live")
    slow = backend.start_backend("slow", delay_ms=3000)
    fast = backend.start_backend("fast")

    v, slowest = run(f, live, slow, "200ms", "", "timeout")
    f.check(v["errors"]["timeout"] == N and v["errors"]["failed"] == 0,
            f"timeout: every error is a shadow timeout ({v['errors']})")
    f.check(slowest < 2.5, f"timeout: no client waited for the 3 s shadow (slowest "
                           f"{slowest * 1e3:.0f} ms)")

    rules = "  compare:\n    - {{ path: body_len, mode: argmax }}\n"
    v, _ = run(f, live, fast, "5s", rules, "invalid")
    f.check(v["errors"]["invalid"] == N, f"invalid: every error is unparsable ({v['errors']})")
    f.check(v["rules"][0]["error"] == N, f"invalid: counted on the rule ({v['rules'][0]})")

    # 3. bytes: 10 MiB bodies to a shadow that holds each for 30 s. Six mirrors
    # hold 60 MiB of this worker's 64 MiB budget (SHADOW_INFLIGHT_BYTES_MAX); the
    # seventh and eighth are dropped with the reason "bytes", not queued.
    stuck = backend.start_backend("stuck", delay_ms=30000)
    router = backend.start_router(ROUTER.format(live=live.port, shadow=stuck.port,
                                                timeout="60s", rules=""))
    big = os.urandom(10 * 1024 * 1024)
    for i in range(8):
        s, h, b = harness.http_request(router.port, "POST", f"/big?i={i}", body=big, timeout=30)
        f.check(s == 200 and h.get("x-turnout-variant") == "live",
                f"bytes: 10 MiB request {i} answered by live ({s})")
    v = harness.wait_for(lambda: (lambda v: v if v["mirrored"] + sum(v["dropped"].values()) >= 8
                                  else None)(shadow_stats(router.admin_port)),
                         timeout=10, what="bytes: every mirror started or dropped")
    f.check(v["mirrored"] == 6 and v["dropped"]["bytes"] == 2 and v["errors"]["dropped"] == 2,
            f"bytes: 6 mirrored, 2 dropped for the byte budget ({v['mirrored']} {v['dropped']})")
    f.check(router.stop(signal.SIGTERM) == 0, "bytes: router exits 0 with mirrors in flight")

    for p in (live, slow, fast, stuck):
        f.check(p.stop(signal.SIGTERM) == 0, f"{p.name} exits 0 on SIGTERM")
    f.finish()


if __name__ == "__main__":
    main()
