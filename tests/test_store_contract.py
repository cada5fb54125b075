"""The store contract (persistentq.store.base), run against every store kind in conftest.STORE_KINDS.

Every test gets an empty store from the `store` fixture and talks to it only
through the public contract, so a new backend passes this module unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import time

import pandas as pd
import pytest

from persistentq.errors import InvalidPayloadError, InvalidStateError, JobNotFoundError, PayloadTooLargeError
from persistentq.store import (
    MAX_PAYLOAD_BYTES,
    ClaimedJob,
    JobState,
    Outcome,
    OutcomeKind,
    PersistentQSQLite,
    PersistentQStore,
    Recovered,
    WorkerRecord,
)
from persistentq.store.base import MAX_ERROR_CHARS

LEASE_S = 30.0
MAX_ATTEMPTS = 3
# Lease of the tests that wait for a lease to expire on the wall clock.
SHORT_LEASE_S = 0.2
# Margin for stores that stamp times with the database's clock, not this process's.
CLOCK_TOLERANCE_S = 1.0
UNKNOWN_ID = 999_999


def claim(
    store: PersistentQStore,
    *,
    limit: int = 1,
    queue: str = "default",
    worker_id: str = "worker-1",
    lease_s: float = LEASE_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> list[ClaimedJob]:
    return store.claim(
        queue=queue, limit=limit, lease_s=lease_s, worker_id=worker_id, max_attempts=max_attempts
    )


def claim_one(store: PersistentQStore, **kwargs: object) -> ClaimedJob:
    jobs = claim(store, limit=1, **kwargs)
    assert len(jobs) == 1, f"expected one claimed job, got {jobs}"
    return jobs[0]


def settle_one(store: PersistentQStore, kind: OutcomeKind, job: ClaimedJob) -> bool:
    outcome = Outcome(kind, job.id, job.lease_token, result="result text", error="error text")
    [matched] = store.settle([outcome])
    return matched


def wait_until_past(deadline: float) -> None:
    """Sleep until the wall clock is past `deadline`, in seconds since the epoch."""
    remaining_s = deadline - time.time()
    if remaining_s > 0:
        time.sleep(remaining_s + 0.05)


def expire_lease(store: PersistentQStore, job_id: int) -> None:
    lease_expires_at = store.get(job_id).lease_expires_at
    assert lease_expires_at is not None
    wait_until_past(lease_expires_at)


def assert_between(value: float | None, low: float, high: float) -> None:
    assert value is not None
    assert low - CLOCK_TOLERANCE_S <= value <= high + CLOCK_TOLERANCE_S


def make_state(store: PersistentQStore, state: JobState, payload: str = "job") -> int:
    """Put one job, drive it into `state` and return its id.

    A job to be claimed gets a priority above every queued job of the tests,
    so the claim takes it and not one of those.
    """
    if state is JobState.QUEUED:
        return store.put(payload)
    job_id = store.put(payload, priority=1000)
    if state is JobState.CANCELLED:
        assert store.cancel([job_id]) == 1
        return job_id
    job = claim_one(store)
    assert job.id == job_id
    if state is JobState.DONE:
        assert store.ack(job.id, job.lease_token, result="out")
    elif state is JobState.FAILED:
        assert store.fail(job.id, job.lease_token, error="boom")
    return job_id


def worker_record(worker_id: str = "worker-1", **changes: object) -> WorkerRecord:
    now = time.time()
    record = WorkerRecord(
        id=worker_id, kind="consumer", host="host-1", pid=4242, state="running",
        started_at=now, heartbeat_at=now,
    )
    return dataclasses.replace(record, **changes)


# put and put_many


def test_put_returns_increasing_ids(store):
    """Each put returns an id larger than the one before."""
    ids = [store.put(f"job {n}") for n in range(5)]

    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_put_ids_not_reused_after_purge(store):
    """A job put after the newest jobs were purged gets a new id, not a purged one."""
    ids = store.put_many(["a", "b", "c"])
    store.cancel(ids[1:])
    assert store.purge() == 2

    assert store.put("d") > max(ids)


def test_put_sets_initial_fields(store):
    """A new job is queued, with no attempt, its priority, and created and available now."""
    before = time.time()
    job_id = store.put("hello", queue="mail", priority=7)
    after = time.time()

    job = store.get(job_id)
    assert job.id == job_id
    assert job.queue == "mail"
    assert job.payload == "hello"
    assert job.state is JobState.QUEUED
    assert job.priority == 7
    assert job.attempts == 0
    assert_between(job.created_at, before, after)
    assert job.available_at == pytest.approx(job.created_at)
    assert job.started_at is None
    assert job.finished_at is None
    assert job.lease_expires_at is None
    assert job.worker_id is None
    assert job.last_error is None
    assert job.result is None
    assert job.unique_key is None


def test_put_delay_defers_claim(store):
    """A job put with delay_s is available from put time + delay_s, and not claimable before."""
    before = time.time()
    later = store.put("later", delay_s=LEASE_S)
    soon = store.put("soon", delay_s=0.3)
    after = time.time()

    assert_between(store.get(later).available_at, before + LEASE_S, after + LEASE_S)
    assert_between(store.get(soon).available_at, before + 0.3, after + 0.3)

    wait_until_past(store.get(soon).available_at)

    assert [job.id for job in claim(store, limit=5)] == [soon]
    assert store.get(later).state is JobState.QUEUED


def test_put_delay_lets_other_jobs_pass(store):
    """A delayed job does not block a later job that is available now."""
    store.put("later", delay_s=LEASE_S)
    now_id = store.put("now")

    assert [job.id for job in claim(store, limit=5)] == [now_id]


def test_put_many_returns_ids_in_order(store):
    """put_many returns one increasing id per payload, in the order given."""
    payloads = ["a", "b", "c", "d"]

    ids = store.put_many(payloads, queue="batch", priority=2)

    assert ids == sorted(ids)
    assert len(set(ids)) == len(payloads)
    for job_id, payload in zip(ids, payloads):
        job = store.get(job_id)
        assert job.payload == payload
        assert job.queue == "batch"
        assert job.priority == 2
        assert job.state is JobState.QUEUED


def test_put_many_accepts_generator(store):
    """put_many takes any iterable of payloads."""
    ids = store.put_many(f"job {n}" for n in range(3))

    assert [store.get(job_id).payload for job_id in ids] == ["job 0", "job 1", "job 2"]


def test_put_many_empty_returns_empty_list(store):
    """put_many of no payloads adds nothing and returns []."""
    assert store.put_many([]) == []
    assert sum(store.counts().values()) == 0


def test_put_many_too_large_adds_nothing(store):
    """A payload over the limit in the middle of put_many rejects the whole batch."""
    too_large = "x" * (MAX_PAYLOAD_BYTES + 1)

    with pytest.raises(PayloadTooLargeError):
        store.put_many(["first", too_large, "last"])

    assert sum(store.counts().values()) == 0
    assert store.jobs() == []


def test_put_many_non_str_adds_nothing(store):
    """A non-str payload in put_many raises TypeError and adds nothing."""
    with pytest.raises(TypeError):
        store.put_many(["first", b"bytes", "last"])

    assert sum(store.counts().values()) == 0


def test_put_many_delay_defers_claim(store):
    """put_many with delay_s makes every job of the batch unclaimable for that long."""
    store.put_many(["a", "b"], delay_s=LEASE_S)

    assert claim(store, limit=5) == []


def test_put_payload_over_limit_raises(store):
    """A payload over 1 MiB in UTF-8 is rejected, though it has fewer characters than that."""
    # "é" is two bytes in UTF-8: this payload is 1 MiB + 2 bytes in 512 Ki + 1 characters.
    payload = "é" * (MAX_PAYLOAD_BYTES // 2 + 1)

    with pytest.raises(PayloadTooLargeError, match=str(MAX_PAYLOAD_BYTES)):
        store.put(payload)

    assert sum(store.counts().values()) == 0


def test_put_emoji_payload_over_limit(store):
    """The limit counts the four UTF-8 bytes of a character outside the BMP."""
    payload = "\N{GRINNING FACE}" * (MAX_PAYLOAD_BYTES // 4) + "x"

    with pytest.raises(PayloadTooLargeError):
        store.put(payload)


def test_put_payload_at_limit_accepted(store):
    """A payload of exactly 1 MiB in UTF-8 is stored and read back unchanged."""
    payload = "é" * (MAX_PAYLOAD_BYTES // 2)
    assert len(payload.encode("utf-8")) == MAX_PAYLOAD_BYTES

    job_id = store.put(payload)

    assert store.get(job_id).payload == payload


@pytest.mark.parametrize("payload", [b"bytes", 42, None, ["a"]], ids=["bytes", "int", "None", "list"])
def test_put_non_str_raises_type_error(store, payload):
    """put rejects a payload that is not a str with TypeError and adds nothing."""
    with pytest.raises(TypeError):
        store.put(payload)

    assert sum(store.counts().values()) == 0


def test_put_lone_surrogate_rejected(store):
    """A payload that is not valid Unicode raises InvalidPayloadError naming the position, and adds nothing."""
    with pytest.raises(InvalidPayloadError, match="position 2"):
        store.put("ab\ud800")

    assert sum(store.counts().values()) == 0


def test_put_unique_key_while_queued(store):
    """A second put with the key of a queued job returns that job's id and adds nothing."""
    first = store.put("a", unique_key="k")

    assert store.put("b", unique_key="k") == first
    assert store.counts()[JobState.QUEUED] == 1
    assert store.get(first).payload == "a"
    assert store.get(first).unique_key == "k"


