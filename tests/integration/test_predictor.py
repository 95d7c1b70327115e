"""turnout-predictor end to end: real processes, real sockets, the committed models.

Starts digits-v1 and digits-v2 predictors on loopback, classifies the whole
held-out set over HTTP (single samples and batches, flat and nested data),
compares with the golden outputs, exercises every kind of bad input, checks
the metrics (promtool and exact counts), --sha256, the curl examples of
docs/PREDICTOR.md, and that SIGTERM exits 0.
"""

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

F = harness.Failures()
PIXELS, LABELS = harness.load_heldout()
DOC = os.path.join(harness.SRC_DIR, "docs", "PREDICTOR.md")


def golden(version):
    with open(os.path.join(harness.MODELS_DIR, f"digits-v{version}.golden.json")) as f:
        return json.load(f)


class Client:
    """One keep-alive connection; reconnects if the server closed it."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return r.status, data
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def infer_body(rows, nested, rid=None, outputs=None):
    data = rows if nested else [v for r in rows for v in r]
    body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [len(rows), 64],
                        "data": data}],
            "parameters": {"ignored": True}}
    if rid is not None:
        body["id"] = rid
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return body


def classify(client, path, batches):
    """Classify the held-out set in batches of the given sizes (cycled); returns labels, probs."""
    labels, probs, i, b = [], [], 0, 0
    while i < len(PIXELS):
        n = min(batches[b % len(batches)], len(PIXELS) - i)
        rows = PIXELS[i:i + n]
        rid = f"req-{i}"
        st, data = client.request("POST", path, infer_body(rows, nested=b % 2 == 1, rid=rid))
        if st != 200:
            raise AssertionError(f"infer rows {i}..{i + n}: HTTP {st}: {data[:300]!r}")
        resp = json.loads(data)
        if resp.get("id") != rid:
            raise AssertionError(f"id not echoed: {resp.get('id')!r} != {rid!r}")
        outs = {o["name"]: o for o in resp["outputs"]}
        lab, pr = outs["label"], outs["probabilities"]
        if lab["shape"] != [n] or pr["shape"] != [n, 10] or lab["datatype"] != "INT64" \
                or pr["datatype"] != "FP32":
            raise AssertionError(f"bad output shapes/types: {lab['shape']} {pr['shape']}")
        labels += lab["data"]
        probs += [pr["data"][k * 10:(k + 1) * 10] for k in range(n)]
        i += n
        b += 1
    return labels, probs


def check_model(p, version, min_acc, batches):
    path = f"/v2/models/digits/versions/{version}/infer"
    c = Client(p.port)
    labels, probs = classify(c, path, batches)
    c.close()
    g = golden(version)
    acc = sum(1 for a, b in zip(labels, LABELS) if a == b) / len(LABELS)
    print(f"digits-v{version}: accuracy {acc:.4f} over HTTP ({len(labels)} samples)")
    F.check(acc >= min_acc, f"v{version} accuracy {acc:.4f} >= {min_acc}")
    same = sum(1 for a, b in zip(labels, g["labels"]) if a == b)
    F.check(same == len(LABELS), f"v{version} labels equal golden ({same}/{len(LABELS)})")
    maxdiff = max(abs(a - b) for pr, gp in zip(probs, g["probabilities"]) for a, b in zip(pr, gp))
    print(f"digits-v{version}: max |p - golden| = {maxdiff:.3g}")
    F.check(maxdiff <= 1e-5, f"v{version} probabilities within 1e-5 of golden ({maxdiff:.3g})")
    return labels


def metrics(port):
    st, _, data = harness.http_request(port, "GET", "/metrics")
    assert st == 200, st
    return data.decode()


def metric_value(text, name, labels=""):
    m = re.search(r"^" + re.escape(name + labels) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def requests_total(text):
    return sum(float(v) for v in re.findall(r"^predictor_requests_total\{[^}]*\} (\S+)$",
                                            text, re.M))


def promtool_ok(text, what):
    promtool = shutil.which("promtool")
    if not promtool:
        F.check(False, "promtool is installed")
        return
    r = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=30)
    F.check(r.returncode == 0, f"promtool check metrics ({what}): {r.stdout!r} {r.stderr!r}")


def check_labels_metric(port, labels):
    text = metrics(port)
    for k in range(10):
        got = metric_value(text, "predictor_predicted_label_total", f'{{label="{k}"}}')
        want = labels.count(k)
        F.check(got == want, f"predicted_label_total{{label={k}}} {got} == {want}")
    conf = metric_value(text, "predictor_mean_confidence")
    F.check(conf is not None and 0.5 < conf <= 1.0, f"mean confidence {conf} in (0.5,1]")
    F.check(metric_value(text, "predictor_inputs_total") == 64 * len(PIXELS),
            "inputs_total counts every pixel sent")


BAD = [
    # (what, method, path, body, status, substring of the error)
    ("malformed JSON", "POST", "/v2/models/digits/infer", b'{"inputs": [', 400,
     "malformed JSON at line 1, column"),
    ("wrong datatype", "POST", "/v2/models/digits/infer",
     {"inputs": [{"name": "pixels", "datatype": "INT64", "shape": [1, 64], "data": [0] * 64}]},
     400, "inputs[0].datatype: expected FP32, got INT64"),
    ("wrong shape", "POST", "/v2/models/digits/infer",
     {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 63], "data": [0] * 63}]},
     400, "inputs[0].shape: expected [N,64], got [1,63]"),
    ("wrong element count", "POST", "/v2/models/digits/infer",
     {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, 64], "data": [0] * 127}]},
     400, "inputs[0].data: shape [2,64] needs 128 values, got 127"),
    ("NaN", "POST", "/v2/models/digits/infer",
     {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                  "data": [float("nan")] + [0] * 63}]},
     400, "NaN and Infinity are not valid JSON numbers"),
    ("Infinity", "POST", "/v2/models/digits/infer",
     {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                  "data": [0] * 63 + [float("-inf")]}]},
     400, "NaN and Infinity"),
    ("out of FP32 range", "POST", "/v2/models/digits/infer",
     b'{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,64],"data":[' +
     b"0," * 10 + b"1e300" + b",0" * 53 + b"]}]}", 400, "inputs[0].data[10]: 1e+300 is out"),
    ("missing inputs", "POST", "/v2/models/digits/infer", {"id": "x"}, 400, "inputs: missing"),
    ("unknown input name", "POST", "/v2/models/digits/infer",
     {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}]},
     400, "inputs[0].name: unknown input 'image'"),
    ("string value", "POST", "/v2/models/digits/infer",
     {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                  "data": ["0"] * 64}]},
     400, "inputs[0].data[0]: expected a number, got a string"),
    ("zero batch", "POST", "/v2/models/digits/infer",
     {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [0, 64], "data": []}]},
     400, "batch must be >= 1"),
    ("unknown output", "POST", "/v2/models/digits/infer",
     infer_body([PIXELS[0]], False, outputs=["logits"]), 400,
     "outputs[0].name: unknown output 'logits'"),
    ("empty body", "POST", "/v2/models/digits/infer", b"", 400, "malformed JSON"),
    ("unknown model", "POST", "/v2/models/mnist/infer", infer_body([PIXELS[0]], False), 404,
     "unknown model 'mnist'"),
    ("unknown model metadata", "GET", "/v2/models/mnist", None, 404, "unknown model 'mnist'"),
    ("unknown version", "POST", "/v2/models/digits/versions/9/infer",
     infer_body([PIXELS[0]], False), 404, "has no version '9'"),
    ("unknown version ready", "GET", "/v2/models/digits/versions/9/ready", None, 404,
     "has no version '9'"),
    ("no such endpoint", "GET", "/v2/nothing/here", None, 404, "no such endpoint"),
    ("GET on infer", "GET", "/v2/models/digits/infer", None, 405, "method not allowed"),
    ("POST on health", "POST", "/v2/health/live", b"{}", 405, "method not allowed"),
    ("DELETE on model", "DELETE", "/v2/models/digits", None, 405, "method not allowed"),
    # TRACE is refused by the HTTP/1.1 front end (router/front.c) before routing
    ("TRACE on server metadata", "TRACE", "/v2", None, 501, "is not served"),
]


def check_bad_inputs(p):
    """Every bad request gets its status and a JSON error naming the problem; returns codes sent."""
    c = Client(p.port)
    codes = []
    for what, method, path, body, status, needle in BAD:
        st, data = c.request(method, path, body)
        codes.append(st)
        try:
            err = json.loads(data).get("error", "")
        except ValueError:
            err = None
        F.check(st == status, f"{what}: HTTP {st} == {status}")
        F.check(err is not None and needle in err, f"{what}: error {err!r} contains {needle!r}")
        # the server keeps serving, on the same connection when it kept it open
        st2, _ = c.request("POST", "/v2/models/digits/infer", infer_body([PIXELS[1]], False))
        codes.append(st2)
        F.check(st2 == 200, f"{what}: a good request right after still answers 200 ({st2})")
    c.close()
    return codes


def check_requested_outputs(p):
    st, _, data = harness.http_request(p.port, "POST", "/v2/models/digits/infer",
                                    infer_body(PIXELS[:3], True, outputs=["label"]))
    resp = json.loads(data)
    names = [o["name"] for o in resp.get("outputs", [])]
    F.check(st == 200 and names == ["label"], f"only the requested output is sent ({names})")
    F.check(resp.get("model_name") == "digits" and resp.get("model_version") == "1",
            "model_name and model_version in the response")
    F.check("id" not in resp, "no id in the response when the request had none")
    return 1


def check_metadata(p):
    n = 0
    for path, want in [("/v2/health/live", {"live": True}), ("/v2/health/ready", {"ready": True}),
                       ("/v2/models/digits/ready", {"name": "digits", "ready": True}),
                       ("/v2/models/digits/versions/1/ready", {"name": "digits", "ready": True})]:
        st, _, data = harness.http_request(p.port, "GET", path)
        n += 1
        F.check(st == 200 and json.loads(data) == want, f"GET {path}: {st} {data!r}")
    st, _, data = harness.http_request(p.port, "GET", "/v2")
    n += 1
    # HEAD: headers only; a body would be read as the start of the next response
    out = raw_request(p.port, b"HEAD /v2 HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, rest = out.partition(b"\r\n\r\n")
    n += 2
    F.check(head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % len(data) in head
            and rest.startswith(b"HTTP/1.1 200") and rest.endswith(data),
            f"HEAD /v2 then GET /v2 on one connection: {out!r}")
    for path in ["/v2/models/digits", "/v2/models/digits/versions/1"]:
        st, _, data = harness.http_request(p.port, "GET", path)
        n += 1
        m = json.loads(data)
        ok = (st == 200 and m.get("name") == "digits" and m.get("versions") == ["1"]
              and m.get("platform") == "onnx"
              and m.get("inputs") == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
              and {"name": "label", "datatype": "INT64", "shape": [-1]} in m.get("outputs", [])
              and {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}
              in m.get("outputs", []))
        F.check(ok, f"model metadata {path}: {data!r}")
    return n


def raw_request(port, raw):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if sum(len(c) for c in chunks) > 1 << 20:
                break
    return b"".join(chunks)


def check_framing(p):
    """Two Content-Length headers: 400 and close, and the smuggled request is not executed."""
    smuggled = b"GET /v2/models/mnist HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = (b"POST /v2/health/ready HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
           b"Content-Length: " + str(len(smuggled)).encode() + b"\r\n\r\n" + smuggled)
    out = raw_request(p.port, raw)
    F.check(out.startswith(b"HTTP/1.1 400"), f"duplicate Content-Length -> 400 ({out[:40]!r})")
    F.check(out.count(b"HTTP/1.1 ") == 1, "the smuggled request is not answered")
    return 1


def read_to_eof(s, limit=1 << 20):
    """Everything the server sends until it closes (bounded in bytes and by the socket timeout)."""
    chunks, n = [], 0
    while n <= limit:
        b = s.recv(65536)
        if not b:
            return b"".join(chunks), True
        chunks.append(b)
        n += len(b)
    return b"".join(chunks), False


def parse_response(raw):
    """(status, headers with lower-case names, body) of one HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/1.1 ") else None
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def split_responses(raw, limit=16):
    """The statuses of back-to-back responses, each framed by its Content-Length."""
    codes = []
    while raw and len(codes) < limit:
        st, hdrs, rest = parse_response(raw)
        n = int(hdrs.get("content-length", "0"))
        codes.append(st)
        raw = rest[n:]
    return codes


