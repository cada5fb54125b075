"""The dashboard in headless Chromium, driven by Playwright, against a real `basic web-app` process.

The app runs a producer that puts a job every 0.2 s, every fourth one
failing, and one consumer. The tests watch the page update without a reload,
pause consumers, retry a failed job, and check that markup in a payload
shows as text. Screenshots go to the test's tmp dir and to artifacts/.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from external import CHROMIUM_ARGS, chromium_executable
from persistentq.store.base import WorkerRecord
from persistentq.store.sqlite import PersistentQSQLite
from persistentq.web.state import MAX_EVENT_STREAMS, MAX_STOPPED_IN_SNAPSHOT
from web_support import WebApp, wait_until

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
TIMEOUT_MS = 15_000
PAUSE_SETTLE_S = 1.0

FUNCTIONS = '''
import itertools

_numbers = itertools.count(1)


async def produce():
    number = next(_numbers)
    return f"fail {number}" if number % 4 == 0 else f"job {number}"


async def fail_marked(payload):
    if payload.startswith("fail"):
        raise ValueError(f"asked to fail by {payload!r}")
    return f"{payload} handled"
'''

CONFIG = """
consumer:
  function: jobs:fail_marked
  interval_min: 0.05
  interval_max: 0.1
  n_tries: 1
  poll_interval: 0.1
producer:
  function: jobs:produce
  interval: 0.2
cleaner:
  interval: 1
general:
  primary_path: data
  n_prod: 1
  n_cons: 1
  shutdown_grace: 1
"""

XSS_PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>&amp; "quoted"'


@pytest.fixture(scope="module")
def web_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebApp]:
    """One `basic web-app` process for the module, stopped with SIGINT at the end."""
    app = WebApp(tmp_path_factory.mktemp("web-app"), CONFIG, FUNCTIONS)
    try:
        yield app
    finally:
        code = app.stop()
        assert code == 0, app.log()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A headless Chromium with a fresh profile that ignores the page's Content-Security-Policy.

    Playwright's wait_for_function evaluates its predicate with eval, which
    the policy forbids. Without the policy, the markup test also shows that
    the page's escaping alone keeps a payload from running.
    """
    executable = chromium_executable()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1400}, bypass_csp=True,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture()
def page(browser_context, web_app: WebApp) -> Iterator[object]:
    """The dashboard open in a new tab, with a marker that a reload would erase."""
    tab = browser_context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []

    def record_console_error(message) -> None:
        # Console errors include failed loads, such as a 404 for an icon the page did not name.
        if message.type == "error":
            errors.append(message.text)

    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("console", record_console_error)
    tab.goto(web_app.url + "/")
    tab.wait_for_selector("#connection[data-live='true']")
    tab.evaluate("window.__loadedOnce = true")
    yield tab
    tab.close()
    assert errors == [], f"script or console errors in the page: {errors}"


def count(page, state: str) -> int:
    """Return the number the page shows for `state`."""
    text = page.text_content(f"#count-{state}")
    return int(text) if text and text.isdigit() else -1


