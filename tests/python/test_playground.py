"""The playground page in a real browser: Debian's chromium, driven through chromium-driver
by Selenium, against the function under the Lambda emulator with the echo upstream (which
streams word by word): the chat, the sidebar of chats, Markdown (and hostile Markdown),
Stop, Regenerate, Edit, at a desktop's width and a phone's, the console clean."""


import http.client
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import CALLERS, ROOT, Proxy, node_test

# Screenshots land in target/ so a test run leaves the tree clean; `make screenshots`
# writes the copies in docs/ that docs/playground.md shows.
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or ROOT / "target" / "screenshots")


def browser_and_driver():
    """Debian's chromium and chromium-driver (what .ci/run installs), or CHROME_BINARY and
    CHROMEDRIVER, e.g. GitHub's runners' Google Chrome and its ChromeDriver."""
    binary = (os.environ.get("CHROME_BINARY") or shutil.which("chromium")
              or shutil.which("google-chrome") or "/usr/bin/chromium")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return binary, driver


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="chat-proxy-chromium-")
    options = webdriver.ChromeOptions()
    binary, driver_path = browser_and_driver()
    options.binary_location = binary
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 "--window-size=1280,900"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def live_proxy(redis):
    """Three instances, as Lambda runs as many as requests come at once: one writes an
    answer while another follows it for a reloaded page and a third takes its Stop."""
    server = Proxy({"OPENAI_BASE_URL": "echo", "REDIS_URL": redis.url}, instances=3)
    yield server
    server.close()


def wait(driver, condition, seconds=10):
    return WebDriverWait(driver, seconds, poll_frequency=0.02).until(lambda _: condition())


def get_json(url, headers=None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as answer:
        return json.load(answer)


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def texts_of(driver, selector):
    # Read in one script: the page redraws messages as they stream, so elements found in
    # one call may be gone by the next.
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText.trim())", selector)


def replies(driver):
    return texts_of(driver, "#messages li.assistant .content")


def open_page(driver, proxy, fragment=""):
    driver.get(f"{proxy.url}/playground{fragment}")
    wait(driver, lambda: driver.execute_script("return document.readyState") == "complete")


def answered(driver):
    # Send is back (not Stop): the answer's stream has ended, as its reader sees.
    return not driver.execute_script("return document.body.classList.contains('streaming')")


def send(driver, text):
    # As a user does: once the last answer is whole (Enter while one streams sends nothing).
    wait(driver, lambda: answered(driver))
    box = driver.find_element(By.ID, "message")
    box.clear()
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


# A desktop's width and a phone's, each in light and in dark.
SIZES = [(1280, "light"), (1280, "dark"), (390, "light"), (390, "dark")]


def at_size(driver, width, scheme):
    """A desktop's or a phone's width, in the system's light or dark setting."""
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
    driver.set_window_size(width, 844)


def test_the_vendored_libraries_are_the_pinned_npm_files():
    # playground/vendor/ against the same versions from the npm registry (tests/js).
    report = node_test("vendored.test.mjs")
    assert "ℹ pass 1" in report and "ℹ fail 0" in report, report


def test_the_page_is_served_whole_safe_and_cached(open_proxy):
    with urllib.request.urlopen(f"{open_proxy.url}/playground") as page:
        body = page.read().decode()
        headers = page.headers
    assert '<label for="message" class="visually-hidden">Message</label>' in body
    assert '<label for="chat-id">Chat id</label>' in body
    # The vendored Markdown renderer and sanitizer come from the proxy itself.
    assert '<script src="playground/markdown-it.min.js" defer></script>' in body
    assert '<script src="playground/purify.min.js" defer></script>' in body
    assert "http" not in body.replace("https://…", ""), "no third-party address in the page"
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    # Revalidated on every load (a 304 while it is unchanged), so a new deployment shows at once.
    assert headers["cache-control"] == "no-cache"
    etag = headers["etag"]
    again = urllib.request.Request(f"{open_proxy.url}/playground", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(again)
    assert not_modified.value.code == 304
    with urllib.request.urlopen(f"{open_proxy.url}/") as hello:
        assert hello.read() == b"Hello, World!"


def test_a_conversation_streams_persists_and_clears(open_proxy, browser):
    open_page(browser, open_proxy)
    first = browser.current_url
    browser.find_element(By.ID, "new-chat").click()
    wait(browser, lambda: "#chat=chat-" in browser.current_url and browser.current_url != first)
    chat = browser.find_element(By.ID, "chat-id").get_attribute("value")

    send(browser, "Tell me about the old harbour and its boats")
    seen = []
    final = "echo: Tell me about the old harbour and its boats (2 messages)"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        texts = replies(browser)
        if texts and (not seen or seen[-1] != texts[-1]):
            seen.append(texts[-1])
        if texts and texts[-1] == final:
            break
        time.sleep(0.015)
    assert seen[-1] == final
    partial = [text for text in seen if text and text != final]
    assert len(partial) >= 3, f"the reply appeared in pieces: {seen}"
    assert all(final.startswith(text) for text in partial)
    wait(browser, lambda: "tokens" in texts_of(browser, "#messages li.assistant .meta")[0])
    wait(browser, lambda: "1 turns" in browser.find_element(By.ID, "usage").text)

    # The history is the proxy's: a reload shows it.
    browser.refresh()
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#messages li")) == 2)
    assert replies(browser) == [final]

    # Prompts are set through the page's settings and kept by the proxy.
    browser.find_element(By.ID, "open-settings").click()
    wait(browser, lambda: browser.find_element(By.ID, "settings").is_displayed())
    prompt = browser.find_element(By.ID, "chat-prompt")
    prompt.clear()
    prompt.send_keys("Answer like a pirate.")
    browser.find_element(By.ID, "save-chat-prompt").click()
    wait(browser, lambda: "saved" in browser.find_element(By.ID, "status").text)
    assert get_json(f"{open_proxy.url}/{chat}/system") == {"content": "Answer like a pirate."}
    browser.find_element(By.ID, "close-settings").click()
    wait(browser, lambda: not browser.find_element(By.ID, "settings").is_displayed())

    browser.find_element(By.ID, "clear").click()
    wait(browser, lambda: not browser.find_elements(By.CSS_SELECTOR, "#messages li"))
    assert get_json(f"{open_proxy.url}/{chat}/chat") == []
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


def test_model_output_is_shown_as_text_never_as_html(open_proxy, browser):
    open_page(browser, open_proxy, "#chat=xss-check")
    payload = '<img src=x onerror="window.__xss = 1"><b>bold</b>'
    send(browser, payload)
    wait(browser, lambda: replies(browser) and replies(browser)[-1].endswith("(2 messages)"))
    assert payload in replies(browser)[-1]
    assert browser.find_elements(By.CSS_SELECTOR, "#messages img, #messages b") == []
    assert browser.execute_script("return window.__xss") is None
    browser.refresh()
    wait(browser, lambda: len(replies(browser)) == 1)
    assert browser.find_elements(By.CSS_SELECTOR, "#messages img") == []


def test_the_apis_errors_are_shown_as_its_message(open_proxy, browser):
    open_page(browser, open_proxy)
    browser.find_element(By.ID, "open-settings").click()
    field = browser.find_element(By.ID, "chat-id")
    field.send_keys("not a valid id!")
    field.send_keys(Keys.ENTER)
    error = browser.find_element(By.ID, "error")
    wait(browser, lambda: error.is_displayed())
    assert "chat_id must be 1 to 128 characters" in error.text


def test_moderation_checks_the_draft(open_proxy, browser):
    open_page(browser, open_proxy, "#chat=moderation")
    browser.find_element(By.ID, "message").send_keys("this is [flag] bad")
    browser.find_element(By.ID, "moderate").click()
    wait(browser, lambda: browser.find_element(By.ID, "status").text.startswith("Flagged"))
    assert "violence" in browser.find_element(By.ID, "status").text


def test_the_page_asks_for_a_key_and_keeps_it_for_the_session_only(proxy, browser):
    open_page(browser, proxy, "#chat=keyed")
    key_row = browser.find_element(By.ID, "key-row")
    wait(browser, lambda: key_row.is_displayed())
    assert "API key" in browser.find_element(By.ID, "error").text
    browser.find_element(By.ID, "api-key").send_keys(CALLERS["alice"])
    browser.find_element(By.ID, "use-key").click()
    wait(browser, lambda: not key_row.is_displayed())
    send(browser, "hello with a key")
    wait(browser, lambda: replies(browser) and replies(browser)[-1] == "echo: hello with a key (2 messages)")
    assert browser.execute_script("return sessionStorage.getItem('chat-proxy-key')") == CALLERS["alice"]
    assert browser.execute_script("return localStorage.length") == 0
    assert CALLERS["alice"] not in browser.current_url
    assert browser.get_cookies() == []
    assert CALLERS["alice"] not in proxy.logs(), "the key reached the function's log"
    headers = {"Authorization": f"Bearer {CALLERS['alice']}"}
    assert len(get_json(f"{proxy.url}/keyed/chat", headers)) == 2


class StagePrefix:
    """A reverse proxy that serves the proxy under /prod/ only, as an API Gateway stage or a
    custom domain's base path does; it notes every path it was asked for and passes
    streams on as they come. `held` holds the requests for paths that start with it until
    `release` is set."""

    def __init__(self, upstream):
        self.paths = []
        self.held = None
        self.holding = 0
        self.release = threading.Event()
        prefix = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def relay(self):
                prefix.paths.append(self.path)
                if prefix.held and self.path.startswith(prefix.held):
                    prefix.holding += 1
                    prefix.release.wait(30)
                if not self.path.startswith("/prod/"):
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=30)
                connection.request(self.command, self.path[len("/prod"):], body=body, headers=headers)
                answer = connection.getresponse()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                if answer.status in (204, 304):
                    self.end_headers()
                    connection.close()
                    return
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                while chunk := answer.read1(65536):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                connection.close()

            do_GET = do_POST = relay

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()


