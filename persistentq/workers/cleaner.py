"""Cleaner: recovers expired leases, discards the leftovers of failed jobs, purges old rows."""

from __future__ import annotations

import asyncio
import logging

from ..hooks import JobHooks, NoHooks
from ..store.bridge import AsyncStore
from ..config import Config
from .base import PersistentQInterface

log = logging.getLogger(__name__)

# Registry rows of workers silent this long are deleted.
FORGET_WORKERS_AFTER_S = 24 * 3600
DISCARD_BATCH = 500


class Cleaner(PersistentQInterface):
    """Sweeps the queue every `cleaner.interval` seconds."""

    kind = "cleaner"

    def __init__(self, bridge: AsyncStore, config: Config, *, hooks: JobHooks | None = None, **options) -> None:
        super().__init__(bridge, config, **options)
        self.hooks = hooks or NoHooks()

    def next_wait_s(self) -> float:
        return self.config.cleaner.interval

    async def run_once(self) -> None:
        self.runs += 1
        store = self.bridge.store
        queue = self.config.general.queue
        await self.bridge.call(store.check_health)
        await self.bridge.call(
            store.recover_expired, queue=queue, max_attempts=self.config.consumer.n_tries
        )
        discarded = await self._discard_failed(queue)

        purged = 0
        retention_s = self.config.cleaner.retention
        if retention_s > 0:
            purged = await self.bridge.call(store.purge, queue=queue, older_than_s=retention_s)
        await self.bridge.call(store.forget_workers, older_than_s=FORGET_WORKERS_AFTER_S)

        self.successes += 1
        if discarded or purged:
            log.info("%s: discarded %d failed jobs' files, purged %d old jobs", self.id, discarded, purged)

    async def _discard_failed(self, queue: str) -> int:
        jobs = await self.bridge.call(self.bridge.store.failed_undiscarded, queue=queue, limit=DISCARD_BATCH)
        if not jobs:
            return 0
        # Mark first, then touch files: a job requeued meanwhile is not marked, so its file stays.
        marked = set(await self.bridge.call(self.bridge.store.mark_discarded, [job.id for job in jobs]))
        await asyncio.to_thread(self._discard_all, [job for job in jobs if job.id in marked])
        return len(marked)

    def _discard_all(self, jobs) -> None:
        for job in jobs:
            try:
                self.hooks.discard(job.payload)
            except Exception:
                self.errors += 1
                log.exception("%s: could not discard the leftovers of failed job %d", self.id, job.id)
