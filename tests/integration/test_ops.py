#!/usr/bin/python3
"""Operations (issue 6): turnoutctl over the admin socket, persisted rollback,
broken YAMLs, live edits, peer uid checks.

Real processes on loopback: two test backends (blue, green), the router, and
turnoutctl. The helpers here (OpsRig) are also used by test_ops_load.py.

Checks:
  - rollback after a blue/green switch made in the YAML returns to the
    previous color
  - rollback survives kill -9 + restart and an unchanged reload; a changed
    YAML lifts it; a corrupt state file is set aside, not fatal
  - broken YAMLs (syntax, unknown key, bad value) keep the old config serving
    and `turnoutctl status` / `reload` show FILE:LINE:COL
  - a YAML edit is in force within 1 s (measured with traffic)
  - settings that need new sockets (listen, workers) are refused with
    "restart needed"
  - a peer whose uid is not allowed is refused (turnoutctl run as nobody)
  - every mutating command lands in the audit log with the caller's uid, and
    on stderr with a level
  - a request in flight during a reload finishes on its old snapshot, even
    when the reload removes its variant
"""

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

NOBODY = 65534  # uid and gid of nobody / nogroup on Debian
BACKEND = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backend.py")


def write_atomic(path, text):
    """Save as editors do: a temp file renamed over the old one."""
    tmp = path + ".tmp-edit"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def write_in_place(path, text):
    """Save as some editors do: truncate and rewrite the same inode."""
    with open(path, "w") as f:
        f.write(text)


class OpsRig:
    """Two backends, a config file, a router, and turnoutctl against its socket."""

    def __init__(self, tag="ops", variants=("blue", "green")):
        self.dir = harness.tmpdir()
        os.chmod(self.dir, 0o755)  # so that `nobody` can reach the socket when allowed to
        self.cfg = os.path.join(self.dir, "turnout.yaml")
        self.sock = os.path.join(self.dir, "admin.sock")
        self.state = os.path.join(self.dir, "state.json")
        self.audit = os.path.join(self.dir, "audit.log")
        self.port = harness.free_port()
        self.backends = {}
        for name in variants:
            port = harness.free_port()
            p = harness.Proc([sys.executable, BACKEND, "--port", str(port), "--name", name],
                             name=f"backend-{name}")
            harness.wait_http_ok(port, "/health", proc=p)
            self.backends[name] = (p, port)
        self.router = None
        self.ctl_bin = harness.bin_path("turnoutctl")

    def yaml(self, strategy="bluegreen", stable="blue", candidate="green", canary=0,
             shadow=0, extra_admin="", extra="", listen=None):
        """A config text; every argument is a YAML value."""
        lines = [
            f"listen: 127.0.0.1:{listen or self.port}",
            "workers: 2",
            "admin:",
            f"  socket: {self.sock}",
            f"  audit_log: {self.audit}",
        ]
        lines += [f"  {x}" for x in extra_admin.splitlines() if x]
        lines += [f"state_file: {self.state}", "variants:"]
        for name, (_, port) in self.backends.items():
            lines.append(f"  {name}: {{ endpoints: [http://127.0.0.1:{port}] }}")
        lines += [f"strategy: {strategy}", f"stable: {stable}", f"candidate: {candidate}"]
        if strategy == "canary":
            lines += ["canary:", f"  percent: {canary}", "  sticky: none"]
        if shadow:
            lines += ["shadow:", f"  percent: {shadow}"]
        lines += ["health:", "  interval: 500ms", "  timeout: 400ms"]
        return "\n".join(lines) + "\n" + extra

    def start(self, text=None):
        if text is not None:
            write_atomic(self.cfg, text)
        self.router = harness.Proc([harness.bin_path("turnout"), "-c", self.cfg], name="turnout")

        def ready():
            if not self.router.alive():
                raise AssertionError(f"turnout exited early:\n{self.router.output()}")
            return os.path.exists(self.sock) and harness.port_open(self.port)

        try:
            harness.wait_for(ready, timeout=15, what="router socket and port")
        except AssertionError:
            sys.stderr.write(self.router.output())
            raise
        return self.router

    def stop(self, sig=signal.SIGTERM):
        rc = self.router.stop(sig)
        return rc

    def ctl(self, *args, as_json=True, user=None, sock=None, timeout=20):
        """Run turnoutctl; returns (exit code, stdout, stderr)."""
        argv = [self.ctl_bin, "-s", sock or self.sock] + (["--json"] if as_json else [])
        argv += list(args)
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + argv
            if user == NOBODY:  # nogroup is its group: it may open a 0660 nogroup socket
                argv[3] = f"--groups={user}"
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr

    def ctl_ok(self, *args):
        rc, out, err = self.ctl(*args)
        if rc != 0:
            raise AssertionError(f"turnoutctl {' '.join(args)} failed ({rc}): {err}")
        return json.loads(out)

    def status(self):
        return self.ctl_ok("status")

    def variant_of_one_request(self, timeout=5):
        status, headers, _ = harness.http_request(self.port, "GET", "/x", timeout=timeout)
        if status != 200:
            raise AssertionError(f"request answered {status}")
        return headers.get("x-turnout-variant")

    def variants_seen(self, n=20):
        return {self.variant_of_one_request() for _ in range(n)}