def test_put_unique_key_while_running(store):
    """A second put with the key of a running job returns that job's id."""
    first = store.put("a", unique_key="k")
    claim_one(store)

    assert store.put("b", unique_key="k") == first
    assert store.counts()[JobState.QUEUED] == 0


@pytest.mark.parametrize("finished", [JobState.DONE, JobState.FAILED, JobState.CANCELLED])
def test_put_unique_key_after_finished(store, finished):
    """Once the job with a key is finished, a put with that key adds a new job."""
    store.put("a", unique_key="k")
    if finished is JobState.CANCELLED:
        store.cancel([store.jobs()[0].id])
    else:
        job = claim_one(store)
        if finished is JobState.DONE:
            store.ack(job.id, job.lease_token)
        else:
            store.fail(job.id, job.lease_token, error="boom")
    first = store.jobs()[0].id

    second = store.put("b", unique_key="k")

    assert second != first
    assert store.get(second).state is JobState.QUEUED
    assert store.get(first).state is finished


def test_put_unique_key_per_queue(store):
    """The same key in another queue adds a new job."""
    first = store.put("a", queue="one", unique_key="k")

    assert store.put("b", queue="two", unique_key="k") != first


# claim


def test_claim_respects_limit(store):
    """A claim returns at most `limit` jobs, and the rest stay queued."""
    store.put_many([f"job {n}" for n in range(5)])

    assert len(claim(store, limit=3)) == 3
    assert store.counts()[JobState.QUEUED] == 2
    assert len(claim(store, limit=10)) == 2
    assert claim(store, limit=10) == []


def test_claim_empty_returns_empty_list(store):
    """A claim on an empty queue returns an empty list."""
    jobs = claim(store, limit=5)

    assert jobs == []
    assert isinstance(jobs, list)


def test_claim_sets_running_fields(store):
    """A claim marks the job running, leased until now + lease_s, held by the worker."""
    job_id = store.put("hello", priority=3)

    before = time.time()
    claimed = claim_one(store, worker_id="worker-7", lease_s=LEASE_S)
    after = time.time()

    assert claimed.id == job_id
    assert claimed.queue == "default"
    assert claimed.payload == "hello"
    assert claimed.priority == 3
    job = store.get(job_id)
    assert job.state is JobState.RUNNING
    assert job.worker_id == "worker-7"
    assert_between(job.started_at, before, after)
    assert_between(job.lease_expires_at, before + LEASE_S, after + LEASE_S)
    assert job.finished_at is None


def test_claim_tokens_distinct(store):
    """Every claimed job gets its own lease token, and a new claim of a job gets a new one."""
    store.put_many([f"job {n}" for n in range(10)])

    jobs = claim(store, limit=10)
    tokens = [job.lease_token for job in jobs]
    assert all(isinstance(token, str) and token for token in tokens)
    assert len(set(tokens)) == 10

    first = jobs[0]
    assert store.release(first.id, first.lease_token)
    again = claim_one(store)
    assert again.id == first.id
    assert again.lease_token not in tokens