def check_json_413(raw, closed, what, size):
    st, hdrs, body = parse_response(raw)
    F.check(st == 413, f"{what}: HTTP {st} == 413 ({raw[:60]!r})")
    F.check(hdrs.get("content-type") == "application/json",
            f"{what}: Content-Type {hdrs.get('content-type')!r} is application/json")
    F.check(hdrs.get("connection", "").lower() == "close", f"{what}: Connection: close")
    F.check(hdrs.get("content-length") == str(len(body)),
            f"{what}: the whole body arrived ({len(body)} bytes, "
            f"Content-Length {hdrs.get('content-length')})")
    try:
        err = json.loads(body).get("error", "")
    except ValueError:
        err = ""
    F.check(str(size) in err and "65536" in err and "max_body" in err,
            f"{what}: the JSON error names the size and the limit ({body[:160]!r})")
    F.check(closed, f"{what}: the server closed the connection after the 413")


def infer_head(length, extra=b""):
    return (b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n" + extra +
            b"Content-Length: " + str(length).encode() + b"\r\n\r\n")


def padded_body(size):
    """A valid infer body of exactly size bytes (JSON allows trailing spaces)."""
    b = json.dumps(infer_body(PIXELS[:3], False)).encode()
    assert len(b) <= size, (len(b), size)
    return b + b" " * (size - len(b))