def check_rollback_persists(f):
    rig = OpsRig()
    # canary at 100%: every request goes to green until something says otherwise
    text = rig.yaml(strategy="canary", canary=100)
    rig.start(text)
    f.check(rig.variants_seen() == {"green"}, "canary 100% from the YAML serves green")

    r = rig.ctl_ok("rollback")
    f.check("canary 100% -> 0%" in r["message"], f"rollback says what it did: {r['message']}")
    f.check(rig.variants_seen() == {"blue"}, "after rollback every request is blue")
    st = rig.status()
    f.check(st["override"]["rollback"] is True, "status shows the rollback in force")
    with open(rig.state) as fp:
        saved = json.load(fp)
    f.check("rollback" in saved["overrides"], "the rollback is in the state file")
    r = rig.ctl_ok("rollback")
    f.check("already in force" in r["message"], "a second rollback changes nothing")
    f.check(f"info: operator: uid {os.getuid()}: rollback -> rollback:" in rig.router.output(),
            "the operator action is logged to stderr with a level, besides the audit file")

    # kill -9 and start again: the rollback holds
    rig.router.kill()
    rig.start()
    f.check(rig.variants_seen() == {"blue"}, "rollback survives kill -9 + restart")
    f.check(rig.status()["override"]["rollback"] is True, "status after restart: rollback")

    # an unchanged reload (turnoutctl and SIGHUP) and a touch keep it
    r = rig.ctl_ok("reload")
    f.check(r["result"] == "unchanged", f"reload of the same file: {r.get('result')}")
    rig.router.signal(signal.SIGHUP)
    write_atomic(rig.cfg, text)  # same bytes, new inode: the watcher fires
    gen = rig.status()["generation"]
    harness.wait_for(lambda: "SIGHUP" in rig.router.output(), timeout=5, what="SIGHUP seen")
    time.sleep(0.5)  # give the watcher its chance to (wrongly) lift the rollback
    f.check(rig.variants_seen() == {"blue"}, "rollback survives unchanged reloads")
    f.check(rig.status()["generation"] == gen, "an unchanged file publishes nothing")

    # a changed YAML lifts it: canary 100% again
    write_atomic(rig.cfg, text + "# ramp resumes\n")
    harness.wait_for(lambda: rig.status()["override"]["in_force"] is False, timeout=3,
                     what="the rollback lifted by a changed YAML")
    f.check(rig.variants_seen() == {"green"}, "a changed YAML lifts the rollback")
    with open(rig.state) as fp:
        f.check(json.load(fp)["overrides"] == [], "the lift is persisted")

    # resume after a CLI override
    rig.ctl_ok("canary", "0")
    f.check(rig.variants_seen() == {"blue"}, "turnoutctl canary 0 takes effect")
    r = rig.ctl_ok("resume")
    f.check(rig.variants_seen() == {"green"}, f"resume returns to the YAML: {r['message']}")

    # a corrupt state file is set aside, not fatal
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM")
    with open(rig.state, "w") as fp:
        fp.write('{"version": 1, "overrides": ["rollback"')
    rig.start()
    f.check(rig.variants_seen() == {"green"}, "a corrupt state file: the YAML rules")
    f.check(len(glob.glob(rig.state + ".corrupt-*")) == 1, "the corrupt file is set aside")
    f.check("corrupt state file" in rig.router.output(), "the corrupt file is reported")

    # audit log: every mutating command, with our uid
    with open(rig.audit) as fp:
        lines = [json.loads(x) for x in fp if x.strip()]
    cmds = [x["command"] for x in lines]
    f.check(cmds.count("rollback") == 2 and "canary 0" in cmds and "resume" in cmds,
            f"audit log holds the mutating commands: {cmds}")
    f.check(all(x["uid"] == os.getuid() for x in lines), "audit lines carry the uid")
    f.check("status" not in cmds, "read-only commands are not audited")
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM (after restart)")


