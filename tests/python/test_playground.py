"""The playground page in a real browser: Debian's chromium, driven through chromium-driver
by Selenium, against the function under the Lambda emulator with the echo upstream (which
streams word by word)."""

import json
import os
import shutil
import tempfile
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
    assert CALLERS["alice"] not in browser.current_url
    assert browser.get_cookies() == []
    headers = {"Authorization": f"Bearer {CALLERS['alice']}"}
    assert len(get_json(f"{proxy.url}/keyed/chat", headers)) == 2
