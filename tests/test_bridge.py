"""AsyncStore: store calls off the event loop, with claims and outcomes batched."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

from persistentq.errors import JobNotFoundError, StoreError
from persistentq.store import ClaimedJob, JobState, Outcome, OutcomeKind, PersistentQSQLite
from persistentq.store.bridge import AsyncStore

LEASE_S = 30.0
MAX_ATTEMPTS = 3
TIMEOUT_S = 30.0


class CountingStore(PersistentQSQLite):
    """A real SQLite store that counts its claim and settle calls.

    Its claims can be held at a gate: set `claim_gate` to a cleared event and
    each claim sets `claim_started`, then waits for the gate before it runs.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.claim_calls = 0
        self.settle_calls = 0
        self.claim_started = threading.Event()
        self.claim_gate: threading.Event | None = None

    def claim(self, **kwargs: Any) -> list[ClaimedJob]:
        self.claim_calls += 1
        self.claim_started.set()
        if self.claim_gate is not None and not self.claim_gate.wait(timeout=TIMEOUT_S):
            raise TimeoutError("the test never opened the claim gate")
        return super().claim(**kwargs)

    def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        self.settle_calls += 1
        return super().settle(outcomes)


@pytest.fixture
def store(tmp_path: Path):
    counting_store = CountingStore(tmp_path / "queue.sqlite3")
    try:
        yield counting_store
    finally:
        counting_store.close()


def run(scenario: Coroutine[Any, Any, Any]) -> Any:
    """Run a test scenario on a fresh event loop, failing it after TIMEOUT_S."""
    return asyncio.run(asyncio.wait_for(scenario, TIMEOUT_S))


async def claim(bridge: AsyncStore, queue: str = "default") -> ClaimedJob | None:
    return await bridge.claim(queue=queue, lease_s=LEASE_S, max_attempts=MAX_ATTEMPTS)


# call


def test_call_returns_result(store):
    """call runs the function with its arguments and returns what it returned."""
    async def scenario() -> int:
        bridge = AsyncStore(store)
        try:
            return await bridge.call(store.put, "hello", queue="mail")
        finally:
            await bridge.aclose()

    job_id = run(scenario())

    assert store.get(job_id).queue == "mail"


def test_call_propagates_exception(store):
    """call raises the exception the function raised."""
    async def scenario() -> None:
        bridge = AsyncStore(store)
        try:
            with pytest.raises(JobNotFoundError):
                await bridge.call(store.get, 999_999)
            assert await bridge.call(store.put, "still works") > 0
        finally:
            await bridge.aclose()

    run(scenario())


def test_call_runs_off_event_loop_thread(store):
    """call runs the function on the store thread, not the event loop's thread."""
    async def scenario() -> threading.Thread:
        bridge = AsyncStore(store)
        try:
            return await bridge.call(threading.current_thread)
        finally:
            await bridge.aclose()

    store_thread = run(scenario())

    assert store_thread is not threading.main_thread()
    assert store_thread.name.startswith("persistentq-store")


# claim


def test_concurrent_claims_share_one_store_call(store):
    """Claims waiting together are served by one store.claim, each with a different job."""
    job_ids = store.put_many([f"job {n}" for n in range(5)])

    async def scenario() -> list[ClaimedJob | None]:
        bridge = AsyncStore(store)
        try:
            return await asyncio.gather(*(claim(bridge) for _ in range(5)))
        finally:
            await bridge.aclose()

    jobs = run(scenario())

    assert store.claim_calls == 1
    assert all(job is not None for job in jobs)
    assert sorted(job.id for job in jobs) == job_ids


def test_concurrent_claims_more_than_jobs(store):
    """Claimers beyond the jobs available get None, from the same single store.claim."""
    store.put_many(["a", "b"])

    async def scenario() -> list[ClaimedJob | None]:
        bridge = AsyncStore(store)
        try:
            return await asyncio.gather(*(claim(bridge) for _ in range(4)))
        finally:
            await bridge.aclose()

    jobs = run(scenario())

    assert store.claim_calls == 1
    assert sum(job is None for job in jobs) == 2
    assert len({job.id for job in jobs if job is not None}) == 2


