"""Fault injection through the real router (issue 8); run it in the ASan build too.

- kill -9 one of two backends of the live variant under load: the requests that
  were inside it get 502 (cause reset), every other answer is 200 (connect failures
  are retried on the other endpoint; the dead one is ejected), and soon after only
  200s; the backend restarted on the same port takes traffic again.
- a backend that accepts and never answers: 504, cause timeout, within
  upstream_timeout (+ slack);
- a backend that resets in the middle of its response: 502, cause reset;
- a backend that answers garbage: 502, cause protocol (or reset);
- a backend that reads a request on a reused connection, resets it and stops
  listening: 502 reset, and the request is not sent to the variant's other endpoint
  (libcurl's own re-send meets a refused connect: still not a "never reached" case);
each time the router goes on serving, and it exits 0 on SIGTERM.
"""

import json
import os
import signal
import socket
import struct
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
  blue:    {{{{ endpoints: [http://127.0.0.1:{a}, http://127.0.0.1:{b}] }}}}
  hang:    {{{{ endpoints: [http://127.0.0.1:{hang}] }}}}
  partial: {{{{ endpoints: [http://127.0.0.1:{partial}] }}}}
  garbage: {{{{ endpoints: [http://127.0.0.1:{garbage}] }}}}
  flaky:   {{{{ endpoints: [http://127.0.0.1:{flaky}, http://127.0.0.1:{other}] }}}}
strategy: bluegreen
stable: blue
limits:
  upstream_timeout: 1s
health:
  interval: 30s
  unhealthy_threshold: 3
"""


class RawServer:
    """A loopback TCP server whose every connection gets `behave(conn)` in a thread."""

    def __init__(self, behave):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.behave = behave
        self.held = []
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        for _ in range(100000):  # bounded; ends when stop is set
            if self.stop.is_set():
                break
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            c.settimeout(5)
            threading.Thread(target=self._one, args=(c,), daemon=True).start()
        self.sock.close()

    def _one(self, c):
        try:
            self.behave(self, c)
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.t.join(5)
        for c in self.held:
            c.close()


def read_head(c):
    data = b""
    for _ in range(1000):
        if b"\r\n\r\n" in data:
            break
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def hang(srv, c):
    read_head(c)
    srv.held.append(c)  # never answer; closed at the end


def partial(srv, c):
    read_head(c)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
              b"\r\n{\"half\": ")
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # RST in the middle of the body


class DiesOnSecond:
    """Answers the first request of a connection (keep-alive), then, on the second,
    reads it, resets the connection and stops listening: libcurl's own re-send on a
    fresh connection is then refused, after the request reached this backend."""

    def __init__(self):
        self.requests = 0
        self.srv = RawServer(self.behave)

    def behave(self, srv, c):
        for n in range(2):
            head = read_head(c)
            if not head:
                return
            if not head.startswith(b"GET /v2/health/ready "):  # probes not counted
                self.requests += 1
            if n == 0:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            srv.stop.set()
            srv.t.join(5)  # the listening socket is closed: new connects are refused
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()


def main():
    f = harness.Failures()
    a_port, b_port = harness.free_port(), harness.free_port()
    a = backend.start_backend("a", port=a_port)
    b = backend.start_backend("b", port=b_port)
    hang_srv, partial_srv = RawServer(hang), RawServer(partial)
    garbage = backend.start_backend("garbage", mode="garbage")
    flaky, other = DiesOnSecond(), backend.start_backend("other")
    router = backend.start_router(CONFIG.format(a=a_port, b=b_port, hang=hang_srv.port,
                                                partial=partial_srv.port, garbage=garbage.port,
                                                flaky=flaky.srv.port, other=other.port))
    port = router.port

    def get(path, variant=None, timeout=10):
        hdr = {"X-Turnout-Variant": variant} if variant else None
        return harness.http_request(port, "GET", path, headers=hdr, timeout=timeout)

    # kill -9 a backend under load.
    results, lock, stop = [], threading.Lock(), threading.Event()

    def load():
        for _ in range(2000):  # bounded; stopped by the event well before
            if stop.is_set():
                return
            t = time.monotonic()
            try:
                s, h, body = get("/slow?ms=30")
                cause = json.loads(body).get("cause") if s != 200 else None
            except OSError as e:
                s, cause = 0, str(e)
            with lock:
                results.append((t, s, cause))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    harness.wait_for(lambda: len(results) >= 40, timeout=15, what="load running")
    killed_at = time.monotonic()
    a.kill()  # SIGKILL
    harness.wait_for(lambda: len([r for r in results if r[0] > killed_at + 1.0]) >= 40,
                     timeout=20, what="load after the kill")
    stop.set()
    for t in threads:
        t.join(15)
    statuses = {}
    for _, s, _ in results:
        statuses[s] = statuses.get(s, 0) + 1
    bad = [r for r in results if r[1] != 200]
    f.check(set(statuses) <= {200, 502}, f"only 200 and 502 under a kill -9 ({statuses})")
    f.check(all(c == "reset" for _, s, c in bad), f"the 502s are resets ({bad[:5]})")
    f.check(len(bad) <= 4, f"at most the requests inside the killed backend fail ({len(bad)})")
    late = [r for r in results if r[0] > killed_at + 0.5]
    f.check(late and all(s == 200 for _, s, _ in late),
            f"after the kill every request is served by the other endpoint ({len(late)})")
    harness.wait_for(lambda: "ejected" in router.output(), timeout=5,
                     what="dead endpoint ejected (passive)")
    # It comes back on the same port; after its back-off it takes traffic again.
    a = backend.start_backend("a", port=a_port)
    harness.wait_for(lambda: get("/x")[1].get("x-backend") == "a", timeout=15, interval=0.05,
                     what="restarted backend takes traffic again")

    # A backend that accepts and never answers: 504 in about upstream_timeout.
    t0 = time.monotonic()
    s, _, body = get("/x", "hang")
    took = time.monotonic() - t0
    f.check(s == 504 and json.loads(body)["cause"] == "timeout",
            f"silent backend -> 504 timeout ({s} {body[:200]!r})")
    f.check(0.9 <= took <= 3.0, f"the 504 comes after upstream_timeout (1 s): {took:.2f} s")
    f.check(get("/x")[0] == 200, "served after the hang")

    # Reset mid-response: 502 reset.
    s, _, body = get("/x", "partial")
    f.check(s == 502 and json.loads(body)["cause"] in ("reset", "protocol"),
            f"reset mid-response -> 502 ({s} {body[:200]!r})")
    f.check(get("/x")[0] == 200, "served after the reset")

    # Garbage: 502.
    s, _, body = get("/x", "garbage")
    f.check(s == 502 and json.loads(body)["cause"] in ("protocol", "reset"),
            f"garbage -> 502 ({s} {body[:200]!r})")
    f.check(get("/x")[0] == 200, "served after the garbage")

    # A request that reached a backend which then died is not retried elsewhere, even
    # when libcurl's own re-send turns the failure into a refused connect. (One worker:
    # the round-robin goes flaky, other, flaky; the third reuses flaky's connection.)
    def other_requests():
        return json.loads(harness.http_request(other.port, "GET", "/_stats")[2])["requests"]
    codes = [get("/x", "flaky")[0] for _ in range(2)]
    before = other_requests()
    s, _, body = get("/x", "flaky")
    f.check(codes == [200, 200] and s == 502 and json.loads(body)["cause"] == "reset",
            f"request lost inside a dying backend -> 502 reset ({codes} {s} {body[:200]!r})")
    f.check(flaky.requests == 2 and other_requests() == before,
            f"not re-sent to the other endpoint ({flaky.requests}, other +{other_requests() - before})")

    # /status counted them by cause.
    st = json.loads(harness.http_request(router.admin_port, "GET", "/status")[2])
    by = {v["name"]: v for v in st["variants"]}
    f.check(by["hang"]["upstream_errors"]["timeout"] >= 1, "/status: timeout counted")
    f.check(by["blue"]["requests"]["2xx"] >= 80, "/status: blue's 2xx counted")

    f.check(router.stop() == 0, "router exits 0 on SIGTERM")
    hang_srv.close()
    partial_srv.close()
    flaky.srv.close()
    for p in (a, b, garbage, other):
        f.check(p.stop(signal.SIGTERM) == 0, "backend exits 0")
    f.finish()


if __name__ == "__main__":
    main()
