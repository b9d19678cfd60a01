#!/usr/bin/env bash
set -uo pipefail
DIR=/tmp/pglab; B=/work/shared/bench
$B/cluster.sh start $DIR >/dev/null
. $DIR/ports.env
PGPASSWORD=app pgbench -i -q -s 10 -h 127.0.0.1 -p $PRIMARY_PORT -U app app >/tmp/ab/init.log 2>&1 || { echo "pgbench -i failed: $(tail -2 /tmp/ab/init.log)"; exit 1; }
sleep 5 # the replicas replay the load
BOUNCER_AUTH=scram-sha-256 $B/peers.sh start $DIR >/dev/null 2>&1 || true
BOUNCER=${BOUNCER_PORT:-56432}
PGPASSWORD=app pgbench -n -S -c 4 -T 10 -h 127.0.0.1 -p $BOUNCER -U app app >/tmp/ab/warm.log 2>&1 || echo "bouncer warm-up failed: $(tail -2 /tmp/ab/warm.log)"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done' EXIT
start() { # bin port size overflow
  PGSPLIT_LISTEN=127.0.0.1:$2 PGSPLIT_SERVERS="127.0.0.1:$PRIMARY_PORT/primary,127.0.0.1:$REPLICA1_PORT/replica,127.0.0.1:$REPLICA2_PORT/replica" \
  PGSPLIT_AUTH_USERS="app:app" PGSPLIT_AUTH_METHOD=scram-sha-256 PGSPLIT_LOG_LEVEL=warn \
  PGSPLIT_POOL_POOL_SIZE=$3 PGSPLIT_POOL_MAX_OVERFLOW=$4 $1 serve --config "" > /tmp/ab/$2.log 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do PGPASSWORD=app psql -X -q -h 127.0.0.1 -p $2 -U app app -c 'SELECT 1' >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "pgsplit on $2 did not start" >&2; exit 1
}
start /tmp/ab/pgsplit-old 6451 20 40
start /tmp/ab/pgsplit-new 6452 20 40

export PGPASSWORD=app
echo "# $(date -u +%FT%TZ) old=269b0f6 new=$(git -C /work/main rev-parse --short HEAD); reads to 2 replicas, SCRAM, transaction mode, read_your_writes table; PgBouncer $BOUNCER (primary only)"
for round in 1 2; do
  for t in "bouncer:$BOUNCER" "old-20+40:6451" "new-20+40:6452"; do
    n=${t%%:*}; p=${t##*:}
    echo "round=$round target=$n select-simple-c16 $($B/probe.sh $p -S -M simple -c 16 -T 10 2>&1 | tail -1)"
    echo "round=$round target=$n tpcb-simple-c16 $($B/probe.sh $p -M simple -c 16 -T 10 2>&1 | tail -1)"
  done
done
