"""Processes that measures start: producers, consumers and a process holding the write lock.

Each role is a plain function, started with the spawn method so it runs in
a fresh interpreter on every platform, and it writes what it saw to a JSON
file that the measure reads back.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from persistentq import WorkerPool

from .designs import open_design
from .pool_runs import ASYNC_CONSUMERS, pool_config

# A consumer process ends once the producer is done and it found no job for this long.
IDLE_EXIT_S = 0.5


def produce(design_key: str, folder: Path, synchronous: str, count: int, start: Any, done: Any) -> None:
    """Put `count` jobs one per commit once `start` is set, then set `done`."""
    design = open_design(design_key, folder, synchronous)
    start.wait()
    for index in range(count):
        design.put(f"job-{index}")
    done.set()
    design.close()


def consume(
    design_key: str, folder: Path, synchronous: str, report: Path, ready: Any, start: Any, producer_done: Any
) -> None:
    """Take and ack jobs one at a time until the producer is done and the queue stays empty for IDLE_EXIT_S.

    Some peers report an empty queue while another process holds the lock,
    so one empty take after the producer ends does not mean the queue is
    drained. A take that raises a locked or busy error is counted and tried again.
    """
    design = open_design(design_key, folder, synchronous)
    seen: list[str] = []
    lock_errors = 0
    last_ack_at = 0.0
    empty_since: float | None = None
    ready.set()
    start.wait()
    while True:
        try:
            taken = design.take()
        except Exception as exc:  # noqa: BLE001 - peers raise their own wrappers of sqlite3 errors
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            lock_errors += 1
            continue
        if taken is None:
            now = time.monotonic()
            if not producer_done.is_set():
                empty_since = None
            elif empty_since is None:
                empty_since = now
            elif now - empty_since > IDLE_EXIT_S:
                break
            time.sleep(0.001)
            continue
        empty_since = None
        payload, handle = taken
        seen.append(payload)
        design.ack(handle)
        last_ack_at = time.time()
    design.close()
    report.write_text(json.dumps({"seen": seen, "lock_errors": lock_errors, "last_ack_at": last_ack_at}))


def consume_with_pool(
    design_key: str, folder: Path, synchronous: str, report: Path, ready: Any, start: Any, stop: Any
) -> None:
    """Run a WorkerPool of async no-op consumers on a store design until `stop` is set."""
    asyncio.run(_consume_with_pool(design_key, folder, synchronous, report, ready, start, stop))


async def _consume_with_pool(
    design_key: str, folder: Path, synchronous: str, report: Path, ready: Any, start: Any, stop: Any
) -> None:
    design = open_design(design_key, folder, synchronous)
    seen: list[str] = []

    async def no_op(payload: str) -> None:
        seen.append(payload)

    config = pool_config(folder, n_cons=ASYNC_CONSUMERS // 4)
    pool = WorkerPool(config, store=design.store, consumer_function=no_op)
    await asyncio.to_thread(_ready_then_wait, ready, start)
    await pool.start()
    while not stop.is_set():
        await asyncio.sleep(0.005)
    await pool.stop()
    errors = sum(consumer.errors for consumer in pool.consumers) if pool.consumers else 0
    design.close()
    report.write_text(json.dumps({"seen": seen, "lock_errors": errors}))


def _ready_then_wait(ready: Any, start: Any) -> None:
    ready.set()
    start.wait()


def wait_for_jobs(design_key: str, folder: Path, synchronous: str, report: Path, ready: Any, stop: Any) -> None:
    """Run idle consumers with the default poll interval and note when each job started (wall clock)."""
    asyncio.run(_wait_for_jobs(design_key, folder, synchronous, report, ready, stop))


async def _wait_for_jobs(design_key: str, folder: Path, synchronous: str, report: Path, ready: Any, stop: Any) -> None:
    design = open_design(design_key, folder, synchronous)
    started: list[tuple[str, float]] = []

    async def note_start(payload: str) -> None:
        started.append((payload, time.time()))

    pool = WorkerPool(pool_config(folder, n_cons=4), store=design.store, consumer_function=note_start)
    await pool.start()
    # PostgreSQL hears puts from other processes once its LISTEN thread has connected.
    wait_until_listening = getattr(design.store, "wait_until_listening", None)
    if wait_until_listening is not None and not await asyncio.to_thread(wait_until_listening, 30.0):
        raise RuntimeError(f"the LISTEN connection of {design.store!r} did not connect within 30 s")
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.01)
    await pool.stop()
    design.close()
    report.write_text(json.dumps({"started": started}))


def hold_write_lock(database: Path, seconds: float, holding: Any, released: Any) -> None:
    """Hold SQLite's write lock on `database` for `seconds`, as a long write transaction would."""
    conn = sqlite3.connect(database, timeout=60, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    holding.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    released.set()
    conn.close()



def hold_table_lock(url: str, schema: str, seconds: float, holding: Any, released: Any) -> None:
    """Hold an EXCLUSIVE lock on the PostgreSQL jobs table for `seconds`, which blocks every claim, put and ack.

    EXCLUSIVE mode still lets plain SELECTs through, as SQLite's write lock
    lets readers through in WAL mode.
    """
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(sql.SQL("LOCK TABLE {}.jobs IN EXCLUSIVE MODE").format(sql.Identifier(schema)))
            holding.set()
            time.sleep(seconds)
    released.set()
