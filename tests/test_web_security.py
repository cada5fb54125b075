"""The dashboard's request checks: foreign Host, cross-origin state changes, the token, body size."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from starlette.websockets import WebSocketDisconnect

from persistentq.cli import main
from persistentq.store.base import JobState, PersistentQStore
from persistentq.web import create_app
from persistentq.web.security import MAX_BODY_BYTES, TOKEN_COOKIE, WS_POLICY_VIOLATION
from persistentq.web.serve import check_web_settings
from web_support import BASE_URL, PORT, TestClient, assert_error, make_config

TOKEN = "s3cret token;="


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    """A client of a loopback app without a token; its pool is started so a stop would show."""
    with TestClient(create_app(make_config(tmp_path)), base_url=BASE_URL) as test_client:
        yield test_client


@pytest.fixture()
def store(client: TestClient) -> PersistentQStore:
    """The store that the client's app reads and writes."""
    return client.app.state.dashboard.store


# DNS rebinding: the Host header must name the app.


@pytest.mark.parametrize("host", [
    "evil.example", f"evil.example:{PORT}", "127.0.0.1", f"127.0.0.1:{PORT + 1}", f"localhost.evil.example:{PORT}",
    f"127.0.0.2:{PORT}", "",
])
@pytest.mark.parametrize("path", ["/", "/api/counts", "/api/jobs", "/openapi.json", "/static/app.js"])
def test_foreign_host_rejected_on_reads(client: TestClient, host: str, path: str) -> None:
    """A read whose Host is not the app's host and port gets 400 with no data."""
    response = client.get(path, headers={"host": host})

    assert_error(response, 400, "not this app's address")
    assert "queued" not in response.text


@pytest.mark.parametrize("host", [f"127.0.0.1:{PORT}", f"localhost:{PORT}", f"LOCALHOST:{PORT}", f"[::1]:{PORT}"])
def test_own_host_forms_served(client: TestClient, host: str) -> None:
    """The app accepts the Host 127.0.0.1, localhost and [::1] with its port."""
    assert client.get("/api/counts", headers={"host": host}).status_code == 200


def test_foreign_host_rejected_on_writes(client: TestClient, store: PersistentQStore) -> None:
    """A POST with a foreign Host is rejected before it runs, even without an Origin header."""
    response = client.post("/api/jobs", json={"payloads": ["a"]}, headers={"host": f"evil.example:{PORT}"})

    assert_error(response, 400)
    assert store.jobs() == []


# Cross-site request forgery: state changes need the app's own Origin, or none.


@pytest.mark.parametrize("origin", [
    "http://evil.example", f"http://evil.example:{PORT}", "null", f"https://127.0.0.1:{PORT}",
    f"http://127.0.0.1:{PORT + 1}", "http://localhost",
])
def test_cross_origin_enqueue_rejected(client: TestClient, store: PersistentQStore, origin: str) -> None:
    """A POST whose Origin is another site gets 403 and puts no job."""
    response = client.post("/api/jobs", json={"payloads": ["a"]}, headers={"origin": origin})

    assert_error(response, 403, "cross-origin")
    assert store.jobs() == []


def test_cross_origin_pool_stop_rejected(client: TestClient) -> None:
    """A cross-origin POST cannot stop the pool."""
    response = client.post("/api/pool/stop", headers={"origin": "http://evil.example"})

    assert_error(response, 403)
    assert client.get("/api/pool").json()["running"] is True


def test_cross_origin_purge_and_requeue_rejected(client: TestClient, store: PersistentQStore) -> None:
    """Cross-origin purge and cancel are rejected and leave the jobs as they were."""
    # The delay keeps the job from any consumer, because a consumer turn that began before a pause may still claim it.
    job_id = store.put("a", delay_s=3600)
    evil = {"origin": "http://evil.example"}

    assert_error(client.post(f"/api/jobs/{job_id}/cancel", headers=evil), 403)
    assert_error(client.post("/api/purge", json={"states": ["done"]}, headers=evil), 403)
    assert store.get(job_id).state == JobState.QUEUED


@pytest.mark.parametrize("origin", [f"http://127.0.0.1:{PORT}", f"http://localhost:{PORT}", None])
def test_same_origin_or_no_origin_served(client: TestClient, store: PersistentQStore, origin: str | None) -> None:
    """A POST from the app's own page, or from curl without an Origin, is served."""
    headers = {"origin": origin} if origin else {}

    response = client.post("/api/jobs", json={"payloads": ["a"]}, headers=headers)

    assert response.status_code == 201, response.text
    assert len(store.jobs()) == 1


@pytest.mark.parametrize("site", ["cross-site", "same-site", "CROSS-SITE"])
def test_cross_site_fetch_without_origin_rejected(client: TestClient, store: PersistentQStore, site: str) -> None:
    """A POST that a browser marks as sent by another origin's page gets 403 even without an Origin header."""
    response = client.post("/api/jobs", json={"payloads": ["a"]}, headers={"sec-fetch-site": site})

    assert_error(response, 403, "Sec-Fetch-Site")
    assert store.jobs() == []


