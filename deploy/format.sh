#!/bin/sh
# clang-format every C file of the project: `format.sh` rewrites, `format.sh --check` fails on drift.
set -eu
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find router predictor tests -name '*.[ch]')
[ -n "$files" ] || exit 0
if [ "${1:-}" = --check ]; then
	# shellcheck disable=SC2086
	clang-format --dry-run --Werror $files
	echo "format: clean"
else
	# shellcheck disable=SC2086
	clang-format -i $files
fi
