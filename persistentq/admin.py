"""Management operations that touch both the queue and the files of its jobs: requeue and purge."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from .config import Config
from .errors import InvalidStateError
from .files import FilePipeline
from .hooks import JobHooks, NoHooks
from .store.base import FINISHED_STATES, JobState, PersistentQStore

log = logging.getLogger(__name__)


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


def requeue_jobs(
    store: PersistentQStore, config: Config, job_ids: Iterable[int], *, hooks: JobHooks | None = None
) -> RequeueResult:
    """Queue failed or cancelled jobs again; each job is requeued or rejected with a reason.

    For file jobs, `<name>.failed` is renamed back first. The requeue then
    succeeds only if the cleaner has not marked the job discarded meanwhile,
    in which case the cleaner removes the file again. Raises JobNotFoundError
    for an unknown id before anything changes.
    `hooks` are those of the consumer that ran the jobs, when its function
    came from Python instead of the config.
    """
    if hooks is None:
        hooks = hooks_for(config)
    file_jobs = isinstance(hooks, FilePipeline)
    result = RequeueResult()
    for job in [store.get(job_id) for job_id in job_ids]:
        try:
            if job.state == JobState.FAILED:
                hooks.before_requeue(job.payload)
            store.requeue([job.id], require_leftovers=file_jobs)
        except (InvalidStateError, OSError) as exc:
            result.rejected[job.id] = str(exc)
        else:
            result.requeued.append(job.id)
    return result


def purge_jobs(
    store: PersistentQStore, config: Config, *, states: list[JobState], older_than_s: float
) -> int:
    """Delete finished jobs; the leftovers of failed ones are discarded first, as the cleaner does.

    A leftover that cannot be removed (an OSError) is logged with its job id
    and left on disk, and the job's row is purged all the same.
    """
    queue = config.general.queue
    if JobState.FAILED in states:
        hooks = hooks_for(config)
        while failed := store.failed_undiscarded(queue=queue, limit=500):
            marked = set(store.mark_discarded([job.id for job in failed]))
            for job in failed:
                if job.id not in marked:
                    continue
                try:
                    hooks.discard(job.payload)
                except OSError as exc:
                    log.warning("could not remove what failed job %d left behind: %s", job.id, exc)
    return store.purge(queue=queue, states=states or list(FINISHED_STATES), older_than_s=older_than_s)
