"""Copying a SQLite queue into PostgreSQL, for a user who moves to several machines.

    target = PersistentQPostgres("postgresql://app@db.example.com/jobs")
    report = migrate_sqlite(Path("queue.sqlite3"), target, queues=["default"])

Queued and failed jobs are copied with their payload, state, attempts,
priority, last error and times; they get new ids in the same order. Done and
cancelled jobs stay behind, and the SQLite file is left as it was.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, InvalidStateError, StoreError
from .store.base import Job, JobState
from .store.postgres import PersistentQPostgres
from .store.sqlite import PersistentQSQLite

MIGRATED_STATES = (JobState.QUEUED, JobState.FAILED)
PAGE_SIZE = 10_000
URL_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class MigrationReport:
    """Counts of the jobs a migration copied, per queue and state."""

    copied: dict[str, dict[JobState, int]]

    @property
    def total(self) -> int:
        return sum(sum(states.values()) for states in self.copied.values())


def check_target_url(url: str) -> str:
    """Return `url`, or raise ConfigError unless it is a postgresql:// URL."""
    if not url.lower().startswith(URL_SCHEMES):
        raise ConfigError(
            f"the migration target must be a postgresql:// URL, got {url!r}; "
            "pass --to postgresql://user@host/database"
        )
    return url


def migrate_sqlite(
    source_path: Path,
    target: PersistentQPostgres,
    *,
    queues: list[str],
    allow_nonempty: bool = False,
) -> MigrationReport:
    """Copy the queued and failed jobs of `queues` from a SQLite file into `target`, in one commit.

    Raises StoreError when `source_path` is no queue file or one of
    `queues` has no jobs in it while other queues do (a misspelt name), and
    InvalidStateError, before copying anything, when a source queue has
    running jobs or (without `allow_nonempty`) a target queue has jobs.
    """
    names = _queue_names(source_path)
    unknown = [queue for queue in queues if queue not in names]
    if unknown and names:
        listed = ", ".join(repr(name) for name in sorted(names))
        raise StoreError(
            f"queue {unknown[0]!r} has no jobs in {source_path}, whose queues are {listed}; "
            "pass --queue with one of them; nothing was copied"
        )
    with PersistentQSQLite(source_path) as source:
        for queue in queues:
            _check_queues(source, target, queue, allow_nonempty=allow_nonempty)
        jobs: list[Job] = []
        discarded: set[int] = set()
        for queue in queues:
            queue_jobs, queue_discarded = _read_queue(source, queue)
            jobs += queue_jobs
            discarded |= queue_discarded
    target.import_jobs(jobs, discarded_ids=discarded)

    copied = {queue: dict.fromkeys(MIGRATED_STATES, 0) for queue in queues}
    for job in jobs:
        copied[job.queue][job.state] += 1
    return MigrationReport(copied)


def _queue_names(path: Path) -> set[str]:
    """Return the names of the queues that have jobs in the SQLite file at `path`.

    Raises StoreError unless `path` is a SQLite file with a persistentq
    queue in it. The file is opened read-only, because opening a store would
    add the queue's tables to any other SQLite database.
    """
    fix = "pass --from the queue.sqlite3 file to copy"
    if not path.is_file():
        raise StoreError(f"no SQLite queue file at {path}; {fix}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                raise StoreError(f"{path} is a SQLite database without a persistentq queue; {fix}")
            return {name for (name,) in conn.execute("SELECT DISTINCT queue FROM jobs")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a SQLite database ({exc}); {fix}") from exc


def _check_queues(
    source: PersistentQSQLite, target: PersistentQPostgres, queue: str, *, allow_nonempty: bool
) -> None:
    running = source.counts(queue=queue)[JobState.RUNNING]
    if running:
        raise InvalidStateError(
            f"queue {queue!r} in {source.path} has {running} running jobs; stop every worker "
            "of that queue and migrate again (jobs of a killed worker are requeued by the "
            "cleaner of `basic run` once their lease expires); nothing was copied"
        )
    existing = sum(target.counts(queue=queue).values())
    if existing and not allow_nonempty:
        raise InvalidStateError(
            f"queue {queue!r} in {target.display_url} already has {existing} jobs, from workers or "
            "an earlier migration, and migrating the same file twice would copy its jobs twice; "
            "pass --allow-nonempty to copy into it anyway; nothing was copied"
        )


def _read_queue(source: PersistentQSQLite, queue: str) -> tuple[list[Job], set[int]]:
    """Return the queue's queued and failed jobs oldest first, and the ids of failed ones already discarded."""
    # Pages come newest first, so each job put while they are read would push the
    # rest one place down, onto the next page a second time, and a producer that
    # keeps putting would keep the loop going. Jobs created from now on stay behind.
    until = time.time()
    by_id: dict[int, Job] = {}
    for state in MIGRATED_STATES:
        offset = 0
        while page := source.jobs(queue=queue, state=state, limit=PAGE_SIZE, offset=offset, until=until):
            by_id.update((job.id, job) for job in page)
            offset += len(page)
    jobs = sorted(by_id.values(), key=lambda job: job.id)

    failed_ids = {job.id for job in jobs if job.state is JobState.FAILED}
    undiscarded = {job.id for job in source.failed_undiscarded(queue=queue, limit=len(failed_ids) + 1)}
    return jobs, failed_ids - undiscarded
