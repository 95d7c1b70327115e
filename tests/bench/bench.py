"""bench.py - Turnout beside HAProxy, nginx and a Flask + PyTorch server (issue 9).

Run it through tests/bench/run.sh, which raises the open-file limit and builds
the binaries if needed. Everything happens on 127.0.0.1 in this one process:
every server is started in the foreground with its own temporary config and
prefix, on ports the kernel chose free, and stopped whatever happens (atexit
and signal handlers kill each one's process group). wrk is the client
(post.lua: a 0.4 KB KServe V2 JSON infer body, POSTed on 50 keep-alive
connections); rounds of the peers of one scenario are interleaved (A B C A B C
...), and each peer's figures are medians over the rounds.

Scenarios, each at 1 and 2 threads for every peer (turnout workers, HAProxy
nbthread, nginx worker_processes, turnout-predictor --threads, Flask workers):
  canary     turnout canary 10% | HAProxy 90/10 weights | nginx split_clients
             90/10 with keep-alive upstreams | direct to a backend (the floor)
  shadow     turnout shadow 100% with compare rules | nginx mirror
  slowshadow turnout live p99 with a 50 ms-slow shadow backend | without shadow
  latency    one connection (wrk -c1 -t1): turnout | direct, median latency
  idle       10,000 idle keep-alive connections to turnout: RSS, still served
  predictor  turnout-predictor digits-v2 | nginx return 200 (same request
             size) | Flask + PyTorch (flask_server.py), single-sample requests
The proxy backends are nginx `return 200` servers answering a fixed V2 JSON
body, so the proxy is the bottleneck; the slow shadow backend is nginx with the
echo module's non-blocking echo_sleep 0.05 (libnginx-mod-http-echo, which
Debian's nginx-light depends on).

The result is a markdown table written into docs/BENCHMARKS.md between the
markers below (reruns replace it), and printed.
"""

import argparse
import atexit
import datetime
import http.client
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
BEGIN = "<!-- bench:begin (written by tests/bench/run.sh; edits here are replaced) -->"
END = "<!-- bench:end -->"
INFER_PATH = "/v2/models/digits/infer"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
CONNS = 50
IDLE_CONNS = 10000
SLOW_THINK_MS = 100  # slow-shadow scenario: 50 connections x 1 request per ~100 ms
MIB = 1024 * 1024

# One sample of the digits set (sklearn load_digits, index 3, label 3): raw 0..16 intensities.
PIXELS = [0, 0, 7, 15, 13, 1, 0, 0, 0, 8, 13, 6, 15, 4, 0, 0, 0, 2, 1, 13, 13, 0, 0, 0, 0, 0, 2,
          15, 11, 1, 0, 0, 0, 0, 0, 1, 12, 12, 1, 0, 0, 0, 0, 0, 1, 10, 8, 0, 0, 0, 8, 4, 5, 14,
          9, 0, 0, 0, 7, 13, 13, 9, 0, 0]

# The fixed answer of the proxy backends: what a digits predictor would say.
BACKEND_ANSWER = json.dumps({
    "model_name": "digits", "model_version": "2", "id": "bench-request-000000000001",
    "outputs": [
        {"name": "label", "shape": [1], "datatype": "INT64", "data": [3]},
        {"name": "probabilities", "shape": [1, 10], "datatype": "FP32",
         "data": [1e-05, 2e-05, 0.0003, 0.9991, 1e-05, 0.0002, 1e-05, 0.0001, 0.0002, 0.0001]},
    ]}, separators=(",", ":"))

_procs = []
_tmp_root = None
_pidfile = None  # run.sh's record of our process groups, for its EXIT trap


