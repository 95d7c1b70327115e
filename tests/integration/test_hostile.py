"""Hostile input through the real router, on raw sockets (issue 8). Extends
test_router_errors.py (duplicate/conflicting Content-Length, CL+TE, unknown TE).

Every malformed request below is answered 400 (or the named status) and the
connection is closed, and the backend sees no request at all; between cases a
normal request is still served:
  obs-fold (SP and HTAB), control characters (NUL, SOH, DEL, bare CR) in values,
  bad header names (space, control character, empty, space before the colon),
  more TE/CL tricks (chunked twice, "chunked, chunked", "+5", "0x5", "5, 5");
  CONNECT (501), and a folded request after it on the same connection (400);
  limits: header block over max_header, more than 100 header fields (431), body over
  max_body (413), request target over 8000 bytes (414).
Slowloris: a client trickling header lines faster than client_timeout is cut off
once client_timeout has passed since its first byte, while others are served.
The router exits 0 at the end (ASan build: no leak).
"""

import json
import os
import socket
import sys
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
  blue: {{{{ endpoints: [http://127.0.0.1:{blue}] }}}}
strategy: bluegreen
stable: blue
limits:
  max_header: 16KiB
  max_body: 64KiB
  client_timeout: 2s
"""


def raw(port, data, timeout=5):
    """Send raw bytes; return (everything answered until close or timeout, closed?)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        try:
            for _ in range(1000):
                chunk = s.recv(65536)
                if not chunk:
                    return out, True
                out += chunk
        except ConnectionResetError:
            return out, True
        except socket.timeout:
            return out, False
    return out, False


def status_of(out):
    first = out.split(b"\r\n", 1)[0].split(b" ")
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else None


def req(head, body=b""):
    return b"POST /echo HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n" + body


CASES = [
    # name, bytes, expected status
    ("obs-fold (SP)", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n", 400),
    ("obs-fold (HTAB)", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: one\r\n\ttwo\r\n\r\n", 400),
    ("obs-fold of Content-Length", req(b"Content-Length: 5\r\n 0\r\n", b"hello"), 400),
    ("NUL in a value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400),
    ("SOH in a value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n", 400),
    ("DEL in a value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x7fb\r\n\r\n", 400),
    ("bare CR in a value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\rX-B: b\r\n\r\n", 400),
    ("space in a name", b"GET /x HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", 400),
    ("control character in a name", b"GET /x HTTP/1.1\r\nHost: a\r\nX\x02A: b\r\n\r\n", 400),
    ("empty name", b"GET /x HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
    ("space before the colon", req(b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
                                   b"hello"), 400),
    ("TE chunked twice", req(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                             b"0\r\n\r\n"), 400),
    ("TE 'chunked, chunked'", req(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
     400),
    ("CL +5", req(b"Content-Length: +5\r\n", b"hello"), 400),
    ("CL 0x5", req(b"Content-Length: 0x5\r\n", b"hello"), 400),
    ("CL '5, 5'", req(b"Content-Length: 5, 5\r\n", b"hello"), 400),
    ("smuggled request after a folded CL",
     req(b"Content-Length: 0\r\n 44\r\n", b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"), 400),
    ("header block over max_header (16 KiB)",
     b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n", None),
    ("101 header fields", b"GET /x HTTP/1.1\r\nHost: a\r\n" +
     b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n", 431),
    ("body over max_body (64 KiB)", req(b"Content-Length: 65537\r\n"), 413),
    ("request target over 8000 bytes", b"GET /" + b"a" * 8100 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
     414),
]


def main():
    f = harness.Failures()
    blue = backend.start_backend("blue")
    router = backend.start_router(CONFIG.format(blue=blue.port))
    port = router.port

    def backend_requests():
        return json.loads(harness.http_request(blue.port, "GET", "/_stats")[2])["requests"]

    def served():
        s, h, _ = harness.http_request(port, "GET", "/x")
        return s == 200 and h.get("x-turnout-variant") == "blue"

    f.check(served(), "a normal request is served")
    for name, data, want in CASES:
        before = backend_requests()
        out, closed = raw(port, data)
        got = status_of(out)
        if want is None:  # evhttp's own limit: any 4xx refusal (it answers 413 or 400)
            f.check(got is not None and 400 <= got < 500, f"{name}: refused ({out[:60]!r})")
        else:
            f.check(got == want, f"{name}: {want} ({out[:80]!r})")
        f.check(closed, f"{name}: connection closed")
        f.check(out.count(b"HTTP/1.1 ") <= 1, f"{name}: one answer only")
        f.check(backend_requests() == before, f"{name}: the backend saw no request")
        f.check(served(), f"after {name}: the next client is served")
    # CONNECT is refused (501) by the router itself, so the listener guard sees the
    # request end: a folded request sent after its answer on the same connection is
    # refused too (evhttp's own 501 for CONNECT kept the connection open, guard blind).
    before = backend_requests()
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n")
        first = b""
        for _ in range(100):
            chunk = s.recv(65536)
            first += chunk
            head_end = first.find(b"\r\n\r\n")
            if not chunk or (0 <= head_end < len(first) - 4 and first.endswith(b"\n")):
                break
        f.check(first.startswith(b"HTTP/1.1 501") and b"not_implemented" in first,
                f"CONNECT: 501 not_implemented ({first[:80]!r})")
        second = b""
        try:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n")
            for _ in range(100):
                chunk = s.recv(65536)
                if not chunk:
                    break
                second += chunk
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
    f.check(status_of(second) in (None, 400),
            f"a folded request after CONNECT is not served ({second[:60]!r})")
    f.check(backend_requests() == before, "CONNECT: the backend saw no request")
    f.check(served(), "after CONNECT: the next client is served")
    # A header line that only looks like a fold inside a body is not one.
    body = b'{\r\n  "a": 1\r\n}'
    out, _ = raw(port, req(b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                           b"Connection: close\r\n" % len(body), body))
    f.check(status_of(out) == 200 and out.endswith(body),
            f"indented lines in a body are fine ({out[-40:]!r})")

    # Slowloris: one header line every 0.4 s; client_timeout is 2 s.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.monotonic()
    s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n")
    cut_at, lines = None, 0
    for i in range(40):  # at most 16 s
        try:
            s.sendall(b"X-%d: v\r\n" % i)
            lines += 1
            s.settimeout(0.4)
            if s.recv(4096) == b"":
                cut_at = time.monotonic() - t0
                break
        except socket.timeout:
            f.check(served(), "another client is served while the slow one trickles") \
                if i == 2 else None
            continue
        except (BrokenPipeError, ConnectionResetError):
            cut_at = time.monotonic() - t0
            break
    s.close()
    f.check(cut_at is not None and 1.8 <= cut_at <= 4.0,
            f"trickling client cut off about client_timeout after its first byte ({cut_at}, "
            f"{lines} lines)")
    harness.wait_for(lambda: "client connection cut off" in router.output(), timeout=5,
                     what="cut-off logged")
    # A slow but steady client that finishes within client_timeout is served.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n")
    time.sleep(0.5)  # pacing the client on purpose (not waiting for the router)
    s.sendall(b"X-A: 1\r\nConnection: close\r\n\r\n")
    out = b""
    for _ in range(100):
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    f.check(status_of(out) == 200, f"a slow client within client_timeout is served ({out[:40]!r})")

    f.check(served(), "still serving at the end")
    f.check(router.stop() == 0, "router exits 0 on SIGTERM")
    f.check(blue.stop() == 0, "backend exits 0")
    f.finish()


if __name__ == "__main__":
    main()
