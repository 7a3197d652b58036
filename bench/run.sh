#!/usr/bin/env bash
# The benchmark suite: builds everything, starts Redis, boardcast and the two reference peers
# (one at a time, each on loopback), runs every scenario against each, stops everything by PID,
# and writes docs/benchmarks.md. Every run is bounded in count and time.
#
#   bench/run.sh            # the full suite (about 15 minutes)
#   QUICK=1 bench/run.sh    # a small load, to check that it all works
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/target/bench}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
: > "$OUT/log.txt"
SECRET=bench-secret-0123456789abcdef
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# Idle connections are capped by the open-file limit (each side holds one descriptor per
# connection); where it cannot be raised, measure as many as it allows.
FD_LIMIT=$(ulimit -n)

if [ -n "${QUICK:-}" ]; then
  SECONDS_RUN=3; BOARDS=5; IDLE=2000; STEPS="5 10"; DURABLE_BOARDS=4; RECONNECT_BOARDS=50
else
  SECONDS_RUN=10; BOARDS=50; IDLE=50000; STEPS="5 10 15 20 25 30 40 50"; DURABLE_BOARDS=20; RECONNECT_BOARDS=500
fi
if [ "$IDLE" -gt $((FD_LIMIT - 1000)) ]; then
  echo "the open-file limit is $FD_LIMIT: idle runs $((FD_LIMIT - 1000)) connections, not $IDLE"
  IDLE=$((FD_LIMIT - 1000))
fi

command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install -y redis-server)"; exit 1; }
cargo build --release --workspace --quiet
(cd bench/peers/node && npm ci --no-audit --no-fund --silent)
LOADGEN=$ROOT/target/release/loadgen

PIDS=()
cleanup() { for pid in "${PIDS[@]:-}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 1 200); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing listens on $1"; exit 1; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
REDIS_PID=$!; PIDS+=("$REDIS_PID"); wait_port "$REDIS_PORT"
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/

# start_target NAME PORT [extra env...]: starts a server, sets PID.
start_target() {
  local name=$1 port=$2; shift 2
  case $name in
    boardcast) env BIND=127.0.0.1:$port JWT_SECRET=$SECRET RATE_LIMIT=100000 RATE_BURST=100000 RUST_LOG=warn \
                 DATA_DIR="$(mktemp -d "$OUT/data.XXXXXX")" "$@" \
                 "$ROOT/target/release/boardcast" & ;;
    relay)     "$ROOT/target/release/relay" --bind 127.0.0.1:$port --secret $SECRET 2>/dev/null & ;;
    node)      node bench/peers/node/server.mjs --port "$port" --secret $SECRET --redis "$REDIS_URL" 2>/dev/null & ;;
  esac
  PID=$!; PIDS+=("$PID"); wait_port "$port"
}

run() { "$LOADGEN" "$@" --secret "$SECRET" | tee -a "$OUT/log.txt" | grep '^{' >> "$RESULTS"; }

# start_pair [ENV...]: two boardcast instances with the same settings; sets pid1, pid2 and PAIR
# (their --url and --pid options).
start_pair() {
  local p1 p2
  p1=$(free_port); start_target boardcast "$p1" "$@"; pid1=$PID
  p2=$(free_port); start_target boardcast "$p2" "$@"; pid2=$PID
  sleep 1
  PAIR=(--url "ws://127.0.0.1:$p1" --url "ws://127.0.0.1:$p2" --pid "$pid1" --pid "$pid2")
}
stop_pair() { stop "$pid1"; stop "$pid2"; }