def resume_all(web_app: WebApp) -> None:
    """Resume every worker through the API, so each test starts with a running pool."""
    web_app.client.post("/api/pool/resume", json={})


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    """Save a screenshot under tmp_path and artifacts/ (git-ignored); return the tmp_path copy."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    (ARTIFACTS / name).write_bytes(shot.read_bytes())
    return shot


def test_done_count_rises_without_reload(page, web_app: WebApp, tmp_path: Path) -> None:
    """The done count, the chart and the jobs table update from the event stream, with no reload."""
    resume_all(web_app)
    page.wait_for_function("Number(document.querySelector('#count-done').textContent) >= 0")
    before = count(page, "done")

    page.wait_for_function(f"Number(document.querySelector('#count-done').textContent) >= {before + 3}")
    page.wait_for_function("Number(document.querySelector('#chart').dataset.done) > 0")
    page.wait_for_selector("#jobs tr[data-state='done']")

    assert page.evaluate("window.__loadedOnce") is True
    assert page.locator("#registry tr").count() >= 3
    shot = save_screenshot(page, tmp_path, "web-dashboard.png")
    assert shot.stat().st_size > 10_000


def test_pause_consumers_stops_done_count(page, web_app: WebApp) -> None:
    """After Pause consumers, the done count stops while jobs keep coming; Resume starts it again."""
    resume_all(web_app)
    page.click("#pause-consumer")
    page.wait_for_selector("#pause-consumer[aria-pressed='true']")
    # A turn that began before the pause may still claim and finish one job;
    # a turn lasts well under PAUSE_SETTLE_S here.
    time.sleep(PAUSE_SETTLE_S)
    wait_until(lambda: web_app.client.get("/api/counts").json()["running"] == 0)
    done = web_app.client.get("/api/counts").json()["done"]
    page.wait_for_function(f"Number(document.querySelector('#count-done').textContent) === {done}")
    queued = count(page, "queued")

    page.wait_for_function(f"Number(document.querySelector('#count-queued').textContent) >= {queued + 3}")

    assert count(page, "done") == done
    assert web_app.client.get("/api/counts").json()["done"] == done
    assert page.text_content("#pause-consumer") == "Resume consumers"
    page.click("#pause-consumer")
    page.wait_for_function(f"Number(document.querySelector('#count-done').textContent) > {done}")


def test_retry_failed_job_from_page(page, web_app: WebApp, tmp_path: Path) -> None:
    """The Retry button of a failed job queues it again with its attempts back at 0."""
    resume_all(web_app)
    page.select_option("#filter-state", "failed")
    job_id = int(page.locator("#jobs tr[data-state='failed']").first.get_attribute("data-id"))
    web_app.client.post("/api/pool/pause", json={"kind": "consumer"})

    # A locator finds the row again each time, because the table is rebuilt on every update.
    page.locator(f"#jobs tr[data-id='{job_id}'] button.retry").click()
    page.wait_for_function(f"document.querySelector('#message').textContent.includes('job {job_id} queued again')")

    job = web_app.client.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "queued"
    assert job["attempts"] == 0
    page.select_option("#filter-state", "queued")
    page.wait_for_selector(f"#jobs tr[data-id='{job_id}'][data-state='queued']")
    save_screenshot(page, tmp_path, "web-dashboard-retry.png")
    resume_all(web_app)


def test_markup_payload_shows_as_text(page, web_app: WebApp) -> None:
    """A payload full of HTML shows as literal text in the table and the detail view, and runs nothing."""
    web_app.client.post("/api/pool/pause", json={"kind": "consumer"})
    [job_id] = web_app.client.post("/api/jobs", json={"payloads": [XSS_PAYLOAD]}).json()["ids"]

    page.fill("#filter-search", "onerror")
    row = page.locator(f"#jobs tr[data-id='{job_id}']")
    row.click()
    page.wait_for_function(f"document.querySelector('#detail-id').textContent === '{job_id}'")

    assert page.text_content("#detail-payload") == XSS_PAYLOAD
    assert XSS_PAYLOAD in row.text_content()
    assert page.evaluate("window.__xss") is None
    assert page.locator("#jobs img, #detail img, #jobs script, #detail script").count() == 0
    resume_all(web_app)


def test_invisible_characters_shown_escaped(page, web_app: WebApp) -> None:
    """Control and bidirectional override characters show as \\uXXXX, so a payload cannot reorder its text."""
    web_app.client.post("/api/pool/pause", json={"kind": "consumer"})
    payload = "invoice \u202egnp.exe\u202c bell\u0007 zero\u200bwidth"
    [job_id] = web_app.client.post("/api/jobs", json={"payloads": [payload]}).json()["ids"]

    page.fill("#filter-search", "invoice")
    row = page.locator(f"#jobs tr[data-id='{job_id}']")
    row.click()
    page.wait_for_function(f"document.querySelector('#detail-id').textContent === '{job_id}'")

    escaped = "invoice \\u202egnp.exe\\u202c bell\\u0007 zero\\u200bwidth"
    assert page.text_content("#detail-payload") == escaped
    assert escaped in row.text_content()
    assert web_app.client.get(f"/api/jobs/{job_id}").json()["payload"] == payload
    resume_all(web_app)


def test_cut_emoji_payload_marked_cut(page, web_app: WebApp) -> None:
    """A long payload of characters outside the BMP, which JavaScript counts twice, still shows the cut mark."""
    web_app.client.post("/api/pool/pause", json={"kind": "consumer"})
    payload = "emoji " + "\U0001F600" * 300
    [job_id] = web_app.client.post("/api/jobs", json={"payloads": [payload]}).json()["ids"]

    page.fill("#filter-search", "emoji")
    row = page.locator(f"#jobs tr[data-id='{job_id}']")
    row.wait_for()

    assert "\U0001F600\u2026" in row.text_content()
    resume_all(web_app)


def test_registry_markup_shows_as_text(page, web_app: WebApp) -> None:
    """A worker registered by another process with markup in its id, kind, host and state shows it as text."""
    now = time.time()
    record = WorkerRecord(id='<img src=x onerror="window.__xss=3">w', kind="<b>consumer</b>",
                          host="<script>window.__xss=4</script>", pid=1, state="<i>running</i>",
                          started_at=now, heartbeat_at=now, runs=0, successes=0, errors=0)
    store = PersistentQSQLite(web_app.workdir / "data" / "queue.sqlite3")
    try:
        store.register_worker(record)
    finally:
        store.close()

    row = page.locator("#registry tr", has_text="window.__xss=3")
    row.wait_for()

    assert record.id in row.text_content()
    assert record.host in row.text_content()
    assert record.state in row.text_content()
    assert page.evaluate("window.__xss") is None
    assert page.locator("#registry img, #registry script, #registry b, #registry i").count() == 0


def test_stream_reconnects_after_503(browser_context, web_app: WebApp) -> None:
    """A page turned away while every event stream slot is taken goes live once a slot frees, with no reload."""
    tab = browser_context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    limits = httpx.Limits(max_connections=MAX_EVENT_STREAMS + 8)
    try:
        with contextlib.ExitStack() as streams, httpx.Client(base_url=web_app.url, timeout=10, limits=limits) as client:
            for _ in range(MAX_EVENT_STREAMS + 1):
                response = streams.enter_context(client.stream("GET", "/api/events"))
                if response.status_code == 503:
                    break
            assert response.status_code == 503
            tab.goto(web_app.url + "/")
            tab.wait_for_selector("#connection:has-text('reconnecting')")
            tab.evaluate("window.__loadedOnce = true")
            time.sleep(1)
            assert tab.get_attribute("#connection", "data-live") == "false"

        tab.wait_for_selector("#connection[data-live='true']")
        assert tab.evaluate("window.__loadedOnce") is True
    finally:
        tab.close()


def test_many_stopped_workers_summarized(page, web_app: WebApp) -> None:
    """Past MAX_STOPPED_IN_SNAPSHOT stopped workers, the registry table stops growing and a note counts the rest."""
    now = time.time()
    store = PersistentQSQLite(web_app.workdir / "data" / "queue.sqlite3")
    try:
        for number in range(MAX_STOPPED_IN_SNAPSHOT + 3):
            store.register_worker(WorkerRecord(f"old-{number}", "consumer", "elsewhere", 1, "stopped",
                                               now - 60, now - 30))
    finally:
        store.close()

    page.wait_for_selector("#registry-more:not([hidden])")

    assert "more stopped workers" in page.text_content("#registry-more")
    assert page.locator("#registry tr", has_text="stopped").count() == MAX_STOPPED_IN_SNAPSHOT


def test_slow_old_search_does_not_replace_rows(page, web_app: WebApp) -> None:
    """A search response that arrives after a newer one leaves the newer search's rows in the table."""
    # Every worker pauses, so no count changes and no update refreshes the table behind the test.
    web_app.client.post("/api/pool/pause", json={})
    [old_id, new_id] = web_app.client.post("/api/jobs", json={"payloads": ["slowsearch", "fastsearch"]}).json()["ids"]
    queued = web_app.client.get("/api/counts").json()["queued"]
    page.wait_for_function(f"Number(document.querySelector('#count-queued').textContent) === {queued}")
    held = []

    def held_search(url: str) -> bool:
        return "/api/jobs?" in url and "search=slowsearch" in url

    def hold(route) -> None:
        held.append(route)

    page.route(held_search, hold)

    page.fill("#filter-search", "slowsearch")
    # Playwright runs route handlers only inside its own calls, so the wait is a Playwright wait.
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the page sent no search request"
    page.fill("#filter-search", "fastsearch")
    page.wait_for_function(f"document.querySelectorAll('#jobs tr').length === 1 && "
                           f"document.querySelector(\"#jobs tr[data-id='{new_id}']\") !== null")
    held[0].continue_()
    page.wait_for_timeout(500)

    assert page.locator(f"#jobs tr[data-id='{new_id}']").count() == 1
    assert page.locator(f"#jobs tr[data-id='{old_id}']").count() == 0
    page.unroute(held_search)
    resume_all(web_app)


