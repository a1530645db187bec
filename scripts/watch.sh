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

# What the function will see of a variable: cargo lambda gives it .env's line when .env has
# one (an empty line included, which leaves it unset), else the environment's value.
value_of() {
  if grep -qE "^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=" .env 2>/dev/null; then
    sed -nE "s/^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=[[:space:]]*//p" .env | tail -1 \
      | sed -E "s/^['\"](.*)['\"]$/\1/"
  else
    printf '%s' "${!1:-}"
  fi
}
set_in_env() { [[ -n "$(value_of "$1")" ]]; }

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
  base_url=$(value_of OPENAI_BASE_URL)
  case "$base_url" in
    "") ;;
    echo) upstream="echo upstream" ;;
    # A user and password in the URL are not printed.
    *) upstream="upstream $(printf '%s' "$base_url" | sed -E 's#//[^/@]*@#//#')" ;;
  esac
fi
store="memory store"
if set_in_env REDIS_URL || set_in_env REDIS_HOST || set_in_env REDIS_URL_SSM_PARAMETER \
  || set_in_env REDIS_URL_SECRET_ARN; then
  store="Redis store"
fi

# Background responses (`background: true`) are made by another invocation, asked for through
# Lambda's Invoke API: tools/lambda_events.py takes those calls as Lambda does and invokes the
# function through cargo lambda, whose second instance runs them while the first answers. Only
# with Redis: instances share nothing else (the memory store refuses background responses).
events_port=$((port + 1))
if [[ $store == "Redis store" ]]; then
  args+=(--concurrency 2 --env-var "AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:$events_port"
    --env-var AWS_REGION=us-east-1 --env-var AWS_ACCESS_KEY_ID=local
    --env-var AWS_SECRET_ACCESS_KEY=local)
fi

echo "Building the function (cargo build)..."
cargo build --locked --bin bootstrap

# Its output is also kept in a file, for the wait below to see a function that exits.
out=$(mktemp)
cargo lambda watch "${args[@]}" > >(tee "$out") 2>&1 &
watch=$!
events=
if [[ $store == "Redis store" ]]; then
  python3 tools/lambda_events.py "$events_port" "http://127.0.0.1:$port" bootstrap &
  events=$!
fi
trap 'kill "$watch" $events 2>/dev/null || true; wait "$watch" 2>/dev/null || true; rm -f "$out"' EXIT
trap 'exit 130' INT TERM

# The first request starts the function; this one is ours, not the reader's. A function
# that cannot start (a setting it refuses: its log says which) stops the wait at once.
python3 - "$port" "$watch" "$out" <<'PY'
import os, sys, threading, time, urllib.request
port, watch, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def probe():
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=600) as answer:
                if answer.status == 200:
                    os._exit(0)
        except OSError:
            time.sleep(0.2)

threading.Thread(target=probe, daemon=True).start()
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    try:
        os.kill(watch, 0)
    except ProcessLookupError:
        sys.exit("cargo lambda watch stopped before the function answered")
    with open(out, errors="replace") as log:
        if "ERROR command exited" in log.read():
            sys.exit("the function did not start: its log above says why; fix .env and run "
                     "make watch again")
    time.sleep(0.2)
sys.exit("the function did not answer within 10 minutes")
PY
echo "ready: http://localhost:$port ($upstream, $store)"
wait "$watch"
