#!/usr/bin/env bash
# The CUDA INT8 check on a GPU machine (CUDA driver, PyTorch in python3, no apt, no network), in
# one command of under 8 minutes. Prepare and carry gpu_deps/ with scripts/gpu_bundle.sh, then,
# from the repository root there:
#
#   bash scripts/gpu_run.sh [--build] [bench arguments, e.g. --quick or --reps 100]
#
# 1. Binaries: the ones carried in gpu_deps/prebuilt/ (built here), run with LD_LIBRARY_PATH set
#    to gpu_deps/prebuilt/lib, then PyTorch's lib/ and the wheel's nvidia/*/lib folders, so the
#    process loads PyTorch's cuBLASLt and CUDA runtime. If they do not load there (other system
#    libraries), or with --build, it configures and builds them there instead (4-6 minutes) and
#    fails unless the configure log says the CUDA kernels were built.
# 2. Preflight: ldd of the test binary and libtquant.so (cublas, cudart, nvrtc), the toolkit and
#    driver versions, cuBLASLt compiled-against vs loaded (cublasLtGetVersion) and the file it was
#    loaded from; fails if the kernels were not built or no GPU is visible.
# 3. Every _CUDA test of cuda_int8_test and cuda_converted_test in its own process (a sticky CUDA
#    error cannot poison the others), with CUDA_LAUNCH_BLOCKING=1; a failing one is run again
#    with TQUANT_INT8_GEMM_PAD_SMALL_M=1 to tell whether padding small M cures it. A skipped
#    _CUDA test is a failure.
# 4. Both test programs whole, asynchronous (no CUDA_LAUNCH_BLOCKING), CPU tests included.
# 5. tquant_cuda_int8_bench with the arguments given (TQUANT_GPU_SKIP_BENCH=1 skips it).
#
# Prints PASS only if every step passed. Environment: OUT (default gpu_out/), PYTHON (default
# python3), TQUANT_GPU_DEPS (default gpu_deps/), TQUANT_GPU_BUILD_DIR (default build-gpu/),
# TQUANT_GPU_BUDGET_S (default 450: every step is cut to what is left of it).
# Files in the output folder (at most 7): summary.txt, env.txt, preflight.log, cuda_tests.log,
# all_tests.log, bench.log, and build.log when it built.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="${TQUANT_GPU_DEPS:-$root/gpu_deps}"
build="${TQUANT_GPU_BUILD_DIR:-$root/build-gpu}"
out="${OUT:-$root/gpu_out}"
python="${PYTHON:-python3}"
budget="${TQUANT_GPU_BUDGET_S:-450}"
start=$SECONDS
ld_path_given="${LD_LIBRARY_PATH:-}"
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
failures=()