def test_purged_job_detail_closes(browser_context, web_app: WebApp) -> None:
    """The detail view of a job that a purge deleted closes with one message instead of failing on every update."""
    resume_all(web_app)
    [job_id] = web_app.client.post("/api/jobs", json={"payloads": ["purged soon"]}).json()["ids"]
    wait_until(lambda: web_app.client.get(f"/api/jobs/{job_id}").json()["state"] == "done")
    # Its own tab, because the 404 of the purged job shows as a console error, which the page fixture rejects.
    tab = browser_context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    try:
        tab.goto(web_app.url + "/")
        tab.fill("#filter-search", "purged soon")
        tab.locator(f"#jobs tr[data-id='{job_id}']").click()
        tab.wait_for_selector("#detail", state="visible")

        web_app.client.post("/api/purge", json={"states": ["done"]})

        tab.wait_for_selector("#detail", state="hidden")
        assert f"no job with id {job_id}" in tab.text_content("#message")
    finally:
        tab.close()


def test_requeue_summary_names_rejections(page) -> None:
    """A requeue that rejected jobs reports how many, the first job's reason, as an error."""
    accepted = page.evaluate("requeueSummary({requeued: [1, 2], rejected: {}})")
    partial = page.evaluate(
        "requeueSummary({requeued: [1], rejected: {'7': 'its input file is gone', '9': 'gone too'}})"
    )

    assert accepted == ["requeued 2 jobs", "info"]
    assert partial == ["requeued 1 jobs, rejected 2: job 7: its input file is gone (and 1 more)", "error"]
