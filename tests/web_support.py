"""Helpers shared by the web app tests: configs, the in-process client, and checks of error answers."""

from __future__ import annotations

import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from persistentq.config import Config, config_from_dict

with warnings.catch_warnings():
    # Starlette 1.x warns that its TestClient will move from httpx to httpx2; both work here.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

__all__ = ["BASE_URL", "PORT", "TestClient", "assert_error", "free_port", "make_config", "wait_until"]

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