@pytest.mark.parametrize("site", ["same-origin", "none"])
def test_own_fetch_site_served(client: TestClient, store: PersistentQStore, site: str) -> None:
    """A POST from the dashboard's own page, or typed by the user, is served."""
    response = client.post("/api/jobs", json={"payloads": ["a"]}, headers={"sec-fetch-site": site})

    assert response.status_code == 201, response.text
    assert len(store.jobs()) == 1


def test_cross_origin_read_gets_no_cors_grant(client: TestClient) -> None:
    """A cross-origin GET gets no Access-Control-Allow-Origin, so the browser hides the response."""
    response = client.get("/api/counts", headers={"origin": "http://evil.example"})

    assert "access-control-allow-origin" not in response.headers


def test_preflight_gets_no_cors_grant(client: TestClient) -> None:
    """A CORS preflight for a JSON POST is not granted."""
    response = client.options("/api/jobs", headers={
        "origin": "http://evil.example", "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    })

    assert response.status_code >= 400
    assert "access-control-allow-origin" not in response.headers


def test_websocket_with_foreign_host_closed(client: TestClient) -> None:
    """A WebSocket handshake with a foreign Host is refused with a policy-violation close, not an HTTP reply."""
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect("/api/events", headers={"host": f"evil.example:{PORT}"}):
            pass

    assert refused.value.code == WS_POLICY_VIOLATION


def test_frames_and_sniffing_forbidden(client: TestClient) -> None:
    """Every response forbids framing by other sites and content sniffing."""
    for response in (client.get("/"), client.get("/api/counts"), client.get("/api/jobs/999")):
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


# The token, required when the app is not bound to a loopback address.


@pytest.fixture()
def token_client(tmp_path: Path) -> Iterator[TestClient]:
    """A client of an app bound to every interface with a token; its pool is not started."""
    config = make_config(tmp_path, web={"host": "0.0.0.0", "port": PORT, "token": TOKEN})
    with TestClient(create_app(config, start_pool=False), base_url=BASE_URL) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/", "/api/counts", "/api/events", "/openapi.json", "/static/app.js"])
def test_token_required_on_every_path(token_client: TestClient, path: str) -> None:
    """Without the token every request gets 401, the page and the event stream included."""
    assert_error(token_client.get(path), 401, "token")


@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN])
def test_wrong_token_rejected(token_client: TestClient, authorization: str) -> None:
    """A wrong token, an empty one or another scheme gets 401."""
    assert_error(token_client.get("/api/counts", headers={"authorization": authorization}), 401)


def test_bearer_token_served(token_client: TestClient) -> None:
    """The right bearer token is served, and a POST with it works."""
    headers = {"authorization": f"Bearer {TOKEN}"}

    assert token_client.get("/api/counts", headers=headers).status_code == 200
    assert token_client.post("/api/jobs", json={"payloads": ["a"]}, headers=headers).status_code == 201


def test_token_post_without_token_changes_nothing(token_client: TestClient) -> None:
    """A POST without the token gets 401 and puts no job."""
    assert_error(token_client.post("/api/jobs", json={"payloads": ["a"]}), 401)
    assert token_client.app.state.dashboard.store.jobs() == []