def test_under_a_stage_it_calls_the_api_under_its_own_path(open_proxy, browser):
    stage = StagePrefix(open_proxy)
    try:
        browser.get(f"{stage.url}/prod/playground#chat=staged")
        wait(browser, lambda: browser.execute_script("return document.readyState") == "complete")

        # Shift+Enter is a new line in the message, Enter sends it.
        box = browser.find_element(By.ID, "message")
        box.send_keys("first line")
        box.send_keys(Keys.SHIFT, Keys.ENTER)
        box.send_keys("second line")
        assert box.get_attribute("value") == "first line\nsecond line"
        assert replies(browser) == [], "Shift+Enter sent nothing"
        # The sidebar's refresh after the answer is held: Send is back without it.
        stage.held = "/prod/chats"
        box.send_keys(Keys.ENTER)
        wait(browser, lambda: replies(browser) and replies(browser)[-1].endswith("(2 messages)"))
        wait(browser, lambda: answered(browser))
        assert stage.holding == 1, "the page asked for the sidebar after the answer"
        assert browser.find_element(By.ID, "send").text == "Send"
        stage.release.set()
        assert replies(browser) == ["echo: first line\nsecond line (2 messages)"]
        assert get_json(f"{open_proxy.url}/staged/chat")[0]["content"] == "first line\nsecond line"

        # A question about an image by URL is a vision turn, stored with its URL.
        browser.find_element(By.ID, "image-url").send_keys("https://example.com/cat.png")
        send(browser, "What is it?")
        wait(browser, lambda: len(replies(browser)) == 2 and replies(browser)[1].endswith(".png]"))
        assert replies(browser)[1] == "echo: What is it? (4 messages) [image: https://example.com/cat.png]"
        stored = get_json(f"{open_proxy.url}/staged/chat")
        assert (stored[2]["content"], stored[2]["url"]) == ("What is it?", "https://example.com/cat.png")

        # The global prompt is read and set through the page too.
        browser.find_element(By.ID, "open-settings").click()
        field = browser.find_element(By.ID, "global-prompt")
        field.clear()
        field.send_keys("Be kind.")
        browser.find_element(By.ID, "save-global-prompt").click()
        wait(browser, lambda: "saved" in browser.find_element(By.ID, "status").text)
        assert get_json(f"{open_proxy.url}/system") == {"content": "Be kind."}

        # Every call went under /prod/, none to the host's root.
        assert stage.paths and all(p.startswith("/prod/") for p in stage.paths), stage.paths
        assert "/prod/staged/chat" in stage.paths
        assert console_errors(browser) == []
    finally:
        stage.close()
        urllib.request.urlopen(urllib.request.Request(
            f"{open_proxy.url}/system", data=b'{"content": "You are a helpful assistant."}', method="POST"))


def test_light_and_dark_follow_the_system_setting(open_proxy, browser):
    colours = {}
    for scheme in ["light", "dark"]:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
        open_page(browser, open_proxy, "#chat=colours")
        colours[scheme] = browser.execute_script(
            "const s = getComputedStyle(document.body); return [s.backgroundColor, s.color]")
    assert colours["light"] == ["rgb(255, 255, 255)", "rgb(28, 28, 30)"], colours
    assert colours["dark"] == ["rgb(18, 18, 18)", "rgb(232, 234, 237)"], colours


# ---- The chat app: the sidebar, Markdown, Stop, Regenerate, Edit, phone width -------------

def post_json(url, body, method="POST"):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200
        return json.load(answer)


