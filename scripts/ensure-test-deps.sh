#!/usr/bin/env bash
# Makes sure what the end-to-end tests drive besides Go is on this machine:
# Debian's psycopg2 and SQLAlchemy for the system Python (/usr/bin/python3;
# test/ryw_test.go runs test/testdata/ryw_*.py with it). Installs the
# packages with apt-get when run as root; otherwise says what to install.
set -euo pipefail

PY=/usr/bin/python3
have_modules() {
  [ -x "$PY" ] && "$PY" -c 'import psycopg2, sqlalchemy' >/dev/null 2>&1
}

if have_modules; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-test-deps: installing python3-psycopg2 and python3-sqlalchemy with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 python3-psycopg2 python3-sqlalchemy >/dev/null
  have_modules && exit 0
fi
cat >&2 <<'MSG'
ensure-test-deps: the end-to-end tests need psycopg2 and SQLAlchemy for /usr/bin/python3.
Install them, e.g. on Debian/Ubuntu:
    sudo apt-get install python3-psycopg2 python3-sqlalchemy
MSG
exit 1
