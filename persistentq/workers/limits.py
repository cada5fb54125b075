"""Running one attempt of a consumer function within `consumer.n_time`."""

from __future__ import annotations

import asyncio
import sys
import threading

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

    A coroutine is cancelled at the limit. NOTE: a coroutine that catches
    CancelledError and goes on cannot be stopped this way. A plain def runs in one of the
    runner's child processes, which is killed at the limit. With `sync_mode`
    "thread" it runs in a thread instead. A thread cannot be stopped, so the
    call is abandoned at the limit while the thread runs on.
    """
    if is_async(function):
        return await _await_with_limit(_contained(function(payload)), timeout_s)
    if sync_mode == "thread":
        return await _await_thread_with_limit(function, payload, timeout_s)
    if runner is None:
        raise RuntimeError("a plain def in sync_mode 'process' needs a SyncRunner")
    return await runner.run(function, payload, timeout_s=timeout_s)


class FunctionExitError(Exception):
    """A job function raised SystemExit or KeyboardInterrupt, which fails the attempt only."""


async def _contained(coroutine) -> object:
    """Await a job coroutine, turning SystemExit and KeyboardInterrupt into FunctionExitError.

    asyncio re-raises those two out of the event loop when a task's coroutine
    raises them, which would end every worker of the process.
    """
    try:
        return await coroutine
    except (SystemExit, KeyboardInterrupt) as exc:
        raise FunctionExitError(f"the job function raised {type(exc).__name__}({exc})") from exc


async def _await_with_limit(awaitable, timeout_s: float) -> object:
    try:
        if sys.version_info >= (3, 11):
            # asyncio.timeout cancels the awaiting task itself, without the extra
            # task per call that wait_for creates.
            async with asyncio.timeout(timeout_s):
                return await awaitable
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError:
        raise JobTimeoutError(f"attempt ran past n_time ({timeout_s:g} s) and was stopped") from None


async def _await_thread_with_limit(function: JobFunction, payload: str, timeout_s: float) -> object:
    """Run `function(payload)` in a daemon thread and stop waiting for it at the limit.

    A daemon thread, not the loop's default executor: `asyncio.run` joins the
    executor's threads at exit, so an abandoned call would hold up the
    process's exit until it returned.
    """
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result: object, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def target() -> None:
        try:
            result, error = function(payload), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting attempt
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # The loop is closed, so no attempt awaits this call any more.

    threading.Thread(target=target, name=f"persistentq-job-{getattr(function, '__name__', 'call')}", daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout_s)
    except asyncio.TimeoutError:
        raise JobTimeoutError(
            f"attempt ran past n_time ({timeout_s:g} s); its thread cannot be stopped "
            "and was abandoned (set consumer.sync_mode: process to have it killed)"
        ) from None
