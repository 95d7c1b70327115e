"""docs/RUNBOOK.md, run as written: every ```sh block, in order, in one bash.

The runbook is what an operator pastes into one shell, so the blocks are joined
into one bash script (variables, shell functions and background jobs carry
over from block to block, as in a terminal) with `set -e`: a failing command
fails the test, naming its block. Only these are substituted:
  - `BIN=$PWD/build/bin` -> the binaries under test (TURNOUT_BIN_DIR);
  - `RUN=/tmp/turnout-rollout` -> a fresh temporary directory;
  - 127.0.0.1:8080/9090/9001/9002 -> free loopback ports (any other address or
    port in a command block fails the test: traffic stays on 127.0.0.1);
  - a line `! CMD` (a command that must fail) must fail here: bash's `set -e`
    ignores `!`, so the test turns it into an explicit check.
Then, for each block:
  - the key outputs are checked against values the test computes itself: the
    label agreement of v1 and v2 from their golden outputs, the canary split
    of the 360 users from the sticky hash (SHA-256 of salt, NUL, user id);
  - every summary line the runbook shows in the ```text block after it
    (`served: ...`, `canary: ...`, `bluegreen: ...`, `... exited N`) must be
    printed verbatim by that block, so the document cannot drift from the code.
Every process the runbook starts is stopped by its last block with SIGTERM and
must exit 0 (under ASan that is where leaks show). Bounded: 150 s at most.

README.md's 5-minute tour is run the same way, against the setup deploy/run.sh
makes (conf/turnout.yaml, both predictors), with paths and ports moved.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

RUNBOOK = os.path.join(harness.SRC_DIR, "docs", "RUNBOOK.md")
PORTS = (8080, 9090, 9001, 9002)
TIME_LIMIT = 150 if os.environ.get("TURNOUT_SANITIZED") else 90
SUMMARY = re.compile(r"^(served: |canary: |bluegreen: |\w+ exited \d+$)")

f = harness.Failures()


def blocks(text):
    """[(lang, body)] of every fenced block, in order."""
    out = []
    for m in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", text, re.M | re.S):
        out.append((m.group(1), m.group(2)))
    return out


def substitute(body, ports, bin_dir, run_dir):
    body = body.replace("BIN=$PWD/build/bin", f"BIN={bin_dir}")
    body = body.replace("RUN=/tmp/turnout-rollout", f"RUN={run_dir}")
    body = body.replace("/tmp/turnout-rollout", run_dir)
    for old, new in ports.items():
        body = re.sub(rf"127\.0\.0\.1:{old}\b", f"127.0.0.1:{new}", body)
    return body


def must_fail(body):
    """`! CMD` lines -> an explicit failure when CMD succeeds (set -e ignores `!`)."""
    lines = []
    for line in body.splitlines():
        m = re.match(r"^! (.*)$", line)
        if m:
            cmd = m.group(1)
            line = (f"if {cmd}; then echo 'RUNBOOK: should have failed: "
                    f"{cmd.replace(chr(39), '')}' >&2; exit 97; fi")
        lines.append(line)
    return "\n".join(lines) + "\n"


def bucket(salt, key):
    md = hashlib.sha256(salt.encode() + b"\0" + key.encode()).digest()
    return int.from_bytes(md[:8], "big") % 10000


def stop_group(proc):
    """Stop whatever the script left running (a block failed before the stop
    block): it is all in the script's own process group. SIGTERM, then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap the script itself, or it stays in the group
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def free_ports():
    """{documented port: a distinct free loopback port} for each of PORTS."""
    ports = {}
    for _ in range(100):
        p = harness.free_port()
        if p not in ports.values():
            ports[PORTS[len(ports)]] = p
        if len(ports) == len(PORTS):
            return ports
    raise AssertionError("no distinct free ports")


def expected_agreement():
    labels = []
    for v in ("digits-v1", "digits-v2"):
        with open(os.path.join(harness.MODELS_DIR, f"{v}.golden.json")) as fh:
            labels.append(json.load(fh)["labels"])
    agree = sum(1 for a, b in zip(*labels) if a == b)
    return agree, len(labels[0]) - agree


