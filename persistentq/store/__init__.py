"""The queue stores: one contract (PersistentQStore), one SQLite implementation."""

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
    "PersistentQSQLite",
    "PersistentQStore",
    "Recovered",
    "WorkerRecord",
]
