"""Workers and the pool on a real SQLite file: retries, time limits, failures, scaling, stopping."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from persistentq import JobState, PermanentJobError, WorkerPool, config_from_dict
from persistentq.config import Config
from persistentq.files import FAILED_SUFFIX, OUTPUT_SUFFIX
from persistentq.workers.cleaner import Cleaner
from persistentq.workers.consumer import Consumer
from persistentq.workers.producer import payloads_of

# Fast settings: no waits between jobs, quick polls and sweeps.
FAST = {
    "consumer": {"interval_min": 0, "interval_max": 0, "poll_interval": 0.05, "retry_backoff": 0},
    "producer": {"interval": 0.05},
    "cleaner": {"interval": 0.2},
    "general": {"n_prod": 0, "n_cons": 1, "shutdown_grace": 2},
}


def make_config(tmp_path: Path, **changes: object) -> Config:
    """Return the fast test config on tmp_path with dotted-key changes applied."""
    config = config_from_dict(FAST, base_dir=tmp_path, environ={})
    return config.replace(**changes) if changes else config


async def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll `condition` on the event loop until it holds; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)


def finished(pool: WorkerPool, total: int) -> Callable[[], bool]:
    """Return a condition: `total` jobs are done, failed or cancelled."""
    def check() -> bool:
        counts = pool.counts()
        return counts[JobState.DONE] + counts[JobState.FAILED] + counts[JobState.CANCELLED] >= total
    return check


def run_pool(pool: WorkerPool, scenario: Callable[[WorkerPool], object]) -> None:
    """Start the pool, await `scenario(pool)`, and always stop the pool."""
    async def main() -> None:
        await pool.start()
        try:
            await scenario(pool)
        finally:
            await pool.stop()

    asyncio.run(main())


def test_retry_then_success(tmp_path: Path) -> None:
    """A function that fails twice, then succeeds, ends done after 3 attempts."""
    calls: list[str] = []

    async def flaky(payload: str) -> str:
        calls.append(payload)
        if len(calls) < 3:
            raise ValueError(f"attempt {len(calls)} failed")
        return "ok"

    pool = WorkerPool(make_config(tmp_path), consumer_function=flaky)
    job_id = pool.store.put("x")
    run_pool(pool, lambda pool: wait_until(finished(pool, 1)))

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.DONE
    assert job.attempts == 3
    assert job.result == "ok"
    assert "attempt 2 failed" in job.last_error


def test_always_failing_job_fails_after_n_tries(tmp_path: Path) -> None:
    """A file job that always fails ends failed after n_tries, its input renamed .failed."""
    config = make_config(tmp_path, **{"consumer.failure_rate": 1.0, "consumer.n_tries": 2})
    pool = WorkerPool(config)
    name = pool.pipeline.produce()
    job_id = pool.store.put(name)

    async def scenario(pool: WorkerPool) -> None:
        pool.pause("cleaner")
        await wait_until(finished(pool, 1))
        await wait_until(lambda: (tmp_path / (name + FAILED_SUFFIX)).exists())

    run_pool(pool, scenario)

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.FAILED
    assert job.attempts == 2
    assert "failure_rate" in job.last_error
    assert not (tmp_path / name).exists()
    assert (tmp_path / (name + FAILED_SUFFIX)).exists()


def test_cleaner_removes_failed_file(tmp_path: Path) -> None:
    """The cleaner deletes the .failed file of a failed job and no other file."""
    config = make_config(tmp_path, **{"consumer.failure_rate": 1.0, "consumer.n_tries": 1})
    pool = WorkerPool(config)
    failing = pool.pipeline.produce()
    bystander = pool.pipeline.produce()
    (tmp_path / (bystander + FAILED_SUFFIX)).write_text("not a failed job's file")
    pool.store.put(failing)

    async def scenario(pool: WorkerPool) -> None:
        await wait_until(finished(pool, 1))
        await wait_until(lambda: not (tmp_path / (failing + FAILED_SUFFIX)).exists())

    run_pool(pool, scenario)

    assert not (tmp_path / failing).exists()
    assert (tmp_path / bystander).exists()
    assert (tmp_path / (bystander + FAILED_SUFFIX)).exists()
    assert pool_store(tmp_path).failed_undiscarded() == []


def test_file_job_writes_output(tmp_path: Path) -> None:
    """The default pipeline writes <name>.out with the processed input and returns its name."""
    pool = WorkerPool(make_config(tmp_path, **{"general.n_prod": 1}))

    async def scenario(pool: WorkerPool) -> None:
        await wait_until(lambda: pool.counts()[JobState.DONE] >= 3)

    run_pool(pool, scenario)

    done = pool_store(tmp_path).jobs(state=JobState.DONE)
    assert len(done) >= 3
    for job in done:
        output = tmp_path / (job.payload + OUTPUT_SUFFIX)
        assert job.result == output.name
        assert output.read_text().startswith((tmp_path / job.payload).read_text().upper())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("../outside", "without path separators"),
        ("/etc/passwd", "without path separators"),
        ("..", "not '..'"),
        ("queue.sqlite3", "file of the queue itself"),
        ("queue.sqlite3-wal", "file of the queue itself"),
        ("earlier.out", "pipeline's own files"),
        (".hidden", "hidden names"),
        ("x" * 300, "longer than 255 bytes"),
        ("subdir", "not a regular file"),
        ("missing", "does not exist"),
    ],
)
def test_bad_file_payload_fails_at_once(tmp_path: Path, payload: str, reason: str) -> None:
    """A payload that names no input file fails on its first attempt, and no file is touched."""
    config = make_config(tmp_path, **{"consumer.n_tries": 3, "cleaner.interval": 0.05})
    (tmp_path / "subdir").mkdir()
    (tmp_path / "earlier.out").write_text("an output")
    pool = WorkerPool(config)
    job_id = pool.store.put(payload)
    before = sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith("queue"))

    async def scenario(pool: WorkerPool) -> None:
        await wait_until(finished(pool, 1))
        await asyncio.sleep(0.2)  # a few cleaner sweeps

    run_pool(pool, scenario)

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.FAILED
    assert job.attempts == 1
    assert reason in job.last_error
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith("queue")) == before
    assert (tmp_path / "queue.sqlite3").is_file()


def test_permanent_error_skips_retries(tmp_path: Path) -> None:
    """PermanentJobError raised by a function fails the job without further attempts."""
    async def reject(payload: str) -> None:
        raise PermanentJobError(f"cannot handle {payload}")

    pool = WorkerPool(make_config(tmp_path), consumer_function=reject)
    job_id = pool.store.put("bad")
    run_pool(pool, lambda pool: wait_until(finished(pool, 1)))

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.FAILED
    assert job.attempts == 1
    assert "cannot handle bad" in job.last_error


async def sleep_past_limit(payload: str) -> None:
    await asyncio.sleep(60)


def block_past_limit(payload: str) -> None:
    time.sleep(60)


@pytest.mark.parametrize("function", [sleep_past_limit, block_past_limit], ids=["async", "sync"])
def test_time_limit_stops_attempt(tmp_path: Path, function: Callable) -> None:
    """An attempt past n_time is stopped within a few seconds and counts as failed."""
    config = make_config(tmp_path, **{"consumer.n_time": 1, "consumer.n_tries": 1})
    pool = WorkerPool(config, consumer_function=function)
    job_id = pool.store.put("slow")
    started = time.monotonic()
    run_pool(pool, lambda pool: wait_until(finished(pool, 1), timeout_s=15))
    elapsed = time.monotonic() - started

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.FAILED
    assert job.attempts == 1
    assert "n_time" in job.last_error
    assert elapsed < 8, f"the attempt was stopped only after {elapsed:.1f} s"


def test_coroutine_ignoring_cancel_abandoned(tmp_path: Path) -> None:
    """A coroutine that swallows CancelledError fails at n_time, and its consumer goes on to the next job."""
    released = False

    async def stubborn(payload: str) -> str:
        if payload == "quick":
            return "quick done"
        while not released:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass
        return "released"

    config = make_config(tmp_path, **{"consumer.n_time": 0.5, "consumer.n_tries": 1})
    pool = WorkerPool(config, consumer_function=stubborn)
    stubborn_id = pool.store.put("stubborn", priority=1)
    quick_id = pool.store.put("quick")

    async def scenario(pool: WorkerPool) -> None:
        nonlocal released
        try:
            await wait_until(finished(pool, 2), timeout_s=15)
        finally:
            released = True  # so the abandoned coroutine ends and asyncio.run can return

    run_pool(pool, scenario)

    store = pool_store(tmp_path)
    stuck = store.get(stubborn_id)
    assert stuck.state == JobState.FAILED
    assert "abandoned" in stuck.last_error
    assert "CancelledError" in stuck.last_error
    assert store.get(quick_id).state == JobState.DONE


def test_stop_with_coroutine_ignoring_cancel(tmp_path: Path) -> None:
    """A stop ends, and hands the job back, although the running coroutine swallows CancelledError."""
    started = asyncio.Event()
    released = False

    async def stubborn(payload: str) -> None:
        started.set()
        while not released:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass

    config = make_config(tmp_path, **{"general.shutdown_grace": 0.2})
    pool = WorkerPool(config, consumer_function=stubborn)
    job_id = pool.store.put("stubborn")

    async def main() -> bool:
        nonlocal released
        await pool.start()
        await asyncio.wait_for(started.wait(), 10)
        try:
            await asyncio.wait_for(pool.stop(), 10)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            released = True

    assert asyncio.run(main()), "the stop did not end within 10 s"

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.QUEUED
    assert job.attempts == 0


def test_sync_time_limit_kills_child(tmp_path: Path) -> None:
    """The child process running a sync attempt past n_time is killed, not left running."""
    pids: list[int] = []

    async def scenario(pool: WorkerPool) -> None:
        await wait_until(lambda: pool.runner.n_children > 0)
        pids.extend(pool.runner.child_pids())
        await wait_until(finished(pool, 1), timeout_s=15)

    config = make_config(tmp_path, **{"consumer.n_time": 1, "consumer.n_tries": 1})
    pool = WorkerPool(config, consumer_function=block_past_limit)
    pool.store.put("slow")
    run_pool(pool, scenario)

    assert pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_sync_function_error_recorded(tmp_path: Path) -> None:
    """A plain def that raises in the child fails the attempt with the child's traceback."""
    def explode(payload: str) -> None:
        raise KeyError(f"no such record {payload}")

    pool = WorkerPool(make_config(tmp_path, **{"consumer.n_tries": 1}), consumer_function=explode)
    job_id = pool.store.put("r1")
    run_pool(pool, lambda pool: wait_until(finished(pool, 1)))

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.FAILED
    assert "KeyError" in job.last_error
    assert "no such record r1" in job.last_error
    assert "Traceback" in job.last_error


