"""Metrics, access log and reload counters of the real router, scraped by real Prometheus.

A router (canary 30%, every stable request mirrored to the candidate, two real
backends, 2 workers, access log to a file) gets
a known number of requests (some answered 404 by the backend). Then:
- /metrics passes `promtool check metrics`, and turnout_requests_total per
  variant and code equals what the clients saw (X-Turnout-Variant), exactly;
  the duration histogram counts the same; every stable request was mirrored
  and compared (shadow counters); traffic_percent and health gauges
  match the config; reloads (good and refused) and the generation are counted.
- Prometheus (Debian's binary) scrapes the admin port every 1 s; the query
  sum(turnout_requests_total) returns the number of requests sent.
- The access log has one JSON line per request with the fields of the answer;
  after a rename and SIGUSR1 the next lines go to a new file.
- The process gauges move: open connections and in-flight requests.
- The predictor's own /metrics passes promtool too.
Every process stops on SIGTERM with exit code 0.
"""

import concurrent.futures
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

CONFIG = """
listen: 127.0.0.1:{{port}}
workers: 2
admin:
  http: 127.0.0.1:{{admin_port}}
  socket: {sock}
access_log: {log}
variants:
  blue:  {{{{ endpoints: [http://127.0.0.1:{blue}] }}}}
  green: {{{{ endpoints: [http://127.0.0.1:{green}] }}}}
strategy: canary
stable: blue
candidate: green
canary:
  percent: {percent}
shadow:
  percent: 100
  compare:
    - {{{{ path: "path", mode: exact }}}}
"""

N_OK = 300
N_404 = 20
THREADS = 4


def drive(port, paths):
    """GET every path over THREADS keep-alive connections; return [(status, variant)]."""
    chunks = [paths[i::THREADS] for i in range(THREADS)]

    def run(chunk):
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for p in chunk:
                conn.request("GET", p)
                r = conn.getresponse()
                r.read()
                out.append((r.status, r.getheader("X-Turnout-Variant")))
        finally:
            conn.close()
        return out

    res = []
    with concurrent.futures.ThreadPoolExecutor(THREADS) as ex:
        for part in ex.map(run, chunks):
            res.extend(part)
    return res


def get_metrics(admin_port):
    st, hdrs, data = harness.http_request(admin_port, "GET", "/metrics")
    assert st == 200, st
    return hdrs, data.decode()


