"""`cmake --install` and configure, as a packager meets them (issue 2).

1. `cmake --install BUILD --prefix A`, then the whole tree is moved to B (the
   install is relocatable): bin/ has the three programs, share/turnout/conf the
   example configs (each passes `turnout -t` from B), share/turnout/models the
   two models with their cards, and no binary carries an RPATH/RUNPATH.
2. From B alone: two predictors serve the installed models (--sha256 card
   checks them against the installed cards), the router runs the installed
   conf/turnout.yaml (only ports and writable paths changed to free/temporary
   ones), classifies a held-out digit through it, turnoutctl reads its status;
   SIGTERM: everything exits 0.
3. A missing library stops configure with the Debian package that ships it:
   configure with PKG_CONFIG_LIBDIR lacking one .pc file, and the message's
   `apt-get install PKG` names the package dpkg says owns that .pc file.
"""

import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PROGRAMS = ["turnout", "turnoutctl", "turnout-predictor"]
CONFS = ["turnout.yaml", "canary.yaml", "shadow.yaml", "bluegreen.yaml"]
MODELS = ["digits-v1.onnx", "digits-v1.md", "digits-v2.onnx", "digits-v2.md"]
# One module early, one in the middle, and the test-only one (cmocka).
MISSING = ["libevent_openssl", "jansson", "cmocka"]


def run(argv, timeout=120, **kw):
    return subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          **kw)


def check_tree(f, top):
    for p in PROGRAMS:
        path = os.path.join(top, "bin", p)
        f.check(os.access(path, os.X_OK), f"installed bin/{p} is executable")
        r = run(["readelf", "-d", path])
        f.check(r.returncode == 0 and b"RPATH" not in r.stdout and b"RUNPATH" not in r.stdout,
                f"bin/{p} has no RPATH/RUNPATH")
    for c in CONFS:
        path = os.path.join(top, "share", "turnout", "conf", c)
        with open(os.path.join(harness.SRC_DIR, "conf", c), "rb") as a:
            want = a.read()
        got = open(path, "rb").read() if os.path.exists(path) else None
        f.check(got == want, f"share/turnout/conf/{c} is conf/{c}")
        r = run([os.path.join(top, "bin", "turnout"), "-t", "-c", path], cwd=top)
        f.check(r.returncode == 0, f"installed turnout -t accepts the installed {c}: "
                                   f"{r.stdout!r} {r.stderr!r}")
    for m in MODELS:
        path = os.path.join(top, "share", "turnout", "models", m)
        f.check(os.path.isfile(path), f"share/turnout/models/{m} installed")
    for man in ["man1/turnout.1", "man1/turnout-predictor.1", "man8/turnoutctl.8"]:
        f.check(os.path.isfile(os.path.join(top, "share", "man", man)), f"share/man/{man}")


def router_config(text, ports, tmp):
    """The installed demo config on free ports and temporary paths; each swap must happen."""
    swaps = [("127.0.0.1:8080", f"127.0.0.1:{ports['router']}"),
             ("127.0.0.1:9001", f"127.0.0.1:{ports['v1']}"),
             ("127.0.0.1:9002", f"127.0.0.1:{ports['v2']}"),
             ("127.0.0.1:9090", f"127.0.0.1:{ports['admin']}"),
             ("/run/turnout/admin.sock", os.path.join(tmp, "admin.sock")),
             ("/var/lib/turnout/", tmp + "/")]
    missing = []
    for old, new in swaps:
        if old not in text:
            missing.append(old)
        text = text.replace(old, new)
    return text, missing


