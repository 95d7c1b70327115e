"""Strategies and pinning through the real router: bluegreen and shadow send
100% of live traffic to stable; the override header pins a request to a named
variant; cookie and ip stickiness are stable; replicas are used round-robin;
10 MiB request and response bodies pass byte-exact (echo and a generated
pattern); methods, query strings and empty header values are forwarded.
"""

import hashlib
import http.client
import json
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
  green: {{{{ endpoints: [http://127.0.0.1:{green}, http://127.0.0.1:{green2}] }}}}
strategy: {strategy}
stable: blue
candidate: green
canary:
  percent: {percent}
  sticky: {sticky}
  salt: modes
limits:
  max_body: 16MiB
"""


def get_many(port, n, path="/x", headers=None):
    """n GETs on one keep-alive connection; return a list of (variant, backend)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for _ in range(n):
            conn.request("GET", path, headers=headers or {})
            r = conn.getresponse()
            r.read()
            out.append((r.getheader("X-Turnout-Variant"), r.getheader("X-Backend")))
    finally:
        conn.close()
    return out


def main():
    f = harness.Failures()
    blue = backend.start_backend("blue")
    green = backend.start_backend("green")
    green2 = backend.start_backend("green2")
    ports = dict(blue=blue.port, green=green.port, green2=green2.port)

    for strategy in ("bluegreen", "shadow"):
        r = backend.start_router(CONFIG.format(strategy=strategy, percent=50, sticky="none", **ports))
        got = get_many(r.port, 500)
        f.check(all(v == "blue" and b == "blue" for v, b in got),
                f"{strategy}: 500 of 500 requests to stable")
        got = get_many(r.port, 20, headers={"X-Turnout-Variant": "green"})
        f.check(all(v == "green" and b in ("green", "green2") for v, b in got),
                f"{strategy}: override header pins to green")
        f.check({b for _, b in got} == {"green", "green2"}, f"{strategy}: green replicas round-robin")
        f.check(all(got[i][1] != got[i + 1][1] for i in range(len(got) - 1)),
                f"{strategy}: one request at a time alternates between the replicas "
                f"({[b for _, b in got]})")
        f.check(r.stop() == 0, f"{strategy}: router exits 0")

    # ip stickiness: every request from 127.0.0.1 lands on the variant its bucket says.
    r = backend.start_router(CONFIG.format(strategy="canary", percent=50, sticky="ip", **ports))
    got = get_many(r.port, 100)
    bucket = int.from_bytes(hashlib.sha256(b"modes" + b"\x00" + b"127.0.0.1").digest()[:8], "big") % 10000
    want = "green" if bucket < 5000 else "blue"
    f.check(all(v == want for v, _ in got), f"ip: 100 of 100 requests on {want} (bucket {bucket}; got {sorted(set(got))})")
    f.check(r.stop() == 0, "router exits 0")

    # Cookie stickiness at 50%: each cookie value always lands on one variant.
    r = backend.start_router(CONFIG.format(strategy="canary", percent=50, sticky="cookie:uid", **ports))
    rng = random.Random()
    seen = {}
    for i in range(40):
        uid = f"c{rng.getrandbits(48):x}"
        got = get_many(r.port, 5, headers={"Cookie": f"theme=dark; uid={uid}; z=1"})
        seen[uid] = {v for v, _ in got}
    f.check(all(len(v) == 1 for v in seen.values()), "cookie: same uid, same variant")
    f.check({next(iter(v)) for v in seen.values()} == {"blue", "green"},
            "cookie: both variants used at 50%")

    # 10 MiB request body echoed byte-exact; 10 MiB response byte-exact.
    body = os.urandom(10 * 1024 * 1024)
    s, h, b = harness.http_request(r.port, "POST", "/echo", body=body,
                                   headers={"Content-Type": "application/octet-stream",
                                            "Cookie": "uid=x"}, timeout=30)
    f.check(s == 200 and len(b) == len(body) and hashlib.sha256(b).digest() == hashlib.sha256(body).digest(),
            f"10 MiB request body echoed byte-exact ({s}, {len(b)} bytes)")
    n = 10 * 1024 * 1024 + 7
    s, h, b = harness.http_request(r.port, "GET", f"/big?bytes={n}&seed=3", timeout=30)
    f.check(s == 200 and b == backend.pattern(n, 3), f"10 MiB response byte-exact ({s}, {len(b)} bytes)")

    # Method, query and headers reach the backend as sent (PUT with a body, empty value).
    s, h, b = harness.http_request(r.port, "PUT", "/thing?a=1&b=%20x", body=b"abc",
                                   headers={"X-Empty": "", "Content-Type": "text/plain"})
    doc = json.loads(b)
    hd = {k.lower(): v for k, v in doc["headers"]}
    f.check(doc["method"] == "PUT" and doc["path"] == "/thing?a=1&b=%20x" and doc["body_len"] == 3,
            f"PUT, query and body forwarded ({doc['method']} {doc['path']} {doc['body_len']})")
    f.check(hd.get("x-empty") == "" and hd.get("content-type") == "text/plain",
            "empty header value and Content-Type forwarded")
    f.check("expect" not in hd, "no Expect header added upstream")
    s, h, b = harness.http_request(r.port, "DELETE", "/thing")
    f.check(s == 200 and json.loads(b)["method"] == "DELETE", "DELETE forwarded")
    s, h, b = harness.http_request(r.port, "HEAD", f"/big?bytes=1234")
    f.check(s == 200 and b == b"" and h.get("content-length") == "1234",
            f"HEAD: no body, the backend's Content-Length ({s} {h.get('content-length')})")
    s, h, b = harness.http_request(r.port, "GET", "/status?code=204")
    f.check(s == 204 and b == b"", f"204 passed through without a body ({s})")
    s, h, b = harness.http_request(r.port, "GET", "/status?code=404")
    f.check(s == 404 and h.get("x-turnout-variant") in ("blue", "green"),
            "backend status passed through with the variant header")
    f.check(r.stop() == 0, "router exits 0")

    # https:// endpoints: verified against upstream_tls.ca; an unknown CA is a 502.
    cert, key = backend.make_cert(harness.tmpdir())
    tlsb = backend.start_backend("tls", tls=(cert, key))
    tls_cfg = """
listen: 127.0.0.1:{port}
workers: 1
admin:
  http: 127.0.0.1:{admin_port}
variants:
  blue: {{ endpoints: [https://127.0.0.1:%d] }}
strategy: bluegreen
stable: blue
""" % tlsb.port
    r = backend.start_router(tls_cfg + "upstream_tls:\n  ca: %s\n" % cert)
    s, h, b = harness.http_request(r.port, "POST", "/echo", body=b"over tls")
    f.check(s == 200 and b == b"over tls", f"https endpoint verified with upstream_tls.ca ({s} {b[:300]!r})")
    f.check(r.stop() == 0, "router exits 0")
    r = backend.start_router(tls_cfg)
    s, h, b = harness.http_request(r.port, "GET", "/x")
    f.check(s == 502 and json.loads(b)["variant"] == "blue",
            f"https endpoint with an untrusted certificate -> 502 ({s} {b[:160]!r})")
    f.check(r.stop() == 0, "router exits 0")
    for p in (blue, green, green2, tlsb):
        f.check(p.stop() == 0, f"{p.name} exits 0")
    f.finish()


if __name__ == "__main__":
    main()
