"""Mirrors handed to the worker's shadow thread: accounting, the byte fast path, shutdown.

1. Concurrency: 8 client threads send JSON bodies and bodies that are not
   JSON to a router whose live and shadow backends both echo the body, so
   every pair is byte-identical. With a rule on "x" the JSON pairs must agree
   (compared by bytes, without a parse) and the others must be errors
   (invalid: the rule needs JSON, identical bytes do not make it JSON), exactly
   as many of each as were sent, per rule too; nothing dropped, nothing
   disagreeing, nothing logged. The status page's counts are read while the
   shadow thread still works, so they must never exceed what was sent.
2. The budget: with shadow.max_inflight 2 and a shadow that takes 1 s,
   six quick requests: two mirrors go out, two wait on the shadow thread for
   a slot (they are sent when the first two are answered, never more than two
   at once at the shadow backend), the last two are dropped for the budget.
3. Shutdown with mirrors in flight and queued: a shadow that holds every
   answer for 3 s, a burst of 40 concurrent requests, then SIGTERM as soon as
   the last client got its answer. The router exits 0 (the ASan build checks
   that the shadow thread freed everything) well before the shadow would have
   answered: the drain waits for live requests, never for mirrors.
"""

import concurrent.futures
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
workers: {workers}
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
  max_inflight: {inflight}
  timeout: 20s
  log: {log}
  compare:
    - {{{{ path: x, mode: exact }}}}