def log(msg):
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def infer_body():
    """The 0.4 KB V2 infer request: 64 FP32 pixels of one digit, one sample."""
    body = json.dumps({
        "id": "bench-request-000000000001",
        "parameters": {"sample": "sklearn-digits-3"},
        "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                    "data": [float(p) for p in PIXELS]}]}, separators=(",", ":"))
    assert 390 <= len(body) <= 420, len(body)
    return body.encode()


# ---------------------------------------------------------------- processes


class Server:
    """A server process in its own process group, output to a log file."""

    def __init__(self, name, argv, port, cwd=None, stop_signal=signal.SIGTERM):
        self.name = name
        self.stop_signal = stop_signal
        self.port = port
        self.logpath = os.path.join(_tmp_root, f"{name}.log")
        self.log = open(self.logpath, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
        self.exit_code = None
        _procs.append(self)
        if _pidfile:
            with open(_pidfile, "a") as f:
                f.write(f"{self.p.pid}\n")

    def alive(self):
        return self.p.poll() is None

    def output(self, limit=4000):
        if not self.log.closed:
            self.log.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")[-limit:]

    def stop(self, timeout=15):
        """stop_signal, wait, then SIGKILL the whole group; returns the exit code."""
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, self.stop_signal)
            except ProcessLookupError:
                pass
        try:
            self.exit_code = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name} ignored signal {self.stop_signal} for {timeout}s; killing it")
            self.exit_code = "killed"
        try:
            os.killpg(self.p.pid, signal.SIGKILL)  # stragglers (nginx workers, forks)
        except (ProcessLookupError, PermissionError):
            pass
        if self.exit_code == "killed":
            self.p.wait()
        self.log.close()
        if self in _procs:
            _procs.remove(self)
        return self.exit_code


def cleanup():
    for s in list(_procs):
        s.stop(timeout=5)
    if _tmp_root and not os.environ.get("BENCH_KEEP_TMP"):
        shutil.rmtree(_tmp_root, ignore_errors=True)


def on_signal(signum, frame):
    log(f"signal {signum}: stopping every server")
    cleanup()
    os._exit(128 + signum)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def wait_ready(srv, body, timeout=20, path=INFER_PATH):
    """Poll a POST until it answers 200 (bounded by timeout); fail early if srv died."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not srv.alive():
            raise RuntimeError(f"{srv.name} exited early:\n{srv.output()}")
        try:
            status, _, data = post(srv.port, path, body, timeout=2)
            if status == 200:
                return data
            last = f"HTTP {status}: {data[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise RuntimeError(f"{srv.name} not ready after {timeout}s ({last})\n{srv.output()}")


# ---------------------------------------------------------------- peers

NGINX_MAIN = """daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 8192;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{load}
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  {http}
}}
"""

PROXY_COMMON = """proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;"""


def nginx(name, workers, http_block, load=""):
    prefix = tempfile.mkdtemp(prefix=f"{name}-", dir=_tmp_root)
    os.chmod(prefix, 0o755)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_MAIN.format(workers=workers, prefix=prefix, http=http_block, load=load))
    return prefix, conf


def start_nginx(name, workers, http_block, port, load=""):
    prefix, conf = nginx(name, workers, http_block, load)
    return Server(name, ["nginx", "-p", prefix, "-e", f"{prefix}/error.log", "-c", conf], port)


def nginx_fixed(name, workers, delay_ms=0):
    """nginx answering every request with the fixed V2 body (after delay_ms, non-blocking)."""
    port = free_port()
    answer = BACKEND_ANSWER.replace("'", "\\'")
    if delay_ms:
        content = f"echo_sleep {delay_ms / 1000:.3f}; echo -n '{answer}';"
        load = f"load_module {ECHO_MODULE};"
    else:
        content = f"return 200 '{answer}';"
        load = ""
    block = f"""server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type application/json; {content} }}
    location = /__bench_status {{ stub_status; }}
  }}"""
    return start_nginx(name, workers, block, port, load)


def nginx_canary(workers, b1, b2):
    port = free_port()
    block = f"""upstream blue {{ server 127.0.0.1:{b1}; keepalive 64; keepalive_requests 1000000; }}
  upstream green {{ server 127.0.0.1:{b2}; keepalive 64; keepalive_requests 1000000; }}
  split_clients "$request_id" $variant {{ 10% green; * blue; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://$variant;
      {PROXY_COMMON}
    }}
  }}"""
    return start_nginx(f"nginx-canary-t{workers}", workers, block, port)


def nginx_mirror(workers, b1, b2):
    port = free_port()
    block = f"""upstream blue {{ server 127.0.0.1:{b1}; keepalive 64; keepalive_requests 1000000; }}
  upstream green {{ server 127.0.0.1:{b2}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      mirror /__mirror;
      mirror_request_body on;
      proxy_pass http://blue;
      {PROXY_COMMON}
    }}
    location = /__mirror {{
      internal;
      proxy_pass http://green$request_uri;
      {PROXY_COMMON}
    }}
  }}"""
    return start_nginx(f"nginx-mirror-t{workers}", workers, block, port)


def haproxy_canary(threads, b1, b2):
    port = free_port()
    d = tempfile.mkdtemp(prefix="haproxy-", dir=_tmp_root)
    conf = os.path.join(d, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
  nbthread {threads}
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  balance roundrobin
  http-reuse always
  server blue 127.0.0.1:{b1} weight 90
  server green 127.0.0.1:{b2} weight 10
""")
    # SIGUSR1 is HAProxy's graceful stop (exit 0); its SIGTERM kills without a status.
    return Server(f"haproxy-t{threads}", ["haproxy", "-f", conf, "-db"], port,
                  stop_signal=signal.SIGUSR1)


def turnout_yaml(port, workers, b1, b2, mode, admin_port=None):
    """A turnout config: mode is canary, shadow (100% + compare), or noshadow."""
    strategy = "canary" if mode == "canary" else "shadow"
    lines = [
        f"listen: 127.0.0.1:{port}",
        f"workers: {workers}",
    ]
    if admin_port:
        lines += [f"admin: {{ http: 127.0.0.1:{admin_port} }}"]
    lines += [
        "variants:",
        f"  blue: {{ endpoints: [http://127.0.0.1:{b1}] }}",
        f"  green: {{ endpoints: [http://127.0.0.1:{b2}] }}",
        f"strategy: {strategy}",
        "stable: blue",
        "candidate: green",
    ]
    if mode == "canary":
        lines += ["canary:", "  percent: 10"]
    if mode == "shadow":
        lines += ["shadow:", "  percent: 100", "  compare:",
                  "    - { path: 'outputs[name=label].data', mode: exact }",
                  "    - { path: 'outputs[name=probabilities].data', mode: numeric, "
                  "tolerance: 1e-3 }"]
    else:
        lines += ["shadow:", "  percent: 0"]
    # Defaults everywhere else (limits, health checks): the benchmark runs what users run.
    lines += ["access_log: off", "log_level: warn", ""]
    return "\n".join(lines)


