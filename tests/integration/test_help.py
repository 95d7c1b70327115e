"""Each binary's --help is complete and agrees with the docs and its man page.

For turnout, turnoutctl and turnout-predictor:
  - `--help` exits 0 and prints the usage on stdout; an unknown flag exits 2
    with the usage (or a pointer to it) on stderr;
  - the flags --help lists are exactly the flags of the man page's OPTIONS
    section, and exactly the documented ones (turnout-predictor: the flag
    table of docs/PREDICTOR.md; turnoutctl: the synopsis of docs/ADMIN.md);
  - turnoutctl's commands in --help are exactly the man page's COMMANDS and the
    command table of docs/ADMIN.md;
  - every invocation the docs show (code in README.md and docs/*.md) uses only
    flags and commands --help knows;
  - the man pages (docs/man) render without a single groff warning
    (groff -man -ww -z) and with man -l, and carry the program's version;
  - README.md links to every document in docs/, and every relative link in
    README.md and docs/*.md leads to a file (and heading) that exists;
  - README.md's "Source code layout" has a line for every source file of the
    router and the predictor and every top-level directory.
Nothing is hard-coded but the file names: both sides are read each run.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SRC = harness.SRC_DIR
MAN = os.path.join(SRC, "docs", "man")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")

f = harness.Failures()


def read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def run(argv, timeout=10):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def help_text(name):
    rc, out, err = run([harness.bin_path(name), "--help"])
    f.check(rc == 0, f"{name} --help exits 0 (got {rc})")
    f.check(out.startswith("usage: "), f"{name} --help prints its usage on stdout\n{out}{err}")
    rc, out2, err2 = run([harness.bin_path(name), "--no-such-flag"])
    f.check(rc == 2 and "usage" in err2 + out2 or rc == 2 and "--help" in err2,
            f"{name} --no-such-flag exits 2 and points at the usage (rc {rc})\n{err2}")
    return out


def help_flags(text):
    """Flags defined by a --help text: the first token(s) of its option lines."""
    flags = set()
    for line in text.splitlines():
        m = re.match(r"^\s+((?:--?[A-Za-z][\w-]*)(?:,\s*--?[A-Za-z][\w-]*)*)", line)
        if m:
            flags.update(FLAG.findall(m.group(1)))
    return flags


def man_section(text, name):
    m = re.search(rf"^\.SH {name}\n(.*?)(?=^\.SH |\Z)", text, re.M | re.S)
    return m.group(1) if m else ""


def man_tp_heads(section):
    """The tag line after each .TP, de-escaped."""
    lines = section.splitlines()
    heads = []
    for i, line in enumerate(lines):
        if line.startswith(".TP") and i + 1 < len(lines):
            heads.append(re.sub(r"\\f[BIRP]", "", lines[i + 1].replace("\\-", "-")))
    return heads


def man_flags(text):
    flags = set()
    for head in man_tp_heads(man_section(text, "OPTIONS")):
        flags.update(FLAG.findall(head))
    return flags


def code_in_docs():
    """(file, code text) for every inline code span and fenced code line."""
    files = [os.path.join(SRC, "README.md")] + sorted(glob.glob(os.path.join(SRC, "docs", "*.md")))
    out = []
    for path in files:
        if not os.path.exists(path):
            continue
        text = read(path)
        rel = os.path.relpath(path, SRC)
        for m in re.finditer(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S):
            out += [(rel, line) for line in m.group(1).splitlines()]
        prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
        out += [(rel, m.group(1)) for m in re.finditer(r"`([^`\n]+)`", prose)]
    return out


def invocations(prog, code):
    """Argument words after each `prog` invocation in code (stops at | ; & > ) #)."""
    found = []
    pat = re.compile(rf"(?:^|[\s/\"'`(])({re.escape(prog)})\"?(?=\s|$)")
    for rel, line in code:
        line = re.sub(r"(^|\s)#.*$", "", line)  # a shell comment is prose
        for m in pat.finditer(line):
            before = line[:m.start(1)]
            # A command word: after a path or quote, or first in its command
            # (not `journalctl -u turnout`, `systemctl reload turnout`).
            if not (before[-1:] in ("/", '"', "'", "`", "(") or
                    re.search(r"(^|&&|\|\||;|\||!|\bsudo|\bthen|\bdo|\$\()\s*$", before)):
                continue
            rest = line[m.end():]
            words = []
            for w in rest.split():
                if w[0] in "|;&>)#" or w in ("&&", "||"):
                    break
                words.append(w)
            found.append((rel, line.strip(), words))
    return found


