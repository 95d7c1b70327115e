#!/bin/sh
# run.sh - the Turnout benchmark in one command (issue 9; not part of ctest).
#
#   sh tests/bench/run.sh [--quick] [bench.py options: --only canary,shadow --rounds N ...]
#
# Builds bin/ with cmake if turnout is missing (BUILD_DIR, default build/), raises
# the open-file limit for the 10,000-connection test, and runs bench.py, which
# starts every server on 127.0.0.1, stops them all whatever happens, and writes
# the table into docs/BENCHMARKS.md. Needs deploy/install-deps.sh --bench
# (wrk, nginx-light, haproxy; python3-flask for the Flask peer).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$src/build}
case "$build" in /*) ;; *) build=$src/$build ;; esac

for tool in wrk nginx haproxy; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "run.sh: $tool not found; run deploy/install-deps.sh --bench" >&2
		exit 1
	fi
done

if [ ! -x "$build/bin/turnout" ] || [ ! -x "$build/bin/turnout-predictor" ]; then
	echo "run.sh: building $build" >&2
	cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build "$build" -j2 --target turnout turnout-predictor
fi

# 10,000 client sockets in bench.py and as many in turnout: take the hard limit.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -n "$hard"
if [ "$hard" -lt 10300 ]; then
	echo "run.sh: open-file hard limit $hard is below 10300: the idle test will fail" >&2
fi

cmd="${BUILD_DIR:+BUILD_DIR=$BUILD_DIR }sh tests/bench/run.sh${*:+ $*}"

# bench.py stops its servers itself (atexit, signal handlers). If it dies
# harder than that, this trap ends every process group it recorded.
pids=$(mktemp "${TMPDIR:-/tmp}/turnout-bench-pids.XXXXXX")
child=
cleanup() {
	if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; fi
	while read -r pg; do
		kill -0 -- "-$pg" 2>/dev/null && kill -KILL -- "-$pg" 2>/dev/null
	done <"$pids"
	rm -f "$pids"
}
trap 'cleanup' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

/usr/bin/python3 "$here/bench.py" --bindir "$build/bin" --command "$cmd" --pidfile "$pids" "$@" &
child=$!
status=0
wait "$child" || status=$?
child=
exit "$status"
