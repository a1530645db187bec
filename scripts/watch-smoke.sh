#!/usr/bin/env bash
# `make watch` as a newcomer's first command: on a fresh copy of the tree with no .env and no
# OpenAI key, it must say `ready:` only once the function answers, start on the echo
# upstream, serve a streamed turn, and answer every checked snippet of the README's
# quickstart and of docs/http-api.md as they show (scripts/check-snippets.py). Run by make test.
#
# The copy shares this tree's target/ (no second build of the dependencies) and its
# .venv-lambda (cargo-lambda, all that make watch installs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
# Outside the copy: cargo lambda watch rebuilds on any change in the tree it watches.
log=$(mktemp)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

stop_watch() {
  if [[ -n "${watch_pid:-}" ]]; then
    kill -- "-$watch_pid" 2>/dev/null || true
    wait "$watch_pid" 2>/dev/null || true
  fi
  watch_pid=
}

cleanup() {
  stop_watch
  if [[ -n "${upstream_pid:-}" ]]; then kill "$upstream_pid" 2>/dev/null || true; fi
  rm -rf "$work" "$log"
}
trap cleanup EXIT

# The tree as a clone would have it (tracked files, and new ones not yet committed).
git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -cf - -T - 2>/dev/null | tar -xf - -C "$work"
test ! -e "$work/.env"
ln -s "$root/.venv-lambda" "$work/.venv-lambda"
make --no-print-directory .venv-lambda/.installed >/dev/null

start_watch() {
  (cd "$work" && exec setsid env -u GPT_API_KEY -u OPENAI_API_KEY -u OPENAI_BASE_URL \
    CARGO_TARGET_DIR="$root/target" make --no-print-directory watch PORT="$port" >"$log" 2>&1) &
  watch_pid=$!
  for _ in $(seq 1 3000); do
    grep -q '^ready: ' "$log" && break
    kill -0 "$watch_pid" 2>/dev/null || { cat "$log"; echo "make watch exited"; exit 1; }
    sleep 0.2
  done
  grep -q '^ready: ' "$log" || { cat "$log"; echo "make watch never said ready"; exit 1; }
  # `ready:` comes once the function has started (its first log line is before it), so the
  # reader's first request finds it running.
  awk '/upstream: .*; chats kept in/ { started = 1 } /^ready: / { exit !started }' "$log" \
    || { cat "$log"; echo "make watch said ready before the function had started"; exit 1; }
  test "$(curl --silent --max-time 10 "http://127.0.0.1:$port/")" = "Hello, World!" \
    || { cat "$log"; echo "make watch did not answer GET /"; exit 1; }
}

echo "--- make watch PORT=$port in a fresh copy, with no .env"
start_watch

events=$(curl --silent --no-buffer --max-time 30 -X POST "http://127.0.0.1:$port/first-chat/chat" \
  -H 'accept: text/event-stream' -d '{"content": "Is anybody there?"}')
echo "$events" | grep -q '^event: delta' || { echo "$events"; cat "$log"; echo "no delta event"; exit 1; }
echo "$events" | grep -q '"content":"echo: Is anybody there? (2 messages)"' \
  || { echo "$events"; cat "$log"; echo "no done event with the echo"; exit 1; }
grep -q "No OpenAI key in .env" "$log" || { cat "$log"; echo "make watch did not say it uses the echo"; exit 1; }
grep "ECHO UPSTREAM" "$log" | grep -q "WARN" || { cat "$log"; echo "the function did not warn about the echo"; exit 1; }
test -f "$work/.env" || { echo "make watch did not create .env"; exit 1; }
echo "make watch on a fresh copy without a key served a streamed turn: $(echo "$events" | grep -c '^event: delta') delta events, then done"

grep -qx "ready: http://localhost:$port (echo upstream, memory store)" "$log" \
  || { cat "$log"; echo "no ready line naming the echo upstream and the memory store"; exit 1; }
test ! -e "$work/.venv-deploy" || { echo "make watch installed the deploy tools (SAM)"; exit 1; }
# Logs a person reads: text, a line per warning, none about cargo lambda's concurrency.
if grep -q '{"level"' "$log" || grep -q "AWS_LAMBDA_MAX_CONCURRENCY" "$log"; then
  cat "$log"; echo "make watch logged JSON lines or lambda_runtime's concurrency warning"; exit 1