def wait_variant(srv, body, variant, timeout=20):
    """Wait until turnout serves variant when pinned to it (both colours healthy)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=2)
        try:
            conn.request("POST", INFER_PATH, body=body,
                         headers={"Content-Type": "application/json",
                                  "X-Turnout-Variant": variant})
            r = conn.getresponse()
            r.read()
            last = (r.status, r.getheader("X-Turnout-Variant"))
            if last == (200, variant):
                return
        except OSError as e:
            last = str(e)
        finally:
            conn.close()
        time.sleep(0.05)
    log(f"warning: {srv.name} does not serve {variant} yet ({last}); measuring anyway")


def start_turnout(name, bindir, workers, b1, b2, mode):
    port = free_port()
    admin = free_port() if mode == "shadow" else None
    d = tempfile.mkdtemp(prefix=f"{name}-", dir=_tmp_root)
    conf = os.path.join(d, "turnout.yaml")
    with open(conf, "w") as f:
        f.write(turnout_yaml(port, workers, b1, b2, mode, admin))
    srv = Server(name, [os.path.join(bindir, "turnout"), "-c", conf], port)
    srv.admin_port = admin
    return srv


def shadow_counts(srv):
    """Turnout's own shadow counters for green from GET /status: a short text, or why not."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.admin_port, timeout=5)
        conn.request("GET", "/status")
        doc = json.loads(conn.getresponse().read())
        conn.close()
    except (OSError, ValueError) as e:
        return f"turnout /status: {e}"
    found = []

    def walk(o):
        if isinstance(o, dict):
            if o.get("name") == "green" and "mirrored" in o:
                found.append(o)
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(doc.get("shadow"))
    if not found:
        return "turnout /status has no shadow counters for green"
    g = found[0]
    dropped = sum(v for v in (g.get("dropped") or {}).values() if isinstance(v, int))
    return (f"turnout counted: mirrored {g.get('mirrored')}, agree {g.get('agree')}, "
            f"disagree {g.get('disagree')}, error {g.get('error')}, dropped {dropped}")


def start_predictor(bindir, threads, model):
    port = free_port()
    return Server(f"predictor-t{threads}",
                  [os.path.join(bindir, "turnout-predictor"), "--model", model, "--name",
                   "digits", "--listen", f"127.0.0.1:{port}", "--threads", str(threads)], port)


def start_flask(workers, model):
    port = free_port()
    return Server(f"flask-t{workers}",
                  ["/usr/bin/python3", os.path.join(HERE, "flask_server.py"), "--model", model,
                   "--name", "digits", "--listen", f"127.0.0.1:{port}", "--workers",
                   str(workers)], port)


# ---------------------------------------------------------------- wrk


def wrk(port, conns, threads, seconds, body_path, think_ms=0):
    argv = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s", "--timeout", "5s",
            "-s", os.path.join(HERE, "post.lua"), f"http://127.0.0.1:{port}{INFER_PATH}"]
    env = dict(os.environ, BENCH_BODY=body_path, BENCH_THINK_MS=str(think_ms))
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^BENCH_RESULT (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout[-500:]} {r.stderr[-500:]}")
    res = json.loads(m.group(1))
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["errors"] = sum(res[k] for k in ("err_connect", "err_read", "err_write", "err_status",
                                         "err_timeout"))
    return res


