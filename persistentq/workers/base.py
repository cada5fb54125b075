"""PersistentQInterface: the abstract asyncio worker that Producer, Consumer and Cleaner extend.

    consumer = Consumer(bridge, config).execute_function(my_function)
    consumer.start()          # an asyncio task on the running loop
    consumer.pause(); consumer.resume()
    await consumer.stop()     # graceful and idempotent

A worker repeats one turn (`run_once`) and then waits its own random time
(`next_wait_s`), independent of every other worker. It registers itself in the
store and sends a heartbeat every HEARTBEAT_S seconds while it lives.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
import random
import socket
import time
from abc import ABC, abstractmethod
from typing import ClassVar

from ..config import Config
from ..store.base import WorkerRecord
from ..store.bridge import AsyncStore
from .functions import JobFunction, check_function

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
_numbers: dict[str, itertools.count] = {}


def error_backoff_s(failed_turns: int) -> float:
    """Return the least wait after `failed_turns` turns in a row failed: 0, then 0.1 s doubling up to 10 s.

    A worker whose turns keep failing (a full disk, a deleted folder) would
    otherwise spin and flood the log when its interval is 0.
    """
    if failed_turns == 0:
        return 0.0
    return min(0.1 * 2 ** min(failed_turns - 1, 10), 10.0)


class WorkerState(str, enum.Enum):
    """The activity of a worker, as the registry and the front ends show it."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


