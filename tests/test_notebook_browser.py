"""The demo notebook in a real JupyterLab and Notebook 7, driven by headless Chromium through Playwright.

Each test starts its own Jupyter server on 127.0.0.1 with a token, in a
fresh root folder that contains a copy of the demo notebook, runs every
cell, clicks the panel's "Start all" and watches the done count rise.
Screenshots are kept in artifacts/ at the top of the repository.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.external import CHROMIUM_ARGS, chromium_executable

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
JUPYTER = Path(sys.executable).parent / "jupyter"
SERVER_START_TIMEOUT_S = 60
# JupyterLab settings: no question about news and updates, whose toast would
# cover the panel and whose fetch would reach other hosts, and every cell kept
# in the page, where windowing would drop the cells scrolled out of view.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Start JupyterLab, which also serves Notebook 7, on a free 127.0.0.1 port; yield its base URL and token."""
    if not JUPYTER.exists():
        pytest.skip("jupyter is not installed: pip install -e '.[dev]'")
    root, settings = tmp_path / "root", tmp_path / "lab-settings"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "demo.ipynb", root / "demo.ipynb")
    for name, values in LAB_SETTINGS.items():
        target = settings / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))

    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "PERSISTENTQ_DEMO_FAST": "1",  # the kernel inherits it from the server
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
    }
    command = [
        str(JUPYTER), "lab", "--no-browser", "--allow-root", "--ip", "127.0.0.1", "--port", str(port),
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
    ]
    log_file = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(base, token, server, tmp_path / "jupyter.log")
        yield base, token
    finally:
        _stop_server(base, token, server)
        log_file.close()


def _wait_for_server(base: str, token: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"jupyter lab exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/api/status", params={"token": token}, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"jupyter lab did not answer within {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


def _stop_server(base: str, token: str, server: subprocess.Popen) -> None:
    """Ask the server to shut down with its kernels, then end its process group if it lingers."""
    try:
        httpx.post(f"{base}/api/shutdown", params={"token": token}, timeout=5)
        server.wait(timeout=15)
    except (httpx.TransportError, subprocess.TimeoutExpired):
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _wait_for_idle_kernel(page, base: str, token: str) -> None:
    """Wait until the page has started a kernel for the notebook and the kernel is idle.

    Run All before the kernel is up makes JupyterLab ask which kernel to start.
    The wait goes through the page, because the sync Playwright API runs the
    route handler, and so lets the page's requests through, only inside its calls.
    """
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        sessions = httpx.get(f"{base}/api/sessions", params={"token": token}, timeout=5).json()
        if any(session["kernel"]["execution_state"] == "idle" for session in sessions):
            return
        page.wait_for_timeout(200)
    pytest.fail(f"no idle kernel within {SERVER_START_TIMEOUT_S} s: {sessions}")


def _done_count(page) -> int:
    return int(page.locator(".pq-count-done .pq-number").text_content())


@pytest.mark.parametrize("front_end, path", [("jupyterlab", "lab/tree"), ("notebook7", "notebooks")])
def test_demo_in_browser(lab: tuple[str, str], tmp_path: Path, front_end: str, path: str) -> None:
    """Run all cells of the demo, click Start all, and see the done count rise in the page."""
    executable = chromium_executable()
    from playwright.sync_api import expect, sync_playwright

    base, token = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        # Nothing leaves 127.0.0.1: any other request is aborted.
        context.route("**/*", lambda route: route.continue_() if urlsplit(route.request.url).hostname
                      in ("127.0.0.1", None) else route.abort())
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{base}/{path}/demo.ipynb?token={token}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            _wait_for_idle_kernel(page, base, token)

            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

            last_cell = page.locator(".jp-Notebook .jp-CodeCell").last
            expect(last_cell.locator(".jp-OutputArea-output")).to_contain_text("cancelled", timeout=120_000)
            expect(page.locator(".jp-OutputArea-output", has_text="Traceback")).to_have_count(0)
            panel = page.locator(".pq-panel")
            expect(panel).to_be_visible()
            expect(page.locator(".pq-state")).to_have_text("stopped", timeout=10_000)
            before = _done_count(page)
            assert before > 0, "the cells got no job done"

            panel.scroll_into_view_if_needed()
            page.locator(".pq-start-all").click()
            expect(page.locator(".pq-state")).to_have_text("running", timeout=10_000)
            deadline = time.monotonic() + 30
            while _done_count(page) <= before + 3 and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            after = _done_count(page)
            panel.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / f"{front_end}-demo.png"))
            panel.screenshot(path=str(ARTIFACTS / f"{front_end}-panel.png"))
            assert after > before + 3, f"done count went from {before} to {after} in 30 s"
            expect(page.locator(".pq-log")).to_contain_text("done (attempt")

            page.locator(".pq-stop-all").click()
            expect(page.locator(".pq-state")).to_have_text("stopped", timeout=30_000)
        finally:
            context.close()
