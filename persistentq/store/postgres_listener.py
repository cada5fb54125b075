"""The LISTEN side of PostgreSQL wake-ups: a thread that hears puts made by other processes.

Every put on PostgreSQL sends NOTIFY on the store's channel in the put's
transaction. A `NotifyListener` keeps one connection of its own in LISTEN
mode and calls `on_put(queue)` for each notification that another store
object sent, so idle consumers on any machine wake within milliseconds.

When the connection is lost, the thread logs it, calls `on_poll()` at least
every FALLBACK_POLL_S seconds (a slow poll, so consumers keep finding new
jobs), and reconnects with a doubling backoff, logging each attempt. After a
reconnect it calls `on_poll()` once, because the notifications of puts made
during the outage reached no listener.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# How long one wait for notifications lasts before the thread checks whether
# it should stop; `stop` therefore returns within about this time.
WAIT_S = 0.25
FALLBACK_POLL_S = 2.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
CONNECT_TIMEOUT_S = 10
# TCP keepalives make a connection to a vanished server fail within about a
# minute instead of waiting for notifications forever.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


class NotifyListener:
    """A daemon thread that LISTENs on `channel` and turns notifications into `on_put(queue)` calls.

    Notifications whose payload starts with `sender` came from the store that
    owns this listener, which already called its put listeners itself, so
    they are skipped.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        channel: str,
        sender: str,
        on_put: Callable[[str], None],
        on_poll: Callable[[], None],
        display_url: str,
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._sender_prefix = sender + ":"
        self._on_put = on_put
        self._on_poll = on_poll
        self._display_url = display_url
        self._stopping = threading.Event()
        self.listening = threading.Event()
        self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name="persistentq-listen", daemon=True)

    def __repr__(self) -> str:
        state = "listening" if self.listening.is_set() else "not connected"
        return f"<NotifyListener {self._channel!r} on {self._display_url}: {state}, {self.reconnects} reconnects>"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close its connection, waiting at most a few WAIT_S. Idempotent."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=CONNECT_TIMEOUT_S + 4 * WAIT_S)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._listen(after_outage=failures > 0)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - every driver error leads to a reconnect
                if self.listening.is_set():
                    # The connection worked before it failed, so the backoff starts over.
                    # A server that ends idle sessions would otherwise push it to BACKOFF_MAX_S.
                    failures = 0
                self.listening.clear()
                if self._stopping.is_set():
                    return
                failures += 1
                delay_s = min(BACKOFF_FIRST_S * 2 ** (failures - 1), BACKOFF_MAX_S)
                log.warning(
                    "LISTEN connection to %s failed (attempt %d): %s; new jobs are found by "
                    "polling every %g s until attempt %d in %.1f s",
                    self._display_url, failures, _one_line(exc), FALLBACK_POLL_S, failures + 1, delay_s,
                )
                self._poll_for(delay_s)

    def _listen(self, *, after_outage: bool) -> None:
        """Connect, LISTEN, and hand notifications to `on_put` until stopped or the connection fails."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, **KEEPALIVES
        ) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self.listening.set()
            if after_outage:
                self.reconnects += 1
                log.warning("LISTEN connection to %s restored", self._display_url)
                self._on_poll()
            while not self._stopping.is_set():
                for notify in conn.notifies(timeout=WAIT_S):
                    self._deliver(notify.payload)

    def _deliver(self, payload: str) -> None:
        if payload.startswith(self._sender_prefix):
            return
        _, _, queue = payload.partition(":")
        try:
            self._on_put(queue)
        except Exception:
            log.exception("a put listener raised on a notification for queue %r", queue)

    def _poll_for(self, duration_s: float) -> None:
        """Call `on_poll` every FALLBACK_POLL_S seconds for `duration_s`, unless stopped first."""
        deadline = time.monotonic() + duration_s
        while not self._stopping.is_set():
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return
            if self._stopping.wait(min(FALLBACK_POLL_S, remaining_s)):
                return
            try:
                self._on_poll()
            except Exception:
                log.exception("a put listener raised during the fallback poll")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