def chat_items(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#chats li[data-id]')].map((li) => li.dataset.id)")


def chat_titles(driver):
    return driver.execute_script("""return Object.fromEntries([...document.querySelectorAll('#chats li[data-id]')]
        .map((li) => [li.dataset.id, li.querySelector('.chat-title')?.innerText]))""")


def chat_item(driver, chat):
    return driver.find_element(By.CSS_SELECTOR, f'#chats li[data-id="{chat}"]')


def test_the_sidebar_lists_opens_renames_and_deletes_chats(open_proxy, browser):
    post_json(f"{open_proxy.url}/side-a/chat", {"content": "first chat about apples"})
    post_json(f"{open_proxy.url}/side-b/chat", {"content": "second about bananas"})
    open_page(browser, open_proxy, "#chat=side-a")
    wait(browser, lambda: chat_items(browser)[:2] == ["side-b", "side-a"])
    titles = chat_titles(browser)
    assert [titles["side-b"], titles["side-a"]] == ["second about bananas", "first chat about apples"]
    assert chat_item(browser, "side-a").get_attribute("aria-current") == "true"
    assert browser.find_element(By.ID, "title").text == "first chat about apples"

    # Opening a chat from the list shows its history and puts its id in the URL.
    chat_item(browser, "side-b").find_element(By.CSS_SELECTOR, "a.open").click()
    wait(browser, lambda: browser.current_url.endswith("#chat=side-b"))
    wait(browser, lambda: replies(browser) == ["echo: second about bananas (2 messages)"])
    assert chat_item(browser, "side-b").get_attribute("aria-current") == "true"

    # Rename in place: Enter saves, and the proxy keeps it.
    chat_item(browser, "side-b").find_element(By.CSS_SELECTOR, "button.rename").click()
    field = browser.find_element(By.CSS_SELECTOR, "#chats .rename-field")
    field.clear()
    field.send_keys("Bananas", Keys.ENTER)
    wait(browser, lambda: chat_titles(browser).get("side-b") == "Bananas")
    assert get_json(f"{open_proxy.url}/side-b/title") == {"title": "Bananas"}
    wait(browser, lambda: browser.find_element(By.ID, "title").text == "Bananas")

    # Delete asks first: dismissed, nothing goes; accepted, the chat is gone.
    chat_item(browser, "side-a").find_element(By.CSS_SELECTOR, "button.delete").click()
    WebDriverWait(browser, 5).until(lambda d: d.switch_to.alert).dismiss()
    assert len(get_json(f"{open_proxy.url}/side-a/chat")) == 2
    chat_item(browser, "side-a").find_element(By.CSS_SELECTOR, "button.delete").click()
    alert = WebDriverWait(browser, 5).until(lambda d: d.switch_to.alert)
    assert "first chat about apples" in alert.text
    alert.accept()
    wait(browser, lambda: "side-a" not in chat_items(browser))
    assert get_json(f"{open_proxy.url}/side-a/chat") == []
    listed = [chat["id"] for chat in get_json(f"{open_proxy.url}/chats?limit=100")["chats"]]
    assert "side-a" not in listed and "side-b" in listed
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


MARKDOWN = """Here is **bold**, *emphasis* and `inline code`, with [a link](https://example.com/docs).

- one
- two

| name | value |
|------|-------|
| a    | 1     |

```python
print(1)
```
"""

CODE = """Two blocks:

```python
def greet(name):
    return f"hello {name}"  # a comment
```

```
no language here
```
"""

HOSTILE = """<script>window.__xss = 1</script>
<img src=x onerror="window.__xss = 2">
[click me](javascript:window.__xss=3)
[quoted](https://example.com/"onmouseover="window.__xss=4")
![picture](https://example.com/picture.png)
<a href="javascript:window.__xss=5">raw link</a>
[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)
<iframe src="https://example.com"></iframe>
```"><img src=x onerror="window.__xss=6">
a block whose language tries to be markup
```
<span class="hljs-keyword evil" onclick="window.__xss=7">span</span>
"""


def test_answers_render_as_markdown_and_hostile_markdown_stays_inert(open_proxy, browser):
    post_json(f"{open_proxy.url}/chats/import", {"id": "markdown", "messages": [
        {"role": "user", "content": "Show me Markdown <b>as typed</b>"},
        {"role": "assistant", "content": MARKDOWN},
        {"role": "user", "content": "And something nasty"},
        {"role": "assistant", "content": HOSTILE},
    ]})
    browser.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": open_proxy.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    open_page(browser, open_proxy, "#chat=markdown")
    wait(browser, lambda: len(replies(browser)) == 2)
    first, second = browser.find_elements(By.CSS_SELECTOR, "#messages li.assistant .content")

    # What a user wrote is shown as typed.
    question = browser.find_element(By.CSS_SELECTOR, "#messages li.user .content")
    assert question.text == "Show me Markdown <b>as typed</b>"
    assert question.find_elements(By.TAG_NAME, "b") == []

    # The answer's Markdown, rendered.
    assert first.find_element(By.TAG_NAME, "strong").text == "bold"
    assert first.find_element(By.TAG_NAME, "em").text == "emphasis"
    assert first.find_element(By.CSS_SELECTOR, "p code").text == "inline code"
    assert [li.text for li in first.find_elements(By.CSS_SELECTOR, "ul li")] == ["one", "two"]
    assert [th.text for th in first.find_elements(By.CSS_SELECTOR, "table th")] == ["name", "value"]
    assert [td.text for td in first.find_elements(By.CSS_SELECTOR, "table td")] == ["a", "1"]
    link = first.find_element(By.CSS_SELECTOR, "a")
    assert link.get_attribute("href") == "https://example.com/docs"
    assert link.get_attribute("rel") == "noopener noreferrer"
    assert link.get_attribute("target") == "_blank"
    code = first.find_element(By.CSS_SELECTOR, "pre code")
    assert code.text == "print(1)"
    assert code.value_of_css_property("font-family").startswith("ui-monospace")
    copy = first.find_element(By.CSS_SELECTOR, ".code button.copy-code")
    copy.click()
    wait(browser, lambda: copy.text == "Copied")
    copied = browser.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0]('failed: ' + e))")
    assert copied == "print(1)\n"

    # Hostile Markdown: raw HTML shows as text, and nothing runs, loads or links out badly.
    assert "<script>window.__xss = 1</script>" in second.text
    assert '<img src=x onerror="window.__xss = 2">' in second.text
    assert "<iframe" in second.text
    messages = browser.find_element(By.ID, "messages")
    for tag in ["script", "img", "iframe", "object", "embed", "style", "svg", "form"]:
        for content in messages.find_elements(By.CSS_SELECTOR, ".content"):
            assert content.find_elements(By.TAG_NAME, tag) == [], tag
    # The only classes an answer's nodes keep are the highlighter's.
    classes = browser.execute_script("""
        return [...document.querySelectorAll('#messages .content [class]')]
            .filter((e) => !e.closest('.code-head') && !e.classList.contains('code'))
            .map((e) => e.className);""")
    assert all(c.startswith(("language-", "hljs-")) for c in classes), classes
    attributes = browser.execute_script("""
        return [...document.querySelectorAll('#messages *')].flatMap(
            (e) => [...e.attributes].map((a) => a.name + '=' + a.value));""")
    assert not [a for a in attributes if a.startswith("on") or "javascript:" in a or "data:" in a], attributes
    for anchor in messages.find_elements(By.TAG_NAME, "a"):
        assert anchor.get_attribute("href").startswith(("https:", "http:", "mailto:")), anchor.get_attribute("href")
        assert anchor.get_attribute("rel") == "noopener noreferrer"
    # The quoted link's quote stays in its address, never an attribute of its own.
    for anchor in second.find_elements(By.TAG_NAME, "a"):
        ActionChains(browser).move_to_element(anchor).perform()
    for text in ["click me", "raw link", "data"]:
        assert second.find_elements(By.LINK_TEXT, text) == [], text
    assert browser.execute_script("return window.__xss") is None
    # The answer's Markdown is what Copy copies.
    browser.find_elements(By.CSS_SELECTOR, "#messages li.assistant button.copy")[0].click()
    copied = browser.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0]('failed: ' + e))")
    assert copied == MARKDOWN
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


@pytest.mark.parametrize("width, scheme", SIZES)
def test_code_blocks_are_highlighted_under_a_header_with_their_language(open_proxy, browser, width,
                                                                        scheme):
    at_size(browser, width, scheme)
    post_json(f"{open_proxy.url}/chats/import", {"id": f"code-{width}-{scheme}", "messages": [
        {"role": "user", "content": "Show me code"}, {"role": "assistant", "content": CODE}]})
    open_page(browser, open_proxy, f"#chat=code-{width}-{scheme}")
    wait(browser, lambda: len(replies(browser)) == 1)
    blocks = browser.find_elements(By.CSS_SELECTOR, "#messages li.assistant .code")
    assert len(blocks) == 2
    # Each block's header holds its language's name and Copy: not a row of its own.
    heads = [(b.find_element(By.CSS_SELECTOR, ".code-head .code-lang").text,
              b.find_element(By.CSS_SELECTOR, ".code-head button.copy-code").text) for b in blocks]
    assert heads == [("python", "Copy code"), ("", "Copy code")], heads
    # The known language's tokens are coloured by the theme of the system's setting; the
    # other block is plain text.
    python, plain = blocks
    keyword = python.find_element(By.CSS_SELECTOR, "span.hljs-keyword")
    assert keyword.text == "def"
    text_colour = python.find_element(By.CSS_SELECTOR, "pre").value_of_css_property("color")
    assert keyword.value_of_css_property("color") != text_colour
    expected = {"light": "rgba(215, 58, 73, 1)", "dark": "rgba(255, 123, 114, 1)"}[scheme]
    assert keyword.value_of_css_property("color") == expected
    assert python.find_element(By.CSS_SELECTOR, "span.hljs-comment").text == "# a comment"
    assert plain.find_elements(By.CSS_SELECTOR, "pre span") == []
    assert python.find_element(By.TAG_NAME, "pre").text.startswith("def greet(name):")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"playground-code-{width}-{scheme}.png"))
    browser.set_window_size(1280, 900)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


