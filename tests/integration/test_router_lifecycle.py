"""The router process: `turnout -t` on good and bad files, --help/--version,
SIGTERM draining an in-flight slow request (answered, then exit 0), the drain
deadline (a request past it gets 503, exit 0 still), and SIGHUP reload (a good
edit is applied with a new generation; a bad one is refused and the running
routing stays).
"""

import json
import os
import signal
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
variants:
  blue:  {{{{ endpoints: [http://127.0.0.1:{blue}] }}}}
  green: {{{{ endpoints: [http://127.0.0.1:{blue}] }}}}
strategy: canary
stable: blue
candidate: green
canary:
  percent: {percent}
limits:
  upstream_timeout: 10s
  drain_timeout: {drain}
"""


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def status(r):
    return json.loads(harness.http_request(r.admin_port, "GET", "/status")[2])


def main():
    f = harness.Failures()
    turnout = harness.bin_path("turnout")

    rc, out = run([turnout, "--version"])
    f.check(rc == 0 and out.startswith("turnout "), f"--version ({rc} {out!r})")
    rc, out = run([turnout, "--help"])
    f.check(rc == 0 and "-t" in out and "-c" in out, "--help")
    rc, out = run([turnout])
    f.check(rc == 2, "no -c: usage error")

    good = backend.write_config(CONFIG.format(blue=9, percent=5, drain="5s")
                                .format(port=8080, admin_port=9090))
    rc, out = run([turnout, "-t", "-c", good])
    f.check(rc == 0, f"turnout -t on a good file exits 0 ({rc} {out!r})")
    bad_text = ("listen: 127.0.0.1:8080\nvariants:\n  blue: { endpoints: [http://127.0.0.1:1] }\n"
                "strategy: canary\nstable: blue\ncandidate: purple\ncanary:\n  percent: 140\n")
    bad = backend.write_config(bad_text)
    rc, out = run([turnout, "-t", "-c", bad])
    f.check(rc == 1, f"turnout -t on a bad file exits 1 ({rc})")
    lines = [l for l in out.splitlines() if l.startswith(bad + ":")]
    f.check(len(lines) >= 2, f"every error printed as FILE:LINE:COL ({out!r})")
    f.check(any(":6:" in l and "purple" in l for l in lines), "undefined candidate named with its line")
    f.check(any(":8:" in l and "140" in l for l in lines), "percent 140 named with its line")
    rc, out = run([turnout, "-c", bad])
    f.check(rc == 1, "turnout -c on a bad file exits 1")

    blue = backend.start_backend("blue")

    # SIGTERM while a slow request is in flight: it is answered, then exit 0.
    r = backend.start_router(CONFIG.format(blue=blue.port, percent=5, drain="5s"))
    result = {}

    def slow():
        result["r"] = harness.http_request(r.port, "GET", "/slow?ms=1500", timeout=20)

    t = threading.Thread(target=slow)
    t.start()
    harness.wait_for(lambda: json.loads(harness.http_request(blue.port, "GET", "/_stats")[2])["inflight"] == 1,
                     timeout=5, what="slow request in flight")
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    harness.wait_for(lambda: not harness.port_open(r.port), timeout=3, what="listener closed")
    rc = r.stop(timeout=15)
    t.join(20)
    s = result.get("r", (None,))[0]
    f.check(s == 200, f"in-flight slow request answered during drain ({s})")
    f.check(rc == 0, f"router exits 0 after draining ({rc})")
    f.check(time.monotonic() - t0 < 5, "drain ended when the request was done")

    # Drain deadline: a request longer than drain_timeout gets 503 and exit is still 0.
    r = backend.start_router(CONFIG.format(blue=blue.port, percent=5, drain="300ms"))
    result.clear()
    t = threading.Thread(target=lambda: result.update(
        r=harness.http_request(r.port, "GET", "/slow?ms=4000", timeout=20)))
    t.start()
    harness.wait_for(lambda: json.loads(harness.http_request(blue.port, "GET", "/_stats")[2])["inflight"] >= 1,
                     timeout=5, what="slow request in flight")
    t0 = time.monotonic()
    rc = r.stop(timeout=15)
    t.join(20)
    s = result.get("r", (None,))[0]
    f.check(s == 503 and b"shutting down" in result["r"][2], f"request past the drain deadline -> 503 ({s})")
    f.check(rc == 0 and time.monotonic() - t0 < 3, f"exit 0 soon after the deadline ({rc})")

    # SIGHUP: a good edit applies (generation + 1); a bad one is refused, routing stays.
    r = backend.start_router(CONFIG.format(blue=blue.port, percent=5, drain="5s"))
    f.check(status(r)["generation"] == 1 and status(r)["canary_percent"] == 5, "generation 1 at start")
    with open(r.config) as fh:
        text = fh.read()
    with open(r.config, "w") as fh:
        fh.write(text.replace("percent: 5", "percent: 25"))
    r.signal(signal.SIGHUP)
    harness.wait_for(lambda: status(r)["generation"] == 2, timeout=5, what="reload applied")
    f.check(status(r)["canary_percent"] == 25, "reloaded percent 25")
    with open(r.config, "w") as fh:
        fh.write(text.replace("percent: 5", "percent: 250"))
    r.signal(signal.SIGHUP)
    harness.wait_for(lambda: "refused" in r.output(), timeout=5, what="bad reload refused")
    st = status(r)
    f.check(st["generation"] == 2 and st["canary_percent"] == 25, "bad reload keeps the running routing")
    f.check(harness.http_request(r.port, "GET", "/x")[0] == 200, "still serving after a bad reload")
    f.check(r.stop() == 0, "router exits 0")
    f.check(blue.stop() == 0, "backend exits 0")
    f.finish()


if __name__ == "__main__":
    main()
