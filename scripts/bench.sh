#!/usr/bin/env bash
# Whole-system comparison: direct vs PgBouncer vs Pgpool-II vs pgsplit, in one
# interleaved run of ../shared/bench/compare.sh (pgbench select-only).
#
#   scripts/bench.sh [DIR]        DIR defaults to /tmp/pglab (kept outside the repo)
#
# Environment passed through to compare.sh: CLIENTS, DURATION, ROUNDS, MODES, WORKLOAD.
# Two pgsplit instances run side by side and are stopped (by their PIDs) when the run ends:
#   pgsplit     127.0.0.1:${PGSPLIT_BENCH_PORT:-6439}  the primary only (the proxy's own cost)
#   pgsplit-rw  127.0.0.1:$((PGSPLIT_BENCH_PORT+1))      primary + both replicas, reads offloaded
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_DIR:-$root/../shared/bench}
dir=${1:-/tmp/pglab}
port=${PGSPLIT_BENCH_PORT:-6439}

"$bench/cluster.sh" start "$dir" >/dev/null
# shellcheck disable=SC1091
. "$dir/ports.env"
go build -o "$dir/pgsplit" "$root/cmd/pgsplit"

start_pgsplit() { # name port servers
  PGSPLIT_LISTEN=127.0.0.1:$2 \
  PGSPLIT_SERVERS="$3" \
  PGSPLIT_AUTH_USERS="app:app" \
  PGSPLIT_AUTH_METHOD=scram-sha-256 \
  PGSPLIT_LOG_LEVEL=warn \
  PGSPLIT_POOL_MODE=${PGSPLIT_POOL_MODE:-transaction} \
    "$dir/pgsplit" serve --config "" >"$dir/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do
    PGPASSWORD=app psql -X -q -h 127.0.0.1 -p "$2" -U app app -c 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "$1 did not start; see $dir/$1.log" >&2
  return 1
}
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null || true' EXIT
rw=$((port + 1))
start_pgsplit pgsplit "$port" "127.0.0.1:$PRIMARY_PORT/primary"
start_pgsplit pgsplit-rw "$rw" "127.0.0.1:$PRIMARY_PORT/primary,127.0.0.1:$REPLICA1_PORT/replica,127.0.0.1:$REPLICA2_PORT/replica"
echo "pgsplit $(git -C "$root" rev-parse --short HEAD): pgsplit on $port (primary only), pgsplit-rw on $rw (reads to 2 replicas); pool.mode ${PGSPLIT_POOL_MODE:-transaction}, scram-sha-256" >&2
EXTRA_TARGETS="pgsplit:$port pgsplit-rw:$rw" "$bench/compare.sh" "$dir"
