#!/usr/bin/env bash
# Two-node benchmark: two Tether nodes (tether-redis) against two Node.js nodes (socket.io 4.8
# with @socket.io/redis-streams-adapter 0.3), each pair on the same Redis, side by side.
# sioload (../shared/bench/sioload) drives node A; node B is a live member of the cluster, so
# every broadcast goes through the Redis stream and back (the cross-node path), and B reads
# and filters it too. Server A is pinned to core 0 with node B, sioload to core 1.
#
#   bench/cluster/run.sh                 # RUNS=3, CASES="storm-5k recovery-1k"
#   TETHER_BIN=old/bench-server TETHER_BIN_B=new/bench-server SERVERS="tether-2x tether-b-2x" \
#     bench/cluster/run.sh               # two Tether builds side by side, same run
#
# Needs Redis on 127.0.0.1:6379 (scripts/services) and uses its database 9 (flushed).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
WORK=${WORK:-/tmp/tether-bench}
RUNS=${RUNS:-3}
CASES=${CASES:-"storm-5k recovery-1k"}
SERVERS=${SERVERS:-"node-2x tether-2x"}
PORT=${PORT:-3310}
DB=${DB:-9}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$WORK/results/cluster-raw-$STAMP.jsonl
LOG=$WORK/results/cluster-log-$STAMP.txt
mkdir -p "$WORK/results"
ulimit -n "$(ulimit -Hn)"

"$ROOT/scripts/services" >/dev/null
(cd "$SHARED/sioload" && CARGO_TARGET_DIR="$WORK/target" cargo build --release -q)
SIOLOAD=$WORK/target/release/sioload
cargo build --release -q --manifest-path "$ROOT/Cargo.toml" -p tether-servers --bin bench-server
(cd "$HERE" && npm ci --no-audit --no-fund --silent)

cmd() { # kind port
  case "$1" in
    tether-2x) echo "${TETHER_BIN:-$ROOT/target/release/bench-server}" ;;
    tether-b-2x) echo "${TETHER_BIN_B:?set TETHER_BIN_B for tether-b-2x}" ;;
    node-2x) echo "node $HERE/node-server.js" ;;
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
      redis-cli -n "$DB" flushdb >/dev/null
      csr=0; [[ $case == recovery-* ]] && csr=1
      c=$(cmd "$srv")
      # shellcheck disable=SC2086
      ADAPTER="redis://127.0.0.1:6379/$DB" CSR=$csr PORT=$((PORT + 1)) taskset -c 0 $c >>"$LOG" 2>&1 &
      B=$!
      # shellcheck disable=SC2086
      ADAPTER="redis://127.0.0.1:6379/$DB" CSR=$csr PORT=$PORT taskset -c 0 $c >>"$LOG" 2>&1 &
      A=$!
      wait_port $PORT && wait_port $((PORT + 1)) || { echo "servers did not start" >&2; kill $A $B; exit 1; }
      sleep 0.5
      echo "-- run $run $case $srv" | tee -a "$LOG" >&2
      # shellcheck disable=SC2046
      timeout 180 taskset -c 1 "$SIOLOAD" --addr "127.0.0.1:$PORT" --server-pid "$A" --label "$srv" \
        --tag server="$srv" --tag case="$case" --tag run="$run" --json-out "$OUT" $(args "$case") \
        2>>"$LOG" >/dev/null || echo "!! $case $srv failed" | tee -a "$LOG" >&2
      kill $A $B 2>/dev/null || true
      wait $A $B 2>/dev/null || true
      sleep 1
    done
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    rows.setdefault((d["case"], d["server"]), []).append(d)
print("| case | server | runs | metric (median) | server CPU | lost / dup |")
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
        loss = f"{sum(x['lost'] for x in ds)} / {sum(x['dup'] for x in ds)}"
    print(f"| {case} | {server} | {len(ds)} | {metric} | {cpu} | {loss} |")
PY