class PersistentQInterface(ABC):
    """A worker: runs turns on the event loop until stopped."""

    kind: ClassVar[str]

    def __init__(
        self,
        bridge: AsyncStore,
        config: Config,
        *,
        worker_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        number = next(_numbers.setdefault(self.kind, itertools.count(1)))
        self.id = worker_id or f"{self.kind}-{number}@{socket.gethostname()}:{os.getpid()}"
        self.bridge = bridge
        self.config = config
        self.rng = rng or random.Random()
        self.state = WorkerState.CREATED
        self.runs = self.successes = self.errors = 0
        self.last_error: str | None = None
        self.started_at = time.time()
        self._function: JobFunction | None = None
        self._task: asyncio.Task | None = None
        self._heartbeat_task: asyncio.Task | None = None
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        self._in_turn = False

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.id} {self.state}: runs={self.runs} "
            f"successes={self.successes} errors={self.errors}>"
        )

    # What each kind of worker defines.

    @abstractmethod
    async def run_once(self) -> None:
        """Do one turn of work; an exception counts an error and the worker goes on."""

    @abstractmethod
    def next_wait_s(self) -> float:
        """Return the seconds to wait before the next turn, drawn afresh each time."""

    def default_function(self) -> JobFunction | None:
        """Return the function to run when `execute_function` was never called."""
        return None

    # Control.

    @property
    def function(self) -> JobFunction | None:
        """The function this worker runs on each turn."""
        return self._function or self.default_function()

    def execute_function(self, function: JobFunction) -> PersistentQInterface:
        """Set the function run on each turn (async def or plain def) and return the worker."""
        self._function = check_function(function)
        return self

    @property
    def running(self) -> bool:
        """True from `start` until the worker's task has ended."""
        return self._task is not None and not self._task.done()

    def start(self) -> asyncio.Task:
        """Start the worker as a task on the running loop; starting twice returns the same task."""
        if self.running:
            return self._task
        if self.function is None and self.kind != "cleaner":
            raise RuntimeError(f"{self.id}: call execute_function(fn) before start()")
        self._stopping.clear()
        self._hurry.clear()
        self.state = WorkerState.PAUSED if not self._resumed.is_set() else WorkerState.RUNNING
        self._task = asyncio.get_running_loop().create_task(self._main(), name=self.id)
        self._task.add_done_callback(self._on_task_done)
        self._heartbeat_task = asyncio.get_running_loop().create_task(
            self._heartbeats(), name=f"{self.id} heartbeat"
        )
        log.info("%s: started", self.id)
        return self._task

    def pause(self) -> None:
        """Finish the current turn, then wait for `resume` before the next one."""
        self._resumed.clear()
        if self.running:
            self._set_state(WorkerState.PAUSED)

    def resume(self) -> None:
        """Let a paused worker take turns again."""
        self._resumed.set()
        if self.running:
            self._set_state(WorkerState.RUNNING)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking turns, give the current one `grace_s` seconds, then cancel it. Idempotent."""
        if grace_s is None:
            grace_s = self.config.general.shutdown_grace
        self._stopping.set()
        task = self._task
        if task is not None and not task.done():
            self._set_state(WorkerState.STOPPING)
            # A worker between turns ends as soon as the stop event is set, so only a turn needs grace.
            timeout_s = grace_s if self._in_turn else None
            hurry = asyncio.ensure_future(self._hurry.wait())
            done, _ = await asyncio.wait({task, hurry}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
            if task not in done:
                reason = "the stop was hurried" if self._hurry.is_set() else f"{grace_s:g} s of grace ended"
                log.warning("%s: turn still running when %s; cancelling it", self.id, reason)
                task.cancel()
                await asyncio.wait({task})
        await self._stop_heartbeats()

    def hurry(self) -> None:
        """Cut short the grace period of a `stop` in progress, or of the next one."""
        self._hurry.set()

    # The loop.

    async def _main(self) -> None:
        failed_turns = 0
        while not self._stopping.is_set():
            if not self._resumed.is_set():
                await self._wait_for(self._resumed.wait(), timeout_s=None)
                continue
            self._in_turn = True
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except (Exception, SystemExit, KeyboardInterrupt) as exc:
                # Raised from user code in a task, these two would otherwise escape
                # the event loop and end every worker of the process.
                self.errors += 1
                failed_turns += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("%s: turn failed, going on: %s", self.id, self.last_error)
            else:
                failed_turns = 0
            finally:
                self._in_turn = False
            await self.sleep(max(self.next_wait_s(), error_backoff_s(failed_turns)))

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less when the worker stops."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await self._wait_for(asyncio.sleep(seconds), timeout_s=None)

    async def _wait_for(self, awaitable, *, timeout_s: float | None) -> bool:
        """Await `awaitable` until it ends, the worker stops or `timeout_s` passes; True if it ended."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, stop}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
        return work.done() and not work.cancelled()

    def _on_task_done(self, task: asyncio.Task) -> None:
        stopping = self._heartbeat_task is not None and self._stopping.is_set()
        if self._heartbeat_task is not None and not stopping:
            # `stop` otherwise ends the heartbeats itself, after recording the stop.
            self._heartbeat_task.cancel()
        if not task.cancelled() and task.exception() is not None:
            self.state = WorkerState.ERROR
            self.last_error = f"{type(task.exception()).__name__}: {task.exception()}"
            log.error("%s: died: %s", self.id, self.last_error, exc_info=task.exception())

    # The registry.

    def record(self) -> WorkerRecord:
        """Return the registry row for this worker as it is now."""
        return WorkerRecord(
            id=self.id,
            kind=self.kind,
            host=socket.gethostname(),
            pid=os.getpid(),
            state=str(self.state),
            started_at=self.started_at,
            heartbeat_at=time.time(),
            runs=self.runs,
            successes=self.successes,
            errors=self.errors,
        )

    def _set_state(self, state: WorkerState) -> None:
        if state != self.state:
            self.state = state
            log.info("%s: %s", self.id, state)

    async def _heartbeats(self) -> None:
        while True:
            try:
                await self.bridge.call(self.bridge.store.heartbeat, [self.record()])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: heartbeat failed; the next one retries", self.id)
            await asyncio.sleep(HEARTBEAT_S)

    async def _stop_heartbeats(self) -> None:
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        if self.state != WorkerState.STOPPED:
            self._set_state(WorkerState.STOPPED)
            try:
                await self.bridge.call(self.bridge.store.heartbeat, [self.record()])
            except Exception:
                log.exception("%s: could not record the stop in the registry", self.id)