def test_claim_counts_attempt(store):
    """Each claim of a job adds one attempt, in the claimed job and in the row."""
    job_id = store.put("hello")

    first = claim_one(store)
    assert first.attempts == 1
    assert store.get(job_id).attempts == 1

    assert store.retry(first.id, first.lease_token, error="boom")
    second = claim_one(store)
    assert second.attempts == 2
    assert store.get(job_id).attempts == 2


def test_claim_isolates_queues(store):
    """A claim takes jobs of its own queue only."""
    mail = store.put("mail job", queue="mail")
    print_job = store.put("print job", queue="print")

    assert [job.id for job in claim(store, queue="mail", limit=5)] == [mail]
    assert claim(store, queue="mail", limit=5) == []
    assert claim(store, queue="default", limit=5) == []
    assert store.get(print_job).state is JobState.QUEUED
    assert store.counts(queue="print")[JobState.QUEUED] == 1
    assert [job.id for job in claim(store, queue="print", limit=5)] == [print_job]


def test_claim_order_priority_then_fifo(store):
    """A batch claim returns the highest priority first, then the oldest."""
    low_1 = store.put("low 1", priority=0)
    high_1 = store.put("high 1", priority=5)
    low_2 = store.put("low 2", priority=0)
    high_2 = store.put("high 2", priority=5)
    urgent = store.put("urgent", priority=9)

    ids = [job.id for job in claim(store, limit=5)]

    assert ids == [urgent, high_1, high_2, low_1, low_2]


def test_claim_order_one_at_a_time(store):
    """Single claims take jobs in the same order as a batch claim."""
    low_1 = store.put("low 1", priority=-1)
    mid = store.put("mid", priority=0)
    high = store.put("high", priority=1)
    low_2 = store.put("low 2", priority=-1)

    ids = [claim_one(store).id for _ in range(4)]

    assert ids == [high, mid, low_1, low_2]


def test_claim_order_available_time_before_id(store):
    """Among equal priorities a job available earlier is claimed before an older id."""
    older = store.put("older")
    newer = store.put("newer")
    first = claim_one(store)
    assert first.id == older
    # Release makes `older` available from now, after `newer`.
    assert store.release(first.id, first.lease_token)

    ids = [job.id for job in claim(store, limit=2)]

    assert ids == [newer, older]


def test_claim_order_available_time_single(store):
    """A single claim takes the job available earlier before an older id of equal priority."""
    older = store.put("older")
    newer = store.put("newer")
    first = claim_one(store)
    assert store.release(first.id, first.lease_token)

    assert claim_one(store).id == newer
    assert claim_one(store).id == older


# ack, retry, fail, release and settle


def test_ack_sets_done_result_finished(store):
    """ack marks the job done with its result and finished time, and drops the lease."""
    job_id = store.put("hello")
    job = claim_one(store)

    before = time.time()
    assert store.ack(job.id, job.lease_token, result="hello.out") is True
    after = time.time()

    row = store.get(job_id)
    assert row.state is JobState.DONE
    assert row.result == "hello.out"
    assert_between(row.finished_at, before, after)
    assert row.lease_expires_at is None
    assert row.attempts == 1
    assert store.counts()[JobState.DONE] == 1


def test_retry_requeues_with_error_and_delay(store):
    """retry queues the job again with its error, available after delay_s, the attempt kept."""
    job_id = store.put("hello")
    job = claim_one(store)

    before = time.time()
    assert store.retry(job.id, job.lease_token, error="ValueError: bad", delay_s=LEASE_S) is True
    after = time.time()

    row = store.get(job_id)
    assert row.state is JobState.QUEUED
    assert row.last_error == "ValueError: bad"
    assert row.attempts == 1
    assert row.lease_expires_at is None
    assert row.finished_at is None
    assert_between(row.available_at, before + LEASE_S, after + LEASE_S)
    assert claim(store) == []


def test_retry_without_delay_is_claimable(store):
    """A job retried with no delay can be claimed again at once."""
    job_id = store.put("hello")
    job = claim_one(store)
    assert store.retry(job.id, job.lease_token, error="boom")

    assert claim_one(store).id == job_id


def test_fail_sets_failed_and_error(store):
    """fail marks the job failed with its error and finished time."""
    job_id = store.put("hello")
    job = claim_one(store)

    before = time.time()
    assert store.fail(job.id, job.lease_token, error="RuntimeError: gave up") is True
    after = time.time()

    row = store.get(job_id)
    assert row.state is JobState.FAILED
    assert row.last_error == "RuntimeError: gave up"
    assert_between(row.finished_at, before, after)
    assert row.lease_expires_at is None
    assert claim(store) == []


def test_fail_clips_long_error_keeping_end(store):
    """An error text longer than MAX_ERROR_CHARS is cut to that length, keeping its end."""
    store.put("hello")
    job = claim_one(store)
    error = "Traceback line\n" * 2000 + "ValueError: the last line"

    assert store.fail(job.id, job.lease_token, error=error)

    stored = store.get(job.id).last_error
    assert len(stored) == MAX_ERROR_CHARS
    assert stored.endswith("ValueError: the last line")


def test_release_restores_attempts(store):
    """release queues the job again without using up the attempt."""
    job_id = store.put("hello")
    job = claim_one(store)

    assert store.release(job.id, job.lease_token) is True

    row = store.get(job_id)
    assert row.state is JobState.QUEUED
    assert row.attempts == 0
    assert row.lease_expires_at is None
    assert claim_one(store).attempts == 1


def test_release_keeps_earlier_attempts(store):
    """release takes back only the attempt it ends, not the ones before it."""
    job_id = store.put("hello")
    first = claim_one(store)
    assert store.retry(first.id, first.lease_token, error="boom")
    second = claim_one(store)
    assert second.attempts == 2

    assert store.release(second.id, second.lease_token)

    assert store.get(job_id).attempts == 1


def test_settle_records_worker_id(store):
    """An outcome that names its worker stores that worker on the job."""
    store.put("hello")
    job = claim_one(store, worker_id="claimer")

    outcome = Outcome(OutcomeKind.ACK, job.id, job.lease_token, worker_id="consumer-3")
    assert store.settle([outcome]) == [True]

    assert store.get(job.id).worker_id == "consumer-3"


