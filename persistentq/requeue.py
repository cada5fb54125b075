"""Requeueing failed jobs, with the file pipeline's input files renamed back first."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import Config
from .errors import InvalidStateError
from .files import FilePipeline
from .hooks import JobHooks, NoHooks
from .store.base import JobState, PersistentQStore


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
