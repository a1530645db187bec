#!/usr/bin/env bash
# Smoke test of a deployed stack: GET / answers Hello, World! at the given ApiUrl.
set -euo pipefail
api_url=${1:?usage: scripts/smoke.sh <ApiUrl>}
echo "ApiUrl: $api_url"
answer=$(curl --fail --silent --show-error --max-time 30 "$api_url")
test "$answer" = "Hello, World!" || { echo "GET / answered: $answer"; exit 1; }
echo "smoke test passed"
