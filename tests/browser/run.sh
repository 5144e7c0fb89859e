#!/usr/bin/env bash
# End-to-end test of the chat example (examples/chat) in headless Chromium.
#
#   bash tests/browser/run.sh [test files...]
#
# Installs what is missing (Debian's chromium with apt-get, playwright-core with npm ci),
# builds the example, runs the tests with node:test, and exits non-zero on failure.
#
# Environment:
#   CHROMIUM        the browser (default /usr/bin/chromium)
#   SCREENSHOT_DIR  where the screenshots go (default /tmp)
#   SERVER_LOG=1    copy the chat server's output to stderr
#   TEST_TIMEOUT    per-test timeout in ms (default 60000)
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

if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

(cd "$ROOT" && cargo build --release -p tether-chat)
export CHAT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tether-chat"

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
