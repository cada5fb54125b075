"""`basic web-app` as a real process: serving, the event stream, and a clean stop on SIGINT."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
from click.testing import CliRunner

from persistentq.cli import main
from web_support import WebApp, wait_until

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


def test_sigint_hands_running_job_back(tmp_path: Path) -> None:
    """SIGINT ends the process with exit 0, an open event stream included, and the running job is queued again."""
    app = WebApp(tmp_path / "app", SLOW_CONFIG, SLOW_FUNCTIONS)
    try:
        [job_id] = app.client.post("/api/jobs", json={"payloads": ["long"]}).json()["ids"]
        wait_until(lambda: app.client.get(f"/api/jobs/{job_id}").json()["state"] == "running")
        stream = httpx.Client(base_url=app.url, timeout=10)
        with stream.stream("GET", "/api/events") as events:
            first = _first_snapshot(events)
            code = app.stop()
    finally:
        app.stop()

    assert first["counts"]["running"] == 1
    assert code == 0, app.log()
    log = app.log()
    assert "SIGINT: stopping" in log
    assert "pool stopped" in log
    reopened = WebApp(tmp_path / "app", SLOW_CONFIG.replace("n_cons: 1", "n_cons: 0"), SLOW_FUNCTIONS)
    try:
        job = reopened.client.get(f"/api/jobs/{job_id}").json()
    finally:
        reopened.stop()
    assert job["state"] == "queued"
    assert job["attempts"] == 0


def _first_snapshot(response: httpx.Response) -> dict:
    """Read server-sent events until the first snapshot and return its data."""
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "snapshot":
            return json.loads(line.removeprefix("data: "))
    raise AssertionError("the event stream ended before a snapshot")


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
