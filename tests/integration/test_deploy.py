"""Validate every file under deploy/{systemd,container,k8s,prometheus} (issue 10).

systemd: `systemd-analyze verify` on both units (ExecStart paths rewritten to the
build's bin/), `systemd-analyze security --offline` exposure, the options the
runbook relies on, and each predictor env file started exactly the way the
templated unit would start it (real turnout-predictor, real socket, SIGTERM ->
exit 0); a wrong --sha256 must stop it.
k8s: every manifest parsed with python3-yaml: kinds, selectors matching pod
labels, Service targetPorts / probes / scrape annotations resolving to declared
container ports, the ConfigMap mounted where `-c` points, the router config's
endpoints naming real predictor Services, and the config accepted by `turnout -t`.
prometheus: `promtool check config`, `check rules`, `test rules` (and the rule
tests must fail when a threshold is broken), targets consistent with the units.
container: stages, non-root USER, COPY sources present, and the runtime stage's
packages providing every shared library the built binaries link.

Prints "N passed, M failed" and exits non-zero on any failure.
"""

import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

DEPLOY = os.path.join(harness.SRC_DIR, "deploy")
F = harness.Failures()
TMP = harness.tmpdir()


def skip(what, why):
    print(f"SKIP: {what}: {why}")


def run(argv, timeout=60, **kw):
    """Run a command; return (rc, combined output)."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    except subprocess.TimeoutExpired as e:  # run() has killed it
        out = (e.stdout or b"").decode("utf-8", "replace")
        return None, f"{argv[0]} still running after {timeout}s (killed)\n{out}"
    return p.returncode, p.stdout.decode("utf-8", "replace")


def sha256_of(path):
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def placeholder(binary):
    """True while bin/BINARY is still the placeholder main.c (its issue not landed yet)."""
    rc, out = run([harness.bin_path(binary), "--help"], timeout=10)
    return "not built yet" in out


# ---------------------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------------------

def parse_unit(path):
    """{section: {key: [values...]}} of a unit file (repeated keys kept in order)."""
    units = {}
    section = None
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = units.setdefault(line[1:-1], {})
                continue
            if "=" not in line or section is None:
                raise AssertionError(f"{path}:{lineno}: not KEY=VALUE in a section: {line!r}")
            k, v = line.split("=", 1)
            section.setdefault(k.strip(), []).append(v.strip())
    return units


def parse_env(path):
    """KEY=VALUE lines of an EnvironmentFile (comments and blank lines skipped)."""
    env = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
            if not m:
                raise AssertionError(f"{path}:{lineno}: not KEY=VALUE: {line!r}")
            v = m.group(2)
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            env[m.group(1)] = v
    return env


def expand_exec(cmdline, env):
    """systemd's ExecStart expansion: ${VAR} is one word, $VAR splits on whitespace."""
    argv = []
    for word in shlex.split(cmdline):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv += env.get(m.group(1), "").split()
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""),
                           word))
    return argv


def one(unit, section, key):
    vals = unit.get(section, {}).get(key, [])
    return vals[-1] if vals else None


