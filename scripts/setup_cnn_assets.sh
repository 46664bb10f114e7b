#!/usr/bin/env bash
# Idempotent set-up of the CNN example's data (examples/cnn, docs/cnn.md):
#   1. PyPI scikit-learn installed into the project's virtual environment .venv, if missing;
#   2. its bundled handwritten digits (load_digits: 1,797 images of 8x8) exported once by
#      examples/cnn/export_digits.py to <data dir>/digits.safetensors.
# A second run finds both in place and does nothing.
#
# Environment:
#   TQUANT_DATA_DIR      where digits.safetensors goes (default: build/data)
#
# Usage: scripts/setup_cnn_assets.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${TQUANT_DATA_DIR:-$root/build/data}"
case "$data_dir" in /*) ;; *) data_dir="$root/$data_dir" ;; esac
venv="$root/.venv"
digits="$data_dir/digits.safetensors"

say() { printf '[cnn-assets] %s\n' "$*"; }

if [[ -s "$digits" ]]; then
  say "digits already in $digits"
  exit 0
fi
if [[ ! -x "$venv/bin/python" ]]; then
  say "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
if "$venv/bin/python" -c "import sklearn" 2>/dev/null; then
  say "scikit-learn already in $venv"
else
  say "installing scikit-learn into $venv"
  pip_args=(--disable-pip-version-check --no-input)
  [[ "${CI:-}" == "true" ]] && pip_args+=(--progress-bar off)
  "$venv/bin/python" -m pip install "${pip_args[@]}" scikit-learn
fi
mkdir -p "$data_dir"
"$venv/bin/python" "$root/examples/cnn/export_digits.py" "$digits"
