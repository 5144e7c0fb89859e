#!/usr/bin/env bash
# Memory (issue #13), Tether's bench-server against the official Node server
# (../shared/bench/anchors/node, socket.io 4.8.x), CSR on (CSR=1), a fresh server per probe:
#   idle      RSS per idle connection: sioload connect -c $IDLE_C (5000), CSR on and off
#   storm     RSS with $STORM_C (5000) clients before an outage, during it, at the peak of the
#             recovery storm and $AFTER_S (5) s after every client recovered (still connected)
#   kept      bytes per kept session: $KEPT_N (100000) sessions dropped abruptly, $KEPT_BATCH
#             (2000) alive at a time, RSS after minus RSS before (after a warm-up batch)
#   packets   bytes per stored packet: $PACKETS_M (100000) broadcasts stored for one kept session
#
#   bench/memory/run.sh                       # SERVERS="tether node", RUNS=1
#   KEPT_N=20000 SERVERS=tether bench/memory/run.sh
#
# Server pinned to CPU $SERVER_CPU (0), the tools to $LOADGEN_CPU (1). Raw JSON lines:
# $WORK/results/memory-raw-<stamp>.jsonl; the table is printed. Node's RSS includes whatever
# garbage its GC has not collected yet; the figures are RSS (VmRSS), not heap statistics.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
WORK=${WORK:-/tmp/tether-bench}
RUNS=${RUNS:-1}
SERVERS=${SERVERS:-"tether node"}
PROBES=${PROBES:-"idle storm kept packets"}
IDLE_C=${IDLE_C:-5000}
STORM_C=${STORM_C:-5000}
AFTER_S=${AFTER_S:-5}
KEPT_N=${KEPT_N:-100000}
KEPT_BATCH=${KEPT_BATCH:-2000}
PACKETS_M=${PACKETS_M:-100000}
PORT=${PORT:-3370}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$WORK/results/memory-raw-$STAMP.jsonl
LOG=$WORK/results/memory-log-$STAMP.txt
NODE_DIR=$WORK/memory-node
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$WORK/results"
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((IDLE_C + STORM_C / 2 + 1000)) ] || { echo "ulimit -n too low" >&2; exit 1; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$SHARED/sioload" && CARGO_TARGET_DIR="$WORK/target" cargo build --release -q)
  CARGO_TARGET_DIR="$WORK/target-memtool" cargo build --release -q --manifest-path "$HERE/Cargo.toml"
  [ -n "${TETHER_BIN:-}" ] || cargo build --release -q --manifest-path "$ROOT/Cargo.toml" -p tether-servers --bin bench-server
  mkdir -p "$NODE_DIR" && cp -r "$SHARED/anchors/node/." "$NODE_DIR/"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --silent)
fi
SIOLOAD=$WORK/target/release/sioload
MEMTOOL=$WORK/target-memtool/release/memtool
TETHER_BIN=${TETHER_BIN:-$TARGET/release/bench-server}

cmd() {
  case "$1" in
    tether) echo "$TETHER_BIN" ;;
    node) echo "node $NODE_DIR/server.js" ;;
    *) echo "unknown server $1" >&2; return 1 ;;
  esac
}
SPID=""
start() { # server csr
  # shellcheck disable=SC2046
  env CSR="$2" PORT=$PORT taskset -c "$SERVER_CPU" $(cmd "$1") >>"$LOG" 2>&1 &
  SPID=$!
  for _ in $(seq 1 100); do ss -Hltn "sport = :$PORT" | grep -q LISTEN && break; sleep 0.1; done
  ss -Hltn "sport = :$PORT" | grep -q LISTEN || { echo "$1 did not start" >&2; exit 1; }
  sleep 0.5
}
stop() {
  if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
  SPID=""
  sleep 1
}
trap stop EXIT INT TERM
measure() { # label tool args...
  local label=$1; shift
  echo "-- run $run $label $srv (pid $SPID)" | tee -a "$LOG" >&2
  timeout 600 taskset -c "$LOADGEN_CPU" "$@" --server-pid "$SPID" --addr "127.0.0.1:$PORT" \
    --label "$srv" --tag server="$srv" --tag probe="$label" --tag run="$run" --json-out "$OUT" \
    2>>"$LOG" >/dev/null || echo "!! run $run $label $srv failed" | tee -a "$LOG" >&2
}

