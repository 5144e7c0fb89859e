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
#   CLUSTER_BACKEND=nats     NATS JetStream (tether-nats) on 127.0.0.1:NATS_PORT
#                            (default 4222); files 01-05 and 09
#   CLUSTER_BACKEND=redis-tls Redis over TLS: run.sh starts a private redis-server on
#                            free ports (TLS with client certificates required, a
#                            CA made at run time by target/release/test-certs, plus a
#                            plain port for the suite's own inspection); the nodes
#                            connect with rediss:// and a client certificate. Every
#                            file but 08 (its own redis-server, plain)
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

# 1b. Redis over TLS: a private redis-server, stopped at the end
TLS_REDIS_PID=
if [ "$CLUSTER_BACKEND" = redis-tls ]; then
  if [ -z "${SERVER_CMD:-}" ] && [ "${SKIP_BUILD:-0}" != "1" ]; then
    (cd "$ROOT" && cargo build --release --quiet -p tether-servers --bin conformance-server --bin test-certs)
  fi
  command -v redis-server >/dev/null || { echo "run.sh: redis-server (Redis 6+ with TLS) is not installed" >&2; exit 1; }
  TLS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tether-cluster-tls.XXXXXX")
  "${CARGO_TARGET_DIR:-$ROOT/target}/release/test-certs" "$TLS_DIR"
  free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
  REDIS_PORT=$(free_port)
  REDIS_TLS_PORT=$(free_port)
  while [ "$REDIS_TLS_PORT" = "$REDIS_PORT" ]; do REDIS_TLS_PORT=$(free_port); done
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --tls-port "$REDIS_TLS_PORT" \
    --tls-cert-file "$TLS_DIR/server.pem" --tls-key-file "$TLS_DIR/server.key" \
    --tls-ca-cert-file "$TLS_DIR/ca.pem" --tls-auth-clients yes \
    --save "" --appendonly no --dir "$TLS_DIR" >"$TLS_DIR/redis.log" 2>&1 &
  TLS_REDIS_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_TLS_PORT") 2>/dev/null && break
    sleep 0.1
  done
  trap 'kill "$TLS_REDIS_PID" 2>/dev/null; wait "$TLS_REDIS_PID" 2>/dev/null; rm -rf "$TLS_DIR"' EXIT
  REDIS_HOST=127.0.0.1
  export REDIS_HOST REDIS_PORT REDIS_TLS_PORT REDIS_TLS_DIR="$TLS_DIR"
  echo "run.sh: private redis-server, TLS on $REDIS_TLS_PORT (client certificates required), plain on $REDIS_PORT for the suite" >&2
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
    # 08 starts a plain redis-server of its own.
    if [ "$CLUSTER_BACKEND" = redis-tls ] && [[ "$f" == test/08-* ]]; then
      continue
    fi
    files+=("$f")
  done
fi
node_args=(--test --test-reporter=spec --test-concurrency=1 --test-timeout="${TEST_TIMEOUT:-120000}" "${files[@]}")
if [ -n "$TLS_REDIS_PID" ]; then
  node "${node_args[@]}"  # not exec'd: the EXIT trap stops the private redis-server
else
  exec node "${node_args[@]}"
fi