def test_bad_job_does_not_stop_workers(tmp_path: Path) -> None:
    """After a job fails, the consumer goes on with the next ones."""
    async def picky(payload: str) -> str:
        if payload == "bad":
            raise ValueError("bad payload")
        return payload

    pool = WorkerPool(make_config(tmp_path, **{"consumer.n_tries": 1}), consumer_function=picky)
    pool.store.put_many(["a", "bad", "b", "c"])
    run_pool(pool, lambda pool: wait_until(finished(pool, 4)))

    counts = pool_store(tmp_path).counts()
    assert counts[JobState.DONE] == 3
    assert counts[JobState.FAILED] == 1


class CustomBaseError(BaseException):
    """A BaseException subclass that is no Exception, as some libraries define."""


BASE_EXCEPTIONS = [SystemExit(3), KeyboardInterrupt(), GeneratorExit(), CustomBaseError("custom")]


@pytest.mark.parametrize(
    ("mode", "exception"),
    [
        *(pytest.param("async", exception, id=f"async-{type(exception).__name__}") for exception in BASE_EXCEPTIONS),
        # A coroutine's own CancelledError, such as from awaiting a future that was cancelled elsewhere.
        pytest.param("async", asyncio.CancelledError(), id="async-CancelledError"),
        *(pytest.param("thread", exception, id=f"thread-{type(exception).__name__}") for exception in BASE_EXCEPTIONS),
    ],
)
def test_base_exception_fails_attempt_only(tmp_path: Path, mode: str, exception: BaseException) -> None:
    """A BaseException from a job function fails that attempt, and the pool goes on."""
    async def leave_async(payload: str) -> str:
        if payload == "leave":
            raise exception
        return payload

    def leave(payload: str) -> str:
        if payload == "leave":
            raise exception
        return payload

    config = make_config(tmp_path, **{"consumer.n_tries": 1, "consumer.sync_mode": "thread"})
    pool = WorkerPool(config, consumer_function=leave_async if mode == "async" else leave)
    pool.store.put_many(["leave", "stay"])
    run_pool(pool, lambda pool: wait_until(finished(pool, 2)))

    jobs = {job.payload: job for job in pool_store(tmp_path).jobs()}
    assert jobs["leave"].state == JobState.FAILED
    assert type(exception).__name__ in jobs["leave"].last_error
    assert jobs["stay"].state == JobState.DONE


