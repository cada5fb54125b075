"""The queue stores: one contract (PersistentQStore), implemented on SQLite and on PostgreSQL."""

from .base import (
    DEFAULT_QUEUE,
    FINISHED_STATES,
    MAX_PAYLOAD_BYTES,
    ClaimedJob,
    Job,
    JobState,
    Outcome,
    OutcomeKind,
    PersistentQStore,
    Recovered,
    WorkerRecord,
)
from .postgres import PersistentQPostgres
from .sqlite import PersistentQSQLite

__all__ = [
    "DEFAULT_QUEUE",
    "FINISHED_STATES",
    "MAX_PAYLOAD_BYTES",
    "ClaimedJob",
    "Job",
    "JobState",
    "Outcome",
    "OutcomeKind",
    "PersistentQPostgres",
    "PersistentQSQLite",
    "PersistentQStore",
    "Recovered",
    "WorkerRecord",
]
