#!/bin/sh
# README command 1: install what is needed, build, and run the main job in the foreground:
#   turnout-predictor digits v1 on 127.0.0.1:9001  (blue, the model in service)
#   turnout-predictor digits v2 on 127.0.0.1:9002  (green, the candidate)
#   turnout (router) with conf/turnout.yaml       (client endpoint, admin socket, dashboard)
# Ctrl-C (or SIGTERM) stops everything it started.
# Environment: TURNOUT_CONF=FILE to run another config; TURNOUT_NO_BUILD=1 to skip install+build;
# TURNOUT_BIN_DIR=DIR to run binaries built elsewhere; TURNOUT_BLUE_PORT, TURNOUT_GREEN_PORT to
# move the predictors (the config's variant endpoints must follow; tests/integration/test_run.py).
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
conf=${TURNOUT_CONF:-$top/conf/turnout.yaml}
bin=${TURNOUT_BIN_DIR:-$top/build/bin}
blue_port=${TURNOUT_BLUE_PORT:-9001}
green_port=${TURNOUT_GREEN_PORT:-9002}

if [ "${TURNOUT_NO_BUILD:-0}" != 1 ]; then
	sh deploy/install-deps.sh
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build -j "$(nproc)"
fi

# The example config keeps its admin socket and state under /run and /var/lib.
mkdir -p /run/turnout /var/lib/turnout 2>/dev/null || true

pids=""
stop_all() {
	trap - INT TERM EXIT
	echo
	echo "stopping:$pids"
	# A Ctrl-C reaches the whole process group, so some may be gone already: under set -e a
	# failing kill or wait must not turn a clean stop into exit 1.
	# shellcheck disable=SC2086
	[ -z "$pids" ] || kill -TERM $pids 2>/dev/null || true
	# shellcheck disable=SC2086
	[ -z "$pids" ] || wait $pids 2>/dev/null || true
	exit 0
}
trap stop_all INT TERM EXIT

wait_ready() { # port, what: poll until GET /v2/health/ready answers, 15 s at most
	i=0
	while ! curl -fsS -o /dev/null "http://127.0.0.1:$1/v2/health/ready" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 150 ]; then
			echo "run.sh: $2 did not become ready on 127.0.0.1:$1" >&2
			exit 1
		fi
		sleep 0.1
	done
}

"$bin/turnout-predictor" --model predictor/models/digits-v1.onnx --name digits --version 1 \
	--listen "127.0.0.1:$blue_port" --input-range 0:16 &
pids="$pids $!"
"$bin/turnout-predictor" --model predictor/models/digits-v2.onnx --name digits --version 2 \
	--listen "127.0.0.1:$green_port" --input-range 0:16 &
pids="$pids $!"
wait_ready "$blue_port" "predictor digits v1"
wait_ready "$green_port" "predictor digits v2"

"$bin/turnout" -t -c "$conf"
"$bin/turnout" -c "$conf" &
pids="$pids $!"

# Read the endpoints from the config that runs, so what is printed is what listens.
listen=$(sed -n 's/^listen:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$conf")
admin_http=$(sed -n 's/^[[:space:]]*http:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$conf" | head -n 1)
admin_sock=$(sed -n 's/^[[:space:]]*socket:[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$conf" | head -n 1)
# The banner only once the router answers, 15 s at most: on the admin HTTP /status when the
# config has one (a probe on the client endpoint would be proxied and counted as traffic).
if [ -n "$admin_http" ]; then probe="http://$admin_http/status"; else probe="http://$listen/"; fi
i=0
while ! curl -gs -o /dev/null "$probe" 2>/dev/null; do
	i=$((i + 1))
	if [ $i -gt 150 ]; then
		echo "run.sh: the router did not start listening on $listen" >&2
		exit 1
	fi
	sleep 0.1
done
cat <<MSG

Turnout is running (config: $conf)
  client endpoint : http://$listen/v2/models/digits/infer
  admin socket    : $admin_sock      (build/bin/turnoutctl -s $admin_sock status)
  dashboard       : http://$admin_http/          metrics: http://$admin_http/metrics
  predictors      : blue = http://127.0.0.1:$blue_port (digits v1), green = http://127.0.0.1:$green_port (digits v2)
Try:
  curl -s -H 'X-User-Id: alice' -d '{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":[$(printf '0,%.0s' $(seq 63))0]}]}' http://$listen/v2/models/digits/infer
Ctrl-C stops everything.
MSG
wait
