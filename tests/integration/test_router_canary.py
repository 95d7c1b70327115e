"""Canary split through the real router and two real backends.

10,000 requests with random user ids at 10%: the candidate's share is within
4 sigma of the binomial mean, every user lands where an independent SHA-256
computation says it must, and the variant header matches the backend that
really answered. The same users again after a restart at 30%: nobody of the
10% leaves the candidate, and the share moves to ~30%.
"""

import concurrent.futures
import hashlib
import http.client
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
  blue:  {{{{ endpoints: [http://127.0.0.1:{blue}] }}}}
  green: {{{{ endpoints: [http://127.0.0.1:{green}] }}}}
strategy: canary
stable: blue
candidate: green
canary:
  percent: {percent}
  sticky: header:X-User-Id
  salt: {salt}
"""

SALT = "rollout-test-7"
N = 10000
THREADS = 8


def expected_bucket(user):
    d = hashlib.sha256(SALT.encode() + b"\0" + user.encode()).digest()
    return int.from_bytes(d[:8], "big") % 10000


def drive(port, users):
    """Send one GET per user over THREADS keep-alive connections; return {user: (variant, backend)}."""
    chunks = [users[i::THREADS] for i in range(THREADS)]

    def run(chunk):
        out = {}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for u in chunk:
                conn.request("GET", "/predict?x=1", headers={"X-User-Id": u})
                r = conn.getresponse()
                r.read()
                out[u] = (r.status, r.getheader("X-Turnout-Variant"), r.getheader("X-Backend"))
        finally:
            conn.close()
        return out

    res = {}
    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        for part in ex.map(run, chunks):
            res.update(part)
    return res


def main():
    f = harness.Failures()
    blue = backend.start_backend("blue")
    green = backend.start_backend("green")
    rng = random.Random()
    users = [f"user-{rng.getrandbits(64):016x}" for _ in range(N)]

    cfg = CONFIG.format(blue=blue.port, green=green.port, percent=10, salt=SALT)
    router = backend.start_router(cfg)
    res = drive(router.port, users)
    f.check(len(res) == N, f"all {N} requests answered ({len(res)})")
    f.check(all(s == 200 for s, _, _ in res.values()), "every answer is 200")
    f.check(all(v == b for _, v, b in res.values()), "X-Turnout-Variant names the backend that answered")
    cand = {u for u, (_, v, _) in res.items() if v == "green"}
    p = 0.10
    sigma = math.sqrt(N * p * (1 - p))
    f.check(abs(len(cand) - N * p) <= 4 * sigma,
            f"candidate share {len(cand)} within 4 sigma of {N * p:.0f} (sigma {sigma:.1f})")
    wrong = [u for u, (_, v, _) in res.items() if (v == "green") != (expected_bucket(u) < 1000)]
    f.check(not wrong, f"assignment matches SHA-256(salt, user) bucket < 1000 ({len(wrong)} differ)")

    # Stickiness: the same users again (a sample, several times) land identically.
    sample = rng.sample(users, 300)
    for _ in range(3):
        again = drive(router.port, sample)
        moved = [u for u in sample if again[u][1] != res[u][1]]
        f.check(not moved, f"same user id, same variant ({len(moved)} moved)")

    # Requests without the sticky key get a random draw: both variants appear.
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
    seen = set()
    for _ in range(400):
        conn.request("GET", "/nokey")
        r = conn.getresponse()
        r.read()
        seen.add(r.getheader("X-Turnout-Variant"))
    conn.close()
    f.check(seen == {"blue", "green"}, f"keyless requests are drawn at random ({seen})")
    f.check(router.stop() == 0, "router exits 0 on SIGTERM")

    # Ramp 10 -> 30 through a restart with the edited file: nobody leaves the candidate.
    cfg30 = CONFIG.format(blue=blue.port, green=green.port, percent=30, salt=SALT)
    router = backend.start_router(cfg30, port=router.port, path=router.config)
    res30 = drive(router.port, users)
    cand30 = {u for u, (_, v, _) in res30.items() if v == "green"}
    left = cand - cand30
    f.check(not left, f"every 10% user stays on the candidate at 30% ({len(left)} left)")
    p = 0.30
    sigma = math.sqrt(N * p * (1 - p))
    f.check(abs(len(cand30) - N * p) <= 4 * sigma,
            f"candidate share at 30%: {len(cand30)} within 4 sigma of {N * p:.0f}")

    status = harness.http_request(router.admin_port, "GET", "/status")
    doc = __import__("json").loads(status[2])
    f.check(doc["canary_percent"] == 30 and doc["candidate"] == "green", "/status shows the ramp")
    by = {v["name"]: v for v in doc["variants"]}
    f.check(by["green"]["requests"]["2xx"] == len(cand30), "/status counts the candidate's 2xx")
    f.check(by["blue"]["requests"]["2xx"] == N - len(cand30), "/status counts stable's 2xx")
    f.check(by["blue"]["latency_us"]["count"] == N - len(cand30), "latency histogram counts")
    f.check(router.stop() == 0, "router exits 0 on SIGTERM after the ramp")
    f.check(blue.stop() == 0 and green.stop() == 0, "backends exit 0")
    f.finish()


if __name__ == "__main__":
    main()
