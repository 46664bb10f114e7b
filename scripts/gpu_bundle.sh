#!/usr/bin/env bash
# Prepares gpu_deps/ (git-ignored), the one folder to carry to a GPU machine that has CUDA, CMake
# and PyTorch but no apt and no network, where scripts/gpu_run.sh then runs the CUDA checks:
#
#   gpu_deps/prebuilt/  what runs there without building (the preferred way: a build there takes
#                       4-6 of the 10 minutes a command may run): bin/ (cuda_int8_test,
#                       cuda_converted_test, tquant_cuda_int8_bench, stripped), lib/ (libtquant.so
#                       and the few libraries the binaries need that neither the system nor
#                       PyTorch's wheel provides), compat/ (this machine's libstdc++, used there
#                       only if the system's is too old), manifest.txt (commit, toolchain,
#                       versions, and "kernels: built").
#   gpu_deps/root/      the Debian -dev packages a build with tests needs (GoogleTest,
#                       nlohmann-json, ...), unpacked, plus gpu_deps/env.sh: the build-there
#                       fallback of gpu_run.sh.
#
#   scripts/gpu_bundle.sh [--no-build] [BUILD_DIR]    (default BUILD_DIR: build/)
#
# BUILD_DIR must be configured with the CUDA kernels (nvcc found, CUDA LibTorch,
# TQUANT_WITH_CUDA=ON); the script builds the three targets there unless --no-build, checks that
# libtquant.so calls cuBLASLt (i.e. the kernels, not the stubs, were compiled) and fails
# otherwise. The .deb files are kept in .cache/gpu_debs/ (not carried) for the next run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_first=1
if [[ "${1:-}" == "--no-build" ]]; then
  build_first=0
  shift
fi
build="${1:-$root/build}"
dest="$root/gpu_deps"
say() { printf '[gpu_bundle] %s\n' "$*"; }
die() { say "FAIL: $*"; exit 1; }

targets=(cuda_int8_test cuda_converted_test tquant_cuda_int8_bench)
[[ -f "$build/CMakeCache.txt" ]] || die "$build is not a configured build folder"
if ((build_first)); then
  say "cmake --build $build --target ${targets[*]}"
  cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" >/dev/null \
    || die "build of ${targets[*]} failed (run the command above to see why)"
fi
lib="$(find "$build/src" -maxdepth 1 -name 'libtquant.so*' -type f | head -1)"
[[ -n "$lib" ]] || die "no libtquant.so in $build/src (a static build cannot be carried this way)"
bins=("$build/tests/cuda_int8_test" "$build/tests/cuda_converted_test"
      "$build/bench/tquant_cuda_int8_bench")
for b in "${bins[@]}"; do [[ -x "$b" ]] || die "$b was not built"; done
# The stubs (kernels/int8_cuda_stub.cpp) call no cuBLASLt; the kernels' host side does.
if ! nm -D --undefined-only "$lib" | grep -E ' cublasLtMatmul(@|$)' >/dev/null; then
  die "$lib has no CUDA kernels (configured without nvcc or a CUDA LibTorch?): nothing to carry"
fi

# ---- prebuilt binaries -------------------------------------------------------------------------
pre="$dest/prebuilt"
rm -rf "$pre"
mkdir -p "$pre/bin" "$pre/lib" "$pre/compat"
for b in "${bins[@]}"; do
  cp "$b" "$pre/bin/"