def check_unit_options():
    router = parse_unit(os.path.join(DEPLOY, "systemd", "turnout.service"))
    pred = parse_unit(os.path.join(DEPLOY, "systemd", "turnout-predictor@.service"))
    for name, u in (("turnout.service", router), ("turnout-predictor@.service", pred)):
        F.check(one(u, "Service", "Type") in ("exec", "notify"), f"{name}: Type=exec or notify")
        for key, want in (("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"),
                          ("PrivateTmp", "yes"), ("ProtectHome", "yes")):
            F.check(one(u, "Service", key) == want, f"{name}: {key}={want}")
        F.check(one(u, "Service", "User") not in (None, "root", "0")
                or one(u, "Service", "DynamicUser") == "yes",
                f"{name}: runs as a dedicated user (User= or DynamicUser=yes)")
        F.check(one(u, "Install", "WantedBy") == "multi-user.target", f"{name}: WantedBy")
    F.check(one(router, "Service", "ExecStart") == "/usr/local/bin/turnout -c /etc/turnout/turnout.yaml",
            "turnout.service: ExecStart runs /usr/local/bin/turnout -c /etc/turnout/turnout.yaml")
    F.check(one(router, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID",
            "turnout.service: ExecReload=/bin/kill -HUP $MAINPID")
    F.check(one(router, "Service", "RuntimeDirectory") == "turnout",
            "turnout.service: RuntimeDirectory=turnout (admin socket)")
    F.check(one(router, "Service", "StateDirectory") == "turnout",
            "turnout.service: StateDirectory=turnout (state file)")
    F.check(one(pred, "Service", "EnvironmentFile") == "/etc/turnout/predictor-%i.env",
            "turnout-predictor@.service: EnvironmentFile=/etc/turnout/predictor-%i.env")
    exec_start = one(pred, "Service", "ExecStart") or ""
    F.check(exec_start.startswith("/usr/local/bin/turnout-predictor "),
            "turnout-predictor@.service: ExecStart runs /usr/local/bin/turnout-predictor")
    # admin.group makes the router chgrp its socket: the syscall filter must allow chown.
    denied = " ".join(v[1:] for v in router.get("Service", {}).get("SystemCallFilter", [])
                      if v.startswith("~")).split()
    F.check(not {"@privileged", "@chown", "chown", "fchown", "fchownat"} & set(denied),
            f"turnout.service: SystemCallFilter leaves chown allowed (denies {denied})")
    # The sysusers entry creates the User= the router unit names.
    with open(os.path.join(DEPLOY, "systemd", "turnout.sysusers")) as f:
        users = [ln.split()[1] for ln in f if ln.strip() and not ln.startswith("#")
                 and ln.split()[0] == "u"]
    F.check(one(router, "Service", "User") in users,
            f"turnout.sysusers creates User={one(router, 'Service', 'User')} (has {users})")
    return router, pred


def check_systemd_analyze():
    sa = shutil.which("systemd-analyze")
    if not sa:
        skip("systemd-analyze verify/security", "systemd-analyze is not installed")
        return
    d = os.path.join(TMP, "units")
    os.makedirs(d)
    for name in ("turnout.service", "turnout-predictor@.service"):
        with open(os.path.join(DEPLOY, "systemd", name)) as f:
            text = f.read()
        # verify needs every Exec*= binary to exist: point them at the build's.
        text = text.replace("/usr/local/bin/", harness.BIN_DIR.rstrip("/") + "/")
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    for b in ("turnout", "turnout-predictor"):
        harness.bin_path(b)
    os.symlink("turnout-predictor@.service", os.path.join(d, "turnout-predictor@v1.service"))
    units = [os.path.join(d, "turnout.service"), os.path.join(d, "turnout-predictor@v1.service")]
    rc, out = run([sa, "verify"] + units, timeout=60)
    # Unknown keys and bad values are only warnings (exit 0): any output is a failure.
    F.check(rc == 0 and out.strip() == "", f"systemd-analyze verify clean (rc {rc}):\n{out}")
    for u in units:
        rc, out = run([sa, "security", "--offline=yes", u], timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
        if rc != 0 and not m and "offline" in out:
            skip("systemd-analyze security", f"this systemd has no --offline: {out.strip()[:200]}")
            continue
        level = float(m.group(1)) if m else None
        F.check(level is not None and level < 2.0,
                f"systemd-analyze security {os.path.basename(u)}: exposure {level} < 2.0")
        print(f"systemd-analyze security {os.path.basename(u)}: exposure {level}")


def check_predictor_env_files(pred_unit):
    envs = sorted(glob.glob(os.path.join(DEPLOY, "systemd", "predictor-*.env")))
    F.check(len(envs) >= 2, f"at least two predictor env files (v1, v2): {envs}")
    exec_start = one(pred_unit, "Service", "ExecStart")
    running = {}
    for path in envs:
        name = os.path.basename(path)
        instance = name[len("predictor-"):-len(".env")]
        env = parse_env(path)
        missing = [k for k in ("MODEL", "NAME", "VERSION", "LISTEN", "THREADS") if k not in env]
        F.check(not missing, f"{name}: defines MODEL NAME VERSION LISTEN THREADS (missing {missing})")
        if missing:
            continue
        F.check(env["VERSION"] == instance, f"{name}: VERSION={env['VERSION']} matches instance")
        model = os.path.join(harness.MODELS_DIR, os.path.basename(env["MODEL"]))
        F.check(env["MODEL"].startswith("/usr/local/share/turnout/models/") and os.path.exists(model),
                f"{name}: MODEL {env['MODEL']} is a bundled model installed by cmake --install")
        if not os.path.exists(model):
            continue
        m = re.search(r"--sha256\s+([0-9a-f]{64})", env.get("EXTRA_ARGS", ""))
        F.check(m is not None and m.group(1) == sha256_of(model),
                f"{name}: --sha256 in EXTRA_ARGS is the sha256 of {os.path.basename(model)}")
        started = start_like_unit(name, exec_start, env, model)
        if started:
            running[env["VERSION"]] = started
    return running


def start_like_unit(name, exec_start, env, model):
    """Start the predictor with argv expanded from the unit's ExecStart and this env.

    Returns (Proc, port) of the running predictor, or None (failure recorded).
    """
    if placeholder("turnout-predictor"):
        skip(f"{name}: start the predictor as the unit would", "bin/turnout-predictor is still "
             "the placeholder")
        return None
    # The integrity check is live: a wrong digest must refuse to start.
    bad = dict(env, MODEL=model, EXTRA_ARGS="--sha256 " + "0" * 64,
               LISTEN=f"127.0.0.1:{harness.free_port()}")
    argv = expand_exec(exec_start, bad)
    argv[0] = harness.bin_path("turnout-predictor")
    rc, out = run(argv, timeout=30)
    F.check(rc not in (0, None) and "sha256" in out.lower(),
            f"{name}: a wrong --sha256 stops the predictor with a message (rc {rc}): {out[:300]}")

    port = harness.free_port()
    argv = expand_exec(exec_start, dict(env, MODEL=model, LISTEN=f"127.0.0.1:{port}"))
    argv[0] = harness.bin_path("turnout-predictor")
    p = harness.Proc(argv, name=f"unit-{name}")
    if not wait_up(p, port, "/v2/health/ready", f"{name}: predictor started as the unit would "
                                                 f"start it ({' '.join(argv)})"):
        return None
    path = f"/v2/models/{env['NAME']}/versions/{env['VERSION']}/ready"
    st, _, body = harness.http_request(port, "GET", path)
    F.check(st == 200, f"{name}: GET {path} -> {st} {body[:200]!r}")
    return p, port


def wait_up(p, port, path, what, timeout=20):
    """Wait until GET path answers 200 or p dies; record the check; kill p on failure."""

    def ready_or_dead():
        if not p.alive():
            return "dead"
        try:
            return harness.http_request(port, "GET", path, timeout=1)[0] == 200
        except OSError:
            return False

    try:
        state = harness.wait_for(ready_or_dead, timeout=timeout, what=what)
    except AssertionError:
        state = "timeout"
    F.check(state is True, f"{what}: {state}\n{p.output()}")
    if state is not True:
        p.stop(signal.SIGKILL, timeout=10)
    return state is True


def stop_expect_0(p, what):
    """SIGTERM (systemd's KillSignal) must end p with exit code 0."""
    try:
        rc = p.stop(signal.SIGTERM, timeout=20)
    except AssertionError as e:  # stop() killed it after the timeout
        rc = str(e)
    F.check(rc == 0, f"{what}: exits 0 on SIGTERM (got {rc}):\n{p.output()[-3000:]}")


def check_router_like_unit(router_unit, preds):
    """turnout.service's ExecStartPre, ExecStart, ExecReload and stop on the real router.

    The config is the k8s ConfigMap's, with ports and paths moved to this test's
    and the variants pointed at the predictors started from the env files.
    """
    if placeholder("turnout"):
        skip("turnout.service commands on the real router", "bin/turnout is still the placeholder")
        return
    cm = [d for d in load_k8s() if d.get("kind") == "ConfigMap"]
    if not cm or len(preds) < 2:
        F.check(False, "router as a unit: needs the ConfigMap and two running predictors")
        return
    cfg = yaml.safe_load(cm[0]["data"]["turnout.yaml"])
    port, admin = harness.free_port(), harness.free_port()
    cfg["listen"] = f"127.0.0.1:{port}"
    cfg["admin"] = {"socket": os.path.join(TMP, "admin.sock"), "http": f"127.0.0.1:{admin}"}
    cfg["state_file"] = os.path.join(TMP, "state.json")
    for vname, v in cfg["variants"].items():
        F.check(vname in preds, f"router as a unit: variant {vname} has a predictor env file")
        if vname in preds:
            v["endpoints"] = [f"http://127.0.0.1:{preds[vname][1]}"]
    path = os.path.join(TMP, "turnout.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)

    def cmd(key):
        line = one(router_unit, "Service", key).replace("/etc/turnout/turnout.yaml", path)
        return line.replace("/usr/local/bin/", harness.BIN_DIR.rstrip("/") + "/")

    rc, out = run(shlex.split(cmd("ExecStartPre")), timeout=30)
    F.check(rc == 0, f"turnout.service ExecStartPre accepts the config (rc {rc}): {out[:1000]}")
    p = harness.Proc(shlex.split(cmd("ExecStart")), name="unit-turnout")
    if not wait_up(p, admin, "/status", "turnout.service ExecStart: admin /status answers"):
        return
    pixels, _ = harness.load_heldout()
    body = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels[0]}]}

    def infer():
        st, hdr, data = harness.http_request(port, "POST", "/v2/models/digits/infer", body=body)
        return (st, hdr) if st == 200 else None

    try:
        st, hdr = harness.wait_for(infer, timeout=15, what="an inference through the router")
    except AssertionError as e:
        st, hdr = str(e), {}
    F.check(st == 200 and hdr.get("x-turnout-variant") == cfg["stable"],
            f"an inference through the router: 200 from {cfg['stable']} "
            f"(got {st}, variant {hdr.get('x-turnout-variant')})")
    # systemctl reload: ExecReload with $MAINPID; the new percent must be in force.
    cfg["shadow"]["percent"] = 20
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    rc, out = run(shlex.split(cmd("ExecReload").replace("$MAINPID", str(p.pid))), timeout=10)
    F.check(rc == 0, f"turnout.service ExecReload (rc {rc}): {out}")

    def reloaded():
        st, _, data = harness.http_request(admin, "GET", "/status", timeout=2)
        return st == 200 and json.loads(data).get("shadow_percent") == 20

    try:
        ok = harness.wait_for(reloaded, timeout=10, what="shadow_percent 20 after the reload")
    except AssertionError:
        ok = False
    F.check(ok and p.alive(), f"after ExecReload the router runs the new config:\n{p.output()[-2000:]}")
    stop_expect_0(p, "turnout (as turnout.service stops it)")


