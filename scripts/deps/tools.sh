# Command-line tools for the compatibility matrix's tool cells
# (test/compat_tools_test.go), sourced by scripts/ensure-test-deps.sh:
# PostgreSQL 15's psql, pg_dump, pg_restore, createdb and dropdb
# (postgresql-client-15) and pgbench (in Debian 12's server package,
# postgresql-15): the major version of the servers the tests start.
tools_deps() {
  if ! dpkg-query -W -f='${Status}' postgresql-15 2>/dev/null | grep -q "install ok installed" \
    && [ "$(id -u)" = 0 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    # As scripts/ensure-postgres.sh: keep the package's own cluster from starting.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    local rc=0
    apt_install postgresql-client-15 postgresql-15 || rc=1
    rm -f /usr/sbin/policy-rc.d
    return $rc
  fi
  apt_install postgresql-client-15 postgresql-15
}
tools_deps