fi
for warning in "NO REDIS CONFIGURED" "ECHO UPSTREAM" "OPEN API"; do
  test "$(grep -c "WARN.*$warning" "$log")" = 1 || { cat "$log"; echo "not one line for $warning"; exit 1; }
done
# The function's own CORS settings hold: none set, no CORS headers (cargo lambda's are off).
preflight=$(curl --silent --include -X OPTIONS "http://127.0.0.1:$port/first-chat/chat" \
  -H 'Origin: http://elsewhere.example' -H 'Access-Control-Request-Method: POST')
if echo "$preflight" | grep -qi '^access-control-allow'; then
  echo "$preflight"; echo "make watch answered CORS the function was not configured for"; exit 1
fi

echo "--- the quickstart's snippets and docs/http-api.md's, as pasted, against make watch"
(cd "$work" && python3 scripts/check-snippets.py "$port" README.md docs/http-api.md) \
  || { cat "$log"; echo "a snippet does not do what the documentation shows"; exit 1; }
# make invoke reaches the same function instance: the prompt docs/http-api.md's block set.
invoked=$(cd "$work" && make --no-print-directory invoke PORT="$port" EVENTS=events/get-system.json)
echo "$invoked" | grep -qF '{"content":"You are terse."}' \
  || { echo "$invoked"; echo "make invoke did not reach the running function"; exit 1; }
echo "make invoke reached the running function: $(echo "$invoked" | tail -1)"
stop_watch

# With a key in .env nothing changes: the turn goes to the configured upstream, here a
# stand-in that answers one fixed completion.
upstream_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$upstream_port" <<'PY' &
import http.server, json, sys

class Upstream(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        assert self.headers["authorization"] == "Bearer sk-smoke-key", self.headers
        body = json.dumps({
            "id": "chatcmpl-smoke", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "from the real upstream"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Upstream).serve_forever()
PY
upstream_pid=$!
sed -i -e 's|^GPT_API_KEY=.*|GPT_API_KEY=sk-smoke-key|' \
  -e "s|^OPENAI_BASE_URL=.*|OPENAI_BASE_URL=http://127.0.0.1:$upstream_port/v1|" "$work/.env"
grep -q "^GPT_API_KEY=sk-smoke-key" "$work/.env" && grep -q "^OPENAI_BASE_URL=http" "$work/.env" \
  || { cat "$work/.env"; echo ".env.example no longer has the lines this script fills"; exit 1; }

echo "--- make watch again, with a key in .env"
start_watch
reply=$(curl --silent --max-time 30 -X POST "http://127.0.0.1:$port/keyed-chat/chat" -d '{"content": "Hello?"}')
echo "$reply" | grep -q '"content":"from the real upstream"' \
  || { echo "$reply"; cat "$log"; echo "with a key, the turn did not reach the configured upstream"; exit 1; }
if grep -q "No OpenAI key in .env\|ECHO UPSTREAM" "$log"; then
  cat "$log"; echo "with a key, make watch still used the echo"; exit 1
fi
grep -qx "ready: http://localhost:$port (upstream http://127.0.0.1:$upstream_port/v1, memory store)" "$log" \
  || { cat "$log"; echo "the ready line does not name the configured upstream"; exit 1; }
echo "with a key in .env, make watch answered from the configured upstream: $reply"
stop_watch

# A setting the function refuses: make watch says so and stops, instead of waiting.
echo "--- make watch with a setting the function refuses"
sed -i -e 's|^CHAT_TTL_SECONDS=.*|CHAT_TTL_SECONDS=soon|' "$work/.env"
grep -q "^CHAT_TTL_SECONDS=soon" "$work/.env" || { echo ".env.example has no CHAT_TTL_SECONDS line"; exit 1; }
if (cd "$work" && CARGO_TARGET_DIR="$root/target" timeout 300 make --no-print-directory watch PORT="$port" >"$log" 2>&1); then
  cat "$log"; echo "make watch went on with a refused setting"; exit 1
fi
grep -q "the function did not start" "$log" && grep -q "CHAT_TTL_SECONDS" "$log" \
  || { tail -40 "$log"; echo "make watch did not say why it stopped"; exit 1; }
if grep -q '^ready: ' "$log"; then cat "$log"; echo "ready said of a function that cannot start"; exit 1; fi
echo "make watch with a refused setting stopped and said why"
