"""The example page in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven through selenium) against ``python -m flask_example`` with its
embedded demo server. The page shows "connected"; "Stop server" turns the state to not
connected; messages sent meanwhile are queued; "Start server" drains the queue and the
demo server's echoes of them appear in the page's list. Everything on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .support import free_port, http, t, wait_http

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "example-page.png"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(f"no headless Chromium: {CHROMIUM} and {CHROMEDRIVER} come from Debian's chromium and "
                "chromium-driver (.ci/run installs them)", allow_module_level=True)

from selenium.webdriver.chrome.service import Service as ChromeService  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1000,1200", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    service = ChromeService(executable_path=CHROMEDRIVER, port=free_port(),
                                      service_args=["--allowed-ips=127.0.0.1"])
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(t(30))
    driver.set_script_timeout(t(10))
    try:
        yield driver
    finally:
        driver.quit()  # chromium and its children, then chromedriver (service.stop)
        process = getattr(service, "process", None)
        if process is not None and process.poll() is None:  # still there: by its PID
            process.kill()
            process.wait(t(10))


def text_of(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def wait(driver, seconds: float, predicate, message: str):
    return WebDriverWait(driver, t(seconds), poll_frequency=0.1).until(lambda d: predicate(d), message)


def test_stop_and_start_the_demo_server_from_the_page(procs, tmp_path, browser):
    port = free_port()
    app = procs([sys.executable, "-m", "flask_example"], PORT=str(port), HERMES_WS_URL="",
                HERMES_OUTBOX_PATH=str(tmp_path / "outbox.db"))
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/status", t(30))

    browser.get(f"{base}/")
    wait(browser, 15, lambda d: text_of(d, "conn") == "connected", "the page never showed 'connected'")
    wait(browser, 10, lambda d: text_of(d, "demo-state") == "running", "the demo server is not shown running")
    assert browser.find_element(By.ID, "chart").tag_name == "svg"
    wait(browser, 10, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chart polyline")) == 3, "no chart lines")
    wait(browser, 10, lambda d: "notification: tick" in text_of(d, "messages"), "no tick from the demo server")

    browser.find_element(By.XPATH, "//button[normalize-space()='Stop server']").click()
    wait(browser, 15, lambda d: text_of(d, "conn") == "not connected"
         and text_of(d, "state") not in ("connected", ""), "the state did not change after 'Stop server'")
    wait(browser, 10, lambda d: text_of(d, "demo-state") == "stopped", "the demo server is not shown stopped")

    sent = [f"while stopped {i}" for i in range(3)]
    field = browser.find_element(By.CSS_SELECTOR, "#notify input[name=message]")
    for i, text in enumerate(sent, 1):
        field.send_keys(text)
        browser.find_element(By.CSS_SELECTOR, "#notify button").click()
        wait(browser, 10, lambda d: int(text_of(d, "queued")) >= i, f"the queued count did not reach {i}")
        wait(browser, 5, lambda d: field.get_attribute("value") == "", "the form was not reset")
    assert int(text_of(browser, "queued")) == len(sent), http("GET", f"{base}/status")

    browser.find_element(By.XPATH, "//button[normalize-space()='Start server']").click()
    wait(browser, 30, lambda d: text_of(d, "conn") == "connected", "no reconnect after 'Start server'")
    wait(browser, 15, lambda d: text_of(d, "queued") == "0", "the queued count did not drain")
    wait(browser, 15, lambda d: all(f"echo: {text}" in text_of(d, "messages") for text in sent),
         "the echoes of the queued messages never appeared in the page's list")
    # the recovery: the chart's red gap, the queue's rise and fall, the echoes. With
    # UPDATE_SCREENSHOT=1 it becomes the README's docs/example-page.png (a plain run leaves
    # the work tree alone).
    assert browser.save_screenshot(str(tmp_path / "recovery.png"))
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "recovery.png", SCREENSHOT)
    status = http("GET", f"{base}/status")
    assert status["connected"] and status["queue_size"] == 0 and status["demo_running"] is True, status
    assert f"open http://127.0.0.1:{port}/" in app.text()


def test_demo_buttons_only_with_the_embedded_server(server, procs):
    """With HERMES_WS_URL set there is no demo server: no buttons, and the endpoints answer 404."""
    port = free_port()
    procs([sys.executable, "-m", "flask_example"], PORT=str(port), HERMES_WS_URL=server.url, HERMES_OUTBOX_PATH="")
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/status", t(30))
    with urllib.request.urlopen(f"{base}/", timeout=t(5)) as page:
        html = page.read().decode()
    assert "Stop server" not in html and "Start server" not in html and 'id="chart"' in html
    for action in ("stop", "start"):
        with pytest.raises(urllib.error.HTTPError) as error:
            http("POST", f"{base}/demo/{action}")
        assert error.value.code == 404
