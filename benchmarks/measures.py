"""The measures, each run in a fresh process on a fresh queue, and their registry.

A measure is a function of a `Context` that returns its metrics (the first is
the headline figure) and, for measures that run jobs, the checks the runner
verifies: jobs put, done, duplicates, lost and lock errors.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persistentq import WorkerPool
from persistentq.store.base import JobState

from . import roles
from .designs import DESIGNS, PEERS, REFERENCES, STORE_DESIGNS, Design, StoreDesign, open_design
from .pool_runs import (
    ASYNC_CONSUMERS,
    SYNC_CONSUMERS,
    check_store_jobs,
    pool_config,
    recording_async,
    run_until_done,
)
from .sizes import Sizes

SPAWN = multiprocessing.get_context("spawn")
# No measure of a full run comes near this; a run past it has hung.
PROCESS_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Context:
    """The design, folder, sizes and templates of one measure run."""

    design: str
    folder: Path
    sizes: Sizes
    synchronous: str
    templates: dict[str, str] = field(default_factory=dict)


Result = dict[str, Any]


def _payloads(count: int) -> list[str]:
    return [f"job-{index}" for index in range(count)]


def _open(context: Context) -> Design:
    return open_design(context.design, context.folder, context.synchronous)


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def _take_all(design: Design, expected: int) -> tuple[list[str], float]:
    """Take and ack jobs one at a time until none is left; return the payloads and the seconds."""
    seen: list[str] = []
    started = time.perf_counter()
    while (taken := design.take()) is not None:
        payload, handle = taken
        seen.append(payload)
        design.ack(handle)
        if len(seen) > 2 * expected:
            break  # a queue handing out jobs again and again would never end
    return seen, time.perf_counter() - started


def _checks(expected: int, seen: list[str], lock_errors: int = 0) -> dict[str, int]:
    unique = set(seen)
    return {
        "put": expected,
        "done": len(seen),
        "duplicates": len(seen) - len(unique),
        "lost": len(set(_payloads(expected)) - unique),
        "lock_errors": lock_errors,
    }


# Putting jobs.


def measure_put(context: Context) -> Result:
    count = context.sizes.put
    design = _open(context)
    payloads = _payloads(count)
    started = time.perf_counter()
    for payload in payloads:
        design.put(payload)
    seconds = time.perf_counter() - started
    return {"metrics": {"jobs/s": _rate(count, seconds)}, "synchronous": design.synchronous_setting()}


def measure_put_many(context: Context) -> Result:
    count = context.sizes.put_many
    design = _open(context)
    payloads = _payloads(count)
    started = time.perf_counter()
    design.put_many(payloads)
    seconds = time.perf_counter() - started
    return {"metrics": {"jobs/s": _rate(count, seconds)}, "synchronous": design.synchronous_setting()}


# Claiming and acking.


def measure_claim_ack(context: Context) -> Result:
    count = context.sizes.claim_ack
    design = _open(context)
    design.fill(_payloads(count))
    seen, seconds = _take_all(design, count)
    return {
        "metrics": {"jobs/s": _rate(len(seen), seconds)},
        "checks": _checks(count, seen),
        "synchronous": design.synchronous_setting(),
    }


def _measure_drain(context: Context, template_key: str | None) -> Result:
    """Drain `sizes.drain` jobs, from a copy of the big backlog or from a backlog of just those jobs."""
    count = context.sizes.drain
    if template_key is None:
        design = _open(context)
        design.fill(_payloads(count))
    else:
        DESIGNS[context.design].copy_template(context.templates[template_key], context.folder)
        design = _open(context)
    seen: list[str] = []
    started = time.perf_counter()
    for _ in range(count):
        taken = design.take()
        if taken is None:
            break
        seen.append(taken[0])
        design.ack(taken[1])
    seconds = time.perf_counter() - started
    return {
        "metrics": {"jobs/s": _rate(len(seen), seconds)},
        "checks": _checks(count, seen),
        "synchronous": design.synchronous_setting(),
    }


def measure_drain_small(context: Context) -> Result:
    return _measure_drain(context, None)


def measure_drain_big(context: Context) -> Result:
    return _measure_drain(context, f"backlog:{context.design}")


# The worker pool.


def measure_cycle_async(context: Context) -> Result:
    count = context.sizes.cycle
    design = _open(context)
    assert isinstance(design, StoreDesign)
    design.store.put_many(_payloads(count))
    seen: list[str] = []
    pool = WorkerPool(
        pool_config(context.folder, n_cons=ASYNC_CONSUMERS),
        store=design.store,
        consumer_function=recording_async(seen),
    )
    seconds = asyncio.run(run_until_done(pool, count, PROCESS_TIMEOUT_S))
    return {
        "metrics": {"jobs/s": _rate(count, seconds)},
        "checks": {**check_store_jobs(design.store, count, seen), "lock_errors": 0},
        "synchronous": design.synchronous_setting(),
        "consumers": ASYNC_CONSUMERS,
    }


def _sync_no_op(payload: str) -> str:
    return payload


def measure_cycle_sync(context: Context) -> Result:
    count = context.sizes.cycle_sync
    design = _open(context)
    assert isinstance(design, StoreDesign)
    design.store.put_many(_payloads(count))
    pool = WorkerPool(
        pool_config(context.folder, n_cons=SYNC_CONSUMERS), store=design.store, consumer_function=_sync_no_op
    )
    seconds = asyncio.run(run_until_done(pool, count, PROCESS_TIMEOUT_S))
    return {
        "metrics": {"jobs/s": _rate(count, seconds)},
        "checks": {**check_store_jobs(design.store, count, None), "lock_errors": 0},
        "synchronous": design.synchronous_setting(),
        "consumers": SYNC_CONSUMERS,
    }


# One producer and four consumer processes on one file.

CONSUMER_PROCESSES = 4


def measure_multiprocess(context: Context) -> Result:
    count = context.sizes.multiprocess
    design = _open(context)  # creates the schema before the processes race to
    synchronous = design.synchronous_setting()
    start, producer_done, stop = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
    readies = [SPAWN.Event() for _ in range(CONSUMER_PROCESSES)]
    reports = [context.folder / f"consumer-{index}.json" for index in range(CONSUMER_PROCESSES)]
    is_store = isinstance(design, StoreDesign)
    consumers = [
        SPAWN.Process(
            target=roles.consume_with_pool if is_store else roles.consume,
            args=(context.design, context.folder, context.synchronous, report, ready, start,
                  stop if is_store else producer_done),
        )
        for report, ready in zip(reports, readies)
    ]
    producer = SPAWN.Process(
        target=roles.produce, args=(context.design, context.folder, context.synchronous, count, start, producer_done)
    )
    for process in [*consumers, producer]:
        process.start()
    for ready in readies:
        ready.wait(PROCESS_TIMEOUT_S)
    started, started_wall = time.perf_counter(), time.time()
    start.set()
    producer_s = None
    if is_store:
        producer_s = _wait_all_done(design, count, producer_done) - started
        seconds = time.perf_counter() - started
        stop.set()
    for process in [*consumers, producer]:
        process.join(PROCESS_TIMEOUT_S)
    design.close()

    seen: list[str] = []
    lock_errors = 0
    last_ack_at = started_wall
    for report in reports:
        data = json.loads(report.read_text())
        seen += data["seen"]
        lock_errors += data["lock_errors"]
        last_ack_at = max(last_ack_at, data.get("last_ack_at", 0.0))
    if not is_store:
        # Up to the last ack, not to the exit: consumers wait IDLE_EXIT_S on an empty queue before they end.
        seconds = last_ack_at - started_wall
    return {
        "metrics": {"jobs/s": _rate(len(set(seen)), seconds)},
        "checks": _checks(count, seen, lock_errors),
        "synchronous": synchronous,
        "processes": f"1 producer + {CONSUMER_PROCESSES} consumers",
        "producer_s": producer_s,
    }


def _wait_all_done(design: StoreDesign, count: int, producer_done: Any) -> float:
    """Wait until the store counts `count` jobs done; return when the producer was seen to finish."""
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    producer_finished = None
    while design.store.counts()[JobState.DONE] < count and time.monotonic() < deadline:
        if producer_finished is None and producer_done.is_set():
            producer_finished = time.perf_counter()
        time.sleep(0.005)
    return producer_finished or time.perf_counter()


# Wake-up latency: from put to the start of the job, with idle consumers.


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p99_index = min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))
    return {"p50 ms": statistics.median(ordered), "p99 ms": ordered[p99_index]}


def measure_wake_in_process(context: Context) -> Result:
    design = _open(context)
    assert isinstance(design, StoreDesign)
    samples = context.sizes.wake_samples
    latencies_ms = asyncio.run(_wake_in_process(design, context.folder, samples))
    return {
        "metrics": _percentiles(latencies_ms),
        "checks": _latency_checks(samples, len(latencies_ms)),
        "synchronous": design.synchronous_setting(),
    }


async def _wake_in_process(design: StoreDesign, folder: Path, samples: int) -> list[float]:
    """Put jobs from a thread of this process while 4 consumers idle on the same loop."""
    loop = asyncio.get_running_loop()
    put_at: dict[str, float] = {}
    latencies_ms: list[float] = []
    started = threading.Event()

    async def note_start(payload: str) -> None:
        latencies_ms.append((time.perf_counter() - put_at[payload]) * 1000)
        started.set()

    pool = WorkerPool(pool_config(folder, n_cons=4), store=design.store, consumer_function=note_start)
    await pool.start()
    await asyncio.sleep(0.2)  # every consumer has found the queue empty and sleeps

    def put_one_by_one() -> None:
        rng = random.Random(1)
        for index in range(samples):
            started.clear()
            payload = f"job-{index}"
            time.sleep(rng.uniform(0.01, 0.03))
            put_at[payload] = time.perf_counter()
            design.store.put(payload)
            started.wait(10)

    await loop.run_in_executor(None, put_one_by_one)
    await pool.stop()
    return latencies_ms


def measure_wake_cross_process(context: Context) -> Result:
    design = _open(context)
    assert isinstance(design, StoreDesign)
    samples = context.sizes.wake_samples
    report = context.folder / "started.json"
    ready, stop = SPAWN.Event(), SPAWN.Event()
    consumer = SPAWN.Process(
        target=roles.wait_for_jobs, args=(context.design, context.folder, context.synchronous, report, ready, stop)
    )
    consumer.start()
    ready.wait(PROCESS_TIMEOUT_S)
    time.sleep(0.2)  # every consumer has found the queue empty and sleeps
    rng = random.Random(1)
    put_at: dict[str, float] = {}
    for index in range(samples):
        payload = f"job-{index}"
        put_at[payload] = time.time()
        design.store.put(payload)
        _wait_started(design, index + 1)
        time.sleep(rng.uniform(0.01, 0.03))
    stop.set()
    consumer.join(PROCESS_TIMEOUT_S)
    started = json.loads(report.read_text())["started"]
    latencies_ms = [(at - put_at[payload]) * 1000 for payload, at in started]
    return {
        "metrics": _percentiles(latencies_ms),
        "checks": _latency_checks(samples, len(latencies_ms)),
        "synchronous": design.synchronous_setting(),
    }


def _wait_started(design: StoreDesign, expected: int) -> None:
    """Wait until `expected` jobs left the queued state, so each put meets idle consumers."""
    deadline = time.monotonic() + 30
    while design.store.counts()[JobState.QUEUED] > 0 and time.monotonic() < deadline:
        time.sleep(0.002)


def _latency_checks(expected: int, started: int) -> dict[str, int]:
    return {"put": expected, "done": started, "duplicates": 0, "lost": expected - started, "lock_errors": 0}


# Event-loop lag while another process holds the write lock.

TICK_S = 0.005


def measure_loop_lag(context: Context) -> Result:
    design = _open(context)
    assert isinstance(design, StoreDesign)
    backlog = context.sizes.cycle
    design.store.put_many(_payloads(backlog))
    lags_ms, jobs = asyncio.run(_loop_lag(design, context, backlog))
    return {
        "metrics": {"p99 ms": _percentiles(lags_ms)["p99 ms"], "max ms": max(lags_ms)},
        "synchronous": design.synchronous_setting(),
        "jobs_done": jobs,
    }


async def _loop_lag(design: StoreDesign, context: Context, backlog: int) -> tuple[list[float], int]:
    """Tick every TICK_S while consumers work and another process takes the write lock."""
    pool = WorkerPool(
        pool_config(context.folder, n_cons=ASYNC_CONSUMERS),
        store=design.store,
        consumer_function=recording_async([]),
    )
    holding, released = SPAWN.Event(), SPAWN.Event()
    hold, first_args = design.lock_holder()
    holder = SPAWN.Process(target=hold, args=(*first_args, context.sizes.lock_hold_s, holding, released))
    await pool.start()
    holder.start()
    await asyncio.to_thread(holding.wait, PROCESS_TIMEOUT_S)
    lags_ms: list[float] = []
    while not released.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags_ms.append((time.perf_counter() - before - TICK_S) * 1000)
    await pool.stop()
    await asyncio.to_thread(holder.join, PROCESS_TIMEOUT_S)
    return lags_ms, design.store.counts()[JobState.DONE]


# DataFrame views of a big queue.


def _open_view_copy(context: Context) -> StoreDesign:
    DESIGNS[context.design].copy_template(context.templates[f"views:{context.design}"], context.folder)
    design = _open(context)
    assert isinstance(design, StoreDesign)
    return design


def _time_calls_ms(function: Callable[[], Any], calls: int) -> float:
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        function()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def measure_dataframe(context: Context) -> Result:
    design = _open_view_copy(context)
    frame = design.store.dataframe(limit=10_000)
    median_ms = _time_calls_ms(lambda: design.store.dataframe(limit=10_000), context.sizes.view_calls)
    return {"metrics": {"ms": median_ms}, "rows": len(frame), "synchronous": design.synchronous_setting()}


def measure_counts(context: Context) -> Result:
    design = _open_view_copy(context)
    total = sum(design.store.counts().values())
    median_ms = _time_calls_ms(design.store.counts, context.sizes.view_calls)
    return {"metrics": {"ms": median_ms}, "jobs": total, "synchronous": design.synchronous_setting()}


@dataclass(frozen=True)
class Measure:
    """One measure: what it is called, which designs it runs on, and whether more is better."""

    key: str
    title: str
    run: Callable[[Context], Result]
    designs: tuple[str, ...]
    higher_is_better: bool = True
    templates: tuple[str, ...] = ()  # big databases built once per run and copied for each repetition


# In the order of the registry: SQLite's designs first, then PostgreSQL's.
ALL_DESIGNS = tuple(key for key in DESIGNS if key in (*REFERENCES, *STORE_DESIGNS, *PEERS))
DRAIN_DESIGNS = tuple(key for key in DESIGNS if key in (*REFERENCES, *STORE_DESIGNS))

# The registry, in the order the table shows it.
MEASURES: tuple[Measure, ...] = (
    Measure("put", "put, one job per commit", measure_put, ALL_DESIGNS),
    Measure("put_many", "put_many, one commit", measure_put_many,
            tuple(key for key in ALL_DESIGNS if DESIGNS[key].has_put_many)),
    Measure("claim_ack", "claim + ack, one job at a time", measure_claim_ack, ALL_DESIGNS),
    Measure("cycle_async", "worker cycle, async no-op", measure_cycle_async, STORE_DESIGNS),
    Measure("cycle_sync", "worker cycle, sync no-op in child processes", measure_cycle_sync, STORE_DESIGNS),
    Measure("multiprocess", "1 producer + 4 consumer processes", measure_multiprocess, ALL_DESIGNS),
    Measure("drain_small", "drain from a backlog of the same size", measure_drain_small, DRAIN_DESIGNS),
    Measure("drain_big", "drain from the big backlog", measure_drain_big, DRAIN_DESIGNS,
            templates=("backlog",)),
    Measure("wake_in_process", "wake-up, put to start, one process", measure_wake_in_process,
            STORE_DESIGNS, higher_is_better=False),
    Measure("wake_cross_process", "wake-up, put to start, across processes", measure_wake_cross_process,
            STORE_DESIGNS, higher_is_better=False),
    Measure("loop_lag", "event-loop lag while another process holds the write lock", measure_loop_lag,
            STORE_DESIGNS, higher_is_better=False),
    Measure("dataframe", "DataFrame of the 10,000 newest jobs", measure_dataframe, STORE_DESIGNS,
            higher_is_better=False, templates=("views",)),
    Measure("counts", "counts per state", measure_counts, STORE_DESIGNS,
            higher_is_better=False, templates=("views",)),
)
MEASURES_BY_KEY = {measure.key: measure for measure in MEASURES}
