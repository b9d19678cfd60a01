#!/usr/bin/env bash
# The README's performance table in one interleaved run of ../shared/bench/probe.sh:
# throughput, the listening process's CPU per transaction (utime + stime over the run
# divided by transactions), p50 and p99 latency; ROUNDS rounds, each target in turn within
# a round, medians at the end.
#
#   scripts/bench.sh [DIR]        DIR defaults to /tmp/pglab (kept outside the repo)
#
# Targets (SCRAM on every proxy, PgBouncer 1.18 in transaction mode on the primary):
#   direct        the primary (TPS and latency only: CPU is per process, postgres forks)
#   pgbouncer     127.0.0.1:$BOUNCER_PORT
#   pgsplit       primary only, the guide's production pools 20 + 40
#   pgsplit-rw    primary + 2 replicas, reads offloaded, pools 20 + 40
#   pgsplit-rw10  the same with the guide's staging pools halved, 10 + 10
# Workloads: select-only with 16 clients in simple, extended and prepared mode; 200
# clients (simple); the built-in tpcb-like read/write script (16 clients); pgbench -C (a
# new connection per transaction, 8 clients) with SCRAM, then with md5 on both sides
# (PgBouncer restarted with BOUNCER_AUTH=md5, a pgsplit with auth.method md5); N_IDLE idle
# clients (../shared/bench/idle_clients.sh: the process's RSS growth per client).
#
# Environment: SECS (8), ROUNDS (3), N_IDLE (10000), PGSPLIT_BENCH_PORT (6439: the first of
# five ports; the idle clients are measured on a fresh pgsplit-rw on the fifth). Raw lines go to DIR/bench-<time>.txt, the table to stdout. Every pgsplit
# started here is stopped by its PID when the run ends; PgBouncer is left running with
# SCRAM, as `BOUNCER_AUTH=scram-sha-256 peers.sh start DIR` would leave it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_DIR:-$root/../shared/bench}
dir=${1:-/tmp/pglab}
port=${PGSPLIT_BENCH_PORT:-6439}
secs=${SECS:-8} rounds=${ROUNDS:-3} nidle=${N_IDLE:-10000}

"$bench/cluster.sh" start "$dir" >/dev/null
# shellcheck disable=SC1091
. "$dir/ports.env"
restart_bouncer() { # auth method
  "$bench/peers.sh" stop "$dir" >/dev/null 2>&1 || true
  BOUNCER_AUTH=$1 "$bench/peers.sh" start "$dir" >/dev/null
}
restart_bouncer scram-sha-256
"$bench/pgbench.sh" init "$PRIMARY_PORT" >/dev/null 2>&1
go build -o "$dir/pgsplit" "$root/cmd/pgsplit"
export PGPASSWORD=app

pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null || true' EXIT
start_pgsplit() { # name port servers pool_size max_overflow [auth method]
  PGSPLIT_LISTEN=127.0.0.1:$2 \
  PGSPLIT_SERVERS="$3" \
  PGSPLIT_AUTH_USERS="app:app" \
  PGSPLIT_AUTH_METHOD=${6:-scram-sha-256} \
  PGSPLIT_LOG_LEVEL=warn \
  PGSPLIT_POOL_POOL_SIZE=$4 PGSPLIT_POOL_MAX_OVERFLOW=$5 \
    "$dir/pgsplit" serve --config "" >"$dir/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do
    psql -X -q -h 127.0.0.1 -p "$2" -U app app -c 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "$1 did not start; see $dir/$1.log" >&2
  return 1
}
primary="127.0.0.1:$PRIMARY_PORT/primary"
all="$primary,127.0.0.1:$REPLICA1_PORT/replica,127.0.0.1:$REPLICA2_PORT/replica"
start_pgsplit pgsplit "$port" "$primary" 20 40
start_pgsplit pgsplit-rw "$((port + 1))" "$all" 20 40
start_pgsplit pgsplit-rw10 "$((port + 2))" "$all" 10 10
declare -A at=([direct]=$PRIMARY_PORT [pgbouncer]=$BOUNCER_PORT [pgsplit]=$port
  [pgsplit-rw]=$((port + 1)) [pgsplit-rw10]=$((port + 2)) [pgsplit-md5]=$((port + 3)))