"""

JSON_N = 240
TEXT_N = 60
THREADS = 8


def shadow_stats(admin_port):
    st, _, data = harness.http_request(admin_port, "GET", "/status", timeout=5)
    assert st == 200, st
    for v in json.loads(data)["shadow"]["variants"]:
        if v["name"] == "shadow":
            return v
    raise AssertionError("no shadow stats")


def body_of(i):
    if i < JSON_N:
        return json.dumps({"x": i, "pad": "p" * (i % 97), "list": [i, i * 0.5, None]}).encode()
    return b"not json %d " % i + b"\x00\xff" * (i % 7)


def send(port, i):
    b = body_of(i)
    s, h, got = harness.http_request(port, "POST", f"/echo?i={i}", body=b,
                                     headers={"Content-Type": "application/octet-stream"},
                                     timeout=20)
    return i, s, h.get("x-turnout-variant"), got == b


def accounting(f, tmp):
    live = backend.start_backend("live", mode="echo")
    shadow = backend.start_backend("shadow", mode="echo")
    log = os.path.join(tmp, "disagree.jsonl")
    router = backend.start_router(ROUTER.format(workers=2, live=live.port, shadow=shadow.port,
                                                log=log, inflight=4096))
    total = JSON_N + TEXT_N
    seen_max = 0
    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        futs = [ex.submit(send, router.port, i) for i in range(total)]
        for n, fu in enumerate(concurrent.futures.as_completed(futs)):
            i, s, var, same = fu.result()
            if not (s == 200 and var == "live" and same):
                f.check(False, f"request {i}: 200 from live with its body echoed ({s} {var})")
            if n % 50 == 0:  # read while mirrors are still being compared
                v = shadow_stats(router.admin_port)
                seen_max = max(seen_max, v["agree"] + v["disagree"] + v["error"])
    f.check(seen_max <= total, f"counts never exceed what was sent ({seen_max} <= {total})")

    def settled():
        v = shadow_stats(router.admin_port)
        return v if v["agree"] + v["disagree"] + v["error"] >= total else None

    v = harness.wait_for(settled, timeout=30, what="every pair compared")
    f.check(v["mirrored"] == total and sum(v["dropped"].values()) == 0,
            f"every request mirrored, none dropped ({v['mirrored']} {v['dropped']})")
    f.check(v["agree"] == JSON_N and v["error"] == TEXT_N and v["disagree"] == 0,
            f"identical JSON agrees, identical non-JSON is an error ({v['agree']} agree, "
            f"{v['error']} error, {v['disagree']} disagree)")
    f.check(v["errors"]["invalid"] == TEXT_N and v["errors"]["dropped"] == 0,
            f"the errors are 'invalid' ({v['errors']})")
    r = v["rules"][0]
    f.check(r["path"] == "x" and r["agree"] == JSON_N and r["error"] == TEXT_N,
            f"per rule: {JSON_N} agree, {TEXT_N} error ({r})")
    f.check(v["latency_us"]["count"] == total, f"shadow latency counted per pair "
                                               f"({v['latency_us']['count']})")
    f.check(router.stop(signal.SIGTERM) == 0, "accounting: router exits 0 on SIGTERM")
    lines = open(log).read().splitlines() if os.path.exists(log) else []
    f.check(lines == [], f"no disagreement logged ({len(lines)} lines)")
    st, _, data = harness.http_request(shadow.port, "GET", "/_stats")
    f.check(json.loads(data)["requests"] == total, "the shadow backend got every mirror")
    for p in (live, shadow):
        f.check(p.stop(signal.SIGTERM) == 0, f"{p.name} exits 0 on SIGTERM")


def budget(f, tmp):
    live = backend.start_backend("live", mode="echo")
    slow = backend.start_backend("slow", mode="echo", delay_ms=1000)
    router = backend.start_router(ROUTER.format(workers=1, live=live.port, shadow=slow.port,
                                                log=os.path.join(tmp, "slow.jsonl"), inflight=2))
    for i in range(6):
        s, h, _ = harness.http_request(router.port, "POST", f"/b?i={i}", body=body_of(i))
        f.check(s == 200 and h.get("x-turnout-variant") == "live", f"budget: request {i} ({s})")
    v = shadow_stats(router.admin_port)
    f.check(v["mirrored"] == 4 and v["dropped"]["budget"] == 2,
            f"budget: 2 in flight + 2 waiting mirrored, 2 dropped ({v['mirrored']} "
            f"{v['dropped']})")
    most = 0

    def settled():
        nonlocal most
        _, _, data = harness.http_request(slow.port, "GET", "/_stats")
        most = max(most, json.loads(data)["inflight"])
        v = shadow_stats(router.admin_port)
        return v if v["agree"] + v["disagree"] + v["error"] >= 6 else None

    v = harness.wait_for(settled, timeout=20, interval=0.01, what="budget: every pair counted")
    f.check(v["agree"] == 4 and v["errors"]["dropped"] == 2,
            f"budget: the waiting mirrors were sent and agree ({v['agree']} {v['errors']})")
    _, _, data = harness.http_request(slow.port, "GET", "/_stats")
    f.check(json.loads(data)["requests"] == 4, "budget: the shadow backend got 4 mirrors")
    f.check(1 <= most <= 2, f"budget: never more than max_inflight at the shadow at once ({most})")
    f.check(router.stop(signal.SIGTERM) == 0, "budget: router exits 0 on SIGTERM")
    for p in (live, slow):
        f.check(p.stop(signal.SIGTERM) == 0, f"{p.name} exits 0 on SIGTERM")


def shutdown(f, tmp):
    live = backend.start_backend("live", mode="echo")
    stuck = backend.start_backend("stuck", mode="echo", delay_ms=3000)
    router = backend.start_router(ROUTER.format(workers=1, live=live.port, shadow=stuck.port,
                                                log=os.path.join(tmp, "stuck.jsonl"),
                                                inflight=4096))
    n = 40
    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        res = list(ex.map(lambda i: send(router.port, i), range(n)))
    f.check(all(s == 200 and var == "live" for _, s, var, _ in res),
            "burst: every client answered by live")
    v = shadow_stats(router.admin_port)
    f.check(v["mirrored"] == n and v["agree"] + v["disagree"] + v["error"] == 0,
            f"burst: {n} mirrors handed over, none answered yet ({v['mirrored']})")
    t0 = time.monotonic()
    rc = router.stop(signal.SIGTERM)
    took = time.monotonic() - t0
    f.check(rc == 0, f"router exits 0 with {n} mirrors held by the shadow (rc {rc})")
    f.check(took < 2.5, f"the drain does not wait for mirrors ({took:.2f} s, shadow holds 3 s)")
    for p in (live, stuck):
        f.check(p.stop(signal.SIGTERM) == 0, f"{p.name} exits 0 on SIGTERM")


def main():
    f = harness.Failures()
    tmp = harness.tmpdir()
    accounting(f, tmp)
    budget(f, tmp)
    shutdown(f, tmp)
    f.finish()


if __name__ == "__main__":
    main()