# saturate LABEL PREFIX TARGET...: `cursors` against TARGET (its --url and --pid options) at
# each board count of STEPS, until a delivery is lost or p99 passes 50 ms.
saturate() {
  local label=$1 prefix=$2 boards line p99; shift 2
  for boards in $STEPS; do
    line=$("$LOADGEN" cursors --label "$label" "$@" --secret "$SECRET" --boards "$boards" --users 20 --hz 20 \
      --seconds "$SECONDS_RUN" --prefix "$prefix$boards" | tee -a "$OUT/log.txt" | grep '^{' || true)
    [ -n "$line" ] || return 0
    echo "$line" >> "$RESULTS"
    echo "$line" | grep -q '"delivered_ratio":1.0,' || return 0
    p99=$(echo "$line" | sed 's/.*"p99":\([0-9.]*\).*/\1/')
    if awk -v p="$p99" 'BEGIN { exit !(p > 50) }'; then return 0; fi
  done
}

for name in boardcast relay node; do
  port=$(free_port); start_target "$name" "$port"
  url=ws://127.0.0.1:$port
  echo "== $name"
  run cursors --label "$name" --url "$url" --pid "$PID" --boards "$BOARDS" --users 20 --hz 20 --seconds "$SECONDS_RUN" --prefix "c-$name" || true
  # The same load with every socket sending at its own instant.
  run cursors --label "$name" --spread socket --url "$url" --pid "$PID" --boards "$BOARDS" --users 20 --hz 20 --seconds "$SECONDS_RUN" --prefix "cs-$name" || true
  run durable --label "$name" --url "$url" --pid "$PID" --boards "$DURABLE_BOARDS" --writers 4 --depth 4 --seconds "$SECONDS_RUN" --prefix "d-$name" || true
  run churn --label "$name" --url "$url" --pid "$PID" --boards 20 --observers 2 --rate 200 --stay-ms 500 --seconds "$SECONDS_RUN" --prefix "h-$name" || true
  stop "$PID"
  # Memory per idle connection, on a fresh process.
  port=$(free_port); start_target "$name" "$port"
  run idle --label "$name" --url "ws://127.0.0.1:$port" --pid "$PID" --connections "$IDLE" --boards $((IDLE / 10)) --seconds 5 --threads 2 --prefix "i-$name" || true
  stop "$PID"
  port=$(free_port); start_target "$name" "$port"
  saturate "$name-saturation" "s-$name-" --url "ws://127.0.0.1:$port" --pid "$PID" || true
  stop "$PID"
done

echo "== boardcast, encodings: JSON, MessagePack and mixed rooms, back to back on one process"
port=$(free_port); start_target boardcast "$port"
run sizes --label boardcast-encodings --url "ws://127.0.0.1:$port" --pid "$PID" --prefix "z-enc" || true
for encoding in json msgpack mixed; do
  run cursors --label boardcast-encodings --encoding "$encoding" --url "ws://127.0.0.1:$port" --pid "$PID" \
    --boards $((BOARDS / 2)) --users 20 --hz 20 --seconds "$SECONDS_RUN" --prefix "e-$encoding" || true
done
stop "$PID"

echo "== boardcast, embedded storage: SYNC=full, and in memory only"
for variant in "boardcast-sync-full SYNC=full" "boardcast-memory DATA_DIR=:memory:"; do
  read -r label setting <<< "$variant"
  port=$(free_port); start_target boardcast "$port" "$setting"
  run durable --label "$label" --url "ws://127.0.0.1:$port" --pid "$PID" --boards "$DURABLE_BOARDS" --writers 4 --depth 4 --seconds "$SECONDS_RUN" --prefix "d-$label" || true
  stop "$PID"
done
rm -rf "$OUT"/data.*

echo "== boardcast, two instances with Redis (server CPU counts both instances and Redis)"
# Each scenario runs on two fresh instances, so that no figure depends on the run before it
# (one right after an overloaded run measured worse; see the report).
for scenario in \
  "cursors --boards $BOARDS --users 30 --hz 20 --prefix c-x2-30" \
  "cursors --boards $BOARDS --users 20 --hz 20 --prefix c-x2" \
  "durable --boards $DURABLE_BOARDS --writers 4 --depth 4 --prefix d-x2" \
  "durable --boards $DURABLE_BOARDS --writers 1 --depth 1 --prefix d-x2-light"; do
  start_pair REDIS_URL="$REDIS_URL"
  # shellcheck disable=SC2086 # the scenario's words are options
  run $scenario --label boardcast-redis-x2 "${PAIR[@]}" --pid "$REDIS_PID" --seconds "$SECONDS_RUN" || true
  stop_pair