@pytest.mark.parametrize("first", list(OutcomeKind), ids=lambda kind: kind.value)
@pytest.mark.parametrize("stale", list(OutcomeKind), ids=lambda kind: kind.value)
def test_outcome_stale_after_outcome(store, first, stale):
    """An outcome quoting a token already used by another outcome returns False, changes nothing."""
    store.put("hello")
    job = claim_one(store)
    assert settle_one(store, first, job) is True
    before = store.get(job.id)

    assert settle_one(store, stale, job) is False

    assert store.get(job.id) == before


@pytest.mark.parametrize("stale", list(OutcomeKind), ids=lambda kind: kind.value)
def test_outcome_stale_after_reclaim(store, stale):
    """After recovery and a claim by another worker, the first worker's outcome is rejected."""
    store.put("hello")
    old = claim_one(store, worker_id="slow", lease_s=SHORT_LEASE_S)
    expire_lease(store, old.id)
    new = claim_one(store, worker_id="fast")
    assert new.id == old.id
    assert new.lease_token != old.lease_token
    before = store.get(old.id)

    assert settle_one(store, stale, old) is False

    assert store.get(old.id) == before
    assert store.ack(new.id, new.lease_token, result="from fast") is True
    assert store.get(old.id).result == "from fast"


@pytest.mark.parametrize("kind", list(OutcomeKind), ids=lambda kind: kind.value)
def test_outcome_wrong_token(store, kind):
    """An outcome quoting a token the job never had returns False and changes nothing."""
    store.put("hello")
    job = claim_one(store)
    before = store.get(job.id)

    assert settle_one(store, kind, dataclasses.replace(job, lease_token="not-a-token")) is False

    assert store.get(job.id) == before


def test_outcome_unknown_job(store):
    """An outcome for a job id that does not exist returns False."""
    assert store.ack(UNKNOWN_ID, "token") is False


def test_settle_mixed_stale_and_fresh(store):
    """settle returns one bool per outcome and writes only those whose token matched."""
    store.put_many(["a", "b", "c", "d"])
    a, b, c, d = claim(store, limit=4)
    assert store.ack(a.id, a.lease_token, result="first")

    matched = store.settle([
        Outcome(OutcomeKind.ACK, a.id, a.lease_token, result="second"),
        Outcome(OutcomeKind.RETRY, b.id, b.lease_token, error="boom"),
        Outcome(OutcomeKind.FAIL, c.id, c.lease_token, error="gave up"),
        Outcome(OutcomeKind.RELEASE, d.id, "not-a-token"),
    ])

    assert matched == [False, True, True, False]
    assert store.get(a.id).result == "first"
    assert store.get(b.id).state is JobState.QUEUED
    assert store.get(c.id).state is JobState.FAILED
    assert store.get(d.id).state is JobState.RUNNING


def test_settle_empty_returns_empty_list(store):
    """settle of no outcomes returns []."""
    assert store.settle([]) == []


# renew


def test_renew_extends_lease(store):
    """renew moves the lease expiry to now + lease_s."""
    store.put("hello")
    job = claim_one(store, lease_s=LEASE_S)
    old_expiry = store.get(job.id).lease_expires_at

    before = time.time()
    assert store.renew([(job.id, job.lease_token)], lease_s=10 * LEASE_S) == [True]
    after = time.time()

    new_expiry = store.get(job.id).lease_expires_at
    assert new_expiry > old_expiry
    assert_between(new_expiry, before + 10 * LEASE_S, after + 10 * LEASE_S)


def test_renew_stale_token_returns_false(store):
    """renew returns False for a lease that no longer holds its job and leaves that job alone."""
    store.put_many(["a", "b"])
    done, running = claim(store, limit=2)
    assert store.ack(done.id, done.lease_token)
    before = store.get(done.id)

    leases = [(done.id, done.lease_token), (running.id, running.lease_token)]
    assert store.renew(leases, lease_s=LEASE_S) == [False, True]

    assert store.get(done.id) == before


def test_renew_wrong_token_returns_false(store):
    """renew with a token the running job never had returns False and keeps its lease."""
    store.put("hello")
    job = claim_one(store)
    before = store.get(job.id)

    assert store.renew([(job.id, "not-a-token")], lease_s=10 * LEASE_S) == [False]

    assert store.get(job.id) == before


def test_renew_stale_after_reclaim(store):
    """After recovery and a claim by another worker, the first worker cannot renew the lease."""
    store.put("hello")
    old = claim_one(store, worker_id="slow", lease_s=SHORT_LEASE_S)
    expire_lease(store, old.id)
    new = claim_one(store, worker_id="fast")
    before = store.get(new.id)

    assert store.renew([(old.id, old.lease_token)], lease_s=10 * LEASE_S) == [False]

    assert store.get(new.id) == before


def test_renew_empty_returns_empty_list(store):
    """renew of no leases returns []."""
    assert store.renew([], lease_s=LEASE_S) == []


def test_renew_keeps_job_from_recovery(store):
    """A job whose short lease was renewed is not recovered when the first lease would end."""
    store.put("hello")
    job = claim_one(store, lease_s=SHORT_LEASE_S)
    first_expiry = store.get(job.id).lease_expires_at
    assert store.renew([(job.id, job.lease_token)], lease_s=LEASE_S) == [True]

    wait_until_past(first_expiry)

    assert store.recover_expired(max_attempts=MAX_ATTEMPTS) == Recovered(requeued=0, failed=0)
    assert store.get(job.id).state is JobState.RUNNING


# recover_expired


def test_recover_expired_requeues(store):
    """A job whose lease expired is queued again, and the attempt it used still counts."""
    job_id = store.put("hello")
    job = claim_one(store, lease_s=SHORT_LEASE_S)
    expire_lease(store, job.id)

    assert store.recover_expired(max_attempts=MAX_ATTEMPTS) == Recovered(requeued=1, failed=0)

    row = store.get(job_id)
    assert row.state is JobState.QUEUED
    assert row.attempts == 1
    assert row.lease_expires_at is None
    assert row.last_error
    assert claim_one(store).attempts == 2