def value(text, series):
    m = re.search(r"^" + re.escape(series) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def promtool_check(F, text, what):
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    out = (r.stdout + r.stderr).decode()
    F.check(r.returncode == 0 and out.strip() == "", f"promtool check metrics clean for {what}: {out}")


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def check_access_log(F, path, results):
    harness.wait_for(lambda: count_lines(path) >= len(results), timeout=10,
                     what=f"{len(results)} access log lines")
    with open(path) as f:
        lines = [json.loads(line) for line in f]
    F.check(len(lines) == len(results), f"access log lines {len(lines)} == requests {len(results)}")
    want = sorted((s, v) for s, v in results)
    got = sorted((x["status"], x["variant"]) for x in lines)
    F.check(got == want, "access log (status, variant) pairs equal the answers")
    fields = {"time", "request_id", "client", "method", "path", "variant", "status",
              "latency_ms", "bytes", "endpoint", "shadow"}
    F.check(all(fields <= set(x) for x in lines), "every access log line has every field")
    F.check(all(x["client"] == "127.0.0.1" and x["method"] == "GET" for x in lines),
            "client and method logged")
    F.check(len({x["request_id"] for x in lines}) == len(lines), "request ids are unique")
    F.check(all(x["bytes"] > 0 for x in lines if x["status"] == 200), "bytes logged")
    F.check(all(x["shadow"] == ("mirrored" if x["variant"] == "blue" else None) for x in lines),
            "shadow outcome logged: stable requests mirrored, candidate requests not")


def prometheus_sum(prom_port):
    q = urllib.parse.urlencode({"query": "sum(turnout_requests_total)"})
    st, _, data = harness.http_request(prom_port, "GET", f"/api/v1/query?{q}", timeout=5)
    if st != 200:
        return None
    res = json.loads(data)["data"]["result"]
    return float(res[0]["value"][1]) if res else None


def check_prometheus(F, admin_port, expected):
    d = harness.tmpdir()
    prom_port = harness.free_port()
    cfg = os.path.join(d, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: turnout\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{admin_port}']\n")
    p = harness.Proc(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={d}/data",
                      f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                     name="prometheus")
    try:
        got = harness.wait_for(lambda: prometheus_sum(prom_port) == expected and expected,
                               timeout=40, interval=0.25,
                               what=f"Prometheus sum(turnout_requests_total) == {expected}")
        F.check(got == expected, f"Prometheus query returns {expected}")
    except AssertionError as e:
        F.check(False, f"{e}; last value {prometheus_sum(prom_port)}\n{p.output()[-2000:]}")
    rc = p.stop()
    F.check(rc == 0, f"prometheus exit code 0 on SIGTERM (got {rc})")
    shutil.rmtree(d, ignore_errors=True)


def check_process_gauges(F, r):
    """3 keep-alive client connections, one of them with a request in flight."""
    def gauge(name):
        return value(get_metrics(r.admin_port)[1], name)

    conns = [http.client.HTTPConnection("127.0.0.1", r.port, timeout=10) for _ in range(3)]
    try:
        for c in conns:
            c.request("GET", "/gauges")
            c.getresponse().read()

        def slow():
            conns[0].request("GET", "/slow?ms=1500")
            conns[0].getresponse().read()

        t = threading.Thread(target=slow, daemon=True)
        t.start()
        try:
            harness.wait_for(lambda: gauge("turnout_inflight_requests") == 1, timeout=5,
                             interval=0.05, what="one request in flight")
            F.check(True, "turnout_inflight_requests == 1 with a slow request")
        except AssertionError as e:
            F.check(False, str(e))
        F.check(gauge("turnout_open_connections") == 3,
                f"turnout_open_connections == 3 ({gauge('turnout_open_connections')})")
        t.join(timeout=10)
    finally:
        for c in conns:
            c.close()
    try:
        harness.wait_for(lambda: gauge("turnout_open_connections") == 0, timeout=5,
                         what="connections closed")
        F.check(gauge("turnout_inflight_requests") == 0, "nothing in flight at the end")
    except AssertionError as e:
        F.check(False, str(e))


def check_predictor(F):
    pred = harness.start_predictor()
    body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64],
                        "data": [0.0] * 64}]}
    st, _, _ = harness.http_request(pred.port, "POST", "/v2/models/digits/infer", body=body)
    F.check(st == 200, f"predictor answers an inference ({st})")
    st, _, data = harness.http_request(pred.port, "GET", "/metrics")
    F.check(st == 200, "predictor /metrics answers")
    text = data.decode()
    promtool_check(F, text, "turnout-predictor")
    F.check("predictor_requests_total" in text, "predictor_requests_total exported")
    rc = pred.stop()
    F.check(rc == 0, f"predictor exit code 0 on SIGTERM (got {rc})")


