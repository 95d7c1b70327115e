"""Shadow sampling: shadow.percent of live requests, sticky on the canary key.

A canary at 20% and a shadow at 30%, both sticky on X-User-Id. For every
request the test computes independently (SHA-256, as documented in
router/shadow.h and route.h) whether the user is in the canary (then the
candidate serves live and nothing is mirrored) and whether the user is in
the shadow sample (salt + "/shadow"): the router's mirror count must equal
that computation exactly, each user twice (sticky). Requests without the key
are sampled at random: their count is only bounded. With the longest salt
(256 bytes) the shadow hash is still salt + "/shadow", checked user by user.
"""

import hashlib
import http.client
import json
import os
import random
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

SALT = "shadow-sampling-1"
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
  percent: 20
  sticky: header:X-User-Id
  salt: {salt}
shadow:
  percent: 30
  max_inflight: 4096
"""
USERS = 600
NOKEY = 400


def bucket(salt, key):
    d = hashlib.sha256(salt.encode() + b"\0" + key.encode()).digest()
    return int.from_bytes(d[:8], "big") % 10000


def shadow_stats(admin_port):
    st, _, data = harness.http_request(admin_port, "GET", "/status", timeout=5)
    assert st == 200, st
    for v in json.loads(data)["shadow"]["variants"]:
        if v["name"] == "green":
            return v
    raise AssertionError("no shadow stats for green")


def main():
    f = harness.Failures()
    blue = backend.start_backend("blue")
    green = backend.start_backend("green")
    router = backend.start_router(CONFIG.format(blue=blue.port, green=green.port, salt=SALT))
    rng = random.Random()
    users = [f"u-{rng.getrandbits(64):016x}" for _ in range(USERS)]
    want = 0
    canary = 0
    for u in users:
        if bucket(SALT, u) < 2000:
            canary += 1
        elif bucket(SALT + "/shadow", u) < 3000:
            want += 1
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
    wrong = 0
    for rnd in range(2):  # every user twice: sticky
        for u in users:
            conn.request("GET", "/predict", headers={"X-User-Id": u})
            r = conn.getresponse()
            r.read()
            expect = "green" if bucket(SALT, u) < 2000 else "blue"
            wrong += r.status != 200 or r.getheader("X-Turnout-Variant") != expect
    f.check(wrong == 0, f"live picks follow the canary ({wrong} wrong)")
    v = harness.wait_for(lambda: (lambda s: s if s["agree"] + s["disagree"] + s["error"]
                                  >= 2 * want else None)(shadow_stats(router.admin_port)),
                         timeout=20, what="sticky mirrors compared")
    print(f"{USERS} users x2: canary {canary}, expected mirrors {2 * want}, router "
          f"mirrored {v['mirrored']}")
    f.check(v["mirrored"] == 2 * want, f"mirrored {v['mirrored']} == {2 * want} (independent)")
    f.check(sum(v["dropped"].values()) == 0, "nothing dropped")

    for i in range(NOKEY):
        conn.request("GET", "/predict")
        r = conn.getresponse()
        r.read()
    conn.close()
    # Requests without a key: random canary draw (20%) then random shadow draw (30%)
    # of the rest: expected 0.8 * 0.3 * NOKEY = 96, sd ~8.5; 6 sigma bounds.
    v2 = harness.wait_for(lambda: (lambda s: s if s["agree"] + s["disagree"] + s["error"]
                                   == s["mirrored"] else None)(shadow_stats(router.admin_port)),
                          timeout=20, what="random mirrors compared")
    extra = v2["mirrored"] - v["mirrored"]
    f.check(45 <= extra <= 147, f"random sampling without a key: {extra} of {NOKEY} (~96)")
    f.check(router.stop(signal.SIGTERM) == 0, "router exits 0")

    # The longest salt (256 bytes): still hashed as salt + "/shadow", user by user
    # (the access log's "shadow" field, X-Request-Id = the user).
    long_salt = ("long-salt-" * 26)[:256]
    logpath = os.path.join(harness.tmpdir(), "access.jsonl")
    router = backend.start_router(CONFIG.format(blue=blue.port, green=green.port,
                                                salt=long_salt),
                                  extra_yaml=f"access_log: {logpath}\n")
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
    for u in users:
        conn.request("GET", "/predict", headers={"X-User-Id": u, "X-Request-Id": u})
        conn.getresponse().read()
    conn.close()
    want_set = {u for u in users if bucket(long_salt, u) >= 2000
                and bucket(long_salt + "/shadow", u) < 3000}
    harness.wait_for(lambda: (lambda s: s["agree"] + s["disagree"] + s["error"]
                              >= s["mirrored"] >= len(want_set))(shadow_stats(router.admin_port)),
                     timeout=20, what="long-salt mirrors compared")
    f.check(router.stop(signal.SIGTERM) == 0, "router exits 0")
    with open(logpath) as fh:
        got_set = {d["request_id"] for d in map(json.loads, fh) if d.get("shadow") == "mirrored"}
    f.check(got_set == want_set, f"256-byte salt: mirrored users are those of SHA-256(salt + "
                                 f"\"/shadow\") ({len(got_set)} vs {len(want_set)}, "
                                 f"{len(got_set ^ want_set)} differ)")
    for p in (blue, green):
        f.check(p.stop(signal.SIGTERM) == 0, f"{p.name} exits 0")
    f.finish()


if __name__ == "__main__":
    main()
