#!/usr/bin/env bash
# On a GPU machine (CUDA toolkit, CMake and PyTorch installed; no apt, no network): configure and
# build tquant against the packages bundled by scripts/gpu_bundle.sh, run the CUDA INT8 tests and
# the CUDA INT8 bench, and write the logs to $OUT (or ./gpu_out).
#
#   scripts/gpu_run.sh [bench arguments, e.g. --reps 100 or --quick]
#
# Environment: TQUANT_GPU_DEPS (default gpu_deps/), TQUANT_GPU_BUILD_DIR (default build-gpu/),
#   PYTHON (default python3: the one that holds torch), TQUANT_GPU_SKIP_BENCH=1,
#   TQUANT_GPU_ALL_TESTS=1 (build every test program and run ctest as well).
# Files written to the output folder (at most 7): env.txt, configure.log, build.log,
#   cuda_int8_test.log, cuda_int8_test.xml, cuda_int8_bench.log, ctest.log.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="${TQUANT_GPU_DEPS:-$root/gpu_deps}"
build="${TQUANT_GPU_BUILD_DIR:-$root/build-gpu}"
out="${OUT:-$root/gpu_out}"
python="${PYTHON:-python3}"
mkdir -p "$out"

say() { printf '[gpu_run] %s\n' "$*"; }

if [[ ! -f "$deps/env.sh" ]]; then
  say "no $deps/env.sh: run scripts/gpu_bundle.sh on a machine with apt and carry gpu_deps/"
  exit 1
fi
# shellcheck disable=SC1091
source "$deps/env.sh"
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

torch_prefix="$("$python" -c 'import torch;print(torch.utils.cmake_prefix_path)')" || {
  say "$python cannot import torch; set PYTHON to the interpreter that has it"
  exit 1
}
{
  date -u
  nvidia-smi 2>&1 || true
  nvcc --version 2>&1 || true
  cmake --version 2>&1 | head -1
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
  echo "torch cmake prefix: $torch_prefix"
  echo "deps: $TQUANT_DEPS_PREFIX"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
jobs="$(nproc)"

targets=(cuda_int8_test)
[[ "${TQUANT_GPU_SKIP_BENCH:-0}" == 1 ]] || targets+=(tquant_cuda_int8_bench)
[[ "${TQUANT_GPU_ALL_TESTS:-0}" == 1 ]] && targets=(all)

status=0
say "configure ($build)"
if ! cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
      "-DCMAKE_PREFIX_PATH=$torch_prefix;$TQUANT_DEPS_PREFIX" \
      "-DGTest_DIR=$GTest_DIR" "-Dnlohmann_json_DIR=$nlohmann_json_DIR" \
      -DTQUANT_BUILD_EXAMPLES=OFF -DTQUANT_WITH_CUDA=ON > "$out/configure.log" 2>&1; then
  tail -40 "$out/configure.log"
  say "FAIL configure (see configure.log)"
  exit 1
fi
grep -E "tquant:|CUDA" "$out/configure.log" | tail -5

say "build ${targets[*]} (-j$jobs)"
if ! cmake --build "$build" -j "$jobs" --target "${targets[@]}" > "$out/build.log" 2>&1; then
  tail -60 "$out/build.log"
  say "FAIL build (see build.log)"
  exit 1
fi

say "tests: cuda_int8_test (the _CUDA cases and the CPU ones)"
"$build/tests/cuda_int8_test" --gtest_output="xml:$out/cuda_int8_test.xml" \
  > "$out/cuda_int8_test.log" 2>&1 || status=1
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \]|OK \]|tests ran" "$out/cuda_int8_test.log" | tail -60

if [[ "${TQUANT_GPU_ALL_TESTS:-0}" == 1 ]]; then
  say "ctest (all test programs)"
  ctest --test-dir "$build" --output-on-failure -j "$jobs" > "$out/ctest.log" 2>&1 || status=1
  tail -15 "$out/ctest.log"
fi

if [[ "${TQUANT_GPU_SKIP_BENCH:-0}" != 1 ]]; then
  say "bench: tquant_cuda_int8_bench $*"
  "$build/bench/tquant_cuda_int8_bench" "$@" > "$out/cuda_int8_bench.log" 2>&1 || status=1
  cat "$out/cuda_int8_bench.log"
fi

say "$([[ $status == 0 ]] && echo PASS || echo FAIL); logs in $out"
exit "$status"
