#!/usr/bin/python3
"""A real, threaded HTTP/1.1 backend for integration tests (loopback only).

Run:  backend.py --port N [--name NAME] [--mode MODE] [--delay-ms N]

Every answer carries "X-Backend: NAME". What it does is chosen by the path
(or, for every path, by --mode):

  /health, /v2/health/ready   200 "ok"
  /_stats                      {"inflight": requests being answered, "requests": total
                               seen}, neither counting health probes nor /_stats (ask the
                               backend directly)
  /echo                        the request body back, byte-exact, same Content-Type
  /slow?ms=N                   sleep N ms, then the fixed answer
  /big?bytes=N&seed=S          N bytes of a deterministic pattern (see pattern())
  /status?code=N               that status with a small JSON body
  /header-len?name=H           {"len": length of header H's value, -1 when absent}
  /hop                         200 with hop-by-hop headers (Connection: keep-alive,
                               X-Hop-Secret; X-Hop-Secret, Keep-Alive,
                               Proxy-Authenticate) and the end-to-end X-End: 1
  /close                       close the connection without answering
  /reset                       reset the connection (RST) without answering
  /garbage                     write bytes that are not HTTP, then close
  anything else                the fixed answer: JSON {"backend", "method", "path",
                               "headers", "body_len", "body_sha256"}

--mode echo|slow|close|reset|garbage applies that behaviour to every path except
/health; --delay-ms adds a delay before every answer (except /health).
SIGTERM stops it and it exits 0.

Imported (with harness.py on sys.path), it also gives tests helpers:
start_backend() and start_router(), both returning harness.Proc objects with a
.port attribute, ready to serve.
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 64 * 1024 * 1024


def pattern(n, seed=0):
    """n bytes, deterministic in (n, seed); tests rebuild them to compare byte-exact."""
    block = hashlib.sha256(f"turnout-pattern-{seed}".encode()).digest() * 64  # 2 KiB
    reps = n // len(block) + 1
    return (block * reps)[:n]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "turnout-test-backend"
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet: tests read only failures
        pass

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if te.lower() == "chunked":
            chunks, total = [], 0
            for _ in range(1 << 20):
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length", "0") or "0")
        if n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n) if n else b""

    def _send(self, code, body, ctype="application/json", extra=None):
        if code < 200 or code in (204, 304):
            body = b""  # these statuses never carry a body (RFC 9110)
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.server.name)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _fixed(self, body):
        doc = {
            "backend": self.server.name,
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        self._send(200, json.dumps(doc).encode())

    def _abort(self, how):
        sock = self.connection
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "garbage":
            sock.sendall(b"\x00\x01NOT HTTP AT ALL\r\n\r\n\xff\xfe")
        self.close_connection = True
        try:
            sock.shutdown(socket.SHUT_RDWR) if how != "reset" else None
        except OSError:
            pass
        sock.close()

    def _handle(self):
        # Health probes and /_stats are not counted: tests count their own requests.
        if urllib.parse.urlsplit(self.path).path in ("/health", "/v2/health/ready", "/_stats"):
            self._handle_counted()
            return
        with self.server.lock:
            self.server.inflight += 1
            self.server.requests += 1
        try:
            self._handle_counted()
        finally:
            with self.server.lock:
                self.server.inflight -= 1

    def _handle_counted(self):
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self._send(400, b'{"error":"bad body"}')
            return
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        route = url.path
        if route in ("/health", "/v2/health/ready"):
            self._send(200, b"ok", "text/plain")
            return
        if route == "/_stats":
            with self.server.lock:
                doc = {"inflight": self.server.inflight, "requests": self.server.requests}
            self._send(200, json.dumps(doc).encode())
            return
        if self.server.mode:
            route = "/" + self.server.mode
        if self.server.delay_ms:
            time.sleep(self.server.delay_ms / 1000.0)
        if route == "/echo":
            self._send(200, body, self.headers.get("Content-Type", "application/octet-stream"))
        elif route == "/slow":
            time.sleep(int(q.get("ms", "1000")) / 1000.0)
            self._fixed(body)
        elif route == "/big":
            n = min(int(q.get("bytes", "0")), MAX_BODY)
            self._send(200, pattern(n, int(q.get("seed", "0"))), "application/octet-stream")
        elif route == "/status":
            code = int(q.get("code", "200"))
            self._send(code, json.dumps({"status": code}).encode())
        elif route == "/header-len":
            v = self.headers.get(q.get("name", ""))
            self._send(200, json.dumps({"len": -1 if v is None else len(v)}).encode())
        elif route == "/hop":
            # hop-by-hop response headers (RFC 9110 7.6.1), one named by Connection
            self._send(200, b'{"hop": true}', extra={
                "Connection": "keep-alive, X-Hop-Secret", "X-Hop-Secret": "1",
                "Keep-Alive": "timeout=5", "Proxy-Authenticate": "Basic", "X-End": "1"})
        elif route in ("/close", "/reset", "/garbage"):
            self._abort(route[1:])
        else:
            self._fixed(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def start_backend(name="backend", mode="", delay_ms=0, port=None, tls=None):
    """Start this program on a free loopback port; wait until it answers /health.

    tls=(cert, key) serves HTTPS (readiness is then a TLS handshake + port check).
    """
    import harness

    port = port or harness.free_port()
    argv = [sys.executable, os.path.abspath(__file__), "--port", str(port), "--name", name]
    if mode:
        argv += ["--mode", mode]
    if delay_ms:
        argv += ["--delay-ms", str(delay_ms)]
    if tls:
        argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    p = harness.Proc(argv, name=f"backend-{name}")
    p.port = port
    if tls:
        harness.wait_for(lambda: p.alive() and harness.port_open(port), what=f"{name} listening")
    else:
        harness.wait_http_ok(port, "/health", proc=p)
    return p


def make_cert(directory):
    """A self-signed certificate for 127.0.0.1 (openssl CLI); returns (cert, key) paths."""
    import subprocess

    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    return cert, key


def write_config(text, directory=None):
    """Write a YAML config into a fresh temp directory; return its path."""
    import harness

    path = os.path.join(directory or harness.tmpdir(), "turnout.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def start_router(config_text, port=None, admin_port=None, extra_yaml="", path=None):
    """Start turnout with config_text (format fields {port}, {admin_port} filled in).

    Returns the Proc with .port, .admin_port and .config (the file's path); waits
    until /status on the admin port answers.
    """
    import harness

    port = port or harness.free_port()
    admin_port = admin_port or harness.free_port()
    text = config_text.format(port=port, admin_port=admin_port) + extra_yaml
    path = path or write_config(text)
    if os.path.exists(path):
        with open(path, "w") as f:
            f.write(text)
    p = harness.Proc([harness.bin_path("turnout"), "-c", path], name="turnout")
    p.port, p.admin_port, p.config = port, admin_port, path
    harness.wait_http_ok(admin_port, "/status", proc=p)
    harness.wait_for(lambda: harness.port_open(port), what="router port open")
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="backend")
    ap.add_argument("--mode", default="", choices=["", "echo", "slow", "close", "reset", "garbage"])
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (and --tls-key)")
    ap.add_argument("--tls-key")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("backend.py: loopback addresses only")
    srv = Server((a.host, a.port), Handler)
    if a.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.name, srv.mode, srv.delay_ms = a.name, a.mode, a.delay_ms
    srv.lock, srv.inflight, srv.requests = threading.Lock(), 0, 0

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"backend {a.name} listening on {a.host}:{a.port}", flush=True)
    srv.serve_forever(poll_interval=0.1)
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
