#!/usr/bin/env bash
# README command two: set up and build (skipped when done; includes the BERT assets of
# scripts/setup_bert_assets.sh), run the unit tests with ctest (library and BERT example), the
# package test (install tquant into a temporary prefix and build a separate project against it
# with find_package), the no-CUDA-toolkit test (tests/no_cuda_test.sh: set-up, library and
# quickstart in <build>-nocuda with the CUDA toolkit hidden), the kernel tests on other CPUs
# (tests/cpu_isa_test.sh: ISA caps and qemu -cpu Haswell), the quickstart, and the BERT demo
# in --quick mode. Prints one PASS / FAIL line per step and exits non-zero if any step failed.
# Before all that, the docs check (scripts/check_docs.py: cited files, work-log words).
#
# Usage: scripts/run_tests.sh [extra ctest arguments, e.g. -R Histogram]
#        (environment as for scripts/setup.sh)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${TQUANT_BUILD_DIR:-build}"
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac
jobs="${TQUANT_JOBS:-$(nproc)}"

# The docs check, first (about two seconds, nothing built): scripts/check_docs.py's self-test
# (each kind of error planted in a temporary repository must be found), then the check of the
# tree: every file that README.md, docs/**/*.md and the code comments cite exists, there are
# no work-log words (the list is in the script), and every `cpp complete` block is closed and
# has a main. Those programs build and run against the installed package in the package test.
docs_label="docs check (cited files, work-log words, cpp complete blocks; the doc programs"
docs_label+=" build in the package test)"
echo "[tests] scripts/check_docs.py --self-test, scripts/check_docs.py"
docs_status=0
if docs_selftest="$(python3 "$root/scripts/check_docs.py" --self-test 2>&1)"; then
  tail -1 <<<"$docs_selftest"
else
  echo "$docs_selftest"
  docs_status=1
fi
python3 "$root/scripts/check_docs.py" || docs_status=1
docs_result="PASS  $docs_label"
[[ "$docs_status" == 0 ]] || docs_result="FAIL  $docs_label"
echo "[tests] $docs_result"

if ! bash "$root/scripts/setup.sh" -DTQUANT_BUILD_TESTS=ON -DTQUANT_BUILD_EXAMPLES=ON; then
  echo "[tests] FAIL  set-up or build (see the messages above)"
  exit 1
fi
# The BERT example's tests and demo need the pretrained model and the exported reviews.
if ! bash "$root/scripts/setup_bert_assets.sh"; then
  echo "[tests] FAIL  BERT assets (see the messages above)"
  exit 1
fi
data_dir="${TQUANT_DATA_DIR:-$build_dir/data}"
# shellcheck disable=SC1091  # written by setup_bert_assets.sh
source "$data_dir/bert_assets.env"
export TQUANT_BERT_MODEL_DIR="$MODEL_DIR" TQUANT_BERT_DATA_DIR="$DATA_DIR" TQUANT_DATA_DIR="$DATA_DIR"

status="$docs_status"
results=("$docs_result")

echo "[tests] ctest --test-dir $build_dir"
if ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$jobs" "$@"; then
  results+=("PASS  unit tests (ctest)")
else
  results+=("FAIL  unit tests (ctest)")
  status=1
fi

echo "[tests] tests/package_test.sh"
if bash "$root/tests/package_test.sh" "$build_dir"; then
  results+=("PASS  package test (install + find_package(tquant) consumer)")
else
  results+=("FAIL  package test (install + find_package(tquant) consumer)")
  status=1
fi

# The set-up on a machine without a CUDA toolkit: in a private mount namespace with the toolkit
# hidden, a second build folder (library and quickstart only) is configured with PyPI's nvcc,
# built, and the quickstart runs.
nocuda_dir="${TQUANT_NOCUDA_BUILD_DIR:-$build_dir-nocuda}"
nocuda_log="$nocuda_dir/no_cuda_test.log"
mkdir -p "$nocuda_dir"
echo "[tests] tests/no_cuda_test.sh (log: $nocuda_log)"
nocuda_status=0
TQUANT_NOCUDA_BUILD_DIR="$nocuda_dir" bash "$root/tests/no_cuda_test.sh" >"$nocuda_log" 2>&1 ||
  nocuda_status=$?
grep -E '^\[no-cuda\]|^\[setup\] CUDA|^-- tquant: nvcc' "$nocuda_log" || true
case "$nocuda_status" in
  0) results+=("PASS  set-up, build and quickstart without a CUDA toolkit (log: $nocuda_log)") ;;
  77) results+=("SKIP  no-CUDA-toolkit test: no mount namespace to hide the toolkit in") ;;
  *)
    tail -40 "$nocuda_log"
    results+=("FAIL  set-up, build and quickstart without a CUDA toolkit (log: $nocuda_log)")
    status=1
    ;;
esac

# The CPUs users have: the kernel and converted-model tests with the instruction set capped to
# AVX-512 without VNNI and to AVX2, and a subset under an emulated Haswell (qemu-user).
cpu_isa_log="$build_dir/cpu_isa_test.log"
echo "[tests] tests/cpu_isa_test.sh (log: $cpu_isa_log)"
if bash "$root/tests/cpu_isa_test.sh" "$build_dir" >"$cpu_isa_log" 2>&1; then
  results+=("PASS  kernel tests capped to AVX512_CORE and AVX2, and under qemu -cpu Haswell (log: $cpu_isa_log)")
else
  grep -E '^(PASS|FAIL) ' "$cpu_isa_log" | grep '^FAIL' || tail -40 "$cpu_isa_log"
  results+=("FAIL  kernel tests on other CPUs (log: $cpu_isa_log)")
  status=1
fi

echo "[tests] examples: quickstart, CNN, BERT demo --quick"
if "$build_dir/examples/quickstart/tquant_quickstart" > "$build_dir/quickstart.log" 2>&1; then
  results+=("PASS  quickstart example (log: $build_dir/quickstart.log)")
else
  tail -20 "$build_dir/quickstart.log"
  results+=("FAIL  quickstart example (log: $build_dir/quickstart.log)")
  status=1
fi
if bash "$root/scripts/setup_cnn_assets.sh" && "$build_dir/examples/cnn/tquant_cnn_demo" > "$build_dir/cnn_demo.log" 2>&1; then
  results+=("PASS  CNN example (log: $build_dir/cnn_demo.log)")
else
  tail -20 "$build_dir/cnn_demo.log" 2>/dev/null || true
  results+=("FAIL  CNN example (log: $build_dir/cnn_demo.log)")
  status=1
fi
if "$build_dir/examples/bert/tquant_bert_demo" --quick --out-dir "$build_dir/bert_demo_quick"; then
  results+=("PASS  BERT demo --quick (results: $build_dir/bert_demo_quick)")
else
  results+=("FAIL  BERT demo --quick")
  status=1
fi

echo
echo "[tests] summary"
printf '  %s\n' "${results[@]}"
exit "$status"
