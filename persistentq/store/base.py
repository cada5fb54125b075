"""The store contract that every queue backend implements.

The words below mean one thing each, everywhere in persistentq:

- put: add a job in state ``queued`` (``put_many`` adds several in one commit).
- claim: in one statement, move queued jobs to ``running``, count the attempt,
  stamp a fresh random lease token and a lease expiry on each.
- lease: the time until which a claim holds a job; ``renew`` pushes it forward.
- ack: record success (``running`` to ``done``).
- retry: record a failed attempt; the job is queued again after a delay.
- fail: record the final failure (``running`` to ``failed``).
- release: hand a running job back to the queue without using up its attempt.
- recover: requeue, or fail on its last attempt, every job whose lease expired.
- cancel: ``queued`` to ``cancelled``.
- requeue: ``failed`` or ``cancelled`` back to ``queued``, attempts from 0.
- purge: delete finished rows.

Ack, retry, fail, release and renew name the job and its lease token. A call
whose token is no longer the job's is rejected (it returns False and changes
nothing), so a slow worker cannot overwrite the outcome of the one that took
over. Every method is synchronous and safe to call from several threads.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_QUEUE = "default"
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_RESULT_CHARS = 4096
MAX_ERROR_CHARS = 8192


class JobState(str, enum.Enum):
    """The states of a job; the value is what the database stores."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


FINISHED_STATES = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class OutcomeKind(str, enum.Enum):
    """The end of an attempt."""

    ACK = "ack"
    RETRY = "retry"
    FAIL = "fail"
    RELEASE = "release"


@dataclass(frozen=True)
class Job:
    """One row of the queue, as read; times are seconds since the epoch."""

    id: int
    queue: str
    payload: str
    state: JobState
    priority: int
    attempts: int
    created_at: float
    available_at: float
    started_at: float | None
    finished_at: float | None
    lease_expires_at: float | None
    worker_id: str | None
    last_error: str | None
    result: str | None
    unique_key: str | None


@dataclass(frozen=True)
class ClaimedJob:
    """A job handed to a consumer by a claim, with the lease token its outcome must quote."""

    id: int
    queue: str
    payload: str
    priority: int
    attempts: int
    lease_token: str


@dataclass(frozen=True)
class Outcome:
    """The end of one attempt, to be written by `PersistentQStore.settle`."""

    kind: OutcomeKind
    job_id: int
    lease_token: str
    worker_id: str | None = None
    result: str | None = None
    error: str | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class Recovered:
    """Counts of jobs whose lease expired, by what recovery did with them."""

    requeued: int
    failed: int


@dataclass(frozen=True)
class WorkerRecord:
    """A worker as the registry stores it; `heartbeat_at` is seconds since the epoch."""

    id: str
    kind: str
    host: str
    pid: int
    state: str
    started_at: float
    heartbeat_at: float
    runs: int = 0
    successes: int = 0
    errors: int = 0

    def is_lost(self, now: float, heartbeat_s: float) -> bool:
        """Tell whether the worker missed three heartbeats in a row."""
        return self.state != "stopped" and now - self.heartbeat_at > 3 * heartbeat_s


