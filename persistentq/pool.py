"""WorkerPool: n_prod producers, n_cons consumers and a cleaner on one event loop.

    pool = WorkerPool(load_config("config.yaml"))
    await pool.start()
    await pool.scale(n_cons=4)
    await pool.stop()            # graceful: in-flight jobs finish or go back to the queue

Without functions of its own, the pool runs the file pipeline, or the
`module:function` named by `consumer.function` and `producer.function`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import Config
from .files import FilePipeline
from .hooks import JobHooks, NoHooks
from .store.base import JobState, PersistentQStore
from .store.bridge import AsyncStore
from .store.factory import open_store
from .workers.base import PersistentQInterface
from .workers.cleaner import Cleaner
from .workers.consumer import Consumer
from .workers.functions import JobFunction, check_function, load_function
from .workers.producer import Producer
from .workers.sync_runner import SyncRunner

log = logging.getLogger(__name__)

WORKER_KINDS = ("producer", "consumer", "cleaner")
# Leases shorter than this are logged as risky at start: a 300,000-job put_many
# held SQLite's write lock for about 1.7 s on a 2-core machine.
SHORT_LEASE_S = 5.0


class WorkerPool:
    """Starts, scales, pauses and stops the workers of one process on one queue."""

    def __init__(
        self,
        config: Config,
        *,
        store: PersistentQStore | None = None,
        consumer_function: JobFunction | None = None,
        producer_function: JobFunction | None = None,
        hooks: JobHooks | None = None,
    ) -> None:
        self.config = config
        self.pipeline = FilePipeline.for_config(config)
        self.consumer_function, self.producer_function, self.hooks = self._functions(
            consumer_function, producer_function, hooks
        )
        self._store = store
        self._owns_store = store is None
        self.bridge: AsyncStore | None = None
        self.runner: SyncRunner | None = None
        self.producers: list[Producer] = []
        self.consumers: list[Consumer] = []
        self.cleaner: Cleaner | None = None
        self._started = False
        # _lifecycle orders start and stop, and _lock orders changes to the worker lists.
        self._lifecycle = asyncio.Lock()
        self._lock = asyncio.Lock()
        self._locks_loop: asyncio.AbstractEventLoop | None = None
        self._draining: list[PersistentQInterface] = []
        self._paused_kinds: set[str] = set()
        # Whether `start` starts a cleaner; `scale(cleaner=...)` changes it.
        self.run_cleaner = True

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        return (
            f"<WorkerPool {state}: {len(self.producers)} producers, {len(self.consumers)} consumers, "
            f"queue {self.config.general.queue!r}>"
        )

    def _functions(
        self,
        consumer_function: JobFunction | None,
        producer_function: JobFunction | None,
        hooks: JobHooks | None,
    ) -> tuple[JobFunction, JobFunction, JobHooks]:
        """Pick each side's function and the consumer's job hooks."""
        consumer = self._function(consumer_function, "consumer.function", self.pipeline.process)
        producer = self._function(producer_function, "producer.function", self.pipeline.produce)
        if hooks is None:
            custom = consumer_function is not None or bool(self.config.consumer.function)
            hooks = NoHooks() if custom else self.pipeline
        return consumer, producer, hooks

    def _function(self, argument: JobFunction | None, key: str, default: JobFunction) -> JobFunction:
        """Return `argument`, else the config's module:function at `key`, else the pipeline's `default`."""
        if argument is not None:
            return check_function(argument)
        section, name = key.split(".")
        spec = getattr(getattr(self.config, section), name)
        if not spec:
            return default
        search_dir = self.config.source.parent if self.config.source else Path.cwd()
        return load_function(spec, key=key, search_dir=search_dir)

    @property
    def store(self) -> PersistentQStore:
        """The store this pool's workers use, opened on first use."""
        if self._store is None:
            self._store = open_store(self.config)
        return self._store

    @property
    def workers(self) -> list[PersistentQInterface]:
        """Every worker of this pool: producers, consumers, then the cleaner."""
        cleaner = [self.cleaner] if self.cleaner is not None else []
        return [*self.producers, *self.consumers, *cleaner]

    @property
    def paused_kinds(self) -> frozenset[str]:
        """The kinds of worker that `pause` paused and `resume` has not resumed since."""
        return frozenset(self._paused_kinds)

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._started

    async def start(self) -> WorkerPool:
        """Open the store and start the configured workers; starting twice does nothing.

        A start made while a stop is still draining waits for that stop to end.
        """
        self._bind_locks()
        async with self._lifecycle:
            if not self._started:
                await self._start()
        return self

    def _bind_locks(self) -> None:
        """Make the pool's locks belong to the running loop, which may differ between runs.

        An asyncio.Lock stays bound to the first loop that waited on it, so a
        pool stopped in one `asyncio.run` and started in the next needs new ones.
        """
        loop = asyncio.get_running_loop()
        if self._locks_loop is not loop and not self._started:
            self._lifecycle, self._lock, self._locks_loop = asyncio.Lock(), asyncio.Lock(), loop

    async def _start(self) -> None:
        lease_s = self.config.consumer.lease
        if lease_s < SHORT_LEASE_S:
            log.warning(
                "consumer.lease is %g s: another process holding the database's write lock for "
                "longer (a large put_many) can let the lease of a running job expire, and the job "
                "then runs twice; %g s or more avoids that", lease_s, SHORT_LEASE_S,
            )
        self.bridge = AsyncStore(self.store)
        self.runner = SyncRunner(max_children=max(self.config.general.n_cons, 1))
        if self.run_cleaner:
            self._start_cleaner()
        self._started = True
        await self.scale(n_prod=self.config.general.n_prod, n_cons=self.config.general.n_cons)
        log.info("pool started on %s, queue %r", self.store, self.config.general.queue)

    def _start_cleaner(self) -> None:
        self.cleaner = Cleaner(self.bridge, self.config, hooks=self.hooks)
        if "cleaner" in self._paused_kinds:
            self.cleaner.pause()
        self.cleaner.start()

    async def scale(
        self, *, n_prod: int | None = None, n_cons: int | None = None, cleaner: bool | None = None
    ) -> None:
        """Start or stop workers until `n_prod` producers and `n_cons` consumers run, with or without a cleaner."""
        if not self._started:
            raise RuntimeError("start the pool before scaling it")
        for name, value in (("n_prod", n_prod), ("n_cons", n_cons)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if cleaner is not None and not isinstance(cleaner, bool):
            raise ValueError(f"cleaner must be True or False, got {cleaner!r}")
        async with self._lock:
            if n_cons is not None:
                self.runner.resize(max(n_cons, 1))
                await self._scale(self.consumers, n_cons, self._new_consumer)
            if n_prod is not None:
                await self._scale(self.producers, n_prod, self._new_producer)
            if cleaner is not None:
                await self._scale_cleaner(cleaner)

    async def _scale_cleaner(self, enabled: bool) -> None:
        self.run_cleaner = enabled
        if enabled and self.cleaner is None:
            self._start_cleaner()
        elif not enabled and self.cleaner is not None:
            cleaner, self.cleaner = self.cleaner, None
            await cleaner.stop()

    async def _scale(
        self, workers: list, target: int, create: Callable[[], PersistentQInterface]
    ) -> None:
        while len(workers) < target:
            worker = create()
            if worker.kind in self._paused_kinds:
                worker.pause()
            workers.append(worker)
            worker.start()
        surplus = workers[target:]
        del workers[target:]
        if surplus:
            self._draining += surplus  # so that hurry() reaches them
            try:
                await asyncio.gather(*(worker.stop() for worker in surplus))
            finally:
                self._draining = [worker for worker in self._draining if worker not in surplus]

    def _new_consumer(self) -> Consumer:
        consumer = Consumer(self.bridge, self.config, runner=self.runner, hooks=self.hooks)
        return consumer.execute_function(self.consumer_function)

    def _new_producer(self) -> Producer:
        return Producer(self.bridge, self.config).execute_function(self.producer_function)

    def pause(self, kind: str | None = None) -> None:
        """Pause every worker, or those of one kind ("producer", "consumer", "cleaner").

        Workers that start later, by `start` or `scale`, start paused too.
        """
        self._paused_kinds |= self._kinds(kind)
        for worker in self._of_kind(kind):
            worker.pause()

    def resume(self, kind: str | None = None) -> None:
        """Resume every worker, or those of one kind."""
        self._paused_kinds -= self._kinds(kind)
        for worker in self._of_kind(kind):
            worker.resume()

    @staticmethod
    def _kinds(kind: str | None) -> set[str]:
        if kind is None:
            return set(WORKER_KINDS)
        if kind not in WORKER_KINDS:
            raise ValueError(f"kind must be one of {', '.join(WORKER_KINDS)}, got {kind!r}")
        return {kind}

    def _of_kind(self, kind: str | None) -> list[PersistentQInterface]:
        kinds = self._kinds(kind)
        return [worker for worker in self.workers if worker.kind in kinds]

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop every worker gracefully, then close what the pool opened. Idempotent.

        Producers stop first so no new jobs arrive. Consumers then get
        `grace_s` seconds (general.shutdown_grace by default) to finish, and
        jobs still running after that go back to the queue without using up an attempt.
        Each consumer keeps renewing its lease while it drains, or the lease
        could expire under a job that is still running. Store writes come
        last, so every outcome is committed before the store closes.
        """
        self._bind_locks()
        async with self._lifecycle:
            if self._started:
                await self._stop(grace_s)

    async def _stop(self, grace_s: float | None) -> None:
        self._started = False
        async with self._lock:
            producers, self.producers = self.producers, []
            consumers, self.consumers = self.consumers, []
            cleaner, self.cleaner = self.cleaner, None
            self._draining += [*producers, *consumers]
            try:
                await asyncio.gather(*(worker.stop(grace_s) for worker in producers))
                await asyncio.gather(*(worker.stop(grace_s) for worker in consumers))
                if cleaner is not None:
                    await cleaner.stop(grace_s)
            finally:
                self._draining = []
            await self.runner.aclose()
            await self.bridge.aclose()
        if self._owns_store:
            self.store.close()
            self._store = None
        log.info("pool stopped")

    def hurry(self) -> None:
        """End the grace period of a stop in progress: running jobs go back to the queue now."""
        for worker in [*self.workers, *self._draining]:
            worker.hurry()

    async def run(self, duration_s: float | None = None, *, stop: asyncio.Event | None = None) -> None:
        """Start, run until `duration_s` passes or `stop` is set, then stop gracefully."""
        await self.start()
        stop = stop or asyncio.Event()
        try:
            await asyncio.wait_for(stop.wait(), duration_s)
        except asyncio.TimeoutError:
            pass
        finally:
            await self.stop()

    def counts(self) -> dict[JobState, int]:
        """Return the number of jobs in each state of this pool's queue (a direct store read)."""
        return self.store.counts(queue=self.config.general.queue)

    def stats(self) -> dict[str, Any]:
        """Return the pool's workers with their state and counters."""
        return {worker.id: worker.record() for worker in self.workers}
