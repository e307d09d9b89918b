"""The web app in a real headless browser (Debian's chromium + chromium-driver, driven by Selenium),
network off: create a task from the bundled intent data through the form, run it with a fake model,
watch the progress reach the end, open the report, and chat in the playground.

Needs `apt-get install -y chromium chromium-driver` and selenium (the `test` extra); skipped without
them. Nothing is downloaded: the driver path is given, so Selenium Manager never runs. Set
TUNEWISE_SCREENSHOTS=/some/folder to keep a screenshot of every page.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import EXAMPLES
from tunewise.serve.server import BackgroundServer
from tunewise.web.app import build_web_app

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
DRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
TOKEN = "browser-token-123"
TESTS = Path(__file__).resolve().parent

if not (CHROMIUM and DRIVER):
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install 'tunewise[test]')")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--disable-default-apps", f"--user-data-dir={tmp_path / 'chromium'}",
        "--proxy-server=127.0.0.1:9",  # every non-loopback request fails: nothing is fetched from outside
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def server(isolated, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEWISE_WEB_TEST_MODEL", "test_web_fakes:fake_run_options")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    with BackgroundServer(build_web_app(TOKEN, cwd=tmp_path)) as running:
        yield running


class Shots:
    """Full-page screenshots, kept when TUNEWISE_SCREENSHOTS names a folder."""

    def __init__(self, driver, folder: Path) -> None:
        self.driver, self.folder = driver, folder
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> Path:
        height = self.driver.execute_script("return Math.max(document.body.scrollHeight, 900)")
        self.driver.set_window_size(1280, min(height + 140, 4000))
        path = self.folder / f"{name}.png"
        assert self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1280, 900)
        return path


def test_from_the_form_to_the_playground(browser, server, tmp_path):
    shots = Shots(browser, Path(os.environ.get("TUNEWISE_SCREENSHOTS") or tmp_path / "shots"))
    wait = WebDriverWait(browser, 60)
    by_id = lambda name: browser.find_element(By.ID, name)  # noqa: E731

    browser.get(f"{server.url}/?token={TOKEN}")
    assert browser.current_url == f"{server.url}/new"  # the token became a cookie and left the URL
    shots("1-new")

    # New decision: the bundled intent data uploaded through the form, the audit, answers that move
    # the advice and the cost.
    for field, name in (("train", "train.jsonl"), ("eval", "eval.jsonl")):
        browser.find_element(By.CSS_SELECTOR, f"input[type=file][data-target={field}]").send_keys(str(EXAMPLES / "intent" / name))
        wait.until(lambda b: b.find_element(By.ID, field).get_attribute("value").endswith(name))
        assert "/web/uploads/" in by_id(field).get_attribute("value")  # stored in the app's own folder
    assert "uploaded" in by_id("upload-status").text
    by_id("check-data").click()
    wait.until(EC.presence_of_element_located((By.ID, "decision-form")))
    audit = by_id("audit").text
    assert "493 examples" in audit and "200 held out" in audit
    assert Select(by_id("metric")).first_selected_option.get_attribute("value") == "accuracy"
    calls = by_id("calls_per_month")
    calls.clear()
    calls.send_keys("2000000")
    by_id("requirements_change").click()  # leave the text box: its change event fires
    Select(by_id("requirements_change")).select_by_value("yearly")
    wait.until(EC.text_to_be_present_in_element((By.ID, "advice-panel"), "Cost at 2,000,000 calls/month"))
    shots("2-setup")
    lora = browser.find_element(By.CSS_SELECTOR, "input[name=rungs][value=lora]")
    if lora.is_selected():
        lora.click()  # no training in a browser test
    name = by_id("name")
    name.clear()
    name.send_keys("intent-browser")
    by_id("save-task").click()

    # Run: start it, watch the live progress reach the end.
    wait.until(EC.presence_of_element_located((By.ID, "saved")))
    assert "intent-browser" in by_id("saved").text
    shots("3-run")
    limit = by_id("limit")
    limit.clear()
    limit.send_keys("40")
    by_id("start-run").click()
    wait.until(EC.presence_of_element_located((By.ID, "job-progress")))
    wait.until(EC.text_to_be_present_in_element((By.ID, "job-status"), "finished"))
    progress = by_id("job-progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") != "0"
    assert by_id("job-decision").text
    assert "Few-shot" in by_id("job-rung").text  # the last rung the events named
    shots("4-job")

    # Runs: the report of this run, its answers side by side.
    by_id("open-report").click()
    wait.until(EC.presence_of_element_located((By.ID, "report-frame")))
    run_url = browser.current_url
    shots("5-run-detail")
    browser.switch_to.frame(by_id("report-frame"))
    verdict = WebDriverWait(browser, 30).until(EC.presence_of_element_located((By.ID, "verdict")))
    assert "Zero-shot" in verdict.text or "Few-shot" in verdict.text
    browser.switch_to.default_content()
    by_id("answers-link").click()
    wait.until(EC.presence_of_element_located((By.ID, "answers")))
    assert browser.find_elements(By.CSS_SELECTOR, "#answers td.gold")
    shots("6-answers")
    browser.get(f"{server.url}/runs")
    assert "intent-browser" in by_id("runs").text
    shots("7-runs")
    run_id = run_url.rsplit("/", 1)[-1]
    browser.get(f"{server.url}/compare?a={run_id}&b={run_id}")
    assert by_id("compare").text
    shots("8-compare")

    # Playground: one message, the rung's answer.
    browser.get(f"{server.url}/playground?run={run_id}")
    wait.until(EC.presence_of_element_located((By.ID, "chat-form")))
    by_id("message").send_keys("what is the weather forecast for Berlin")
    by_id("send").click()
    answer = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#chat .turn.assistant")))
    assert answer.text == "get_weather"
    assert by_id("message").get_attribute("value") == ""  # cleared for the next message
    shots("9-playground")