def check_broken_yaml(f):
    rig = OpsRig()
    good = rig.yaml(strategy="canary", canary=0)
    rig.start(good)
    gen0 = rig.status()["generation"]
    broken = {
        # kind: (text, the line the error must name)
        "syntax": (good + "canary: [1, 2\n", None),
        "unknown key": (good + "colour: red\n", len(good.splitlines()) + 1),
        "bad value": (good.replace("percent: 0", "percent: 140"), None),
    }
    for kind, (text, line) in broken.items():
        if line is None:
            # the line of the change: first differing line, or the appended one
            old, new = good.splitlines(), text.splitlines()
            line = next((i + 1 for i, (a, b) in enumerate(zip(old, new)) if a != b),
                        len(old) + 1)
        failures = rig.status()["last_reload"]["failures"]
        write_atomic(rig.cfg, text)

        def refused():
            r = rig.status()["last_reload"]
            return r["failures"] > failures and r["error"]

        err = harness.wait_for(refused, timeout=3, what=f"{kind} YAML refused")
        f.check(f"{rig.cfg}:{line}:" in err or f"{rig.cfg}:{line + 1}:" in err,
                f"{kind}: the error names the line ({line}): {err!r}")
        st = rig.status()
        f.check(st["generation"] == gen0 and st["canary_percent"] == 0,
                f"{kind}: the old config stays in force")
        f.check(rig.variants_seen(10) == {"blue"}, f"{kind}: still serving the old routing")
        rc, out, errtxt = rig.ctl("reload")
        f.check(rc == 1 and f"{rig.cfg}:" in errtxt, f"{kind}: turnoutctl reload fails: {errtxt}")
        rc, out, _ = rig.ctl("status", as_json=False)
        f.check(rc == 0 and "LAST RELOAD FAILED" in out and f"{rig.cfg}:" in out,
                f"{kind}: human status shows the error")

    # a fixed file clears the error; the edit is in force within 1 s (measured by traffic)
    t0 = time.monotonic()
    write_atomic(rig.cfg, good.replace("percent: 0", "percent: 100"))
    harness.wait_for(lambda: rig.variant_of_one_request() == "green", timeout=3,
                     interval=0.01, what="canary 100% in force")
    took = time.monotonic() - t0
    print(f"YAML edit in force after {took * 1000:.0f} ms")
    f.check(took < 1.0, f"a YAML edit is in force within 1 s (took {took:.3f} s)")
    f.check(rig.status()["last_reload"]["error"] is None, "a good reload clears the error")

    # a limit the workers read at start: reloaded, with a note that it waits for a restart
    write_atomic(rig.cfg, rig.yaml(strategy="canary", canary=100,
                                   extra="limits:\n  max_body: 1MiB\n"))
    note = harness.wait_for(lambda: rig.status()["restart_pending"], timeout=3,
                            what="the start-only limit change noted in status")
    f.check("after a restart" in note, f"status shows the pending restart: {note}")
    f.check(rig.status()["last_reload"]["error"] is None, "the limit change was reloaded")

    # a change that needs a new socket is refused, saying so
    write_atomic(rig.cfg, rig.yaml(strategy="canary", canary=100, listen=harness.free_port()))
    rc, out, errtxt = rig.ctl("reload")
    f.check(rc == 1 and "restart needed" in errtxt, f"listen change refused: {errtxt}")
    f.check(rig.variants_seen(5) == {"green"}, "still serving after a refused listen change")
    write_atomic(rig.cfg, rig.yaml(strategy="canary", canary=100).replace("workers: 2",
                                                                          "workers: 3"))
    rc, out, errtxt = rig.ctl("reload")
    f.check(rc == 1 and "workers changed: restart needed" in errtxt,
            f"workers change refused: {errtxt}")
    f.check(rig.variants_seen(5) == {"green"}, "still serving after a refused workers change")
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM")


