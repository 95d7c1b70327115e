"""docs/CONFIG.md documents every config key the loader accepts.

The key tables of router/config.c (`static const struct key X_keys[]`, one
`.name = "..."` per key) give each key's full path (`limits.max_body`,
`shadow.compare[].mode`, `variants.NAME.endpoints`); each must appear in
CONFIG.md as a table row's key cell, `` `full.path` ``. A key added to the loader
without a line in the reference fails here.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PREFIX = {
    "root": "",
    "admin": "admin.",
    "canary": "canary.",
    "shadow": "shadow.",
    "rule": "shadow.compare[].",
    "limits": "limits.",
    "health": "health.",
    "tls": "tls.",
    "upstream_tls": "upstream_tls.",
    "variant": "variants.NAME.",
}


def main():
    f = harness.Failures()
    src = os.environ.get("TURNOUT_SRC_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(src, "router", "config.c")) as fh:
        code = fh.read()
    with open(os.path.join(src, "docs", "CONFIG.md")) as fh:
        doc = fh.read()
    rows = set(re.findall(r"^\| `([^`]+)` \|", doc, re.M))
    tables = re.findall(r"static const struct key (\w+)_keys\[\] = \{(.*?)\n\};", code, re.S)
    f.check(set(PREFIX) == {t for t, _ in tables},
            f"every key table of config.c has a known prefix ({sorted(t for t, _ in tables)})")
    n = 0
    for table, body in tables:
        for name in re.findall(r'\.name = "([a-z0-9_]+)"', body):
            path = PREFIX.get(table, table + ".") + name
            n += 1
            f.check(path in rows, f"CONFIG.md has a row for `{path}`")
    f.check(n >= 40, f"found the loader's keys ({n})")
    f.finish()


if __name__ == "__main__":
    main()
