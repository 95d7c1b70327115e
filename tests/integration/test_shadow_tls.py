"""Shadow to an https:// candidate: the mirror is verified against the same
upstream_tls.ca as live traffic, so a candidate that serves live traffic over
TLS (canary, override) can also be shadowed. The pinned live request to the
candidate works, and every mirror to it is compared (none fails). A request
header over 8 KiB (within max_header) reaches the shadow whole, as it reached
live: the mirror is a copy of the request, headers included; so are the
forwarding headers (X-Forwarded-For appended, X-Forwarded-Host).
"""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import harness  # noqa: E402

ROUTER = """
listen: 127.0.0.1:{{port}}
workers: 1
admin:
  http: 127.0.0.1:{{admin_port}}
variants:
  live:   {{{{ endpoints: [http://127.0.0.1:{live}] }}}}
  shadow: {{{{ endpoints: [https://127.0.0.1:{shadow}] }}}}
strategy: shadow
stable: live
candidate: shadow
upstream_tls:
  ca: {ca}
shadow:
  percent: 100
  max_inflight: 64
  timeout: 5s
  compare:
    - {{{{ path: body_len, mode: exact }}}}
    - {{{{ path: len, mode: exact }}}}
"""

N = 20


def shadow_stats(admin_port):
    st, _, data = harness.http_request(admin_port, "GET", "/status", timeout=5)
    assert st == 200, st
    for v in json.loads(data)["shadow"]["variants"]:
        if v["name"] == "shadow":
            return v
    raise AssertionError("no shadow stats")


def main():
    f = harness.Failures()
    cert, key = backend.make_cert(harness.tmpdir())
    live = backend.start_backend("live")
    shadow = backend.start_backend("shadow", tls=(cert, key))
    router = backend.start_router(ROUTER.format(live=live.port, shadow=shadow.port, ca=cert))

    s, h, b = harness.http_request(router.port, "GET", "/pinned",
                                   headers={"X-Turnout-Variant": "shadow"})
    f.check(s == 200 and json.loads(b)["backend"] == "shadow",
            f"live request pinned to the https candidate is verified and answered ({s} {b[:200]!r})")
    for i in range(N):
        s, h, b = harness.http_request(router.port, "POST", f"/p?i={i}", body=b"x" * i)
        f.check(s == 200 and h.get("x-turnout-variant") == "live", f"request {i} answered by live")

    def settled():
        v = shadow_stats(router.admin_port)
        return v if v["agree"] + v["disagree"] + v["error"] >= N else None

    v = harness.wait_for(settled, timeout=20, what="every mirror counted")
    f.check(v["mirrored"] == N, f"mirrored {v['mirrored']} == {N}")
    f.check(v["error"] == 0, f"no mirror failed against the https candidate ({v['errors']})")
    f.check(v["rules"][0]["agree"] == N, f"the shadow got every body ({v['rules'][0]})")

    # A header over 8 KiB (within max_header, 16 KiB) reaches the shadow as it reached live.
    before = shadow_stats(router.admin_port)
    s, h, b = harness.http_request(router.port, "GET", "/header-len?name=X-Long",
                                   headers={"X-Long": "v" * 9000})
    f.check(s == 200 and json.loads(b)["len"] == 9000, f"live received the 9000-byte header ({s} {b!r})")

    def one_more():
        v = shadow_stats(router.admin_port)
        return v if v["agree"] + v["disagree"] + v["error"] > \
            before["agree"] + before["disagree"] + before["error"] else None

    v = harness.wait_for(one_more, timeout=20, what="the long-header mirror counted")
    f.check(v["rules"][1]["agree"] == before["rules"][1]["agree"] + 1 and v["error"] == 0,
            f"the shadow received the same 9000-byte header (rule len: {v['rules'][1]}, "
            f"errors {v['errors']})")

    # The forwarding headers reach the shadow exactly as they reach live.
    for name, hdrs in (("X-Forwarded-For", {}), ("X-Forwarded-For", {"X-Forwarded-For": "10.9.8.7"}),
                       ("X-Forwarded-Host", {}),
                       ("X-Forwarded-Host", {"X-Forwarded-Host": "orig.example"})):
        before = shadow_stats(router.admin_port)
        s, h, b = harness.http_request(router.port, "GET", f"/header-len?name={name}",
                                       headers=hdrs)
        f.check(s == 200 and json.loads(b)["len"] > 0, f"live received {name} ({s} {b!r})")
        v = harness.wait_for(lambda: (lambda v: v if v["agree"] + v["disagree"] + v["error"] >
                                      before["agree"] + before["disagree"] + before["error"]
                                      else None)(shadow_stats(router.admin_port)),
                             timeout=20, what=f"the {name} mirror counted")
        f.check(v["rules"][1]["agree"] == before["rules"][1]["agree"] + 1,
                f"the shadow received the same {name} as live {hdrs} ({v['rules'][1]})")

    for p in (router, live, shadow):
        f.check(p.stop(signal.SIGTERM) == 0, f"{p.name} exits 0 on SIGTERM")
    f.finish()


if __name__ == "__main__":
    main()
