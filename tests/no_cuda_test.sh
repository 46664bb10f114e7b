#!/usr/bin/env bash
# No-CUDA-toolkit test: the README's set-up on a machine without a CUDA toolkit. In a private
# mount namespace the toolkit is hidden (an empty tmpfs over every /usr/local/cuda* folder and
# $CUDA_HOME / $CUDA_PATH; CUDA tools left in other PATH folders, such as wrappers in
# /usr/local/bin, are masked; CUDA variables unset), then scripts/setup.sh configures and builds
# a separate build folder (tests and benchmarks off) with the library and the quickstart, and
# the quickstart runs, all with the toolkit out of sight. The set-up must find no nvcc and take
# PyPI's (cuda-toolkit[nvcc,cccl,crt,nvvm] into .venv, once). Exits non-zero on any failure,
# and with 77 (skipped) where a toolkit is present but no mount namespace can be made.
#
# Usage: tests/no_cuda_test.sh
# Environment: TQUANT_NOCUDA_BUILD_DIR (default build-nocuda), TQUANT_JOBS (default nproc).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${TQUANT_NOCUDA_BUILD_DIR:-build-nocuda}"
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac

say() { printf '[no-cuda] %s\n' "$*"; }

if [[ "${1:-}" != --inside ]]; then
  # The toolkit folders to hide: /usr/local/cuda* and $CUDA_HOME / $CUDA_PATH (real folders
  # only; a symlink such as /usr/local/cuda -> cuda-13.0 dangles once its target is hidden).
  hide=()
  for dir in /usr/local/cuda /usr/local/cuda-* "${CUDA_HOME:-}" "${CUDA_PATH:-}"; do
    [[ -n "$dir" && -d "$dir" ]] || continue
    dir="$(cd "$dir" && pwd -P)"
    [[ " ${hide[*]} " == *" $dir "* ]] || hide+=("$dir")
  done
  if ((${#hide[@]} == 0)) && ! command -v nvcc >/dev/null; then
    say "no CUDA toolkit on this machine: nothing to hide"
    exec bash "$0" --inside
  fi
  if unshare -m true 2>/dev/null; then
    say "hiding the CUDA toolkit (${hide[*]:-nvcc on PATH}) in a private mount namespace"
    exec unshare -m bash "$0" --inside "${hide[@]}"
  elif unshare -rm true 2>/dev/null; then
    say "hiding the CUDA toolkit (${hide[*]:-nvcc on PATH}) in a user and mount namespace"
    exec unshare -rm bash "$0" --inside "${hide[@]}"
  fi
  say "SKIP: a CUDA toolkit is here and no mount namespace can be made to hide it"
  exit 77
fi
shift

# --- inside the namespace ---------------------------------------------------------------------
hidden=("$@")
if ((${#hidden[@]})); then
  mount --make-rprivate /
  # The names of the toolkit's programs, to mask copies, links or wrappers of them elsewhere.
  tools=()
  for dir in "${hidden[@]}"; do
    for tool in "$dir"/bin/*; do
      if [[ -f "$tool" ]]; then tools+=("$(basename "$tool")"); fi
    done
  done
  for dir in "${hidden[@]}"; do mount -t tmpfs -o ro,size=1M tquant-no-cuda "$dir"; done
  path=()
  IFS=: read -r -a entries <<<"$PATH"
  for entry in "${entries[@]}"; do
    real="$(cd "$entry" 2>/dev/null && pwd -P || true)"
    skip=0
    for dir in "${hidden[@]}"; do
      if [[ -z "$real" || "$real" == "$dir" || "$real" == "$dir"/* ]]; then skip=1; fi
    done
    ((skip)) || path+=("$entry")
  done
  PATH="$(IFS=:; echo "${path[*]}")"
  # A PATH folder that still holds one of the toolkit's programs (e.g. /usr/local/bin/nvcc, a
  # wrapper that runs /usr/local/cuda-13.0/bin/nvcc): a tmpfs over it with links to everything
  # else in it.
  masks=0
  for entry in "${path[@]}"; do
    found=0
    for tool in "${tools[@]}"; do
      if [[ -e "$entry/$tool" || -L "$entry/$tool" ]]; then found=1; fi
    done
    ((found)) || continue
    view="/tmp/tquant-no-cuda-view.$((masks++))"
    mkdir -p "$view"
    mount --bind "$entry" "$view"
    mount -t tmpfs -o size=1M tquant-no-cuda "$entry"
    for file in "$view"/* "$view"/.[!.]*; do
      [[ -e "$file" || -L "$file" ]] || continue
      if [[ " ${tools[*]} " != *" $(basename "$file") "* ]]; then ln -s "$file" "$entry/"; fi
    done
    say "masked the CUDA tools in $entry"
  done
fi
unset CUDA_HOME CUDA_PATH CUDACXX CUDAToolkit_ROOT CUDA_TOOLKIT_ROOT_DIR NVCC_PREPEND_FLAGS \
  NVCC_APPEND_FLAGS
for var in LIBRARY_PATH LD_LIBRARY_PATH CPATH C_INCLUDE_PATH CPLUS_INCLUDE_PATH; do
  [[ -n "${!var:-}" ]] || continue
  kept="$(tr : '\n' <<<"${!var}" | grep -v cuda | paste -sd: || true)"
  if [[ -n "$kept" ]]; then export "$var=$kept"; else unset "$var"; fi
done
if nvcc --version >/dev/null 2>&1; then
  say "FAIL: nvcc still runs ($(command -v nvcc)); could not hide the CUDA toolkit"
  exit 1
fi
say "no nvcc: $(command -v nvcc || echo 'not on PATH'); /usr/local/cuda: $(ls -A /usr/local/cuda 2>/dev/null | wc -l) entries"

start=$SECONDS
TQUANT_BUILD_DIR="$build_dir" TQUANT_TARGETS=tquant_quickstart \
  bash "$root/scripts/setup.sh" \
    -DTQUANT_BUILD_TESTS=OFF -DTQUANT_BUILD_BENCH=OFF -DTQUANT_BUILD_EXAMPLES=ON
say "set-up and build: $((SECONDS - start)) s"

cache="$build_dir/CMakeCache.txt"
nvcc_used="$(sed -n 's/^CMAKE_CUDA_COMPILER:[A-Z]*=//p' "$cache")"
if [[ -n "$nvcc_used" ]]; then
  [[ -x "$nvcc_used" ]] || { say "FAIL: $build_dir was configured with $nvcc_used, not here"; exit 1; }
  if compgen -G "$build_dir/kernels/CMakeFiles/tquant_cuda_kernels.dir/*.o" >/dev/null; then
    say "tquant's CUDA kernels built with $nvcc_used"
  else
    say "tquant's CUDA kernels not built (stubs); CMake used $nvcc_used for LibTorch's config"
  fi
else
  say "no CUDA compiler in $cache (a LibTorch without CUDA): stubs"
fi

quickstart="$build_dir/examples/quickstart/tquant_quickstart"
if ! timeout "${TQUANT_NOCUDA_QUICKSTART_TIMEOUT:-600}" "$quickstart" >"$build_dir/quickstart.log" 2>&1; then
  tail -20 "$build_dir/quickstart.log"
  say "FAIL: $quickstart, or it timed out (log: $build_dir/quickstart.log)"
  exit 1
fi
say "quickstart ran (log: $build_dir/quickstart.log); total $((SECONDS - start)) s"
say "OK"