done
start_pair REDIS_URL="$REDIS_URL"
saturate boardcast-redis-x2-saturation sx- "${PAIR[@]}" --pid "$REDIS_PID" || true
stop_pair
# Memory per idle connection and connect rate with Redis, on a fresh instance.
port=$(free_port); start_target boardcast "$port" REDIS_URL="$REDIS_URL"
sleep 1
run idle --label boardcast-redis --url "ws://127.0.0.1:$port" --pid "$PID" --connections "$IDLE" --boards $((IDLE / 10)) --seconds 5 --threads 2 --prefix "i-redis" || true
stop "$PID"

echo "== boardcast, two instances on a Redis Cluster of three masters and three replicas"
# Six nodes on ports whose cluster bus port (plus 10,000) is free too.
CLUSTER_PORTS=(); CLUSTER_PIDS=()
while [ ${#CLUSTER_PORTS[@]} -lt 6 ]; do
  p=$(free_port)
  [ "$p" -lt 55000 ] || continue
  python3 -c "import socket; socket.socket().bind(('127.0.0.1', $p + 10000))" 2>/dev/null || continue
  redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-node-timeout 5000 --save "" \
    --appendonly no --dir "$(mktemp -d "$OUT/cluster.XXXXXX")" >/dev/null &
  CLUSTER_PIDS+=("$!"); PIDS+=("$!"); CLUSTER_PORTS+=("$p"); wait_port "$p"
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
for _ in $(seq 1 100); do
  redis-cli -p "${CLUSTER_PORTS[0]}" cluster info | grep -q cluster_state:ok && break; sleep 0.1
done
CLUSTER_URL=$(printf 'redis://127.0.0.1:%s/,' "${CLUSTER_PORTS[@]}"); CLUSTER_URL=${CLUSTER_URL%,}
CLUSTER_OPTS=()
for pid in "${CLUSTER_PIDS[@]}"; do CLUSTER_OPTS+=(--pid "$pid"); done
for scenario in \
  "cursors --boards $BOARDS --users 30 --hz 20 --prefix c-xc-30" \
  "cursors --boards $BOARDS --users 20 --hz 20 --prefix c-xc" \
  "durable --boards $DURABLE_BOARDS --writers 4 --depth 4 --prefix d-xc"; do
  start_pair REDIS_CLUSTER=on REDIS_URL="$CLUSTER_URL"
  # shellcheck disable=SC2086 # the scenario's words are options
  run $scenario --label boardcast-redis-cluster-x2 "${PAIR[@]}" "${CLUSTER_OPTS[@]}" --seconds "$SECONDS_RUN" || true
  stop_pair
done
for pid in "${CLUSTER_PIDS[@]}"; do stop "$pid"; done
rm -rf "$OUT"/cluster.*

echo "== boardcast, mass reconnect after SIGKILL of an instance"
p1=$(free_port); start_target boardcast "$p1" REDIS_URL="$REDIS_URL" MAX_SESSIONS_PER_USER=100000; pid1=$PID
p2=$(free_port); start_target boardcast "$p2" REDIS_URL="$REDIS_URL" MAX_SESSIONS_PER_USER=100000; pid2=$PID
sleep 1
run reconnect --label boardcast-redis-x2 --url "ws://127.0.0.1:$p1" --url "ws://127.0.0.1:$p2" --pid "$pid2" \
  --kill "$pid1" --boards "$RECONNECT_BOARDS" --per-board 10 --seconds 12 --prefix r-x2 || true
stop "$pid1"; stop "$pid2"

"$LOADGEN" report --results "$RESULTS" > "$ROOT/docs/benchmarks.md"
echo "wrote docs/benchmarks.md"
