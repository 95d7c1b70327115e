"""TLS through the real router (issue 8), with certificates made at test time by the
openssl CLI.

Listener: a Python ssl client and curl reach a backend through https; TLS 1.1 and
plain HTTP are refused; a key that does not match the certificate stops the start
with a message naming the files. Reload: SIGHUP (and turnoutctl reload) loads a renewed certificate for new
connections while an open keep-alive connection goes on working; a broken file on
reload is refused and the current certificate stays.
Upstream: an https:// endpoint is verified against upstream_tls.ca (200), refused
without it (502: the system store does not know the test CA), and reached with
verify: false.
"""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

CONFIG = """
listen: 127.0.0.1:{{port}}
workers: 2
admin:
  http: 127.0.0.1:{{admin_port}}
variants:
  blue: {{{{ endpoints: [{url}] }}}}
strategy: bluegreen
stable: blue
{extra}
"""


def new_cert(d, name):
    sub = os.path.join(d, name)
    os.makedirs(sub, exist_ok=True)
    return backend.make_cert(sub)


def client_ctx(ca, **kw):
    ctx = ssl.create_default_context(cafile=ca)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def fingerprint_of_file(cert):
    with open(cert) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


def peer_fingerprint(port, ca):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with client_ctx(ca).wrap_socket(s, server_hostname="127.0.0.1") as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest(), t.version()


def https_get(port, ca, path="/x", conn=None):
    c = conn or http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=client_ctx(ca))
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), body, c