def test_unprintable_result_fails_attempt(tmp_path: Path) -> None:
    """A result whose str() raises fails the attempt with that error, not with a lost lease."""
    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("cannot print me")

    async def odd(payload: str) -> object:
        return Unprintable()

    pool = WorkerPool(make_config(tmp_path, **{"consumer.n_tries": 1}), consumer_function=odd)
    job_id = pool.store.put("x")
    run_pool(pool, lambda pool: wait_until(finished(pool, 1)))

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.FAILED
    assert "cannot print me" in job.last_error


def test_thread_mode_limit_does_not_hold_exit(tmp_path: Path) -> None:
    """In thread mode, an attempt past n_time is abandoned and asyncio.run returns without waiting for it."""
    config = make_config(tmp_path, **{
        "consumer.sync_mode": "thread", "consumer.n_time": 1, "consumer.n_tries": 1,
    })
    pool = WorkerPool(config, consumer_function=block_past_limit)
    job_id = pool.store.put("slow")
    started = time.monotonic()
    run_pool(pool, lambda pool: wait_until(finished(pool, 1), timeout_s=15))
    elapsed = time.monotonic() - started

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.FAILED
    assert "abandoned" in job.last_error
    assert elapsed < 10, f"asyncio.run returned only after {elapsed:.1f} s"


