"""The dashboard at GET / in a real browser (Debian's headless Chromium), under traffic.

A router (canary 20% + shadow 50% with a compare rule, two real backends) gets
steady traffic from a client thread while Chromium loads the dashboard from
the admin port, lets it poll /status and /status/history for a few seconds,
and dumps the DOM. Every chart (requests/s, error rate, p99, traffic split,
shadow agreement) must have drawn points (data-points > 0), the rollout state
and the variants table must be filled, and the page must reference nothing
outside the router (no http(s) URL but the SVG namespace).

With TURNOUT_DASHBOARD_PNG=path set, it also saves a 1280x900 screenshot there
(that is how docs/dashboard.png is made).
"""

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
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
  blue:  {{{{ endpoints: [http://127.0.0.1:{blue}] }}}}
  green: {{{{ endpoints: [http://127.0.0.1:{green}] }}}}
strategy: canary
stable: blue
candidate: green
canary:
  percent: 20
shadow:
  percent: 50
  compare:
    - {{{{ path: "path", mode: exact }}}}
"""

CHARTS = ("chart-rps", "chart-errors", "chart-p99", "chart-split", "chart-agreement")
TRAFFIC_MAX_S = 90  # the traffic thread's own bound


def traffic(port, stop, counts):
    """GETs at ~100/s until stop is set (or TRAFFIC_MAX_S); every 10th is a 503 from the backend."""
    deadline = time.monotonic() + TRAFFIC_MAX_S
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    i = 0
    while not stop.is_set() and time.monotonic() < deadline:
        path = "/status?code=503" if i % 10 == 0 else f"/predict?i={i}"
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            counts[r.status] = counts.get(r.status, 0) + 1
        except OSError:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i += 1
        stop.wait(0.01)
    conn.close()


def history_ready(admin_port):
    st, _, data = harness.http_request(admin_port, "GET", "/status/history", timeout=5)
    if st != 200:
        return False
    h = json.loads(data)
    vs = {v["name"]: v for v in h["variants"]}
    return (len(h["t"]) >= 3 and "green" in vs and sum(x or 0 for x in vs["blue"]["rps"]) > 0
            and sum(x or 0 for x in vs["green"]["compared"]) > 0)


def chromium(args, timeout=90):
    profile = harness.tmpdir()
    argv = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
            *args]
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def main():
    F = harness.Failures()
    blue = backend.start_backend("blue")
    green = backend.start_backend("green")
    sock = os.path.join(harness.tmpdir(), "admin.sock")
    r = backend.start_router(CONFIG.format(blue=blue.port, green=green.port, sock=sock))
    url = f"http://127.0.0.1:{r.admin_port}/"

    st, hdrs, page = harness.http_request(r.admin_port, "GET", "/")
    F.check(st == 200 and hdrs.get("content-type", "").startswith("text/html"), "GET / is HTML")
    external = [u for u in re.findall(rb"https?://[^\s\"'<>)]+", page)
                if u != b"http://www.w3.org/2000/svg"]
    F.check(not external, f"the page references nothing outside the router: {external}")
    st, _, _ = harness.http_request(r.admin_port, "POST", "/", body=b"x")
    F.check(st == 405, f"POST / is refused ({st})")

    stop, counts = threading.Event(), {}
    t = threading.Thread(target=traffic, args=(r.port, stop, counts), daemon=True)
    t.start()
    try:
        harness.wait_for(lambda: history_ready(r.admin_port), timeout=30, interval=0.2,
                         what="3 history samples with traffic and shadow comparisons")
        ctl = subprocess.run([harness.bin_path("turnoutctl"), "-s", sock, "canary", "25"],
                             capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        F.check(ctl.returncode == 0, f"turnoutctl canary 25 ({ctl.returncode}): {ctl.stderr}")
        res = chromium(["--virtual-time-budget=5000", "--dump-dom", url])
        dom = res.stdout.decode("utf-8", "replace")
        F.check(res.returncode == 0, f"chromium exit code 0 ({res.returncode}): "
                                     f"{res.stderr.decode()[-800:]}")
        for c in CHARTS:
            m = re.search(r'id="%s"[^>]*data-points="(\d+)"' % c, dom)
            n = int(m.group(1)) if m else -1
            F.check(n > 0, f"{c} has data points ({n})")
        m = re.search(r'data-polls="(\d+)"', dom)
        F.check(m is not None and int(m.group(1)) >= 2, f"the page polled at least twice ({m})")
        F.check(re.search(r'id="strategy">canary<', dom) is not None, "rollout state shown")
        F.check(re.search(r'id="candidate">green<', dom) is not None, "candidate shown")
        F.check(re.search(r'id="canary">25%<', dom) is not None, "the operator's canary 25% shown")
        F.check(re.search(r'<ul id="actions"><li>[^<]*canary 25', dom) is not None,
                "the operator action is listed")
        F.check(dom.count("<tr><td>blue</td>") == 1 and dom.count("<tr><td>green</td>") == 1,
                "variants table has blue and green")
        png = os.environ.get("TURNOUT_DASHBOARD_PNG")
        if png:
            res = chromium(["--virtual-time-budget=8000", "--hide-scrollbars",
                            "--window-size=1280,900", f"--screenshot={png}", url])
            F.check(res.returncode == 0 and os.path.getsize(png) > 10000, f"screenshot {png}")
    finally:
        stop.set()
        t.join(timeout=15)
    F.check(counts.get(200, 0) > 0 and counts.get(503, 0) > 0, f"traffic answered: {counts}")
    rc = r.stop()
    F.check(rc == 0, f"turnout exit code 0 on SIGTERM (got {rc})")
    for b in (blue, green):
        b.stop()
    F.finish()


if __name__ == "__main__":
    main()