class PersistentQStore(ABC):
    """The queue: one contract, one shared test suite, several databases."""

    @abstractmethod
    def put(
        self,
        payload: str,
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        delay_s: float = 0.0,
        unique_key: str | None = None,
    ) -> int:
        """Add one job and return its id, in its own commit.

        With `unique_key`, while a job of that queue with that key is queued or
        running, the existing job's id is returned and nothing is added.
        Raises PayloadTooLargeError above MAX_PAYLOAD_BYTES (UTF-8) and
        TypeError for a payload that is not a str.
        """

    @abstractmethod
    def put_many(
        self,
        payloads: Iterable[str],
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        delay_s: float = 0.0,
    ) -> list[int]:
        """Add several jobs in one commit and return their ids in order; all or none."""

    @abstractmethod
    def claim(
        self,
        *,
        queue: str = DEFAULT_QUEUE,
        limit: int = 1,
        lease_s: float,
        worker_id: str,
        max_attempts: int,
    ) -> list[ClaimedJob]:
        """Claim up to `limit` available jobs in one atomic statement.

        Highest priority first, then the earliest available, then the oldest.
        Jobs whose lease expired are recovered first (see `recover_expired`).
        Returns an empty list when nothing is available.
        """

    @abstractmethod
    def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Write several outcomes in one commit; True where the lease token still matched."""

    @abstractmethod
    def renew(self, leases: Sequence[tuple[int, str]], *, lease_s: float) -> list[bool]:
        """Extend the leases of running jobs by `lease_s` from now, in one commit.

        Returns False for a (job id, token) pair whose token is no longer the job's.
        """

    @abstractmethod
    def recover_expired(self, *, queue: str = DEFAULT_QUEUE, max_attempts: int) -> Recovered:
        """Requeue running jobs whose lease expired, or fail those on their last attempt.

        A job's last attempt is judged by the `max_attempts` of the claim that
        started it, so processes with different n_tries agree. The
        `max_attempts` given here only serves jobs claimed without one.
        """

    @abstractmethod
    def cancel(self, job_ids: Iterable[int]) -> int:
        """Cancel the given queued jobs and return how many were cancelled.

        Jobs in any other state are left as they are. Raises JobNotFoundError
        when an id does not exist.
        """

    @abstractmethod
    def requeue(self, job_ids: Iterable[int], *, require_leftovers: bool = False) -> int:
        """Queue the given failed or cancelled jobs again with attempts at 0.

        Returns how many were requeued. Raises JobNotFoundError for an unknown
        id, and InvalidStateError for a job that is queued, running or done,
        whose unique key another queued or running job has, or (with
        `require_leftovers`) a failed job already marked discarded. Then
        nothing is changed.
        """

    @abstractmethod
    def purge(
        self,
        *,
        queue: str = DEFAULT_QUEUE,
        states: Iterable[JobState] = FINISHED_STATES,
        older_than_s: float = 0.0,
    ) -> int:
        """Delete finished jobs in `states` that finished more than `older_than_s` ago.

        Failed jobs are kept until `mark_discarded` recorded that their
        leftovers are gone, so no leftover file outlives its row. Raises
        InvalidStateError when asked to purge queued or running jobs.
        """

    @abstractmethod
    def get(self, job_id: int) -> Job:
        """Return one job; raises JobNotFoundError when there is none."""

    @abstractmethod
    def counts(self, *, queue: str = DEFAULT_QUEUE) -> dict[JobState, int]:
        """Return the number of jobs in each state, every state present."""

    def jobs(
        self,
        *,
        queue: str = DEFAULT_QUEUE,
        state: JobState | None = None,
        limit: int = 50,
        offset: int = 0,
        search: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Job]:
        """Return a page of jobs, newest first.

        Every filter is optional and they apply together: one `state`, a
        payload containing `search` as plain text, and a creation time (epoch
        seconds) at or after `since` and before `until`.
        """
        rows = self._page_rows(
            queue=queue, state=state, limit=limit, offset=offset, search=search, since=since, until=until
        )
        return [job_from_row(row) for row in rows]

    def dataframe(
        self,
        *,
        queue: str = DEFAULT_QUEUE,
        state: JobState | None = None,
        limit: int = 10_000,
        search: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> pd.DataFrame:
        """Return the newest `limit` jobs as a DataFrame, one row per job, filtered as `jobs` is."""
        from .frames import rows_frame

        # Rows go straight into the frame, without a Job object each.
        rows = self._page_rows(
            queue=queue, state=state, limit=limit, offset=0, search=search, since=since, until=until
        )
        return rows_frame(rows)

    @abstractmethod
    def _page_rows(
        self,
        *,
        queue: str,
        state: JobState | None,
        limit: int,
        offset: int,
        search: str | None,
        since: float | None,
        until: float | None,
    ) -> list[tuple]:
        """Return the rows of one page of `jobs`, each with the fields of Job in order."""

    def throughput(
        self,
        *,
        queue: str = DEFAULT_QUEUE,
        interval_s: float = 60.0,
        since: float | None = None,
        until: float | None = None,
    ) -> list[tuple[float, int, int]]:
        """Return (bucket start, done, failed) per interval of finish time, oldest first.

        Buckets start at multiples of `interval_s` since the epoch. A bucket
        in which no job finished is left out.
        """
        from .checks import check_interval

        interval = check_interval(interval_s)
        low = float("-inf") if since is None else float(since)
        high = float("inf") if until is None else float(until)
        rows = self._throughput_rows(queue=queue, interval_s=interval, since=low, until=high)
        return [(bucket * interval, done, failed) for bucket, done, failed in rows]

    @abstractmethod
    def _throughput_rows(
        self, *, queue: str, interval_s: float, since: float, until: float
    ) -> list[tuple[int, int, int]]:
        """Return (bucket number, done, failed) of jobs that finished in [since, until), by bucket."""

    @abstractmethod
    def failed_undiscarded(self, *, queue: str = DEFAULT_QUEUE, limit: int = 100) -> list[Job]:
        """Return failed jobs whose leftovers the cleaner has not discarded yet."""

    @abstractmethod
    def mark_discarded(self, job_ids: Iterable[int]) -> list[int]:
        """Mark failed jobs as discarded, before their leftovers are removed, in one commit.

        Returns the ids it marked: those still failed and not marked before.
        Only their leftovers may be removed, because a requeue that came
        first has taken the others back.
        """

    @abstractmethod
    def register_worker(self, record: WorkerRecord) -> None:
        """Insert or replace a worker in the registry."""

    @abstractmethod
    def heartbeat(self, records: Sequence[WorkerRecord]) -> None:
        """Update state, counters and heartbeat time of several workers in one commit."""

    @abstractmethod
    def workers(self) -> list[WorkerRecord]:
        """Return every registered worker, newest first."""

    @abstractmethod
    def forget_workers(self, *, older_than_s: float) -> int:
        """Delete registry rows whose last heartbeat is older than `older_than_s`."""

    @abstractmethod
    def add_put_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(queue)` after every committed put or requeue made through this object.

        The listener runs in the thread that made the put, so it must be quick
        and thread-safe. A store shared by several machines may also call it,
        from a thread of its own, for puts that other processes made.
        """

    @abstractmethod
    def remove_put_listener(self, listener: Callable[[str], None]) -> None:
        """Stop calling a listener added with `add_put_listener`."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection this store opened; the store is unusable after."""

    def check_health(self) -> None:
        """Raise StoreError when the store can no longer be used as it was opened; the cleaner calls it."""

    # Single-outcome shortcuts over `settle`.

    def ack(self, job_id: int, lease_token: str, *, result: str | None = None) -> bool:
        """Mark a running job done; False when the lease token is stale."""
        return self.settle([Outcome(OutcomeKind.ACK, job_id, lease_token, result=result)])[0]

    def retry(self, job_id: int, lease_token: str, *, error: str, delay_s: float = 0.0) -> bool:
        """Queue a running job again after `delay_s`; False when the lease token is stale."""
        outcome = Outcome(OutcomeKind.RETRY, job_id, lease_token, error=error, delay_s=delay_s)
        return self.settle([outcome])[0]

    def fail(self, job_id: int, lease_token: str, *, error: str) -> bool:
        """Mark a running job failed; False when the lease token is stale."""
        return self.settle([Outcome(OutcomeKind.FAIL, job_id, lease_token, error=error)])[0]

    def release(self, job_id: int, lease_token: str) -> bool:
        """Hand a running job back without using up its attempt; False when the token is stale."""
        return self.settle([Outcome(OutcomeKind.RELEASE, job_id, lease_token)])[0]

    def requeue_failed(self, *, queue: str = DEFAULT_QUEUE) -> int:
        """Requeue every failed job of `queue` and return how many."""
        ids = [job.id for job in self.jobs(queue=queue, state=JobState.FAILED, limit=1_000_000)]
        return self.requeue(ids) if ids else 0

    def __enter__(self) -> PersistentQStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def job_from_row(row: Sequence[object]) -> Job:
    """Build a Job from a database row with the fields of Job in order."""
    values = list(row)
    values[3] = JobState(values[3])
    return Job(*values)
