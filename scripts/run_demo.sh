#!/usr/bin/env bash
# README command one: set up (Debian packages, LibTorch, R data export, the pretrained MiniLM,
# configure, build; each step skipped when already done) and run the BERT demo: fine-tune
# all-MiniLM-L6-v2 on the fine-food reviews, PTQ with every calibrator, percentile grid,
# sensitivity fallback, QAT, INT8 convert, results table and calibration report
# (docs/bert.md). The fine-tuned FP32 checkpoint is cached, so later runs skip training.
#
# Usage: scripts/run_demo.sh [demo options]      e.g. --quick (a few minutes, for CI)
#   Environment as for scripts/setup.sh and scripts/setup_bert_assets.sh (TQUANT_DATA_DIR).
# Only the demo and what it links are built here; scripts/run_tests.sh builds everything.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${TQUANT_BUILD_DIR:-build}"
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac

if ! TQUANT_TARGETS="${TQUANT_TARGETS:-tquant_bert_demo}" \
    bash "$root/scripts/setup.sh" -DTQUANT_BUILD_EXAMPLES=ON; then
  echo "[demo] FAIL  set-up or build (see the messages above)" >&2
  exit 1
fi
if ! bash "$root/scripts/setup_bert_assets.sh"; then
  echo "[demo] FAIL  BERT assets (model, review data; see the messages above)" >&2
  exit 1
fi

# The CNN example's digits (scikit-learn), so both README commands set up every example.
if ! bash "$root/scripts/setup_cnn_assets.sh"; then
  echo "[demo] FAIL  CNN example data (scikit-learn digits; see the messages above)" >&2
  exit 1
fi

demo="$build_dir/examples/bert/tquant_bert_demo"
if [[ ! -x "$demo" ]]; then
  echo "[demo] $demo was not built (is TQUANT_BUILD_EXAMPLES OFF in $build_dir?)" >&2
  exit 1
fi
echo "[demo] $demo $*"
"$demo" "$@"
