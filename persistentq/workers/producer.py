"""Producer: calls its function on its own schedule and puts what it returns as jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from ..store.base import JobState
from .base import PersistentQInterface
from .functions import is_async

log = logging.getLogger(__name__)


def payloads_of(value: object) -> list[str]:
    """Turn a producer function's return value into payloads: None, a str, or an iterable of str."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        payloads = list(value)
        wrong = [item for item in payloads if not isinstance(item, str)]
        if not wrong:
            return payloads
        value = wrong[0]
    raise TypeError(
        "a producer function must return a str, a list of str or None, "
        f"got {type(value).__name__}: {value!r:.80}"
    )


class Producer(PersistentQInterface):
    """Puts the payloads its function returns, every `producer.interval` seconds."""

    kind = "producer"

    def next_wait_s(self) -> float:
        return self.config.producer.interval

    async def run_once(self) -> None:
        queue = self.config.general.queue
        if await self._queue_is_full(queue):
            return

        self.runs += 1
        function = self.function
        if is_async(function):
            value = await function()
        else:
            value = await asyncio.to_thread(function)
        payloads = payloads_of(value)
        if not payloads:
            return

        ids = await self.bridge.call(self.bridge.store.put_many, payloads, queue=queue)
        self.successes += 1
        if len(ids) == 1:
            log.info("%s: put job %d: %.60s", self.id, ids[0], payloads[0])
        else:
            log.info("%s: put jobs %d-%d (%d jobs)", self.id, ids[0], ids[-1], len(ids))

    async def _queue_is_full(self, queue: str) -> bool:
        limit = self.config.producer.max_queued
        if not limit:
            return False
        counts = await self.bridge.call(self.bridge.store.counts, queue=queue)
        if counts[JobState.QUEUED] > limit:
            log.debug("%s: %d jobs queued, over max_queued %d; skipping this turn",
                      self.id, counts[JobState.QUEUED], limit)
            return True
        return False
