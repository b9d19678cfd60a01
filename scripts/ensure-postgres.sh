#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries (initdb, pg_ctl, postgres,
# pg_basebackup) and psql are on this machine. Installs Debian's packages
# with apt-get when run as root; otherwise says what to install.
set -euo pipefail

have_server() {
  [ -n "${PGSPLIT_PG_BINDIR:-}" ] && [ -x "$PGSPLIT_PG_BINDIR/initdb" ] && return 0
  command -v initdb >/dev/null 2>&1 && command -v pg_basebackup >/dev/null 2>&1 && return 0
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && [ -x "$d/pg_basebackup" ] && return 0
  done
  return 1
}

if have_server && command -v psql >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-postgres: installing PostgreSQL server binaries with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Keep the package's own cluster service from starting.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  apt-get install -y -qq postgresql postgresql-client >/dev/null
  have_server && exit 0
fi
cat >&2 <<'MSG'
ensure-postgres: the PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup)
and psql are needed. Install them, e.g. on Debian/Ubuntu:
    sudo apt-get install postgresql postgresql-client
or point PGSPLIT_PG_BINDIR at the folder that holds initdb.
MSG
exit 1
