#!/usr/bin/env bash
# Package test: installs tquant from a build folder into a temporary prefix, then, with the
# build's LibTorch folder (the venv's site-packages for a PyPI LibTorch) hidden from the loader,
# configures, builds and runs tests/consumer (find_package(tquant) + tquant::tquant) and every
# complete program of README.md and docs/*.md (fenced blocks with the info string
# `cpp complete`, docs/architecture.md) against that prefix and the same LibTorch files seen
# through another path, as a consumer that brings its own LibTorch would. Exits non-zero on any
# failure.
#
# Hiding: in a private mount namespace (unshare -m, or -rm without root) the LibTorch folder is
# bind-mounted to a new path and an empty tmpfs is mounted over the original, so nothing can
# load from the build's venv. Where no mount namespace can be made, the consumer uses a
# symlinked view instead and the loader's log (LD_DEBUG=libs) must show no file opened or
# searched under the build's path.
#
# Usage: tests/package_test.sh [build folder, default build]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="$(cd "${1:-$root/build}" && pwd)"
jobs="${TQUANT_JOBS:-$(nproc)}"
cache="$build_dir/CMakeCache.txt"
[[ -f "$cache" ]] || { echo "package test: $build_dir is not a configured build folder" >&2; exit 1; }

torch_dir="$(sed -n 's/^Torch_DIR:[A-Z]*=//p' "$cache")"
[[ -n "$torch_dir" ]] || { echo "package test: no Torch_DIR in $cache" >&2; exit 1; }
# <torch>/share/cmake/Torch -> <torch>; a PyPI torch hides its whole site-packages (the nvidia
# wheels next to it too).
torch_home="$(cd "$torch_dir/../../.." && pwd -P)"
hidden="$torch_home"
[[ "$(basename "$torch_home")" == torch ]] && hidden="$(dirname "$torch_home")"
torch_rel="$(cd "$torch_dir" && pwd -P)"
torch_rel="${torch_rel#"$hidden"/}"  # where Torch's CMake config lies under the hidden folder
# A build configured with PyPI's nvcc (scripts/setup.sh on a machine without a CUDA toolkit):
# that nvcc and its CUDA folder lie in the hidden folder too, and the consumer's
# find_package(Torch) needs them, so it gets them through the view.
nvcc_rel="$(sed -n 's/^CMAKE_CUDA_COMPILER:[A-Z]*=//p' "$cache")"
[[ -n "$nvcc_rel" ]] && nvcc_rel="$(realpath "$nvcc_rel")"
if [[ "$nvcc_rel" == "$hidden"/* ]]; then nvcc_rel="${nvcc_rel#"$hidden"/}"; else nvcc_rel=""; fi

work="$(mktemp -d "${TMPDIR:-/tmp}/tquant-package.XXXXXX")"
trap 'rm -rf "$work"' EXIT

run() { echo "+ $*"; "$@"; }
# Runs a command with its (long, warning-laden) output in a log that is shown only on failure.
quiet() {
  local log="$1"; shift
  echo "+ $*"
  "$@" >"$log" 2>&1 || { cat "$log"; return 1; }
}
quiet "$work/install.log" cmake --install "$build_dir" --prefix "$work/prefix"

# The installed library must not name the build's LibTorch, venv, source or build folder.
library="$(ls "$work"/prefix/lib*/libtquant.so* 2>/dev/null | head -1 || true)"
if [[ -n "$library" ]]; then
  runpath="$(readelf -d "$library" | sed -n 's/.*R\(UN\)\{0,1\}PATH.*\[\(.*\)\]/\2/p')"
  echo "installed RUNPATH: ${runpath:-<none>}"
  IFS=: read -r -a entries <<<"$runpath"
  for entry in "${entries[@]}"; do
    if [[ "$entry" == "$hidden"/* ]]; then
      echo "note: RUNPATH entry $entry lies in $hidden and is dead once it is gone"
    fi
    for tied in "$torch_home" "$root" "$build_dir"; do
      if [[ "$entry" == "$tied" || "$entry" == "$tied"/* ]]; then
        echo "package test: FAIL: $library has RUNPATH entry $entry inside $tied" >&2
        exit 1
      fi
    done
  done
fi

# The complete programs of the docs.
# README.md and every page under docs/, at any depth. A program is named after its page's path,
# unique per page: README.md -> doc_readme_<n>, docs/api.md -> doc_api_<n>,
# docs/<folder>/<page>.md -> doc_<folder>__<page>_<n>.
mkdir -p "$work/doc_programs"
declare -A doc_stems=()
while IFS= read -r page; do
  rel="${page#"$root"/}"
  stem="${rel#docs/}"; stem="${stem%.md}"; stem="${stem//\//__}"
  stem="$(printf '%s' "$stem" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9_' '_')"
  if [[ -n "${doc_stems[$stem]:-}" ]]; then
    echo "package test: FAIL: $rel and ${doc_stems[$stem]} give the same program names" \
      "(doc_${stem}_N)" >&2
    exit 1
  fi
  doc_stems[$stem]="$rel"
  awk -v out="$work/doc_programs" -v page="$rel" -v stem="$stem" '
    /^```cpp complete[[:space:]]*$/ && !inside { inside = 1; n++
      file = sprintf("%s/doc_%s_%d.cpp", out, stem, n)
      printf "// %s, line %d\n", page, NR > file; next }
    inside && /^```/ { inside = 0; close(file); next }
    inside { print > file }
    END { if (inside) { print page ": a cpp complete block is never closed" > "/dev/stderr"; exit 1 } }
  ' "$page"
done < <(echo "$root/README.md"; find "$root/docs" -name '*.md' -type f | LC_ALL=C sort)
programs=()
for source in "$work"/doc_programs/*.cpp; do
  [[ -e "$source" ]] && programs+=("$(basename "$source" .cpp)")
done
echo "complete programs in the docs: ${#programs[@]} (${programs[*]:-none})"

# Everything below runs with the build's LibTorch folder out of the loader's view.
cat >"$work/consumer.sh" <<SCRIPT
set -euo pipefail
view="\$1"
$(declare -f run quiet)
cuda_args=()
if [[ -n "$nvcc_rel" ]]; then
  cuda_root="\$view/$(dirname "$(dirname "$nvcc_rel")")"
  cuda_args=("-DCMAKE_CUDA_COMPILER=\$view/$nvcc_rel" "-DCUDA_TOOLKIT_ROOT_DIR=\$cuda_root"
             "-DCUDAToolkit_ROOT=\$cuda_root")
fi
quiet "$work/configure.log" cmake -S "$root/tests/consumer" -B "$work/build" \
  -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$work/prefix;\$view/$torch_rel/.." \
  "-DTQUANT_DOC_PROGRAMS=$work/doc_programs" "\${cuda_args[@]}"
grep -F -- '-- tquant ' "$work/configure.log" || true
quiet "$work/build.log" cmake --build "$work/build" -j "$jobs"
# Renamed API: the old spellings still build, with a deprecation warning (tests/consumer/old_names.cpp).
if ! grep -Eq 'old_names\.cpp:[0-9]+:[0-9]+: warning: .*deprecated' "$work/build.log"; then
  echo "package test: FAIL: no deprecation warning for tests/consumer/old_names.cpp" >&2
  exit 1
fi
echo "old names: \$(grep -Ec 'old_names\.cpp:[0-9]+:[0-9]+: warning: .*deprecated' "$work/build.log") deprecation warnings"
echo "where the consumer's program finds libtquant's dependencies:"
ldd "$work/build/app" | grep -E 'libtquant|libtorch\.so|libc10|cublasLt|cudart' || true
cd "$work"  # programs that write files write them here
for program in app ${programs[*]}; do
  if [[ -n "\${CHECK_LOADER_LOG:-}" ]]; then
    LD_DEBUG=libs LD_DEBUG_OUTPUT="$work/ld.\$program" "$work/build/\$program"
    if grep -hF -- "$hidden" "$work"/ld."\$program".*; then
      echo "package test: FAIL: \$program searched or loaded files under $hidden" >&2
      exit 1
    fi
  else
    run "$work/build/\$program"
  fi
done
SCRIPT
hide='mount --make-rprivate / && mkdir -p "$2" && mount --bind "$1" "$2" && mount -t tmpfs none "$1" && bash "$3" "$2"'
if unshare -m true 2>/dev/null; then
  echo "hiding $hidden (mount namespace)"
  unshare -m bash -c "$hide" _ "$hidden" "$work/view" "$work/consumer.sh"
elif unshare -rm true 2>/dev/null; then
  echo "hiding $hidden (user and mount namespace)"
  unshare -rm bash -c "$hide" _ "$hidden" "$work/view" "$work/consumer.sh"
else
  echo "no mount namespace here: a symlinked view of $hidden, and the loader's log is checked"
  ln -s "$hidden" "$work/view"
  CHECK_LOADER_LOG=1 bash "$work/consumer.sh" "$work/view"
fi
echo "package test: OK"
