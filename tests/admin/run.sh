#!/usr/bin/env bash
# The official Socket.IO Admin UI (@socket.io/admin-ui 0.5) against Tether's admin-server
# (servers/src/bin/admin-server.rs): its protocol with socket.io-client, and its bundle
# (ui/dist) in headless Chromium, on one node and on two nodes sharing Redis.
#
#   bash tests/admin/run.sh [test files...]
#
# Installs what is missing (Debian's chromium with apt-get, the npm packages with npm ci),
# builds the server, runs the tests with node:test, and exits non-zero on failure.
#
# Environment:
#   CHROMIUM            the browser (default /usr/bin/chromium)
#   REDIS_HOST/PORT     the Redis of the two-node tests (127.0.0.1:6379); each run uses
#                       its own stream and key prefixes, and flushes nothing
#   SKIP_BUILD=1        do not run cargo build
#   SERVER_LOG=1        copy the servers' output to stderr
#   SCREENSHOT_DIR      where the browser test's screenshots go (default /tmp)
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
  echo "run.sh: $CHROMIUM is missing, installing Debian's chromium" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/@socket.io/admin-ui ] \
  || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

if [ "${SKIP_BUILD:-0}" != "1" ]; then
  (cd "$ROOT" && cargo build --release --quiet -p tether-servers --bin admin-server)
fi

if [ "$#" -gt 0 ]; then
  files=("$@")
else
  files=(test/*.test.js)
fi

exec node --test \
  --test-reporter=spec \
  --test-concurrency=1 \
  --test-timeout="${TEST_TIMEOUT:-60000}" \
  "${files[@]}"
