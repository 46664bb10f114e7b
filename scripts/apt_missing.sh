# Sourced by the set-up scripts: install_missing_debian_packages PACKAGE... installs those of
# the packages that are not installed yet (apt-get update runs only then), with sudo when not
# root. Uses the caller's `say` function for messages; exits on failure.
install_missing_debian_packages() {
  local missing=() package
  for package in "$@"; do
    if ! dpkg -s "$package" 2>/dev/null | grep -q '^Status: install ok installed'; then
      missing+=("$package")
    fi
  done
  if ((${#missing[@]} == 0)); then
    say "Debian packages: all present"
    return 0
  fi
  say "installing Debian packages: ${missing[*]}"
  local sudo_cmd=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || { say "not root and no sudo: install ${missing[*]} yourself"; exit 1; }
    sudo_cmd=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}
