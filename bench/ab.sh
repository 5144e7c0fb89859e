#!/usr/bin/env bash
# Two builds of bench-server side by side in one run of ../shared/bench/run-anchors.sh,
# for a before/after of a change:
#
#   bench/ab.sh BEFORE_BINARY AFTER_BINARY           # CSR off on both
#   CSR=1 CASES="storm-5k recovery-1k" bench/ab.sh BEFORE AFTER
#
# run-anchors knows two Tether servers, `tether` (started with CSR=0) and `tether-csr`
# (CSR=1); here `tether` runs BEFORE and `tether-csr` runs AFTER, both with the CSR
# mode asked for, so the table's "tether" column is the old build and "tether-csr" the
# new one. Other variables go to run-anchors.sh (RUNS, CASES, ...).
set -euo pipefail
[ $# -eq 2 ] || { sed -n 2,12p "$0"; exit 2; }
BEFORE=$(realpath "$1")
AFTER=$(realpath "$2")
MODE=${CSR:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WRAP=$(mktemp /tmp/tether-ab-XXXXXX.sh)
cat > "$WRAP" <<SH
#!/bin/sh
if [ "\$CSR" = 0 ]; then exec env CSR=$MODE "$BEFORE"; else exec env CSR=$MODE "$AFTER"; fi
SH
chmod +x "$WRAP"
SERVERS="tether tether-csr" CASES=${CASES:-"echo fanout-1k storm-5k"} \
  TETHER_CMD="$WRAP" "$ROOT/../shared/bench/run-anchors.sh"
