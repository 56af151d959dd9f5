"""The dashboard in a real browser: headless Chromium (Selenium) against ``pgqueue dashboard`` and
``pgqueue work`` running as real processes on a real database. The run also saves the
screenshots the README shows (docs/images/dashboard-*.png)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

import pgqueue

from .conftest import XSS, free_port

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent.parent / "docs" / "images"
TOKEN = "browser-test-token"

pytestmark = pytest.mark.timeout(150)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not _holds(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _holds(condition: Callable[[], object]) -> object:
    """The condition; false while the live refresh swaps the element read out of the page."""
    try:
        return condition()
    except StaleElementReferenceException:
        return False


def _env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_") and k != "DATABASE_URL"}
    return {**env, "PGQUEUE_DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def processes(dsn: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", *args],
            cwd=HERE,
            env={**_env(dsn), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=5)


def dashboard(
    start: Callable[..., subprocess.Popen[str]], *flags: str, env: dict[str, str] | None = None
) -> str:
    port = free_port()
    process = start("dashboard", "--port", str(port), *flags, env=env)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, process.communicate()[0]
        try:
            return (
                httpx.get(
                    base + "/static/style.css", headers={"Authorization": f"Bearer {TOKEN}"}
                ).status_code
                > 0
            )
        except httpx.TransportError:
            return False

    wait_for(up, "the dashboard to listen")
    return base


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromedriver are missing: run tests/reliability/setup-system.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,800",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    # The window's size includes its (invisible) frame: fix the page's own size for the screenshots.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    yield driver
    driver.quit()


def no_alert(driver: webdriver.Chrome) -> bool:
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def shot(driver: webdriver.Chrome, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(IMAGES / f"dashboard-{name}.png"))


def test_the_dashboard_in_a_browser(dsn, conn, processes, browser):
    app = pgqueue.App(dsn)
    try:
        _run(app, dsn, conn, processes, browser)
    finally:
        app.close()


def _run(app, dsn, conn, processes, browser):
    processes("work", "dashboard_app:app", "--poll-interval", "0.2", "--concurrency", "4")
    app.enqueue_many([("send-email", {"to": f"user{i}@example.com"}, {"queue": "emails"}) for i in range(40)])
    charges = app.enqueue_many(
        [("charge-card", {"order": 1000 + i}, {"queue": "billing", "max_attempts": 1}) for i in range(3)]
    )
    xss = app.enqueue("render", {"html": XSS}, queue="emails", delay=3600)
    app.enqueue_many(
        [("send-email", {"to": f"later{i}@example.com"}, {"queue": "emails", "delay": 600}) for i in range(5)]
    )
    app.enqueue_many(
        [("resize-image", {"id": i}, {"queue": "images"}) for i in range(12)]
    )  # no worker runs this queue
    # Spread some history over the last hour, so the chart has something to show.
    conn.execute(
        "INSERT INTO pgqueue.job (type, queue, data, state, finished_at, run_at, created_at) "
        "SELECT 'send-email', 'emails', '{}'::jsonb, "
        "       CASE WHEN i % 9 = 0 THEN 'failed' ELSE 'completed' END::pgqueue.job_state, at, at, at "
        "FROM generate_series(1, 900) AS i, LATERAL (SELECT now() - make_interval(mins => i % 60)) AS t(at) "
        "WHERE (i * 7919) % 100 < 40 + (i % 60)"
    )
    conn.execute("UPDATE pgqueue.job SET run_at = now() - interval '95 seconds' WHERE queue = 'images'")
    wait_for(
        lambda: (
            conn.execute(
                "SELECT count(*) FROM pgqueue.job WHERE type = 'charge-card' AND state = 'failed'"
            ).fetchone()[0]
            == 3
            and conn.execute(
                "SELECT count(*) FROM pgqueue.job "
                "WHERE type = 'send-email' AND state < 'active' AND run_at <= now()"
            ).fetchone()[0]
            == 0
        ),
        "the worker to run the jobs",
    )

    base = dashboard(processes, env={"PGQUEUE_DASHBOARD_TOKEN": TOKEN})

    # Auth: nothing without the token; ?token= once, then the cookie.
    browser.get(base + "/")
    assert "401" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(base + f"/?token={TOKEN}")
    assert browser.current_url == base + "/"
    rows = {
        row.get_attribute("data-queue"): row.text
        for row in browser.find_elements(By.CSS_SELECTOR, "#queues tbody tr")
    }
    assert set(rows) == {"billing", "emails", "images"}
    assert rows["images"].split()[1] == "12"  # waiting
    assert browser.find_elements(By.CSS_SELECTOR, "#throughput rect.ok")
    shot(browser, "queues")

    # The worker page: the live worker.
    browser.get(base + "/workers")
    worker_rows = browser.find_elements(By.CSS_SELECTOR, "#workers tbody tr.alive")
    assert len(worker_rows) == 1 and "emails" in worker_rows[0].text
    shot(browser, "workers")

    # Filters: the failed billing jobs.
    browser.get(base + "/jobs")
    Select(browser.find_element(By.NAME, "state")).select_by_visible_text("failed")
    browser.find_element(By.NAME, "error").send_keys("gateway")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait_for(lambda: "state=failed" in browser.current_url, "the filtered list")
    shown = [
        int(row.get_attribute("data-id")) for row in browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
    ]
    assert sorted(shown) == charges
    shot(browser, "jobs")

    # The detail of a failed job; retry it from the page, and the worker runs it again.
    browser.find_element(By.LINK_TEXT, str(charges[0])).click()
    assert "payment gateway timed out for order 1000" in browser.find_element(By.ID, "attempts").text
    shot(browser, "job")
    browser.find_element(By.ID, "retry").click()
    wait_for(lambda: browser.find_elements(By.ID, "notice"), "the retry")
    assert "will run again" in browser.find_element(By.ID, "notice").text
    wait_for(
        lambda: app.get_job(charges[0]).state is pgqueue.JobState.COMPLETED, "the retried job to complete"
    )
    assert app.get_job(charges[0]).output == {"charged": 1000}

    # A form whose CSRF field was tampered with is refused, and nothing changes.
    browser.get(base + f"/jobs/{charges[1]}")
    browser.execute_script("document.querySelector('#actions input[name=csrf]').value = 'forged'")
    browser.find_element(By.ID, "retry").click()
    wait_for(lambda: browser.find_elements(By.ID, "message"), "the refusal")
    assert "CSRF" in browser.find_element(By.ID, "message").text
    assert app.get_job(charges[1]).state is pgqueue.JobState.FAILED

    # Retry by filter, after a confirmation showing the count.
    browser.get(base + "/jobs?type=charge-card&state=failed")
    browser.find_element(By.CSS_SELECTOR, "#bulk button[value=retry]").click()
    wait_for(lambda: browser.find_elements(By.ID, "count"), "the confirmation")
    assert browser.find_element(By.ID, "count").get_attribute("data-count") == "2"
    browser.find_element(By.ID, "yes").click()
    wait_for(lambda: browser.find_elements(By.ID, "notice"), "the retry by filter")
    assert "Retried 2 jobs." in browser.find_element(By.ID, "notice").text
    wait_for(
        lambda: all(app.get_job(i).state is pgqueue.JobState.COMPLETED for i in charges),
        "the retried jobs to complete",
    )

    # The job whose data is a script shows it as text, and no alert fires.
    browser.get(base + f"/jobs/{xss}")
    assert XSS in browser.find_element(By.ID, "data").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#data script")
    assert no_alert(browser)
    browser.get(base + "/jobs?queue=emails&state=created")
    assert no_alert(browser)

    # Live refresh swaps in fresh numbers without a reload.
    browser.get(base + "/")
    marker = browser.execute_script(
        "window.notReloaded = true; return document.querySelector('#live') !== null"
    )
    assert marker
    app.enqueue_many([("resize-image", {"id": i}, {"queue": "images"}) for i in range(5)])
    wait_for(
        lambda: (
            browser.find_element(By.CSS_SELECTOR, '#queues tr[data-queue="images"]').text.split()[1] == "17"
        ),
        "the live refresh",
        timeout=15,
    )
    assert browser.execute_script("return window.notReloaded === true")

    # Read-only: no actions offered, and a POST is refused.
    read_only = dashboard(processes, "--read-only", "--token", TOKEN)
    browser.get(read_only + f"/jobs/{charges[2]}?token={TOKEN}")
    assert "read-only" in browser.find_element(By.TAG_NAME, "header").text
    assert not browser.find_elements(By.ID, "actions")
    browser.get(read_only + "/jobs")
    assert not browser.find_elements(By.ID, "bulk")
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/jobs/{charges[2]}/delete', {{method: 'POST', body: new URLSearchParams({{csrf: 'x'}})}})"
        ".then(r => done(r.status));"
    )
    assert status == 403
    assert app.get_job(charges[2]).state is pgqueue.JobState.COMPLETED


def test_refuses_a_public_address_without_authentication(dsn):
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "dashboard", "--host", "0.0.0.0", "--port", str(free_port())],
        env=_env(dsn),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "without authentication" in result.stderr and "--token" in result.stderr