def readme_tour():
    """README.md's tour against what deploy/run.sh starts, moved to free ports."""
    with open(os.path.join(harness.SRC_DIR, "README.md")) as fh:
        readme = fh.read()
    tour = readme[readme.find("## A 5-minute tour"):]
    tour_blocks = [b for lang, b in blocks(tour) if lang == "sh"]
    f.check(len(tour_blocks) >= 1, "README.md has a 5-minute tour with an sh block")
    if not tour_blocks:
        return
    d = harness.tmpdir()
    ports = free_ports()
    with open(os.path.join(harness.SRC_DIR, "conf", "turnout.yaml")) as fh:
        conf = fh.read()
    conf = conf.replace("/run/turnout", d).replace("/var/lib/turnout", d)
    conf = substitute(conf, ports, harness.BIN_DIR, d)
    conf_path = os.path.join(d, "turnout.yaml")
    with open(conf_path, "w") as fh:
        fh.write(conf)
    blue = harness.start_predictor("digits-v1.onnx", version="1", port=ports[9001])
    green = harness.start_predictor("digits-v2.onnx", version="2", port=ports[9002])
    router = harness.Proc([harness.bin_path("turnout"), "-c", conf_path], name="tour-router")
    harness.wait_http_ok(ports[9090], "/status", proc=router)
    body = substitute(tour_blocks[0], ports, harness.BIN_DIR, d)
    body = body.replace("build/bin/", harness.BIN_DIR + "/")
    env = dict(os.environ, TURNOUT_ADMIN_SOCKET=os.path.join(d, "admin.sock"))
    env["PATH"] = os.path.dirname(sys.executable) + ":" + env.get("PATH", "/usr/bin:/bin")
    p = subprocess.run(["bash", "-e", "-c", body], cwd=harness.SRC_DIR, env=env, timeout=60,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    f.check(p.returncode == 0, f"README tour exits 0 (got {p.returncode})\n{out}")
    for want in ("X-Turnout-Variant: ", '"label"', "canary: stable blue, candidate green, canary 10%",
                 "canary: 25% of live traffic to green (was 10%)", "rollback: canary 25% -> 0%",
                 "resume: ", 'turnout_shadow_comparisons_total{variant="green",result="agree"}'):
        f.check(want in out, f"README tour prints {want!r}\n{out}")
    for proc in (router, blue, green):
        f.check(proc.stop() == 0, f"tour: {proc.name} exits 0 on SIGTERM\n{proc.output()[-2000:]}")


def main():
    with open(RUNBOOK) as fh:
        text = fh.read()
    all_blocks = blocks(text)
    sh = [i for i, (lang, _) in enumerate(all_blocks) if lang == "sh"]
    f.check(len(sh) >= 15, f"RUNBOOK.md has {len(sh)} sh blocks (expected the whole rollout)")
    langs = {lang for lang, _ in all_blocks}
    f.check(langs <= {"sh", "text", "yaml"}, f"only sh/text/yaml fences, got {sorted(langs)}")

    # Every address in a command block is one the test can move to a free port.
    for i in sh:
        body = all_blocks[i][1]
        for m in re.finditer(r"(\d+\.\d+\.\d+\.\d+|localhost)(:(\d+))?", body):
            ok = m.group(1) == "127.0.0.1" and m.group(3) and int(m.group(3)) in PORTS
            f.check(ok, f"sh block {i}: address {m.group(0)} is not one of 127.0.0.1:{PORTS}")
    f.check(text.count("BIN=$PWD/build/bin") == 1, "one `BIN=$PWD/build/bin` line to substitute")
    f.check(text.count("RUN=/tmp/turnout-rollout") == 1, "one `RUN=/tmp/turnout-rollout` line")

    ports = free_ports()
    run_dir = harness.tmpdir()
    bin_dir = harness.BIN_DIR
    for name in ("turnout", "turnoutctl", "turnout-predictor"):
        harness.bin_path(name)

    script = ["set -e"]
    for n, i in enumerate(sh):
        body = must_fail(substitute(all_blocks[i][1], ports, bin_dir, run_dir))
        script.append(f"echo '@@BLOCK {n}@@'\n{body}echo '@@END {n}@@'")
    path = os.path.join(run_dir, "runbook.sh")
    with open(path, "w") as fh:
        fh.write("\n".join(script) + "\n")

    env = dict(os.environ)
    # `python3` in the runbook: the interpreter running this test (Debian's).
    env["PATH"] = os.path.dirname(sys.executable) + ":" + env.get("PATH", "/usr/bin:/bin")
    logpath = os.path.join(run_dir, "runbook.out")
    t0 = time.monotonic()
    with open(logpath, "wb") as log:
        proc = subprocess.Popen(["bash", path], cwd=harness.SRC_DIR, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=TIME_LIMIT)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            stop_group(proc)
    elapsed = time.monotonic() - t0
    with open(logpath, "rb") as fh:
        out = fh.read().decode("utf-8", "replace")

    # Split the output per block.
    outputs = {}
    for m in re.finditer(r"^@@BLOCK (\d+)@@\n(.*?)(?=^@@END \1@@$|\Z)", out, re.M | re.S):
        outputs[int(m.group(1))] = m.group(2)
    ended = {int(x) for x in re.findall(r"^@@END (\d+)@@$", out, re.M)}
    f.check(rc == 0, f"runbook script exit code {rc} (None = over {TIME_LIMIT}s)")
    f.check(ended == set(range(len(sh))),
            f"every sh block ran to its end (missing: {sorted(set(range(len(sh))) - ended)})")
    if rc != 0 or ended != set(range(len(sh))):
        last = max(outputs) if outputs else None
        sys.stderr.write(f"--- output of the last block ({last}), source:\n")
        if last is not None:
            sys.stderr.write(all_blocks[sh[last]][1])
            sys.stderr.write("--- its output:\n" + outputs[last])
        for name in ("router.log", "green.log", "blue.log"):
            p = os.path.join(run_dir, name)
            if os.path.exists(p):
                with open(p, errors="replace") as fh:
                    sys.stderr.write(f"--- {name} (tail):\n" + "".join(fh.readlines()[-20:]))

    def block_output(needle):
        """Output of the one sh block whose source contains needle."""
        hits = [n for n, i in enumerate(sh) if needle in all_blocks[i][1]]
        f.check(len(hits) == 1, f"exactly one sh block contains {needle!r} (found {len(hits)})")
        return outputs.get(hits[0], "") if hits else ""

    # The shown summary lines are what the commands print.
    for n, i in enumerate(sh):
        nxt = all_blocks[i + 1] if i + 1 < len(all_blocks) else ("", "")
        if nxt[0] != "text" or n not in outputs:
            continue
        for line in nxt[1].splitlines():
            if SUMMARY.match(line):
                want = substitute(line, ports, bin_dir, run_dir)
                f.check(want in outputs[n].splitlines(),
                        f"sh block {n}: shown line {line!r} is printed\n{outputs[n]}")

    # Key outputs, computed independently.
    agree, disagree = expected_agreement()
    salt = "digits-v2-rollout"
    users = [f"user-{k}" for k in range(360)]

    def green_users(pct):
        return sum(1 for u in users if bucket(salt, u) < pct * 100)

    o = block_output('cat > "$CONF"')
    f.check("test is successful" in o, "the written config passes turnout -t")

    o = block_output("GREEN=$!\nwait_until 15 curl -fs http://127.0.0.1:9001")
    f.check("canary: stable blue, candidate green, canary 0%, shadow 0%" in o,
            f"v1 live: status summary\n{o}")
    o = block_output("X-User-Id: alice")
    f.check("X-Turnout-Variant: blue" in o and '"data":[7]' in o,
            f"one request served by blue, label 7\n{o}")
    f.check("served: blue=360 | status: 200=360" in o, f"all 360 users on blue\n{o}")

    o = block_output("grep -A 6 'shadow:'")
    m = re.search(r"agree: (\d+)\s+disagree: (\d+)\s+errors: (\d+)", o)
    f.check(m is not None and (int(m.group(1)), int(m.group(2)), int(m.group(3)))
            == (agree, disagree, 0),
            f"shadow: agree/disagree/errors = {agree}/{disagree}/0 as the golden labels say\n{o}")
    o = block_output("turnout_shadow_(requests|comparisons)_total")
    f.check(f'turnout_shadow_comparisons_total{{variant="green",result="agree"}} {agree}' in o,
            f"/metrics agree = {agree}\n{o}")
    o = block_output('wc -l < "$RUN/disagreements.jsonl"')
    lines = o.splitlines()
    # The log is written by its own thread: by now it holds at least one line
    # and never more than one per disagreement.
    f.check(bool(lines) and lines[0].isdigit() and 1 <= int(lines[0]) <= disagree,
            f"1..{disagree} lines in the disagreement log\n{o}")
    f.check(len(lines) > 1 and lines[1].startswith("disagree outputs[name=label].data live ["),
            f"a logged disagreement has the rule and both answers\n{o}")

    for pct in (5, 25, 50):
        o = block_output(f"s/percent: [0-9.]*/percent: {pct}/' \"$CONF\"\n")
        g = green_users(pct)
        f.check(f"canary {pct}%," in o, f"canary {pct}%: status says so\n{o}")
        f.check(f"served: blue={360 - g} green={g} | status: 200=360" in o,
                f"canary {pct}%: {g} of 360 users on green, as the sticky hash says\n{o}")
    g50 = green_users(50)

    o = block_output("--name digits-2")
    f.check(f"status: 200={360 - g50} 404={g50}" in o, f"regression: green's users get 404\n{o}")
    o = block_output('"$BIN/turnoutctl" rollback\n"$BIN/turnoutctl" status')
    f.check("[ROLLBACK IN FORCE]" in o and "served: blue=360 | status: 200=360" in o,
            f"rollback: everyone on blue\n{o}")
    o = block_output("9002/v2/models/digits/ready")
    f.check(f"served: blue={360 - g50} green={g50} | status: 200=360" in o,
            f"resume: the same users on green again\n{o}")
    o = block_output('"$BIN/turnoutctl" promote')
    f.check("served: green=360 | status: 200=360" in o, f"promote: everyone on green\n{o}")
    o = block_output("strategy: bluegreen/")
    f.check(o.count("served: blue=360") == 1 and o.count("served: green=360") == 1,
            f"blue/green: switch then rollback move everyone\n{o}")
    o = block_output('! "$BIN/turnout" -t')
    f.check('stable: no variant named "purple"' in o and "[LAST RELOAD FAILED]" in o,
            f"a refused reload names the line and is shown in status\n{o}")
    o = block_output('kill -TERM "$BLUE"; wait "$BLUE"')
    f.check("no healthy endpoint" in o and "served: green=360 | status: 200=360" in o,
            f"unhealthy blue: switch refused, clients unaffected\n{o}")
    o = block_output("corrupt state file")
    f.check("state.json.corrupt-" in o and "bluegreen: stable green," in o,
            f"corrupt state: set aside, the YAML's routing\n{o}")
    o = block_output('kill -TERM "$ROUTER" "$GREEN" "$BLUE"')
    for who in ("router", "green", "blue"):
        f.check(f"{who} exited 0" in o, f"{who} exits 0 on SIGTERM\n{o}")
    f.check(not os.path.exists(os.path.join(run_dir, "admin.sock")),
            "the admin socket is removed at a clean exit")
    f.check(elapsed < TIME_LIMIT, f"runbook took {elapsed:.1f}s")
    readme_tour()
    print(f"runbook: {len(sh)} sh blocks in {elapsed:.1f}s, ports {ports}, agreement "
          f"{agree}/360, canary 5/25/50% = {green_users(5)}/{green_users(25)}/{g50} users")
    f.finish()


if __name__ == "__main__":
    main()
