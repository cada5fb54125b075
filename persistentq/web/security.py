"""The dashboard's request checks: Host, token, Origin and body size, as one ASGI middleware.

    app.add_middleware(SecurityMiddleware, policy=AccessPolicy.for_address("127.0.0.1", 8080, token=""))

Every request must name the app itself in its Host header, so a page served
from another name that resolves to this machine (DNS rebinding) reads
nothing. With a token, every request must carry it, as `Authorization:
Bearer TOKEN` or as the cookie that opening `/?token=TOKEN` once sets.
Requests that change state (POST, DELETE) are rejected when their Origin
header names another site, or when their Sec-Fetch-Site header says that a
page of another origin sent them, so another page open in the same browser
cannot send them. Requests without either header, as curl sends them, are served.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)

TOKEN_COOKIE = "persistentq_token"
LOG_EVERY_REJECTIONS = 100
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The largest request body read: a 1 MiB payload whose characters all need
# JSON escapes (\uXXXX, 6 bytes each) still fits.
MAX_BODY_BYTES = 8 * 1024 * 1024
# Headers sent with every response: no framing by other sites (clickjacking),
# no content sniffing, and scripts, styles and data only from the app itself.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
     b"form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
# Sec-Fetch-Site values of requests that no other origin's page sent: the
# page itself, or the user (address bar, bookmark).
OWN_FETCH_SITES = frozenset({"same-origin", "none"})
# WebSocket close code for a policy violation (RFC 6455, section 7.4.1).
WS_POLICY_VIOLATION = 1008
TOKEN_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def token_problem(token: str) -> str | None:
    """Return why `token` cannot be sent in an Authorization header, or None when it can.

    The header carries printable ASCII, and its value loses leading and
    trailing spaces, so a token outside those rules could never be matched.
    """
    if token != token.strip():
        return "starts or ends with whitespace, which an Authorization header drops"
    for position, character in enumerate(token):
        if not " " <= character <= "~":
            return (f"has the character U+{ord(character):04X} at position {position}, and HTTP headers "
                    "carry only printable ASCII")
    return None


@dataclass(frozen=True)
class AccessPolicy:
    """The Host header values that the app accepts, and the token it requires ("" for none)."""

    hosts: frozenset[str]
    token: str = ""

    @classmethod
    def for_address(cls, host: str, port: int, *, token: str = "") -> AccessPolicy:
        """Build the policy of an app served on `host`:`port`.

        The app accepts the host it binds, localhost, 127.0.0.1 and [::1], each
        with the port. Bound to every interface (0.0.0.0 or ::), it also
        accepts this machine's host name and the address that a connection
        actually reached, which `allows_host` checks per request.
        """
        names = {"localhost", "127.0.0.1", "[::1]", _bracketed(host)}
        if host in WILDCARD_HOSTS:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        hosts = {f"{name.lower()}:{port}" for name in names if name}
        if port == 80:
            hosts |= {name.lower() for name in names if name}
        return cls(hosts=frozenset(hosts), token=token)

    def allows_host(self, host_header: str, reached: tuple[str, int] | None = None) -> bool:
        """Tell whether a Host header names this app, or the local address the connection reached."""
        host = host_header.strip().lower()
        if host in self.hosts:
            return True
        if reached is None or not self._wildcard:
            return False
        address, port = reached
        return host == f"{_bracketed(address).lower()}:{port}"

    @property
    def _wildcard(self) -> bool:
        return any(host.rpartition(":")[0] in ("0.0.0.0", "[::]") for host in self.hosts)

    def allows_origin(self, origin: str, host_header: str) -> bool:
        """Tell whether an Origin header names this app: one of its hosts, or the Host already checked."""
        scheme, _, host = origin.strip().lower().partition("://")
        return scheme == "http" and (host in self.hosts or host == host_header.strip().lower())

    def token_matches(self, presented: str | None) -> bool:
        """Compare a presented token with the configured one in constant time."""
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "replace"), self.token.encode("utf-8"))


def _bracketed(host: str) -> str:
    """Return an IPv6 address in the brackets that Host headers use; other hosts unchanged."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    return f"[{address}]" if address.version == 6 else str(address)


