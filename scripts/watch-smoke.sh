#!/usr/bin/env bash
# `make watch` as a newcomer's first command: on a fresh copy of the tree with no .env and no
# OpenAI key, it must start on the echo upstream and serve a streamed turn. Run by make test.
#
# The copy shares this tree's target/ (no second build of the dependencies) and its
# .venv-deploy (the tools make watch installs on first use).
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
ln -s "$root/.venv-deploy" "$work/.venv-deploy"
make --no-print-directory deploy-tools >/dev/null

start_watch() {
  (cd "$work" && exec setsid env -u GPT_API_KEY -u OPENAI_API_KEY -u OPENAI_BASE_URL \
    CARGO_TARGET_DIR="$root/target" make --no-print-directory watch PORT="$port" >"$log" 2>&1) &
  watch_pid=$!
  for _ in $(seq 1 600); do
    curl --silent --output /dev/null "http://127.0.0.1:$port/" && break
    kill -0 "$watch_pid" 2>/dev/null || { cat "$log"; echo "make watch exited"; exit 1; }
    sleep 1
  done
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
echo "with a key in .env, make watch answered from the configured upstream: $reply"