def test_concurrent_claims_per_queue(store):
    """Claims for different queues go to separate store.claim calls, one per queue."""
    mail = store.put_many(["m1", "m2"], queue="mail")
    printing = store.put("p1", queue="print")

    async def scenario() -> list[ClaimedJob | None]:
        bridge = AsyncStore(store)
        try:
            return await asyncio.gather(claim(bridge, "mail"), claim(bridge, "print"), claim(bridge, "mail"))
        finally:
            await bridge.aclose()

    first_mail, print_job, second_mail = run(scenario())

    assert store.claim_calls == 2
    assert sorted([first_mail.id, second_mail.id]) == mail
    assert print_job.id == printing


def test_claim_stamps_claimer_id(store):
    """Jobs claimed through the bridge are held by its claimer id."""
    job_id = store.put("hello")

    async def scenario() -> None:
        bridge = AsyncStore(store, claimer_id="host-1:42")
        try:
            assert (await claim(bridge)).id == job_id
        finally:
            await bridge.aclose()

    run(scenario())

    assert store.get(job_id).worker_id == "host-1:42"


def test_claim_error_reaches_every_caller(store):
    """When the store's claim raises, every claimer of that batch gets the exception."""
    store.put("hello")
    store.close()

    async def scenario() -> list[object]:
        bridge = AsyncStore(store)
        try:
            return await asyncio.gather(claim(bridge), claim(bridge), return_exceptions=True)
        finally:
            await bridge.aclose()

    results = run(scenario())

    assert store.claim_calls == 1
    assert [type(result) for result in results] == [StoreError, StoreError]


def test_cancelled_claim_releases_job(store):
    """A claim cancelled while the store runs it hands its job back, the attempt unused."""
    job_id = store.put("hello")
    store.claim_gate = threading.Event()

    async def scenario() -> None:
        bridge = AsyncStore(store)
        try:
            claiming = asyncio.create_task(claim(bridge))
            started = await asyncio.to_thread(store.claim_started.wait, TIMEOUT_S)
            assert started, "the store's claim never started"
            claiming.cancel()
            store.claim_gate.set()
            with pytest.raises(asyncio.CancelledError):
                await claiming
        finally:
            await bridge.aclose()

    run(scenario())

    job = store.get(job_id)
    assert store.claim_calls == 1
    assert job.state is JobState.QUEUED
    assert job.attempts == 0
    assert job.lease_expires_at is None


def test_claim_cancelled_after_result_releases_job(store):
    """A claimer cancelled after its job arrived, but before it resumed, hands the job back."""
    job_id = store.put("hello")

    async def scenario() -> None:
        bridge = AsyncStore(store)
        try:
            claiming = asyncio.create_task(claim(bridge))

            async def cancel_claimer() -> None:
                # This call joins the claim's batch, and the bridge resolves calls
                # before claims, so this coroutine resumes first. It cancels the
                # claimer after its future got the job but before it resumed.
                await bridge.call(lambda: None)
                claiming.cancel()

            await asyncio.create_task(cancel_claimer())
            try:
                job = await claiming
            except asyncio.CancelledError:
                pass
            else:
                pytest.fail(f"the claimer resumed with {job} before the cancel; the race was missed")
        finally:
            await bridge.aclose()

    run(scenario())

    job = store.get(job_id)
    assert store.claim_calls == 1
    assert job.state is JobState.QUEUED
    assert job.attempts == 0


# settle


def test_outcomes_settled_in_one_call(store):
    """Outcomes queued together are written by one store.settle, each future with its result."""
    store.put_many(["a", "b", "c"])
    done, retried, failed = store.claim(limit=3, lease_s=LEASE_S, worker_id="w", max_attempts=MAX_ATTEMPTS)
    outcomes = [
        Outcome(OutcomeKind.ACK, done.id, done.lease_token, result="out"),
        Outcome(OutcomeKind.RETRY, retried.id, retried.lease_token, error="boom"),
        Outcome(OutcomeKind.FAIL, failed.id, failed.lease_token, error="gave up"),
        Outcome(OutcomeKind.ACK, done.id, "not-a-token"),
    ]

    async def scenario() -> list[bool]:
        bridge = AsyncStore(store)
        try:
            return await asyncio.gather(*(bridge.settle(outcome) for outcome in outcomes))
        finally:
            await bridge.aclose()

    matched = run(scenario())

    assert matched == [True, True, True, False]
    assert store.settle_calls == 1
    assert store.get(done.id).state is JobState.DONE
    assert store.get(retried.id).state is JobState.QUEUED
    assert store.get(failed.id).state is JobState.FAILED


