"""Shadow mode with the real predictors: digits-v1 live, digits-v2 shadow at 100%.

Every client answer must come from v1 (variant header and the label v1 gives
when asked directly). The router's agreement counters, overall and per rule,
must equal what this test computes itself by sending each request to both
predictors directly and applying the same rules in Python: exactly. The
disagreement log must hold one line per disagreement, naming the request, the
first differing rule and both values at its path (both labels, for the label
rule). The in-flight budget is set above the request count so that no mirror
is dropped even when v2 (a CNN, slower) falls behind under sanitizers: drops
are tested in test_shadow_resilience.py. The request bodies are the held-out digits plus seeded noise images,
on which the two models disagree often enough to be tested.
"""

import concurrent.futures
import http.client
import json
import os
import random
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

INFER = "/v2/models/digits/infer"
NOISE = 140
THREADS = 4
NUM_TOL = 0.25

CONFIG = """
listen: 127.0.0.1:{{port}}
workers: 2
admin:
  http: 127.0.0.1:{{admin_port}}
variants:
  v1: {{{{ endpoints: [http://127.0.0.1:{v1}] }}}}
  v2: {{{{ endpoints: [http://127.0.0.1:{v2}] }}}}
strategy: shadow
stable: v1
candidate: v2
shadow:
  percent: 100
  max_inflight: 1024
  timeout: 30s
  compare:
    - {{{{ path: "outputs[name=label].data", mode: exact }}}}
    - {{{{ path: "outputs[name=probabilities].data", mode: argmax }}}}
    - {{{{ path: "outputs[name=probabilities].data", mode: numeric, tolerance: {tol} }}}}
  log: {log}
  log_body_max: 64
"""


def body_of(pixels):
    return json.dumps({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                                   "data": pixels}]}).encode()


def output(doc, name):
    for o in doc["outputs"]:
        if o["name"] == name:
            return o["data"]
    raise AssertionError(f"no output {name} in {doc}")


def argmax(v):
    best = 0
    for i, x in enumerate(v):
        if x > v[best]:  # first maximum wins, as the router's argmax
            best = i
    return best


def rule_results(a, b):
    """Per rule: True when it agrees (the same three rules as CONFIG)."""
    pa, pb = output(a, "probabilities"), output(b, "probabilities")
    numeric = len(pa) == len(pb) and all(abs(x - y) <= NUM_TOL for x, y in zip(pa, pb))
    return [output(a, "label") == output(b, "label"), argmax(pa) == argmax(pb), numeric]


