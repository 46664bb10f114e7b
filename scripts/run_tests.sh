#!/usr/bin/env bash
# README command two: set up and build (skipped when done), run the unit tests with ctest, then
# the package test (install tquant into a temporary prefix and build a separate project
# against it with find_package). Prints one PASS / FAIL line per step and exits non-zero if
# any step failed.
#
# Usage: scripts/run_tests.sh [extra ctest arguments, e.g. -R Histogram]
#        (environment as for scripts/setup.sh)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${TQUANT_BUILD_DIR:-build}"
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac
jobs="${TQUANT_JOBS:-$(nproc)}"

if ! bash "$root/scripts/setup.sh" -DTQUANT_BUILD_TESTS=ON; then
  echo "[tests] FAIL  set-up or build (see the messages above)"
  exit 1
fi

status=0
results=()

echo "[tests] ctest --test-dir $build_dir"
if ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$jobs" "$@"; then
  results+=("PASS  unit tests (ctest)")
else
  results+=("FAIL  unit tests (ctest)")
  status=1
fi

echo "[tests] tests/package_test.sh"
if bash "$root/tests/package_test.sh" "$build_dir"; then
  results+=("PASS  package test (install + find_package(tquant) consumer)")
else
  results+=("FAIL  package test (install + find_package(tquant) consumer)")
  status=1
fi

echo
echo "[tests] summary"
printf '  %s\n' "${results[@]}"
exit "$status"
