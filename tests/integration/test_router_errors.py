"""Error paths through the real router: 502 (dead port, reset, close, garbage),
504 (slow backend past upstream_timeout), 503 (max in-flight exceeded, and no
healthy endpoint), each with a JSON body naming the variant and the cause and
counted in /status; 413 past max_body; framing attacks (duplicate or
conflicting Content-Length, CL with TE, unknown TE) answered 400 + close;
hop-by-hop headers dropped both ways; X-Request-Id kept or generated;
X-Forwarded-For appended.
"""

import http.client
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

CONFIG = """
listen: 127.0.0.1:{{port}}
workers: 1
admin:
  http: 127.0.0.1:{{admin_port}}
variants:
  blue:  {{{{ endpoints: [http://127.0.0.1:{blue}] }}}}
  dead:  {{{{ endpoints: [http://127.0.0.1:{dead}] }}}}
strategy: bluegreen
stable: blue
candidate: dead
limits:
  upstream_timeout: 1500ms
  max_inflight: 2
  max_body: 1MiB{extra}
health:
  enabled: false   # this test drives the dead variant itself
"""


def raw(port, data, timeout=5):
    """Send raw bytes; return everything the router answers until it closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            for _ in range(1000):
                chunk = s.recv(65536)
                if not chunk:
                    return out, True
                out += chunk
        except socket.timeout:
            return out, False
    return out, False


def main():
    f = harness.Failures()
    blue = backend.start_backend("blue")
    dead = harness.free_port()  # nobody listens here
    router = backend.start_router(CONFIG.format(blue=blue.port, dead=dead, extra=""))
    port = router.port

    def req(path, headers=None, body=None, method="GET"):
        return harness.http_request(port, method, path, body=body, headers=headers, timeout=10)

    # 502: connection refused on the dead variant's endpoint.
    s, h, b = req("/x", {"X-Turnout-Variant": "dead"})
    doc = json.loads(b)
    f.check(s == 502 and doc["variant"] == "dead" and doc["cause"] == "connect",
            f"dead port -> 502 naming variant and cause ({s} {b[:200]!r})")
    f.check(h.get("content-type") == "application/json", "error body is JSON")

    # 502: reset, close without answer, garbage.
    for path, causes in (("/reset", ("reset",)), ("/close", ("reset",)),
                         ("/garbage", ("protocol", "reset"))):
        s, h, b = req(path)
        doc = json.loads(b)
        f.check(s == 502 and doc["variant"] == "blue" and doc["cause"] in causes,
                f"{path} -> 502 cause in {causes} ({s} {b[:200]!r})")

    # 504: slow backend past upstream_timeout (1.5 s).
    s, h, b = req("/slow?ms=3000")
    doc = json.loads(b)
    f.check(s == 504 and doc["cause"] == "timeout" and doc["variant"] == "blue",
            f"slow backend -> 504 timeout ({s} {b[:200]!r})")

    def backend_inflight():
        return json.loads(harness.http_request(blue.port, "GET", "/_stats")[2])["inflight"]

    # The 504's request may still sleep in the backend: wait it out first.
    harness.wait_for(lambda: backend_inflight() == 0, timeout=5, what="backend idle")
    # 503: past max_inflight (2) on the single worker while two slow requests run.
    results = []

    def slow():
        s, _, b = req("/slow?ms=1000")
        results.append(s)
        if s != 200:
            sys.stderr.write(f"slow request answered {s}: {b[:300]!r}\n")

    # 1 s < upstream_timeout (1.5 s): these two succeed.
    ts = [threading.Thread(target=slow) for _ in range(2)]
    for t in ts:
        t.start()
    harness.wait_for(lambda: backend_inflight() == 2, timeout=5, what="two slow requests in flight")
    s, h, b = req("/x")
    got503 = (s, h, b) if s == 503 else None
    for t in ts:
        t.join(10)
    f.check(got503 is not None and got503[1].get("retry-after") == "1"
            and json.loads(got503[2])["cause"] == "overloaded",
            f"third request past max_inflight -> 503 + Retry-After ({got503})")
    f.check(results == [200, 200], f"the in-flight requests still succeed ({results})")

    # 400: override naming an unknown variant, saying so.
    s, h, b = req("/x", {"X-Turnout-Variant": "purple"})
    f.check(s == 400 and b"purple" in b, f"unknown override -> 400 naming it ({s} {b!r})")

    # 413 past max_body (1 MiB).
    # (evhttp answers as soon as it reads the length, before the body.)
    out, _ = raw(port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n")
    f.check(out.startswith(b"HTTP/1.1 413"), f"body over max_body -> 413 ({out[:40]!r})")

    # Headers over max_header (default 16 KiB): 431 (RFC 6585) naming the limit, and close,
    # before any routing.
    out, closed = raw(port, b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    f.check(out.startswith(b"HTTP/1.1 431") and b"max_header" in out and closed,
            f"headers over max_header -> 431 + close ({out[:30]!r})")

    # Framing attacks: 400 and the connection closes; nothing reaches the backend twice.
    attacks = {
        "duplicate CL": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                        b"Content-Length: 5\r\n\r\nhello",
        "conflicting CL": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                          b"Content-Length: 30\r\n\r\nhelloGET /smuggled HTTP/1.1\r\n\r\n",
        "CL with TE": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "TE not chunked": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n"
                          b"\r\n0\r\n\r\n",
    }
    for name, data in attacks.items():
        out, closed = raw(port, data)
        first = out.split(b"\r\n", 1)[0]
        f.check(b" 400 " in first + b" ", f"{name}: 400 ({first!r})")
        f.check(b"/smuggled" not in out and out.count(b"HTTP/1.1 ") <= 1,
                f"{name}: no second (smuggled) response")
        f.check(closed, f"{name}: connection closed after 400")

    # Hop-by-hop headers dropped, X-Request-Id kept, X-Forwarded-For appended.
    s, h, b = req("/headers", {"Connection": "keep-alive, X-Secret", "X-Secret": "1",
                               "Keep-Alive": "timeout=5", "X-Request-Id": "rid-123",
                               "X-Forwarded-For": "10.1.2.3", "X-App": "yes"})
    doc = json.loads(b)
    got = {k.lower(): v for k, v in doc["headers"]}
    f.check(s == 200 and "x-secret" not in got and "keep-alive" not in got,
            f"hop-by-hop request headers dropped ({sorted(got)})")
    f.check(got.get("x-app") == "yes", "end-to-end header forwarded")
    f.check(got.get("x-request-id") == "rid-123" and h.get("x-request-id") == "rid-123",
            "client X-Request-Id kept both ways")
    f.check(got.get("x-forwarded-for") == "10.1.2.3, 127.0.0.1", f"X-Forwarded-For appended ({got.get('x-forwarded-for')})")
    s, h, b = req("/hop")  # the backend answers with hop-by-hop headers of its own
    f.check(s == 200 and h.get("x-end") == "1", f"end-to-end response header kept ({s} {h})")
    f.check(not {"x-hop-secret", "keep-alive", "proxy-authenticate"} & set(h)
            and "x-hop-secret" not in h.get("connection", "").lower(),
            f"hop-by-hop response headers dropped ({sorted(h)})")
    s, h, b = req("/x")
    rid = h.get("x-request-id", "")
    f.check(len(rid) >= 16 and json.loads(b) and h.get("x-turnout-variant") == "blue",
            f"X-Request-Id generated ({rid!r})")

    # /status counts the errors by cause.
    st = json.loads(harness.http_request(router.admin_port, "GET", "/status")[2])
    by = {v["name"]: v for v in st["variants"]}
    f.check(by["dead"]["upstream_errors"]["connect"] == 1, "/status: dead connect error counted")
    f.check(by["blue"]["upstream_errors"]["timeout"] == 1, "/status: blue timeout counted")
    f.check(by["blue"]["upstream_errors"]["reset"] >= 2, "/status: blue resets counted")
    f.check(by["blue"]["requests"]["5xx"] >= 4, "/status: blue 5xx counted")
    # /metrics counts the same errors, by the same causes
    m = harness.http_request(router.admin_port, "GET", "/metrics")[2].decode()
    for name in ("blue", "dead"):
        for cause in ("connect", "reset", "timeout", "protocol"):
            series = f'turnout_upstream_errors_total{{variant="{name}",cause="{cause}"}} '
            got = [float(x[len(series):]) for x in m.splitlines() if x.startswith(series)]
            want = by[name]["upstream_errors"][cause]
            f.check(got == [want], f"/metrics: {series.strip()} {got} == [{want}]")

    f.check(router.stop() == 0, "router exits 0 on SIGTERM")

    # max_connections (2, one worker): a third client connection gets 503 + close
    # while the first two stay open and keep working. client_timeout (1 s) below a
    # slow upstream (1.2 s) does not cut the request: it bounds idle clients only.
    r2 = backend.start_router(CONFIG.format(blue=blue.port, dead=dead, extra="""
  max_connections: 2
  client_timeout: 1s"""))
    c1 = http.client.HTTPConnection("127.0.0.1", r2.port, timeout=10)
    c2 = http.client.HTTPConnection("127.0.0.1", r2.port, timeout=10)
    for c in (c1, c2):
        c.request("GET", "/x")
        resp = c.getresponse()
        resp.read()
        f.check(resp.status == 200, "connections within max_connections served")
    s, h, b = harness.http_request(r2.port, "GET", "/x")
    f.check(s == 503 and h.get("connection") == "close" and b"max_connections" in b,
            f"connection past max_connections -> 503 + close ({s} {b!r})")
    c1.request("GET", "/slow?ms=1200")
    resp = c1.getresponse()
    resp.read()
    f.check(resp.status == 200, f"slow upstream past client_timeout still answered ({resp.status})")
    c1.close()
    harness.wait_for(lambda: harness.http_request(r2.port, "GET", "/x")[0] == 200, timeout=5,
                     what="a closed connection frees its slot")
    c2.close()
    # A client that stalls mid-headers is cut after client_timeout (1 s).
    t0 = time.monotonic()
    out, closed = raw(r2.port, b"GET /x HTTP/1.1\r\nHost: a\r\n", timeout=8)
    f.check(closed and time.monotonic() - t0 < 5,
            f"stalled client closed after client_timeout ({time.monotonic() - t0:.1f} s)")
    f.check(r2.stop() == 0, "router exits 0")

    f.check(blue.stop() == 0, "backend exits 0")
    f.finish()


if __name__ == "__main__":
    main()
