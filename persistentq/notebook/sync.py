"""Synchronous helpers for plain cells and scripts: let the workers run, wait for an empty queue.

    run_for(10)                             # workers on the kernel's loop work for 10 s
    wait_until_empty("config.yaml", timeout_s=60)

In a Jupyter cell the kernel's event loop is already running the cell, so a
plain function cannot wait on it with `run_until_complete`. These helpers
apply nest-asyncio to that loop on their first call, and only then: importing
persistentq changes no event loop. Where no loop runs (a script, a terminal
REPL), they run a private event loop of this module instead, and workers
started through `run_sync` live on that loop between calls.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable
from typing import TypeVar

from ..store.base import JobState
from .sources import QueueSource, open_queue

log = logging.getLogger(__name__)

T = TypeVar("T")

_nested_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_private_loops: dict[int, asyncio.AbstractEventLoop] = {}
_private_lock = threading.Lock()


def run_sync(awaitable: Awaitable[T]) -> T:
    """Run `awaitable` to completion from synchronous code and return its result.

    On a thread whose event loop is running (a Jupyter cell), nest-asyncio is
    applied to that loop on first use, and the loop runs the awaitable while
    its background tasks go on. Elsewhere, this thread's private loop runs it.
    """
    loop = _running_loop()
    if loop is None:
        return _private_loop().run_until_complete(awaitable)
    allow_nesting(loop)
    return loop.run_until_complete(awaitable)


def allow_nesting(loop: asyncio.AbstractEventLoop) -> None:
    """Apply nest-asyncio to `loop` unless it was applied before."""
    if loop in _nested_loops:
        return
    import nest_asyncio

    nest_asyncio.apply(loop)
    _nested_loops.add(loop)
    log.debug("nest-asyncio applied to the running event loop, so synchronous helpers can wait on it")


def nesting_applied(loop: asyncio.AbstractEventLoop) -> bool:
    """Tell whether this module applied nest-asyncio to `loop`."""
    return loop in _nested_loops


def run_for(seconds: float) -> None:
    """Block for `seconds` while the event loop runs, so workers started in the background make progress.

    A `time.sleep` in a cell freezes every task on the kernel's loop; this
    does not.
    """
    run_sync(asyncio.sleep(_check_seconds(seconds, "seconds")))


def wait_until_empty(
    source: QueueSource, *, timeout_s: float = 60.0, poll_s: float = 0.2, queue: str | None = None
) -> dict[JobState, int]:
    """Block until the queue has no queued and no running job, and return its counts per state.

    Jobs waiting for a retry count as queued. Raises TimeoutError after
    `timeout_s` seconds with the counts at that moment, and the jobs stay
    as they are.
    """
    return run_sync(until_empty(source, timeout_s=timeout_s, poll_s=poll_s, queue=queue))


async def until_empty(
    source: QueueSource, *, timeout_s: float = 60.0, poll_s: float = 0.2, queue: str | None = None
) -> dict[JobState, int]:
    """Wait until the queue has no queued and no running job. This is the awaitable form of `wait_until_empty`."""
    timeout_s = _check_seconds(timeout_s, "timeout_s")
    poll_s = _check_seconds(poll_s, "poll_s")
    deadline = time.monotonic() + timeout_s
    with open_queue(source, queue=queue) as ref:
        while True:
            counts = await asyncio.to_thread(ref.store.counts, queue=ref.queue)
            if counts[JobState.QUEUED] == 0 and counts[JobState.RUNNING] == 0:
                return counts
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"queue {ref.queue!r} still has {counts[JobState.QUEUED]} queued and "
                    f"{counts[JobState.RUNNING]} running jobs after {timeout_s:g} s; "
                    "start consumers, or wait longer with a larger timeout_s"
                )
            await asyncio.sleep(poll_s)


def _check_seconds(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _private_loop() -> asyncio.AbstractEventLoop:
    """Return this thread's private event loop, created on first use and kept for later calls."""
    with _private_lock:
        loop = _private_loops.get(threading.get_ident())
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            _private_loops[threading.get_ident()] = loop
        return loop
