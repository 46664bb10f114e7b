#!/usr/bin/env bash
# The CPU kernel and converted-model tests on the CPUs users have, not only this one:
#
#   1. capped: each test program again with ONEDNN_MAX_CPU_ISA set (oneDNN's own switch; tquant
#      honours it too when TQUANT_MAX_CPU_ISA is unset), so both libraries run the kernels an
#      AVX-512 CPU without VNNI (AVX512_CORE) and an AVX2-only CPU (AVX2) get;
#   2. emulated: a subset under `qemu-x86_64 -cpu Haswell` (Debian's qemu-user: AVX2, FMA, no
#      AVX-512), where every CPU check, LibTorch's and oneDNN's included, sees an older CPU;
#   3. the quickstart, whose converted models must equal their simulation, both ways.
#
# Usage: tests/cpu_isa_test.sh [build folder, default build]
# Environment: TQUANT_ISA_LEVELS (default "AVX512_CORE AVX2"), TQUANT_SKIP_QEMU=1 skips step 2.
# Prints one PASS / FAIL line per run and exits non-zero if any failed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="$(cd "${1:-$root/build}" && pwd)"
levels="${TQUANT_ISA_LEVELS:-AVX512_CORE AVX2}"
failures=0
results=()

# The kernel and converted-model test programs (each must exist in the build).
capped_tests=(cpu_dispatch_test gemm_cpu_test int8_attention_test kernel_neighbour_test w4a8_test
              add_layer_norm_test functional_test quant_linear_test linear_gelu_test convert_test
              smooth_quant_test quant_modules_test serialize_test)
# Under emulation (10-50x slower): the kernels and the dispatch, with the slow cases left out.
qemu_tests=(cpu_dispatch_test gemm_cpu_test int8_attention_test kernel_neighbour_test w4a8_test
            add_layer_norm_test functional_test quant_linear_test linear_gelu_test convert_test
            smooth_quant_test)

record() {  # record STATUS TEXT
  results+=("$1  $2")
  [[ "$1" == PASS ]] || failures=$((failures + 1))
}

run_logged() {  # run_logged LOG CMD...: output to LOG, shown (tail) on failure
  local log="$1"
  shift
  if "$@" >"$log" 2>&1; then
    return 0
  fi
  tail -30 "$log"
  return 1
}

logs="$build_dir/cpu_isa_logs"
mkdir -p "$logs"

for level in $levels; do
  for t in "${capped_tests[@]}" tquant_quickstart; do
    bin="$build_dir/tests/$t"
    [[ "$t" == tquant_quickstart ]] && bin="$build_dir/examples/quickstart/tquant_quickstart"
    if [[ ! -x "$bin" ]]; then
      record FAIL "$t not built ($bin)"
      continue
    fi
    if ONEDNN_MAX_CPU_ISA="$level" run_logged "$logs/$t.$level.log" "$bin"; then
      record PASS "$t with ONEDNN_MAX_CPU_ISA=$level"
    else
      record FAIL "$t with ONEDNN_MAX_CPU_ISA=$level (log: $logs/$t.$level.log)"
    fi
  done
done

if [[ "${TQUANT_SKIP_QEMU:-0}" != 1 ]]; then
  if ! command -v qemu-x86_64 >/dev/null; then
    # shellcheck source=scripts/apt_missing.sh
    say() { printf '[cpu-isa] %s\n' "$*"; }
    source "$root/scripts/apt_missing.sh"
    install_missing_debian_packages qemu-user
  fi
  # Slow cases under emulation: large shapes that the native and capped runs cover.
  qemu_filter="-*LargeK*:*Bert*:*Large*"
  for t in "${qemu_tests[@]}" tquant_quickstart; do
    bin="$build_dir/tests/$t"
    args=(--gtest_filter="$qemu_filter")
    if [[ "$t" == tquant_quickstart ]]; then
      bin="$build_dir/examples/quickstart/tquant_quickstart"
      args=()
    fi
    start=$SECONDS
    if run_logged "$logs/$t.qemu-haswell.log" timeout 1200 qemu-x86_64 -cpu Haswell "$bin" "${args[@]}"; then
      record PASS "$t under qemu-x86_64 -cpu Haswell ($((SECONDS - start)) s)"
    else
      record FAIL "$t under qemu-x86_64 -cpu Haswell (log: $logs/$t.qemu-haswell.log)"
    fi
  done
fi

printf '%s\n' "${results[@]}"
echo "cpu-isa: $failures of ${#results[@]} runs failed"
((failures == 0))