def test_retry_backoff_delays_job(tmp_path: Path) -> None:
    """With retry_backoff, a failed attempt makes the job available only after the delay."""
    async def fail(payload: str) -> None:
        raise RuntimeError("try later")

    config = make_config(tmp_path, **{"consumer.retry_backoff": 30, "consumer.n_tries": 3})
    pool = WorkerPool(config, consumer_function=fail)
    job_id = pool.store.put("x")

    async def scenario(pool: WorkerPool) -> None:
        await wait_until(lambda: pool.store.get(job_id).attempts == 1
                         and pool.store.get(job_id).state == JobState.QUEUED)

    before = time.time()
    run_pool(pool, scenario)

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.QUEUED
    assert job.attempts == 1
    assert before + 15 <= job.available_at <= time.time() + 30


def test_stop_hands_back_running_job(tmp_path: Path) -> None:
    """A job still running when the grace period ends goes back to queued, its attempt unused."""
    started = asyncio.Event()

    async def long_job(payload: str) -> None:
        started.set()
        await asyncio.sleep(60)

    config = make_config(tmp_path, **{"general.shutdown_grace": 0.5})
    pool = WorkerPool(config, consumer_function=long_job)
    job_id = pool.store.put("long")

    async def main() -> float:
        await pool.start()
        await asyncio.wait_for(started.wait(), 10)
        begin = time.monotonic()
        await pool.stop()
        return time.monotonic() - begin

    stop_s = asyncio.run(main())

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.QUEUED
    assert job.attempts == 0
    assert stop_s < 5


def test_stop_lets_job_finish_within_grace(tmp_path: Path) -> None:
    """A job that ends within the grace period is done, not handed back."""
    started = asyncio.Event()

    async def short_job(payload: str) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "finished"

    pool = WorkerPool(make_config(tmp_path, **{"general.shutdown_grace": 5}), consumer_function=short_job)
    job_id = pool.store.put("short")

    async def main() -> None:
        await pool.start()
        await asyncio.wait_for(started.wait(), 10)
        await pool.stop()
        await pool.stop()  # stop is idempotent

    asyncio.run(main())

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.DONE
    assert job.result == "finished"


