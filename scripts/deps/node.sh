# node-postgres for the compatibility matrix (sourced by
# scripts/ensure-test-deps.sh): Node.js and npm from Debian if missing, then
# the versions test/compat/node/package-lock.json pins, with `npm ci`, again
# only when the lock file changed since the last install.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
node_dir=test/compat/node
if [ ! -f "$node_dir/node_modules/.installed" ] || ! cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.installed"; then
  echo "ensure-test-deps: npm ci in $node_dir" >&2
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) &&
    cp "$node_dir/package-lock.json" "$node_dir/node_modules/.installed"
fi
