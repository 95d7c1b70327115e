"""Clients that go away mid-request, through the real router (issue 8).

A client that resets its connection (SO_LINGER 0) while its request is at the
backend, and one that pipelines slow requests and resets after the first
answer: the router's answer cannot be written, evhttp frees the request without
completing it, and the router must not go on counting that answer as
unflushed. Each time the next client is served; then, with one slow request in
flight, SIGTERM: that request is answered 200 and the router exits 0 as soon as
it is, not after limits.drain_timeout (20 s here) waiting for answers to
clients that are gone.
"""

import json
import os
import socket
import struct
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
  drain_timeout: 20s
"""

SLOW = b"GET /slow?ms=400 HTTP/1.1\r\nHost: a\r\n\r\n"


def reset(s):
    """Close s with a TCP reset (SO_LINGER 0)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def main():
    f = harness.Failures()
    blue = backend.start_backend("blue")
    router = backend.start_router(CONFIG.format(blue=blue.port))
    port = router.port

    def backend_inflight():
        return json.loads(harness.http_request(blue.port, "GET", "/_stats")[2])["inflight"]

    def router_inflight():
        text = harness.http_request(router.admin_port, "GET", "/metrics")[2].decode()
        for line in text.splitlines():
            if line.startswith("turnout_inflight_requests "):
                return int(float(line.split()[1]))
        return None

    def served():
        s, h, _ = harness.http_request(port, "GET", "/x")
        return s == 200 and h.get("x-turnout-variant") == "blue"

    f.check(served(), "a normal request is served")
    # Reset while the request is at the backend; the answer then meets a dead socket.
    for i in range(3):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(SLOW)
        harness.wait_for(lambda: backend_inflight() == 1, timeout=5, what="request at backend")
        reset(s)
        harness.wait_for(lambda: backend_inflight() == 0 and router_inflight() == 0, timeout=5,
                         what="router done with the request of the gone client")
        f.check(served(), f"after client reset {i + 1}: the next client is served")
    # Pipelined slow requests, reset after the first answer.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(SLOW * 10)
    first = s.recv(65536)
    f.check(first.startswith(b"HTTP/1.1 200"), f"first pipelined answer ({first[:30]!r})")
    harness.wait_for(lambda: backend_inflight() == 1, timeout=5, what="next request at backend")
    reset(s)
    harness.wait_for(lambda: backend_inflight() == 0 and router_inflight() == 0, timeout=5,
                     what="router done with the pipelined requests")
    f.check(served(), "after the pipelining client reset: the next client is served")

    # SIGTERM with one slow request in flight: answered, and the exit follows at once.
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(SLOW)
    harness.wait_for(lambda: backend_inflight() == 1, timeout=5, what="last request at backend")
    t0 = time.monotonic()
    router.signal(15)
    out = b""
    for _ in range(100):
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    f.check(out.startswith(b"HTTP/1.1 200"), f"the request in flight at SIGTERM is answered "
                                             f"({out[:30]!r})")
    rc = router.stop(timeout=30)
    took = time.monotonic() - t0
    f.check(rc == 0, f"router exits 0 on SIGTERM ({rc})")
    f.check(took < 5, f"router exits once its last answer is written, not after drain_timeout "
                      f"({took:.1f} s)")
    f.check(blue.stop() == 0, "backend exits 0")
    f.finish()


if __name__ == "__main__":
    main()