def stored(proxy, chat):
    return get_json(f"{proxy.url}/{chat}/chat")


def send_button(driver):
    return driver.find_element(By.ID, "send")


LONG = " ".join(f"word{n}" for n in range(40))


def words(text):
    return " ".join(text.split())


def stop_mid_stream(driver, proxy, chat, how):
    send(driver, LONG)
    wait(driver, lambda: replies(driver) and len(replies(driver)[-1]) > 10)
    assert send_button(driver).text == "Stop"
    how()
    wait(driver, lambda: send_button(driver).text == "Send")
    cut = replies(driver)[-1]
    time.sleep(0.5)
    assert replies(driver)[-1] == cut, "nothing more came after Stop"
    assert not cut.endswith("messages)"), f"the reply was whole before Stop: {cut}"
    assert "Stopped" in texts_of(driver, "#messages li.assistant .meta")[-1]
    # What was written is the answer the proxy kept.
    assert words(stored(proxy, chat)[-1]["content"]) == words(cut)
    return cut


def test_stop_regenerate_and_edit_do_what_they_say(live_proxy, browser):
    open_page(browser, live_proxy, "#chat=redo")
    # Stop, by the button and by Escape, ends the answer where it was.
    cuts = [
        stop_mid_stream(browser, live_proxy, "redo", lambda: send_button(browser).click()),
        stop_mid_stream(browser, live_proxy, "redo",
                        lambda: browser.find_element(By.ID, "message").send_keys(Keys.ESCAPE)),
    ]
    # The proxy kept both turns as they were cut.
    assert [words(m["content"]) for m in stored(live_proxy, "redo")[1::2]] == [words(c) for c in cuts]
    browser.refresh()
    wait(browser, lambda: len(replies(browser)) == 2)
    assert [words(r) for r in replies(browser)] == [words(c) for c in cuts]

    # Regenerate replaces the newest answer: asked again, still two turns.
    regenerate = browser.find_elements(By.CSS_SELECTOR, "#messages li.assistant button.regenerate")
    assert len(regenerate) == 1, "only the newest answer can be regenerated"
    assert browser.find_elements(By.CSS_SELECTOR, "#messages li.assistant")[-1].find_elements(
        By.CSS_SELECTOR, "button.regenerate") == regenerate
    regenerate[0].click()
    wait(browser, lambda: get_json(f"{live_proxy.url}/redo/usage")["turns"] == 3)
    wait(browser, lambda: send_button(browser).text == "Send" and len(replies(browser)) == 2)
    assert len(stored(live_proxy, "redo")) == 4
    assert replies(browser)[-1] == stored(live_proxy, "redo")[3]["content"]

    # Edit asks a user message again: what followed it is replaced.
    browser.find_elements(By.CSS_SELECTOR, "#messages li.user button.edit")[0].click()
    field = browser.find_element(By.CSS_SELECTOR, "#messages .edit-field")
    field.clear()
    field.send_keys("an edited question", Keys.ENTER)
    wait(browser, lambda: replies(browser) == ["echo: an edited question (2 messages)"])
    wait(browser, lambda: send_button(browser).text == "Send")
    assert [(m["role"], m["content"]) for m in stored(live_proxy, "redo")] == [
        ("user", "an edited question"), ("assistant", "echo: an edited question (2 messages)")]
    assert texts_of(browser, "#messages li .content") == [
        "an edited question", "echo: an edited question (2 messages)"]
    only_own_origin(browser, live_proxy)
    assert console_errors(browser) == []


LONGER = " ".join(f"word{n}" for n in range(120))


def test_a_page_reloaded_mid_answer_follows_it_and_stops_it(live_proxy, browser):
    open_page(browser, live_proxy, "#chat=reloaded")
    send(browser, LONGER)
    wait(browser, lambda: replies(browser) and len(replies(browser)[-1].split()) > 5)
    before = words(replies(browser)[-1])
    browser.refresh()
    # The question is shown again, and the answer goes on streaming from where it was.
    wait(browser, lambda: texts_of(browser, "#messages li.user .content") == [LONGER])
    wait(browser, lambda: replies(browser) and len(words(replies(browser)[-1])) > len(before) + 30)
    assert words(replies(browser)[-1]).startswith(before), "the same answer, not another"
    assert send_button(browser).text == "Stop"
    assert len(get_json(f"{live_proxy.url}/reloaded/chat")) == 0, "still being written"
    # Stop works on the answer followed again: what was written is kept as the turn.
    send_button(browser).click()
    wait(browser, lambda: send_button(browser).text == "Send")
    cut = replies(browser)[-1]
    assert not cut.endswith("messages)"), f"the reply was whole before Stop: {cut}"
    assert "Stopped" in texts_of(browser, "#messages li.assistant .meta")[-1]
    turn = stored(live_proxy, "reloaded")
    assert [m["role"] for m in turn] == ["user", "assistant"]
    assert words(turn[1]["content"]) == words(cut)
    # Reloaded once more, the page shows the turn as kept, with nothing left to follow.
    browser.refresh()
    wait(browser, lambda: [words(r) for r in replies(browser)] == [words(cut)])
    assert send_button(browser).text == "Send"
    only_own_origin(browser, live_proxy)
    assert console_errors(browser) == []


def test_at_phone_width_the_chats_fold_behind_a_button(open_proxy, browser):
    post_json(f"{open_proxy.url}/phone-a/chat", {"content": "a chat for the phone"})
    browser.set_window_size(360, 780)
    open_page(browser, open_proxy, "#chat=phone-b")
    sidebar = browser.find_element(By.ID, "sidebar")
    toggle = browser.find_element(By.ID, "toggle-sidebar")
    wait(browser, lambda: "phone-a" in chat_items(browser))
    assert not sidebar.is_displayed() and toggle.is_displayed()
    toggle.click()
    wait(browser, lambda: sidebar.is_displayed())
    assert toggle.get_attribute("aria-expanded") == "true"
    chat_item(browser, "phone-a").find_element(By.CSS_SELECTOR, "a.open").click()
    wait(browser, lambda: not sidebar.is_displayed())
    wait(browser, lambda: replies(browser) == ["echo: a chat for the phone (2 messages)"])
    send(browser, "typed on a phone")
    wait(browser, lambda: len(replies(browser)) == 2 and replies(browser)[-1].endswith("(4 messages)"))
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 360, f"the page scrolls sideways at 360 px: {width}"
    # Regenerate and Edit at a phone's width too, once the stream is over.
    wait(browser, lambda: send_button(browser).text == "Send")
    browser.find_element(By.CSS_SELECTOR, "#messages li.assistant button.regenerate").click()
    wait(browser, lambda: get_json(f"{open_proxy.url}/phone-a/usage")["turns"] == 3)
    wait(browser, lambda: send_button(browser).text == "Send" and len(replies(browser)) == 2)
    browser.find_elements(By.CSS_SELECTOR, "#messages li.user button.edit")[1].click()
    field = browser.find_element(By.CSS_SELECTOR, "#messages .edit-field")
    field.clear()
    field.send_keys("edited on a phone", Keys.ENTER)
    wait(browser, lambda: replies(browser)[-1:] == ["echo: edited on a phone (4 messages)"])
    wait(browser, lambda: [m["content"] for m in stored(open_proxy, "phone-a")][2:] == [
        "edited on a phone", "echo: edited on a phone (4 messages)"])
    # The composer stays at the bottom of the window; the conversation scrolls above it.
    bottom = browser.execute_script(
        "return [document.getElementById('composer').getBoundingClientRect().bottom, window.innerHeight]")
    assert abs(bottom[0] - bottom[1]) <= 1, bottom
    browser.set_window_size(1280, 900)
    wait(browser, lambda: sidebar.is_displayed() and not toggle.is_displayed())
    assert console_errors(browser) == []


