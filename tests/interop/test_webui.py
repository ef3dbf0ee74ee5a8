"""The chat page at GET / in headless Chromium (Selenium + Debian's chromium-driver): it
shows the model name, streams a reply into the conversation, shows the thinking block
collapsible, reports tokens/s, stops a reply with the Stop button, and keeps the history
for the next turn. Screenshots land in the pytest tmp dir. Skips without Chromium."""
import shutil
import time

import pytest
import requests

from conftest import RUN, start_server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not RUN.exists():
        pytest.skip(f"{RUN} not built")
    srv = start_server(tmp_path_factory.mktemp("webui-server"), "--parallel", "2", "--ctx-size", "2048")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMEDRIVER and CHROMIUM):
        pytest.skip("chromium / chromedriver not installed (Debian: chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1100,800"):
        opts.add_argument(arg)
    try:
        drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    except Exception as e:  # a broken browser install is an environment problem, not ours
        pytest.skip(f"cannot start headless chromium: {e}")
    yield drv
    drv.quit()


def wait(drv, cond, timeout=30):
    return WebDriverWait(drv, timeout, poll_frequency=0.05).until(lambda d: cond(d))


def bubbles(drv, role):
    return drv.find_elements(By.CSS_SELECTOR, f".msg.{role}")


def type_and_send(drv, text):
    box = drv.find_element(By.ID, "input")
    box.send_keys(text)
    drv.find_element(By.ID, "send").click()


def test_chat_page_streams_a_reply(server, browser, tmp_path):
    drv = browser
    drv.get(server.url + "/")
    wait(drv, lambda d: d.find_element(By.ID, "model").text.startswith("tiny-qwen3"))
    drv.find_element(By.ID, "max_tokens").clear()
    drv.find_element(By.ID, "max_tokens").send_keys("60")

    type_and_send(drv, "How do I list files?")
    wait(drv, lambda d: len(bubbles(d, "assistant")) == 1)
    # text appears while the reply is still streaming (the cursor is shown), then completes
    first = wait(drv, lambda d: d.find_element(By.CSS_SELECTOR, ".msg.assistant .content").text or None)
    meta = wait(drv, lambda d: d.find_element(By.CSS_SELECTOR, ".msg.assistant .meta").text or None)
    reply = drv.find_element(By.CSS_SELECTOR, ".msg.assistant .content").text
    assert first and reply.startswith(first.strip()[:5])
    assert "60 tokens" in meta and "tok/s" in meta and "finish: length" in meta
    assert "tok/s" in drv.find_element(By.ID, "stats").text
    assert bubbles(drv, "user")[0].text == "How do I list files?"
    drv.save_screenshot(str(tmp_path / "webui-reply.png"))

    # a second turn carries the history: the server sees both turns in its prompt
    type_and_send(drv, "And hidden ones?")
    wait(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant .meta")) == 2)
    assert len(bubbles(drv, "user")) == 2
    history = drv.execute_script("return state.messages")
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    drv.save_screenshot(str(tmp_path / "webui-two-turns.png"))


def test_thinking_block_and_stop_button(server, browser, tmp_path):
    drv = browser
    drv.get(server.url + "/")
    wait(drv, lambda d: d.find_element(By.ID, "model").text.startswith("tiny-qwen3"))
    # A reply with reasoning, forced through the server's test hook (the tiny model does not
    # think on its own): the page's fetch body gets the hook field added.
    drv.execute_script("""
      const orig = window.fetch;
      window.fetch = (url, init) => {
        if (url === '/v1/chat/completions' && (window.__forced || window.__delay)) {
          const b = JSON.parse(init.body);
          if (window.__forced) b.lp_test_output = window.__forced;
          if (window.__delay) b.lp_test_delay_ms = window.__delay;
          init.body = JSON.stringify(b);
        }
        return orig(url, init);
      };
      window.__forced = '<think>\\nThe user wants a greeting.\\n</think>\\n\\nHello!';
    """)
    type_and_send(drv, "Say hello")
    wait(drv, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant .meta"))
    think = drv.find_element(By.CSS_SELECTOR, ".msg.assistant details.think")
    assert think.get_attribute("open") is None  # collapsed once the answer started
    assert drv.find_element(By.CSS_SELECTOR, ".msg.assistant .content").text == "Hello!"
    think.find_element(By.TAG_NAME, "summary").click()
    assert "The user wants a greeting." in think.text
    drv.save_screenshot(str(tmp_path / "webui-thinking.png"))

    # Stop: a long reply is aborted from the page and the server frees the slot (each token
    # held 20 ms: at full speed the tiny model can end its reply before a loaded machine's
    # browser clicks)
    drv.execute_script("window.__forced = null; window.__delay = 20;")
    drv.find_element(By.ID, "max_tokens").clear()
    drv.find_element(By.ID, "max_tokens").send_keys("1900")
    type_and_send(drv, "Write a lot")
    wait(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant .content")) == 2 and
         d.find_elements(By.CSS_SELECTOR, ".msg.assistant .content")[1].text)
    drv.find_element(By.ID, "stop").click()
    meta = wait(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant .meta")) == 2 and
                d.find_elements(By.CSS_SELECTOR, ".msg.assistant .meta")[1].text)
    assert "finish: stopped" in meta
    deadline = time.time() + 5
    while requests.get(server.url + "/health", timeout=5).json()["slots_busy"] and time.time() < deadline:
        time.sleep(0.05)
    assert requests.get(server.url + "/health", timeout=5).json()["slots_busy"] == 0
    drv.save_screenshot(str(tmp_path / "webui-stopped.png"))
