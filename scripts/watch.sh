#!/usr/bin/env bash
# `make watch`: the function on http://localhost:$PORT under cargo lambda watch, which rebuilds
# it on every change. It builds first, in the open (cargo's own progress: the first build
# takes minutes), and says `ready:` only once the function answers, so the first request
# after that line is answered at once.
#
# Locally the function's own settings hold: cargo lambda's CORS for any origin is off, and
# its logs are text (LOG_FORMAT=text). Without a key in .env (or in the environment), the
# built-in echo upstream answers.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-9000}

set_in_env() { # a variable set in .env or in the environment
  grep -qE "^$1=.+" .env 2>/dev/null || [[ -n "${!1:-}" ]]
}

args=(--invoke-port "$port" --env-file .env --disable-cors --env-var LOG_FORMAT=text)
upstream="OpenAI upstream"
if ! { set_in_env GPT_API_KEY || set_in_env OPENAI_API_KEY || set_in_env GPT_API_KEY_SSM_PARAMETER \
  || set_in_env GPT_API_KEY_SECRET_ARN || set_in_env OPENAI_BASE_URL; }; then
  echo "No OpenAI key in .env: answering with the built-in echo upstream (OPENAI_BASE_URL=echo); put your key in GPT_API_KEY for real answers."
  args+=(--env-var OPENAI_BASE_URL=echo)
  upstream="echo upstream"
else
  # The base URL the function will use: the environment's, else .env's (as cargo lambda
  # gives them), else OpenAI's.
  base_url=${OPENAI_BASE_URL:-$(sed -n 's/^OPENAI_BASE_URL=//p' .env 2>/dev/null | tail -1)}
  case "$base_url" in
    "") ;;
    echo) upstream="echo upstream" ;;
    *) upstream="upstream $base_url" ;;
  esac
fi
store="memory store"
if set_in_env REDIS_URL || set_in_env REDIS_HOST || set_in_env REDIS_URL_SSM_PARAMETER \
  || set_in_env REDIS_URL_SECRET_ARN; then
  store="Redis store"
fi

echo "Building the function (cargo build)..."
cargo build --locked --bin bootstrap

cargo lambda watch "${args[@]}" &
watch=$!
trap 'kill "$watch" 2>/dev/null || true; wait "$watch" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

# The first request starts the function; this one is ours, not the reader's.
python3 - "$port" "$watch" <<'PY'
import os, sys, time, urllib.request
port, watch = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    try:
        os.kill(watch, 0)
    except ProcessLookupError:
        sys.exit("cargo lambda watch stopped before the function answered")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as answer:
            if answer.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit("the function did not answer within 10 minutes")
PY
echo "ready: http://localhost:$port ($upstream, $store)"
wait "$watch"
