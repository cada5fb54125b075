"""Running one attempt of a consumer function within `consumer.n_time`."""

from __future__ import annotations

import asyncio

from ..errors import JobTimeoutError
from .functions import JobFunction, is_async
from .sync_runner import SyncRunner


async def call_with_limit(
    function: JobFunction,
    payload: str,
    *,
    timeout_s: float,
    sync_mode: str,
    runner: SyncRunner | None,
) -> object:
    """Return `function(payload)`, stopped with JobTimeoutError after `timeout_s` seconds.

    A coroutine is cancelled at the limit. A plain def runs in one of the
    runner's child processes, which is killed at the limit. With `sync_mode`
    "thread" it runs in a thread instead. A thread cannot be stopped, so the
    call is abandoned at the limit while the thread runs on.
    """
    if is_async(function):
        return await _await_with_limit(function(payload), timeout_s)
    if sync_mode == "thread":
        return await _await_with_limit(asyncio.to_thread(function, payload), timeout_s)
    if runner is None:
        raise RuntimeError("a plain def in sync_mode 'process' needs a SyncRunner")
    return await runner.run(function, payload, timeout_s=timeout_s)


async def _await_with_limit(awaitable, timeout_s: float) -> object:
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError:
        raise JobTimeoutError(f"attempt ran past n_time ({timeout_s:g} s) and was stopped") from None
