#!/usr/bin/env bash
# Every core (issue #13): Tether in ONE process (bench-server's multi-thread runtime, one worker
# per core it may use) against Node.js on the same cores the way socket.io recommends it: a
# node:cluster primary with @socket.io/sticky and WORKERS (2) workers joined by
# @socket.io/cluster-adapter (server.js here). Nothing is pinned: both servers and sioload
# share all cores. CSR is asked for on both (CSR=0 to turn it off); the cluster adapter has no
# connection state recovery, which the recovery case shows (supported / recovered / lost / dup).
# node-cluster-ws is the same without @socket.io/sticky (STICKY=0: node:cluster hands out the
# connections; fine for WebSocket-only clients): with sticky, a few connections of a 5k burst
# never get their OPEN packet (seen 2/5000), which can sink a whole storm-5k run.
# floor is the shared raw-WebSocket anchor (one thread, no CSR): what this machine delivers at
# all while the load generator shares its cores, the ceiling of any server's throughput here.
# sioload runs on LOADGEN_THREADS (1) tokio threads.
#
#   bench/cores/run.sh                          # RUNS=3, CASES="storm-5k echo fanout-1k recovery-1k"
#   RUNS=1 QUICK=1 bench/cores/run.sh           # smoke run (short echo/fanout, storm-1k)
#   TETHER_BIN=/path/bench-server SERVERS="node-cluster tether" bench/cores/run.sh
#   SERVERS="floor tether" CASES=storm-5k bench/cores/run.sh   # floor: built by run-anchors.sh
#
# Server CPU is that of the whole process tree (Node: primary + workers), sampled from /proc
# by ../tools/treecpu.py over sioload's own measurement window (for Tether it equals sioload's
# --server-pid figure). Each measurement starts fresh servers; servers alternate within a
# round. Raw JSON lines: $WORK/results/cores-raw-<stamp>.jsonl; the table is printed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
WORK=${WORK:-/tmp/tether-bench}
RUNS=${RUNS:-3}
QUICK=${QUICK:-0}
CSR=${CSR:-1}
WORKERS=${WORKERS:-$(nproc)}
CASES=${CASES:-"storm-5k echo fanout-1k recovery-1k"}
SERVERS=${SERVERS:-"node-cluster node-cluster-ws tether"}
PORT=${PORT:-3330}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$WORK/results/cores-raw-$STAMP.jsonl
LOG=$WORK/results/cores-log-$STAMP.txt
mkdir -p "$WORK/results"
ulimit -n "$(ulimit -Hn)"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$SHARED/sioload" && CARGO_TARGET_DIR="$WORK/target" cargo build --release -q)
  [ -n "${TETHER_BIN:-}" ] || cargo build --release -q --manifest-path "$ROOT/Cargo.toml" -p tether-servers --bin bench-server
  (cd "$HERE" && npm ci --no-audit --no-fund --silent)
fi
SIOLOAD=$WORK/target/release/sioload
FLOOR_BIN=${FLOOR_BIN:-$WORK/anchors/target/release/floor}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
TETHER_BIN=${TETHER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/bench-server}

if [ "$QUICK" = 1 ]; then D=2; W=1; else D=6; W=2; fi
args() {
  case "$1" in
    storm-5k)    echo "storm -c 5000 -n 40 --rounds 5 --size 64" ;;
    storm-1k)    echo "storm -c 1000 -n 200 --rounds 5 --size 64" ;;
    echo)        echo "echo -c 50 -w 8 -d $D --warmup-s $W --size 32" ;;
    fanout-1k)   echo "fanout -c 1000 -r 50 -d $D --warmup-s $W --size 64" ;;
    recovery-1k) echo "recovery -c 1000 -m 100 --size 64 --outage-ms 1000" ;;
    *) echo "unknown case $1" >&2; return 1 ;;
  esac
}
cmd() {
  case "$1" in
    tether) echo "$TETHER_BIN" ;;
    floor) [ -x "$FLOOR_BIN" ] || { echo "no floor at $FLOOR_BIN: run ../shared/bench/run-anchors.sh once" >&2; return 1; }
           echo "$FLOOR_BIN" ;;
    node-cluster) echo "env STICKY=1 node $HERE/server.js" ;;
    node-cluster-ws) echo "env STICKY=0 node $HERE/server.js" ;;
    *) echo "unknown server $1" >&2; return 1 ;;
  esac
}