def open_chats(driver, width):
    """The list of chats in view: at a phone's width, behind its button."""
    if width < 720:
        driver.find_element(By.ID, "toggle-sidebar").click()
        wait(driver, lambda: driver.find_element(By.ID, "sidebar").is_displayed())


def only_own_origin(driver, proxy):
    """Everything the page loaded came from the proxy itself."""
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)")
    assert loaded and all(url.startswith(proxy.url + "/") for url in loaded), loaded


def opacity(driver, element):
    return float(driver.execute_script("return getComputedStyle(arguments[0]).opacity", element))


@pytest.mark.parametrize("width, scheme", SIZES)
def test_actions_are_labelled_icons_shown_on_hover_or_focus(open_proxy, browser, width, scheme):
    at_size(browser, width, scheme)
    chat = f"icons-{width}-{scheme}"
    post_json(f"{open_proxy.url}/{chat}/chat", {"content": "a question to act on"})
    open_page(browser, open_proxy, f"#chat={chat}")
    wait(browser, lambda: len(replies(browser)) == 1 and chat in chat_items(browser))
    # Each action is an icon with a name for screen readers (and a tooltip), no text.
    labels = browser.execute_script("""return [...document.querySelectorAll(
        '#messages button, #chats button')].map((b) => [b.className, b.getAttribute('aria-label'),
        b.title, b.innerText.trim(), b.querySelectorAll('svg').length])""")
    named = {label for _, label, _, _, _ in labels}
    assert {"Copy", "Edit", "Regenerate", f"Rename a question to act on",
            f"Delete a question to act on"} <= named, labels
    for class_name, label, title, text, svgs in labels:
        assert (title, text, svgs) == (label, "", 1), (class_name, label, title, text, svgs)
    # Quiet until pointed at or focused (anything but a finger for a pointer).
    assert not browser.execute_script("return matchMedia('(pointer: coarse)').matches")
    question = browser.find_element(By.CSS_SELECTOR, "#messages li.user")
    actions = question.find_element(By.CSS_SELECTOR, ".actions")
    browser.find_element(By.ID, "message").click()
    wait(browser, lambda: opacity(browser, actions) == 0)
    ActionChains(browser).move_to_element(question).perform()
    wait(browser, lambda: opacity(browser, actions) == 1)
    ActionChains(browser).move_to_element(browser.find_element(By.ID, "message")).perform()
    wait(browser, lambda: opacity(browser, actions) == 0)
    browser.execute_script("arguments[0].focus()", actions.find_element(By.CSS_SELECTOR, "button.edit"))
    wait(browser, lambda: opacity(browser, actions) == 1)
    # Copy says it copied, by its name.
    browser.execute_cdp_cmd("Browser.grantPermissions", {"permissions": [
        "clipboardReadWrite", "clipboardSanitizedWrite"]})
    copy = actions.find_element(By.CSS_SELECTOR, "button.copy")
    copy.click()
    wait(browser, lambda: copy.get_attribute("aria-label") == "Copied")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"playground-icons-{width}-{scheme}.png"))
    # On a touch screen, which cannot point, they always show.
    browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    open_page(browser, open_proxy, f"#chat={chat}")
    wait(browser, lambda: len(replies(browser)) == 1)
    assert browser.execute_script("return matchMedia('(pointer: coarse)').matches")
    actions = browser.find_elements(By.CSS_SELECTOR, "#messages .actions, #chats .chat-actions")
    assert actions and all(opacity(browser, a) == 1 for a in actions)
    browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})
    browser.set_window_size(1280, 900)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


@pytest.mark.parametrize("width, scheme", SIZES)
def test_the_sidebar_groups_chats_by_date(open_proxy, browser, width, scheme):
    post_json(f"{open_proxy.url}/dated-{width}-{scheme}/chat", {"content": "a chat of today"})
    at_size(browser, width, scheme)
    open_page(browser, open_proxy, f"#chat=dated-{width}-{scheme}")
    wait(browser, lambda: f"dated-{width}-{scheme}" in chat_items(browser))
    open_chats(browser, width)
    today = browser.find_element(By.CSS_SELECTOR, "#chats .group h2")
    assert today.text == "Today" and today.is_displayed()
    # Grouped as chat apps group them, from when each chat was last written.
    groups = browser.execute_script("""
        const now = new Date(2026, 11, 7, 15, 0).getTime() / 1000;
        const at = (y, m, d, h) => new Date(y, m, d, h).getTime() / 1000;
        const chats = [["a", at(2026, 11, 7, 9)], ["b", at(2026, 11, 6, 23)],
          ["c", at(2026, 11, 3, 12)], ["d", at(2026, 10, 30, 12)], ["e", at(2026, 10, 10, 12)],
          ["f", at(2026, 9, 2, 12)], ["g", at(2025, 9, 2, 12)]]
          .map(([id, updated_at]) => ({ id, updated_at }));
        return chatGroups(chats, now).map((g) => [g.label, g.chats.map((c) => c.id)]);""")
    assert groups == [["Today", ["a"]], ["Yesterday", ["b"]], ["Previous 7 days", ["c", "d"]],
                      ["Previous 30 days", ["e"]], ["October", ["f"]], ["October 2025", ["g"]]], groups
    # A long title is cut with an ellipsis, on one line.
    cut = browser.execute_script("""const s = getComputedStyle(document.querySelector(
        '#chats li[data-id] .chat-title')); return [s.textOverflow, s.whiteSpace, s.overflow]""")
    assert cut == ["ellipsis", "nowrap", "hidden"], cut
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"playground-dates-{width}-{scheme}.png"))
    browser.set_window_size(1280, 900)
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


@pytest.mark.parametrize("width, scheme", SIZES)
def test_a_new_chat_is_called_new_chat_and_the_composer_stays_put(open_proxy, browser, width,
                                                                   scheme):
    at_size(browser, width, scheme)
    open_page(browser, open_proxy)
    assert browser.find_element(By.ID, "title").text == "New chat"
    # The page has settled: the new chat's usage is shown.
    wait(browser, lambda: "0 turns" in browser.execute_script(
        "return document.getElementById('usage').textContent"))
    composer = lambda: browser.execute_script(
        "return document.getElementById('composer').getBoundingClientRect().top")
    before = composer()
    send(browser, LONG)
    wait(browser, lambda: send_button(browser).text == "Stop")
    tops = set()
    while send_button(browser).text == "Stop":
        tops.add(composer())
        time.sleep(0.05)
    tops.add(composer())
    assert tops == {before}, "the composer moved while the reply streamed"
    # Once answered, the chat is listed and titled by its question.
    wait(browser, lambda: browser.find_element(By.ID, "title").text.startswith("word0 word1"))
    # The answer's usage is shown under it, and still is after a reload.
    meta = texts_of(browser, "#messages li.assistant .meta")[-1]
    assert "tokens (" in meta, meta
    browser.refresh()
    wait(browser, lambda: len(replies(browser)) == 1)
    assert texts_of(browser, "#messages li.assistant .meta") == [meta]
    browser.set_window_size(1280, 900)
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


