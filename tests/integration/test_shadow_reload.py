"""Shadow settings follow a live reload (SIGHUP), without a restart.

Two backends that always disagree (their fixed answers name themselves). With
shadow.log A, log_body_max 8 and the whole-body comparison, one request makes
one line in A with the body cut to 8 bytes. After a reload to log B, redact
true and a compare rule on `method` (on which the two agree), the next request
agrees (the new rule is used) and the one after that, sent with a rule on
`backend`, disagrees and lands in B without a body; A keeps its one line.
After a logrotate-style rename and SIGUSR1, the next line goes to a new B.
"""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

BASE = """
listen: 127.0.0.1:{{port}}
workers: 1
admin:
  http: 127.0.0.1:{{admin_port}}
variants:
  blue:  {{{{ endpoints: [http://127.0.0.1:{blue}] }}}}
  green: {{{{ endpoints: [http://127.0.0.1:{green}] }}}}
strategy: shadow
stable: blue
candidate: green
shadow:
  percent: 100
  log: {log}
  log_body_max: 8
  redact: {redact}
{compare}
"""


def status(admin_port):
    st, _, data = harness.http_request(admin_port, "GET", "/status", timeout=5)
    assert st == 200, st
    return json.loads(data)


def green(admin_port):
    for v in status(admin_port)["shadow"]["variants"]:
        if v["name"] == "green":
            return v
    raise AssertionError("no shadow stats for green")


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(x) for x in f]


def send_and_settle(f, router, total, body=b"0123456789abcdef"):
    st, h, _ = harness.http_request(router.port, "POST", "/predict", body=body)
    f.check(st == 200 and h.get("x-turnout-variant") == "blue", f"answered by blue ({st})")
    return harness.wait_for(lambda: (lambda v: v if v["agree"] + v["disagree"] + v["error"]
                                     >= total else None)(green(router.admin_port)),
                            timeout=10, what=f"{total} pairs compared")


def main():
    f = harness.Failures()
    blue = backend.start_backend("blue")
    gr = backend.start_backend("green")
    d = harness.tmpdir()
    log_a, log_b = os.path.join(d, "a.jsonl"), os.path.join(d, "b.jsonl")
    router = backend.start_router(BASE.format(blue=blue.port, green=gr.port, log=log_a,
                                              redact="false", compare=""))
    v = send_and_settle(f, router, 1)
    f.check(v["disagree"] == 1, "whole bodies differ (each backend names itself)")
    harness.wait_for(lambda: len(lines(log_a)) == 1, timeout=10, what="a line in log A")
    la = lines(log_a)[0]
    f.check(la["path"] == "backend" and la["live_value"] == "blue"
            and la["shadow_value"] == "green", f"first difference found at backend: {la}")
    f.check(la.get("request_body") == "01234567" and la.get("request_body_bytes") == 16,
            f"body cut to log_body_max 8: {la}")

    gen = status(router.admin_port)["generation"]
    rules = "  compare:\n    - {{ path: method, mode: exact }}\n"
    with open(router.config, "w") as fh:
        fh.write(BASE.format(blue=blue.port, green=gr.port, log=log_b, redact="true",
                             compare=rules).format(port=router.port,
                                                   admin_port=router.admin_port))
    router.signal(signal.SIGHUP)
    harness.wait_for(lambda: status(router.admin_port)["generation"] > gen, timeout=10,
                     what="reload applied")
    v = send_and_settle(f, router, 2)
    f.check(v["agree"] == 1 and v["disagree"] == 1, f"the new rule (method) agrees: {v}")
    f.check(len(v["rules"]) == 1 and v["rules"][0]["agree"] == 1, "per-rule count of the new rule")

    gen = status(router.admin_port)["generation"]
    rules = "  compare:\n    - {{ path: backend, mode: exact }}\n"
    with open(router.config, "w") as fh:
        fh.write(BASE.format(blue=blue.port, green=gr.port, log=log_b, redact="true",
                             compare=rules).format(port=router.port,
                                                   admin_port=router.admin_port))
    router.signal(signal.SIGHUP)
    harness.wait_for(lambda: status(router.admin_port)["generation"] > gen, timeout=10,
                     what="second reload applied")
    v = send_and_settle(f, router, 3)
    f.check(v["disagree"] == 2, "the backend rule disagrees")
    harness.wait_for(lambda: len(lines(log_b)) == 1, timeout=10, what="a line in log B")
    lb = lines(log_b)[0]
    f.check(lb["rule"] == 0 and lb["path"] == "backend" and "request_body" not in lb,
            f"log B: rule 0, redacted: {lb}")
    f.check(len(lines(log_a)) == 1, "log A untouched after the reload")

    # logrotate: move the file away, SIGUSR1, and the next line goes to a new file
    os.rename(log_b, log_b + ".1")
    router.signal(signal.SIGUSR1)
    harness.wait_for(lambda: os.path.exists(log_b), timeout=10, what="log B reopened")
    v = send_and_settle(f, router, 4)
    harness.wait_for(lambda: len(lines(log_b)) == 1, timeout=10, what="a line in the new log B")
    f.check(len(lines(log_b + ".1")) == 1, "the rotated file keeps its line")
    f.check(router.stop() == 0, "router exits 0 on SIGTERM")
    f.check(blue.stop() == 0 and gr.stop() == 0, "backends exit 0")
    f.finish()


if __name__ == "__main__":
    main()
