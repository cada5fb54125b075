"""`basic web-app` as a real process: serving, the event stream, and a clean stop on SIGINT."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from persistentq.cli import main
from persistentq.web.serve import _bind
from persistentq.web.state import MAX_EVENT_STREAMS
from web_support import WebApp, free_port, wait_until

# AnyIO's default number of worker threads, which run FastAPI's plain-function routes.
THREAD_POOL_SIZE = 40

SLOW_FUNCTIONS = '''
import asyncio

async def slow(payload):
    await asyncio.sleep(120)
    return payload
'''

SLOW_CONFIG = """
consumer:
  function: jobs:slow
  interval_min: 0
  interval_max: 0
  poll_interval: 0.1
general:
  primary_path: data
  n_prod: 0
  n_cons: 1
  shutdown_grace: 0.5
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_hands_running_job_back(tmp_path: Path, signum: int) -> None:
    """SIGINT or SIGTERM ends the process with exit 0, an open event stream included, and requeues the running job."""
    app = WebApp(tmp_path / "app", SLOW_CONFIG, SLOW_FUNCTIONS)
    try:
        job_id = start_slow_job(app)
        with httpx.Client(base_url=app.url, timeout=10) as stream, stream.stream("GET", "/api/events") as events:
            first = _first_snapshot(events)
            code = app.stop(signum=signum)
    finally:
        app.stop()

    assert first["counts"]["running"] == 1
    assert code == 0, app.log()
    assert f"{signal.Signals(signum).name}: stopping" in app.log()
    assert "pool stopped" in app.log()
    job = read_job(tmp_path / "app", job_id)
    assert job["state"] == "queued"
    assert job["attempts"] == 0


def test_second_sigint_hands_job_back_before_grace(tmp_path: Path) -> None:
    """A second SIGINT ends a stop whose 60 s grace is still running, and the job is queued again."""
    app = WebApp(tmp_path / "app", SLOW_CONFIG.replace("shutdown_grace: 0.5", "shutdown_grace: 60"), SLOW_FUNCTIONS)
    try:
        job_id = start_slow_job(app)
        app.process.send_signal(signal.SIGINT)
        wait_until(lambda: "SIGINT: stopping" in app.log())
        code = app.stop(timeout_s=30)
    finally:
        app.stop()

    assert code == 0, app.log()
    assert "SIGINT again: handing running jobs back now" in app.log()
    assert read_job(tmp_path / "app", job_id)["state"] == "queued"


def start_slow_job(app: WebApp) -> int:
    """Enqueue one job of the slow function and wait until a consumer runs it; return its id."""
    [job_id] = app.client.post("/api/jobs", json={"payloads": ["long"]}).json()["ids"]
    wait_until(lambda: app.client.get(f"/api/jobs/{job_id}").json()["state"] == "running")
    return job_id


def read_job(workdir: Path, job_id: int) -> dict:
    """Read a job from the queue in `workdir` through a new web app that runs no consumer."""
    reopened = WebApp(workdir, SLOW_CONFIG.replace("n_cons: 1", "n_cons: 0"), SLOW_FUNCTIONS)
    try:
        return reopened.client.get(f"/api/jobs/{job_id}").json()
    finally:
        reopened.stop()


def _first_snapshot(response: httpx.Response) -> dict:
    """Read server-sent events until the first snapshot and return its data."""
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "snapshot":
            return json.loads(line.removeprefix("data: "))
    raise AssertionError("the event stream ended before a snapshot")


def test_event_streams_capped_and_end_on_sigint(tmp_path: Path) -> None:
    """Past MAX_EVENT_STREAMS open streams a new one gets 503; a closed one frees its slot; SIGINT ends them all."""
    app = WebApp(tmp_path / "app", SLOW_CONFIG, SLOW_FUNCTIONS)
    limits = httpx.Limits(max_connections=MAX_EVENT_STREAMS + 8)
    try:
        with contextlib.ExitStack() as streams, httpx.Client(base_url=app.url, timeout=10, limits=limits) as client:
            opened = [streams.enter_context(client.stream("GET", "/api/events")) for _ in range(MAX_EVENT_STREAMS)]
            over = client.get("/api/events")
            opened.pop().close()
            wait_until(lambda: _stream_status(client) == 200)
            started = time.monotonic()
            code = app.stop()
            stop_s = time.monotonic() - started
    finally:
        app.stop()

    assert all(response.status_code == 200 for response in opened)
    assert over.status_code == 503
    assert "limit is" in over.json()["error"]
    assert over.headers["retry-after"].isdigit()
    assert code == 0, app.log()
    assert stop_s < 15, f"stopping with {MAX_EVENT_STREAMS} open streams took {stop_s:.1f} s"
    assert "Exception in ASGI application" not in app.log()


