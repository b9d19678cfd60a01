# Node.js drivers for the compatibility matrix (sourced by
# scripts/ensure-test-deps.sh): node-postgres and friends, pinned in
# test/compat/node/package.json and package-lock.json, installed with npm ci
# when node_modules is missing or older than the lock file.
node_deps() {
  local dir=test/compat/node stamp=test/compat/node/node_modules/.compat-stamp
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm || return 1
  fi
  if [ -f "$stamp" ] && [ ! "$dir/package-lock.json" -nt "$stamp" ] && [ ! "$dir/package.json" -nt "$stamp" ]; then
    return 0
  fi
  echo "ensure-test-deps: npm ci in $dir" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2) || return 1
  touch "$stamp"
}
node_deps
