"""Both upstream clients (`upstream_client: builtin`, the default, and `libcurl`)
give the client the same answers from a scripted raw HTTP/1.1 backend.

The backend is a thread in this test on 127.0.0.1 that answers by path with
exact bytes (chunked with a trailer, no length then close, 204 with a length,
a HEAD with a length and no body, 1xx before the answer, a plain length) and
counts the connections it accepts. For each client: the bodies and statuses
come through; the reply carries exactly one Content-Length equal to the body
(none on 204); a chunked answer is re-framed, never passed as chunked; 50
sequential requests reuse the router's keep-alive connection to the backend
(at most one new backend connection); the router exits 0 on SIGTERM.
The built-in client runs once more with the endpoint named http://localhost:PORT
(resolved by the router's resolver thread from /etc/hosts: the debug log shows
the lookup, and that the 50 requests did not look the name up again).
"""

import http.client
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

CONFIG = """
listen: 127.0.0.1:{{port}}
workers: 1
admin:
  http: 127.0.0.1:{{admin_port}}
variants:
  blue:  {{{{ endpoints: [http://{host}:{port}] }}}}
strategy: bluegreen
stable: blue
upstream_client: {client}
log_level: {level}
"""

ANSWERS = {
    "/chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n"
                 b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n", False),
    "/nolen": (b"HTTP/1.1 200 OK\r\nX-Kind: nolen\r\n\r\nuntil the close", True),
    "/204": (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", False),
    "/head": (b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", False),
    "/interim": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                 b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    "/cl": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False),
}


class Backend:
    """Scripted HTTP/1.1 answers by path; counts accepted connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepts = 0
        self.done = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.accepts += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(10)
        buf = b""
        try:
            for _ in range(1000):  # requests per connection, bounded
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                line = head.split(b"\r\n")[0].decode()
                method, path = line.split(" ")[0], line.split(" ")[1]
                length = 0
                for h in head.split(b"\r\n")[1:]:
                    k, _, v = h.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v)
                while len(buf) < length:
                    buf += c.recv(65536)
                buf = buf[length:]
                answer, close = ANSWERS.get(path, ANSWERS["/cl"])
                c.sendall(answer)
                if close:
                    return
        except (OSError, ValueError, IndexError):
            return
        finally:
            c.close()

    def stop(self):
        self.done = True
        self.thread.join(timeout=5)
        self.sock.close()


def ask(conn, method, path):
    conn.request(method, path, body=b"{}" if method == "POST" else None)
    r = conn.getresponse()
    body = r.read()
    lengths = [v for k, v in r.getheaders() if k.lower() == "content-length"]
    return r.status, r.getheaders(), lengths, body


def check_client(f, be, client, host="127.0.0.1"):
    level = "debug" if host == "localhost" else "info"
    r = backend.start_router(CONFIG.format(port=be.port, client=client, host=host, level=level))
    client = f"{client} ({host})"
    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
    s, h, lengths, body = ask(conn, "POST", "/chunked")
    names = [k.lower() for k, _ in h]
    f.check(s == 200 and body == b"hello world" and lengths == ["11"]
            and "transfer-encoding" not in names and "x-trailer" not in names,
            f"{client}: a chunked answer is decoded and re-framed ({s} {body!r} {lengths} {names})")
    s, h, lengths, body = ask(conn, "GET", "/nolen")
    f.check(s == 200 and body == b"until the close" and lengths == ["15"],
            f"{client}: an answer delimited by the close ({s} {body!r} {lengths})")
    s, h, lengths, body = ask(conn, "GET", "/204")
    f.check(s == 204 and body == b"" and lengths == [],
            f"{client}: 204 without Content-Length ({s} {lengths})")
    s, h, lengths, body = ask(conn, "HEAD", "/head")
    f.check(s == 200 and body == b"" and lengths == ["1234"],
            f"{client}: HEAD keeps the backend's length, no body ({s} {lengths})")
    s, h, lengths, body = ask(conn, "GET", "/interim")
    names = [k.lower() for k, _ in h]
    f.check(s == 200 and body == b"ok" and "link" not in names,
            f"{client}: 1xx answers are skipped ({s} {body!r} {names})")
    before = be.accepts
    lookups = r.output().count("resolving localhost")
    got = [ask(conn, "POST", "/cl") for _ in range(50)]
    f.check(all(s == 200 and b == b"hello" and ln == ["5"] for s, _, ln, b in got),
            f"{client}: 50 answers with exactly one Content-Length: 5")
    f.check(be.accepts - before <= 1,
            f"{client}: 50 requests reuse the backend connection ({be.accepts - before} new)")
    conn.close()
    if host == "localhost":
        out = r.output()
        f.check(lookups >= 1 and out.count("resolving localhost") == lookups,
                f"{client}: the name was looked up ({lookups}x), and not again for 50 requests")
        f.check("cannot resolve" not in out, f"{client}: no resolver failure logged")
    f.check(r.stop() == 0, f"{client}: router exits 0")


def main():
    f = harness.Failures()
    be = Backend()
    try:
        for client in ("builtin", "libcurl"):
            check_client(f, be, client)
        check_client(f, be, "builtin", host="localhost")
    finally:
        be.stop()
    f.finish()


if __name__ == "__main__":
    main()
