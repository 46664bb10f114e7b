#!/usr/bin/env bash
# README command one: set up (packages, LibTorch, configure, build; skipped when done) and run
# the demo. For now the demo is the quickstart example: calibrate a small model, compare the
# calibrators on one activation, and print the fake-quantization error of each format.
#
# Usage: scripts/run_demo.sh          (environment as for scripts/setup.sh)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${TQUANT_BUILD_DIR:-build}"
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac

# Only the demo and what it links are built here; scripts/run_tests.sh builds everything.
if ! TQUANT_TARGETS="${TQUANT_TARGETS:-tquant_quickstart}" \
    bash "$root/scripts/setup.sh" -DTQUANT_BUILD_EXAMPLES=ON; then
  echo "[demo] FAIL  set-up or build (see the messages above)" >&2
  exit 1
fi

demo="$build_dir/examples/quickstart/tquant_quickstart"
if [[ ! -x "$demo" ]]; then
  echo "[demo] $demo was not built (is TQUANT_BUILD_EXAMPLES OFF in $build_dir?)" >&2
  exit 1
fi
echo "[demo] $demo"
"$demo"