@pytest.mark.parametrize("width, scheme", SIZES)
def test_a_button_brings_a_reader_who_scrolled_up_back_to_the_newest_message(
        open_proxy, browser, width, scheme):
    for n in range(12):
        post_json(f"{open_proxy.url}/scrolled-{width}-{scheme}/chat",
                  {"content": f"question {n}\n\n" + LONG})
    at_size(browser, width, scheme)
    browser.set_window_size(width, 700)
    open_page(browser, open_proxy, f"#chat=scrolled-{width}-{scheme}")
    wait(browser, lambda: len(replies(browser)) == 12)
    to_bottom = browser.find_element(By.ID, "to-bottom")
    assert not to_bottom.is_displayed(), "at the newest message, no button"
    browser.execute_script("document.getElementById('conversation').scrollTop = 0")
    wait(browser, lambda: to_bottom.is_displayed())
    assert to_bottom.get_attribute("aria-label") == "Scroll to the newest message"
    to_bottom.click()
    wait(browser, lambda: browser.execute_script(
        "const v = document.getElementById('conversation');"
        "return v.scrollHeight - v.scrollTop - v.clientHeight < 2"))
    wait(browser, lambda: not to_bottom.is_displayed())
    browser.set_window_size(1280, 900)
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_at_phone_width_the_composer_is_one_line_and_its_extras_wait_behind_plus(
        open_proxy, browser, scheme):
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                            {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
    browser.set_window_size(390, 844)
    open_page(browser, open_proxy, f"#chat=phone-{scheme}")
    box = browser.find_element(By.ID, "message")
    # No keys a phone has not got in its hints.
    assert box.get_attribute("placeholder") == "Message"
    line = browser.execute_script(
        "const s = getComputedStyle(arguments[0]); return parseFloat(s.lineHeight)", box)
    one_line = box.size["height"]
    assert one_line < 2 * line, (one_line, line)
    # The image URL, moderation and Clear wait behind "+".
    extras = [browser.find_element(By.ID, name) for name in ("image-url", "moderate", "clear")]
    assert not any(e.is_displayed() for e in extras)
    more = browser.find_element(By.ID, "more")
    assert more.get_attribute("aria-label").startswith("More")
    more.click()
    wait(browser, lambda: all(e.is_displayed() for e in extras))
    assert more.get_attribute("aria-expanded") == "true"
    assert extras[0].get_attribute("placeholder") == "Image URL (optional)"
    more.click()
    wait(browser, lambda: not any(e.is_displayed() for e in extras))
    # Typed into, the box grows with what is typed.
    box.send_keys("one", Keys.SHIFT, Keys.ENTER, Keys.NULL, "two", Keys.SHIFT, Keys.ENTER,
                  Keys.NULL, "three")
    wait(browser, lambda: box.size["height"] >= one_line + 2 * line - 1)
    # Nothing is cut at the window's edge.
    widths = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    # The open list of chats dims what is behind it; a tap there closes it.
    browser.find_element(By.ID, "toggle-sidebar").click()
    scrim = browser.find_element(By.ID, "scrim")
    wait(browser, lambda: scrim.is_displayed())
    assert scrim.value_of_css_property("background-color") == "rgba(0, 0, 0, 0.45)"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"playground-phone-drawer-{scheme}.png"))
    tapped = browser.execute_script(
        "const e = document.elementFromPoint(window.innerWidth - 10, 400); e.click(); return e.id")
    assert tapped == "scrim"
    wait(browser, lambda: not scrim.is_displayed()
         and not browser.find_element(By.ID, "sidebar").is_displayed())
    browser.save_screenshot(str(SCREENSHOTS / f"playground-phone-composer-{scheme}.png"))
    browser.set_window_size(1280, 900)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


@pytest.mark.parametrize("width, scheme", SIZES)
def test_the_search_box_finds_chats_by_what_was_said_and_opens_them_at_the_message(
        open_proxy, browser, width, scheme):
    word = {(1280, "light"): "Zeppelin", (1280, "dark"): "Dirigible", (390, "light"): "Blimp",
            (390, "dark"): "Balloon"}[(width, scheme)]
    a, b, c = (f"search-{n}-{width}-{scheme}" for n in "abc")
    filler = [{"role": "user", "content": f"small talk {n}"} if n % 2 == 0 else
              {"role": "assistant", "content": f"more small talk {n}"} for n in range(12)]
    post_json(f"{open_proxy.url}/chats/import", {"id": a, "messages": filler + [
        {"role": "user", "content": "What flew over the harbour?"},
        {"role": "assistant", "content": f"A {word}, slowly, at dawn."}] + filler})
    post_json(f"{open_proxy.url}/chats/import", {"id": b, "title": f"{word.lower()} notes",
        "messages": [{"role": "user", "content": "nothing to see"},
                     {"role": "assistant", "content": "indeed"}]})
    post_json(f"{open_proxy.url}/chats/import", {"id": c, "messages": [
        {"role": "user", "content": "an airship?"}, {"role": "assistant", "content": "no"}]})
    at_size(browser, width, scheme)
    browser.set_window_size(width, 700)
    open_page(browser, open_proxy, f"#chat={c}")
    wait(browser, lambda: a in chat_items(browser))
    open_chats(browser, width)
    box = browser.find_element(By.ID, "search")
    box.send_keys(word.swapcase())
    hits = lambda: browser.execute_script(
        "return [...document.querySelectorAll('#hits li')].map((li) => li.dataset.id)")
    wait(browser, lambda: hits() == [b, a])
    assert not browser.find_element(By.ID, "chats").is_displayed()
    # Each hit says where: the message's words around the match, the match marked.
    snippets = texts_of(browser, "#hits .snippet")
    assert snippets[0] == "in its title"
    assert f"{word}, slowly" in snippets[1], snippets
    assert texts_of(browser, f"#hits li[data-id='{a}'] mark") == [word]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"playground-search-{width}-{scheme}.png"))
    # A hit opens its chat at the message.
    browser.find_element(By.CSS_SELECTOR, f"#hits li[data-id='{a}'] a").click()
    wait(browser, lambda: f"#chat={a}" in browser.current_url and len(replies(browser)) == 13)
    found = browser.find_element(By.CSS_SELECTOR, "#messages li.found")
    assert found.get_attribute("data-index") == "13"
    assert word in found.text
    assert browser.execute_script("""const r = arguments[0].getBoundingClientRect(),
        v = document.getElementById('conversation').getBoundingClientRect();
        return r.top >= v.top && r.bottom <= v.bottom""", found)
    # Nothing found says so; Escape goes back to the chats.
    open_chats(browser, width)
    box.clear()
    box.send_keys("no chat says this at all")
    wait(browser, lambda: "No chat says" in browser.find_element(By.ID, "found-hint").text)
    assert hits() == []
    box.send_keys(Keys.ESCAPE)
    wait(browser, lambda: browser.find_element(By.ID, "chats").is_displayed())
    assert not browser.find_element(By.ID, "found").is_displayed()
    browser.set_window_size(1280, 900)
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


