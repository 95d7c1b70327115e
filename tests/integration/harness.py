"""Integration-test harness: real processes on free loopback ports.

Every test in tests/integration imports this. It starts the real binaries
(turnout, turnout-predictor, nginx, ...) on 127.0.0.1 ports chosen free by the
kernel, waits on conditions with deadlines (never a bare sleep), and stops
every process it started whatever happens (atexit + signal handlers).

Only loopback addresses are ever contacted.
"""

import atexit
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN_DIR = os.environ.get("TURNOUT_BIN_DIR", os.path.join(os.getcwd(), "bin"))
SRC_DIR = os.environ.get(
    "TURNOUT_SRC_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
)
MODELS_DIR = os.path.join(SRC_DIR, "predictor", "models")

_procs = []


def _cleanup():
    for p in _procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    for p in _procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


atexit.register(_cleanup)


def _on_signal(signum, frame):
    _cleanup()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=10.0, interval=0.02, what="condition"):
    """Poll cond() until it returns a truthy value; return it, or raise after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - the condition may fail until ready
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


def tmpdir():
    d = tempfile.mkdtemp(prefix="turnout-test-")
    return d


class Proc:
    """A started process; output goes to a log file shown when a test fails."""

    def __init__(self, argv, name=None, env=None, cwd=None):
        self.name = name or os.path.basename(argv[0])
        self.logpath = tempfile.mktemp(prefix=f"turnout-{self.name}-", suffix=".log")
        self.log = open(self.logpath, "wb")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.p = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
        _procs.append(self.p)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def output(self):
        self.log.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig):
        self.p.send_signal(sig)

    def stop(self, sig=None, timeout=15):
        """Signal the process (default SIGTERM) and wait; return its exit code."""
        # (The default is filled in here: inside the class body the name `signal`
        # is the method above, not the module.)
        sig = signal.SIGTERM if sig is None else sig
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout}s of signal {sig}")

    def kill(self):
        self.p.kill()
        self.p.wait()


def bin_path(name):
    path = os.path.join(BIN_DIR, name)
    if not os.path.exists(path):
        raise AssertionError(f"{path} not built")
    return path


def http_request(port, method, path, body=None, headers=None, timeout=10, host="127.0.0.1"):
    """One request on a fresh connection; returns (status, headers dict lower-cased, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = dict(headers or {})
            headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_http_ok(port, path, timeout=15, proc=None):
    """Wait until GET path answers 200 (failing early if proc died)."""

    def ready():
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.name} exited early:\n{proc.output()}")
        try:
            return http_request(port, "GET", path, timeout=1)[0] == 200
        except OSError:
            return False

    try:
        wait_for(ready, timeout=timeout, what=f"GET 127.0.0.1:{port}{path} == 200")
    except AssertionError:
        if proc is not None:
            sys.stderr.write(proc.output())
        raise


def start_predictor(model="digits-v1.onnx", name="digits", version=None, port=None, threads=1,
                    extra=()):
    """Start turnout-predictor on a free loopback port and wait until it is ready."""
    port = port or free_port()
    argv = [bin_path("turnout-predictor"), "--model", os.path.join(MODELS_DIR, model),
            "--name", name, "--listen", f"127.0.0.1:{port}", "--threads", str(threads)]
    if version:
        argv += ["--version", version]
    argv += list(extra)
    p = Proc(argv, name=f"predictor-{model}")
    p.port = port
    wait_http_ok(port, "/v2/health/ready", proc=p)
    return p


def load_heldout():
    """The held-out digits set committed with the models: (pixels list, labels list)."""
    with open(os.path.join(MODELS_DIR, "digits-heldout.json")) as f:
        d = json.load(f)
    return d["pixels"], d["labels"]


class Failures:
    """Collect named checks; exit non-zero with a summary if any failed."""

    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed.append(what)
            sys.stderr.write(f"FAIL: {what}\n")

    def finish(self):
        print(f"{self.passed} passed, {len(self.failed)} failed")
        sys.exit(1 if self.failed else 0)