def check_runs(f, top, tmp):
    pixels, labels = harness.load_heldout()
    gold = {}
    for v in ("1", "2"):
        with open(os.path.join(harness.MODELS_DIR, f"digits-v{v}.golden.json")) as fh:
            gold[v] = json.load(fh)["labels"]
    # a sample both models get right, so the answer is the same whoever serves it
    i = next(k for k in range(len(labels)) if gold["1"][k] == gold["2"][k] == labels[k])
    ports = {k: harness.free_port() for k in ("v1", "v2", "router", "admin")}
    procs = []
    for v in ("1", "2"):
        model = os.path.join(top, "share", "turnout", "models", f"digits-v{v}.onnx")
        p = harness.Proc([os.path.join(top, "bin", "turnout-predictor"), "--model", model,
                          "--name", "digits", "--version", v, "--listen",
                          f"127.0.0.1:{ports['v' + v]}", "--threads", "1", "--sha256", "card"],
                         name=f"installed-predictor-v{v}", cwd=tmp)
        procs.append(p)
        harness.wait_http_ok(ports["v" + v], "/v2/health/ready", proc=p)
    with open(os.path.join(top, "share", "turnout", "conf", "turnout.yaml")) as fh:
        text, missing = router_config(fh.read(), ports, tmp)
    f.check(not missing, f"the installed turnout.yaml has the demo's ports and paths ({missing})")
    cfg = os.path.join(tmp, "turnout.yaml")
    with open(cfg, "w") as fh:
        fh.write(text)
    r = harness.Proc([os.path.join(top, "bin", "turnout"), "-c", cfg], name="installed-turnout",
                     cwd=tmp)
    procs.append(r)
    harness.wait_http_ok(ports["admin"], "/status", proc=r)
    harness.wait_for(lambda: harness.port_open(ports["router"]), what="router port open")
    body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                        "data": pixels[i]}]}
    st, hdr, data = harness.http_request(ports["router"], "POST", "/v2/models/digits/infer", body,
                                         headers={"X-User-Id": "installed"})
    got = None
    if st == 200:
        out = {o["name"]: o["data"] for o in json.loads(data)["outputs"]}
        got = out.get("label", [None])[0]
    f.check(st == 200 and got == labels[i],
            f"a digit through the installed stack: HTTP {st}, label {got} == {labels[i]}")
    f.check(hdr.get("x-turnout-variant") in ("blue", "green"), f"answered by a variant ({hdr})")
    c = run([os.path.join(top, "bin", "turnoutctl"), "-s", os.path.join(tmp, "admin.sock"),
             "status"], timeout=30, cwd=tmp)
    f.check(c.returncode == 0 and b"strategy: canary" in c.stdout,
            f"installed turnoutctl status: {c.returncode} {c.stdout[:200]!r} {c.stderr!r}")
    for p in reversed(procs):
        rc = p.stop()
        f.check(rc == 0, f"{p.name} exits 0 on SIGTERM (exit {rc})")
        if rc != 0:
            sys.stderr.write(p.output())


def pc_dir_without(module, tmp):
    """A pkg-config search directory holding every .pc file found but MODULE's."""
    d = os.path.join(tmp, f"pc-no-{module}")
    os.makedirs(d)
    r = run(["pkg-config", "--variable", "pc_path", "pkg-config"])
    for src in r.stdout.decode().strip().split(":"):
        if not os.path.isdir(src):
            continue
        for name in os.listdir(src):
            if name.endswith(".pc") and name != module + ".pc" \
                    and not os.path.exists(os.path.join(d, name)):
                os.symlink(os.path.join(src, name), os.path.join(d, name))
    return d


def check_missing_library(f, tmp):
    for module in MISSING:
        pcdir = run(["pkg-config", "--variable", "pcfiledir", module]).stdout.decode().strip()
        owner = run(["dpkg-query", "-S", os.path.join(pcdir, module + ".pc")])
        debpkg = owner.stdout.decode().split(":")[0] if owner.returncode == 0 else None
        f.check(debpkg, f"dpkg knows which package ships {module}.pc ({owner.stderr!r})")
        env = dict(os.environ, PKG_CONFIG_LIBDIR=pc_dir_without(module, tmp))
        env.pop("PKG_CONFIG_PATH", None)
        r = run(["cmake", "-S", harness.SRC_DIR, "-B", os.path.join(tmp, f"conf-no-{module}")],
                env=env)
        err = re.sub(r"\s+", " ", r.stderr.decode())
        named = re.search(r"apt-get install (\S+)", err)
        f.check(r.returncode != 0, f"configure without {module}.pc fails (exit {r.returncode})")
        f.check(named is not None and named.group(1) == debpkg and module in err,
                f"configure without {module}.pc names {module} and 'apt-get install {debpkg}': "
                f"{err[-400:]!r}")


def main():
    f = harness.Failures()
    build = os.environ.get("TURNOUT_BUILD_DIR") or os.path.dirname(harness.BIN_DIR)
    tmp = harness.tmpdir()
    first, moved = os.path.join(tmp, "prefix-a"), os.path.join(tmp, "moved", "prefix-b")
    r = run(["cmake", "--install", build, "--prefix", first])
    f.check(r.returncode == 0, f"cmake --install {build} --prefix {first}: {r.stderr!r}")
    os.makedirs(os.path.dirname(moved))
    os.rename(first, moved)
    check_tree(f, moved)
    work = os.path.join(tmp, "run")
    os.makedirs(work)
    check_runs(f, moved, work)
    check_missing_library(f, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    f.finish()


if __name__ == "__main__":
    main()
