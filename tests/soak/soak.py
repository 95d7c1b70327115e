"""The soak run behind tests/soak/run.sh (see there). Loopback only, bounded."""

import http.client
import json
import os
import random
import signal
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import backend  # noqa: E402
import harness  # noqa: E402

SECONDS = int(os.environ.get("SOAK_SECONDS", "300"))
THREADS = 4
PACE_S = 0.01  # per thread between requests: a steady, modest load
KILL_EVERY_S = int(os.environ.get("SOAK_KILL_EVERY", "20"))
DOWN_FOR_S = 5

CONFIG = """
listen: 127.0.0.1:{port}
workers: 2
variants:
  blue:  {{ endpoints: [http://127.0.0.1:{a}, http://127.0.0.1:{b}] }}
  green: {{ endpoints: [http://127.0.0.1:{c}] }}
strategy: canary
stable: blue
candidate: green
canary:
  percent: 20
  sticky: none
limits:
  upstream_timeout: 2s
health:
  interval: 500ms
  timeout: 400ms
"""


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ports = {n: harness.free_port() for n in "abc"}
    procs = {n: backend.start_backend(n, port=p) for n, p in ports.items()}
    # No admin HTTP server: its /status/history ring (300 one-second samples, allocated
    # up front) has its pages touched during its first 5 minutes, which is exactly this
    # run's window and would read as growth. Everything on the request path is here.
    port = harness.free_port()
    path = backend.write_config(CONFIG.format(port=port, **ports))
    router = harness.Proc([harness.bin_path("turnout"), "-c", path], name="turnout")
    router.port = port
    harness.wait_for(lambda: router.alive() and harness.port_open(port), timeout=15,
                     what="turnout listening")
    pid = router.p.pid
    stop = threading.Event()
    lock = threading.Lock()
    counts, causes, samples, kills = {}, {}, [], []
    t_start = time.monotonic()

    def worker(seed):
        rnd = random.Random(seed)
        conn = None
        for _ in range(10_000_000):
            if stop.is_set():
                break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
            try:
                if rnd.random() < 0.5:
                    conn.request("GET", "/x")
                else:
                    body = os.urandom(rnd.randint(1, 16384))
                    conn.request("POST", "/echo", body=body,
                                 headers={"Content-Type": "application/octet-stream"})
                r = conn.getresponse()
                data = r.read()
                key = r.status
                if r.status != 200:
                    try:
                        cause = json.loads(data).get("cause")
                    except ValueError:
                        cause = "?"
                    with lock:
                        causes[(r.status, cause)] = causes.get((r.status, cause), 0) + 1
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                key = "client:" + type(e).__name__
                conn.close()
                conn = None
            with lock:
                counts[key] = counts.get(key, 0) + 1
            time.sleep(PACE_S)
        if conn:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    victims = ["a", "b", "c"]
    next_kill, next_sample, k = t_start + KILL_EVERY_S, t_start, 0
    restart_at = None
    for _ in range(SECONDS * 20 + 100):  # bounded: 50 ms steps
        now = time.monotonic()
        if now - t_start >= SECONDS:
            break
        if now >= next_sample:
            samples.append((round(now - t_start), rss_kb(pid)))
            next_sample += 5
        if restart_at is None and now >= next_kill:
            victim = victims[k % len(victims)]
            procs[victim].kill()
            kills.append((round(now - t_start), victim))
            restart_at, k = now + DOWN_FOR_S, k + 1
        if restart_at is not None and now >= restart_at:
            procs[victim] = backend.start_backend(victim, port=ports[victim])
            restart_at, next_kill = None, now + KILL_EVERY_S - DOWN_FOR_S
        if not router.alive():
            break
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(30)
    alive = router.alive()
    rc = router.stop() if alive else -1
    for p in procs.values():
        p.stop()

    minute2 = [kb for t, kb in samples if 60 <= t < 120] or [samples[0][1]]
    last = [kb for t, kb in samples if t >= SECONDS - 60] or [samples[-1][1]]
    m2, ml = statistics.median(minute2), statistics.median(last)
    total = sum(counts.values())
    allowed = {(502, "reset"), (502, "connect"), (504, "timeout")}
    unexpected = {f"{s} {c}": n for (s, c), n in causes.items() if (s, c) not in allowed}
    client_errors = {k: v for k, v in counts.items() if isinstance(k, str)}
    ok = (alive and rc == 0 and not unexpected and not client_errors and
          ml <= m2 * 1.10 + 2048 and total > 0)
    report = {
        "seconds": SECONDS, "requests": total,
        "requests_per_s": round(total / max(1, SECONDS), 1),
        "status": {str(k): v for k, v in sorted(counts.items(), key=str)},
        "errors_by_cause": {f"{s} {c}": n for (s, c), n in causes.items()},
        "kills": len(kills), "rss_kb_minute2_median": m2, "rss_kb_last_minute_median": ml,
        "rss_kb_min": min(kb for _, kb in samples), "rss_kb_max": max(kb for _, kb in samples),
        "router_exit": rc, "result": "PASS" if ok else "FAIL",
    }
    print(json.dumps(report, indent=2))
    print("rss samples (s, KiB):", " ".join(f"{t}:{kb}" for t, kb in samples))
    if unexpected:
        print("unexpected answers:", unexpected)
    if not ok:
        sys.stdout.write(router.output()[-4000:])
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    sys.exit(main())