def check_yaml_switch_rollback(f):
    """Blue/green switched by editing the YAML: rollback returns to the previous color."""
    rig = OpsRig()
    rig.start(rig.yaml(strategy="bluegreen"))
    f.check(rig.variants_seen(5) == {"blue"}, "blue live from the YAML")
    write_atomic(rig.cfg, rig.yaml(strategy="bluegreen", stable="green", candidate="blue"))
    harness.wait_for(lambda: rig.status()["stable"] == "green", timeout=3,
                     what="stable: green from the edited YAML")
    f.check(rig.variants_seen(5) == {"green"}, "green live after the YAML edit")
    r = rig.ctl_ok("rollback")
    f.check("green -> blue" in r["message"], f"rollback names the color change: {r['message']}")
    f.check(rig.variants_seen(5) == {"blue"}, "rollback after a YAML switch: the previous color")
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM")


def check_inflight_reload(f):
    """A request in flight keeps the snapshot it started with, even when the
    reload removes its variant."""
    rig = OpsRig()
    rig.start(rig.yaml(strategy="bluegreen"))
    blue_port, green_port = rig.backends["blue"][1], rig.backends["green"][1]
    result = {}

    def slow():
        result["r"] = harness.http_request(rig.port, "GET", "/slow?ms=1500", timeout=20)

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    harness.wait_for(lambda: json.loads(harness.http_request(blue_port, "GET", "/_stats")[2])
                     ["inflight"] == 1, timeout=5, what="slow request in flight on blue")
    gen = rig.status()["generation"]
    write_atomic(rig.cfg, "\n".join([
        f"listen: 127.0.0.1:{rig.port}", "workers: 2", "admin:", f"  socket: {rig.sock}",
        f"  audit_log: {rig.audit}", f"state_file: {rig.state}", "variants:",
        f"  green: {{ endpoints: [http://127.0.0.1:{green_port}] }}", "strategy: bluegreen",
        "stable: green"]) + "\n")
    harness.wait_for(lambda: rig.status()["generation"] == gen + 1, timeout=3,
                     what="the config without blue in force")
    f.check(t.is_alive(), "the slow request was still in flight when the reload took effect")
    f.check(rig.variants_seen(5) == {"green"} and "blue" not in rig.status()["variants"],
            "new requests go to green; blue is gone")
    t.join(timeout=20)
    st, hdrs, _ = result.get("r", (None, {}, b""))
    f.check(st == 200 and hdrs.get("x-turnout-variant") == "blue"
            and hdrs.get("x-backend") == "blue",
            f"the in-flight request finished on its old snapshot (blue): {st} {hdrs}")
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM")


