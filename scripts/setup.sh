#!/usr/bin/env bash
# Idempotent set-up of a tquant checkout on Debian 12 (run as root, or as a user with sudo):
#   1. Debian packages that are missing (apt-get update runs once, only if one is missing);
#   2. LibTorch: PyPI torch in the project's virtual environment .venv, unless Torch_DIR points
#      at a LibTorch of your own (Torch_DIR=<libtorch>/share/cmake/Torch); when that torch is a
#      CUDA build and no CUDA toolkit (a working nvcc) is on the machine, the CUDA compiler PyPI
#      ships for the wheel's CUDA version goes into .venv too (cuda-toolkit[nvcc,cccl,crt,nvvm],
#      about 100 MB to download): LibTorch's CMake config needs nvcc even without a GPU;
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
  pip_args=(--disable-pip-version-check --no-input)
  [[ "${CI:-}" == "true" ]] && pip_args+=(--progress-bar off)
  if "$venv/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
    say "LibTorch: torch $torch_version already in $venv"
  else
    say "installing torch==$torch_version and numpy into $venv (a download of several GB)"
    "$venv/bin/python" -m pip install "${pip_args[@]}" "torch==$torch_version" numpy
  fi
  # torch's CMake prefix, its CUDA version (empty for a CPU build), the wheel's CUDA folder
  # (site-packages/nvidia/cu<major>) and the version of the cuda-toolkit metapackage it pulled.
  torch_info="$("$venv/bin/python" -c '
import importlib.metadata as md, os, torch
cuda = torch.version.cuda or ""
print(torch.utils.cmake_prefix_path)
print(cuda)
print(os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia",
                                    "cu" + cuda.split(".")[0])) if cuda else "")
try:
    print(md.version("cuda-toolkit"))
except md.PackageNotFoundError:
    print("")
')"
  { read -r torch_prefix; read -r torch_cuda; read -r cuda_wheel_root; read -r cuda_toolkit_pypi
  } <<<"$torch_info" || true  # (the last lines are empty for a CPU torch)
  torch_args=("-DCMAKE_PREFIX_PATH=$torch_prefix")

  # A CUDA build of torch: its CMake config (Caffe2's cuda.cmake) needs nvcc, the CUDA headers
  # and the CUDA libraries at configure time, GPU or not. A CUDA toolkit that is there (a
  # working nvcc on PATH, /usr/local/cuda/bin included above) is used as before. Without one,
  # the wheel's own CUDA folder becomes the toolkit: torch already put the CUDA runtime,
  # cuBLAS(Lt), NVRTC ... with their headers there; PyPI's nvcc, cicc (nvvm), crt and CCCL
  # headers of the same CUDA release join them (the cuda-toolkit metapackage's extras, at the
  # version torch pinned), plus what a toolkit's lib folder has and the wheels lack: the
  # unversioned libX.so development links, and lib64 (nvcc links from <root>/lib64).
  if [[ -n "$torch_cuda" ]] && ! nvcc --version >/dev/null 2>&1; then
    wheel_nvcc="$cuda_wheel_root/bin/nvcc"
    if [[ -x "$wheel_nvcc" && -x "$cuda_wheel_root/nvvm/bin/cicc" \
          && -f "$cuda_wheel_root/include/crt/host_config.h" \
          && -d "$cuda_wheel_root/include/cccl/cuda" ]]; then
      say "CUDA: no CUDA toolkit; PyPI's nvcc already in $venv"
    else
      [[ -n "$cuda_toolkit_pypi" ]] || {
        say "torch $torch_version is a CUDA $torch_cuda build and needs a CUDA toolkit (nvcc) to"
        say "configure, and no cuda-toolkit metapackage is in $venv to take PyPI's nvcc from:"
        say "install CUDA toolkit $torch_cuda, or set Torch_DIR to a CPU-only LibTorch"
        exit 1
      }
      say "CUDA: no CUDA toolkit (nvcc); installing PyPI's CUDA $torch_cuda compiler into $venv:"
      say "  cuda-toolkit[nvcc,cccl,crt,nvvm]==$cuda_toolkit_pypi (about 100 MB to download)"
      "$venv/bin/python" -m pip install "${pip_args[@]}" \
        "cuda-toolkit[nvcc,cccl,crt,nvvm]==$cuda_toolkit_pypi"
    fi
    [[ -e "$cuda_wheel_root/lib64" ]] || ln -s lib "$cuda_wheel_root/lib64"
    for library in "$cuda_wheel_root"/lib/lib*.so.*; do
      name="$(basename "$library")"
      [[ -e "$cuda_wheel_root/lib/${name%%.so.*}.so" ]] ||
        ln -s "$name" "$cuda_wheel_root/lib/${name%%.so.*}.so"
    done
    "$wheel_nvcc" --version >/dev/null || { say "$wheel_nvcc does not run"; exit 1; }
    say "CUDA: using PyPI's $wheel_nvcc (release $("$wheel_nvcc" --version |
      sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
    torch_args+=("-DCMAKE_CUDA_COMPILER=$wheel_nvcc" "-DCUDA_TOOLKIT_ROOT_DIR=$cuda_wheel_root"
                 "-DCUDAToolkit_ROOT=$cuda_wheel_root")
  elif [[ -n "$torch_cuda" ]]; then
    say "CUDA: toolkit's $(command -v nvcc)"
  fi
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
if [[ ! -f "$cache" || ! ( -f "$build_dir/Makefile" || -f "$build_dir/build.ninja" ) ]]; then
  # (also a folder whose first configure stopped with an error: it has a cache but no Makefile)
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
