"""The playground page in a real browser: Debian's chromium, driven through chromium-driver
by Selenium, against the function under the Lambda emulator with the echo upstream (which
streams word by word)."""

import http.client
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from conftest import CALLERS, ROOT

# Screenshots land in target/ so a test run leaves the tree clean; `make screenshots`
# writes the README's copies in docs/.
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


def wait(driver, condition, seconds=10):
    return WebDriverWait(driver, seconds, poll_frequency=0.02).until(lambda _: condition())


def get_json(url, headers=None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as answer:
        return json.load(answer)


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def replies(driver):
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#messages li.assistant .content")]


def open_page(driver, proxy, fragment=""):
    driver.get(f"{proxy.url}/playground{fragment}")
    wait(driver, lambda: driver.execute_script("return document.readyState") == "complete")


def send(driver, text):
    box = driver.find_element(By.ID, "message")
    box.clear()
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def test_the_page_is_served_whole_safe_and_cached(open_proxy):
    with urllib.request.urlopen(f"{open_proxy.url}/playground") as page:
        body = page.read().decode()
        headers = page.headers
    assert '<label for="message">Message</label>' in body
    assert '<label for="chat-id">Chat id</label>' in body
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
    browser.find_element(By.ID, "new-chat").click()
    wait(browser, lambda: "#chat=chat-" in browser.current_url)
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
    wait(browser, lambda: "tokens" in browser.find_element(By.CSS_SELECTOR, "#messages li.assistant .meta").text)
    wait(browser, lambda: "1 turns" in browser.find_element(By.ID, "usage").text)

    # The history is the proxy's: a reload shows it.
    browser.refresh()
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#messages li")) == 2)
    assert replies(browser) == [final]

    # Prompts are set through the page and kept by the proxy.
    browser.find_element(By.CSS_SELECTOR, "#prompts summary").click()
    prompt = browser.find_element(By.ID, "chat-prompt")
    prompt.clear()
    prompt.send_keys("Answer like a pirate.")
    browser.find_element(By.ID, "save-chat-prompt").click()
    wait(browser, lambda: "saved" in browser.find_element(By.ID, "status").text)
    assert get_json(f"{open_proxy.url}/{chat}/system") == {"content": "Answer like a pirate."}

    # Screenshots for the README, at a desktop's width and a phone's.
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "playground-desktop.png"))
    browser.set_window_size(360, 780)
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 360, f"the page scrolls sideways at 360 px: {width}"
    browser.save_screenshot(str(SCREENSHOTS / "playground-phone.png"))
    browser.set_window_size(1280, 900)

    browser.find_element(By.ID, "clear").click()
    wait(browser, lambda: not browser.find_elements(By.CSS_SELECTOR, "#messages li"))
    assert get_json(f"{open_proxy.url}/{chat}/chat") == []
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
    streams on as they come."""

    def __init__(self, upstream):
        self.paths = []
        prefix = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def relay(self):
                prefix.paths.append(self.path)
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
        box.send_keys(Keys.ENTER)
        wait(browser, lambda: replies(browser) and replies(browser)[-1].endswith("(2 messages)"))
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
        browser.find_element(By.CSS_SELECTOR, "#prompts summary").click()
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