def check_peer_uid(f):
    if os.getuid() != 0:
        print("peer uid check needs root to run turnoutctl as another uid: checked in CI only")
        return
    rig = OpsRig()
    # the socket is reachable by nogroup (mode 0660) but only uid 0 may command
    text = rig.yaml(extra_admin="group: nogroup\nallow_uids: [0]")
    rig.start(text)
    st = os.stat(rig.sock)
    f.check(st.st_mode & 0o777 == 0o660, f"socket mode 0660 with a group ({oct(st.st_mode)})")
    rc, out, err = rig.ctl("switch", "green", user=NOBODY)
    f.check(rc == 1 and "uid 65534" in err and "allow_uids" in err,
            f"nobody is refused: rc={rc} {err!r}")
    f.check(rig.variants_seen(5) == {"blue"}, "the refused command changed nothing")
    f.check("refused peer uid 65534" in rig.router.output(), "the refusal is logged")
    rc, out, err = rig.ctl("status")
    f.check(rc == 0, "root is allowed")
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM")

    # without the group the socket is 0600: nobody cannot even connect
    rig.start(rig.yaml())
    f.check(os.stat(rig.sock).st_mode & 0o777 == 0o600, "socket mode 0600 by default")
    rc, out, err = rig.ctl("status", user=NOBODY)
    f.check(rc == 3 and rig.sock in err and "Permission denied" in err,
            f"nobody gets permission denied, with the path: {err!r}")
    rc, out, err = rig.ctl("status", sock=os.path.join(rig.dir, "missing.sock"))
    f.check(rc == 3 and "missing.sock" in err, f"a missing socket is named: {err!r}")
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM")


def check_commands(f):
    rig = OpsRig()
    rig.start(rig.yaml(strategy="bluegreen"))
    for args, want in ((("canary", "10"), "strategy is bluegreen"),
                       (("switch", "purple"), 'no variant "purple"'),
                       (("shadow", "150"), "shadow: PERCENT"),
                       (("switch", "green", "--now"), "usage: switch VARIANT [--force]")):
        rc, out, err = rig.ctl(*args)
        f.check(rc == 1 and want in err, f"turnoutctl {' '.join(args)} refused: {err!r}")
    f.check(f"warn: operator: uid {os.getuid()}: canary 10 -> " in rig.router.output(),
            "a refused operator command is logged as a warning")
    rc, out, err = rig.ctl("frobnicate")
    f.check(rc == 2 and "unknown command" in err, f"a typo is a usage error: {err!r}")
    r = rig.ctl_ok("switch", "blue")
    f.check("already live" in r["message"], "switch to the live color changes nothing")
    rc, out, err = rig.ctl("switch", "green", as_json=False)
    f.check(rc == 0 and "blue -> green" in out, f"human output of switch: {out!r}")
    f.check(rig.variants_seen(10) == {"green"}, "switch green in force")
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM")
    rig.start()  # same YAML: the operator's switch is applied again at start
    f.check(rig.variants_seen(10) == {"green"}, "switch green survives a restart")
    f.check(rig.status()["override"]["kinds"] == ["stable"], "status: the switch override")
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM")

    # canary: switch needs --force; promote, then rollback to the old stable
    os.unlink(rig.state)
    rig.start(rig.yaml(strategy="canary", canary=20))
    rc, out, err = rig.ctl("switch", "green")
    f.check(rc == 1 and "use promote" in err, f"switch under canary needs --force: {err!r}")
    r = rig.ctl_ok("promote")
    f.check(rig.variants_seen() == {"green"}, f"promote: all green ({r['message']})")
    st = rig.status()
    f.check(st["stable"] == "green" and st["canary_percent"] == 0,
            "status after promote: green stable, canary 0")
    r = rig.ctl_ok("rollback")
    f.check(rig.variants_seen() == {"blue"} and "green -> blue" in r["message"],
            f"rollback after promote returns to blue: {r['message']}")

    # a variant with no healthy endpoint: switch refused unless --force (needs the
    # health checker of issue 8, router/health.c)
    if os.path.exists(os.path.join(harness.SRC_DIR, "router", "health.c")):
        rig.backends["green"][0].stop()
        harness.wait_for(lambda: not rig.status()["variants"]["green"]["healthy"],
                         timeout=10, what="green seen unhealthy")
        rc, out, err = rig.ctl("switch", "green")
        f.check(rc == 1 and "no healthy endpoint" in err, f"switch to a dead variant: {err!r}")
        rig.ctl_ok("switch", "green", "--force")
        f.check(rig.status()["stable"] == "green", "switch --force to a dead variant")
    else:
        print("no health checker yet (router/health.c): switch to a dead variant not checked")
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM")

    # a state file that cannot be written: the command is refused and nothing changes
    rig2 = OpsRig()
    rig2.state = "/nonexistent-turnout-dir/state.json"
    rig2.start(rig2.yaml(strategy="bluegreen"))
    rc, out, err = rig2.ctl("switch", "green")
    f.check(rc == 1 and rig2.state in err, f"unwritable state file refuses the switch: {err!r}")
    f.check(rig2.variants_seen(5) == {"blue"}, "a refused switch changed nothing")
    f.check(rig2.stop() == 0, "router exits 0 on SIGTERM")