def test_pool_controls_work_while_database_locked(tmp_path: Path) -> None:
    """While another process holds the write lock and blocked enqueues fill the thread pool, pause still works."""
    app = WebApp(tmp_path / "app", SLOW_CONFIG, SLOW_FUNCTIONS)
    blocked_posts = THREAD_POOL_SIZE + 5
    lock = sqlite3.connect(tmp_path / "app" / "data" / "queue.sqlite3", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        with concurrent.futures.ThreadPoolExecutor(blocked_posts) as senders, \
                httpx.Client(base_url=app.url, timeout=60, limits=httpx.Limits(max_connections=100)) as client:
            posts = [senders.submit(client.post, "/api/jobs", json={"payloads": [f"p{number}"]})
                     for number in range(blocked_posts)]
            try:
                time.sleep(1)  # the posts reach the server and wait for the lock
                pause = client.post("/api/pool/pause", json={"kind": "consumer"}, timeout=10)
                pool = client.get("/api/pool", timeout=10)
                still_waiting = sum(not post.done() for post in posts)
            finally:
                lock.execute("ROLLBACK")
            statuses = [post.result().status_code for post in posts]
    finally:
        lock.close()
        code = app.stop()

    assert pause.status_code == 200, pause.text
    assert pool.json()["paused"] == ["consumer"]
    assert still_waiting == blocked_posts
    assert statuses == [201] * blocked_posts
    assert code == 0, app.log()


def test_stream_reports_deleted_database(tmp_path: Path) -> None:
    """Once the database file is deleted, an open event stream sends one problem event naming it, not old numbers."""
    app = WebApp(tmp_path / "app", SLOW_CONFIG, SLOW_FUNCTIONS)
    try:
        with httpx.Client(base_url=app.url, timeout=10) as stream, stream.stream("GET", "/api/events") as events:
            lines = events.iter_lines()
            first = _next_event(lines, "snapshot")
            for path in (tmp_path / "app" / "data").glob("queue.sqlite3*"):
                path.unlink()
            problem = _next_event(lines, "problem")
    finally:
        app.stop()

    assert first["counts"]["queued"] == 0
    assert "deleted or replaced" in problem["error"]
    assert "start it again" in problem["error"]


def _next_event(lines: Iterator[str], name: str) -> dict:
    """Read the lines of server-sent events until the next event called `name` and return its data."""
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == name:
            return json.loads(line.removeprefix("data: "))
    raise AssertionError(f"the event stream ended before a {name} event")


def _stream_status(client: httpx.Client) -> int:
    """Open an event stream, close it at once, and return its status."""
    with client.stream("GET", "/api/events") as response:
        return response.status_code


def test_web_app_serves_page_and_rejects_foreign_host(tmp_path: Path) -> None:
    """The real server serves the page on 127.0.0.1 and rejects a foreign Host header."""
    app = WebApp(tmp_path / "app", SLOW_CONFIG, SLOW_FUNCTIONS)
    try:
        page = app.client.get("/")
        foreign = app.client.get("/api/counts", headers={"host": "attacker.example"})
    finally:
        code = app.stop()

    assert page.status_code == 200
    assert "persistentq" in page.text
    assert foreign.status_code == 400
    assert code == 0


def test_busy_port_is_clear_error(tmp_path: Path) -> None:
    """A port in use stops basic web-app with exit 1 and a message naming the port, before any worker starts."""
    config = tmp_path / "config.yaml"
    config.write_text("general:\n  primary_path: data\n  n_prod: 1\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]

        result = CliRunner().invoke(main, ["web-app", "--config", str(config), "--port", str(port)])

    assert result.exit_code == 1, result.output
    assert f"port {port} is in use" in result.output
    assert not list((tmp_path / "data").glob("??????????")), "a producer ran although the server never started"


def test_listener_names_tcp_for_nodelay() -> None:
    """The listening socket names IPPROTO_TCP, which asyncio needs before it sets TCP_NODELAY on connections."""
    listener = _bind("127.0.0.1", free_port())
    try:
        assert listener.proto == socket.IPPROTO_TCP
    finally:
        listener.close()