# ---------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------

def load_k8s():
    docs = []
    kdir = os.path.join(DEPLOY, "k8s")
    for path in sorted(glob.glob(os.path.join(kdir, "*.yaml"))):
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d is not None:
                    d["__file"] = os.path.basename(path)
                    docs.append(d)
    return docs


def subset(small, big):
    return bool(small) and all(big.get(k) == v for k, v in small.items())


def container_port(pod_spec, ref):
    """The containerPort number a probe/Service port (name or number) refers to, or None."""
    for c in pod_spec["containers"]:
        for p in c.get("ports", []):
            if ref == p.get("name") or ref == p.get("containerPort"):
                return p["containerPort"]
    return None


def check_k8s():
    docs = load_k8s()
    kust = [d for d in docs if d.get("kind") == "Kustomization"]
    objs = [d for d in docs if d.get("kind") != "Kustomization"]
    files = sorted({d["__file"] for d in objs})
    F.check(len(kust) == 1 and sorted(kust[0].get("resources", [])) == files,
            f"kustomization.yaml lists every manifest: {files}")
    for d in objs:
        F.check(d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"),
                f"{d['__file']}: apiVersion, kind and metadata.name set")
    kinds = sorted(d["kind"] for d in objs)
    by_kind = {k: [d for d in objs if d["kind"] == k] for k in set(kinds)}
    deps = by_kind.get("Deployment", [])
    svcs = by_kind.get("Service", [])
    cms = by_kind.get("ConfigMap", [])
    F.check(len(deps) == 3 and len(cms) == 1 and len(svcs) >= 1,
            f"k8s: 3 Deployments (v1, v2, router), 1 ConfigMap, Services (kinds: {kinds})")
    predictors, routers = [], []
    for d in deps:
        name = d["metadata"]["name"]
        tmpl = d["spec"]["template"]
        labels = tmpl["metadata"].get("labels", {})
        F.check(subset(d["spec"]["selector"].get("matchLabels", {}), labels),
                f"Deployment {name}: selector.matchLabels match the pod template's labels")
        spec = tmpl["spec"]
        F.check(spec.get("securityContext", {}).get("runAsNonRoot") is True,
                f"Deployment {name}: runAsNonRoot")
        ann = tmpl["metadata"].get("annotations", {})
        F.check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/path") == "/metrics",
                f"Deployment {name}: prometheus.io/scrape=true, path /metrics")
        try:
            scrape_port = int(ann.get("prometheus.io/port", "x"))
        except ValueError:
            scrape_port = None
        F.check(scrape_port is not None and container_port(spec, scrape_port) == scrape_port,
                f"Deployment {name}: prometheus.io/port {ann.get('prometheus.io/port')} is a container port")
        for c in spec["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                hg = c.get(probe, {}).get("httpGet")
                F.check(hg is not None and container_port(spec, hg.get("port")) is not None,
                        f"Deployment {name}: {probe} is an HTTP GET on a declared container port")
        cmd = spec["containers"][0].get("command", []) + spec["containers"][0].get("args", [])
        (predictors if "turnout-predictor" in cmd[0] else routers).append((d, cmd))
    F.check(len(predictors) == 2 and len(routers) == 1,
            f"k8s: two predictor Deployments and one router ({[d['metadata']['name'] for d in deps]})")
    for s in svcs:
        sel = s["spec"].get("selector", {})
        hits = [d for d in deps if subset(sel, d["spec"]["template"]["metadata"].get("labels", {}))]
        F.check(len(hits) == 1, f"Service {s['metadata']['name']}: selects exactly one Deployment's "
                                f"pods (got {[h['metadata']['name'] for h in hits]})")
        for p in s["spec"]["ports"]:
            for h in hits:
                F.check(container_port(h["spec"]["template"]["spec"], p.get("targetPort", p["port"]))
                        is not None, f"Service {s['metadata']['name']}: targetPort {p.get('targetPort')} "
                                     f"is a port of {h['metadata']['name']}")
        s["__targets"] = hits
    services = {s["metadata"]["name"]: s for s in svcs}
    pred_services = {}
    for d, cmd in predictors:
        check_predictor_deployment(d, cmd)
        for s in svcs:
            if d in s["__targets"]:
                pred_services[s["metadata"]["name"]] = s
    if routers and cms:
        check_router_deployment(routers[0][0], routers[0][1], cms[0], services, pred_services)


def flag(cmd, name):
    return cmd[cmd.index(name) + 1] if name in cmd and cmd.index(name) + 1 < len(cmd) else None


def check_predictor_deployment(d, cmd):
    name = d["metadata"]["name"]
    spec = d["spec"]["template"]["spec"]
    c = spec["containers"][0]
    F.check(c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready",
            f"Deployment {name}: readiness probe is /v2/health/ready")
    F.check(c["livenessProbe"]["httpGet"]["path"] in ("/v2/health/live", "/v2/health/ready"),
            f"Deployment {name}: liveness probe is /v2/health/live")
    listen = flag(cmd, "--listen") or ""
    port = int(listen.rsplit(":", 1)[1]) if ":" in listen else None
    F.check(port is not None and container_port(spec, port) == port,
            f"Deployment {name}: --listen {listen} is the declared containerPort")
    model = flag(cmd, "--model") or ""
    local = os.path.join(harness.MODELS_DIR, os.path.basename(model))
    F.check(model.startswith("/usr/local/share/turnout/models/") and os.path.exists(local),
            f"Deployment {name}: --model {model} is a bundled model")
    F.check(os.path.exists(local) and flag(cmd, "--sha256") == sha256_of(local),
            f"Deployment {name}: --sha256 is the sha256 of {os.path.basename(model)}")
    version = d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/version")
    F.check(flag(cmd, "--version") == version and version in os.path.basename(model),
            f"Deployment {name}: --version {flag(cmd, '--version')} matches its label and model")


def check_router_deployment(d, cmd, cm, services, pred_services):
    name = d["metadata"]["name"]
    spec = d["spec"]["template"]["spec"]
    c = spec["containers"][0]
    cfg_path = flag(cmd, "-c") or ""
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    cm_vols = [v for v in vols.values() if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
    F.check(len(cm_vols) == 1, f"Deployment {name}: a volume of ConfigMap {cm['metadata']['name']}")
    if not cm_vols:
        return
    m = mounts.get(cm_vols[0]["name"])
    F.check(m is not None and m["mountPath"] == os.path.dirname(cfg_path) and "subPath" not in m,
            f"Deployment {name}: the ConfigMap is mounted (as a directory) at {os.path.dirname(cfg_path)}")
    key = os.path.basename(cfg_path)
    F.check(key in cm.get("data", {}), f"ConfigMap has key {key} (the file -c names)")
    if key not in cm.get("data", {}):
        return
    text = cm["data"][key]
    cfg = yaml.safe_load(text)
    # Ports: listen = the port the Service targets; admin.http = probes and scrape port.
    listen_port = int(str(cfg["listen"]).rsplit(":", 1)[1])
    admin_port = int(str(cfg["admin"]["http"]).rsplit(":", 1)[1])
    F.check(str(cfg["admin"]["http"]).startswith("0.0.0.0:"),
            "router config: admin.http listens on all pod addresses (probes, scrape)")
    router_svcs = [s for s in services.values() if d in s["__targets"]]
    F.check(router_svcs and all(container_port(spec, p.get("targetPort")) == listen_port
                                for s in router_svcs for p in s["spec"]["ports"]),
            f"router Service targets the config's listen port {listen_port}")
    F.check(container_port(spec, c["readinessProbe"]["httpGet"]["port"]) == admin_port
            and c["readinessProbe"]["httpGet"]["path"] == "/status"
            and container_port(spec, c["livenessProbe"]["httpGet"]["port"]) == admin_port,
            f"router probes: GET /status on admin.http port {admin_port}")
    drain = re.fullmatch(r"(\d+)s", str(cfg.get("limits", {}).get("drain_timeout", "10s")))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    F.check(drain is not None and grace > int(drain.group(1)),
            f"router: terminationGracePeriodSeconds {grace} outlasts limits.drain_timeout")
    ann = d["spec"]["template"]["metadata"]["annotations"]
    F.check(ann.get("prometheus.io/port") == str(admin_port),
            f"router prometheus.io/port is admin.http's port {admin_port}")
    # With readOnlyRootFilesystem, the socket and state directories must be volumes.
    for what, path in (("admin.socket", cfg["admin"]["socket"]), ("state_file", cfg["state_file"])):
        F.check(any(mm["mountPath"] == os.path.dirname(path) and not mm.get("readOnly")
                    for mm in mounts.values()),
                f"router config: {what} {path} lies in a writable volume")
    # Every endpoint names a predictor Service on its port.
    for vname, v in cfg["variants"].items():
        for ep in v["endpoints"]:
            mm = re.fullmatch(r"http://([a-z0-9.-]+):(\d+)", ep)
            host = mm.group(1).split(".")[0] if mm else None
            svc = pred_services.get(host)
            F.check(svc is not None and any(p["port"] == int(mm.group(2)) for p in svc["spec"]["ports"]),
                    f"router config: variant {vname} endpoint {ep} is a predictor Service and port")
    for role in ("stable", "candidate"):
        F.check(cfg.get(role) in cfg["variants"], f"router config: {role} names a variant")
    # The router itself must accept the file.
    path = os.path.join(TMP, "k8s-turnout.yaml")
    with open(path, "w") as f:
        f.write(text)
    if placeholder("turnout"):
        skip("turnout -t on the ConfigMap's config", "bin/turnout is still the placeholder")
        return
    rc, out = run([harness.bin_path("turnout"), "-t", "-c", path], timeout=30)
    F.check(rc == 0, f"turnout -t -c accepts the ConfigMap's turnout.yaml (rc {rc}): {out[:1000]}")


# ---------------------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------------------

REQUIRED_ALERT_METRICS = ("turnout_requests_total", "turnout_request_duration_seconds_bucket",
                          "turnout_shadow_comparisons_total", "turnout_variant_healthy")


def check_prometheus():
    pdir = os.path.join(DEPLOY, "prometheus")
    promtool = shutil.which("promtool")
    F.check(promtool is not None, "promtool installed (Debian package prometheus)")
    if promtool:
        rc, out = run([promtool, "check", "config", "prometheus.yml"], cwd=pdir)
        F.check(rc == 0, f"promtool check config prometheus.yml (rc {rc}):\n{out}")
        rc, out = run([promtool, "check", "rules", "turnout-rules.yml"], cwd=pdir)
        F.check(rc == 0, f"promtool check rules turnout-rules.yml (rc {rc}):\n{out}")
        rc, out = run([promtool, "test", "rules", "turnout-rules.test.yml"], cwd=pdir)
        F.check(rc == 0 and "SUCCESS" in out, f"promtool test rules (rc {rc}):\n{out}")
        # The rule tests have teeth: a broken threshold must make them fail.
        d = os.path.join(TMP, "prom-mutant")
        shutil.copytree(pdir, d)
        rules = os.path.join(d, "turnout-rules.yml")
        with open(rules) as f:
            text = f.read()
        mutated = text.replace("variant:turnout_requests:rate5m > 0.01", "variant:turnout_requests:rate5m > 0.5")
        F.check(mutated != text, "mutation applied to the error-rate threshold")
        with open(rules, "w") as f:
            f.write(mutated)
        rc, out = run([promtool, "test", "rules", "turnout-rules.test.yml"], cwd=d)
        F.check(rc != 0, f"promtool test rules fails on a broken threshold (rc {rc})")
    with open(os.path.join(pdir, "turnout-rules.yml")) as f:
        groups = yaml.safe_load(f)["groups"]
    rules = [r for g in groups for r in g["rules"]]
    alerts = [r for r in rules if "alert" in r]
    exprs = " ".join(r["expr"] for r in rules)
    for mname in REQUIRED_ALERT_METRICS:
        F.check(mname in exprs, f"rules use {mname}")
    for a in alerts:
        F.check(a.get("labels", {}).get("severity") in ("info", "warning", "critical")
                and a.get("annotations", {}).get("summary"),
                f"alert {a['alert']}: severity label and summary annotation")
    names = {a["alert"] for a in alerts}
    for want in ("TurnoutVariantErrorRateHigh", "TurnoutVariantLatencyP99High",
                 "TurnoutShadowAgreementLow", "TurnoutNoHealthyEndpoint"):
        F.check(want in names, f"alert {want} defined")
    # The scrape targets are where the systemd units listen.
    with open(os.path.join(pdir, "prometheus.yml")) as f:
        prom = yaml.safe_load(f)
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    F.check(set(jobs) >= {"turnout-router", "turnout-predictor"},
            f"scrape jobs turnout-router and turnout-predictor ({sorted(jobs)})")
    pred_targets = {t for sc in jobs.get("turnout-predictor", {}).get("static_configs", [])
                    for t in sc["targets"]}
    env_listens = {parse_env(p)["LISTEN"] for p in glob.glob(os.path.join(DEPLOY, "systemd", "predictor-*.env"))}
    F.check(pred_targets == env_listens,
            f"predictor scrape targets {sorted(pred_targets)} are the env files' LISTEN {sorted(env_listens)}")


# ---------------------------------------------------------------------------------------
# Container
# ---------------------------------------------------------------------------------------

def parse_containerfile(path):
    """[(stage name, base, [(instruction, args)])] with continuation lines joined."""
    stages = []
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append((name, parts[0], []))
        elif stages:
            stages[-1][2].append((instr, args.strip()))
    return stages


def needed_libs(binary):
    rc, out = run(["readelf", "-d", binary])
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out) if rc == 0 else None


def resolved_libs(binary):
    """{soname: path} as the dynamic loader resolves binary's libraries (ldd)."""
    rc, out = run(["ldd", binary])
    return dict(re.findall(r"^\s*(\S+) => (/\S+)", out, re.M))


def packages_of(paths):
    """{path: Debian package} for the paths dpkg knows (one dpkg -S call; usrmerge aware)."""
    cands = {}
    for p in paths:
        real = os.path.realpath(p)
        for c in (p, real, real.replace("/usr/lib/", "/lib/", 1), real.replace("/lib/", "/usr/lib/", 1)):
            cands.setdefault(c, p)
    p = subprocess.run(["dpkg", "-S"] + sorted(cands), stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, timeout=60)
    found = {}
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        m = re.match(r"^([^:,\s]+)(?::[a-z0-9]+)?: (/\S+)$", line)
        if m and m.group(2) in cands:
            found[cands[m.group(2)]] = m.group(1)
    return found


def check_container():
    path = os.path.join(DEPLOY, "container", "Containerfile")
    stages = parse_containerfile(path)
    F.check(len(stages) >= 2, f"Containerfile is multi-stage ({len(stages)} stages)")
    if len(stages) < 2:
        return
    build, runtime = stages[0], stages[-1]
    F.check(build[1] == "debian:12" and re.fullmatch(r"debian:12(-slim)?", runtime[1]),
            f"Containerfile: Debian 12 bases ({build[1]}, {runtime[1]})")
    F.check(any(i == "RUN" and "deploy/install-deps.sh" in a for i, a in build[2]),
            "Containerfile: the build stage runs deploy/install-deps.sh")
    users = [a for i, a in runtime[2] if i == "USER"]
    F.check(users and users[-1].split(":")[0] not in ("root", "0"),
            f"Containerfile: the runtime stage runs as a non-root USER ({users})")
    F.check(any(i == "COPY" and a.startswith(f"--from={build[0]} ") for i, a in runtime[2]),
            "Containerfile: the runtime stage copies the build stage's install tree")
    F.check(not any(i == "RUN" and ("install-deps" in a or "-dev" in a) for i, a in runtime[2]),
            "Containerfile: no build dependencies in the runtime stage")
    for name, _, instrs in stages:
        for i, a in instrs:
            if i == "COPY" and not a.startswith("--from"):
                srcs = a.split()[:-1]
                for s in srcs:
                    F.check(os.path.exists(os.path.join(harness.SRC_DIR, s)),
                            f"Containerfile: COPY source {s} exists in the source tree")
    # The runtime packages provide every library the binaries link.
    pkgs = set()
    for i, a in runtime[2]:
        if i == "RUN" and "apt-get install" in a:
            after = a.split("apt-get install", 1)[1].split("&&")[0]
            pkgs |= {w for w in after.split() if not w.startswith("-")}
    F.check(bool(pkgs), f"Containerfile: runtime packages listed ({sorted(pkgs)})")
    if not (shutil.which("readelf") and shutil.which("dpkg") and shutil.which("ldd")):
        skip("runtime libraries vs packages", "needs readelf, ldd and dpkg")
        return
    allowed = set(pkgs) | {"libc6", "libgcc-s1"}  # essential in every debian:12 image
    for p in pkgs:
        rc, out = run(["dpkg-query", "-W", "-f=${Depends}", p])
        if rc == 0:
            allowed |= {re.split(r"[ (:]", dep.strip())[0] for alt in out.split(",")
                        for dep in alt.split("|")}
    wanted = []
    for b in ("turnout", "turnoutctl", "turnout-predictor"):
        binary = harness.bin_path(b)
        libs = needed_libs(binary)
        F.check(libs is not None, f"readelf -d {b}")
        where = resolved_libs(binary)
        for so in libs or []:
            if re.match(r"lib(asan|ubsan|lsan|tsan)\.", so):
                continue  # sanitizer builds only
            wanted.append((b, so, where.get(so)))
    pkgs_of = packages_of([path for _, _, path in wanted if path])
    for b, so, path in wanted:
        pkg = pkgs_of.get(path)
        F.check(pkg in allowed, f"Containerfile runtime packages provide {so} of {b} "
                                f"({path}, package {pkg})")


def main():
    print(f"deploy dir: {DEPLOY}")
    router_unit, pred_unit = check_unit_options()
    check_systemd_analyze()
    preds = check_predictor_env_files(pred_unit)
    check_router_like_unit(router_unit, preds)
    for version, (p, _) in sorted(preds.items()):
        stop_expect_0(p, f"predictor {version} (as turnout-predictor@{version} stops it)")
    check_k8s()
    check_prometheus()
    check_container()
    F.finish()


if __name__ == "__main__":
    main()