def test_recover_expired_fails_last_attempt(store):
    """A job whose lease expired on its last attempt is failed."""
    job_id = store.put("hello")
    job = claim_one(store, lease_s=SHORT_LEASE_S, max_attempts=1)
    expire_lease(store, job.id)

    assert store.recover_expired(max_attempts=1) == Recovered(requeued=0, failed=1)

    row = store.get(job_id)
    assert row.state is JobState.FAILED
    assert row.attempts == 1
    assert row.finished_at is not None
    assert row.last_error
    assert claim(store) == []


def test_recover_expired_leaves_live_leases(store):
    """recover_expired leaves jobs whose lease has not expired."""
    store.put("hello")
    job = claim_one(store, lease_s=LEASE_S)

    assert store.recover_expired(max_attempts=MAX_ATTEMPTS) == Recovered(requeued=0, failed=0)
    assert store.get(job.id).state is JobState.RUNNING


def test_recover_expired_other_queue_untouched(store):
    """recover_expired works on its own queue only."""
    store.put("hello", queue="mail")
    job = claim_one(store, queue="mail", lease_s=SHORT_LEASE_S)
    expire_lease(store, job.id)

    assert store.recover_expired(queue="print", max_attempts=MAX_ATTEMPTS) == Recovered(0, 0)
    assert store.get(job.id).state is JobState.RUNNING
    assert store.recover_expired(queue="mail", max_attempts=MAX_ATTEMPTS) == Recovered(1, 0)


def test_recover_expired_rejects_old_token(store):
    """After recovery the old lease token can neither settle nor renew the job."""
    store.put("hello")
    job = claim_one(store, lease_s=SHORT_LEASE_S)
    expire_lease(store, job.id)
    store.recover_expired(max_attempts=MAX_ATTEMPTS)
    before = store.get(job.id)

    assert store.ack(job.id, job.lease_token) is False
    assert store.renew([(job.id, job.lease_token)], lease_s=LEASE_S) == [False]
    assert store.get(job.id) == before


def test_claim_recovers_expired(store):
    """A claim first requeues expired leases, so it can take that job again."""
    job_id = store.put("hello")
    old = claim_one(store, worker_id="dead", lease_s=SHORT_LEASE_S)
    expire_lease(store, job_id)

    new = claim_one(store, worker_id="alive")

    assert new.id == job_id
    assert new.attempts == 2
    assert new.lease_token != old.lease_token
    assert store.get(job_id).worker_id == "alive"


def test_claim_fails_expired_last_attempt(store):
    """A claim fails an expired job that was on its last attempt instead of taking it."""
    job_id = store.put("hello")
    claim_one(store, lease_s=SHORT_LEASE_S, max_attempts=1)
    expire_lease(store, job_id)

    assert claim(store, max_attempts=1) == []
    assert store.get(job_id).state is JobState.FAILED


# cancel


def test_cancel_affects_queued_only(store):
    """cancel moves queued jobs to cancelled, leaves other states, and returns the count."""
    queued = make_state(store, JobState.QUEUED)
    running = make_state(store, JobState.RUNNING)
    done = make_state(store, JobState.DONE)
    failed = make_state(store, JobState.FAILED)
    other_queued = store.put("stays")

    assert store.cancel([queued, running, done, failed]) == 1

    assert store.get(queued).state is JobState.CANCELLED
    assert store.get(queued).finished_at is not None
    assert store.get(running).state is JobState.RUNNING
    assert store.get(done).state is JobState.DONE
    assert store.get(failed).state is JobState.FAILED
    assert store.get(other_queued).state is JobState.QUEUED


def test_cancel_keeps_job_from_claims(store):
    """A cancelled job is never claimed."""
    job_id = store.put("hello")
    store.cancel([job_id])

    assert claim(store) == []


def test_cancel_unknown_id_raises(store):
    """cancel with an unknown id raises JobNotFoundError and cancels none of the others."""
    queued = store.put("hello")

    with pytest.raises(JobNotFoundError, match=str(UNKNOWN_ID)):
        store.cancel([queued, UNKNOWN_ID])

    assert store.get(queued).state is JobState.QUEUED


def test_cancel_empty_returns_zero(store):
    """cancel of no ids returns 0."""
    assert store.cancel([]) == 0


# requeue


def test_requeue_failed_and_cancelled(store):
    """requeue moves failed and cancelled jobs back to queued with attempts 0."""
    failed = make_state(store, JobState.FAILED)
    cancelled = make_state(store, JobState.CANCELLED)
    assert store.get(failed).attempts == 1

    assert store.requeue([failed, cancelled]) == 2

    for job_id in (failed, cancelled):
        row = store.get(job_id)
        assert row.state is JobState.QUEUED
        assert row.attempts == 0
        assert row.finished_at is None
    assert {job.id for job in claim(store, limit=5)} == {failed, cancelled}


@pytest.mark.parametrize("state", [JobState.DONE, JobState.QUEUED, JobState.RUNNING])
def test_requeue_wrong_state_raises(store, state):
    """requeue of a done, queued or running job raises InvalidStateError and changes nothing."""
    failed = make_state(store, JobState.FAILED)
    other = make_state(store, state)
    before = [store.get(failed), store.get(other)]

    with pytest.raises(InvalidStateError, match=state.value):
        store.requeue([failed, other])

    assert [store.get(failed), store.get(other)] == before


def test_requeue_unknown_id_raises(store):
    """requeue with an unknown id raises JobNotFoundError and changes nothing."""
    failed = make_state(store, JobState.FAILED)

    with pytest.raises(JobNotFoundError, match=str(UNKNOWN_ID)):
        store.requeue([failed, UNKNOWN_ID])

    assert store.get(failed).state is JobState.FAILED


def test_requeue_failed_helper(store):
    """requeue_failed requeues every failed job of the queue and returns the count."""
    failed = [make_state(store, JobState.FAILED) for _ in range(3)]
    done = make_state(store, JobState.DONE)

    assert store.requeue_failed() == 3

    assert all(store.get(job_id).state is JobState.QUEUED for job_id in failed)
    assert store.get(done).state is JobState.DONE
    assert store.requeue_failed() == 0


# purge


def test_purge_default_keeps_active_jobs(store):
    """purge by default deletes done, failed and cancelled jobs and keeps queued and running."""
    finished = [make_state(store, state) for state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)]
    running = make_state(store, JobState.RUNNING)
    queued = make_state(store, JobState.QUEUED)
    store.mark_discarded([finished[1]])

    assert store.purge() == 3

    for job_id in finished:
        with pytest.raises(JobNotFoundError):
            store.get(job_id)
    assert store.get(running).state is JobState.RUNNING
    assert store.get(queued).state is JobState.QUEUED


