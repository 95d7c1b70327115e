"""The proxy listener's own HTTP/1.1 front end (router/front.c), on raw sockets.

- a Content-Length body over max_body (sent in full): JSON 413 naming the limit, the
  connection closed, the backend saw nothing; the same for a chunked body that grows
  past max_body;
- JSON 400s naming what was wrong (the bad header's name, duplicate Content-Length,
  Content-Length with Transfer-Encoding), then close;
- a chunked request body reaches the backend de-chunked (echoed byte-exact);
- three pipelined requests sent in one write are answered in order (a slow one first);
- Expect: 100-continue: the interim 100 comes before the body is sent, then the answer;
- HTTP/1.0: closed after the answer unless it asked for keep-alive (then kept);
- HEAD: the backend's Content-Length, no body;
- an idle keep-alive connection is closed about client_timeout after its last answer;
- SIGTERM: exit 0.
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
  max_body: 64KiB
  client_timeout: 2s
"""


class Reader:
    """HTTP/1.1 responses read one by one from a socket (Content-Length framed)."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""
        self.closed = False

    def _fill(self):
        try:
            chunk = self.s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            chunk = b""
        if not chunk:
            self.closed = True
        self.buf += chunk
        return bool(chunk)

    def response(self, head_request=False):
        """(status, headers dict lower-case, body) or None if the connection ended first."""
        for _ in range(1000):
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if not self._fill():
                return None
        else:
            return None
        head = self.buf[:end].decode("latin-1").split("\r\n")
        self.buf = self.buf[end + 4:]
        status = int(head[0].split(" ")[1])
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = 0 if head_request or status in (100, 204, 304) else int(headers.get("content-length", "0"))
        for _ in range(10000):
            if len(self.buf) >= n or not self._fill():
                break
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def ends(self, timeout):
        """Whether the peer closes within timeout seconds (nothing else arriving)."""
        self.s.settimeout(timeout)
        try:
            return self.s.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


def connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s, Reader(s)


def main():
    f = harness.Failures()
    blue = backend.start_backend("blue")
    router = backend.start_router(CONFIG.format(blue=blue.port))
    port = router.port

    def backend_requests():
        return json.loads(harness.http_request(blue.port, "GET", "/_stats")[2])["requests"]

    def refused(name, data, want_status, want_words):
        before = backend_requests()
        s, r = connect(port)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = r.response()
        ok = got is not None and got[0] == want_status
        doc = {}
        if ok:
            try:
                doc = json.loads(got[2])
            except ValueError:
                doc = {}
        f.check(ok and got[1].get("content-type") == "application/json",
                f"{name}: JSON {want_status} ({got and got[:2]!r})")
        text = doc.get("error", "")
        f.check(all(w in text for w in want_words) and doc.get("cause"),
                f"{name}: the error names {want_words} ({doc!r})")
        f.check(got is not None and got[1].get("connection") == "close" and r.ends(3),
                f"{name}: connection closed")
        s.close()
        f.check(backend_requests() == before, f"{name}: the backend saw nothing")

    # Oversized bodies, sent in full: the answer still arrives (lingering close).
    big = b"x" * 70000
    refused("Content-Length over max_body",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(big) + big,
            413, ["max_body", "65536"])
    chunks = b"".join(b"%x\r\n%s\r\n" % (8192, b"y" * 8192) for _ in range(9)) + b"0\r\n\r\n"
    refused("chunked body over max_body",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks,
            413, ["max_body"])
    refused("bad header name", b"GET /x HTTP/1.1\r\nHost: a\r\nX-Bad\x01Name: v\r\n\r\n", 400,
            ["X-Bad"])
    refused("control character in a value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-Val: a\x02b\r\n\r\n",
            400, ["X-Val", "0x02"])
    refused("duplicate Content-Length",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
            400, ["duplicate Content-Length"])
    refused("CL with TE", b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, ["Content-Length",
                                                               "Transfer-Encoding"])
    refused("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"\r\nzz\r\nab\r\n0\r\n\r\n", 400, ["chunk-size"])

    # A chunked body is de-chunked on the way (the echo gets it whole, with a length).
    s, r = connect(port)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
              b"Content-Type: text/plain\r\n\r\n5\r\nhello\r\n")
    time.sleep(0.05)  # pacing the client on purpose: the body arrives in two reads
    s.sendall(b"6;x=y\r\n world\r\n0\r\nTrailer: t\r\n\r\n")
    got = r.response()
    f.check(got is not None and got[0] == 200 and got[2] == b"hello world",
            f"chunked body echoed de-chunked ({got!r})")

    # Pipelining: three requests in one write, the first slow; answers in order.
    s.sendall(b"GET /slow?ms=300 HTTP/1.1\r\nHost: a\r\nX-Request-Id: p1\r\n\r\n"
              b"POST /echo HTTP/1.1\r\nHost: a\r\nX-Request-Id: p2\r\nContent-Length: 3\r\n\r\nabc"
              b"GET /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: p3\r\n\r\n")
    ids, bodies = [], []
    for _ in range(3):
        got = r.response()
        ids.append(got and got[1].get("x-request-id"))
        bodies.append(got and got[2])
    f.check(ids == ["p1", "p2", "p3"] and bodies[1] == b"abc",
            f"pipelined requests answered in order ({ids})")
    s.close()

    # Expect: 100-continue: the 100 arrives before the body is sent.
    s, r = connect(port)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    got = r.response()
    f.check(got is not None and got[0] == 100, f"100 Continue before the body ({got!r})")
    s.sendall(b"ping")
    got = r.response()
    f.check(got is not None and got[0] == 200 and got[2] == b"ping",
            f"then the answer to the body ({got!r})")
    s.close()

    # HTTP/1.0: closed after the answer, unless keep-alive was asked for.
    s, r = connect(port)
    s.sendall(b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
    got = r.response()
    f.check(got is not None and got[0] == 200 and r.ends(3), "HTTP/1.0: answered, then closed")
    s.close()
    s, r = connect(port)
    s.sendall(b"GET /x HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
    got = r.response()
    f.check(got is not None and got[1].get("connection", "").lower() == "keep-alive",
            f"HTTP/1.0 keep-alive: Connection: keep-alive ({got and got[1]!r})")
    s.sendall(b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
    got = r.response()
    f.check(got is not None and got[0] == 200, "HTTP/1.0 keep-alive: a second request served")
    s.close()

    # HEAD: the backend's length, no body (the next answer on the connection is intact).
    s, r = connect(port)
    s.sendall(b"HEAD /big?bytes=1000 HTTP/1.1\r\nHost: a\r\n\r\nGET /big?bytes=10 HTTP/1.1\r\n"
              b"Host: a\r\n\r\n")
    got = r.response(head_request=True)
    f.check(got is not None and got[0] == 200 and got[1].get("content-length") == "1000",
            f"HEAD: Content-Length of the GET ({got and got[1]!r})")
    got = r.response()
    f.check(got is not None and got[0] == 200 and len(got[2]) == 10,
            f"HEAD: no body sent (next answer intact: {got and got[2]!r})")

    # Idle keep-alive: closed about client_timeout (2 s) after the last answer.
    t0 = time.monotonic()
    closed = r.ends(6)
    idle = time.monotonic() - t0
    f.check(closed and 1.5 <= idle <= 4.0, f"idle connection closed after client_timeout ({idle:.2f} s)")
    s.close()

    s, h, _ = harness.http_request(port, "GET", "/x")
    f.check(s == 200, "still serving at the end")
    f.check(router.stop() == 0, "router exits 0 on SIGTERM")
    f.check(blue.stop() == 0, "backend exits 0")
    f.finish()


if __name__ == "__main__":
    main()