done
cp -L "$lib" "$pre/lib/$(objdump -p "$lib" | awk '/SONAME/ {print $2}')"
strip --strip-unneeded "$pre"/bin/* "$pre"/lib/*
# Libraries the binaries resolve here outside glibc, the compiler runtime, LibTorch's folder and
# NVIDIA's (those come from the GPU machine's own system and PyTorch wheel).
ldd "${bins[@]}" "$lib" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
  while read -r so; do
    case "$(basename "$so")" in
      libc.so* | libm.so* | libdl.so* | librt.so* | libpthread.so* | libutil.so* | libresolv.so* |\
      ld-linux* | libgcc_s.so* | libstdc++.so*) continue ;;
    esac
    case "$so" in
      */torch/lib/* | */nvidia/* | /usr/local/cuda*) continue ;;
    esac
    cp -L "$so" "$pre/lib/"
  done
cp -L "$(ldd "$lib" | awk '$1 ~ /^libstdc\+\+/ {print $3}')" "$pre/compat/"

python="$root/.venv/bin/python"
[[ -x "$python" ]] || python=python3
versions="$(LD_LIBRARY_PATH="$pre/lib" "$pre/bin/cuda_int8_test" \
              --gtest_filter=CudaInt8Build.LibraryVersions 2>&1 | grep '^\[tquant\]' || true)"
glibc_needed="$(objdump -T "$pre"/bin/* "$pre"/lib/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' |
                sort -uV | tail -1)"
glibcxx_needed="$(objdump -T "$pre"/bin/* "$pre"/lib/* 2>/dev/null | grep -o 'GLIBCXX_[0-9.]*' |
                  sort -uV | tail -1)"
{
  echo "kernels: built ($(basename "$lib") imports cublasLtMatmul)"
  echo "commit: $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD -- \
                kernels include src tests bench CMakeLists.txt cmake || echo ' (with local changes)')"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "built on: $(grep -m1 "^PRETTY_NAME=" /etc/os-release | cut -d= -f2), $(ldd --version | head -1)"
  echo "needs: $glibc_needed, $glibcxx_needed"
  echo "compiler: $(grep -E '^CMAKE_CXX_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2)"
  echo "nvcc: $(grep -E '^CMAKE_CUDA_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2)" \
       "$("$(grep -E '^CMAKE_CUDA_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2)" --version |
           grep -o 'release [0-9.]*')"
  echo "cuda architectures: $(grep -E '^TQUANT_CUDA_ARCHITECTURES:' "$build/CMakeCache.txt" |
                              cut -d= -f2)"
  echo "torch: $("$python" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '?')"
  echo "runpath of $(basename "$lib"): $(objdump -p "$lib" | awk '/RUNPATH/ {print $2}')"
  echo "here: $versions"
} > "$pre/manifest.txt"
cat "$pre/manifest.txt"
[[ "$versions" == *"cuda_int8_built=1"* ]] || die "the carried cuda_int8_test does not report cuda_int8_built=1"

# ---- Debian packages for the build-there fallback ----------------------------------------------
# -dev packages tquant's CMake finds (tests: GTest; safetensors: nlohmann_json; examples and
# benches: benchmark, fmt, utf8proc) and the runtime libraries behind their .so links.
packages=(
  libgtest-dev
  libbenchmark-dev libbenchmark1debian
  libfmt-dev libfmt9
  nlohmann-json3-dev
  libutf8proc-dev libutf8proc2
)
# The .deb files stay outside the carried folder (git-ignored .cache/), for the next run.
debs="${TQUANT_GPU_DEB_CACHE:-$root/.cache/gpu_debs}"
mkdir -p "$debs"
rm -rf "$dest/debs"  # where earlier versions of this script kept them
missing=()
for p in "${packages[@]}"; do
  compgen -G "$debs/${p}_*.deb" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  say "apt-get download ${missing[*]}"
  if ! (cd "$debs" && apt-get download "${missing[@]}"); then
    say "apt-get download failed; trying once more after apt-get update"
    apt-get update -q
    (cd "$debs" && apt-get download "${missing[@]}")
  fi
fi
rm -rf "$dest/root"
mkdir -p "$dest/root"
for deb in "$debs"/*.deb; do
  dpkg -x "$deb" "$dest/root"
done
# Sources and docs are not needed for building against the packages.
rm -rf "$dest/root/usr/share/doc" "$dest/root/usr/src"

multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
cat > "$dest/env.sh" <<ENV
# Source this (from any directory) to build against the bundled packages.
_tquant_deps="\$(cd "\$(dirname "\${BASH_SOURCE[0]}")" && pwd)/root"
export TQUANT_DEPS_PREFIX="\$_tquant_deps/usr"
export CMAKE_PREFIX_PATH="\$_tquant_deps/usr:\$_tquant_deps/usr/lib/$multiarch/cmake:\$_tquant_deps/usr/share/cmake\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
export CPATH="\$_tquant_deps/usr/include\${CPATH:+:\$CPATH}"
export LIBRARY_PATH="\$_tquant_deps/usr/lib/$multiarch\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export LD_LIBRARY_PATH="\$_tquant_deps/usr/lib/$multiarch\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export GTest_DIR="\$_tquant_deps/usr/lib/$multiarch/cmake/GTest"
export nlohmann_json_DIR="\$_tquant_deps/usr/share/cmake/nlohmann_json"
export benchmark_DIR="\$_tquant_deps/usr/lib/$multiarch/cmake/benchmark"
export fmt_DIR="\$_tquant_deps/usr/lib/$multiarch/cmake/fmt"
unset _tquant_deps
ENV

total_kib="$(du -sk "$dest" | cut -f1)"
say "prebuilt $(du -sh "$pre" | cut -f1), packages $(du -sh "$dest/root" | cut -f1);" \
    "gpu_deps/ in all $((total_kib / 1024)) MiB"
((total_kib < 48 * 1024)) || die "gpu_deps/ is over 48 MiB: too much for a 64 MiB carry"
say "OK; carry 'gpu_deps' and run: bash scripts/gpu_run.sh (docs/backends.md, \"First GPU run\")"
