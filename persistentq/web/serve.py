"""Run the dashboard with uvicorn in the foreground: the body of `basic web-app`.

Ctrl-C, SIGTERM or SIGHUP stop it as they stop `basic run`. The server stops
taking requests, open event streams end, and the pool stops gracefully, so
running jobs finish or go back to the queue. A second Ctrl-C hands them back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Iterator

import uvicorn

from ..config import Config, require_web_token
from ..errors import PersistentQError
from ..signals import install_stop_handlers
from .app import create_app

log = logging.getLogger(__name__)

# Seconds uvicorn waits for open requests once a stop began; event streams end at once.
REQUEST_GRACE_S = 5


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
    require_web_token(config)
    asyncio.run(_serve(config))


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
