"""Health checks through the real router (issue 8).

Active: an endpoint whose port is dead is marked unhealthy within
unhealthy_threshold probes and gets no live traffic; a candidate variant with
no healthy endpoint gives its canary share to stable (said in the log and in
/status); when its backend comes back it is healthy again after
healthy_threshold probes and takes its share again.
Retry: a request sent to a dead endpoint (before the checker noticed) is
retried once on another endpoint, so the client sees 200; a request that
reached a backend is never sent twice.
Passive: consecutive 5xx answers eject an endpoint for a back-off period
(503 no_healthy_endpoint meanwhile), then it is let back in.
Operations: promote to an unhealthy candidate is refused unless --force.
"""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

CONFIG = """
listen: 127.0.0.1:{{port}}
workers: 2
admin:
  http: 127.0.0.1:{{admin_port}}
  socket: {sock}
variants:
  blue:  {{{{ endpoints: [http://127.0.0.1:{blue}, http://127.0.0.1:{blue_dead}] }}}}
  green: {{{{ endpoints: [http://127.0.0.1:{green}] }}}}
  red:   {{{{ endpoints: [http://127.0.0.1:{red}] }}}}
  duo:   {{{{ endpoints: [http://127.0.0.1:{blue}, http://127.0.0.1:{red}] }}}}
strategy: canary
stable: blue
candidate: green
canary:
  percent: 50
  sticky: none
health:
  interval: 300ms
  timeout: 250ms
  healthy_threshold: 2
  unhealthy_threshold: 3
"""


def status(router):
    s, _, b = harness.http_request(router.admin_port, "GET", "/status")
    assert s == 200, f"/status answered {s}"
    return json.loads(b)


def endpoint_health(router):
    """{(variant, url): healthy} from /status."""
    out = {}
    for v in status(router)["variants"]:
        for e in v["endpoints"]:
            out[(v["name"], e["url"])] = e["healthy"]
    return out


def backend_requests(b):
    return json.loads(harness.http_request(b.port, "GET", "/_stats")[2])["requests"]


