#!/usr/bin/env bash
# Package test: installs tquant from a build folder into a temporary prefix, then configures,
# builds and runs tests/consumer (find_package(tquant) + tquant::tquant) against that prefix
# and the LibTorch the build folder was configured with (both through CMAKE_PREFIX_PATH, as an
# application would pass them). Exits non-zero on any failure.
#
# Usage: tests/package_test.sh [build folder, default build]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${1:-$root/build}"
jobs="${TQUANT_JOBS:-$(nproc)}"
cache="$build_dir/CMakeCache.txt"
[[ -f "$cache" ]] || { echo "package test: $build_dir is not a configured build folder" >&2; exit 1; }

torch_dir="$(sed -n 's/^Torch_DIR:[A-Z]*=//p' "$cache")"
[[ -n "$torch_dir" ]] || { echo "package test: no Torch_DIR in $cache" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/tquant-package.XXXXXX")"
trap 'rm -rf "$work"' EXIT

run() { echo "+ $*"; "$@"; }
# Runs a command with its (long, warning-laden) output in a log that is shown only on failure.
quiet() {
  local log="$1"; shift
  echo "+ $*"
  "$@" >"$log" 2>&1 || { cat "$log"; return 1; }
}
quiet "$work/install.log" cmake --install "$build_dir" --prefix "$work/prefix"
quiet "$work/configure.log" cmake -S "$root/tests/consumer" -B "$work/build" \
  -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$work/prefix;$(dirname "$torch_dir")"
grep -F -- '-- tquant ' "$work/configure.log" || true
run cmake --build "$work/build" -j "$jobs"
run "$work/build/app"
