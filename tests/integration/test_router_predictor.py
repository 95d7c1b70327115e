"""The router in front of the real predictor: digits-v1 (blue, stable) and
digits-v2 (green, candidate) at 30%, sticky on X-User-Id.

Every held-out sample is classified through the router by a random user; each
answer comes from the variant the router names (model_version), its labels
equal that model's golden outputs, the candidate's share is within 4 sigma,
and the override header pins a request to v2. SIGTERM: everything exits 0.
"""

import concurrent.futures
import http.client
import json
import math
import os
import random
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
  blue:  {{{{ endpoints: [http://127.0.0.1:{v1}] }}}}
  green: {{{{ endpoints: [http://127.0.0.1:{v2}] }}}}
strategy: canary
stable: blue
candidate: green
canary:
  percent: 30
  sticky: header:X-User-Id
  salt: predictor-test
"""
ROUNDS = 6  # each round classifies the 360 held-out samples once
THREADS = 4


def golden(version):
    with open(os.path.join(harness.MODELS_DIR, f"digits-v{version}.golden.json")) as f:
        return json.load(f)["labels"]


def main():
    f = harness.Failures()
    pixels, _ = harness.load_heldout()
    gold = {"1": golden(1), "2": golden(2)}
    v1 = harness.start_predictor("digits-v1.onnx", version="1")
    v2 = harness.start_predictor("digits-v2.onnx", version="2")
    r = backend.start_router(CONFIG.format(v1=v1.port, v2=v2.port))
    rng = random.Random()
    jobs = [(i % len(pixels), f"u{rng.getrandbits(48):x}") for i in range(ROUNDS * len(pixels))]

    def run(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=20)
        out = []
        try:
            for i, user in chunk:
                body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                                    "data": pixels[i]}]}
                conn.request("POST", "/v2/models/digits/infer", body=json.dumps(body),
                             headers={"X-User-Id": user, "Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                out.append((i, resp.status, resp.getheader("X-Turnout-Variant"), data))
        finally:
            conn.close()
        return out

    results = []
    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        for part in ex.map(run, [jobs[k::THREADS] for k in range(THREADS)]):
            results += part
    n = len(results)
    f.check(n == len(jobs) and all(s == 200 for _, s, _, _ in results), f"{n} inferences answered 200")
    want = {"blue": "1", "green": "2"}
    wrong_model = wrong_label = 0
    for i, s, variant, data in results:
        doc = json.loads(data)
        ver = doc.get("model_version")
        if ver != want.get(variant):
            wrong_model += 1
            continue
        label = {o["name"]: o for o in doc["outputs"]}["label"]["data"][0]
        wrong_label += label != gold[ver][i]
    f.check(wrong_model == 0, f"model_version matches X-Turnout-Variant ({wrong_model} differ)")
    f.check(wrong_label == 0, f"labels equal the serving model's golden outputs ({wrong_label} differ)")
    cand = sum(1 for _, _, v, _ in results if v == "green")
    sigma = math.sqrt(n * 0.3 * 0.7)
    f.check(abs(cand - n * 0.3) <= 4 * sigma, f"candidate share {cand}/{n} within 4 sigma of 30%")

    body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": pixels[0]}]}
    s, h, b = harness.http_request(r.port, "POST", "/v2/models/digits/infer", body=body,
                                   headers={"X-Turnout-Variant": "green"})
    f.check(s == 200 and json.loads(b)["model_version"] == "2" and h.get("x-turnout-variant") == "green",
            "override header pins the request to digits-v2")
    s, h, b = harness.http_request(r.port, "POST", "/v2/models/digits/infer", body=b'{"inputs": [')
    f.check(s == 400 and h.get("x-turnout-variant") in ("blue", "green"),
            f"predictor's 400 passes through the router ({s})")
    f.check(r.stop() == 0, "router exits 0")
    f.check(v1.stop() == 0 and v2.stop() == 0, "predictors exit 0")
    f.finish()


if __name__ == "__main__":
    main()