def served(port):
    """Requests an nginx backend has answered so far (its stub_status counter)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/__bench_status")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n", text)
    if not m:
        raise RuntimeError(f"no stub_status counters from port {port}: {text[:200]!r}")
    return int(m.group(3))


def interleave(peers, rounds, seconds, conns, threads, body_path, probe_port=None, think_ms=0):
    """peers: [(label, port)]. One warm-up round each, then rounds x (A B C ...).

    With probe_port (an nginx backend), also count what that backend received
    during each peer's rounds, as a share of the requests wrk completed: the
    canary share, or how much was really mirrored.
    """
    runs = {label: [] for label, _ in peers}
    for label, port in peers:
        wrk(port, conns, threads, 1, body_path, think_ms)
    for r in range(rounds):
        for label, port in peers:
            before = served(probe_port) if probe_port else 0
            res = wrk(port, conns, threads, seconds, body_path, think_ms)
            res["probe"] = served(probe_port) - before - 1 if probe_port else 0
            runs[label].append(res)
            log(f"  round {r + 1}/{rounds} {label}: {res['rps']:.0f} req/s p50 "
                f"{res['p50_us']} us p99 {res['p99_us']} us errors {res['errors']}")
    out = {}
    for label, rs in runs.items():
        requests = sum(x["requests"] for x in rs)
        out[label] = {
            "rps": statistics.median(x["rps"] for x in rs),
            "p50_us": statistics.median(x["p50_us"] for x in rs),
            "p99_us": statistics.median(x["p99_us"] for x in rs),
            "errors": sum(x["errors"] for x in rs),
            "requests": requests,
            "rounds": len(rs),
        }
        if probe_port:
            out[label]["probe_share"] = sum(x["probe"] for x in rs) / max(1, requests)
    return out


# ---------------------------------------------------------------- scenarios


class Report:
    def __init__(self):
        self.rows = []     # (scenario, threads, peer, stats or None, note)
        self.targets = []  # (target, measured, verdict)
        self.notes = []

    def peer(self, scenario, threads, label, stats, note=""):
        self.rows.append((scenario, threads, label, stats, note))

    def target(self, what, measured, ok):
        verdict = "PASS" if ok else "MISS"
        if ok is None:
            verdict = "n/a"
        self.targets.append((what, measured, verdict))
        log(f"target {what}: {measured} -> {verdict}")


def ratio(a, b):
    return a / b if b else float("nan")


def check_answer(srv, body, expect_label=None):
    """Sanity: srv answers 200 with a V2 body (and the expected label, when given)."""
    status, headers, data = post(srv.port, INFER_PATH, body)
    if status != 200:
        raise RuntimeError(f"{srv.name}: HTTP {status}: {data[:300]!r}")
    doc = json.loads(data)
    if expect_label is not None:
        labels = [o["data"] for o in doc["outputs"] if o["name"] == "label"]
        if labels != [[expect_label]]:
            raise RuntimeError(f"{srv.name}: label {labels} != [{expect_label}]")
    return doc, headers


def scenario_canary(ctx, t, rep):
    b1, b2 = ctx.backends
    peers = []
    tur = ctx.turnout(f"turnout-canary-t{t}", t, b1.port, b2.port, "canary")
    hap = haproxy_canary(t, b1.port, b2.port)
    ngx = nginx_canary(t, b1.port, b2.port)
    for s in (tur, hap, ngx):
        if s is not None:
            wait_ready(s, ctx.body)
            check_answer(s, ctx.body, 3)
    if tur is not None:
        peers.append(("turnout", tur.port))
    peers += [("haproxy", hap.port), ("nginx", ngx.port), ("direct", b1.port)]
    res = interleave(peers, ctx.rounds, ctx.seconds, CONNS, 2, ctx.body_path, probe_port=b2.port)
    ctx.stop(tur, hap, ngx)
    for label, _ in peers:
        rep.peer("canary 10%", t, label, res[label],
                 f"green got {100 * res[label]['probe_share']:.1f}%")
    if tur is None:
        rep.peer("canary 10%", t, "turnout", None, ctx.turnout_missing)
        rep.target(f"canary t{t}: turnout req/s >= 1.0x HAProxy", "not run", None)
        rep.target(f"canary t{t}: turnout p99 <= HAProxy p99", "not run", None)
        return
    r = ratio(res["turnout"]["rps"], res["haproxy"]["rps"])
    rep.target(f"canary t{t}: turnout req/s >= 1.0x HAProxy", f"{r:.2f}x", r >= 1.0)
    p = ratio(res["turnout"]["p99_us"], res["haproxy"]["p99_us"])
    rep.target(f"canary t{t}: turnout p99 <= HAProxy p99",
               f"{res['turnout']['p99_us'] / 1000:.2f} vs {res['haproxy']['p99_us'] / 1000:.2f}"
               f" ms ({p:.2f}x)", p <= 1.0)
    rep.notes.append(f"canary t{t}: turnout/nginx req/s {ratio(res['turnout']['rps'], res['nginx']['rps']):.2f}x, "
                     f"turnout/direct {ratio(res['turnout']['rps'], res['direct']['rps']):.2f}x")


def scenario_shadow(ctx, t, rep):
    b1, b2 = ctx.backends
    tur = ctx.turnout(f"turnout-shadow-t{t}", t, b1.port, b2.port, "shadow")
    ngx = nginx_mirror(t, b1.port, b2.port)
    peers = []
    for s in (tur, ngx):
        if s is not None:
            wait_ready(s, ctx.body)
            check_answer(s, ctx.body, 3)
    if tur is not None:
        peers.append(("turnout shadow+compare", tur.port))
    peers.append(("nginx mirror", ngx.port))
    res = interleave(peers, ctx.rounds, ctx.seconds, CONNS, 2, ctx.body_path, probe_port=b2.port)
    counts = shadow_counts(tur) if tur is not None else ""
    ctx.stop(tur, ngx)
    for label, _ in peers:
        extra = f"; {counts}" if label.startswith("turnout") else ""
        rep.peer("shadow 100%", t, label, res[label],
                 f"mirrored {100 * res[label]['probe_share']:.1f}%{extra}")
    if tur is None:
        rep.peer("shadow 100%", t, "turnout shadow+compare", None, ctx.turnout_missing)
        rep.target(f"shadow t{t}: turnout req/s >= 2x nginx mirror", "not run", None)
        return
    r = ratio(res["turnout shadow+compare"]["rps"], res["nginx mirror"]["rps"])
    share = res["turnout shadow+compare"]["probe_share"]
    # A shadow that mirrors nothing is not faster, it is broken: it cannot pass.
    rep.target(f"shadow t{t}: turnout req/s >= 2x nginx mirror",
               f"{r:.2f}x (turnout mirrored {100 * share:.1f}%)", r >= 2.0 and share >= 0.95)


def scenario_slowshadow(ctx, t, rep):
    b1 = ctx.backends[0]
    if ctx.turnout_missing:
        rep.target(f"slow shadow t{t}: live p99 <= 1.1x no-shadow p99", "not run", None)
        rep.peer("live, 50 ms shadow, paced", t, "turnout", None, ctx.turnout_missing)
        return
    slow = ctx.slow_backend()
    plain = ctx.turnout(f"turnout-noshadow-t{t}", t, b1.port, slow.port, "noshadow")
    shad = ctx.turnout(f"turnout-slowshadow-t{t}", t, b1.port, slow.port, "shadow")
    for s in (plain, shad):
        wait_ready(s, ctx.body)
        check_answer(s, ctx.body, 3)
    peers = [("turnout, no shadow", plain.port), ("turnout, 50 ms shadow", shad.port)]
    # Paced load (each connection thinks SLOW_THINK_MS between requests): below
    # saturation, so p99 shows whether the live answer waits on the shadow, not
    # how the extra CPU of mirroring lengthens queues (the shadow scenario shows that).
    res = interleave(peers, ctx.rounds, ctx.seconds, CONNS, 2, ctx.body_path,
                     probe_port=slow.port, think_ms=SLOW_THINK_MS)
    counts = shadow_counts(shad)
    for label, _ in peers:
        extra = f"; {counts}" if "50 ms" in label else ""
        rep.peer("live, 50 ms shadow, paced", t, label, res[label],
                 f"slow shadow got {100 * res[label]['probe_share']:.1f}%{extra}")
    p = ratio(res["turnout, 50 ms shadow"]["p99_us"], res["turnout, no shadow"]["p99_us"])
    share = res["turnout, 50 ms shadow"]["probe_share"]
    # Mirrors beyond shadow.max_inflight are dropped by design, but some must go out.
    rep.target(f"slow shadow t{t}: live p99 <= 1.1x no-shadow p99",
               f"{p:.2f}x (mirrored {100 * share:.1f}%)", p <= 1.1 and share > 0.001)
    ctx.stop(plain, shad)


def scenario_latency(ctx, t, rep):
    b1, b2 = ctx.backends
    if ctx.turnout_missing:
        rep.peer("1 connection", t, "turnout", None, ctx.turnout_missing)
        rep.target(f"latency t{t}: turnout median <= direct + 100 us", "not run", None)
        return
    tur = ctx.turnout(f"turnout-latency-t{t}", t, b1.port, b2.port, "canary")
    wait_ready(tur, ctx.body)
    peers = [("turnout", tur.port), ("direct", b1.port)]
    res = interleave(peers, ctx.rounds, ctx.seconds, 1, 1, ctx.body_path)
    for label, _ in peers:
        rep.peer("1 connection", t, label, res[label])
    added = res["turnout"]["p50_us"] - res["direct"]["p50_us"]
    rep.target(f"latency t{t}: turnout median <= direct + 100 us", f"+{added:.0f} us",
               added <= 100)
    ctx.stop(tur)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def read_responses(socks, deadline):
    """Read one whole HTTP response (Content-Length framed) from every socket."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    done, ok = 0, 0
    while done < len(socks):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(timeout=min(left, 1.0)):
            s = key.fileobj
            chunk = s.recv(65536)
            bufs[s] += chunk
            head, sep, rest = bufs[s].partition(b"\r\n\r\n")
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            chunked = re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head)
            whole = sep and ((m and len(rest) >= int(m.group(1))) or
                             (chunked and rest.endswith(b"0\r\n\r\n")))
            if not chunk or whole:
                sel.unregister(s)
                done += 1
                ok += bufs[s].startswith(b"HTTP/1.1 200") and bool(chunk)
                bufs[s] = b""
    sel.close()
    for s in socks:
        s.setblocking(True)
    return ok


