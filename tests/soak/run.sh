#!/bin/sh
# Soak test (issue 8), outside the default suite: 5 minutes, loopback only.
#   sh tests/soak/run.sh [BUILD_DIR]        (default: build; SOAK_SECONDS=300)
# Starts three backends and turnout (canary 20 %, no admin HTTP server: see soak.py),
# drives a paced load, kills -9 and restarts a backend every 20 s, samples turnout's
# RSS every 5 s, and fails if RSS grows (last minute vs second minute), if any answer
# is other than 200 or a documented 502/504, or if turnout does not exit 0 on SIGTERM.
# Prints the figures. Use a normal build: ASan's quarantine makes RSS meaningless.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${1:-${BUILD_DIR:-$src/build}}
case "$build" in /*) ;; *) build="$src/$build" ;; esac
if [ ! -x "$build/bin/turnout" ]; then
	echo "soak: $build/bin/turnout not found; build first (cmake --build $build)" >&2
	exit 2
fi
export TURNOUT_BIN_DIR="$build/bin" TURNOUT_SRC_DIR="$src" PYTHONDONTWRITEBYTECODE=1
exec timeout --signal=TERM --kill-after=30 "$(( ${SOAK_SECONDS:-300} + 90 ))" \
	/usr/bin/python3 "$here/soak.py"