def test_purge_by_state(store):
    """purge with `states` deletes only jobs in those states."""
    done = make_state(store, JobState.DONE)
    failed = make_state(store, JobState.FAILED)
    cancelled = make_state(store, JobState.CANCELLED)

    assert store.purge(states=[JobState.DONE, JobState.CANCELLED]) == 2

    assert [job.id for job in store.jobs()] == [failed]
    for job_id in (done, cancelled):
        with pytest.raises(JobNotFoundError):
            store.get(job_id)


def test_purge_keeps_undiscarded_failed(store):
    """purge keeps a failed job until the cleaner discarded its leftovers, then deletes it."""
    failed = make_state(store, JobState.FAILED)

    assert store.purge(states=[JobState.FAILED]) == 0
    assert store.get(failed).state is JobState.FAILED

    store.mark_discarded([failed])
    assert store.purge(states=[JobState.FAILED]) == 1


def test_purge_by_age(store):
    """purge with older_than_s keeps jobs that finished more recently than that."""
    make_state(store, JobState.DONE)

    assert store.purge(older_than_s=3600) == 0
    assert store.counts()[JobState.DONE] == 1


def test_purge_by_age_splits_old_and_new(store):
    """purge deletes the job that finished before the cutoff and keeps the one after it."""
    old = make_state(store, JobState.DONE, "old")
    cutoff = store.get(old).finished_at + 0.05
    wait_until_past(cutoff + 0.5)
    new = make_state(store, JobState.DONE, "new")

    assert store.purge(older_than_s=time.time() - cutoff) == 1

    assert [job.id for job in store.jobs()] == [new]


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.RUNNING])
def test_purge_rejects_active_states(store, state):
    """purge of queued or running jobs raises InvalidStateError and deletes nothing."""
    make_state(store, state)
    make_state(store, JobState.DONE)

    with pytest.raises(InvalidStateError, match=state.value):
        store.purge(states=[JobState.DONE, state])

    assert sum(store.counts().values()) == 2


def test_purge_other_queue_untouched(store):
    """purge deletes jobs of its own queue only."""
    job_id = store.put("hello", queue="mail")
    store.cancel([job_id])

    assert store.purge(queue="default") == 0
    assert store.get(job_id).state is JobState.CANCELLED
    assert store.purge(queue="mail") == 1


# counts, get, jobs and dataframe


def test_counts_has_every_state(store):
    """counts has a key for every state, with 0 where there is no job."""
    assert store.counts() == {state: 0 for state in JobState}

    for state in (JobState.QUEUED, JobState.QUEUED, JobState.RUNNING, JobState.FAILED):
        make_state(store, state)
    store.put("elsewhere", queue="other")

    assert store.counts() == {
        JobState.QUEUED: 2, JobState.RUNNING: 1, JobState.DONE: 0,
        JobState.FAILED: 1, JobState.CANCELLED: 0,
    }
    assert store.counts(queue="other")[JobState.QUEUED] == 1


def test_get_unknown_raises(store):
    """get of an id that does not exist raises JobNotFoundError."""
    with pytest.raises(JobNotFoundError, match=str(UNKNOWN_ID)):
        store.get(UNKNOWN_ID)


def test_jobs_newest_first_with_paging(store):
    """jobs returns pages newest first; limit and offset pick the page."""
    ids = store.put_many([f"job {n}" for n in range(5)])
    newest_first = ids[::-1]

    assert [job.id for job in store.jobs()] == newest_first
    assert [job.id for job in store.jobs(limit=2)] == newest_first[:2]
    assert [job.id for job in store.jobs(limit=2, offset=2)] == newest_first[2:4]
    assert [job.id for job in store.jobs(limit=2, offset=4)] == newest_first[4:]
    assert store.jobs(offset=5) == []


def test_jobs_filters_state(store):
    """jobs with `state` returns only jobs in that state."""
    queued = make_state(store, JobState.QUEUED)
    done = make_state(store, JobState.DONE)
    failed = make_state(store, JobState.FAILED)

    assert [job.id for job in store.jobs(state=JobState.DONE)] == [done]
    assert [job.id for job in store.jobs(state=JobState.FAILED)] == [failed]
    assert [job.id for job in store.jobs(state=JobState.QUEUED)] == [queued]
    assert store.jobs(state=JobState.CANCELLED) == []


def test_jobs_filters_queue(store):
    """jobs returns the jobs of its queue only."""
    mail = store.put("a", queue="mail")
    store.put("b", queue="print")

    assert [job.id for job in store.jobs(queue="mail")] == [mail]


def test_jobs_search_matches_substring(store):
    """jobs with `search` returns jobs whose payload contains that text."""
    report = store.put("monthly report.csv")
    store.put("invoice.pdf")

    assert [job.id for job in store.jobs(search="report")] == [report]
    assert store.jobs(search="missing") == []


@pytest.mark.parametrize(
    ("search", "expected"),
    [("%", "100%"), ("0%", "100%"), ("_", "a_b"), ("a_b", "a_b"), ("\\", "back\\slash")],
    ids=["percent", "digit-percent", "underscore", "a-underscore-b", "backslash"],
)
def test_jobs_search_wildcards_literal(store, search, expected):
    """`%`, `_` and backslash in `search` match themselves, not any text."""
    for payload in ("100%", "100 percent", "a_b", "axb", "back\\slash", "backxslash"):
        store.put(payload)

    assert [job.payload for job in store.jobs(search=search)] == [expected]


def test_jobs_search_with_state(store):
    """`search` and `state` filters apply together."""
    done = make_state(store, JobState.DONE, "report 1")
    make_state(store, JobState.QUEUED, "report 2")
    make_state(store, JobState.DONE, "invoice")

    assert [job.id for job in store.jobs(state=JobState.DONE, search="report")] == [done]