def scenario_idle(ctx, t, rep):
    b1, b2 = ctx.backends
    if ctx.turnout_missing:
        rep.peer("10k idle conns", t, "turnout", None, ctx.turnout_missing)
        rep.target(f"idle t{t}: RSS <= 64 MiB with 10,000 conns, still served", "not run", None)
        return
    tur = ctx.turnout(f"turnout-idle-t{t}", t, b1.port, b2.port, "canary")
    wait_ready(tur, ctx.body)
    base = rss_kib(tur.p.pid)
    req = (f"POST {INFER_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
           f"\r\nContent-Length: {len(ctx.body)}\r\n\r\n").encode() + ctx.body
    socks, first_ok = [], 0
    t0 = time.monotonic()
    try:
        for start in range(0, IDLE_CONNS, 500):  # bounded: 20 batches of 500
            batch = []
            for _ in range(min(500, IDLE_CONNS - start)):
                s = socket.create_connection(("127.0.0.1", tur.port), timeout=10)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(req)
                batch.append(s)
            socks += batch
            first_ok += read_responses(batch, time.monotonic() + 30)
        opened = time.monotonic() - t0
        time.sleep(1.0)  # let the router settle after the last batch before reading RSS
        rss = rss_kib(tur.p.pid)
        sample = socks[:: max(1, len(socks) // 500)]  # 500 spread over the 10,000
        for s in sample:
            s.sendall(req)
        again_ok = read_responses(sample, time.monotonic() + 30)
    finally:
        for s in socks:
            s.close()
    stats = {"rss_kib": rss, "base_kib": base, "conns": len(socks), "first_ok": first_ok,
             "sample": len(sample), "sample_ok": again_ok, "open_s": opened}
    rep.peer("10k idle conns", t, "turnout", stats)
    ok = rss <= 64 * 1024 and first_ok == IDLE_CONNS and again_ok == len(sample)
    rep.target(f"idle t{t}: RSS <= 64 MiB with 10,000 conns, still served",
               f"{rss / 1024:.1f} MiB (idle {base / 1024:.1f}); {first_ok}/{IDLE_CONNS} served, "
               f"then {again_ok}/{len(sample)} sampled", ok)
    ctx.stop(tur)


def scenario_predictor(ctx, t, rep):
    model = os.path.join(SRC, "predictor", "models", "digits-v2.onnx")
    if not os.path.exists(model):
        rep.target(f"predictor t{t}: >= 0.5x nginx return 200", "not run: no digits-v2.onnx",
                   None)
        rep.target(f"predictor t{t}: >= 20x Flask + PyTorch", "not run: no digits-v2.onnx", None)
        return
    ceiling = nginx_fixed(f"nginx-ceiling-t{t}", t)
    srvs = [("nginx return 200", ceiling)]
    pred = None
    if ctx.predictor_ok:
        pred = start_predictor(ctx.bindir, t, model)
        srvs.insert(0, ("turnout-predictor", pred))
    fl = None
    if ctx.flask_ok:
        fl = start_flask(t, model)
        srvs.append(("flask+pytorch", fl))
    labels = {}
    for label, s in srvs:
        wait_ready(s, ctx.body, timeout=60)
        if s is not ceiling:
            doc, _ = check_answer(s, ctx.body)
            labels[label] = [o["data"] for o in doc["outputs"] if o["name"] == "label"]
    if len({json.dumps(v) for v in labels.values()}) > 1:
        raise RuntimeError(f"predictor peers disagree on the label: {labels}")
    peers = [(label, s.port) for label, s in srvs]
    res = interleave(peers, ctx.rounds, ctx.seconds, CONNS, 2, ctx.body_path)
    for label, _ in peers:
        rep.peer("predictor digits-v2", t, label, res[label])
    if pred is None:
        rep.peer("predictor digits-v2", t, "turnout-predictor", None, ctx.predictor_missing)
        rep.target(f"predictor t{t}: >= 0.5x nginx return 200", "not run", None)
        rep.target(f"predictor t{t}: >= 20x Flask + PyTorch", "not run", None)
    else:
        r = ratio(res["turnout-predictor"]["rps"], res["nginx return 200"]["rps"])
        rep.target(f"predictor t{t}: >= 0.5x nginx return 200", f"{r:.2f}x", r >= 0.5)
        if fl is not None:
            r = ratio(res["turnout-predictor"]["rps"], res["flask+pytorch"]["rps"])
            rep.target(f"predictor t{t}: >= 20x Flask + PyTorch", f"{r:.1f}x", r >= 20)
        else:
            rep.target(f"predictor t{t}: >= 20x Flask + PyTorch",
                       "not run: python3-flask missing", None)
    if fl is None:
        rep.peer("predictor digits-v2", t, "flask+pytorch", None, "python3-flask not installed")
    ctx.stop(*[s for _, s in srvs])


SCENARIOS = {
    "canary": scenario_canary,
    "shadow": scenario_shadow,
    "slowshadow": scenario_slowshadow,
    "latency": scenario_latency,
    "idle": scenario_idle,
    "predictor": scenario_predictor,
}


class Context:
    def __init__(self, args, body_path, body):
        self.bindir = args.bindir
        self.rounds = args.rounds
        self.seconds = args.duration
        self.body_path = body_path
        self.body = body
        self.backends = None
        self._slow = None
        self.stopped_ok = []
        self.turnout_missing = probe_binary(os.path.join(args.bindir, "turnout"), ["-h"])
        self.predictor_missing = probe_binary(os.path.join(args.bindir, "turnout-predictor"),
                                              ["-h"])
        self.predictor_ok = not self.predictor_missing
        self.flask_ok = subprocess.run(["/usr/bin/python3", "-c", "import flask, torch, onnx"],
                                       capture_output=True).returncode == 0

    def turnout(self, name, workers, b1, b2, mode):
        """Start turnout and wait until it answers through both variants."""
        if self.turnout_missing:
            return None
        srv = start_turnout(name, self.bindir, workers, b1, b2, mode)
        wait_ready(srv, self.body)
        for v in ("blue", "green"):
            wait_variant(srv, self.body, v)
        return srv

    def slow_backend(self):
        if self._slow is None:
            self._slow = nginx_fixed("nginx-slow50ms", 1, delay_ms=50)
            wait_ready(self._slow, self.body)
        return self._slow

    def stop(self, *servers):
        for s in servers:
            if s is None:
                continue
            code = s.stop()
            self.stopped_ok.append((s.name, code))
            if code != 0:
                log(f"{s.name} exited {code} on SIGTERM:\n{s.output()}")


def probe_binary(path, argv):
    """'' if path looks like a real build, else why not (a placeholder exits 1 at once)."""
    if not os.access(path, os.X_OK):
        return f"{path} not built"
    try:
        r = subprocess.run([path] + argv, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return ""
    text = (r.stdout + r.stderr).strip()
    if "not built yet" in text:
        return f"{os.path.basename(path)}: {text.splitlines()[0]}"
    return ""


# ---------------------------------------------------------------- output


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def ver(argv, pat):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            m = re.search(pat, r.stdout + r.stderr)
            return m.group(1) if m else "?"
        except OSError:
            return "missing"

    commit = subprocess.run(["git", "-C", SRC, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nginx": ver(["nginx", "-v"], r"nginx/(\S+)"),
        "haproxy": ver(["haproxy", "-v"], r"version (\S+)"),
        "wrk": ver(["wrk", "-v"], r"wrk (\S+)"), "commit": commit,
    }


def fmt_stats(st):
    if st is None:
        return "| | | |"
    if "rss_kib" in st:
        return (f"| RSS {st['rss_kib'] / 1024:.1f} MiB | idle RSS {st['base_kib'] / 1024:.1f} MiB"
                f" | served {st['first_ok']}/{st['conns']}, then {st['sample_ok']}/"
                f"{st['sample']} |")
    err = f" ({st['errors']} errors)" if st["errors"] else ""
    return (f"| {st['rps']:,.0f}{err} | {st['p50_us'] / 1000:.2f} | "
            f"{st['p99_us'] / 1000:.2f} |")


def markdown(rep, m, args, elapsed):
    out = [BEGIN, "",
           f"Command: `{args.command}` ({args.rounds} interleaved rounds of {args.duration} s per "
           f"peer, medians; wrk {CONNS} keep-alive connections, 2 client threads, POST of a "
           f"{len(infer_body())}-byte V2 JSON body; took {elapsed / 60:.1f} min).",
           "",
           f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}; {m['date']}; "
           f"turnout {m['commit']}, nginx {m['nginx']}, HAProxy {m['haproxy']}, wrk {m['wrk']}. "
           "Client, proxies and backends share the same CPUs; 1-minute load average "
           f"{args.load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other work "
           "on the machine shows here).",
           "",
           "### Targets", "", "| target | measured | verdict |", "| --- | --- | --- |"]
    for what, measured, verdict in rep.targets:
        out.append(f"| {what} | {measured} | {verdict} |")
    out += ["", "### Per scenario (medians)", "",
            "The ratio column compares the scenario's first (Turnout) peer with this one: "
            "req/s (higher is better for Turnout) and p99 (lower is better).", "",
            "| scenario | threads | peer | req/s | p50 ms | p99 ms | first / this | note |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    refs = {}
    for scen, t, label, st, note in rep.rows:
        if st and "rps" in st and (scen, t) not in refs:
            refs[(scen, t)] = (label, st)
    for scen, t, label, st, note in rep.rows:
        ref_label, ref = refs.get((scen, t), (None, None))
        cmp_ = ""
        if st and "rps" in st and ref and ref_label != label:
            cmp_ = (f"req/s {ratio(ref['rps'], st['rps']):.2f}x, "
                    f"p99 {ratio(ref['p99_us'], st['p99_us']):.2f}x")
        out.append(f"| {scen} | {t} | {label} {fmt_stats(st)} {cmp_} | {note} |")
    if rep.notes:
        out += ["", "Ratios: " + "; ".join(rep.notes) + "."]
    if rep.profile:
        out += ["", "### Profiles (perf, cpu-clock, self time)", "", "```"]
        out += rep.profile
        out += ["```"]
    out += ["", END]
    return "\n".join(out)


def write_doc(path, block):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        pre = text[:text.index(BEGIN)]
        post_ = text[text.index(END) + len(END):]
        text = pre + block + post_
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def perf_profile(srv, ctx, title):
    """perf record srv (cpu-clock, call graphs) under one wrk run; top self-time rows."""
    data = os.path.join(_tmp_root, f"perf-{srv.name}.data")
    perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "499", "-g", "-o", data,
                             "-p", str(srv.p.pid)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)  # perf attaches asynchronously; the wrk run below is what counts
        res = wrk(srv.port, CONNS, 2, max(3, ctx.seconds), ctx.body_path)
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)

    def report(sort, limit):
        r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-g",
                            "none", "--percent-limit", "0.8", "--sort", sort],
                           capture_output=True, text=True, timeout=120)
        rows = [re.sub(r"(\s+-)+\s*$", "", ln.rstrip()) for ln in r.stdout.splitlines()
                if ln.strip() and not ln.startswith("#")]
        return rows[:limit]

    return ([f"{title}: {res['rps']:,.0f} req/s while profiled", "by library:"] +
            report("dso", 8) + ["", "by function:"] + report("dso,symbol", 25))