say() { printf '[gpu_run] %s\n' "$*" | tee -a "$summary"; }
fail() {
  failures+=("$*")
  say "FAIL: $*"
}
finish() {
  local elapsed=$((SECONDS - start))
  if ((${#failures[@]} == 0)); then
    say "PASS ($*; ${elapsed} s); logs in $out"
    exit 0
  fi
  say "FAIL: ${#failures[@]} problem(s) (${elapsed} s); logs in $out:"
  local f
  for f in "${failures[@]}"; do say "  - $f"; done
  exit 1
}
# bounded LIMIT cmd...: runs cmd for at most LIMIT seconds and never past the budget.
bounded() {
  local limit=$1
  shift
  local left=$((budget - (SECONDS - start) - 10))
  ((left < limit)) && limit=$left
  if ((limit < 5)); then
    echo "[gpu_run] out of time budget (${budget} s): not run: $*"
    return 124
  fi
  timeout --kill-after=5 "$limit" "$@"
}

mode=prebuilt
if [[ "${1:-}" == "--build" ]]; then
  mode=build
  shift
fi
if [[ "$mode" == prebuilt && ! -f "$deps/prebuilt/manifest.txt" ]]; then
  say "no $deps/prebuilt/manifest.txt (scripts/gpu_bundle.sh prepares it): building here"
  mode=build
fi

# ---- the machine, PyTorch and its CUDA libraries ----------------------------------------------
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || {
  fail "$python cannot import torch; set PYTHON to the interpreter that has it"
  finish
}
site="$(dirname "$(dirname "$torch_lib")")"
nvidia_libs=""
for d in "$site"/nvidia/*/lib; do
  [[ -d "$d" ]] && nvidia_libs+="$d:"
done
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
{
  date -u
  uname -srm
  grep -m1 "^PRETTY_NAME=" /etc/os-release
  ldd --version | head -1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  nvcc --version 2>&1 | tail -2
  grep -A1 -E '"(cuda_cudart|libcublas)"' /usr/local/cuda/version.json 2>/dev/null
  cmake --version 2>&1 | head -1
  # Which cuBLAS / cuBLASLt / runtime files PyTorch itself loads (after one GEMM).
  "$python" - <<'PY' 2>&1
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
if torch.cuda.is_available():
    a = torch.ones(64, 64, device="cuda")
    (a @ a).sum().item()
    with open("/proc/self/maps") as maps:
        libs = sorted({l.split()[-1] for l in maps
                       if any(k in l for k in ("libcublas", "libcudart", "libnvrtc"))})
    print("PyTorch loads:", *libs, sep="\n  ")
PY
  echo "torch lib: $torch_lib"
  echo "nvidia libs: $nvidia_libs"
  [[ -f "$deps/prebuilt/manifest.txt" ]] && sed 's/^/manifest: /' "$deps/prebuilt/manifest.txt"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

# ---- binaries: carried, or built here ----------------------------------------------------------
if [[ "$mode" == prebuilt ]]; then
  bin="$deps/prebuilt/bin"
  bench_bin="$bin/tquant_cuda_int8_bench"
  export LD_LIBRARY_PATH="$deps/prebuilt/lib:$torch_lib:$nvidia_libs$ld_path_given"
  if ! grep -q '^kernels: built' "$deps/prebuilt/manifest.txt"; then
    fail "gpu_deps/prebuilt/manifest.txt does not say the CUDA kernels were built"
    finish
  fi
  if ldd "$bin/cuda_int8_test" 2>&1 | grep -q "GLIBCXX_.*not found"; then
    say "the system's libstdc++ is older than the build's: using gpu_deps/prebuilt/compat"
    export LD_LIBRARY_PATH="$deps/prebuilt/compat:$LD_LIBRARY_PATH"
  fi
  load_errors="$( (ldd "$bin/cuda_int8_test"; ldd "$bin/cuda_converted_test") 2>&1 |
                  grep -E 'not found' | sort -u)"
  if [[ -n "$load_errors" ]]; then
    say "the carried binaries do not load here; building here instead:"
    printf '%s\n' "$load_errors" | tee -a "$summary"
    mode=build
  fi
fi
if [[ "$mode" == build ]]; then
  export LD_LIBRARY_PATH="$ld_path_given"  # not the carried libtquant.so
  if [[ -f "$deps/env.sh" ]]; then
    # shellcheck disable=SC1091
    source "$deps/env.sh"
  else
    say "no $deps/env.sh: relying on this machine's GoogleTest and nlohmann-json"
  fi
  torch_prefix="$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  say "configure $build"
  bounded 120 cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    "-DCMAKE_PREFIX_PATH=$torch_prefix;${TQUANT_DEPS_PREFIX:-}" \
    ${GTest_DIR:+"-DGTest_DIR=$GTest_DIR"} \
    ${nlohmann_json_DIR:+"-Dnlohmann_json_DIR=$nlohmann_json_DIR"} \
    -DTQUANT_BUILD_EXAMPLES=OFF -DTQUANT_WITH_CUDA=ON > "$out/build.log" 2>&1
  rc=$?
  grep -E '^-- tquant:' "$out/build.log" | tee -a "$summary"
  if ((rc != 0)); then
    tail -30 "$out/build.log"
    fail "configure (exit $rc, build.log)"
    finish
  fi
  if ! grep -q -- '-- tquant: CUDA kernels for architectures' "$out/build.log"; then
    fail "the configure log does not say the CUDA kernels were built (nvcc or a CUDA LibTorch not found); every _CUDA test would skip"
    finish
  fi
  say "build cuda_int8_test cuda_converted_test tquant_cuda_int8_bench (-j$(nproc))"
  bounded 330 cmake --build "$build" -j "$(nproc)" --target cuda_int8_test cuda_converted_test \
    tquant_cuda_int8_bench >> "$out/build.log" 2>&1
  rc=$?
  if ((rc != 0)); then
    tail -40 "$out/build.log"
    fail "build (exit $rc, build.log)"
    finish
  fi
  bin="$build/tests"
  bench_bin="$build/bench/tquant_cuda_int8_bench"
  export LD_LIBRARY_PATH="$build/src:$torch_lib:$nvidia_libs${LD_LIBRARY_PATH:-}"
fi
say "mode $mode; binaries in $bin"

# ---- preflight: libraries and versions ---------------------------------------------------------
libtquant="$(ldd "$bin/cuda_int8_test" | awk '/libtquant/ {print $3}')"
{
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  for f in "$bin/cuda_int8_test" "$libtquant"; do
    echo "ldd $f:"
    ldd "$f" 2>&1 | grep -E 'cublas|cudart|nvrtc|tquant|torch_cuda|c10_cuda|not found'
  done
  bounded 90 "$bin/cuda_int8_test" --gtest_filter='CudaInt8Build.*'
  echo "exit $?"
} > "$out/preflight.log" 2>&1
cat "$out/preflight.log"
versions="$(grep '^\[tquant\]' "$out/preflight.log")"
say "${versions:-no version line from cuda_int8_test (see preflight.log)}"
if [[ "$versions" != *"cuda_int8_built=1"* ]]; then
  fail "the test binary does not report cuda_int8_built=1: the CUDA kernels are not in it"
  finish
fi
if [[ "$versions" != *"cuda_int8_available=1"* ]]; then
  fail "the test binary sees no CUDA device"
  finish
fi
grep -q '^exit 0$' "$out/preflight.log" ||
  fail "CudaInt8Build.LibraryVersions (cuBLASLt compiled-against vs loaded; preflight.log)"

# ---- each _CUDA test in its own process ---------------------------------------------------------
# outcome FILE RC: pass, skip or fail(RC) from one gtest run of one test.
outcome() {
  if grep -q '^\[  SKIPPED \]' "$1"; then
    echo skip
  elif (($2 == 0)) && grep -q '^\[  PASSED  \] 1 test' "$1"; then
    echo pass
  else
    echo "fail(exit $2)"
  fi
}
tmp="$(mktemp)"
: > "$out/cuda_tests.log"
n_cuda=0
n_pass=0
for prog in cuda_int8_test cuda_converted_test; do
  names="$("$bin/$prog" --gtest_list_tests 2>>"$out/cuda_tests.log" |
           awk '/^[^ ]/ {suite = $1; next} {print suite $1}' | grep '_CUDA$')"
  [[ -n "$names" ]] || fail "$prog lists no _CUDA test"
  for name in $names; do
    n_cuda=$((n_cuda + 1))
    bounded 150 env CUDA_LAUNCH_BLOCKING=1 "$bin/$prog" --gtest_filter="$name" > "$tmp" 2>&1
    result="$(outcome "$tmp" $?)"
    { echo "=== $prog $name (CUDA_LAUNCH_BLOCKING=1): $result"; cat "$tmp"; } >> "$out/cuda_tests.log"
    case "$result" in
      pass)
        n_pass=$((n_pass + 1))
        say "  pass  $name"
        ;;
      skip) fail "$name skipped: $(grep -A1 -m1 'Skipped' "$tmp" | tail -1 | cut -c1-200)" ;;
      *)
        bounded 150 env CUDA_LAUNCH_BLOCKING=1 TQUANT_INT8_GEMM_PAD_SMALL_M=1 "$bin/$prog" \
          --gtest_filter="$name" > "$tmp" 2>&1
        padded="$(outcome "$tmp" $?)"
        { echo "=== $prog $name again with TQUANT_INT8_GEMM_PAD_SMALL_M=1: $padded"; cat "$tmp"; } \
          >> "$out/cuda_tests.log"
        fail "$name $result; with TQUANT_INT8_GEMM_PAD_SMALL_M=1: $padded (cuda_tests.log)"
        ;;
    esac
  done
done

# ---- the test programs whole, asynchronous ------------------------------------------------------
: > "$out/all_tests.log"
for prog in cuda_int8_test cuda_converted_test; do
  bounded 240 "$bin/$prog" > "$tmp" 2>&1
  rc=$?
  { echo "=== $prog (exit $rc)"; cat "$tmp"; } >> "$out/all_tests.log"
  skipped="$(grep -E '^\[  SKIPPED \] [A-Za-z0-9_]+\.[A-Za-z0-9_]+_CUDA' "$tmp" | awk '{print $4}' |
             sort -u | tr '\n' ' ')"
  say "  $prog whole: $(grep -E '^\[  (PASSED|FAILED) +\] [0-9]+ test' "$tmp" | tr '\n' ' ')(exit $rc)"
  ((rc == 0)) || fail "$prog run whole (exit $rc; all_tests.log)"
  [[ -z "$skipped" ]] || fail "$prog run whole skipped $skipped"
done
rm -f "$tmp"

# ---- bench --------------------------------------------------------------------------------------
if [[ "${TQUANT_GPU_SKIP_BENCH:-0}" != 1 ]]; then
  say "bench: tquant_cuda_int8_bench $*"
  bounded 300 "$bench_bin" "$@" > "$out/bench.log" 2>&1
  rc=$?
  cat "$out/bench.log"
  ((rc == 0)) || fail "tquant_cuda_int8_bench (exit $rc; bench.log)"
fi

finish "$n_pass/$n_cuda _CUDA tests passed, each in its own process; both test programs passed whole; mode $mode"