@pytest.mark.parametrize("width, scheme", SIZES)
def test_a_chat_is_shared_as_a_read_only_link_and_revoked(open_proxy, browser, width, scheme):
    chat = f"to-share-{width}-{scheme}"
    post_json(f"{open_proxy.url}/chats/import", {"id": chat, "title": "A trip to share",
        "messages": [{"role": "user", "content": "Plan a day in Porto"},
                     {"role": "assistant", "content": MARKDOWN},
                     {"role": "user", "content": "And something nasty"},
                     {"role": "assistant", "content": HOSTILE}]})
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                            {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
    browser.set_window_size(width, 844)
    open_page(browser, open_proxy, f"#chat={chat}")
    wait(browser, lambda: len(replies(browser)) == 2)
    # Share makes a link, shown once, and lists it.
    browser.find_element(By.ID, "share").click()
    dialog = browser.find_element(By.ID, "share-dialog")
    wait(browser, lambda: dialog.is_displayed())
    browser.find_element(By.ID, "make-link").click()
    link = browser.find_element(By.ID, "link")
    wait(browser, lambda: "#shared=" in (link.get_attribute("value") or ""))
    url = link.get_attribute("value")
    token = url.split("#shared=")[1]
    assert url.startswith(f"{open_proxy.url}/playground#shared=") and len(token) == 43, url
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#links li")) == 1)
    browser.find_element(By.ID, "close-share").click()
    # Later turns are not in it.
    post_json(f"{open_proxy.url}/{chat}/chat", {"content": "a later question"})
    # Opened by anyone with the link: the snapshot, read-only, its Markdown as safe.
    browser.get(url)
    wait(browser, lambda: len(replies(browser)) == 2)
    assert browser.find_element(By.ID, "title").text == "A trip to share"
    assert "read-only" in browser.find_element(By.ID, "shared-banner").text
    for hidden in ("sidebar", "composer", "share"):
        assert not browser.find_element(By.ID, hidden).is_displayed(), hidden
    # No actions on its messages (a code block keeps its Copy).
    assert browser.find_elements(By.CSS_SELECTOR, "#messages .actions") == []
    assert {b.get_attribute("class") for b in browser.find_elements(
        By.CSS_SELECTOR, "#messages button")} == {"copy-code"}
    assert texts_of(browser, "#messages li.user .content") == ["Plan a day in Porto",
                                                               "And something nasty"]
    first = browser.find_elements(By.CSS_SELECTOR, "#messages li.assistant .content")[0]
    assert first.find_element(By.TAG_NAME, "strong").text == "bold"
    for tag in ["script", "img", "iframe", "svg", "form"]:
        assert browser.find_elements(By.CSS_SELECTOR, f"#messages {tag}") == [], tag
    assert browser.execute_script("return window.__xss") is None
    only_own_origin(browser, open_proxy)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"playground-shared-{width}-{scheme}.png"))
    # Revoked by its owner, it no longer opens.
    open_page(browser, open_proxy, f"#chat={chat}")
    wait(browser, lambda: len(replies(browser)) == 3)
    browser.find_element(By.ID, "share").click()
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#links li")) == 1)
    browser.find_element(By.CSS_SELECTOR, "#links button.revoke").click()
    wait(browser, lambda: browser.find_element(By.ID, "no-links").is_displayed())
    browser.get(url)
    wait(browser, lambda: "This link does not open" in browser.find_element(By.ID, "error").text)
    assert "expired or been revoked" in browser.find_element(By.ID, "error").text
    assert replies(browser) == []
    browser.set_window_size(1280, 900)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    only_own_origin(browser, open_proxy)
    # The revoked link's 404 is the one console error, and expected.
    assert all("404" in e["message"] for e in console_errors(browser)), console_errors(browser)


@pytest.mark.parametrize("width, scheme", SIZES)
def test_the_model_picker_offers_the_allowed_models_and_is_remembered_per_chat(
        open_proxy, browser, width, scheme):
    allowed = sorted(m["id"] for m in get_json(f"{open_proxy.url}/v1/models")["data"])
    assert allowed, "the proxy offers its configured model"
    at_size(browser, width, scheme)
    open_page(browser, open_proxy, f"#chat=picked-{width}-{scheme}")
    assert browser.find_element(By.ID, "model").is_displayed()
    picker = lambda: browser.find_element(By.ID, "model")
    options = lambda: browser.execute_script(
        "return [...document.getElementById('model').options].map((o) => [o.value, o.text])")
    wait(browser, lambda: len(options()) == len(allowed) + 1)
    assert options() == [["", "Default model"]] + [[m, m] for m in allowed]
    # What the page sends, as it sends it.
    browser.execute_script("""window.__sent = []; const send = window.fetch;
        window.fetch = (url, init) => { if (init && init.body) window.__sent.push(JSON.parse(init.body));
            return send(url, init); };""")
    choice = allowed[-1]
    Select(picker()).select_by_value(choice)
    send(browser, "which model?")
    wait(browser, lambda: send_button(browser).text == "Send" and len(replies(browser)) == 1)
    sent = browser.execute_script("return window.__sent")
    assert sent[-1] == {"content": "which model?", "stream": True, "model": choice}, sent
    # Remembered for this chat, after a reload; a new chat starts with the default.
    browser.refresh()
    wait(browser, lambda: len(options()) > 1 and picker().get_attribute("value") == choice)
    open_chats(browser, width)
    browser.find_element(By.ID, "new-chat").click()
    wait(browser, lambda: picker().get_attribute("value") == "")
    browser.set_window_size(1280, 900)
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


@pytest.mark.parametrize("width, scheme", SIZES)
def test_the_chat_id_and_the_prompts_live_in_a_settings_panel(open_proxy, browser, width, scheme):
    at_size(browser, width, scheme)
    open_page(browser, open_proxy, f"#chat=settings-{width}-{scheme}")
    # Not in the list of chats any more, but behind Settings.
    for field in ("chat-id", "chat-prompt", "global-prompt"):
        assert not browser.find_element(By.ID, field).is_displayed(), field
    open_chats(browser, width)
    gear = browser.find_element(By.ID, "open-settings")
    assert gear.get_attribute("aria-label").startswith("Settings")
    gear.click()
    panel = browser.find_element(By.ID, "settings")
    wait(browser, lambda: panel.is_displayed())
    assert all(browser.find_element(By.ID, f).is_displayed()
               for f in ("chat-id", "chat-prompt", "global-prompt"))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"playground-settings-{width}-{scheme}.png"))
    # Opening a chat by its id closes the panel and opens the chat.
    field = browser.find_element(By.ID, "chat-id")
    field.clear()
    field.send_keys(f"by-id-{width}-{scheme}", Keys.ENTER)
    wait(browser, lambda: not panel.is_displayed() and f"#chat=by-id-{width}-{scheme}" in browser.current_url)
    # Escape closes it too, as any dialog.
    open_chats(browser, width)
    browser.find_element(By.ID, "open-settings").click()
    wait(browser, lambda: panel.is_displayed())
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    wait(browser, lambda: not panel.is_displayed())
    browser.set_window_size(1280, 900)
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


def in_view(driver, element):
    """Whole within the window's width: nothing of it cut at the edge."""
    return driver.execute_script("""const r = arguments[0].getBoundingClientRect();
        return r.width > 0 && r.left >= 0 && r.right <= document.documentElement.clientWidth""",
                                 element)


