#!/bin/sh
# Install, with Debian 12's apt, exactly what Turnout needs to build, run and test.
# Idempotent: packages already present are left alone; safe to run twice.
#
#   deploy/install-deps.sh            build + run + test (the default)
#   deploy/install-deps.sh --bench    also the benchmark peers (wrk, nginx + echo, haproxy, flask + torch)
#   deploy/install-deps.sh --train    also the offline training stack (torch, onnx, sklearn)
#   deploy/install-deps.sh --all      everything above
set -eu

BUILD="build-essential cmake pkg-config git
  libevent-dev libcurl4-openssl-dev libjansson-dev libssl-dev libyaml-dev
  libprotobuf-c-dev protobuf-c-compiler libonnx-dev libcmocka-dev clang-format"
TEST="python3 python3-yaml curl openssl procps libonnx-testdata prometheus
  clang libfuzzer-14-dev groff-base man-db chromium systemd"
BENCH="wrk nginx-light libnginx-mod-http-echo haproxy python3-flask python3-torch python3-onnx"
TRAIN="python3-torch python3-onnx python3-sklearn python3-numpy"

want="$BUILD $TEST"
for arg in "$@"; do
	case "$arg" in
	--bench) want="$want $BENCH" ;;
	--train) want="$want $TRAIN" ;;
	--all) want="$want $BENCH $TRAIN" ;;
	*) echo "install-deps.sh: unknown option '$arg'" >&2; exit 2 ;;
	esac
done

missing=""
for p in $want; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -z "$missing" ]; then
	echo "install-deps: all packages present"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: need root to install:$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists yet; refresh them once per run that installs.
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
echo "install-deps: installed:$missing"
