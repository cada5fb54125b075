"""Management operations that touch both the queue and the files of its jobs: requeue and purge."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import Config
from .errors import InvalidStateError
from .files import FilePipeline
from .hooks import JobHooks, NoHooks
from .store.base import FINISHED_STATES, JobState, PersistentQStore


@dataclass
class RequeueResult:
    """The jobs a requeue queued again, and the reason for each one it rejected."""

    requeued: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)


def hooks_for(config: Config) -> JobHooks:
    """Return the job hooks of the configured consumer: the file pipeline's by default."""
    if config.consumer.function:
        return NoHooks()
    return FilePipeline.for_config(config)


def requeue_jobs(store: PersistentQStore, config: Config, job_ids: Iterable[int]) -> RequeueResult:
    """Queue failed or cancelled jobs again; each job is requeued or rejected with a reason.

    Raises JobNotFoundError for an unknown id before anything changes.
    """
    hooks = hooks_for(config)
    result = RequeueResult()
    jobs = [store.get(job_id) for job_id in job_ids]
    for job in jobs:
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            result.rejected[job.id] = f"job {job.id} is {job.state}; only failed or cancelled jobs can be requeued"
            continue
        try:
            if job.state == JobState.FAILED:
                hooks.before_requeue(job.payload)
        except (InvalidStateError, OSError) as exc:
            result.rejected[job.id] = str(exc)
            continue
        result.requeued.append(job.id)
    if result.requeued:
        store.requeue(result.requeued)
    return result


def purge_jobs(
    store: PersistentQStore, config: Config, *, states: list[JobState], older_than_s: float
) -> int:
    """Delete finished jobs; the leftovers of failed ones are discarded first, as the cleaner does.

    A failed job whose leftovers cannot be discarded (the hook raised) is kept.
    """
    queue = config.general.queue
    if JobState.FAILED in states:
        hooks = hooks_for(config)
        while failed := store.failed_undiscarded(queue=queue, limit=500):
            discarded = []
            for job in failed:
                try:
                    hooks.discard(job.payload)
                except OSError:
                    continue
                discarded.append(job.id)
            if not discarded:
                break
            store.mark_discarded(discarded)
    return store.purge(queue=queue, states=states or list(FINISHED_STATES), older_than_s=older_than_s)