def test_jobs_filters_creation_time(store):
    """`since` keeps jobs created at or after it, `until` those created before it."""
    first, second, third = (store.put(f"job {n}") for n in range(3))
    created = {job_id: store.get(job_id).created_at for job_id in (first, second, third)}

    since_second = store.jobs(since=created[second])
    assert {job.id for job in since_second} >= {second, third}
    assert all(job.created_at >= created[second] for job in since_second)
    before_second = store.jobs(until=created[second])
    assert all(job.created_at < created[second] for job in before_second)
    assert second not in {job.id for job in before_second}
    assert [job.id for job in store.jobs(since=created[third], until=created[third] + 1e-6)] == [third]
    assert store.jobs(since=created[third] + 3600) == []


def test_time_filters_apply_with_state_and_search(store):
    """Time, state and search filters apply together, in jobs and in dataframe."""
    done = make_state(store, JobState.DONE, "report 1")
    make_state(store, JobState.QUEUED, "report 2")
    created = store.get(done).created_at

    filters = {"state": JobState.DONE, "search": "report", "since": created - 1, "until": created + 1}
    assert [job.id for job in store.jobs(**filters)] == [done]
    assert list(store.dataframe(**filters).index) == [done]
    assert store.jobs(**{**filters, "search": "invoice"}) == []


def test_throughput_counts_done_and_failed_per_bucket(store):
    """throughput gives done and failed counts per interval of finish time, oldest first."""
    finished = [make_state(store, state) for state in (JobState.DONE, JobState.DONE, JobState.FAILED)]
    make_state(store, JobState.QUEUED)
    make_state(store, JobState.CANCELLED)
    interval = 0.001

    expected: dict[float, list[int]] = {}
    for job_id in finished:
        job = store.get(job_id)
        bucket = math.floor(job.finished_at / interval) * interval
        expected.setdefault(bucket, [0, 0])[job.state is JobState.FAILED] += 1

    rows = store.throughput(interval_s=interval)

    assert [row[0] for row in rows] == pytest.approx(sorted(expected))
    assert [[done, failed] for _, done, failed in rows] == [expected[key] for key in sorted(expected)]
    assert sum(done for _, done, _ in rows) == 2
    assert sum(failed for _, _, failed in rows) == 1


def test_throughput_time_range_and_queue(store):
    """throughput honours since, until and queue, and an empty range gives no rows."""
    job_id = make_state(store, JobState.DONE)
    finished_at = store.get(job_id).finished_at

    assert store.throughput(interval_s=3600, since=finished_at + 1) == []
    assert store.throughput(interval_s=3600, until=finished_at) == []
    assert sum(row[1] for row in store.throughput(interval_s=3600, since=finished_at)) == 1
    assert store.throughput(queue="other", interval_s=3600) == []


@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf")])
def test_throughput_rejects_bad_interval(store, interval):
    """An interval that is not a positive finite number is a ValueError naming it."""
    with pytest.raises(ValueError, match="interval_s"):
        store.throughput(interval_s=interval)


def test_dataframe_dtypes(store):
    """The DataFrame has UTC datetime times, a five-category state and int64 counters."""
    make_state(store, JobState.DONE)
    make_state(store, JobState.QUEUED)

    frame = store.dataframe()

    for column in ("created_at", "available_at", "started_at", "finished_at", "lease_expires_at"):
        dtype = frame[column].dtype
        assert isinstance(dtype, pd.DatetimeTZDtype), f"{column} is {dtype}"
        assert str(dtype.tz) == "UTC", f"{column} is {dtype}"
    assert isinstance(frame["state"].dtype, pd.CategoricalDtype)
    assert list(frame["state"].cat.categories) == [state.value for state in JobState]
    assert frame["attempts"].dtype == "int64"
    assert frame["priority"].dtype == "int64"


def test_dataframe_times_match_jobs(store):
    """The DataFrame's times are the jobs' epoch seconds as UTC datetimes."""
    job_id = make_state(store, JobState.DONE)
    job = store.get(job_id)

    row = store.dataframe().loc[job_id]

    assert row["created_at"].timestamp() == pytest.approx(job.created_at, abs=1e-3)
    assert row["finished_at"].timestamp() == pytest.approx(job.finished_at, abs=1e-3)
    assert pd.isna(row["lease_expires_at"])
    assert row["state"] == "done"


def test_dataframe_rows_and_limit(store):
    """The DataFrame has one row per job, indexed by id, and `limit` keeps the newest."""
    ids = store.put_many([f"job {n}" for n in range(5)])

    frame = store.dataframe()
    assert len(frame) == 5
    assert sorted(frame.index) == ids

    limited = store.dataframe(limit=2)
    assert list(limited.index) == ids[::-1][:2]


def test_dataframe_empty_keeps_dtypes(store):
    """An empty queue gives an empty DataFrame with the same columns and dtypes."""
    frame = store.dataframe()

    assert len(frame) == 0
    assert isinstance(frame["created_at"].dtype, pd.DatetimeTZDtype)
    assert list(frame["state"].cat.categories) == [state.value for state in JobState]
    assert frame["attempts"].dtype == "int64"


def test_dataframe_filters_state(store):
    """dataframe with `state` has rows of that state only."""
    make_state(store, JobState.QUEUED)
    done = make_state(store, JobState.DONE)

    assert list(store.dataframe(state=JobState.DONE).index) == [done]


# failed_undiscarded and mark_discarded


def test_failed_undiscarded_lists_failed(store):
    """failed_undiscarded returns failed jobs not yet marked discarded, oldest first."""
    first = make_state(store, JobState.FAILED)
    make_state(store, JobState.DONE)
    second = make_state(store, JobState.FAILED)

    assert [job.id for job in store.failed_undiscarded()] == [first, second]
    assert [job.id for job in store.failed_undiscarded(limit=1)] == [first]

    store.mark_discarded([first])

    assert [job.id for job in store.failed_undiscarded()] == [second]
    assert store.get(first).state is JobState.FAILED


def test_failed_undiscarded_after_requeue(store):
    """A discarded job that is requeued and fails again is listed again."""
    job_id = make_state(store, JobState.FAILED)
    store.mark_discarded([job_id])
    store.requeue([job_id])
    job = claim_one(store)

    assert store.fail(job.id, job.lease_token, error="again")

    assert [job.id for job in store.failed_undiscarded()] == [job_id]


# the worker registry


def test_register_worker_listed(store):
    """A registered worker is returned by workers() as it was registered."""
    record = worker_record()

    store.register_worker(record)

    assert store.workers() == [record]