# put_signal


def test_put_signal_resolves_after_put_from_other_thread(store):
    """put_signal resolves after a put on its queue made by another thread."""
    async def scenario() -> None:
        bridge = AsyncStore(store)
        try:
            signal = bridge.put_signal()
            other_queue = bridge.put_signal("other")
            assert bridge.put_signal() is signal
            assert not signal.done()

            putter = threading.Thread(target=store.put, args=("hello",))
            putter.start()
            await asyncio.wait_for(signal, TIMEOUT_S)
            putter.join(timeout=TIMEOUT_S)

            assert not other_queue.done()
            assert bridge.put_signal() is not signal
        finally:
            await bridge.aclose()

    run(scenario())


def test_put_signal_resolves_after_put_through_bridge(store):
    """put_signal resolves after a put made through bridge.call."""
    async def scenario() -> None:
        bridge = AsyncStore(store)
        try:
            signal = bridge.put_signal("mail")
            await bridge.call(store.put_many, ["a", "b"], queue="mail")
            await asyncio.wait_for(signal, TIMEOUT_S)
        finally:
            await bridge.aclose()

    run(scenario())


# aclose


def test_aclose_flushes_pending_outcomes(store):
    """aclose writes outcomes queued but not yet awaited before it returns."""
    store.put("hello")
    [job] = store.claim(limit=1, lease_s=LEASE_S, worker_id="w", max_attempts=MAX_ATTEMPTS)

    async def scenario() -> asyncio.Future:
        bridge = AsyncStore(store)
        pending = bridge.settle(Outcome(OutcomeKind.ACK, job.id, job.lease_token, result="out"))
        await bridge.aclose()
        return pending

    pending = run(scenario())

    assert pending.done()
    assert pending.result() is True
    assert store.get(job.id).state is JobState.DONE
    assert store.get(job.id).result == "out"


def test_aclose_idempotent(store):
    """A second aclose returns at once, and new calls after aclose raise RuntimeError."""
    store.put("hello")

    async def scenario() -> None:
        bridge = AsyncStore(store)
        await bridge.aclose()
        await bridge.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            bridge.settle(Outcome(OutcomeKind.ACK, 1, "token"))
        with pytest.raises(RuntimeError, match="closed"):
            await claim(bridge)

    run(scenario())

    assert store.claim_calls == 0
    assert store.get(1).state is JobState.QUEUED


def test_aclose_removes_put_listener(store):
    """After aclose, puts on the store no longer resolve the bridge's put signal."""
    async def scenario() -> None:
        bridge = AsyncStore(store)
        signal = bridge.put_signal()
        await bridge.aclose()

        store.put("hello")
        # A live listener would resolve the signal on the loop's next turns.
        for _ in range(3):
            await asyncio.sleep(0)

        assert not signal.done()

    run(scenario())


def test_cancelled_call_not_run(store) -> None:
    """A call whose caller was cancelled before its batch ran is skipped, so it cannot hold up a stop."""
    ran: list[str] = []

    def record(name: str) -> str:
        ran.append(name)
        return name

    async def scenario() -> str:
        bridge = AsyncStore(store)
        dropped = asyncio.ensure_future(bridge.call(record, "dropped"))
        kept = asyncio.ensure_future(bridge.call(record, "kept"))
        await asyncio.sleep(0)  # both calls are queued; the batch starts on the next turn
        dropped.cancel()
        result = await kept
        await bridge.aclose()
        return result

    assert run(scenario()) == "kept"
    assert ran == ["kept"]