class SecurityMiddleware:
    """Rejects requests that fail the AccessPolicy before any route runs, and caps body size."""

    def __init__(self, app: ASGIApp, *, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy
        self.rejected: Counter[int] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        rejection = self._rejection(scope, headers)
        if rejection is not None:
            status, message = rejection
            self._log_rejection(scope, status, message)
            if scope["type"] == "websocket":
                # Closing before accepting makes the server reject the handshake with 403.
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
            else:
                await _send_error(send, status, message)
            return
        if self._sets_token_cookie(scope):
            await _redirect_with_cookie(send, scope, self.policy.token)
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            await _send_error(send, 413, f"request body over the limit of {MAX_BODY_BYTES} bytes")
            return
        if scope["type"] == "http" and scope.get("method") not in SAFE_METHODS:
            body = await _read_body(receive)
            if body is None:
                await _send_error(send, 413, f"request body over the limit of {MAX_BODY_BYTES} bytes")
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, _with_headers(send))

    def _rejection(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """Return (status, message) for a request to reject, or None to serve it."""
        host = headers.get("host", "")
        if not self.policy.allows_host(host, scope.get("server")):
            loopback = next(name for name in sorted(self.policy.hosts) if name.startswith("127.0.0.1"))
            return 400, (f"Host {host[:100]!r} is not this app's address; open the dashboard at "
                         f"http://{loopback}/ or by the address it was started on")
        if self.policy.token and not self._has_token(scope, headers):
            return 401, ("missing or wrong token; send 'Authorization: Bearer TOKEN', or open "
                         "/?token=TOKEN once in the browser")
        if scope.get("method", "GET") in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and not self.policy.allows_origin(origin, host):
            return 403, (f"cross-origin request from {origin[:100]!r} rejected; state changes "
                         "come only from the dashboard's own page or from clients without an Origin header")
        site = headers.get("sec-fetch-site")
        if site is not None and site.strip().lower() not in OWN_FETCH_SITES:
            return 403, (f"request sent by a page of another origin (Sec-Fetch-Site: {site[:40]!r}) rejected; "
                         "state changes come only from the dashboard's own page or from clients such as curl")
        return None

    def _log_rejection(self, scope: Scope, status: int, message: str) -> None:
        """Log the first rejection of each status, then one in LOG_EVERY_REJECTIONS, so no client floods the log."""
        self.rejected[status] += 1
        count = self.rejected[status]
        if count == 1 or count % LOG_EVERY_REJECTIONS == 0:
            client = (scope.get("client") or ("unknown", 0))[0]
            log.warning("rejected %s %s from %s with %d (%d so far): %s", scope.get("method"),
                        scope.get("path"), client, status, count, message)

    def _has_token(self, scope: Scope, headers: dict[str, str]) -> bool:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.policy.token_matches(credentials.strip()):
            return True
        # Every cookie of that name counts: another site on this host name (any port) can
        # set one with a longer Path, which the browser then sends first.
        cookies = _cookies(headers.get("cookie", ""), TOKEN_COOKIE)
        if any(self.policy.token_matches(unquote(cookie)) for cookie in cookies):
            return True
        return self._sets_token_cookie(scope)

    def _sets_token_cookie(self, scope: Scope) -> bool:
        """Tell whether this is `GET /?token=T` with the right token, which sets the cookie."""
        if not self.policy.token or scope.get("method") != "GET" or scope.get("path") != "/":
            return False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return self.policy.token_matches((query.get("token") or [None])[0])


def _headers(scope: Scope) -> dict[str, str]:
    # Latin-1 maps every byte to a character, so no header value fails to decode.
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


def _cookies(header: str, name: str) -> list[str]:
    values = []
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            values.append(value)
    return values


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(send: Send, scope: Scope, token: str) -> None:
    """Respond to `/?token=T` with the token cookie and a redirect to `/`, so the token leaves the address bar."""
    query = {key: values for key, values in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()
             if key != "token"}
    location = "/" + (f"?{urlencode(query, doseq=True)}" if query else "")
    # NOTE: browsers send cookies to every port of a host name, so other web servers on
    # this host receive the token too. Without HTTPS, no cookie attribute prevents that.
    cookie = f"{TOKEN_COOKIE}={quote(token, safe='')}; Path=/; HttpOnly; SameSite=Strict"
    headers = [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1")),
               (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": b""})


async def _read_body(receive: Receive) -> bytes | None:
    """Read a whole request body, or return None once it grows past MAX_BODY_BYTES.

    Reading it here, before the app, rejects a body sent in chunks without
    Content-Length with the same 413 as one that declares its length.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # The client disconnected, so the app gets an empty body and then the disconnect.
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Return a receive callable that hands the app `body` first, then waits on the real `receive`."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _with_headers(send: Send) -> Send:
    """Wrap `send` so that every response carries SECURITY_HEADERS."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)

    return send_with_headers