SPID=""
cleanup() {
  if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
  SPID=""
}
trap cleanup EXIT INT TERM

echo "== host: $(nproc) cpus; node $(node --version); CSR=$CSR WORKERS=$WORKERS LOADGEN_THREADS=$LOADGEN_THREADS; raw -> $OUT" | tee -a "$LOG" >&2
for run in $(seq 1 "$RUNS"); do
  for case in $CASES; do
    for srv in $SERVERS; do
      c=$(cmd "$srv")
      # shellcheck disable=SC2086
      CSR=$CSR WORKERS=$WORKERS PORT=$PORT $c >>"$LOG" 2>&1 &
      SPID=$!
      for _ in $(seq 1 100); do ss -Hltn "sport = :$PORT" | grep -q LISTEN && break; sleep 0.1; done
      ss -Hltn "sport = :$PORT" | grep -q LISTEN || { echo "$srv did not start" >&2; exit 1; }
      sleep 0.5
      echo "-- run $run $case $srv (pid $SPID)" | tee -a "$LOG" >&2
      # shellcheck disable=SC2046
      timeout 240 python3 "$HERE/../tools/treecpu.py" --pid "$SPID" --warmup-s "$W" --json-out "$OUT" -- \
        "$SIOLOAD" --threads "$LOADGEN_THREADS" --addr "127.0.0.1:$PORT" --server-pid "$SPID" --label "$srv" \
        --tag server="$srv" --tag case="$case" --tag run="$run" --tag csr="$CSR" $(args "$case") \
        2>>"$LOG" >/dev/null || echo "!! run $run $case $srv failed" | tee -a "$LOG" >&2
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
    return statistics.median(v) if v else None
def f(x, fmt):
    return "-" if x is None else format(x, fmt)
print("| case | server | runs | throughput (median) | server CPU per op (tree) | server CPU % | RSS (tree) | notes |")
print("|---|---|---|---|---|---|---|---|")
for (case, server), ds in sorted(rows.items()):
    cpu = f(med(ds, "tree_cpu_us_per_op"), ".2f") + " µs"
    pct = f(med(ds, "tree_cpu_pct"), ".0f") + " %"
    rss = f((med(ds, "tree_rss_kb") or 0) / 1024, ".0f") + " MiB"
    sc = ds[0]["scenario"]
    failed = sum(x.get("failed", 0) for x in ds)
    if sc == "storm":
        tp = f(med(ds, "delivered_per_s"), ",.0f") + " msgs/s"
        notes = f"incomplete rounds {sum(x.get('incomplete_rounds', 0) for x in ds)}, order errors {sum(x.get('order_errors', 0) for x in ds)}"
    elif sc == "echo":
        tp = f(med(ds, "acks_per_s"), ",.0f") + " acks/s"
        notes = f"p50 {f(med(ds, 'p50_ms'), '.2f')} / p99 {f(med(ds, 'p99_ms'), '.2f')} ms"
    elif sc == "fanout":
        tp = f(med(ds, "delivered_per_s"), ",.0f") + " msgs/s"
        notes = f"p50 {f(med(ds, 'p50_ms'), '.2f')} / p99 {f(med(ds, 'p99_ms'), '.2f')} ms, lost {sum(x.get('lost', 0) for x in ds)}"
    else:
        cpu = "-"
        if not all(x.get("supported") for x in ds):
            tp = "recovery unsupported"
            notes = "; ".join(sorted({x.get("reason", "") for x in ds if not x.get("supported")}))
        else:
            t = med(ds, "t_all_recovered_ms")
            tp = f"all recovered in {f(t, ',.0f')} ms" if t is not None else "not all recovered"
            notes = (f"recovered {sum(x['recovered'] for x in ds)}/{sum(x['reconnect_attempted'] for x in ds)}, "
                     f"lost {sum(x['lost'] for x in ds)} / dup {sum(x['dup'] for x in ds)}")
    if failed:
        notes += f"; {failed} connections failed"
    print(f"| {case} | {server} | {len(ds)} | {tp} | {cpu} | {pct} | {rss} | {notes} |")
PY
