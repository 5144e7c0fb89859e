#!/usr/bin/env bash
# Interop test suite for Tether with the official socket.io-client.
#
#   bash tests/interop/run.sh [test files...]
#
# Environment:
#   SERVER_CMD   command that starts the server under test (run with
#                /bin/sh -c, PORT is set); default <repo>/scripts/conformance-server
#   TARGET       "reference" when SERVER_CMD is the Node.js reference server:
#                Tether-only tests are skipped (RUN_ALL=1 runs them anyway)
#   SERVER_URL   use an already running server instead of starting one
#   SERVER_LOG   1 = copy the server's output to stderr
#   TEST_TIMEOUT per-test timeout in ms (default 30000)
#   CONCURRENCY  test files run in parallel (default 1; each file starts its own server)
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -d node_modules/socket.io-client ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
  else
    npm install --no-audit --no-fund --loglevel=error >/dev/null
  fi
fi

if [ "$#" -gt 0 ]; then
  files=("$@")
else
  files=(test/*.test.js)
fi

exec node --test \
  --test-reporter=spec \
  --test-concurrency="${CONCURRENCY:-1}" \
  --test-timeout="${TEST_TIMEOUT:-30000}" \
  "${files[@]}"
