"""Running one attempt of a consumer function within `consumer.n_time`."""

from __future__ import annotations

import asyncio
import logging
import threading

from ..errors import JobTimeoutError
from .functions import JobFunction, is_async
from .sync_runner import SyncRunner

log = logging.getLogger(__name__)

# Seconds a cancelled job coroutine gets to end, at n_time or when its consumer
# stops, before the attempt stops waiting for it and leaves it running.
CANCEL_WAIT_S = 1.0


async def call_with_limit(
    function: JobFunction,
    payload: str,
    *,
    timeout_s: float,
    sync_mode: str,
    runner: SyncRunner | None,
) -> object:
    """Return `function(payload)`, stopped with JobTimeoutError after `timeout_s` seconds.

    A coroutine is cancelled at the limit. One that catches CancelledError
    and goes on is abandoned after CANCEL_WAIT_S more seconds, so it cannot
    hold its consumer or its job for ever. A plain def runs in one of the
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
    """A job function raised a BaseException that is no Exception, such as SystemExit; it fails the attempt only."""


async def _contained(coroutine) -> object:
    """Await a job coroutine, turning every BaseException but cancellation into FunctionExitError.

    asyncio re-raises SystemExit and KeyboardInterrupt out of the event loop
    when a task's coroutine raises them, which would end every worker of the
    process, and the consumer catches only Exception from a job.
    """
    try:
        return await coroutine
    except (Exception, asyncio.CancelledError):
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, GeneratorExit, custom ones
        raise FunctionExitError(f"the job function raised {type(exc).__name__}({exc})") from exc


async def _await_with_limit(coroutine, timeout_s: float) -> object:
    """Await `coroutine` in a task of its own, so that the attempt can stop waiting even if it ignores cancellation."""
    task = asyncio.get_running_loop().create_task(coroutine, name="persistentq job")
    try:
        await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        # The consumer is stopping: the job gets the same short wait, then the stop goes on.
        await _cancel(task)
        raise
    if task.cancelled():
        # Nothing here cancelled it, so the function raised CancelledError itself,
        # for example from awaiting a future that something else cancelled.
        raise FunctionExitError("the job function raised CancelledError, although its consumer did not cancel it")
    if task.done():
        return task.result()
    if await _cancel(task):
        raise JobTimeoutError(f"attempt ran past n_time ({timeout_s:g} s) and was stopped")
    raise JobTimeoutError(
        f"attempt ran past n_time ({timeout_s:g} s) and went on for {CANCEL_WAIT_S:g} s after it "
        "was cancelled, so it was abandoned and may still run on the event loop; let "
        "asyncio.CancelledError propagate out of the job function"
    )


async def _cancel(task: asyncio.Task) -> bool:
    """Cancel a job task and wait up to CANCEL_WAIT_S for it to end; return whether it ended."""
    task.cancel()
    await asyncio.wait({task}, timeout=CANCEL_WAIT_S)
    if task.done():
        _retrieve(task)
        return True
    log.warning(
        "a job coroutine ignored its cancellation for %g s and was abandoned; it keeps running "
        "on the event loop until it returns, and asyncio.run waits for it before it ends", CANCEL_WAIT_S,
    )
    task.add_done_callback(_retrieve)
    return False


def _retrieve(task: asyncio.Task) -> None:
    # Reading the outcome keeps asyncio from reporting an exception that was never retrieved.
    if not task.cancelled() and task.exception() is not None:
        log.info("an abandoned or cancelled job coroutine ended with %r", task.exception())


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
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting attempt
            result, error = None, exc
        except BaseException as exc:  # noqa: BLE001 - would end the consumer that awaits it
            result, error = None, FunctionExitError(f"the job function raised {type(exc).__name__}({exc})")
            error.__cause__ = exc
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
