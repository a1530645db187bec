#!/usr/bin/env bash
# End-to-end load run, all on loopback: wrk -> the release function (polling a Runtime API) ->
# Redis and an instant OpenAI stand-in. Bounded: DURATION seconds per run (default 10).
# Prints wrk's latency distribution at concurrency 1 and 10, through two fronts:
# - examples/runtime_front.rs, a Runtime API stand-in with an HTTP front that sets
#   TCP_NODELAY: what the function itself costs, as Lambda invokes it;
# - cargo lambda watch --release, as `make watch` runs it: on a kept-alive connection every
#   request there waits ~40 ms inside the emulator (BENCHMARKS.md), so its rows measure that.
# And the OpenAI stand-in's own latency, for subtraction.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
REDIS_PORT=${REDIS_PORT:-16379}
UPSTREAM_PORT=${UPSTREAM_PORT:-18787}
PROXY_PORT=${PROXY_PORT:-19000}
FRONT_PORT=${FRONT_PORT:-19001}

command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
make --no-print-directory .venv-lambda/.installed >/dev/null; export PATH="$PWD/.venv-lambda/bin:$PATH"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  pkill -f "cargo-lambda.*--invoke-port $PROXY_PORT" 2>/dev/null || true
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT

if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "port $REDIS_PORT already has a Redis; set REDIS_PORT to a free one" >&2
  exit 1
fi
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
cargo build --quiet --release --example instant_openai --example runtime_front
target/release/examples/instant_openai "$UPSTREAM_PORT" >/dev/null &
pids+=($!)

cargo lambda watch --release --ignore-changes --invoke-port "$PROXY_PORT" \
  --env-var GPT_API_KEY=sk-load \
  --env-var "OPENAI_BASE_URL=http://127.0.0.1:$UPSTREAM_PORT/v1" \
  --env-var "REDIS_URL=redis://127.0.0.1:$REDIS_PORT" \
  --env-var RUST_LOG=warn >/tmp/chat-proxy-load-watch.log 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$PROXY_PORT/" >/dev/null 2>&1 && break
  sleep 1
done
curl -sf "http://127.0.0.1:$PROXY_PORT/" >/dev/null
# cargo lambda watch --release built target/release/bootstrap; the front runs that binary.
GPT_API_KEY=sk-load OPENAI_BASE_URL="http://127.0.0.1:$UPSTREAM_PORT/v1" \
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT" RUST_LOG=warn \
  target/release/examples/runtime_front "$FRONT_PORT" target/release/bootstrap >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$FRONT_PORT/" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$FRONT_PORT/" >/dev/null

for concurrency in 1 10; do
  echo "=== upstream stand-in alone, concurrency $concurrency"
  wrk -t1 -c"$concurrency" -d"${DURATION}s" --latency -s scripts/upstream_only.lua \
    "http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions" | sed -n '/Latency Distribution/,/Requests\/sec/p'
  echo "=== the function through the Runtime API front, fresh chat ids, concurrency $concurrency"
  wrk -t1 -c"$concurrency" -d"${DURATION}s" --latency -s scripts/fresh_chat.lua \
    "http://127.0.0.1:$FRONT_PORT" | sed -n '/Latency Distribution/,/Requests\/sec/p'
  echo "=== through cargo lambda watch, fresh chat ids, concurrency $concurrency"
  wrk -t1 -c"$concurrency" -d"${DURATION}s" --latency -s scripts/fresh_chat.lua \
    "http://127.0.0.1:$PROXY_PORT" | sed -n '/Latency Distribution/,/Requests\/sec/p'
done
