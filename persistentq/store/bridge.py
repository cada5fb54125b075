"""AsyncStore: the one way the asyncio workers reach a store.

    bridge = AsyncStore(PersistentQSQLite("queue.sqlite3"))
    job = await bridge.claim(lease_s=30, max_attempts=3)
    bridge.settle(Outcome(OutcomeKind.ACK, job.id, job.lease_token))
    await bridge.aclose()

Every call made through it runs on one dedicated thread, so a worker's event
loop does not wait on a database lock held by another process. Calls made while that thread is
busy are gathered and run together on its next turn: the outcomes of all
consumers go into one commit, and the claims of all idle consumers into one
claim statement. One thread hop then carries many jobs, which matters because
a hop costs more than the SQLite work of one job.

A put made in this process wakes idle consumers at once through the store's
put listener. A put made by another process is noticed by a watcher thread
that polls the store's `data_version` every WATCH_INTERVAL_S, because SQLite
offers no notification across processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .base import DEFAULT_QUEUE, ClaimedJob, JobState, Outcome, OutcomeKind, PersistentQStore

log = logging.getLogger(__name__)

# How often the watcher looks for commits by other processes. A put from
# another process starts an idle consumer within about this time plus one claim.
WATCH_INTERVAL_S = 0.005


@runtime_checkable
class CommitCounter(Protocol):
    """A store whose `data_version` changes whenever another connection commits (SQLite)."""

    def data_version(self) -> int: ...


@dataclass(frozen=True)
class _ClaimKey:
    queue: str
    lease_s: float
    max_attempts: int


@dataclass(frozen=True)
class _HeldLease:
    job_id: int
    token: str
    lease_s: float
    on_lost: Callable[[], None]


@dataclass
class _Batch:
    """Work gathered while the store thread was busy."""

    outcomes: list[tuple[Outcome, asyncio.Future]] = field(default_factory=list)
    claims: dict[_ClaimKey, list[asyncio.Future]] = field(default_factory=dict)
    calls: list[tuple[Callable[[], Any], asyncio.Future]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.claims or self.calls)


class AsyncStore:
    """Runs a store's calls on one thread, batching claims and outcomes."""

    def __init__(self, store: PersistentQStore, *, claimer_id: str | None = None) -> None:
        self.store = store
        # Jobs claimed in one batch are stamped with this id until their
        # consumer records its own id with the outcome.
        self.claimer_id = claimer_id or f"{socket.gethostname()}:{os.getpid()}"
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="persistentq-store")
        self._pending = _Batch()
        self._flushing: asyncio.Task | None = None
        self._put_signals: dict[str, asyncio.Future] = {}
        self._leases: dict[int, _HeldLease] = {}
        self._renewing: asyncio.Task | None = None
        self._watcher: threading.Thread | None = None
        self._idle_waiters = 0
        self._closed = False
        store.add_put_listener(self._on_put)

    def __repr__(self) -> str:
        busy = "busy" if self._flushing else "idle"
        return f"<AsyncStore {self.store!r} {busy}, {len(self._pending.outcomes)} outcomes pending>"

    # Calls.

    async def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `function(*args, **kwargs)` on the store thread and return its result."""
        future = self._new_future()
        self._pending.calls.append((lambda: function(*args, **kwargs), future))
        self._schedule()
        return await future

    async def claim(
        self, *, queue: str = DEFAULT_QUEUE, lease_s: float, max_attempts: int
    ) -> ClaimedJob | None:
        """Claim one job for the caller, or return None when none is available.

        Claims waiting at the same time share one claim statement.
        """
        future = self._new_future()
        key = _ClaimKey(queue, lease_s, max_attempts)
        self._pending.claims.setdefault(key, []).append(future)
        self._schedule()
        try:
            return await future
        except asyncio.CancelledError:
            # The job may have arrived just before the cancellation: hand it back.
            if future.done() and not future.cancelled() and future.exception() is None:
                job = future.result()
                if job is not None:
                    self.release(job)
            raise

    def settle(self, outcome: Outcome) -> asyncio.Future:
        """Queue an outcome for the next grouped commit.

        The returned future resolves to False when the lease token was stale.
        Awaiting it is optional: an outcome not committed before a crash only
        means the job runs again.
        """
        future = self._new_future()
        self._pending.outcomes.append((outcome, future))
        self._schedule()
        return future

    def hold_lease(self, job: ClaimedJob, *, lease_s: float, on_lost: Callable[[], None]) -> None:
        """Renew the lease of a running job every third of `lease_s` until `drop_lease`.

        One task renews every held lease of the process in one call per round.
        `on_lost` runs when a renewal finds the lease taken over.
        """
        self._leases[job.id] = _HeldLease(job.id, job.lease_token, lease_s, on_lost)
        if self._renewing is None or self._renewing.done():
            self._renewing = self._loop.create_task(self._renew_leases(), name="persistentq-lease-renewal")

    def drop_lease(self, job_id: int) -> None:
        """Stop renewing a job's lease; call it before writing the job's outcome."""
        self._leases.pop(job_id, None)

    async def _renew_leases(self) -> None:
        while self._leases and not self._closed:
            await asyncio.sleep(min(lease.lease_s for lease in self._leases.values()) / 3)
            by_length: dict[float, list[_HeldLease]] = {}
            for lease in self._leases.values():
                by_length.setdefault(lease.lease_s, []).append(lease)
            for lease_s, leases in by_length.items():
                pairs = [(lease.job_id, lease.token) for lease in leases]
                try:
                    renewed = await self.call(self.store.renew, pairs, lease_s=lease_s)
                except Exception:
                    log.exception("renewing %d leases failed; the next round retries", len(pairs))
                    continue
                for lease, still_leased in zip(leases, renewed):
                    # A lease dropped while the renewal ran belongs to a finished attempt.
                    if not still_leased and self._leases.pop(lease.job_id, None) is not None:
                        lease.on_lost()

    def put_signal(self, queue: str = DEFAULT_QUEUE) -> asyncio.Future:
        """Return a future that resolves at the next put to `queue` in this process.

        Take it before a claim: a put that lands during the claim then still wakes the caller.
        """
        signal = self._put_signals.get(queue)
        if signal is None or signal.done():
            signal = self._put_signals[queue] = self._loop.create_future()
        return signal

    @contextmanager
    def waiting_for_put(self) -> Iterator[None]:
        """Mark the caller as idle until a put; puts by other processes are watched for only meanwhile.

        Busy consumers then cost the watcher nothing: the polls stop while
        no consumer waits.
        """
        if self._watcher is None and isinstance(self.store, CommitCounter):
            self._watcher = threading.Thread(
                target=self._watch_other_commits, name="persistentq-commit-watcher", daemon=True
            )
            self._watcher.start()
        self._idle_waiters += 1
        try:
            yield
        finally:
            self._idle_waiters -= 1

    def _watch_other_commits(self) -> None:
        """Wake the queues that wait for a put once another connection committed and a job is queued.

        Runs in its own thread with its own connection, so the polls do not
        queue behind the store thread's work and never run on the event loop.
        """
        last_version = None
        while not self._closed:
            time.sleep(WATCH_INTERVAL_S)
            if not self._idle_waiters:
                continue
            waiting = [queue for queue, signal in list(self._put_signals.items()) if not signal.done()]
            if not waiting:
                continue
            try:
                version = self.store.data_version()
                if version == last_version:
                    continue
                last_version = version
                ready = [queue for queue in waiting if self.store.jobs(queue=queue, state=JobState.QUEUED, limit=1)]
            except Exception:
                if self._closed:
                    return
                log.exception("looking for puts by other processes failed; the poll interval still applies")
                time.sleep(1.0)
                continue
            for queue in ready:
                self._on_put(queue)

    async def aclose(self) -> None:
        """Write everything pending, then stop the store thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._renewing is not None:
            self._renewing.cancel()
        while self._flushing is not None:
            await asyncio.shield(self._flushing)
        self.store.remove_put_listener(self._on_put)
        self._executor.shutdown(wait=False)

    # The store thread.

    def _new_future(self) -> asyncio.Future:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return self._loop.create_future()

    def _schedule(self) -> None:
        if self._flushing is None:
            self._flushing = self._loop.create_task(self._flush(), name="persistentq-store-flush")

    async def _flush(self) -> None:
        try:
            # Let the caller that scheduled this flush go on for one turn of the
            # loop first: a consumer that has just queued its ack claims its next
            # job in that turn, and the claim then shares the ack's hop.
            await asyncio.sleep(0)
            while self._pending:
                batch, self._pending = self._pending, _Batch()
                # Shielded, so that a cancelled caller cannot drop other callers' outcomes.
                run = self._loop.run_in_executor(self._executor, _run, self.store, batch, self.claimer_id)
                self._resolve(await asyncio.shield(run))
        finally:
            self._flushing = None

    def _resolve(self, results: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
        for future, result, exc in results:
            if not future.done():
                if exc is None:
                    future.set_result(result)
                else:
                    future.set_exception(exc)
            elif isinstance(result, ClaimedJob):
                # The claimer was cancelled while its claim ran: hand the job back.
                self.release(result)

    def release(self, job: ClaimedJob) -> None:
        """Hand back a job that no consumer will run, logging a failure because no caller awaits it."""
        if self._closed and self._flushing is None:
            log.warning("job %d claimed as the store closed; it runs again once its lease expires", job.id)
            return
        future = self._loop.create_future()
        future.add_done_callback(lambda done: _log_release_failure(job, done))
        self._pending.outcomes.append((Outcome(OutcomeKind.RELEASE, job.id, job.lease_token), future))
        self._schedule()

    def _on_put(self, queue: str) -> None:
        try:
            self._loop.call_soon_threadsafe(self._wake, queue)
        except RuntimeError:
            pass  # The loop is closed, so no waiter is left to wake.

    def _wake(self, queue: str) -> None:
        signal = self._put_signals.pop(queue, None)
        if signal is not None and not signal.done():
            signal.set_result(None)


def _log_release_failure(job: ClaimedJob, done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("could not hand job %d back (%s); it runs again once its lease expires",
                    job.id, done.exception())


Resolution = tuple[asyncio.Future, Any, "BaseException | None"]


def _run(store: PersistentQStore, batch: _Batch, claimer_id: str) -> list[Resolution]:
    """Run one batch on the store thread and return each caller's result or exception."""
    results: list[Resolution] = []
    if batch.outcomes:
        outcomes = [outcome for outcome, _ in batch.outcomes]
        futures = [future for _, future in batch.outcomes]
        results += _results_of(futures, lambda: store.settle(outcomes))

    for function, future in batch.calls:
        if future.cancelled():
            # No caller waits for it any more, such as the heartbeat of a stopped worker.
            # Read from this thread, the flag can only miss a cancel that came late.
            continue
        results += _results_of([future], lambda function=function: [function()])

    for key, futures in batch.claims.items():
        def claim(key: _ClaimKey = key, count: int = len(futures)) -> list[ClaimedJob | None]:
            jobs: list[ClaimedJob | None] = list(store.claim(
                queue=key.queue, limit=count, lease_s=key.lease_s,
                worker_id=claimer_id, max_attempts=key.max_attempts,
            ))
            return jobs + [None] * (count - len(jobs))

        results += _results_of(futures, claim)
    return results


def _results_of(futures: list[asyncio.Future], work: Callable[[], list]) -> list[Resolution]:
    try:
        values = work()
    except Exception as exc:  # noqa: BLE001 - handed to every caller, who re-raises it
        return [(future, None, exc) for future in futures]
    return [(future, value, None) for future, value in zip(futures, values)]