def check_stats(f):
    rig = OpsRig()
    # all live traffic to blue; every request mirrored to green, compared on "method"
    text = rig.yaml(strategy="canary", canary=0, extra=(
        'shadow:\n  percent: 100\n  compare:\n    - { path: "method", mode: exact }\n'))
    rig.start(text)
    n = 30
    f.check(rig.variants_seen(n) == {"blue"}, "live traffic on blue")

    def mirrored():
        return rig.ctl_ok("stats", "green")["variants"]["green"]["shadow"]["mirrored"] >= n

    harness.wait_for(mirrored, timeout=5, what="mirrors counted")
    r = rig.ctl_ok("stats")
    blue, green = r["variants"]["blue"], r["variants"]["green"]
    f.check(blue["requests"] == n and blue["errors"] == 0 and blue["status_2xx"] == n,
            f"stats counts the live requests: {blue}")
    f.check(blue["p50_ms"] > 0 and blue["p50_ms"] <= blue["p90_ms"] <= blue["p99_ms"],
            "latency quantiles are ordered")
    f.check(green["requests"] == 0 and green["shadow"]["agreement"] == 1.0,
            f"green only mirrored, and agreed on every compared pair: {green['shadow']}")
    rc, out, err = rig.ctl("stats", "purple")
    f.check(rc == 1 and "purple" in err, f"stats of an unknown variant: {err!r}")
    rc, out, err = rig.ctl("stats", "blue", as_json=False)
    f.check(rc == 0 and "p99_ms:" in out and "green" not in out, "human stats of one variant")
    r = rig.ctl_ok("rollback")
    f.check(any("shadow" in a for a in r["actions"]), f"rollback stops mirroring: {r['actions']}")
    f.check(rig.status()["shadow_percent"] == 0, "shadow at 0 after rollback")
    f.check(rig.stop() == 0, "router exits 0 on SIGTERM")


def main():
    f = harness.Failures()
    t0 = time.monotonic()
    check_rollback_persists(f)
    check_broken_yaml(f)
    check_commands(f)
    check_stats(f)
    check_yaml_switch_rollback(f)
    check_inflight_reload(f)
    check_peer_uid(f)
    print(f"took {time.monotonic() - t0:.1f} s")
    f.finish()


if __name__ == "__main__":
    main()
