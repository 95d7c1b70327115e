"""README command 1, deploy/run.sh, as a user runs it (issue 2).

Starts `sh deploy/run.sh` (TURNOUT_NO_BUILD=1, the binaries under test, the
demo conf/turnout.yaml moved to free ports and temporary paths) in its own
process group, waits for its banner, and checks that the banner's client
endpoint classifies a digit, its admin socket answers `turnoutctl status`, its
dashboard URL serves the page, and the curl line it suggests works as printed.
Then Ctrl-C (SIGINT to the whole group, as a terminal sends it): the script
exits 0, every process it started has stopped (each logs "stopped"), and no
sanitizer report appears in the output. A second run is stopped by SIGTERM to
the script alone (as a supervisor would): the same must hold.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BANNER_END = "Ctrl-C stops everything."


def run_once(f, ctrl_c):
    """One run of deploy/run.sh; ctrl_c: SIGINT to the group, else SIGTERM to the script."""
    how = "Ctrl-C" if ctrl_c else "SIGTERM to run.sh"
    d = harness.tmpdir()
    ports = {k: harness.free_port() for k in (8080, 9001, 9002, 9090)}
    with open(os.path.join(harness.SRC_DIR, "conf", "turnout.yaml")) as fh:
        conf = fh.read()
    for old, new in ports.items():
        f.check(f"127.0.0.1:{old}" in conf, f"conf/turnout.yaml uses 127.0.0.1:{old}")
        conf = conf.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    conf = conf.replace("/run/turnout", d).replace("/var/lib/turnout", d)
    conf_path = os.path.join(d, "turnout.yaml")
    with open(conf_path, "w") as fh:
        fh.write(conf)
    for name in ("turnout", "turnoutctl", "turnout-predictor"):
        harness.bin_path(name)

    env = dict(os.environ, TURNOUT_NO_BUILD="1", TURNOUT_CONF=conf_path,
               TURNOUT_BIN_DIR=harness.BIN_DIR, TURNOUT_BLUE_PORT=str(ports[9001]),
               TURNOUT_GREEN_PORT=str(ports[9002]))
    log = tempfile.TemporaryFile()
    p = subprocess.Popen(["sh", os.path.join(harness.SRC_DIR, "deploy", "run.sh")],
                         cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)

    def output():
        log.seek(0)
        return log.read().decode("utf-8", "replace")

    try:
        def banner():
            if p.poll() is not None:
                raise AssertionError(f"run.sh exited early ({p.returncode}):\n{output()}")
            return BANNER_END in output()

        harness.wait_for(banner, timeout=60, what="run.sh banner")
        out = output()
        client = re.search(r"client endpoint : (http://127\.0\.0\.1:(\d+)(/\S+))", out)
        sock = re.search(r"admin socket\s+: (\S+)", out)
        dash = re.search(r"dashboard\s+: http://127\.0\.0\.1:(\d+)/", out)
        f.check(client and int(client.group(2)) == ports[8080]
                and client.group(3) == "/v2/models/digits/infer",
                f"banner names the client endpoint on the config's port\n{out}")
        f.check(sock and sock.group(1) == os.path.join(d, "admin.sock"),
                f"banner names the config's admin socket\n{out}")
        f.check(dash and int(dash.group(1)) == ports[9090], f"banner names the dashboard\n{out}")

        pixels, labels = harness.load_heldout()
        body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                            "data": pixels[0]}]}
        st, hdr, data = harness.http_request(ports[8080], "POST", "/v2/models/digits/infer",
                                             body, headers={"X-User-Id": "run-sh"})
        f.check(st == 200 and hdr.get("x-turnout-variant") in ("blue", "green")
                and '"label"' in data.decode(),
                f"a digit through the client endpoint: {st} {hdr} {data[:200]!r}")
        st, hdr, data = harness.http_request(ports[9090], "GET", "/")
        f.check(st == 200 and hdr.get("content-type", "").startswith("text/html"),
                f"the dashboard URL serves a page: {st} {hdr.get('content-type')}")
        r = subprocess.run([harness.bin_path("turnoutctl"), "-s", os.path.join(d, "admin.sock"),
                            "status"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        f.check(r.returncode == 0 and b"strategy: canary" in r.stdout,
                f"turnoutctl status on the banner's socket: {r.returncode} {r.stderr!r}")
        lines = out.splitlines()
        tried = [lines[i + 1].strip() for i, l in enumerate(lines[:-1]) if l.strip() == "Try:"]
        if tried:
            r = subprocess.run(["sh", "-c", tried[0]], capture_output=True, timeout=30,
                               stdin=subprocess.DEVNULL)
            ok = False
            try:
                ok = r.returncode == 0 and len(json.loads(r.stdout)["outputs"]) == 2
            except (ValueError, KeyError, TypeError):
                pass
            f.check(ok, f"the banner's curl line works as printed: {tried[0]!r} -> {r.stdout!r}")
        else:
            f.check(False, f"the banner suggests a curl line after 'Try:'\n{out}")
    finally:
        # Ctrl-C: SIGINT to the foreground process group.
        if p.poll() is None:
            if ctrl_c:
                os.killpg(p.pid, signal.SIGINT)
            else:
                p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait()
        # anything of the group still there after run.sh exited was not stopped by it
        deadline = time.monotonic() + 5
        left = True
        while left and time.monotonic() < deadline:
            try:
                os.killpg(p.pid, 0)
                time.sleep(0.05)
            except ProcessLookupError:
                left = False
        if left:
            os.killpg(p.pid, signal.SIGKILL)
    out = output()
    f.check(rc == 0, f"run.sh exits 0 after {how} (exit {rc})\n{out[-3000:]}")
    f.check(not left, f"every process run.sh started has exited after {how}")
    stopped = len(re.findall(r"^\S+ turnout(-predictor)?\[\d+\] info: stopped$", out, re.M))
    f.check(stopped == 3, f"{how}: three processes logged 'stopped' ({stopped})\n{out[-3000:]}")
    for bad in ("Sanitizer", "runtime error:"):
        f.check(bad not in out, f"{how}: no {bad!r} report in run.sh's output\n{out[-3000:]}")


def main():
    f = harness.Failures()
    run_once(f, ctrl_c=True)
    run_once(f, ctrl_c=False)
    f.finish()


if __name__ == "__main__":
    main()
