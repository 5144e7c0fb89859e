#!/usr/bin/env bash
# Long-polling fan-out (issue #13): pollload (this crate: 1,000 Engine.IO v4 HTTP long-polling
# clients, no upgrade, join a room; one polling sender emits `broadcast` at a target rate)
# against Tether's bench-server and the official Node server (../shared/bench/anchors/node,
# socket.io 4.8.x, polling allowed by its default transports), side by side.
#
#   bench/polling/run.sh                          # RUNS=3, SERVERS="node tether", CASES="poll-1k"
#   RUNS=1 QUICK=1 bench/polling/run.sh           # smoke run (2 s windows)
#   SERVERS="node node-csr tether tether-csr" CASES="poll-1k poll-1k-r200" bench/polling/run.sh
#
# As ../shared/bench/run-anchors.sh: every (case, server) measurement starts a FRESH server
# pinned to CPU $SERVER_CPU (0), pollload pinned to $LOADGEN_CPU (1); servers alternate
# within each round; medians over RUNS. Raw lines: $WORK/results/polling-raw-<stamp>.jsonl.
# Server CPU per delivered message comes from /proc/PID/stat over the measurement window.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
WORK=${WORK:-/tmp/tether-bench}
RUNS=${RUNS:-3}
QUICK=${QUICK:-0}
SERVERS=${SERVERS:-"node tether"}
CASES=${CASES:-"poll-1k"}
PORT=${PORT:-3350}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$WORK/results/polling-raw-$STAMP.jsonl
LOG=$WORK/results/polling-log-$STAMP.txt
NODE_DIR=$WORK/polling-node
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$WORK/results"
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 5000 ] || { echo "need ulimit -n >= 5000" >&2; exit 1; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  CARGO_TARGET_DIR="$WORK/target-pollload" cargo build --release -q --manifest-path "$HERE/Cargo.toml"
  [ -n "${TETHER_BIN:-}" ] || cargo build --release -q --manifest-path "$ROOT/Cargo.toml" -p tether-servers --bin bench-server
  mkdir -p "$NODE_DIR" && cp -r "$SHARED/anchors/node/." "$NODE_DIR/"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --silent)
fi
POLLLOAD=$WORK/target-pollload/release/pollload
TETHER_BIN=${TETHER_BIN:-$TARGET/release/bench-server}

if [ "$QUICK" = 1 ]; then D=2; W=1; else D=6; W=2; fi
args() {
  case "$1" in
    poll-1k)      echo "-c 1000 -r 50 -d $D --warmup-s $W --size 64" ;;
    poll-1k-r200) echo "-c 1000 -r 200 -d $D --warmup-s $W --size 64" ;;
    *) echo "unknown case $1" >&2; return 1 ;;
  esac
}
cmd() {
  case "$1" in
    node)       echo "env CSR=0 node $NODE_DIR/server.js" ;;
    node-csr)   echo "env CSR=1 node $NODE_DIR/server.js" ;;
    tether)     echo "env CSR=0 $TETHER_BIN" ;;
    tether-csr) echo "env CSR=1 $TETHER_BIN" ;;
    *) echo "unknown server $1" >&2; return 1 ;;
  esac
}

SPID=""
cleanup() {
  if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
  SPID=""
}
trap cleanup EXIT INT TERM

echo "== host: $(nproc) cpus; node $(node --version); raw -> $OUT" | tee -a "$LOG" >&2
for run in $(seq 1 "$RUNS"); do
  for case in $CASES; do
    for srv in $SERVERS; do
      c=$(cmd "$srv")
      # shellcheck disable=SC2086
      PORT=$PORT taskset -c "$SERVER_CPU" $c >>"$LOG" 2>&1 &
      SPID=$!  # (`env` execs the server: $SPID is the server process)
      for _ in $(seq 1 100); do ss -Hltn "sport = :$PORT" | grep -q LISTEN && break; sleep 0.1; done
      ss -Hltn "sport = :$PORT" | grep -q LISTEN || { echo "$srv did not start" >&2; exit 1; }
      sleep 0.3
      echo "-- run $run $case $srv (pid $SPID)" | tee -a "$LOG" >&2
      # shellcheck disable=SC2046
      timeout 180 taskset -c "$LOADGEN_CPU" "$POLLLOAD" --addr "127.0.0.1:$PORT" --server-pid "$SPID" \
        --label "$srv" --tag server="$srv" --tag case="$case" --tag run="$run" --json-out "$OUT" \
        $(args "$case") 2>>"$LOG" >/dev/null || echo "!! run $run $case $srv failed" | tee -a "$LOG" >&2
      cleanup
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
def med(ds, k):
    v = [x[k] for x in ds if x.get(k) is not None]
    return statistics.median(v) if v else float("nan")
print("| case | server | runs | delivered msgs/s (target) | server CPU µs/msg | p50 / p99 ms | lost / dup | RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
for (case, server), ds in sorted(rows.items()):
    print(f"| {case} | {server} | {len(ds)} | {med(ds, 'delivered_per_s'):,.0f} ({med(ds, 'target_msgs_per_s'):,.0f}) "
          f"| {med(ds, 'server_cpu_us_per_msg'):.2f} | {med(ds, 'p50_ms'):.1f} / {med(ds, 'p99_ms'):.1f} "
          f"| {sum(x['lost'] for x in ds)} / {sum(x['dup'] for x in ds)} | {med(ds, 'rss_kb') / 1024:.0f} |")
PY
