#!/usr/bin/env bash
# Two-node benchmark: two Tether nodes against two Node.js nodes (socket.io 4.8 with
# @socket.io/redis-streams-adapter 0.3), each pair on the same backend, side by side.
# sioload (../shared/bench/sioload) drives node A; node B is a live member of the cluster, so
# every broadcast goes through the backend and back (the cross-node path), and B reads
# and filters it too. Server A is pinned to core 0 with node B, sioload to core 1.
#
#   bench/cluster/run.sh                 # RUNS=3, CASES="storm-5k recovery-1k", BACKEND=redis
#   BACKEND=postgres bench/cluster/run.sh    # tether-postgres (Tether only: no Node pair)
#   BACKEND=nats bench/cluster/run.sh        # tether-nats (Tether only)
#   SKIP_BUILD=1 skips the builds (sioload, bench-server in $CARGO_TARGET_DIR or target/, npm ci)
#   TETHER_BIN=old/bench-server TETHER_BIN_B=new/bench-server SERVERS="tether-2x tether-b-2x" \
#     bench/cluster/run.sh               # two Tether builds side by side, same run
#
# Backends (scripts/services starts them), and the state each run owns and resets before
# every measurement (nothing else is touched):
#   redis     127.0.0.1:6379, database $DB (9), flushed
#   postgres  127.0.0.1:5432 db test, schema $PG_SCHEMA (bench_cluster), dropped and recreated
#   nats      127.0.0.1:4222, stream and KV bucket $NATS_NAME (bench_cluster), deleted
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
WORK=${WORK:-/tmp/tether-bench}
RUNS=${RUNS:-3}
CASES=${CASES:-"storm-5k recovery-1k"}
BACKEND=${BACKEND:-redis}
if [ "$BACKEND" = redis ]; then SERVERS=${SERVERS:-"node-2x tether-2x"}; else SERVERS=${SERVERS:-tether-2x}; fi
PORT=${PORT:-3310}
DB=${DB:-9}
PG_SCHEMA=${PG_SCHEMA:-bench_cluster}
NATS_NAME=${NATS_NAME:-bench_cluster}
ADAPTER_PREFIX=""
case "$BACKEND" in
  redis) ADAPTER="redis://127.0.0.1:6379/$DB" ;;
  postgres) ADAPTER="postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3D$PG_SCHEMA"; ADAPTER_PREFIX=bench_ ;;
  nats) ADAPTER="nats://127.0.0.1:4222"; ADAPTER_PREFIX=$NATS_NAME ;;
  *) echo "BACKEND must be redis, postgres or nats" >&2; exit 2 ;;
esac
[ -z "$ADAPTER_PREFIX" ] || export ADAPTER_PREFIX
reset_backend() { # [fresh]: recreate the (empty) state
  case "$BACKEND" in
    redis) redis-cli -n "$DB" flushdb >/dev/null ;;
    postgres) PGOPTIONS="-c client_min_messages=warning" psql -q -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1 \
      -c "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" ${1:+-c "CREATE SCHEMA $PG_SCHEMA"} ;;
    nats) python3 "$HERE/../tools/nats_reset.py" "$NATS_NAME" ;;
  esac
}
A=""; B=""
stop_servers() {
  for p in $A $B; do kill "$p" 2>/dev/null || true; done
  for p in $A $B; do wait "$p" 2>/dev/null || true; done
  A=""; B=""
}
on_exit() { stop_servers; reset_backend; }  # leaves nothing behind
trap on_exit EXIT
trap 'exit 130' INT TERM
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$WORK/results/cluster-raw-$STAMP.jsonl
LOG=$WORK/results/cluster-log-$STAMP.txt
mkdir -p "$WORK/results"
ulimit -n "$(ulimit -Hn)"

"$ROOT/scripts/services" >/dev/null
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$SHARED/sioload" && CARGO_TARGET_DIR="$WORK/target" cargo build --release -q)
  cargo build --release -q --manifest-path "$ROOT/Cargo.toml" -p tether-servers --bin bench-server
  [[ $SERVERS != *node* ]] || (cd "$HERE" && npm ci --no-audit --no-fund --silent)
fi
SIOLOAD=$WORK/target/release/sioload

cmd() { # kind port
  case "$1" in
    tether-2x) echo "${TETHER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/bench-server}" ;;
    tether-b-2x) echo "${TETHER_BIN_B:?set TETHER_BIN_B for tether-b-2x}" ;;
    node-2x) [ "$BACKEND" = redis ] || { echo "node-2x runs on BACKEND=redis only" >&2; return 1; }
      echo "node $HERE/node-server.js" ;;
  esac
}
args() {
  case "$1" in
    storm-5k) echo "storm -c 5000 -n 40 --rounds 5 --size 64" ;;
    storm-1k) echo "storm -c 1000 -n 200 --rounds 5 --size 64" ;;
    recovery-1k) echo "recovery -c 1000 -m 100 --size 64 --outage-ms 1000" ;;
  esac
}
wait_port() { for _ in $(seq 1 100); do ss -Hltn "sport = :$1" | grep -q LISTEN && return 0; sleep 0.1; done; return 1; }

for run in $(seq 1 "$RUNS"); do
  for case in $CASES; do
    for srv in $SERVERS; do
      reset_backend fresh
      csr=0; [[ $case == recovery-* ]] && csr=1
      c=$(cmd "$srv")
      # shellcheck disable=SC2086
      ADAPTER=$ADAPTER CSR=$csr PORT=$((PORT + 1)) taskset -c 0 $c >>"$LOG" 2>&1 &
      B=$!
      # shellcheck disable=SC2086
      ADAPTER=$ADAPTER CSR=$csr PORT=$PORT taskset -c 0 $c >>"$LOG" 2>&1 &
      A=$!
      wait_port $PORT && wait_port $((PORT + 1)) || { echo "servers did not start (see $LOG)" >&2; exit 1; }
      sleep 0.5
      echo "-- run $run $case $srv" | tee -a "$LOG" >&2
      # shellcheck disable=SC2046
      timeout 180 taskset -c 1 "$SIOLOAD" --addr "127.0.0.1:$PORT" --server-pid "$A" --label "$srv" \
        --tag server="$srv" --tag backend="$BACKEND" --tag case="$case" --tag run="$run" --json-out "$OUT" $(args "$case") \
        2>>"$LOG" >/dev/null || echo "!! $case $srv failed" | tee -a "$LOG" >&2
      stop_servers
      sleep 1
    done
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    rows.setdefault((d["case"], d.get("backend", "redis") + " " + d["server"]), []).append(d)
print("| case | backend server | runs | metric (median) | server CPU | lost / dup |")
print("|---|---|---|---|---|---|")
for (case, server), ds in sorted(rows.items()):
    med = lambda k: statistics.median(x[k] for x in ds if x.get(k) is not None)
    if case.startswith("storm"):
        metric = f"{med('delivered_per_s'):,.0f} msgs/s"
        cpu = f"{med('server_cpu_us_per_msg')} µs/msg"
        loss = f"incomplete rounds {sum(x['incomplete_rounds'] for x in ds)}"
    else:
        metric = f"all recovered in {med('t_all_recovered_ms'):,.0f} ms"
        cpu = f"{med('server_cpu_pct'):.0f} %"
        loss = f"{sum(x.get('lost', 0) for x in ds)} / {sum(x.get('dup', 0) for x in ds)}"
        if not all(x.get("supported") for x in ds):
            metric = "recovery unsupported"
    print(f"| {case} | {server} | {len(ds)} | {metric} | {cpu} | {loss} |")
PY