def main():
    f = harness.Failures()
    d = harness.tmpdir()
    sock = os.path.join(d, "admin.sock")
    blue = backend.start_backend("blue")
    green_port = harness.free_port()
    green = backend.start_backend("green", port=green_port)
    red = backend.start_backend("red")
    blue_dead = harness.free_port()  # nobody listens here
    router = backend.start_router(CONFIG.format(blue=blue.port, blue_dead=blue_dead,
                                                green=green_port, red=red.port, sock=sock))
    port = router.port
    dead_url = f"http://127.0.0.1:{blue_dead}"
    green_url = f"http://127.0.0.1:{green_port}"

    # Retry: from the first request on, blue's dead endpoint never shows to a client.
    # (Override to blue: every request goes to blue, half of them first to the dead port.)
    codes = [harness.http_request(port, "GET", "/x", headers={"X-Turnout-Variant": "blue"})[0]
             for _ in range(20)]
    f.check(codes == [200] * 20, f"a connect failure is retried on the other endpoint ({codes})")

    # Active: the dead endpoint is marked unhealthy (3 probes at 300 ms: ~1 s).
    t0 = time.monotonic()
    harness.wait_for(lambda: endpoint_health(router)[("blue", dead_url)] is False, timeout=10,
                     what="blue's dead endpoint marked unhealthy")
    f.check(time.monotonic() - t0 < 5, "marked unhealthy within a few probe intervals")
    f.check(endpoint_health(router)[("blue", f"http://127.0.0.1:{blue.port}")] is True,
            "blue's live endpoint stays healthy")

    # Kill green: the candidate has no healthy endpoint; its 50% goes to blue.
    f.check(green.stop() == 0, "green backend exits 0")
    # Before the checker notices, green's requests fail to connect and are retried on blue.
    codes = [harness.http_request(port, "GET", "/x")[0] for _ in range(20)]
    f.check(codes == [200] * 20, f"green's connect failures retried on stable ({codes})")
    f.check(re.search(rf"\(variant green\): .*; retrying on http://127\.0\.0\.1:{blue.port} "
                      rf"\(variant blue\)", router.output()) is not None,
            "a retry from the candidate to the stable variant logged")
    harness.wait_for(lambda: endpoint_health(router)[("green", green_url)] is False, timeout=10,
                     what="green marked unhealthy")
    st = {v["name"]: v for v in status(router)["variants"]}
    f.check(not any(e["healthy"] for e in st["green"]["endpoints"]),
            "/status: green has no healthy endpoint")
    f.check(st["green"].get("healthy") is False and st["green"].get("live_share_to") == "blue",
            f"/status: green's share goes to blue ({st['green'].get('live_share_to')})")
    f.check(st["blue"].get("healthy") is True and st["blue"].get("live_share_to") is None,
            "/status: blue healthy, keeps its share")
    seen = {}
    for _ in range(40):
        s, h, _ = harness.http_request(port, "GET", "/x")
        seen[(s, h.get("x-turnout-variant"))] = seen.get((s, h.get("x-turnout-variant")), 0) + 1
    f.check(seen == {(200, "blue"): 40}, f"green's share falls back to blue ({seen})")
    harness.wait_for(lambda: "falls back to the stable variant blue" in router.output(),
                     timeout=5, what="fallback logged")

    # promote to the unhealthy candidate: refused, then forced.
    ctl = harness.bin_path("turnoutctl")
    p = subprocess.run([ctl, "-s", sock, "promote"], capture_output=True, text=True, timeout=20)
    f.check(p.returncode == 1 and "no healthy endpoint" in p.stderr and "--force" in p.stderr,
            f"promote to an unhealthy candidate refused ({p.returncode} {p.stderr!r})")
    f.check(status(router)["stable"] == "blue", "stable unchanged after the refused promote")

    # Green comes back on the same port: healthy after 2 good probes, takes traffic again.
    green = backend.start_backend("green", port=green_port)
    harness.wait_for(lambda: endpoint_health(router)[("green", green_url)] is True, timeout=10,
                     what="green healthy again")
    variants = set()
    for _ in range(60):
        s, h, _ = harness.http_request(port, "GET", "/x")
        f.check(s == 200, f"request answered {s}")
        variants.add(h.get("x-turnout-variant"))
        if variants == {"blue", "green"}:
            break
    f.check(variants == {"blue", "green"}, f"green takes its share again ({variants})")
    f.check("variant green has a healthy endpoint again" in router.output(),
            "recovery logged")

    # Never re-send: a request that reached a backend and got reset is not retried by
    # turnout on the variant's other endpoint. (libcurl itself may re-send once on the
    # same endpoint when a reused keep-alive connection dies before any answer byte:
    # see docs/SECURITY.md, "not defended".)
    before = (backend_requests(blue), backend_requests(red))
    s, _, b = harness.http_request(port, "GET", "/reset", headers={"X-Turnout-Variant": "duo"})
    f.check(s == 502, f"reset mid-request -> 502 ({s} {b[:200]!r})")
    delta = (backend_requests(blue) - before[0], backend_requests(red) - before[1])
    f.check(sorted(delta)[0] == 0 and 1 <= sorted(delta)[1] <= 2,
            f"the reset request was not retried on the other endpoint (requests seen {delta})")

    # Passive: red answers 500 three times in a row -> ejected (503), then back.
    for i in range(3):
        s, _, _ = harness.http_request(port, "GET", "/status?code=500",
                                       headers={"X-Turnout-Variant": "red"})
        f.check(s == 500, f"red's 500 #{i + 1} passed through ({s})")
    s, _, b = harness.http_request(port, "GET", "/x", headers={"X-Turnout-Variant": "red"})
    f.check(s == 503 and json.loads(b)["cause"] == "no_healthy_endpoint",
            f"red ejected after 3 x 5xx ({s} {b[:200]!r})")
    harness.wait_for(lambda: "ejected" in router.output(), timeout=5, what="ejection logged")
    t0 = time.monotonic()
    harness.wait_for(lambda: harness.http_request(port, "GET", "/x", headers={
        "X-Turnout-Variant": "red"})[0] == 200, timeout=10, interval=0.05,
        what="red back after its back-off")
    took = time.monotonic() - t0
    f.check(0.5 <= took < 3, f"back-off ends (1 s first ejection): {took:.2f} s")
    f.check("back after its" in router.output(), "end of back-off logged")

    # promote --force works on a healthy candidate too (sanity of the flag).
    p = subprocess.run([ctl, "-s", sock, "promote", "--bogus"], capture_output=True, text=True,
                       timeout=20)
    f.check(p.returncode != 0, "promote with an unknown flag refused")
    p = subprocess.run([ctl, "-s", sock, "promote", "--force"], capture_output=True, text=True,
                       timeout=20)
    f.check(p.returncode == 0 and status(router)["stable"] == "green",
            f"promote --force ({p.returncode} {p.stderr!r})")

    f.check(router.stop() == 0, "router exits 0 on SIGTERM")
    for b in (blue, green, red):
        f.check(b.stop() == 0, "backend exits 0")
    f.finish()


if __name__ == "__main__":
    main()
