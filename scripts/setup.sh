#!/usr/bin/env bash
# Idempotent set-up of a tquant checkout on Debian 12 (run as root, or as a user with sudo):
#   1. Debian packages that are missing (apt-get update runs once, only if one is missing);
#   2. LibTorch: PyPI torch in the project's virtual environment .venv, unless Torch_DIR points
#      at a LibTorch of your own (Torch_DIR=<libtorch>/share/cmake/Torch);
#   3. CMake configure (only when the build folder is not configured yet) and build.
# A second run finds everything in place and only lets the (incremental) build check itself.
#
# Environment:
#   Torch_DIR            use this LibTorch instead of the PyPI wheel
#   TQUANT_BUILD_DIR     build folder (default: build)
#   TQUANT_CMAKE_ARGS    extra arguments for the first configure, e.g. "-DTQUANT_BUILD_BENCH=OFF"
#   TQUANT_JOBS          parallel build jobs (default: nproc)
#   TQUANT_TARGETS       targets to build, space separated (default: all)
#
# Usage: scripts/setup.sh [-DOPTION=VALUE ...]
#   Options given here must hold in the build folder: they are passed to the first configure,
#   and an existing build folder whose cache differs is reconfigured with them (run_tests.sh
#   asks for -DTQUANT_BUILD_TESTS=ON, run_demo.sh for -DTQUANT_BUILD_EXAMPLES=ON).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${TQUANT_BUILD_DIR:-build}"
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac
jobs="${TQUANT_JOBS:-$(nproc)}"
venv="$root/.venv"
torch_version="2.11.0"

# The one list of Debian packages tquant needs.
apt_packages=(
  build-essential cmake python3-venv
  libgtest-dev libbenchmark-dev nlohmann-json3-dev libfmt-dev libutf8proc-dev libgloo-dev
)

say() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages ------------------------------------------------------------------------
# shellcheck source=scripts/apt_missing.sh
source "$root/scripts/apt_missing.sh"
install_missing_debian_packages "${apt_packages[@]}"

# nvcc lives outside PATH on a stock CUDA install; CMake finds it (and builds tquant's CUDA
# kernels) when it is on PATH.
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

# 2. LibTorch ---------------------------------------------------------------------------------
torch_args=()
if [[ -n "${Torch_DIR:-}" ]]; then
  Torch_DIR="$(cd "$Torch_DIR" 2>/dev/null && pwd || echo "$Torch_DIR")"
  [[ -f "$Torch_DIR/TorchConfig.cmake" ]] || {
    say "Torch_DIR=$Torch_DIR holds no TorchConfig.cmake (expected <libtorch>/share/cmake/Torch)"
    exit 1
  }
  say "LibTorch: using Torch_DIR=$Torch_DIR (PyPI torch skipped)"
  torch_args=("-DTorch_DIR=$Torch_DIR")
else
  if [[ ! -x "$venv/bin/python" ]]; then
    say "creating virtual environment $venv"
    python3 -m venv "$venv"
  fi
  if "$venv/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
    say "LibTorch: torch $torch_version already in $venv"
  else
    say "installing torch==$torch_version and numpy into $venv (a download of several GB)"
    pip_args=(--disable-pip-version-check --no-input)
    [[ "${CI:-}" == "true" ]] && pip_args+=(--progress-bar off)
    "$venv/bin/python" -m pip install "${pip_args[@]}" "torch==$torch_version" numpy
  fi
  torch_prefix="$("$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  torch_args=("-DCMAKE_PREFIX_PATH=$torch_prefix")
fi

# 3. Configure and build ----------------------------------------------------------------------
cache="$build_dir/CMakeCache.txt"
required=("$@")
stale=()
for option in "${required[@]}"; do
  [[ "$option" =~ ^-D([A-Za-z0-9_]+)=(.*)$ ]] || { say "expected -DOPTION=VALUE, got $option"; exit 1; }
  if [[ -f "$cache" ]] && ! grep -qE "^${BASH_REMATCH[1]}(:[A-Z]+)?=${BASH_REMATCH[2]}\$" "$cache"; then
    stale+=("$option")
  fi
done
if [[ ! -f "$cache" ]]; then
  say "configuring $build_dir"
  # shellcheck disable=SC2086  # TQUANT_CMAKE_ARGS is a list of words on purpose
  cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${torch_args[@]}" \
    ${TQUANT_CMAKE_ARGS:-} "${required[@]}"
elif [[ -n "${Torch_DIR:-}" ]] && [[ "$(sed -n 's/^Torch_DIR:[A-Z]*=//p' "$cache")" != "$Torch_DIR" ]]; then
  # Torch's config caches library paths; mixing two LibTorch installs in one cache breaks links.
  say "$build_dir was configured with another LibTorch than Torch_DIR=$Torch_DIR;"
  say "remove $build_dir or pick another folder with TQUANT_BUILD_DIR"
  exit 1
elif ((${#stale[@]})); then
  say "reconfiguring $build_dir with ${stale[*]}"
  cmake -S "$root" -B "$build_dir" "${stale[@]}"
else
  say "$build_dir already configured"
fi

targets=()
for target in ${TQUANT_TARGETS:-}; do targets+=(--target "$target"); done
say "building $build_dir with $jobs jobs${TQUANT_TARGETS:+ (targets: $TQUANT_TARGETS)}"
cmake --build "$build_dir" -j "$jobs" "${targets[@]}"
say "done"
