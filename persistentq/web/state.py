"""The state that the dashboard's routes share: config, store, pool, and the reads they all make."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request

from ..config import Config
from ..files import FilePipeline
from ..pool import WorkerPool
from ..store.base import PersistentQStore
from ..workers.base import HEARTBEAT_S
from .schemas import (
    BucketOut, CountsOut, PoolOut, PoolWorkerOut, RegisteredWorkerOut, SnapshotOut, ThroughputOut,
)

# Workers that stopped longer ago than this are left out of the registry list.
STALE_STOPPED_S = 600
# Stopped workers in each snapshot. Scaling up and down registers new workers
# each time, and a page that redrew thousands of rows every second lagged.
MAX_STOPPED_IN_SNAPSHOT = 20
DEFAULT_INTERVAL_S = 5.0
DEFAULT_WINDOW_S = 300.0
# Open event streams allowed at once. Each browser tab keeps one open, and more
# are rejected with 503, so that scripts opening streams cannot starve the workers.
MAX_EVENT_STREAMS = 32

T = TypeVar("T")


@dataclass
class Dashboard:
    """The objects behind one dashboard app."""

    config: Config
    pool: WorkerPool
    events_interval_s: float = 1.0
    # Set when the server begins to shut down, so that event streams end and
    # uvicorn need not wait for them.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    open_streams: int = 0
    # (interval_s, window_s) -> (monotonic start, task) of the latest snapshot event,
    # which every stream with those chart settings shares.
    _shared_events: dict[tuple[float, float], tuple[float, asyncio.Task[str]]] = field(
        default_factory=dict, repr=False)

    @property
    def store(self) -> PersistentQStore:
        """The pool's store, which the API reads and writes too."""
        return self.pool.store

    @property
    def queue(self) -> str:
        """The queue that the dashboard shows and its pool works on."""
        return self.config.general.queue

    @property
    def file_pipeline(self) -> FilePipeline | None:
        """The file pipeline whose inputs the payloads name, or None when a custom consumer runs."""
        if self.config.consumer.function:
            return None
        return self.pool.pipeline

    def pool_out(self) -> PoolOut:
        """Describe the pool; call it on the event loop, where the pool's lists change."""
        pool = self.pool
        workers = [
            PoolWorkerOut(id=worker.id, kind=worker.kind, state=str(worker.state), runs=worker.runs,
                          successes=worker.successes, errors=worker.errors, last_error=worker.last_error)
            for worker in pool.workers
        ]
        return PoolOut(
            running=pool.running, queue=self.queue, producers=len(pool.producers),
            consumers=len(pool.consumers), paused=sorted(pool.paused_kinds), workers=workers,
        )

    def registry(self) -> list[RegisteredWorkerOut]:
        """Return the registered workers of every process, without those stopped long ago (a store read)."""
        now = time.time()
        return [
            RegisteredWorkerOut.of(record, lost=record.is_lost(now, HEARTBEAT_S))
            for record in self.store.workers()
            if not (record.state == "stopped" and now - record.heartbeat_at > STALE_STOPPED_S)
        ]

    def throughput(self, *, interval_s: float, window_s: float) -> ThroughputOut:
        """Return jobs done and failed per `interval_s` over the last `window_s` seconds (a store read)."""
        since = (time.time() - window_s) // interval_s * interval_s
        rows = self.store.throughput(queue=self.queue, interval_s=interval_s, since=since)
        buckets = [BucketOut(start=start, done=done, failed=failed) for start, done, failed in rows]
        return ThroughputOut(interval_s=interval_s, since=since, buckets=buckets)

    async def snapshot(self, *, interval_s: float, window_s: float) -> SnapshotOut:
        """Gather counts, pool, registry and throughput; store reads run off the event loop."""
        def read() -> tuple[CountsOut, list[RegisteredWorkerOut], ThroughputOut]:
            self.store.check_health()
            counts = CountsOut.of(self.store.counts(queue=self.queue))
            return counts, self.registry(), self.throughput(interval_s=interval_s, window_s=window_s)

        counts, registry, throughput = await asyncio.to_thread(read)
        active = [worker for worker in registry if worker.state != "stopped"]
        stopped = sorted((worker for worker in registry if worker.state == "stopped"),
                         key=lambda worker: worker.heartbeat_at, reverse=True)
        listed_ids = {id(worker) for worker in [*active, *stopped[:MAX_STOPPED_IN_SNAPSHOT]]}
        return SnapshotOut(time=time.time(), queue=self.queue, counts=counts, pool=self.pool_out(),
                           workers=[worker for worker in registry if id(worker) in listed_ids],
                           stopped_not_shown=max(0, len(stopped) - MAX_STOPPED_IN_SNAPSHOT),
                           throughput=throughput)

    async def snapshot_event(self, *, interval_s: float, window_s: float) -> str:
        """Return a server-sent `snapshot` event, shared by every stream with the same chart settings.

        One store read serves all streams for half of `events_interval_s`, so
        the cost of the event streams does not grow with their number.
        """
        now = time.monotonic()
        max_age_s = self.events_interval_s / 2
        self._shared_events = {key: entry for key, entry in self._shared_events.items()
                               if now - entry[0] < max_age_s}
        key = (interval_s, window_s)
        if key not in self._shared_events:
            task = asyncio.ensure_future(self._event_text(interval_s=interval_s, window_s=window_s))
            # Retrieve a failure even when every stream that waited on it has gone.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._shared_events[key] = (now, task)
        # A stream that disconnects cancels its wait, not the read that other streams share.
        return await asyncio.shield(self._shared_events[key][1])

    async def _event_text(self, *, interval_s: float, window_s: float) -> str:
        snapshot = await self.snapshot(interval_s=interval_s, window_s=window_s)
        return f"event: snapshot\ndata: {snapshot.model_dump_json()}\n\n"

    async def until_closing(self, work: Awaitable[T]) -> T | None:
        """Await `work`, or cancel it and return None once the server begins to shut down."""
        task = asyncio.ensure_future(work)
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            await asyncio.wait({task, closing}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            closing.cancel()
        if task.done():
            return task.result()
        task.cancel()
        return None


async def dashboard(request: Request) -> Dashboard:
    """Return the Dashboard of the app that serves `request`; a FastAPI dependency.

    It is a coroutine so that FastAPI calls it on the event loop: a plain
    function would wait for a thread of the pool that blocked store calls may fill.
    """
    return request.app.state.dashboard
