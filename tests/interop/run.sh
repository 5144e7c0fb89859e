#!/usr/bin/env bash
# Interop test suite for Tether with the official socket.io-client.
#
#   bash tests/interop/run.sh [test files relative to tests/interop...]
#
# Environment:
#   SERVER_CMD    command that starts the server under test (run with
#                 /bin/sh -c, PORT is set); default <repo>/scripts/conformance-server
#   TARGET        "reference" when SERVER_CMD is the Node.js reference server:
#                 Tether-only tests are skipped (RUN_ALL=1 runs them anyway)
#   SERVER_URL    use an already running server instead of starting one per file
#   SERVER_LOG    1 = copy the server's output to stderr
#   TEST_TIMEOUT  per-test timeout in ms (default 30000)
#   SERVER_START_TIMEOUT_MS  how long a server may take to listen (default 120000)
#   CONCURRENCY   test files run in parallel (default 1; each file starts its own server)
#
# Validate the suite itself against the Node.js reference:
#   SERVER_CMD="node $PWD/tests/interop/reference-server.js" TARGET=reference bash tests/interop/run.sh
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

if [ -z "${SERVER_URL:-}" ]; then
  node lib/warmup.js
fi

exec node --test \
  --test-reporter=spec \
  --test-concurrency="${CONCURRENCY:-1}" \
  "${files[@]}"
