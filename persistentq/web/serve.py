"""Run the dashboard with uvicorn in the foreground: the body of `basic web-app`.

Ctrl-C, SIGTERM or SIGHUP stop it as they stop `basic run`. The server stops
taking requests, open event streams end, and the pool stops gracefully, so
running jobs finish or go back to the queue. A second Ctrl-C hands them back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import re
import socket
from collections.abc import Iterator

import uvicorn

from ..config import Config, require_web_token
from ..errors import ConfigError, PersistentQError
from ..signals import install_stop_handlers
from .app import create_app
from .security import TOKEN_HINT, token_problem

log = logging.getLogger(__name__)

# Seconds uvicorn waits for open requests once a stop began; event streams end at once.
REQUEST_GRACE_S = 5
# A DNS name: dot-separated labels of letters, digits and inner hyphens, up to 63 characters each.
HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
MAX_HOST_NAME_CHARS = 253
# Shorter tokens get a warning, because the app does not slow down repeated wrong guesses.
MIN_TOKEN_CHARS = 16


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to `install_stop_handlers`.

    uvicorn's own handler skips the app's shutdown on a second Ctrl-C, which
    would leave running jobs leased instead of handing them back.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve_dashboard(config: Config, *, host: str | None = None, port: int | None = None) -> None:
    """Serve the dashboard on `host`:`port` (default: web.host and web.port) until a stop signal.

    Raises ConfigError when the host is not a loopback address and no token
    is set, and PersistentQError when the port cannot be bound.
    """
    changes = {key: value for key, value in (("host", host), ("port", port)) if value is not None}
    if changes:
        config = config.replace(web=changes)
    check_web_settings(config)
    require_web_token(config)
    asyncio.run(_serve(config))


def check_web_settings(config: Config) -> None:
    """Raise ConfigError when web.host is not an address or host name, or web.token cannot be sent in a header."""
    prefix = f"{config.source}: " if config.source is not None else ""
    host = config.web.host
    if not _is_host(host):
        raise ConfigError(
            f"{prefix}web.host {host!r} is not an IP address or host name; give the address alone, "
            "such as 127.0.0.1, ::1 or 0.0.0.0, and the port in web.port or --port"
        )
    problem = token_problem(config.web.token)
    if problem is not None:
        # The message names the setting but not the value, because the token is a secret.
        raise ConfigError(
            f"{prefix}web.token (or PERSISTENTQ_WEB_TOKEN) {problem}; choose a token of printable "
            f"ASCII characters, such as the output of: {TOKEN_HINT}"
        )
    if 0 < len(config.web.token) < MIN_TOKEN_CHARS:
        log.warning("web.token has only %d characters, and nothing slows down repeated guesses; use %d or "
                    "more, such as the output of: %s", len(config.web.token), MIN_TOKEN_CHARS, TOKEN_HINT)


def _is_host(host: str) -> bool:
    """Tell whether `host` is an IPv4 or IPv6 address (IPv6 optionally in brackets) or a DNS name."""
    address = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return address == host and len(host) <= MAX_HOST_NAME_CHARS and HOST_NAME.fullmatch(host) is not None
    return True


async def _serve(config: Config) -> None:
    listener = _bind(config.web.host, config.web.port)
    try:
        app = create_app(config)
    except BaseException:
        # An unreachable database stops the app here; the port must not stay bound
        # for the rest of a process that called serve_dashboard.
        listener.close()
        raise
    server = _Server(uvicorn.Config(
        app, log_config=None, access_log=False, timeout_graceful_shutdown=REQUEST_GRACE_S,
        server_header=False,
    ))
    stop = asyncio.Event()
    install_stop_handlers(app.state.dashboard.pool, stop)
    serving = asyncio.create_task(server.serve(sockets=[listener]), name="uvicorn")
    stopping = asyncio.create_task(stop.wait(), name="stop signal")
    log.info("dashboard on %s; Ctrl-C stops it", _address(config))
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    app.state.dashboard.closing.set()
    server.should_exit = True
    await serving


def _bind(host: str, port: int) -> socket.socket:
    """Open the listening socket before the pool starts, so a busy port stops nothing half-started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # asyncio sets TCP_NODELAY on each connection only when the proto is IPPROTO_TCP.
    # With proto 0, a reply on a kept-alive connection waited about 40 ms for the
    # client's delayed ACK (measured with curl on Linux).
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host.strip("[]"), port))
    except OSError as exc:
        listener.close()
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                f"web.host {host!r} is not an address of this machine ({exc.strerror}); set web.host "
                "or --host to 127.0.0.1, or to another address or name of this machine"
            ) from exc
        reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        raise PersistentQError(
            f"web.host {host!r} port {port} {reason}; pass --port with a free port or --host with "
            "an address of this machine"
        ) from exc
    listener.listen(128)
    listener.set_inheritable(True)
    return listener


def _address(config: Config) -> str:
    host = config.web.host
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    suffix = " (token required)" if config.web.token else ""
    return f"http://{bracketed}:{config.web.port}/{suffix}"