def test_token_link_sets_cookie(token_client: TestClient) -> None:
    """Opening /?token=T redirects to / with an HttpOnly, SameSite=Strict cookie that then works."""
    response = token_client.get("/", params={"token": TOKEN}, follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert token_client.get("/api/counts").status_code == 200


def test_token_cookie_found_among_same_name(token_client: TestClient) -> None:
    """A same-named cookie that another site on this host set first does not hide the right one."""
    right = quote(TOKEN, safe="")

    response = token_client.get("/api/counts", headers={"cookie": f"{TOKEN_COOKIE}=planted; {TOKEN_COOKIE}={right}"})
    wrong_only = token_client.get("/api/counts", headers={"cookie": f"{TOKEN_COOKIE}=planted"})

    assert response.status_code == 200, response.text
    assert_error(wrong_only, 401)


def test_token_in_query_only_on_page(token_client: TestClient) -> None:
    """A token in the query string of an API path is not accepted, so it does not end up in logs of links."""
    assert_error(token_client.get("/api/counts", params={"token": TOKEN}), 401)


def test_wrong_token_link_sets_no_cookie(token_client: TestClient) -> None:
    """/?token= with a wrong token gets 401 and sets no cookie."""
    response = token_client.get("/", params={"token": "guess"}, follow_redirects=False)

    assert_error(response, 401)
    assert "set-cookie" not in response.headers


def test_wildcard_bind_accepts_host_name(token_client: TestClient) -> None:
    """Bound to 0.0.0.0, the app also accepts the Host of this machine's host name, but not to other names."""
    headers = {"authorization": f"Bearer {TOKEN}"}
    own = {**headers, "host": f"{socket.gethostname()}:{PORT}"}
    foreign = {**headers, "host": f"evil.example:{PORT}"}

    assert token_client.get("/api/counts", headers=own).status_code == 200
    assert_error(token_client.get("/api/counts", headers=foreign), 400)


def test_non_loopback_without_token_refuses_to_start(tmp_path: Path) -> None:
    """basic web-app --host 0.0.0.0 without a token exits 2 naming web.token, before binding anything."""
    config = tmp_path / "config.yaml"
    config.write_text("general:\n  primary_path: data\n")

    result = CliRunner().invoke(main, ["web-app", "--config", str(config), "--host", "0.0.0.0", "--port", "1"],
                                env={"PERSISTENTQ_WEB_TOKEN": ""})

    assert result.exit_code == 2, result.output
    assert "web.token" in result.output
    assert "0.0.0.0" in result.output


@pytest.fixture()
def busy_port() -> Iterator[int]:
    """A loopback port held by a listening socket, so a check that let the app start would fail on it, not hang."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        yield taken.getsockname()[1]


@pytest.mark.parametrize("token, words", [
    ("   ", ["whitespace"]), (" lead", ["whitespace"]), ("trail\n", ["whitespace"]),
    ("p\u00e4sswort", ["U+00E4", "position 1"]), ("tab\tinside", ["U+0009"]),
])
def test_unusable_token_refuses_to_start(tmp_path: Path, busy_port: int, token: str, words: list[str]) -> None:
    """A token that no Authorization header can carry stops basic web-app with exit 2, without echoing it."""
    config = tmp_path / "config.yaml"
    config.write_text("general:\n  primary_path: data\n  n_prod: 1\n")

    result = CliRunner().invoke(main, ["web-app", "--config", str(config), "--port", str(busy_port)],
                                env={"PERSISTENTQ_WEB_TOKEN": token})

    assert result.exit_code == 2, result.output
    assert "web.token" in result.output
    for word in words:
        assert word in result.output
    if token.strip():
        assert token.strip() not in result.output
    assert not (tmp_path / "data" / "queue.sqlite3").exists()


@pytest.mark.parametrize("token, warned", [("short", True), ("x" * 15, True), ("x" * 16, False), ("", False)])
def test_short_token_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture, token: str, warned: bool) -> None:
    """A token under 16 characters is served but logged as easy to guess, without the token itself."""
    config = make_config(tmp_path, web={"port": PORT, "token": token})

    with caplog.at_level(logging.WARNING, logger="persistentq.web.serve"):
        check_web_settings(config)

    assert ("web.token has only" in caplog.text) is warned
    if token:
        assert token not in caplog.text


@pytest.mark.parametrize("host", ["http://127.0.0.1", "127.0.0.1:8080", " 127.0.0.1", "::1]", "[::1", "-bad-.example"])
def test_malformed_host_refuses_to_start(tmp_path: Path, busy_port: int, host: str) -> None:
    """A web.host that is no address or host name stops basic web-app with exit 2 naming it, before the queue opens."""
    config = tmp_path / "config.yaml"
    config.write_text("general:\n  primary_path: data\n  n_prod: 1\n")

    result = CliRunner().invoke(main, ["web-app", "--config", str(config), "--host", host, "--port", str(busy_port)],
                                env={"PERSISTENTQ_WEB_TOKEN": TOKEN.replace(" ", "")})

    assert result.exit_code == 2, result.output
    assert f"web.host {host!r} is not an IP address or host name" in result.output
    assert "web.port" in result.output
    assert not (tmp_path / "data" / "queue.sqlite3").exists()


def test_unresolvable_host_refuses_to_start(tmp_path: Path) -> None:
    """A host name that resolves to no address of this machine is a config error (exit 2), not a busy port."""
    config = tmp_path / "config.yaml"
    config.write_text("general:\n  primary_path: data\n  n_prod: 1\n")

    result = CliRunner().invoke(main, ["web-app", "--config", str(config), "--host", "no-such-host.invalid",
                                       "--port", "1"], env={"PERSISTENTQ_WEB_TOKEN": "token"})

    assert result.exit_code == 2, result.output
    assert "'no-such-host.invalid' is not an address of this machine" in result.output
    assert not (tmp_path / "data" / "queue.sqlite3").exists()


# Request size.


def test_declared_oversize_body_rejected(client: TestClient, store: PersistentQStore) -> None:
    """A Content-Length over the cap gets 413 without reading the body."""
    response = client.post("/api/jobs", content=b"{}", headers={
        "content-type": "application/json", "content-length": str(MAX_BODY_BYTES + 1),
    })

    assert_error(response, 413)
    assert store.jobs() == []


def test_chunked_oversize_body_rejected(client: TestClient, store: PersistentQStore) -> None:
    """A body sent in chunks without Content-Length is cut off at the cap with a 413, and nothing is put."""
    chunk = b" " * (1024 * 1024)

    def chunks() -> Iterator[bytes]:
        yield b'{"payloads": ["a"]'
        for _ in range(MAX_BODY_BYTES // len(chunk) + 1):
            yield chunk
        yield b"}"

    response = client.post("/api/jobs", content=chunks(), headers={"content-type": "application/json"})

    assert_error(response, 413, "request body")
    assert store.jobs() == []
