"""The control panel's log area: worker log lines and every exception raised in a background task.

Lines are written with `Output.append_stdout`, never by printing inside
`with output:`: a task on the kernel's loop that prints inside that block
can have its lines routed to whatever cell runs at that moment, or dropped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import weakref
from typing import Any

log = logging.getLogger(__name__)

# The logger whose records the panel shows: every module of the package logs under it.
PACKAGE_LOGGER = "persistentq"
# Records kept in the log area; older ones are dropped so the page stays fast.
MAX_RECORDS = 200
LINE_FORMAT = "%(asctime)s %(levelname)s %(message)s"

_loops_with_handler: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


class PanelLogHandler(logging.Handler):
    """Collects formatted records from any thread; `flush_to` shows them in an Output widget, newest first."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter(LINE_FORMAT, datefmt="%H:%M:%S"))
        self._pending: collections.deque[str] = collections.deque(maxlen=MAX_RECORDS)
        self._shown: collections.deque[str] = collections.deque(maxlen=MAX_RECORDS)
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._lock:
            self._pending.append(text)

    def flush_to(self, output: Any) -> int:
        """Show the records collected since the last call in `output`, and return how many.

        The newest record comes first, so the area needs no scrolling to show
        it. The area is rewritten with one `append_stdout` per call, because
        each call sends the whole output state to the browser anyway.
        """
        with self._lock:
            new = list(self._pending)
            self._pending.clear()
            self._shown.extend(new)
            text = "\n".join(reversed(self._shown))
        if not new:
            return 0
        output.outputs = ()
        output.append_stdout(text + "\n")
        return len(new)

    @property
    def records(self) -> list[str]:
        """The formatted records shown or waiting to be shown, oldest first, at most MAX_RECORDS."""
        with self._lock:
            return [*self._shown, *self._pending][-MAX_RECORDS:]


def attach_handler(handler: logging.Handler) -> None:
    """Send the package's INFO records and above to `handler`.

    The package logger is set to INFO when it would drop those records, so
    other handlers on it or on the root logger may then see them too.
    """
    logger = logging.getLogger(PACKAGE_LOGGER)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)


def detach_handler(handler: logging.Handler) -> None:
    """Stop sending records to `handler`."""
    logging.getLogger(PACKAGE_LOGGER).removeHandler(handler)


def log_unhandled_task_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log, under the package logger, every error the loop reports from a task that no code awaited.

    asyncio reports such an error through the loop's exception handler when
    the task is garbage-collected. The handler set before stays in place and
    is still called, so the kernel's own log keeps the report too.
    """
    if loop in _loops_with_handler:
        return
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exception = context.get("exception")
        task = context.get("task") or context.get("future")
        name = task.get_name() if isinstance(task, asyncio.Task) else "a callback"
        log.error(
            "background task %s raised: %s", name, context.get("message", ""),
            exc_info=(type(exception), exception, exception.__traceback__) if exception else None,
        )
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
    _loops_with_handler.add(loop)