def profile(ctx, rep):
    """--profile: perf-profile turnout (canary, 2 workers) and turnout-predictor (2 threads)."""
    if not shutil.which("perf"):
        log("--profile: perf not found")
        return
    rep.profile = []
    b1, b2 = ctx.backends
    if not ctx.turnout_missing:
        tur = ctx.turnout("turnout-profile", 2, b1.port, b2.port, "canary")
        rep.profile += perf_profile(tur, ctx, "turnout canary 10%, 2 workers") + [""]
        ctx.stop(tur)
    model = os.path.join(SRC, "predictor", "models", "digits-v2.onnx")
    if ctx.predictor_ok and os.path.exists(model):
        pred = start_predictor(ctx.bindir, 2, model)
        wait_ready(pred, ctx.body)
        rep.profile += perf_profile(pred, ctx, "turnout-predictor digits-v2, 2 threads")
        ctx.stop(pred)


def main():
    global _tmp_root, _pidfile
    ap = argparse.ArgumentParser(description="Turnout benchmark (issue 9)")
    ap.add_argument("--quick", action="store_true", help="5 rounds of 1 s (a smoke run)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--duration", type=int, default=None, help="seconds per round")
    ap.add_argument("--only", default="", help="comma list of: " + ",".join(SCENARIOS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--bindir", default=os.path.join(SRC, "build", "bin"))
    ap.add_argument("--out", default=os.path.join(SRC, "docs", "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--profile", action="store_true", help="also perf-profile turnout and turnout-predictor")
    ap.add_argument("--command", default="sh tests/bench/run.sh")
    ap.add_argument("--pidfile", default=None, help="append each server's pid (run.sh)")
    args = ap.parse_args()
    args.rounds = args.rounds or 5
    args.duration = args.duration or (1 if args.quick else 5)
    if not 1 <= args.rounds <= 50 or not 1 <= args.duration <= 120:
        sys.exit("bench.py: --rounds must be 1..50 and --duration 1..120")
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    for n in names:
        if n not in SCENARIOS:
            sys.exit(f"bench.py: unknown scenario '{n}' (have: {', '.join(SCENARIOS)})")
    threads = [int(x) for x in args.threads.split(",")]
    for tool in ("wrk", "nginx", "haproxy"):
        if not shutil.which(tool):
            sys.exit(f"bench.py: {tool} not found: run deploy/install-deps.sh --bench")
    if not os.path.exists(ECHO_MODULE):
        sys.exit(f"bench.py: {ECHO_MODULE} missing: run deploy/install-deps.sh --bench")

    _pidfile = args.pidfile
    _tmp_root = tempfile.mkdtemp(prefix="turnout-bench-")
    os.chmod(_tmp_root, 0o755)
    atexit.register(cleanup)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    body = infer_body()
    body_path = os.path.join(_tmp_root, "infer.json")
    with open(body_path, "wb") as f:
        f.write(body)
    ctx = Context(args, body_path, body)
    for why in (ctx.turnout_missing, ctx.predictor_missing):
        if why:
            log(f"skipping: {why}")
    if not ctx.flask_ok:
        log("skipping Flask + PyTorch: python3-flask (or torch, onnx) not importable")
    rep = Report()
    rep.profile = None
    t0 = time.monotonic()
    args.load_start = os.getloadavg()[0]
    ctx.backends = (nginx_fixed("nginx-blue", 1), nginx_fixed("nginx-green", 1))
    for b in ctx.backends:
        wait_ready(b, body)
    for name in names:
        for t in threads:
            log(f"scenario {name}, {t} thread(s)")
            before = set(_procs)
            nrows = len(rep.rows)
            try:
                SCENARIOS[name](ctx, t, rep)
                # Figures of a peer that failed requests do not count: say so.
                bad = [f"{label} {st['errors']}/{st['requests']}"
                       for _, _, label, st, _ in rep.rows[nrows:]
                       if st and "errors" in st and st["errors"] > 0.001 * st["requests"]]
                if bad:
                    rep.target(f"{name} t{t}: no failed requests (<= 0.1%)",
                               "errors: " + ", ".join(bad), False)
            except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
                # One broken peer must not lose the others' figures: say why, go on.
                first = str(e).strip().splitlines()
                why = " / ".join(first[:3])[:400]
                log(f"scenario {name} t{t} failed: {e}")
                rep.target(f"{name} t{t}: scenario ran", f"failed: {why}", False)
                ctx.stop(*[p for p in list(_procs) if p not in before])
    if args.profile:
        try:
            profile(ctx, rep)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            log(f"--profile failed: {e}")
    ctx.stop(*ctx.backends, ctx._slow)
    elapsed = time.monotonic() - t0
    bad = [(n, c) for n, c in ctx.stopped_ok if c != 0]
    if bad:
        rep.notes.append("servers that did not exit 0 on SIGTERM: " +
                         ", ".join(f"{n} ({c})" for n, c in bad))
    text = markdown(rep, machine(), args, elapsed)
    print(text)
    if not args.no_write:
        write_doc(args.out, text)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
