#!/usr/bin/env bash
# Multi-node suite (CONTRACT.md §6): Tether conformance-server nodes sharing a
# Redis Streams backend, checked with the official socket.io-client.
#
#   bash tests/cluster/run.sh [test files relative to tests/cluster...]
#
# Environment:
#   REDIS_HOST / REDIS_PORT  the Redis to use (default 127.0.0.1:6379; started
#                            here if it does not answer and it is local)
#   CLUSTER_REDIS_DB         the logical database the suite owns and FLUSHDBs
#                            at the start of every test file (default 7)
#   SERVER_CMD               command that starts one node (run as
#                            `/bin/sh -c "exec $SERVER_CMD"`, with PORT, ADAPTER,
#                            NODE_NAME set); default target/release/conformance-server
#   CLUSTER_BACKEND=postgres  PostgreSQL (tether-postgres) at PG_HOST:PG_PORT
#                            (127.0.0.1:5432, user postgres, database test, with
#                            psql) instead of Redis; for the backend-neutral files
#                            (01-06, 09), not 07 (mixed) or 08 (redis-restart)
#   SKIP_BUILD=1             do not run cargo build
#   CLUSTER_LOG=1            copy the nodes' output to stderr
#   TEST_TIMEOUT             per-test timeout in ms (default 120000)
#   REDIS_SERVER_BIN         redis-server that test 08 starts and restarts on its
#                            own port (default: redis-server on the PATH)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$HERE"

# CLUSTER_ENGINE is the old name of CLUSTER_BACKEND, still accepted.
CLUSTER_BACKEND=${CLUSTER_BACKEND:-${CLUSTER_ENGINE:-redis}}
export CLUSTER_BACKEND

REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
export REDIS_HOST REDIS_PORT

# 1. dependencies
if [ ! -d node_modules/socket.io-client ] || [ ! -d node_modules/@socket.io/redis-streams-adapter ] \
  || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

# 2. Redis
redis_ping() {
  # RESP PING over bash's /dev/tcp: no redis-cli needed
  local line
  exec 3<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT" 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  IFS= read -r -t 2 line <&3 || { exec 3>&-; return 1; }
  exec 3>&-
  [[ "$line" == "+PONG"* ]]
}
if [ "$CLUSTER_BACKEND" != postgres ] && ! redis_ping; then
  if [[ "$REDIS_HOST" != "127.0.0.1" && "$REDIS_HOST" != "localhost" ]]; then
    echo "run.sh: Redis at $REDIS_HOST:$REDIS_PORT does not answer PING" >&2
    exit 1
  fi
  if ! command -v redis-server >/dev/null; then
    echo "run.sh: Redis does not answer on $REDIS_HOST:$REDIS_PORT and redis-server is not installed" >&2
    echo "        (apt-get install redis-server, or set REDIS_HOST/REDIS_PORT)" >&2
    exit 1
  fi
  echo "run.sh: starting redis-server on port $REDIS_PORT" >&2
  redis-server --daemonize yes --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
  for _ in $(seq 50); do
    redis_ping && break
    sleep 0.1
  done
  if ! redis_ping; then
    echo "run.sh: started redis-server, but it does not answer PING on port $REDIS_PORT" >&2
    exit 1
  fi
fi

# 3. the server under test
if [ -z "${SERVER_CMD:-}" ] && [ "${SKIP_BUILD:-0}" != "1" ]; then
  (cd "$ROOT" && cargo build --release --quiet -p tether-servers --bin conformance-server)
fi

# 4. the tests, one file at a time (they share the Redis database)
if [ "$#" -gt 0 ]; then
  files=("$@")
else
  files=()
  for f in test/[0-9]*.test.js; do
    # 07 (a mixed cluster with the Node adapter) and 08 (a redis-server restart) are
    # about Redis; every other file runs on PostgreSQL too.
    if [ "$CLUSTER_BACKEND" = postgres ] && [[ "$f" == test/07-* || "$f" == test/08-* ]]; then
      continue
    fi
    # 06 also looks into the backend (its log and records), which only Redis and
    # PostgreSQL expose to the suite.
    if [ "$CLUSTER_BACKEND" = nats ] && [[ "$f" == test/06-* || "$f" == test/07-* || "$f" == test/08-* ]]; then
      continue
    fi
    files+=("$f")
  done
fi
exec node --test \
  --test-reporter=spec \
  --test-concurrency=1 \
  --test-timeout="${TEST_TIMEOUT:-120000}" \
  "${files[@]}"