def test_register_worker_replaces(store):
    """Registering a worker id again replaces its row."""
    store.register_worker(worker_record(state="running"))
    replacement = worker_record(state="idle", pid=9)

    store.register_worker(replacement)

    assert store.workers() == [replacement]


def test_heartbeat_updates_counters_and_time(store):
    """heartbeat stores each worker's new state, counters and heartbeat time in one call."""
    first = worker_record("worker-1")
    second = worker_record("worker-2")
    store.register_worker(first)
    store.register_worker(second)
    later = first.heartbeat_at + 5
    beats = [
        dataclasses.replace(first, state="idle", heartbeat_at=later, runs=4, successes=3, errors=1),
        dataclasses.replace(second, heartbeat_at=later, runs=2, successes=2),
    ]

    store.heartbeat(beats)

    by_id = {worker.id: worker for worker in store.workers()}
    assert by_id == {"worker-1": beats[0], "worker-2": beats[1]}


def test_heartbeat_empty_is_noop(store):
    """heartbeat of no records changes nothing."""
    store.register_worker(worker_record())

    store.heartbeat([])

    assert len(store.workers()) == 1


def test_workers_newest_first(store):
    """workers() returns the most recently started worker first."""
    now = time.time()
    old = worker_record("old", started_at=now - 60)
    new = worker_record("new", started_at=now)
    store.register_worker(old)
    store.register_worker(new)

    assert [worker.id for worker in store.workers()] == ["new", "old"]


def test_forget_workers_by_age(store):
    """forget_workers deletes workers silent for longer than older_than_s and returns the count."""
    now = time.time()
    store.register_worker(worker_record("silent", heartbeat_at=now - 3600))
    store.register_worker(worker_record("alive", heartbeat_at=now))

    assert store.forget_workers(older_than_s=60) == 1

    assert [worker.id for worker in store.workers()] == ["alive"]
    assert store.forget_workers(older_than_s=60) == 0


def test_worker_is_lost_after_three_heartbeats():
    """A worker is lost once more than three heartbeat intervals pass without a heartbeat."""
    record = worker_record(heartbeat_at=1000.0)

    assert not record.is_lost(now=1002.9, heartbeat_s=1.0)
    assert not record.is_lost(now=1003.0, heartbeat_s=1.0)
    assert record.is_lost(now=1003.1, heartbeat_s=1.0)


def test_worker_is_lost_never_when_stopped():
    """A stopped worker is never shown as lost."""
    record = worker_record(heartbeat_at=1000.0, state="stopped")

    assert not record.is_lost(now=1_000_000.0, heartbeat_s=1.0)


# put listeners


def test_put_listener_called_after_put(store):
    """A put listener gets the queue after put, put_many and requeue, once each."""
    calls = []
    store.add_put_listener(calls.append)

    store.put("a", queue="mail")
    store.put_many(["b", "c"], queue="print")
    failed = make_state(store, JobState.FAILED)
    calls.clear()
    store.requeue([failed])

    assert calls == ["default"]


def test_put_listener_skips_unique_duplicate(store):
    """A put whose unique key matched an active job adds nothing and calls no listener."""
    store.put("a", unique_key="k")
    calls = []
    store.add_put_listener(calls.append)
    store.put("b", unique_key="k")

    assert calls == []


def test_put_listener_sees_committed_job(store):
    """A put listener runs after the commit, so the new job is visible to it."""
    seen = []
    store.add_put_listener(lambda queue: seen.append(store.counts(queue=queue)[JobState.QUEUED]))

    store.put("a", queue="mail")
    store.put_many(["b", "c"], queue="mail")

    assert seen == [1, 3]


def test_put_listener_queues(store):
    """A put listener receives the queue of each put and put_many."""
    calls = []
    store.add_put_listener(calls.append)

    store.put("a", queue="mail")
    store.put_many(["b", "c"], queue="print")

    assert calls == ["mail", "print"]


def test_remove_put_listener_stops_calls(store):
    """A removed put listener is not called again; others still are."""
    removed_calls, remaining_calls = [], []
    store.add_put_listener(removed_calls.append)
    store.add_put_listener(remaining_calls.append)
    store.put("a")

    store.remove_put_listener(removed_calls.append)
    store.put("b")

    assert removed_calls == ["default"]
    assert remaining_calls == ["default", "default"]


def test_mark_discarded_returns_marked_only(store):
    """mark_discarded marks failed, unmarked jobs and returns just those ids."""
    failed = make_state(store, JobState.FAILED)
    done = make_state(store, JobState.DONE)

    assert store.mark_discarded([failed, done]) == [failed]
    assert store.mark_discarded([failed]) == []


def test_mark_discarded_skips_requeued_job(store):
    """A failed job requeued before the cleaner marks it is not marked, so its leftovers stay."""
    failed = make_state(store, JobState.FAILED)
    candidates = [job.id for job in store.failed_undiscarded()]
    store.requeue([failed])

    assert store.mark_discarded(candidates) == []
    assert store.get(failed).state is JobState.QUEUED


def test_requeue_require_leftovers_rejects_discarded(store):
    """With require_leftovers, a failed job already marked discarded is not requeued."""
    failed = make_state(store, JobState.FAILED)
    store.mark_discarded([failed])

    with pytest.raises(InvalidStateError, match="already removed"):
        store.requeue([failed], require_leftovers=True)
    assert store.get(failed).state is JobState.FAILED
    assert store.requeue([failed]) == 1


def test_requeue_rejects_unique_key_clash(store):
    """A requeue that would make two queued jobs share a unique key is rejected."""
    first = store.put("a", unique_key="k")
    store.cancel([first])
    second = store.put("b", unique_key="k")

    with pytest.raises(InvalidStateError, match=f"job {second} with the same unique key"):
        store.requeue([first])
    assert store.get(first).state is JobState.CANCELLED


def test_recover_uses_claimers_max_attempts(store):
    """An expired job is failed or requeued by the max_attempts of its claim, not of the recoverer."""
    job_id = store.put("x")
    store.claim(lease_s=0.05, worker_id="patient", max_attempts=5)
    wait_until_past(time.time() + 0.1)

    recovered = store.recover_expired(max_attempts=1)

    assert recovered.requeued == 1
    assert recovered.failed == 0
    assert store.get(job_id).state is JobState.QUEUED