def main():
    F = harness.Failures()
    blue = backend.start_backend("blue")
    green = backend.start_backend("green")
    d = harness.tmpdir()
    log = os.path.join(d, "access.log")
    sock = os.path.join(d, "admin.sock")
    text = CONFIG.format(blue=blue.port, green=green.port, percent=30, log=log, sock=sock)
    r = backend.start_router(text)

    paths = [f"/predict?i={i}" for i in range(N_OK)] + ["/status?code=404"] * N_404
    results = drive(r.port, paths)
    F.check(all(s in (200, 404) for s, _ in results), "every request answered 200 or 404")
    seen = {}
    for s, v in results:
        seen[(v, f"{s // 100}xx")] = seen.get((v, f"{s // 100}xx"), 0) + 1

    hdrs, m = get_metrics(r.admin_port)
    F.check(hdrs.get("content-type", "").startswith("text/plain; version=0.0.4"),
            "exposition content type")
    promtool_check(F, m, "turnout")
    for var in ("blue", "green"):
        for code in ("1xx", "2xx", "3xx", "4xx", "5xx"):
            want = seen.get((var, code), 0)
            got = value(m, f'turnout_requests_total{{variant="{var}",code="{code}"}}')
            F.check(got == want, f"turnout_requests_total {var} {code}: {got} == {want}")
        n = sum(c for (v, _), c in seen.items() if v == var)
        got = value(m, f'turnout_request_duration_seconds_count{{variant="{var}"}}')
        F.check(got == n, f"duration histogram count {var}: {got} == {n}")
        got = value(m, f'turnout_request_duration_seconds_bucket{{variant="{var}",le="+Inf"}}')
        F.check(got == n, f"duration +Inf bucket {var}: {got} == {n}")
    n_blue = sum(c for (v, _), c in seen.items() if v == "blue")
    got = value(m, 'turnout_shadow_requests_total{variant="green"}')
    F.check(got == n_blue, f"every stable request mirrored to green: {got} == {n_blue}")

    def compared():
        t = get_metrics(r.admin_port)[1]
        return sum(value(t, f'turnout_shadow_comparisons_total{{variant="green",result="{x}"}}')
                   for x in ("agree", "disagree", "error"))
    harness.wait_for(lambda: compared() == n_blue, timeout=15, what="every mirror compared")
    m = get_metrics(r.admin_port)[1]
    got = value(m, 'turnout_shadow_rule_comparisons_total{variant="green",rule="path",result="agree"}')
    F.check(got == n_blue, f"rule 'path' agrees on every pair: {got} == {n_blue}")
    F.check(value(m, 'turnout_traffic_percent{variant="blue"}') == 70, "blue traffic 70%")
    F.check(value(m, 'turnout_traffic_percent{variant="green"}') == 30, "green traffic 30%")
    F.check(value(m, f'turnout_variant_healthy{{variant="green",endpoint="http://127.0.0.1:{green.port}"}}') == 1,
            "green endpoint healthy")
    F.check(value(m, "turnout_config_generation") == 1, "generation 1")
    F.check(value(m, "turnout_inflight_requests") == 0, "nothing in flight when idle")
    F.check((value(m, "process_resident_memory_bytes") or 0) > 1e6, "RSS reported")
    for fam in ("turnout_upstream_errors_total", "turnout_shadow_requests_total",
                "turnout_shadow_dropped_total", "turnout_shadow_comparisons_total",
                "turnout_config_reloads_total", "turnout_rollbacks_total",
                "turnout_open_connections", "process_start_time_seconds"):
        F.check(f"# TYPE {fam} " in m, f"{fam} exported with HELP/TYPE")

    check_access_log(F, log, results)
    # logrotate: move the file away, SIGUSR1, new lines land in a new file
    os.rename(log, log + ".1")
    r.signal(signal.SIGUSR1)
    harness.wait_for(lambda: "access_log: reopened" in r.output(), timeout=10, what="reopen")
    more = drive(r.port, [f"/after?i={i}" for i in range(10)])
    harness.wait_for(lambda: count_lines(log) >= 10, timeout=10, what="lines in the new file")
    F.check(count_lines(log) == 10, f"new access log has the 10 new lines ({count_lines(log)})")
    F.check(count_lines(log + ".1") == len(results), "rotated file kept its lines")
    total = len(results) + len(more)

    # reloads: a changed config is counted a success, a broken one a failure
    with open(r.config, "w") as f:
        f.write(text.format(port=r.port, admin_port=r.admin_port).replace("percent: 30",
                                                                           "percent: 40"))
    r.signal(signal.SIGHUP)
    harness.wait_for(lambda: value(get_metrics(r.admin_port)[1], "turnout_config_generation") == 2,
                     timeout=10, what="generation 2 after reload")
    with open(r.config, "a") as f:
        f.write("canary: [broken\n")
    r.signal(signal.SIGHUP)
    # (the file watcher may reload too: counts are compared with ops' own below)
    harness.wait_for(lambda: value(get_metrics(r.admin_port)[1],
                                   'turnout_config_reloads_total{result="failure"}') >= 1,
                     timeout=10, what="failed reload counted")
    m = get_metrics(r.admin_port)[1]
    ok_reloads = value(m, 'turnout_config_reloads_total{result="success"}')
    F.check(ok_reloads >= 1, f"the good reload counted ({ok_reloads})")
    F.check(value(m, 'turnout_traffic_percent{variant="green"}') == 40, "green traffic 40% now")
    promtool_check(F, m, "turnout after reloads")

    # an operator rollback: counted, and shown in /status with the audited command
    ctl = subprocess.run([harness.bin_path("turnoutctl"), "-s", sock, "rollback"],
                         capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    F.check(ctl.returncode == 0, f"turnoutctl rollback ({ctl.returncode}): {ctl.stderr}")
    m = get_metrics(r.admin_port)[1]
    F.check(value(m, "turnout_rollbacks_total") == 1, "turnout_rollbacks_total == 1")
    F.check(value(m, 'turnout_traffic_percent{variant="green"}') == 0, "green gets no traffic")
    st, _, data = harness.http_request(r.admin_port, "GET", "/status")
    doc = json.loads(data)
    F.check(doc["override"]["rollback"] is True, "/status shows the rollback in force")
    F.check(doc["last_reload"]["ok"] is False, "/status shows the last reload failed")

    def reloads_agree():
        lr = json.loads(harness.http_request(r.admin_port, "GET", "/status")[2])["last_reload"]
        t = get_metrics(r.admin_port)[1]
        return (lr["reloads"] == value(t, 'turnout_config_reloads_total{result="success"}')
                and lr["failures"] == value(t, 'turnout_config_reloads_total{result="failure"}'))
    try:
        harness.wait_for(reloads_agree, timeout=10, what="reload counts agree")
        F.check(True, "/status last_reload counts equal the reload metrics")
    except AssertionError as e:
        F.check(False, str(e))
    # /status holds everything `turnoutctl status` shows, with the same values
    ctl = subprocess.run([harness.bin_path("turnoutctl"), "-s", sock, "--json", "status"],
                         capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    F.check(ctl.returncode == 0, f"turnoutctl status ({ctl.returncode}): {ctl.stderr}")
    cst = json.loads(ctl.stdout)
    doc = json.loads(harness.http_request(r.admin_port, "GET", "/status")[2])
    for k in ("strategy", "stable", "candidate", "canary_percent", "shadow_percent",
              "generation", "override", "last_reload", "started_at", "restart_pending"):
        F.check(k in doc and doc[k] == cst[k], f"/status {k} == turnoutctl status: "
                                               f"{doc.get(k)!r} == {cst[k]!r}")
    F.check(doc["config"] == {"file": cst["config_file"], "sha256": cst["config_hash"]},
            f"/status config file and hash: {doc['config']}")
    for v in doc["variants"]:
        c = cst["variants"][v["name"]]
        F.check(v["healthy"] == c["healthy"] and v["requests"]["total"] == c["requests"]
                and v["requests"]["2xx"] == c["status_2xx"]
                and v["upstream_errors"] == c["upstream_errors"],
                f"/status variant {v['name']}: health and live counters as turnoutctl's")
    acts = doc.get("recent_actions", [])
    F.check(acts and "rollback" in acts[-1]["text"], f"/status recent_actions: {acts}")
    F.check(all(k in doc["variants"][0]["latency_us"] for k in ("p50", "p90", "p99", "p99.9")),
            "/status has p50/p90/p99/p99.9")

    check_prometheus(F, r.admin_port, total)
    check_process_gauges(F, r)
    rc = r.stop()
    F.check(rc == 0, f"turnout exit code 0 on SIGTERM (got {rc})")
    check_predictor(F)
    for b in (blue, green):
        b.stop()
    F.finish()


if __name__ == "__main__":
    main()