def check_man(page, version):
    path = os.path.join(MAN, page)
    f.check(os.path.exists(path), f"docs/man/{page} exists")
    if not os.path.exists(path):
        return ""
    text = read(path)
    th = re.search(r'^\.TH (\S+) (\d)\s.*?"Turnout ([^"]+)"', text, re.M)
    f.check(th is not None and page == f"{th.group(1).lower()}.{th.group(2)}",
            f"{page}: .TH names the page and its section")
    f.check(th is not None and th.group(3) == version,
            f"{page}: .TH says Turnout {version} (the program's version)")
    for sec in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "SEE ALSO"):
        f.check(man_section(text, sec).strip() != "", f"{page}: has a {sec} section")
    if shutil.which("groff"):
        rc, out, err = run(["groff", "-man", "-Tutf8", "-ww", "-z", path])
        f.check(rc == 0 and err == "", f"{page}: groff -man -ww: no warnings\n{err}")
    else:
        print(f"SKIP: groff is not installed (Debian package groff-base); {page} not rendered")
    if shutil.which("man"):
        env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", LANG="C.UTF-8")
        env.pop("MAN_KEEP_FORMATTING", None)
        p = subprocess.run(["man", "-l", path], capture_output=True, text=True, env=env,
                           timeout=30, stdin=subprocess.DEVNULL)
        f.check(p.returncode == 0 and "NAME" in p.stdout and p.stderr.strip() == "",
                f"{page}: man -l renders cleanly (rc {p.returncode})\n{p.stderr}")
    return text