def test_scale_changes_worker_counts(tmp_path: Path) -> None:
    """scale() starts and stops workers until the requested numbers run."""
    async def noop(payload: str) -> None:
        return None

    pool = WorkerPool(make_config(tmp_path), consumer_function=noop, producer_function=lambda: None)

    async def scenario(pool: WorkerPool) -> None:
        await pool.scale(n_prod=2, n_cons=4)
        assert [worker.running for worker in pool.consumers] == [True] * 4
        assert len(pool.producers) == 2
        removed = pool.consumers[1:]
        await pool.scale(n_cons=1)
        assert len(pool.consumers) == 1
        assert not any(worker.running for worker in removed)
        with pytest.raises(ValueError, match="n_cons"):
            await pool.scale(n_cons=-1)

    run_pool(pool, scenario)


def test_pause_stops_claims(tmp_path: Path) -> None:
    """Paused consumers claim nothing; resumed ones drain the queue."""
    async def noop(payload: str) -> None:
        return None

    pool = WorkerPool(make_config(tmp_path), consumer_function=noop)

    async def scenario(pool: WorkerPool) -> None:
        pool.pause("consumer")
        await asyncio.sleep(0.1)  # let a turn in progress end
        pool.store.put_many(["a", "b"])
        await asyncio.sleep(0.5)
        assert pool.counts()[JobState.QUEUED] == 2
        assert pool.consumers[0].state == "paused"
        pool.resume("consumer")
        await wait_until(finished(pool, 2))

    run_pool(pool, scenario)


def test_producer_puts_function_output(tmp_path: Path) -> None:
    """A producer puts each str its function returns, and a list as several jobs."""
    batches = iter([["a", "b"], "c", None])

    def produce() -> object:
        return next(batches, None)

    async def noop(payload: str) -> None:
        return None

    config = make_config(tmp_path, **{"general.n_prod": 1, "general.n_cons": 0})
    pool = WorkerPool(config, consumer_function=noop, producer_function=produce)
    run_pool(pool, lambda pool: wait_until(lambda: pool.counts()[JobState.QUEUED] == 3))

    payloads = sorted(job.payload for job in pool_store(tmp_path).jobs())
    assert payloads == ["a", "b", "c"]


def test_producer_bad_return_counted(tmp_path: Path) -> None:
    """A producer function returning a wrong type counts an error and the producer goes on."""
    async def produce() -> object:
        return 42

    config = make_config(tmp_path, **{"general.n_prod": 1, "general.n_cons": 0})
    pool = WorkerPool(config, consumer_function=lambda payload: None, producer_function=produce)
    producers = []

    async def scenario(pool: WorkerPool) -> None:
        producers.extend(pool.producers)
        await wait_until(lambda: producers[0].errors >= 2)

    run_pool(pool, scenario)

    assert pool_store(tmp_path).counts()[JobState.QUEUED] == 0
    assert "got int: 42" in producers[0].last_error


def test_payloads_of_rejects_non_str() -> None:
    """payloads_of accepts None, a str or a list of str, and names the bad value otherwise."""
    assert payloads_of(None) == []
    assert payloads_of("a") == ["a"]
    assert payloads_of(["a", "b"]) == ["a", "b"]
    with pytest.raises(TypeError, match="got int: 3"):
        payloads_of(["a", 3])


def test_execute_function_rejects_non_callable(tmp_path: Path) -> None:
    """execute_function raises TypeError naming a value that is not callable."""
    async def main() -> None:
        pool = WorkerPool(make_config(tmp_path))
        await pool.start()
        try:
            with pytest.raises(TypeError, match="got str"):
                Consumer(pool.bridge, pool.config).execute_function("not a function")
        finally:
            await pool.stop()

    asyncio.run(main())


def test_worker_registry_shows_workers(tmp_path: Path) -> None:
    """Started workers appear in the registry, and as stopped after the pool stops."""
    pool = WorkerPool(make_config(tmp_path, **{"general.n_cons": 2}), consumer_function=lambda p: None)

    async def scenario(pool: WorkerPool) -> None:
        await wait_until(lambda: len(pool.store.workers()) == 3)

    run_pool(pool, scenario)

    records = pool_store(tmp_path).workers()
    assert sorted(record.kind for record in records) == ["cleaner", "consumer", "consumer"]
    assert {record.state for record in records} == {"stopped"}
    assert {record.pid for record in records} == {os.getpid()}


