"""Property-based fuzzing of the dashboard API from its own OpenAPI document, over real HTTP.

Schemathesis draws requests for every operation, valid and invalid, and
sends them with the app's own Host and Origin, so they pass the security
checks and reach the handlers. No request may end in a 5xx, and every error
must be the JSON {"error": ...} that the API promises.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from persistentq.web import create_app
from web_support import free_port, make_config, wait_until

# Examples per operation: about 17 operations, so a few hundred requests in all.
EXAMPLES_PER_OPERATION = 25


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[object, int]]:
    """Serve a dashboard with uvicorn on a free loopback port in a thread; yield (app, port)."""
    port = free_port()
    config = make_config(tmp_path, web={"port": port}, general={"n_prod": 0, "n_cons": 1, "shutdown_grace": 0.5})
    app = create_app(config, events_interval_s=0.05)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=20)
    try:
        yield app, port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive(), "the server did not stop"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_get_no_server_error(server: tuple[object, int], mode: GenerationMode) -> None:
    """No request drawn from the OpenAPI document gets a 5xx; every 4xx is a JSON error.

    Positive requests fit the document, negative ones break it on purpose.
    Stopping the pool comes last, so the other pool operations meet a running pool.
    """
    app, port = server
    schema = schemathesis.openapi.from_dict(app.openapi())
    operations = sorted((result.ok() for result in schema.get_all_operations()),
                        key=lambda operation: operation.path == "/api/pool/stop")
    base_url = f"http://127.0.0.1:{port}"
    headers = {"Host": f"127.0.0.1:{port}", "Origin": base_url}
    statuses: Counter[tuple[str, str, int]] = Counter()
    assert len(operations) >= 17

    for operation in operations:
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url, headers=headers, timeout=10)
            statuses[case.method, case.path, response.status_code] += 1
            label = f"{case.method} {case.formatted_path} {case.query or ''} {case.body!r:.200}"
            assert response.status_code < 500, f"{label} -> {response.status_code} {response.text[:500]}"
            if response.status_code >= 400:
                assert "error" in response.json(), f"{label} -> {response.text[:500]}"

        try:
            check()
        except Unsatisfiable:
            # An operation without parameters or body has no invalid request to draw.
            assert mode == GenerationMode.NEGATIVE, operation.label

    reached = {path for (_, path, status) in statuses if status < 400}
    print(sorted(statuses.items()))
    assert httpx.get(base_url + "/api/counts", headers=headers, timeout=10).status_code == 200
    if mode == GenerationMode.POSITIVE:
        assert len(reached) >= 15, f"too few operations returned 2xx: {sorted(reached)}"


@pytest.mark.parametrize("kind", ["producer", "consumer"])
def test_strategy_reaches_handlers(server: tuple[object, int], kind: str) -> None:
    """A drawn pause request with the app's Host and Origin is served, not stopped by the checks."""
    app, port = server
    schema = schemathesis.openapi.from_dict(app.openapi())
    operation = schema["/api/pool/pause"]["POST"]
    base_url = f"http://127.0.0.1:{port}"

    @settings(max_examples=1, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: schemathesis.Case) -> None:
        case.body = {"kind": kind}
        response = case.call(base_url=base_url, headers={"Host": f"127.0.0.1:{port}", "Origin": base_url},
                             timeout=10)
        assert response.status_code == 200, response.text
        assert kind in response.json()["paused"]

    check()
