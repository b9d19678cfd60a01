# Sourced by scripts/ensure-test-deps.sh before the family scripts.
# apt_install PKG...: installs the Debian packages that are missing, running
# apt-get update at most once per run; without root it names what to install.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-test-deps: the tests need these Debian packages: ${missing[*]}" >&2
    echo "    sudo apt-get install ${missing[*]}" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  echo "ensure-test-deps: installing ${missing[*]} with apt-get" >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