def check_body_limit():
    """A body over --max-body gets a JSON 413 and close; the server keeps serving."""
    p = harness.start_predictor("digits-v1.onnx", name="digits", threads=1,
                                extra=["--max-body", "64k"])
    before = metrics(p.port)
    big = json.dumps(infer_body(PIXELS * 3, False)).encode()
    assert len(big) > 64 * 1024, len(big)
    # 1. The whole oversized body is sent before anything is read.
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(infer_head(len(big)) + big)
        raw, closed = read_to_eof(s)
    check_json_413(raw, closed, "Content-Length over the limit, body sent", len(big))
    # 2. Only the head: the answer comes without waiting for the body.
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(infer_head(20000000))
        raw, closed = read_to_eof(s)
    check_json_413(raw, closed, "Content-Length over the limit, head only", 20000000)
    # 3. On a keep-alive connection, after a request that was answered.
    small = json.dumps(infer_body(PIXELS[:1], False)).encode()
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(infer_head(len(small)) + small)
        first = b""
        while b"\r\n\r\n" not in first or len(parse_response(first)[2]) < \
                int(parse_response(first)[1].get("content-length", "0")):
            b = s.recv(65536)
            if not b:
                break
            first += b
        F.check(parse_response(first)[0] == 200, "keep-alive: the first request gets 200")
        s.sendall(infer_head(len(big)) + big[:1000])
        raw, closed = read_to_eof(s)
    check_json_413(raw, closed, "Content-Length over the limit after a keep-alive request",
                   len(big))
    # 4. A head arriving in pieces (evhttp has read its first lines already).
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = infer_head(len(big))
        for piece in (head[:20], head[20:60], head[60:]):
            s.sendall(piece)
        raw, closed = read_to_eof(s)
    check_json_413(raw, closed, "Content-Length over the limit, head in pieces", len(big))
    # 5. A chunked body past the limit gets the same JSON 413 (the front end de-chunks).
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" +
                  b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n")
        raw, closed = read_to_eof(s)
    st, hdrs, body = parse_response(raw)
    F.check(st == 413 and hdrs.get("content-type") == "application/json" and closed,
            f"a chunked body over the limit: JSON 413 and close ({raw[:80]!r})")
    # 6. The server still serves; bodies at and just under the limit work.
    st, _, _ = harness.http_request(p.port, "POST", "/v2/models/digits/infer", small)
    F.check(st == 200, f"an infer after the 413s gets 200 ({st})")
    for size in (64 * 1024 - 1, 64 * 1024):
        st, hdrs, data = harness.http_request(p.port, "POST", "/v2/models/digits/infer",
                                              padded_body(size))
        F.check(st == 200, f"a body of {size} bytes (limit 65536) gets 200 ({st} {data[:80]!r})")
    # 7. Pipelined keep-alive requests, one of them at the limit, all answered in order.
    reqs = [infer_head(len(small)) + small,
            b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n",
            infer_head(64 * 1024) + padded_body(64 * 1024),
            b"GET /v2/models/digits HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b"".join(reqs))
        raw, closed = read_to_eof(s)
    codes = split_responses(raw)
    F.check(codes == [200] * 4 and closed,
            f"pipelined keep-alive requests: {codes} == 4 x 200, then close")
    # 8. The JSON 413s are counted (the chunked one too).
    after = metrics(p.port)
    n413 = (metric_value(after, "predictor_requests_total", '{code="413"}') or 0) - \
        (metric_value(before, "predictor_requests_total", '{code="413"}') or 0)
    F.check(n413 == 5, f"predictor_requests_total{{code=\"413\"}} grew by {n413} == 5")
    F.check(p.stop() == 0, "predictor (--max-body) exits 0 on SIGTERM")


def check_connection_cap():
    """--max-connections: one connection too many gets 503 JSON; a closed one frees its place."""
    p = harness.start_predictor("digits-v1.onnx", name="digits", threads=1,
                                extra=["--max-connections", "3"])
    # start_predictor's readiness probe used (and closed) one connection: wait until it is gone
    held = [Client(p.port) for _ in range(3)]

    def all_admitted():
        for c in held:
            c.close()
        return all(c.request("GET", "/v2/health/live")[0] == 200 for c in held)

    harness.wait_for(all_admitted, timeout=10, what="3 connections admitted")
    st, _, data = harness.http_request(p.port, "GET", "/v2/health/live")
    err = json.loads(data).get("error", "") if st == 503 else ""
    F.check(st == 503 and "too many client connections" in err,
            f"a 4th connection gets 503 too many connections ({st} {data!r})")
    held[0].close()
    harness.wait_for(lambda: harness.http_request(p.port, "GET", "/v2/health/live")[0] == 200,
                     timeout=10, what="a place freed by a closed connection")
    for c in held[1:]:
        st, _ = c.request("GET", "/v2/health/ready")
        F.check(st == 200, f"admitted connections keep working ({st})")
        c.close()
    # 150 connections come and go: none may stay counted once closed
    for i in range(150):
        harness.wait_for(lambda: harness.http_request(p.port, "GET", "/v2/health/live")[0]
                         == 200, timeout=10, what=f"fresh connection {i} admitted")
    harness.wait_for(all_admitted, timeout=10, what="3 connections admitted after churn")
    for c in held:
        c.close()
    F.check(p.stop() == 0, "predictor (--max-connections) exits 0 on SIGTERM")


def check_sha256():
    model = os.path.join(harness.MODELS_DIR, "digits-v1.onnx")
    with open(model, "rb") as f:
        real = hashlib.sha256(f.read()).hexdigest()
    wrong = "0" * 64
    port = harness.free_port()
    r = subprocess.run([harness.bin_path("turnout-predictor"), "--model", model, "--name", "d",
                        "--listen", f"127.0.0.1:{port}", "--sha256", wrong],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    err = r.stderr.decode()
    F.check(r.returncode == 1, f"--sha256 mismatch refuses to start (exit {r.returncode})")
    F.check(wrong in err and real in err and "sha256 mismatch" in err,
            f"the refusal names both hashes: {err!r}")
    F.check(not harness.port_open(port), "nothing listens after a refused start")
    p = harness.start_predictor("digits-v1.onnx", name="d", threads=1,
                                extra=["--sha256", real.upper()])
    F.check(p.alive(), "the right --sha256 (any case) starts")
    F.check(p.stop() == 0, "predictor (--sha256) exits 0 on SIGTERM")

    # --sha256 card: the hash from the model card beside the model
    p = harness.start_predictor("digits-v2.onnx", name="d", threads=1, extra=["--sha256", "card"])
    F.check(p.alive(), "--sha256 card starts with the committed card")
    F.check(p.stop() == 0, "predictor (--sha256 card) exits 0 on SIGTERM")
    d = harness.tmpdir()
    shutil.copy(model, os.path.join(d, "digits-v1.onnx"))
    with open(os.path.join(harness.MODELS_DIR, "digits-v1.md")) as f:
        card = f.read()
    tampered = real[:10] + ("0" if real[10] != "0" else "1") + real[11:]
    assert real in card
    argv = [harness.bin_path("turnout-predictor"), "--model", os.path.join(d, "digits-v1.onnx"),
            "--name", "d", "--listen", f"127.0.0.1:{port}", "--sha256", "card"]
    r = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    F.check(r.returncode == 1 and b"digits-v1.md: No such file" in r.stderr,
            f"--sha256 card without a card refuses ({r.returncode}, {r.stderr!r})")
    with open(os.path.join(d, "digits-v1.md"), "w") as f:
        f.write(card.replace(real, tampered))
    r = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    err = r.stderr.decode()
    F.check(r.returncode == 1 and tampered in err and real in err and "digits-v1.md" in err,
            f"--sha256 card with a wrong card refuses, naming both hashes and the card: {err!r}")
    shutil.rmtree(d)


def check_port_in_use(p):
    """A second predictor on a port already served refuses to start (SO_REUSEPORT would share)."""
    model = os.path.join(harness.MODELS_DIR, "digits-v1.onnx")
    r = subprocess.run([harness.bin_path("turnout-predictor"), "--model", model, "--name", "d",
                        "--listen", f"127.0.0.1:{p.port}"],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    F.check(r.returncode == 1 and b"Address already in use" in r.stderr,
            f"a second predictor on a busy port refuses to start ({r.returncode}, {r.stderr!r})")


def check_concurrent(p, version):
    """8 client threads at once, fresh and kept-alive connections: every answer right."""
    g = golden(version)["labels"]
    errors = []

    def worker(k):
        c = Client(p.port)
        try:
            for i in range(k, len(PIXELS), 8):
                if i % 3 == 0:
                    st, _, data = harness.http_request(p.port, "POST",
                                                       "/v2/models/digits/infer",
                                                       infer_body([PIXELS[i]], False, rid=str(i)))
                else:
                    st, data = c.request("POST", "/v2/models/digits/infer",
                                         infer_body([PIXELS[i]], True, rid=str(i)))
                resp = json.loads(data) if st == 200 else {}
                outs = {o["name"]: o["data"] for o in resp.get("outputs", [])}
                if st != 200 or resp.get("id") != str(i) or outs.get("label") != [g[i]]:
                    errors.append(f"sample {i}: {st} {data[:120]!r}")
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            errors.append(repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    F.check(not any(t.is_alive() for t in threads), "concurrent clients finished")
    F.check(not errors, f"concurrent clients all answered right ({errors[:3]})")


def check_flags():
    b = harness.bin_path("turnout-predictor")
    r = subprocess.run([b, "--help"], capture_output=True, timeout=30)
    F.check(r.returncode == 0 and b"--model FILE" in r.stdout, "--help prints usage, exit 0")
    r = subprocess.run([b, "--version-info"], capture_output=True, timeout=30)
    F.check(r.returncode == 0 and r.stdout.startswith(b"turnout-predictor "), "--version-info")
    model = os.path.join(harness.MODELS_DIR, "digits-v1.onnx")
    for extra, needle in [(["--threads", "0"], b"--threads 0"),
                          (["--max-body", "12q"], b"--max-body 12q"),
                          (["--input-range", "16:0"], b"--input-range 16:0"),
                          (["--name", "a/b"], b"--name a/b"),
                          (["--listen", "nowhere"], b"--listen nowhere"),
                          (["--max-connections", "0"], b"--max-connections 0")]:
        argv = [b, "--model", model, "--name", "d", "--listen", "127.0.0.1:1"] + extra
        r = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        F.check(r.returncode == 2 and needle in r.stderr,
                f"bad flag {extra}: exit {r.returncode}, {r.stderr[:120]!r}")
    r = subprocess.run([b, "--model", "/nonexistent.onnx", "--name", "d", "--listen",
                        "127.0.0.1:1"], capture_output=True, timeout=30)
    F.check(r.returncode == 1 and b"/nonexistent.onnx" in r.stderr,
            f"missing model file: exit {r.returncode}, {r.stderr[:160]!r}")


def doc_curl_blocks():
    with open(DOC) as f:
        text = f.read()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [b for b in blocks if "curl" in b]


def check_doc_examples(p):
    """The curl examples of docs/PREDICTOR.md run as written (port substituted)."""
    blocks = doc_curl_blocks()
    F.check(len(blocks) >= 8, f"docs/PREDICTOR.md has curl examples ({len(blocks)})")
    n, out = 0, b""
    for b in blocks:
        script = b.replace("127.0.0.1:9001", f"127.0.0.1:{p.port}")
        r = subprocess.run(["sh", "-e", "-c", script], capture_output=True, timeout=60,
                           cwd=harness.SRC_DIR)
        n += script.count("curl ")
        out += r.stdout
        F.check(r.returncode == 0 and r.stdout.strip(),
                f"doc example runs: {b.strip()[:80]!r}: exit {r.returncode} {r.stderr[:200]!r}")
    # and they print what the doc says they print
    for needle in [b'{"live":true}', b'"platform":"onnx"', b'"id":"sample-0"',
                   b'{"name":"label","datatype":"INT64","shape":[1],"data":[7]}',
                   b'{"name":"label","datatype":"INT64","shape":[2],"data":[6,3]}',
                   b'{"error":"inputs[0].shape: expected [N,64], got [1,63]"}', b"\n404\n",
                   b'predictor_requests_total{code="200"}']:
        F.check(needle in out, f"doc examples print {needle!r}")
    return n


def main():
    v1 = harness.start_predictor("digits-v1.onnx", name="digits", version="1", threads=2,
                                 extra=["--input-range", "0:16"])
    v2 = harness.start_predictor("digits-v2.onnx", name="digits", version="2", threads=2)

    # Held-out set: v1 one sample per request; v2 in batches of several sizes.
    m0 = metrics(v1.port)
    labels1 = check_model(v1, 1, 0.96, [1])
    check_labels_metric(v1.port, labels1)
    check_model(v2, 2, 0.98, [1, 7, 32, 100, 64])
    m1 = metrics(v1.port)
    F.check(requests_total(m1) - requests_total(m0) == len(PIXELS) + 2,
            f"v1 request counter counts every request "
            f"({requests_total(m1) - requests_total(m0)} == {len(PIXELS) + 2})")
    bs = metric_value(m1, "predictor_batch_size_count")
    F.check(bs == len(PIXELS), f"batch_size_count {bs} == {len(PIXELS)} single-sample runs")
    dur = metric_value(m1, "predictor_inference_duration_seconds_count")
    F.check(dur == len(PIXELS), f"inference_duration_seconds_count {dur} == {len(PIXELS)}")
    promtool_ok(m1, "after the held-out set")

    # Metadata, bad input, requested outputs, framing; then exact counts per code.
    before = metrics(v1.port)
    sent = {}
    for code in check_bad_inputs(v1):
        sent[code] = sent.get(code, 0) + 1
    sent[200] = sent.get(200, 0) + check_requested_outputs(v1) + check_metadata(v1)
    sent[400] = sent.get(400, 0) + check_framing(v1)
    oor0 = metric_value(before, "predictor_inputs_out_of_range_total")
    row = list(PIXELS[0])
    row[0], row[1], row[2] = 17, -1, 16  # two outside 0..16, one on the edge
    st, _, _ = harness.http_request(v1.port, "POST", "/v2/models/digits/infer",
                                    infer_body([row], False))
    sent[200] += 1
    F.check(st == 200, "a request with out-of-range pixels is still answered")
    after = metrics(v1.port)
    sent[200] += 1  # the scrape of `before`
    for code, n in sorted(sent.items()):
        delta = (metric_value(after, "predictor_requests_total", f'{{code="{code}"}}') or 0) - \
            (metric_value(before, "predictor_requests_total", f'{{code="{code}"}}') or 0)
        F.check(delta == n, f"predictor_requests_total{{code=\"{code}\"}} grew by {delta} == {n}")
    oor = metric_value(after, "predictor_inputs_out_of_range_total") - oor0
    F.check(oor == 2, f"inputs_out_of_range_total grew by {oor} == 2")
    promtool_ok(after, "after bad input")

    check_concurrent(v2, 2)
    check_doc_examples(v1)
    check_port_in_use(v1)
    check_body_limit()
    check_connection_cap()
    check_flags()
    check_sha256()

    F.check(v1.stop() == 0, "predictor v1 exits 0 on SIGTERM")
    F.check(v2.stop() == 0, "predictor v2 exits 0 on SIGTERM")
    F.finish()


if __name__ == "__main__":
    main()