def post_all(port, bodies, ids=None, check=None):
    """POST every body over THREADS keep-alive connections; return [(status, headers, doc)]."""
    out = [None] * len(bodies)

    def run(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for i in range(k, len(bodies), THREADS):
                h = {"Content-Type": "application/json"}
                if ids:
                    h["X-Request-Id"] = ids[i]
                conn.request("POST", INFER, body=bodies[i], headers=h)
                r = conn.getresponse()
                data = r.read()
                out[i] = (r.status, {k.lower(): v for k, v in r.getheaders()},
                          json.loads(data) if r.status == 200 else data)
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        list(ex.map(run, range(THREADS)))
    return out


def shadow_stats(admin_port, name):
    st, _, data = harness.http_request(admin_port, "GET", "/status", timeout=5)
    assert st == 200, st
    doc = json.loads(data)
    for v in doc["shadow"]["variants"]:
        if v["name"] == name:
            return v, doc["shadow"]
    raise AssertionError(f"no shadow stats for {name}: {doc['shadow']}")


def main():
    f = harness.Failures()
    pixels, _ = harness.load_heldout()
    rng = random.Random(20261123)
    inputs = list(pixels) + [[rng.randint(0, 16) for _ in range(64)] for _ in range(NOISE)]
    bodies = [body_of(p) for p in inputs]
    ids = [f"shadow-{i:04d}" for i in range(len(bodies))]
    n = len(bodies)

    p1 = harness.start_predictor("digits-v1.onnx", name="digits")
    p2 = harness.start_predictor("digits-v2.onnx", name="digits")

    # The test's own computation: each request to both predictors directly.
    direct1 = post_all(p1.port, bodies)
    direct2 = post_all(p2.port, bodies)
    assert all(d[0] == 200 for d in direct1 + direct2), "direct predictor call failed"
    rules = [rule_results(a[2], b[2]) for a, b in zip(direct1, direct2)]
    want_rule = [[sum(1 for r in rules if r[k]), sum(1 for r in rules if not r[k])]
                 for k in range(3)]
    want_agree = sum(1 for r in rules if all(r))
    want_dis = {ids[i]: (r.index(False), i) for i, r in enumerate(rules) if not all(r)}
    label_dis = sum(1 for r in rules if not r[0])
    print(f"{n} requests: expected agree {want_agree}, disagree {len(want_dis)} "
          f"(labels differ on {label_dis}); per rule {want_rule}")
    f.check(label_dis >= 5, f"the inputs make the models disagree on labels ({label_dis})")

    logdir = harness.tmpdir()
    logpath = os.path.join(logdir, "disagreements.jsonl")
    router = backend.start_router(CONFIG.format(v1=p1.port, v2=p2.port, tol=NUM_TOL,
                                                log=logpath))
    answers = post_all(router.port, bodies, ids)
    bad = [i for i, a in enumerate(answers)
           if a[0] != 200 or a[1].get("x-turnout-variant") != "v1"
           or output(a[2], "label") != output(direct1[i][2], "label")]
    f.check(not bad, f"every client answer is v1's ({len(bad)} are not, e.g. "
                     f"{answers[bad[0]][:2] if bad else ''})")

    def settled():
        v, _ = shadow_stats(router.admin_port, "v2")
        return v if v["agree"] + v["disagree"] + v["error"] >= n else None

    v = harness.wait_for(settled, timeout=30, what="every mirror compared")
    print("router:", json.dumps({k: v[k] for k in ("mirrored", "agree", "disagree", "error",
                                                 "agreement_rate", "dropped", "errors")}))
    f.check(v["mirrored"] == n, f"mirrored {v['mirrored']} == {n}")
    f.check(v["agree"] == want_agree, f"agree {v['agree']} == {want_agree} (independent)")
    f.check(v["disagree"] == len(want_dis), f"disagree {v['disagree']} == {len(want_dis)}")
    f.check(v["error"] == 0, f"no errors ({v['error']}: {v['errors']})")
    for k in range(3):
        got = [v["rules"][k]["agree"], v["rules"][k]["disagree"]]
        f.check(got == want_rule[k], f"rule {k} ({v['rules'][k]['path']}): {got} == "
                                     f"{want_rule[k]}")
    if want_agree + len(want_dis):
        rate = want_agree / (want_agree + len(want_dis))
        f.check(abs(v["agreement_rate"] - rate) < 1e-9, f"agreement rate {v['agreement_rate']}")
    f.check(v["latency_us"]["count"] == n, "shadow latency recorded per pair")
    f.check(v["latency_diff_us"]["count"] == n, "latency difference recorded per pair")

    harness.wait_for(lambda: shadow_stats(router.admin_port, "v2")[1]["log"]["written"]
                     >= len(want_dis), timeout=10, what="disagreement log written")
    f.check(router.stop(signal.SIGTERM) == 0, "router exits 0 on SIGTERM")

    with open(logpath) as fh:
        lines = [json.loads(line) for line in fh]
    f.check(len(lines) == len(want_dis), f"log lines {len(lines)} == {len(want_dis)}")
    seen = set()
    for line in lines:
        rid = line.get("request_id")
        if rid not in want_dis or rid in seen:
            f.check(False, f"log line for an unexpected or repeated request: {line}")
            continue
        seen.add(rid)
        rule, i = want_dis[rid]
        a, b = direct1[i][2], direct2[i][2]
        name = "label" if rule == 0 else "probabilities"
        ok = (line["live"] == "v1" and line["shadow"] == "v2" and line["rule"] == rule
              and line["path"] == f"outputs[name={name}].data"
              and line["live_value"] == output(a, name)
              and line["shadow_value"] == output(b, name)
              and line["live_status"] == 200 and line["shadow_status"] == 200
              and line["request_body"] == bodies[i][:64].decode()
              and line["request_body_truncated"] is True)
        f.check(ok, f"log line for {rid} names rule {rule} and both values: {line}")
    f.check(p1.stop() == 0 and p2.stop() == 0, "predictors exit 0")
    f.finish()


if __name__ == "__main__":
    main()
