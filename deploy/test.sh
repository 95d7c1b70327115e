#!/bin/sh
# README command 2: install what is needed, build, and pass the whole test suite:
#   1. clang-format drift check
#   2. normal build (build/): unit tests in parallel, integration tests one at a time
#   3. ASan+UBSan(+LSan) build (build-asan/): the same suite again
#   4. fuzz smoke (build-fuzz/, clang + libFuzzer): each driver for a bounded time
# Exits non-zero on the first failure. Environment knobs:
#   TURNOUT_SKIP_ASAN=1, TURNOUT_SKIP_FUZZ=1   skip a stage (local iteration only; CI runs all)
#   TURNOUT_FUZZ_SECONDS=N                      seconds per fuzz driver (default 20)
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

sh deploy/install-deps.sh
jobs=$(nproc)

echo "== clang-format check"
sh deploy/format.sh --check

run_suite() { # build-dir, then cmake options
	dir=$1
	shift
	echo "== configure $dir $*"
	cmake -S "$top" -B "$dir" "$@" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
	echo "== build $dir"
	cmake --build "$dir" -j "$jobs"
	echo "== unit tests ($dir)"
	(cd "$dir" && ctest -L unit -j "$jobs" --output-on-failure)
	echo "== integration tests ($dir)"
	(cd "$dir" && ctest -L integration --output-on-failure)
}

mkdir -p build build-asan
run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo

if [ "${TURNOUT_SKIP_ASAN:-0}" != 1 ]; then
	export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0"
	export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
	export LSAN_OPTIONS="suppressions=$top/tests/lsan.supp:print_suppressions=0"
	export TURNOUT_SANITIZED=1
	run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DTURNOUT_SANITIZE=address,undefined
	unset TURNOUT_SANITIZED
fi

if [ "${TURNOUT_SKIP_FUZZ:-0}" != 1 ]; then
	if ls tests/fuzz/fuzz_*.c >/dev/null 2>&1; then
		echo "== fuzz smoke"
		mkdir -p build-fuzz
		CC=clang cmake -S "$top" -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DTURNOUT_FUZZ=ON \
			-DTURNOUT_SANITIZE=address,undefined \
			-DTURNOUT_FUZZ_SECONDS="${TURNOUT_FUZZ_SECONDS:-20}" >build-fuzz.configure.log 2>&1 ||
			{ cat build-fuzz.configure.log; exit 1; }
		cmake --build build-fuzz -j "$jobs"
		(cd build-fuzz && ctest -L fuzz-smoke --output-on-failure)
	else
		echo "== fuzz smoke: no drivers in tests/fuzz yet"
	fi
fi
echo "== all test stages passed"