raw=$dir/bench-$(date +%Y%m%d-%H%M%S).txt
echo "# pgsplit $(git -C "$root" rev-parse --short HEAD), $(date -u +%FT%TZ), SECS=$secs ROUNDS=$rounds, $(nproc) cores" | tee "$raw" >&2
probe() { # workload target pgbench-args...
  local w=$1 t=$2 res
  shift 2
  res=$("$bench/probe.sh" "${at[$t]}" "$@" 2>&1 | tail -1) || res="failed"
  echo "$w $t $res" | tee -a "$raw" >&2
}
for r in $(seq "$rounds"); do
  for mode in simple extended prepared; do
    for t in direct pgbouncer pgsplit pgsplit-rw pgsplit-rw10; do
      # PgBouncer 1.18 cannot keep named prepared statements in transaction mode
      [ "$mode:$t" = prepared:pgbouncer ] && continue
      probe "select-$mode-c16" "$t" -S -M "$mode" -c 16 -T "$secs"
    done
  done
  for t in pgbouncer pgsplit pgsplit-rw; do probe select-simple-c200 "$t" -S -M simple -c 200 -T "$secs"; done
  for t in direct pgbouncer pgsplit pgsplit-rw; do probe tpcb-simple-c16 "$t" -M simple -c 16 -T "$secs"; done
  for t in pgbouncer pgsplit; do probe connect-scram-c8 "$t" -S -M simple -C -c 8 -T "$secs"; done
done
restart_bouncer md5
start_pgsplit pgsplit-md5 "$((port + 3))" "$primary" 20 40 md5
for r in $(seq "$rounds"); do
  for t in pgbouncer pgsplit-md5; do probe connect-md5-c8 "$t" -S -M simple -C -c 8 -T "$secs"; done
done
restart_bouncer scram-sha-256
# A fresh pgsplit (the pgsplit-rw configuration) for the idle clients, so that every byte
# they cost shows as growth, as it does for the freshly restarted PgBouncer.
start_pgsplit pgsplit-idle "$((port + 4))" "$all" 20 40
at[pgsplit-idle]=$((port + 4))
for t in pgbouncer pgsplit-idle; do
  res=$("$bench/idle_clients.sh" "${at[$t]}" "$nidle" 2>&1 | tail -1)
  echo "idle-$nidle $t $res" | tee -a "$raw" >&2
done

# The table: medians per workload and target, ratios against PgBouncer in the same run.
awk '
  function med(s,   a, n, i, j, x) {
    n = split(s, a, " ")
    for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] + 0 > x + 0; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  /^#/ { next }
  $1 ~ /^idle-/ {
    for (i = 3; i <= NF; i++) if ($i ~ /^bytes_per_client=/) { split($i, kv, "="); idle[$2] = kv[2] }
    next
  }
  {
    k = $1 SUBSEP $2
    if (!(k in seen)) { seen[k] = 1; order[++n] = k }
    for (i = 3; i <= NF; i++) { split($i, kv, "="); v[k, kv[1]] = v[k, kv[1]] " " kv[2] }
  }
  END {
    print "| workload | target | TPS | vs direct | vs PgBouncer | CPU µs per transaction | vs PgBouncer | p50 ms | p99 ms |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= n; i++) {
      split(order[i], wt, SUBSEP)
      tps[order[i]] = med(v[order[i], "tps"]); cpu[order[i]] = med(v[order[i], "cpu_us_per_xact"])
    }
    for (i = 1; i <= n; i++) {
      k = order[i]; split(k, wt, SUBSEP); b = wt[1] SUBSEP "pgbouncer"; d = wt[1] SUBSEP "direct"
      rt = (b in tps && tps[b] > 0 && wt[2] != "pgbouncer") ? sprintf("%.2fx", tps[k] / tps[b]) : ""
      rd = (d in tps && tps[d] > 0 && wt[2] != "direct") ? sprintf("%.2fx", tps[k] / tps[d]) : ""
      rc = (b in cpu && cpu[b] > 0 && wt[2] != "pgbouncer" && wt[2] != "direct") ? sprintf("%.2fx", cpu[k] / cpu[b]) : ""
      c = wt[2] == "direct" ? "n/a" : sprintf("%.1f", cpu[k])
      printf "| %s | %s | %.0f | %s | %s | %s | %s | %.2f | %.2f |\n", wt[1], wt[2], tps[k], rd, rt, c, rc,
        med(v[k, "p50_us"]) / 1000, med(v[k, "p99_us"]) / 1000
    }
    for (t in idle) printf "\nidle clients (%s): %s bytes of RSS each", t, idle[t]
    print ""
  }' "$raw"
