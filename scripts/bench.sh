#!/usr/bin/env bash
# Whole-system comparison: direct vs PgBouncer vs Pgpool-II vs pgsplit, in one
# interleaved run of ../shared/bench/compare.sh (pgbench select-only).
#
#   scripts/bench.sh [DIR]        DIR defaults to /tmp/pglab (kept outside the repo)
#
# Environment passed through to compare.sh: CLIENTS, DURATION, ROUNDS, MODES, WORKLOAD.
# pgsplit listens on 127.0.0.1:${PGSPLIT_BENCH_PORT:-6439} in front of the bench primary
# and is stopped (by its PID) when the run ends.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_DIR:-$root/../shared/bench}
dir=${1:-/tmp/pglab}
port=${PGSPLIT_BENCH_PORT:-6439}

"$bench/cluster.sh" start "$dir" >/dev/null
# shellcheck disable=SC1091
. "$dir/ports.env"
go build -o "$dir/pgsplit" "$root/cmd/pgsplit"

PGSPLIT_LISTEN=127.0.0.1:$port \
PGSPLIT_SERVERS="127.0.0.1:$PRIMARY_PORT/primary" \
PGSPLIT_AUTH_USERS="app:app" \
PGSPLIT_AUTH_METHOD=scram-sha-256 \
PGSPLIT_LOG_LEVEL=warn \
  "$dir/pgsplit" serve --config "" >"$dir/pgsplit.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  PGPASSWORD=app psql -X -q -h 127.0.0.1 -p "$port" -U app app -c 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.2
done
echo "pgsplit $(git -C "$root" rev-parse --short HEAD) on port $port (session mode, scram-sha-256)" >&2
EXTRA_TARGETS="pgsplit:$port" "$bench/compare.sh" "$dir"
