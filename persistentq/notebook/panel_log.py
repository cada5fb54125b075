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
# Lines kept in the log area; older ones are dropped so the page stays fast.
MAX_LINES = 400
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_loops_with_handler: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


class PanelLogHandler(logging.Handler):
    """Collects formatted records from any thread; `flush_to` writes them to an Output widget."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter(LINE_FORMAT, datefmt="%H:%M:%S"))
        self._pending: collections.deque[str] = collections.deque(maxlen=MAX_LINES)
        self._shown: collections.deque[str] = collections.deque(maxlen=MAX_LINES)
        self._lock = threading.Lock()
        self._in_widget = 0  # lines in the Output widget, which may exceed MAX_LINES until rewritten

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._lock:
            self._pending.append(line)

    def flush_to(self, output: Any) -> int:
        """Append the lines collected since the last call to `output`, and return how many.

        All lines go out in one `append_stdout`, because each call sends the
        whole output state to the browser. Past MAX_LINES the oldest lines
        are dropped from the widget.
        """
        with self._lock:
            lines = list(self._pending)
            self._pending.clear()
        if not lines:
            return 0
        count = len(lines)
        self._shown.extend(lines)
        self._in_widget += len(lines)
        if self._in_widget > MAX_LINES:
            output.outputs = ()
            self._in_widget = len(self._shown)
            lines = list(self._shown)
        output.append_stdout("\n".join(lines) + "\n")
        return count

    @property
    def lines(self) -> list[str]:
        """Every line shown or waiting to be shown, oldest first, within MAX_LINES."""
        with self._lock:
            return [*self._shown, *self._pending][-MAX_LINES:]


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
    """Log, under the package logger, every error the loop reports from a task nobody awaited.

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
