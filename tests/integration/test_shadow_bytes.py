"""The shadow byte budget counts everything a waiting mirror holds, headers too.

A shadow that never answers (it holds every request longer than the test
runs) and a generous shadow.max_inflight: only the byte budget
(SHADOW_INFLIGHT_BYTES_MAX, 64 MiB per worker) can stop mirrors piling up.
Every request is a GET without a body whose headers weigh 240 KiB
(limits.max_header 1 MiB; the built-in upstream client takes request heads
up to 256 KiB), so the bodies a mirror copies are empty and only
the headers fill the budget. Sent one after the other to one worker:
- every client is answered by live;
- mirrors are handed over until the held headers reach 64 MiB, then dropped
  with reason "bytes": mirrored x header size stays within 64 MiB, and
  mirrored + dropped == sent (every request accounted for once);
- SIGTERM with all those mirrors held exits 0, without waiting for them.
"""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

ROUTER = """
listen: 127.0.0.1:{{port}}
workers: 1
admin:
  http: 127.0.0.1:{{admin_port}}
limits:
  max_header: 1MiB
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
  max_inflight: 4096
  timeout: 60s
"""

BUDGET = 64 * 1024 * 1024
HEADERS = 4  # Python's http.server takes header lines up to 64 KiB
HEADER_VALUE = 60 * 1024
N = 320  # 320 x 240 KiB = 75 MiB: past the budget


def shadow_stats(admin_port):
    st, _, data = harness.http_request(admin_port, "GET", "/status", timeout=5)
    assert st == 200, st
    for v in json.loads(data)["shadow"]["variants"]:
        if v["name"] == "shadow":
            return v
    raise AssertionError("no shadow stats")


def main():
    f = harness.Failures()
    live = backend.start_backend("live", mode="echo")
    stuck = backend.start_backend("stuck", mode="echo", delay_ms=120000)
    router = backend.start_router(ROUTER.format(live=live.port, shadow=stuck.port))
    heavy = {f"X-Heavy-{i}": chr(ord("a") + i) * HEADER_VALUE for i in range(HEADERS)}
    per_mirror = HEADERS * HEADER_VALUE
    ok = 0
    for i in range(N):
        s, h, _ = harness.http_request(router.port, "GET", f"/g?i={i}", headers=heavy,
                                       timeout=20)
        ok += s == 200 and h.get("x-turnout-variant") == "live"
    f.check(ok == N, f"every client answered by live ({ok}/{N})")
    v = shadow_stats(router.admin_port)
    dropped = v["dropped"]
    f.check(v["mirrored"] + sum(dropped.values()) == N,
            f"mirrored + dropped == sent ({v['mirrored']} + {dropped} vs {N})")
    f.check(dropped["bytes"] > 0 and dropped["budget"] == 0 and dropped["internal"] == 0,
            f"mirrors past the byte budget are dropped as 'bytes' ({dropped})")
    f.check(v["mirrored"] * per_mirror <= BUDGET,
            f"the headers held stay within {BUDGET} bytes ({v['mirrored']} mirrors x "
            f"{per_mirror} bytes)")
    f.check(v["mirrored"] * (per_mirror + 64 * 1024) > BUDGET,
            f"the budget is used, not refused early ({v['mirrored']} mirrors)")
    f.check(v["errors"]["dropped"] == sum(dropped.values()) and v["agree"] == 0,
            f"drops count as errors; nothing answered ({v['errors']}, agree {v['agree']})")
    f.check(router.stop(signal.SIGTERM) == 0, "router exits 0 on SIGTERM with mirrors held")
    for p in (live, stuck):
        f.check(p.stop(signal.SIGTERM) == 0, f"{p.name} exits 0 on SIGTERM")
    f.finish()


if __name__ == "__main__":
    main()