def test_cleaner_recovers_expired_lease(tmp_path: Path) -> None:
    """The cleaner requeues a job whose lease expired, keeping the attempt it used."""
    async def main() -> None:
        pool = WorkerPool(make_config(tmp_path, **{"general.n_cons": 0}))
        await pool.start()
        try:
            job_id = pool.store.put("orphan")
            pool.store.claim(lease_s=0.1, worker_id="gone", max_attempts=3)
            await asyncio.sleep(0.2)
            cleaner = Cleaner(pool.bridge, pool.config)
            await cleaner.run_once()
            job = pool.store.get(job_id)
            assert job.state == JobState.QUEUED
            assert job.attempts == 1
            assert "lease expired" in job.last_error
        finally:
            await pool.stop()

    asyncio.run(main())


def pool_store(tmp_path: Path):
    """Open the test queue again, after the pool closed its own store."""
    from persistentq.store.sqlite import PersistentQSQLite

    return PersistentQSQLite(tmp_path / "queue.sqlite3")


def test_backoff_delay_bounded() -> None:
    """backoff_delay stays within MAX_BACKOFF_S for any attempt count, and is 0 without a base."""
    import random

    from persistentq.workers.retry import MAX_BACKOFF_S, backoff_delay

    rng = random.Random(1)
    assert backoff_delay(1, 0, rng) == 0.0
    assert 0.5 <= backoff_delay(1, 1.0, rng) <= 1.0
    assert 2.0 <= backoff_delay(3, 1.0, rng) <= 4.0
    assert backoff_delay(10**9, 1.0, rng) <= MAX_BACKOFF_S


def test_pause_before_start(tmp_path: Path) -> None:
    """Consumers paused before the pool starts start paused and claim nothing."""
    async def noop(payload: str) -> None:
        return None

    pool = WorkerPool(make_config(tmp_path, **{"general.n_cons": 2}), consumer_function=noop)
    pool.pause("consumer")
    pool.store.put("waiting")

    async def scenario(pool: WorkerPool) -> None:
        await asyncio.sleep(0.5)
        assert pool.counts()[JobState.QUEUED] == 1
        assert {worker.state for worker in pool.consumers} == {"paused"}
        pool.resume("consumer")
        await wait_until(finished(pool, 1))

    run_pool(pool, scenario)


def test_scale_rejects_bool(tmp_path: Path) -> None:
    """scale() rejects True as a worker count with ValueError, as for other bad counts."""
    async def scenario(pool: WorkerPool) -> None:
        with pytest.raises(ValueError, match="n_cons must be an integer"):
            await pool.scale(n_cons=True)

    run_pool(WorkerPool(make_config(tmp_path), consumer_function=lambda p: None), scenario)


def test_start_during_stop_waits(tmp_path: Path) -> None:
    """A start made while a stop drains waits for it, then runs one working set of workers."""
    started = asyncio.Event()

    async def slow_then_fast(payload: str) -> str:
        if payload == "slow":
            started.set()
            await asyncio.sleep(0.5)
        return payload

    pool = WorkerPool(make_config(tmp_path, **{"general.shutdown_grace": 5}), consumer_function=slow_then_fast)
    pool.store.put("slow")

    async def main() -> None:
        await pool.start()
        await asyncio.wait_for(started.wait(), 10)
        old_cleaner = pool.cleaner
        stopping = asyncio.create_task(pool.stop())
        await asyncio.sleep(0)
        await pool.start()
        assert stopping.done()
        assert not old_cleaner.running
        pool.store.put("after restart")
        await wait_until(finished(pool, 2))
        await pool.stop()

    asyncio.run(main())

    assert {job.state for job in pool_store(tmp_path).jobs()} == {JobState.DONE}