echo "== host: $(nproc) cpus; node $(node --version); raw -> $OUT" | tee -a "$LOG" >&2
for run in $(seq 1 "$RUNS"); do
  for srv in $SERVERS; do
    for probe in $PROBES; do
      case $probe in
        idle)
          for csr in 0 1; do
            start "$srv" $csr; measure "idle-csr$csr" "$SIOLOAD" connect -c "$IDLE_C" --settle-ms 3000; stop
          done ;;
        storm) start "$srv" 1; measure storm "$MEMTOOL" storm -c "$STORM_C" -m 100 --after-s "$AFTER_S"; stop ;;
        kept) start "$srv" 1; measure kept "$MEMTOOL" kept -n "$KEPT_N" --batch "$KEPT_BATCH"; stop ;;
        packets) start "$srv" 1; measure packets "$MEMTOOL" packets -m "$PACKETS_M" --size 64; stop ;;
        *) echo "unknown probe $probe" >&2; exit 1 ;;
      esac
    done
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    rows.setdefault((d["probe"], d["server"]), []).append(d)
def med(ds, k):
    v = [x[k] for x in ds if x.get(k) is not None]
    return statistics.median(v) if v else float("nan")
mib = lambda kb: f"{kb / 1024:.1f} MiB"
print("| probe | server | runs | figure | details |")
print("|---|---|---|---|---|")
for (probe, server), ds in sorted(rows.items()):
    if probe.startswith("idle"):
        fig = f"{med(ds, 'rss_per_conn_bytes'):,.0f} B per idle connection"
        det = f"{med(ds, 'connected'):.0f} connected; RSS {mib(med(ds, 'rss_before_kb'))} -> {mib(med(ds, 'rss_after_kb'))}"
    elif probe == "storm":
        fig = f"{mib(med(ds, 'rss_before_outage_kb'))} before outage -> {mib(med(ds, 'rss_after_kb'))} after"
        det = (f"idle {mib(med(ds, 'rss_idle_kb'))}, outage {mib(med(ds, 'rss_outage_kb'))}, storm peak {mib(med(ds, 'rss_peak_storm_kb'))}, "
               f"recovered {sum(x['recovered'] for x in ds)}/{sum(x['clients'] for x in ds)} in {med(ds, 't_all_recovered_s'):.2f} s, "
               f"lost {sum(x['lost'] for x in ds)} / dup {sum(x['dup'] for x in ds)}")
    elif probe == "kept":
        fig = f"{med(ds, 'bytes_per_kept_session'):,.0f} B per kept session"
        det = (f"{med(ds, 'kept'):,.0f} kept in {med(ds, 'drop_s'):.0f} s, RSS {mib(med(ds, 'rss_before_kb'))} -> {mib(med(ds, 'rss_after_kb'))} "
               f"(read at {med(ds, 'rss_read_at_s'):.0f} s); first-batch check: {sum(x['check_recovered'] for x in ds)}/{sum(x['check_attempted'] for x in ds)} recovered")
    else:
        fig = f"{med(ds, 'bytes_per_stored_packet'):,.0f} B per stored packet"
        det = f"{med(ds, 'packets'):,.0f} packets of ~{med(ds, 'payload_bytes'):.0f} B args; RSS {mib(med(ds, 'rss_before_kb'))} -> {mib(med(ds, 'rss_after_kb'))}"
    print(f"| {probe} | {server} | {len(ds)} | {fig} | {det} |")
PY
