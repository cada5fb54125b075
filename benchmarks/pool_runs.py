"""Runs of the real WorkerPool on a store, used by the worker-cycle, wake-up and lag measures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from persistentq import WorkerPool, config_from_dict
from persistentq.store.base import JobState, PersistentQStore

# Consumers per process in the async worker measures. Claims are batched to the
# number of idle consumers, so this is also the largest claim batch.
ASYNC_CONSUMERS = 64
# Child processes (and consumers) for plain functions: one per core on the 2-core reference machine, doubled.
SYNC_CONSUMERS = 4


def pool_config(folder: Path, *, n_cons: int, poll_interval_s: float = 1.0) -> Any:
    """Return a config for consumers that take the next job at once, with the product's other defaults."""
    return config_from_dict(
        {
            "general": {"n_prod": 0, "n_cons": n_cons, "primary_path": str(folder)},
            "consumer": {"interval_min": 0, "interval_max": 0, "poll_interval": poll_interval_s},
        }
    )


def successes(pool: WorkerPool) -> int:
    """Return the acks of this pool's consumers that are committed."""
    return sum(consumer.successes for consumer in pool.consumers)


async def run_until_done(pool: WorkerPool, expected: int, timeout_s: float) -> float:
    """Start the pool, wait until `expected` acks are committed, stop it; return the seconds taken.

    The time runs from the start to the end of the stop, so it includes the
    last grouped commit and the shutdown.
    """
    started = time.perf_counter()
    await pool.start()
    deadline = started + timeout_s
    while successes(pool) < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.002)
    await pool.stop()
    return time.perf_counter() - started


def check_store_jobs(store: PersistentQStore, expected: int, seen: list[str] | None) -> dict[str, int]:
    """Count done jobs in the store, and duplicates and lost jobs among the payloads the function saw.

    Without `seen` (the function ran in another process), a job counts as a
    duplicate when the store shows more than one attempt.
    """
    done = store.counts()[JobState.DONE]
    if seen is not None:
        unique = len(set(seen))
        duplicates = len(seen) - unique
    else:
        frame = store.dataframe(limit=expected)
        unique = int((frame["state"] == "done").sum())
        duplicates = int((frame["attempts"] > 1).sum())
    return {"put": expected, "done": done, "duplicates": duplicates, "lost": expected - unique}


def recording_async(seen: list[str]) -> Callable[[str], Any]:
    """Return an async no-op that notes each payload it is called with."""

    async def no_op(payload: str) -> None:
        seen.append(payload)

    return no_op