def test_stop_during_claim_starts_nothing(tmp_path: Path) -> None:
    """A job whose claim was in flight when the stop came is handed back, never started."""
    from persistentq.store.sqlite import PersistentQSQLite

    class GatedStore(PersistentQSQLite):
        """A real store whose claims wait at a gate, so a stop can land mid-claim."""

        gate = None
        entered = None

        def claim(self, **options):
            if self.gate is not None:
                self.entered.set()
                self.gate.wait(10)
            return super().claim(**options)

    import threading

    store = GatedStore(tmp_path / "queue.sqlite3")
    calls: list[str] = []

    async def record(payload: str) -> None:
        calls.append(payload)

    pool = WorkerPool(make_config(tmp_path), store=store, consumer_function=record)
    job_id = store.put("x")
    store.gate, store.entered = threading.Event(), threading.Event()

    async def main() -> None:
        await pool.start()
        assert await asyncio.to_thread(store.entered.wait, 10)
        stopping = asyncio.create_task(pool.stop())
        await asyncio.sleep(0.1)
        store.gate.set()
        await stopping

    asyncio.run(main())

    job = store.get(job_id)
    assert calls == []
    assert job.state == JobState.QUEUED
    assert job.attempts == 0
    store.close()


def test_hurry_reaches_consumers_being_scaled_down(tmp_path: Path) -> None:
    """hurry() during scale-down hands running jobs back at once instead of after the grace."""
    started = asyncio.Event()

    async def long_job(payload: str) -> None:
        started.set()
        await asyncio.sleep(60)

    pool = WorkerPool(make_config(tmp_path, **{"general.shutdown_grace": 30}), consumer_function=long_job)
    job_id = pool.store.put("long")

    async def main() -> float:
        await pool.start()
        await asyncio.wait_for(started.wait(), 10)
        begin = time.monotonic()
        scaling = asyncio.create_task(pool.scale(n_cons=0))
        await asyncio.sleep(0.1)
        pool.hurry()
        await scaling
        await pool.stop()
        return time.monotonic() - begin

    elapsed = asyncio.run(main())

    job = pool_store(tmp_path).get(job_id)
    assert job.state == JobState.QUEUED
    assert job.attempts == 0
    assert elapsed < 10, f"scale-down took {elapsed:.1f} s despite hurry()"


def test_hurry_does_not_outlive_restart(tmp_path: Path) -> None:
    """After a hurried stop, a restarted worker gets its full grace period again."""
    async def one_second(payload: str) -> str:
        await asyncio.sleep(1)
        return "finished"

    async def main() -> None:
        pool = WorkerPool(make_config(tmp_path, **{"general.n_cons": 0}))
        await pool.start()
        try:
            consumer = Consumer(pool.bridge, pool.config).execute_function(one_second)
            consumer.start()
            consumer.hurry()
            await consumer.stop(grace_s=0)
            job_id = pool.store.put("x")
            consumer.start()
            await wait_until(lambda: consumer.current_job is not None)
            await consumer.stop(grace_s=5)
            await wait_until(lambda: pool.store.get(job_id).state == JobState.DONE, timeout_s=5)
        finally:
            await pool.stop()

    asyncio.run(main())


def test_error_backoff_grows_and_caps() -> None:
    """The wait after failed turns is 0 without failures, then doubles from 0.1 s up to 10 s."""
    from persistentq.workers.base import error_backoff_s

    assert error_backoff_s(0) == 0.0
    assert error_backoff_s(1) == pytest.approx(0.1)
    assert error_backoff_s(2) == pytest.approx(0.2)
    assert error_backoff_s(1000) == 10.0


def test_failing_producer_backs_off(tmp_path: Path) -> None:
    """A producer whose turns keep failing with interval 0 slows down instead of spinning."""
    async def broken() -> str:
        raise OSError("disk full")

    config = make_config(tmp_path, **{"general.n_prod": 1, "general.n_cons": 0, "producer.interval": 0})
    pool = WorkerPool(config, consumer_function=lambda payload: None, producer_function=broken)
    producers = []

    async def scenario(pool: WorkerPool) -> None:
        producers.extend(pool.producers)
        await asyncio.sleep(1.5)

    run_pool(pool, scenario)

    assert 3 <= producers[0].errors <= 6, producers[0].errors


def test_pool_reused_across_event_loops(tmp_path: Path) -> None:
    """A pool started and stopped with overlapping calls in one asyncio.run works in the next."""
    async def noop(payload: str) -> None:
        return None

    pool = WorkerPool(make_config(tmp_path), consumer_function=noop)

    async def overlapping() -> None:
        await asyncio.gather(pool.start(), pool.stop(), pool.start())
        await pool.stop()

    asyncio.run(overlapping())
    asyncio.run(overlapping())

    assert not pool.running