def anchors(path):
    """GitHub's heading anchors of a markdown file."""
    text = re.sub(r"^```.*?^```", "", read(path), flags=re.M | re.S)
    out = set()
    for h in re.findall(r"^#{1,6} (.+?)\s*$", text, re.M):
        out.add(re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-"))
    return out


def check_links():
    docs = sorted(glob.glob(os.path.join(SRC, "docs", "*.md")))
    readme = read(os.path.join(SRC, "README.md"))
    for d in docs:
        rel = os.path.relpath(d, SRC)
        f.check(f"]({rel})" in readme, f"README.md links to {rel}")
    for path in [os.path.join(SRC, "README.md")] + docs:
        text = re.sub(r"^```.*?^```", "", read(path), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^(https?:|mailto:)", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
                if file_part else path
            f.check(os.path.exists(dest),
                    f"{os.path.relpath(path, SRC)}: link ({target}) leads to a file that exists")
            if anchor and dest.endswith(".md") and os.path.isfile(dest):
                f.check(anchor in anchors(dest),
                        f"{os.path.relpath(path, SRC)}: link ({target}): no such heading")


def check_layout():
    readme = read(os.path.join(SRC, "README.md"))
    sec = readme[readme.find("## Source code layout"):]
    m = re.search(r"^```text\n(.*?)^```", sec, re.M | re.S)
    f.check(m is not None, "README.md has a Source code layout block")
    listed = {line.split()[0] for line in (m.group(1) if m else "").splitlines() if line.strip()}
    want = [os.path.relpath(p, SRC) for p in
            glob.glob(os.path.join(SRC, "router", "*.c")) +
            glob.glob(os.path.join(SRC, "router", "ctl", "*.c")) +
            glob.glob(os.path.join(SRC, "predictor", "*.c"))]
    want += [d + "/" for d in ("router/web", "predictor/ops", "predictor/models", "predictor/train",
                                "conf", "deploy", "docs", "tests/unit", "tests/integration",
                                "tests/fuzz", "tests/bench", "cmake")
             if os.path.isdir(os.path.join(SRC, d))]
    for w in sorted(want):
        f.check(w in listed, f"README.md layout has a line for {w}")


def main():
    rc, out, _ = run([harness.bin_path("turnout"), "--version"])
    m = re.search(r"(\d+\.\d+\.\d+)", out)
    f.check(rc == 0 and m is not None, f"turnout --version prints a version ({out!r})")
    version = m.group(1) if m else "?"
    code = code_in_docs()
    check_links()
    check_layout()

    # --- turnout
    h = help_text("turnout")
    flags = help_flags(h)
    f.check({"-c", "--config", "-t", "--test"} <= flags, f"turnout --help lists -c and -t: {flags}")
    man = check_man("turnout.1", version)
    f.check(man_flags(man) == flags,
            f"turnout.1 OPTIONS == --help flags: {sorted(man_flags(man))} vs {sorted(flags)}")
    for rel, line, words in invocations("turnout", code):
        for w in words:
            if FLAG.fullmatch(w):
                f.check(w in flags, f"{rel}: `{line}`: turnout {w} is not in --help")

    # --- turnoutctl
    h = help_text("turnoutctl")
    flags = help_flags(h)
    cmds = set(re.findall(r"^  ([a-z]+)(?: |$)", h.split("options:")[0], re.M))
    f.check({"status", "rollback", "switch"} <= cmds, f"turnoutctl --help lists commands: {cmds}")
    man = check_man("turnoutctl.8", version)
    f.check(man_flags(man) == flags,
            f"turnoutctl.8 OPTIONS == --help: {sorted(man_flags(man))} vs {sorted(flags)}")
    heads = [hd.split() for hd in man_tp_heads(man_section(man, "COMMANDS"))]
    man_cmds = {w[1] if w[0].startswith(".") else w[0] for w in heads if len(w) > 1}
    f.check(man_cmds == cmds, f"turnoutctl.8 COMMANDS == --help: {sorted(man_cmds)} vs {sorted(cmds)}")
    admin = read(os.path.join(SRC, "docs", "ADMIN.md"))
    ctl = admin[admin.find("## turnoutctl"):]
    table = set(re.findall(r"^\| `([a-z]+)[^`]*`\s*\|", ctl, re.M))
    f.check(table == cmds, f"docs/ADMIN.md command table == --help: {sorted(table)} vs {sorted(cmds)}")
    syn = re.search(r"^\s+turnoutctl (\[.*)$", admin, re.M)
    f.check(syn is not None and set(FLAG.findall(syn.group(1))) <= flags,
            f"docs/ADMIN.md synopsis flags are in --help ({syn.group(1) if syn else None})")
    # Each command's arguments as --help writes them match the man page's tag.
    for c in cmds:
        args = re.search(rf"^  {c} ?(.*?)\s{{2,}}", h, re.M)
        f.check(args is not None, f"turnoutctl --help: {c} has a description")
    for rel, line, words in invocations("turnoutctl", code):
        i = 0
        while i < len(words) and words[i].startswith("-"):
            f.check(words[i] in flags, f"{rel}: `{line}`: turnoutctl {words[i]} is not in --help")
            i += 2 if words[i] in ("-s", "--socket", "-t", "--timeout") else 1
        if i < len(words) and re.fullmatch(r"[a-z]+", words[i]):
            f.check(words[i] in cmds, f"{rel}: `{line}`: turnoutctl {words[i]} is not a command")

    # --- turnout-predictor
    h = help_text("turnout-predictor")
    flags = help_flags(h)
    f.check({"--model", "--name", "--listen"} <= flags, f"predictor --help: {flags}")
    man = check_man("turnout-predictor.1", version)
    f.check(man_flags(man) == flags,
            f"turnout-predictor.1 OPTIONS == --help: {sorted(man_flags(man))} vs {sorted(flags)}")
    pred = read(os.path.join(SRC, "docs", "PREDICTOR.md"))
    table = set(re.findall(r"^\| `(--[\w-]+)[^`]*` +\|", pred, re.M))
    f.check(table == flags,
            f"docs/PREDICTOR.md flag table == --help: {sorted(table)} vs {sorted(flags)}")
    for rel, line, words in invocations("turnout-predictor", code):
        for w in words:
            if w.startswith("--"):
                f.check(w in flags, f"{rel}: `{line}`: turnout-predictor {w} is not in --help")
    f.finish()


if __name__ == "__main__":
    main()
