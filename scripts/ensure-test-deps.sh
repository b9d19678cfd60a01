#!/usr/bin/env bash
# Makes sure what the end-to-end tests drive besides Go is on this machine:
# the drivers and tools of the compatibility matrix (test/compat/README.md)
# and Debian's psycopg2 and SQLAlchemy for the system Python (/usr/bin/python3;
# test/ryw_test.go runs test/testdata/ryw_*.py with it). Each family's
# script in scripts/deps/ installs what is missing (Debian packages with
# apt-get as root, pinned npm packages); without root it says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps/lib.sh
status=0
for f in scripts/deps/[a-z]*.sh; do
  [ "$f" = scripts/deps/lib.sh ] && continue
  . "$f" || status=1
done
exit $status
