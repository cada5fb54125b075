"""Consumer: claims jobs, runs the function on each payload within n_time, records the outcome."""

from __future__ import annotations

import asyncio
import logging
import traceback

from ..errors import PermanentJobError
from ..hooks import JobHooks, NoHooks
from ..store.base import ClaimedJob, Outcome, OutcomeKind
from ..store.bridge import AsyncStore
from ..config import Config
from .base import PersistentQInterface
from .limits import call_with_limit
from .retry import backoff_delay, is_final_attempt
from .sync_runner import RemoteError, SyncRunner

log = logging.getLogger(__name__)


class DemoFailure(Exception):
    """An attempt failed on purpose because of `consumer.failure_rate`."""


class Consumer(PersistentQInterface):
    """Runs jobs one at a time; several consumers in a process share claims and commits."""

    kind = "consumer"

    def __init__(
        self,
        bridge: AsyncStore,
        config: Config,
        *,
        runner: SyncRunner | None = None,
        hooks: JobHooks | None = None,
        **options,
    ) -> None:
        super().__init__(bridge, config, **options)
        self.runner = runner
        self.hooks = hooks or NoHooks()
        self.current_job: ClaimedJob | None = None
        self._look_again = False

    def next_wait_s(self) -> float:
        if self._look_again:
            self._look_again = False
            return 0.0
        settings = self.config.consumer
        return self.rng.uniform(settings.interval_min, settings.interval_max)

    async def run_once(self) -> None:
        settings = self.config.consumer
        queue = self.config.general.queue
        put_signal = self.bridge.put_signal(queue)
        job = await self.bridge.claim(
            queue=queue, lease_s=settings.lease, max_attempts=settings.n_tries
        )
        if job is None:
            # Nothing to do: sleep until a put, or one poll interval.
            with self.bridge.waiting_for_put():
                await self._wait_for(asyncio.shield(put_signal), timeout_s=settings.poll_interval)
            self._look_again = True
            return
        if self._stopping.is_set():
            # The stop came while the claim was in flight: a stopped consumer starts nothing.
            self.bridge.release(job)
            return
        await self.run_job(job)

    async def run_job(self, job: ClaimedJob) -> None:
        """Run one attempt of a claimed job and record its outcome."""
        self.current_job = job
        self.runs += 1
        try:
            result = await self._attempt(job)
        except asyncio.CancelledError:
            # Stopped past the grace period: hand the job back without using up
            # its attempt. `_settle` shields the write from the cancellation.
            await self._settle(Outcome(OutcomeKind.RELEASE, job.id, job.lease_token))
            log.info("%s: job %d handed back to the queue", self.id, job.id)
            raise
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            # SystemExit and KeyboardInterrupt raised by a job function end that
            # attempt, not the process that runs every other worker.
            await self._record_failure(job, exc)
        else:
            self._record_success(job, result)
        finally:
            self.current_job = None

    async def _attempt(self, job: ClaimedJob) -> str | None:
        """Run the function on the job's payload while its lease is renewed.

        Renewal goes on while a stop drains running jobs, or a job still
        running could be taken over. It ends before the outcome is written,
        so a renewal cannot race the outcome and report a lost lease.
        """
        lease_s = self.config.consumer.lease
        self.bridge.hold_lease(job, lease_s=lease_s, on_lost=lambda: self._on_lease_lost(job))
        try:
            return _result_text(await self._call(job))
        finally:
            self.bridge.drop_lease(job.id)

    async def _call(self, job: ClaimedJob) -> object:
        settings = self.config.consumer
        if settings.failure_rate and self.rng.random() < settings.failure_rate:
            raise DemoFailure(f"failed on purpose (consumer.failure_rate is {settings.failure_rate:g})")
        return await call_with_limit(
            self.function,
            job.payload,
            timeout_s=settings.n_time,
            sync_mode=settings.sync_mode,
            runner=self.runner,
        )

    def _record_success(self, job: ClaimedJob, text: str | None) -> None:
        """Queue the ack without waiting for its commit, so the next claim can share that commit.

        The ack is written even if this consumer stops first, because the
        store bridge flushes every pending outcome before it closes.
        """
        outcome = Outcome(OutcomeKind.ACK, job.id, job.lease_token, worker_id=self.id, result=text)
        self.bridge.settle(outcome).add_done_callback(
            lambda written: self._on_ack_written(job, text, written)
        )

    def _on_ack_written(self, job: ClaimedJob, text: str | None, written: asyncio.Future) -> None:
        if written.cancelled():
            return
        if written.exception() is not None:
            self.errors += 1
            log.error("%s: could not record job %d as done: %s", self.id, job.id, written.exception())
        elif written.result():
            self.successes += 1
            log.info("%s: job %d done (attempt %d)%s", self.id, job.id, job.attempts,
                     f": {text}" if text else "")
        else:
            log.warning("%s: job %d: ack rejected because the lease expired and the job was taken over",
                        self.id, job.id)

    async def _record_failure(self, job: ClaimedJob, exc: BaseException) -> None:
        self.errors += 1
        settings = self.config.consumer
        error = _error_text(exc)
        self.last_error = error.strip().splitlines()[-1]
        attempt = f"attempt {job.attempts}/{settings.n_tries}"
        permanent = isinstance(exc, PermanentJobError) or getattr(exc, "permanent", False)
        if permanent or is_final_attempt(job.attempts, settings.n_tries):
            outcome = Outcome(OutcomeKind.FAIL, job.id, job.lease_token, worker_id=self.id, error=error)
            if await self._settle(outcome):
                log.error("%s: job %d failed for good after %s: %s", self.id, job.id, attempt, self.last_error)
                await asyncio.shield(asyncio.to_thread(self._on_failed, job))
            return
        delay_s = backoff_delay(job.attempts, settings.retry_backoff, self.rng)
        outcome = Outcome(
            OutcomeKind.RETRY, job.id, job.lease_token, worker_id=self.id, error=error, delay_s=delay_s
        )
        if await self._settle(outcome):
            log.warning("%s: job %d %s failed, retry in %.1f s: %s",
                        self.id, job.id, attempt, delay_s, self.last_error)

    def _on_failed(self, job: ClaimedJob) -> None:
        try:
            self.hooks.on_failed(job.payload)
        except Exception:
            log.exception("%s: the failure hook of job %d raised", self.id, job.id)

    async def _settle(self, outcome: Outcome) -> bool:
        """Write an outcome; False, with a warning, when another worker took the job over.

        The write is shielded: cancelling the consumer while it waits does not
        take the outcome out of the next commit.
        """
        accepted = await asyncio.shield(self.bridge.settle(outcome))
        if not accepted:
            log.warning(
                "%s: job %d: %s rejected because the lease expired and the job was taken over",
                self.id, outcome.job_id, outcome.kind.value,
            )
        return accepted

    def _on_lease_lost(self, job: ClaimedJob) -> None:
        log.warning("%s: lost the lease of job %d; its outcome will be rejected", self.id, job.id)


def _result_text(result: object) -> str | None:
    """Return a function's result as the job's result text; None stays None."""
    return None if result is None else str(result)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, RemoteError):
        return exc.traceback_text or str(exc)
    if isinstance(exc, DemoFailure) or type(exc).__module__.startswith("persistentq"):
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
