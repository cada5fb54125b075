"""Inspecting failed jobs and queueing them again from a notebook.

    failed_jobs(pool)[["payload", "attempts", "last_error"]]
    requeue_failed(pool)               # every failed job of the queue
    requeue_failed(pool, [12, 15])     # or these
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import pandas as pd

from ..admin import RequeueResult, requeue_jobs
from ..store.base import JobState
from .sources import QueueSource, open_queue

# Requeueing every failed job reads their ids in one query of at most this many rows.
MAX_REQUEUE = 1_000_000


def failed_jobs(source: QueueSource, *, limit: int = 1000, queue: str | None = None) -> pd.DataFrame:
    """Return the newest `limit` failed jobs with their attempts and last error, newest first."""
    from .views import jobs_view

    return jobs_view(source, state=JobState.FAILED, limit=limit, queue=queue)


def requeue_failed(
    source: QueueSource, job_ids: int | Iterable[int] | None = None, *, queue: str | None = None
) -> RequeueResult:
    """Queue failed (or cancelled) jobs again with attempts back at 0, or every failed job without `job_ids`.

    `job_ids` is one id or an iterable of ids, such as the index of `failed_jobs`.

    Each job is requeued or rejected with a reason, as `basic retry` does:
    for file jobs, a job whose `.failed` file the cleaner already removed is
    rejected. Raises JobNotFoundError for an unknown id before anything changes.
    """
    with open_queue(source, queue=queue) as ref:
        if job_ids is None:
            ids = [job.id for job in ref.store.jobs(queue=ref.queue, state=JobState.FAILED, limit=MAX_REQUEUE)]
        elif isinstance(job_ids, numbers.Integral) and not isinstance(job_ids, bool):
            ids = [int(job_ids)]
        elif isinstance(job_ids, (str, bytes)):
            # Iterating a str would requeue one job per digit.
            raise TypeError(f"job_ids must be an integer or a list of integers, got {job_ids!r:.80}")
        else:
            ids = [_job_id(value) for value in job_ids]
        return requeue_jobs(ref.store, ref.config, ids, hooks=ref.hooks)


def _job_id(value: object) -> int:
    # numbers.Integral also covers the numpy integers of a DataFrame index.
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"job ids must be integers, got {value!r}")
