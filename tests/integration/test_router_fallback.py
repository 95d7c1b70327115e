"""No healthy endpoint: the router's fallback and 503 paths, with real health
checks against real (dead, then revived) backends.

Canary at 50% with green's only endpoint on a port nobody listens on: once the
health checker marks it down, every live request goes to blue (green's share
falls back to stable), a request pinned to green is a 503 naming green and the
cause, and when a backend comes up on green's port green gets its share back.
With stable down as well, requests are 503 naming stable.
"""

import http.client
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

CONFIG = """
listen: 127.0.0.1:{{port}}
workers: 2
admin:
  http: 127.0.0.1:{{admin_port}}
variants:
  blue:  {{{{ endpoints: [http://127.0.0.1:{blue}] }}}}
  green: {{{{ endpoints: [http://127.0.0.1:{green}] }}}}
strategy: canary
stable: blue
candidate: green
canary:
  percent: 50
health:
  path: /health
  interval: 250ms
  timeout: 250ms
  healthy_threshold: 1
  unhealthy_threshold: 2   # one slow probe on a loaded machine is not "down"
"""


def healthy(r, name):
    st = json.loads(harness.http_request(r.admin_port, "GET", "/status")[2])
    v = {v["name"]: v for v in st["variants"]}[name]
    return all(e["healthy"] for e in v["endpoints"])


def variants(port, n, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for _ in range(n):
            conn.request("GET", "/x", headers=headers or {})
            r = conn.getresponse()
            body = r.read()
            out.append((r.status, r.getheader("X-Turnout-Variant"), body))
    finally:
        conn.close()
    return out


def main():
    f = harness.Failures()
    blue = backend.start_backend("blue")
    green_port = harness.free_port()  # nobody listens here yet
    r = backend.start_router(CONFIG.format(blue=blue.port, green=green_port))

    harness.wait_for(lambda: not healthy(r, "green"), timeout=10, what="green marked down")
    got = variants(r.port, 200)
    f.check(all(s == 200 and v == "blue" for s, v, _ in got),
            "green down: its 50% share falls back to blue (200 of 200)")
    s, v, b = variants(r.port, 1, {"X-Turnout-Variant": "green"})[0]
    doc = json.loads(b)
    f.check(s == 503 and doc["variant"] == "green" and doc["cause"] == "no_healthy_endpoint",
            f"pinned to a variant with no healthy endpoint -> 503 naming it ({s} {b!r})")

    green = backend.start_backend("green", port=green_port)
    harness.wait_for(lambda: healthy(r, "green"), timeout=10, what="green back up")
    got = variants(r.port, 400)
    n_green = sum(1 for _, v, _ in got if v == "green")
    f.check(all(s == 200 for s, _, _ in got) and 100 < n_green < 300,
            f"green back: it takes its share again ({n_green} of 400)")

    f.check(blue.stop() == 0, "blue exits 0")
    harness.wait_for(lambda: not healthy(r, "blue"), timeout=10, what="blue marked down")
    s, v, b = variants(r.port, 1, {"X-Turnout-Variant": "blue"})[0]
    f.check(s == 503 and json.loads(b)["variant"] == "blue", f"stable down, pinned: 503 ({s})")
    got = variants(r.port, 50)
    f.check(all(s in (200, 503) for s, _, _ in got), "stable down: answers are 200 (green) or 503")
    f.check(all(v == "green" for s, v, _ in got if s == 200), "stable down: only green answers 200")
    f.check(any(s == 503 and json.loads(b)["variant"] == "blue" for s, _, b in got),
            "stable down: blue's share is a 503 naming blue")
    f.check(r.stop() == 0, "router exits 0")
    f.check(green.stop() == 0, "green exits 0")
    f.finish()


if __name__ == "__main__":
    main()