@pytest.mark.parametrize("width, scheme", SIZES)
def test_a_new_chat_can_be_temporary_and_says_so_and_is_never_listed(open_proxy, browser, width,
                                                                      scheme):
    secret = f"between us {width} {scheme}"
    at_size(browser, width, scheme)
    open_page(browser, open_proxy)
    toggle = browser.find_element(By.ID, "temporary")
    banner = browser.find_element(By.ID, "temporary-banner")
    # A new chat offers the toggle, off; a labelled icon.
    wait(browser, lambda: toggle.is_displayed())
    assert in_view(browser, toggle)
    assert toggle.get_attribute("aria-pressed") == "false"
    assert toggle.get_attribute("aria-label").startswith("Temporary chat")
    assert toggle.find_elements(By.TAG_NAME, "svg") and toggle.text == ""
    assert not banner.is_displayed()
    toggle.click()
    wait(browser, lambda: banner.is_displayed())
    assert toggle.get_attribute("aria-pressed") == "true"
    assert "not in your chats or search" in banner.text
    send(browser, secret)
    wait(browser, lambda: len(replies(browser)) == 1 and answered(browser))
    # The proxy made it (its id is the proxy's), and keeps it as temporary.
    chat = browser.execute_script("return decodeURIComponent(location.hash.slice(6))")
    assert chat.startswith("temp-"), chat
    with urllib.request.urlopen(f"{open_proxy.url}/{chat}/chat") as read:
        assert read.headers["X-Chat-Temporary"] == "3600"
        assert json.load(read)[0]["content"] == secret
    wait(browser, lambda: "deleted an hour after its last message" in banner.text)
    assert browser.find_element(By.ID, "title").text == "Temporary chat"
    assert not browser.find_element(By.ID, "share").is_displayed()
    assert toggle.get_attribute("aria-pressed") == "true" and not toggle.is_enabled()
    assert in_view(browser, banner)
    # Never listed, never found.
    listed = [c["id"] for c in get_json(f"{open_proxy.url}/chats?limit=100")["chats"]]
    assert chat not in listed
    found = get_json(f"{open_proxy.url}/chats?q={urllib.parse.quote(secret)}")
    assert found["chats"] == []
    open_chats(browser, width)
    assert chat not in chat_items(browser)
    browser.find_element(By.ID, "search").send_keys(secret)
    wait(browser, lambda: "No chat says" in browser.find_element(By.ID, "found-hint").text)
    browser.find_element(By.ID, "search").send_keys(Keys.ESCAPE)
    if width < 720:
        browser.find_element(By.ID, "close-sidebar").click()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"playground-temporary-{width}-{scheme}.png"))
    # A reload says so still.
    browser.refresh()
    banner = browser.find_element(By.ID, "temporary-banner")
    wait(browser, lambda: len(replies(browser)) == 1 and banner.is_displayed())
    assert "deleted an hour after" in banner.text
    assert browser.find_element(By.ID, "title").text == "Temporary chat"
    # Other lifetimes (TEMPORARY_CHAT_SECONDS) as the banner says them.
    assert browser.execute_script(
        "return [3600, 7200, 300, 60, 86400, 90, 1].map(lasting)") == [
        "an hour", "2 hours", "5 minutes", "a minute", "a day", "90 seconds", "a second"]
    # A new chat is kept again unless the toggle is pressed: off, its first message makes a
    # chat that is listed.
    open_chats(browser, width)
    browser.find_element(By.ID, "new-chat").click()
    toggle = browser.find_element(By.ID, "temporary")
    wait(browser, lambda: toggle.is_displayed() and toggle.is_enabled())
    assert toggle.get_attribute("aria-pressed") == "false"
    assert not banner.is_displayed()
    send(browser, f"keep this one {width} {scheme}")
    wait(browser, lambda: len(replies(browser)) == 1 and answered(browser))
    kept = browser.execute_script("return decodeURIComponent(location.hash.slice(6))")
    assert not kept.startswith("temp-")
    wait(browser, lambda: kept in [c["id"] for c in get_json(f"{open_proxy.url}/chats")["chats"]])
    wait(browser, lambda: not toggle.is_displayed())
    browser.set_window_size(1280, 900)
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


def test_a_temporary_chat_that_expired_is_never_written_to_again(open_proxy, browser):
    open_page(browser, open_proxy)
    toggle = browser.find_element(By.ID, "temporary")
    wait(browser, lambda: toggle.is_displayed())
    toggle.click()
    send(browser, "soon gone")
    wait(browser, lambda: len(replies(browser)) == 1 and answered(browser))
    gone = browser.execute_script("return decodeURIComponent(location.hash.slice(6))")
    assert gone.startswith("temp-"), gone
    # It expires (here: its owner deletes it, which the page cannot tell apart).
    post_json(f"{open_proxy.url}/{gone}", {}, method="DELETE")
    send(browser, "are you still there")
    error = browser.find_element(By.ID, "error")
    wait(browser, lambda: "expired" in error.text)
    # Nothing was sent to the old id; a new chat stands in its place, to be temporary, with
    # the draft kept.
    assert get_json(f"{open_proxy.url}/{gone}/chat") == []
    fresh = browser.execute_script("return decodeURIComponent(location.hash.slice(6))")
    assert fresh != gone
    assert browser.find_element(By.ID, "message").get_attribute("value") == "are you still there"
    assert browser.find_element(By.ID, "temporary").get_attribute("aria-pressed") == "true"
    browser.find_element(By.ID, "message").send_keys(Keys.ENTER)
    wait(browser, lambda: len(replies(browser)) == 1 and answered(browser))
    made = browser.execute_script("return decodeURIComponent(location.hash.slice(6))")
    assert made.startswith("temp-") and made != gone, made
    listed = [c["id"] for c in get_json(f"{open_proxy.url}/chats?limit=100")["chats"]]
    assert gone not in listed and made not in listed and fresh not in listed
    only_own_origin(browser, open_proxy)
    assert console_errors(browser) == []


def test_screenshots(open_proxy, browser):
    """docs/playground.md's screenshots (`make screenshots` writes them to docs/), at a desktop's
    width and a phone's."""
    post_json(f"{open_proxy.url}/chats/import", {"id": "lisbon", "title": "Three days in Lisbon",
        "messages": [
        {"role": "user", "content": "Plan three days in Lisbon, briefly."},
        {"role": "assistant", "content": (
            "**Day 1: Alfama and Baixa**\n\n- Castelo de São Jorge in the morning\n"
            "- Tram 28 down to Baixa\n\n**Day 2: Belém**\n\n| sight | opens |\n|---|---|\n"
            "| Jerónimos Monastery | 09:30 |\n| Belém Tower | 10:00 |\n\n"
            "Check opening times with `curl`:\n\n```sh\ncurl -s https://www.visitlisboa.com\n```")},
    ]})
    post_json(f"{open_proxy.url}/chats/import", {"id": "recipes", "title": "Pastéis de nata",
        "messages": [{"role": "user", "content": "How do I bake pastéis de nata?"},
                     {"role": "assistant", "content": "Puff pastry, custard, a very hot oven."}]})
    open_page(browser, open_proxy, "#chat=lisbon")
    wait(browser, lambda: len(replies(browser)) == 1 and "lisbon" in chat_items(browser))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "playground-desktop.png"))
    browser.set_window_size(360, 780)
    wait(browser, lambda: browser.find_element(By.ID, "toggle-sidebar").is_displayed())
    browser.save_screenshot(str(SCREENSHOTS / "playground-phone.png"))
    browser.find_element(By.ID, "toggle-sidebar").click()
    wait(browser, lambda: browser.find_element(By.ID, "sidebar").is_displayed())
    browser.save_screenshot(str(SCREENSHOTS / "playground-phone-chats.png"))
    browser.set_window_size(1280, 900)
    assert console_errors(browser) == []