def main():
    warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1 on purpose
    f = harness.Failures()
    d = harness.tmpdir()
    cert1, key1 = new_cert(d, "one")
    cert2, key2 = new_cert(d, "two")
    admin_sock = os.path.join(d, "admin.sock")
    live_cert, live_key = os.path.join(d, "live.pem"), os.path.join(d, "live.key")
    shutil.copy(cert1, live_cert)
    shutil.copy(key1, live_key)

    blue = backend.start_backend("blue")
    router = backend.start_router(CONFIG.format(
        url=f"http://127.0.0.1:{blue.port}",
        extra=f"tls:\n  cert: {live_cert}\n  key: {live_key}\n").replace(
            "admin:\n", f"admin:\n  socket: {admin_sock}\n"))
    port = router.port

    # A TLS client through the router to the backend.
    s, h, b, conn = https_get(port, cert1)
    f.check(s == 200 and h.get("x-turnout-variant") == "blue" and json.loads(b)["path"] == "/x",
            f"https GET through the router ({s} {b[:120]!r})")
    fp, version = peer_fingerprint(port, cert1)
    f.check(fp == fingerprint_of_file(cert1), "the listener presents tls.cert")
    f.check(version in ("TLSv1.2", "TLSv1.3"), f"negotiated {version}")
    # TLS 1.2 explicitly still works, with a forward-secret AEAD cipher.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        ctx = client_ctx(cert1, maximum_version=ssl.TLSVersion.TLSv1_2)
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as t:
            name = t.cipher()[0]
            f.check(t.version() == "TLSv1.2" and name.startswith("ECDHE-") and
                    ("GCM" in name or "CHACHA20" in name), f"TLS 1.2 cipher {name}")

    # TLS 1.1 is refused (the client may not even offer it: either way no session).
    refused = False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1"):
                pass
    except (ssl.SSLError, OSError):
        refused = True
    f.check(refused, "TLS 1.1 handshake refused")

    # curl, a second real client.
    if shutil.which("curl"):
        p = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", cert1,
                            "-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}",
                            f"https://127.0.0.1:{port}/x"],
                           capture_output=True, text=True, timeout=20)
        f.check(p.stdout.strip() == "200 0", f"curl over TLS ({p.stdout!r} {p.stderr!r})")
    else:
        print("curl not installed: curl check skipped")

    # Plain HTTP on the TLS port gets no HTTP answer from the backend.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        got = b""
        try:
            for _ in range(100):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    f.check(b"X-Backend" not in got and b'"backend"' not in got,
            f"plain HTTP on the TLS port not served ({got[:60]!r})")

    # Reload on SIGHUP: renewed certificate for new connections, the open one goes on.
    shutil.copy(cert2, live_cert + ".tmp")
    shutil.copy(key2, live_key + ".tmp")
    os.replace(live_key + ".tmp", live_key)
    os.replace(live_cert + ".tmp", live_cert)
    router.signal(signal.SIGHUP)
    harness.wait_for(lambda: "TLS certificate reloaded" in router.output(), timeout=10,
                     what="certificate reload logged")
    s, _, _, conn = https_get(port, cert1, conn=conn)  # same keep-alive connection
    f.check(s == 200, f"the connection opened before the reload still works ({s})")
    f.check(peer_fingerprint(port, cert2)[0] == fingerprint_of_file(cert2),
            "new connections get the renewed certificate")
    conn.close()

    # A broken file on reload: refused, the current certificate stays.
    with open(live_cert, "w") as fh:
        fh.write("not a certificate\n")
    router.signal(signal.SIGHUP)
    harness.wait_for(lambda: "the current certificate stays" in router.output(), timeout=10,
                     what="bad certificate refused on reload")
    f.check(peer_fingerprint(port, cert2)[0] == fingerprint_of_file(cert2),
            "after a failed reload the listener keeps the renewed certificate")
    f.check(https_get(port, cert2)[0] == 200, "still serving after the failed reload")

    # `turnoutctl reload` renews the certificate as SIGHUP does.
    shutil.copy(cert1, live_cert)
    shutil.copy(key1, live_key)
    p = subprocess.run([harness.bin_path("turnoutctl"), "-s", admin_sock, "--json", "reload"],
                       capture_output=True, text=True, timeout=20)
    f.check(p.returncode == 0 and json.loads(p.stdout).get("tls") == "certificate reloaded",
            f"turnoutctl reload renews the certificate ({p.stdout!r} {p.stderr!r})")
    f.check(peer_fingerprint(port, cert1)[0] == fingerprint_of_file(cert1),
            "new connections get the certificate of the admin reload")
    f.check(router.stop() == 0, "router exits 0 on SIGTERM")

    # A key that does not belong to the certificate: refused at start, naming both files.
    bad = harness.Proc([harness.bin_path("turnout"), "-c", backend.write_config(CONFIG.format(
        url=f"http://127.0.0.1:{blue.port}",
        extra=f"tls:\n  cert: {cert1}\n  key: {key2}\n").format(
            port=harness.free_port(), admin_port=harness.free_port()))], name="turnout-badkey")
    harness.wait_for(lambda: not bad.alive(), timeout=10, what="mismatched key refused")
    f.check(bad.stop() != 0 and "does not match" in bad.output() and key2 in bad.output(),
            f"mismatched key: clear error ({bad.output()[-300:]!r})")

    # Upstream https: verified with upstream_tls.ca, refused without, allowed with verify: false.
    tb = backend.start_backend("secure", tls=(cert1, key1))
    url = f"https://127.0.0.1:{tb.port}"
    cases = [
        (f"upstream_tls:\n  ca: {cert1}\n", 200, "verified against upstream_tls.ca"),
        ("health:\n  enabled: false\n", 502, "unknown CA refused (verification on by default)"),
        ("upstream_tls:\n  verify: false\nhealth:\n  enabled: false\n", 200, "verify: false"),
    ]
    for extra, want, what in cases:
        r = backend.start_router(CONFIG.format(url=url, extra=extra))
        s, h, b = harness.http_request(r.port, "GET", "/x")
        ok = s == want and (want != 200 or json.loads(b)["backend"] == "secure")
        f.check(ok, f"https upstream, {what} ({s} {b[:200]!r})")
        f.check(r.stop() == 0, "router exits 0")
    f.check(tb.stop() == 0, "tls backend exits 0")
    f.check(blue.stop() == 0, "backend exits 0")
    f.finish()


if __name__ == "__main__":
    main()
