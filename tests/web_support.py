"""Helpers shared by the web app tests: configs, the in-process client, and checks of error responses."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx

from persistentq.config import Config, config_from_dict

with warnings.catch_warnings():
    # Starlette 1.x warns that its TestClient will move from httpx to httpx2; both work here.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

__all__ = ["BASE_URL", "PORT", "TestClient", "WebApp", "assert_error", "free_port", "make_config", "wait_until"]

# TestClient calls the app in-process, so this port is never bound; it only
# has to match the Host header the client sends.
PORT = 8123
BASE_URL = f"http://127.0.0.1:{PORT}"


def make_config(tmp_path: Path, **sections: dict) -> Config:
    """Return a config on tmp_path/data whose consumer runs web_functions:fail_marked."""
    data = {
        "consumer": {"function": "web_functions:fail_marked", "interval_min": 0, "interval_max": 0,
                     "n_tries": 1, "poll_interval": 0.1},
        "producer": {"function": "web_functions:produce_nothing", "interval": 1},
        "general": {"primary_path": str(tmp_path / "data"), "n_prod": 1, "n_cons": 1, "shutdown_grace": 1},
        "web": {"port": PORT},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return config_from_dict(data)


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Poll `condition` every 50 ms until it is true; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout_s} s"
        time.sleep(0.05)


def assert_error(response, status: int, *words: str) -> None:
    """Check an error response: its status, a JSON body {"error": ...}, and words of its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    for word in words:
        assert word in message


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def basic_executable() -> str:
    """Return the `basic` script installed beside the running Python."""
    script = Path(sys.executable).with_name("basic")
    if script.exists():
        return str(script)
    found = shutil.which("basic")
    assert found, "the basic command is not installed: pip install -e ."
    return found


class WebApp:
    """A `basic web-app` subprocess on a free loopback port, with an HTTP client that sends its Host."""

    def __init__(self, workdir: Path, config_text: str, functions: str = "") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.yaml").write_text(config_text + f"web:\n  port: {self.port}\n")
        if functions:
            (workdir / "jobs.py").write_text(functions)
        self.log_path = workdir / "web-app.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [basic_executable(), "web-app", "--config", str(workdir / "config.yaml")],
            cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=10)
        wait_until(self._ready, timeout_s=30)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"basic web-app exited with {self.process.returncode}:\n{self.log()}")
        try:
            return self.client.get("/api/counts").status_code == 200
        except httpx.TransportError:
            return False

    def log(self) -> str:
        """Return what the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30, signum: int = signal.SIGINT) -> int:
        """Send `signum`, wait for the exit and return the exit code; kill the process if it hangs."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"basic web-app did not stop within {timeout_s} s:\n{self.log()}") from None
        self._log.close()
        return self.process.returncode
