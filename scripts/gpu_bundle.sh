#!/usr/bin/env bash
# Bundles the Debian packages that a tquant build with tests needs into one folder, for a GPU
# machine that has CUDA, CMake and PyTorch but no apt and no network. Run it here (a Debian 12
# machine with apt); carry the folder to the GPU machine and run scripts/gpu_run.sh there.
#
#   scripts/gpu_bundle.sh [DEST]        (default DEST: gpu_deps/ in the repository, git-ignored)
#
# What it does: `apt-get download` of the -dev packages (headers, static libraries, CMake package
# configs) and of the shared libraries they link, then `dpkg -x` of each into DEST/root, and a
# DEST/env.sh that points CMake and the loader at it. A second run re-uses the downloaded .debs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/gpu_deps}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

# -dev packages tquant's CMake finds (tests: GTest; safetensors: nlohmann_json; examples and
# benches: benchmark, fmt, utf8proc) and the runtime libraries behind their .so links.
packages=(
  libgtest-dev
  libbenchmark-dev libbenchmark1debian
  libfmt-dev libfmt9
  nlohmann-json3-dev
  libutf8proc-dev libutf8proc2
)

say() { printf '[gpu_bundle] %s\n' "$*"; }

mkdir -p "$dest/debs"
missing=()
for p in "${packages[@]}"; do
  compgen -G "$dest/debs/${p}_*.deb" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  say "apt-get download ${missing[*]}"
  if ! (cd "$dest/debs" && apt-get download "${missing[@]}"); then
    say "apt-get download failed; trying once more after apt-get update"
    apt-get update -q
    (cd "$dest/debs" && apt-get download "${missing[@]}")
  fi
else
  say "all .deb files already in $dest/debs"
fi

rm -rf "$dest/root"
mkdir -p "$dest/root"
for deb in "$dest"/debs/*.deb; do
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

say "unpacked into $dest/root ($(du -sh "$dest/root" | cut -f1)); .debs $(du -sh "$dest/debs" | cut -f1)"
say "on the GPU machine: carry '$(realpath --relative-to="$root" "$dest" 2>/dev/null || echo "$dest")' and run scripts/gpu_run.sh"
