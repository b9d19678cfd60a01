#!/usr/bin/env bash
# A/B: pgsplit before issue 14 (db2eb1b) vs after (linearizable, token, failover rule) vs PgBouncer, side by side, interleaved; default read_your_writes (table).
# Usage: run.sh NEWBIN OUT
set -uo pipefail
NEW=$1; OUT=$2; DIR=/tmp/pglab; B=/work/shared/bench
$B/cluster.sh start $DIR >/dev/null
. $DIR/ports.env
BOUNCER_AUTH=scram-sha-256 $B/peers.sh start $DIR >/dev/null 2>&1 || true
BOUNCER=${BOUNCER_PORT:-56432}
$B/pgbench.sh init >/tmp/ab/init.log 2>&1 || { echo "pgbench init failed"; cat /tmp/ab/init.log; }
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done' EXIT
start() { # bin port size overflow
  PGSPLIT_LISTEN=127.0.0.1:$2 PGSPLIT_SERVERS="127.0.0.1:$PRIMARY_PORT/primary,127.0.0.1:$REPLICA1_PORT/replica,127.0.0.1:$REPLICA2_PORT/replica" \
  PGSPLIT_AUTH_USERS="app:app" PGSPLIT_AUTH_METHOD=${AUTH:-scram-sha-256} PGSPLIT_LOG_LEVEL=warn \
  PGSPLIT_POOL_POOL_SIZE=$3 PGSPLIT_POOL_MAX_OVERFLOW=$4 $1 serve --config "" > /tmp/ab/$2.log 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do PGPASSWORD=app psql -X -q -h 127.0.0.1 -p $2 -U app app -c 'SELECT 1' >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "pgsplit on $2 did not start" >&2; exit 1
}
start /tmp/ab/pgsplit-old 6451 10 10
start $NEW 6452 10 10
start /tmp/ab/pgsplit-old 6453 20 40
start $NEW 6454 20 40
export PGPASSWORD=app
{
echo "# $(date -u +%FT%TZ) old=db2eb1b new=$(git -C /work/main rev-parse --short HEAD); reads routed to 2 replicas, SCRAM, transaction mode; PgBouncer port $BOUNCER (primary only)"
for round in 1 2 3; do
  for t in "bouncer:$BOUNCER" "old-10+10:6451" "new-10+10:6452" "old-20+40:6453" "new-20+40:6454"; do
    n=${t%%:*}; p=${t##*:}
    echo "round=$round target=$n select-simple-c16 $($B/probe.sh $p -S -M simple -c 16 -T ${T:-12} 2>&1 | tail -1)"
  done
done
for round in 1 2; do
  for t in "bouncer:$BOUNCER" "old-20+40:6453" "new-20+40:6454"; do
    n=${t%%:*}; p=${t##*:}
    echo "round=$round target=$n tpcb-simple-c16 $($B/probe.sh $p -M simple -c 16 -T ${T:-12} 2>&1 | tail -1)"
  done
done
} | tee $OUT
