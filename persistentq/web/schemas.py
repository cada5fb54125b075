"""The JSON shapes of the dashboard's API, as pydantic models that also make its OpenAPI document."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..store.base import Job, JobState, WorkerRecord
from ..store.checks import MAX_PRIORITY

MAX_JOB_ID = 2**63 - 1
MAX_PAYLOADS_PER_REQUEST = 1000
MAX_DELAY_S = 1e9  # about 31 years
MAX_WORKERS_PER_KIND = 64
PREVIEW_CHARS = 200

# Request bodies take no unknown fields, and no value of another JSON type:
# pydantic's default would read true as 1 and "2" as 2, so a mistaken
# {"n_cons": true} would run one consumer instead of getting 422.
REQUEST_CONFIG = ConfigDict(extra="forbid", strict=True)

WorkerKind = Literal["producer", "consumer", "cleaner"]
FinishedState = Literal["done", "failed", "cancelled"]


def _encodable(text: str, label: str) -> str:
    """Return `text`, or raise ValueError when UTF-8 cannot encode it (a lone surrogate from JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{label} has a character that is not valid Unicode text at position {exc.start}") from None
    return text


class ErrorOut(BaseModel):
    """Every error response: one sentence that names the value and the fix."""

    error: str


class JobSummaryOut(BaseModel):
    """One row of the jobs table: long text is cut to PREVIEW_CHARS characters."""

    id: int
    state: JobState
    priority: int
    attempts: int
    created_at: float
    finished_at: float | None
    payload: str = Field(description=f"The first {PREVIEW_CHARS} characters of the payload.")
    payload_chars: int = Field(description="The length of the whole payload, in characters.")
    outcome: str | None = Field(description="The result of a done job, else the last line of the last error.")

    @classmethod
    def of(cls, job: Job) -> JobSummaryOut:
        """Build the table row of a store Job."""
        if job.state == JobState.DONE:
            outcome = job.result
        else:
            lines = (job.last_error or "").strip().splitlines()
            outcome = lines[-1] if lines else None
        return cls(
            id=job.id, state=job.state, priority=job.priority, attempts=job.attempts,
            created_at=job.created_at, finished_at=job.finished_at, payload=job.payload[:PREVIEW_CHARS],
            payload_chars=len(job.payload), outcome=outcome[:PREVIEW_CHARS] if outcome else outcome,
        )


class JobPageOut(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[JobSummaryOut]
    limit: int
    offset: int
    has_more: bool = Field(description="True when at least one more job matches after this page.")


class EnqueueIn(BaseModel):
    """Jobs to put on the queue, all with the same options."""

    model_config = REQUEST_CONFIG

    payloads: list[str] = Field(min_length=1, max_length=MAX_PAYLOADS_PER_REQUEST)
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="Higher runs first.")
    delay_s: float = Field(default=0.0, ge=0, le=MAX_DELAY_S, allow_inf_nan=False,
                           description="Seconds before the jobs may be claimed.")
    unique_key: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="With one payload: skip the put while a queued or running job has this key.",
    )

    @field_validator("payloads")
    @classmethod
    def _payloads_encodable(cls, payloads: list[str]) -> list[str]:
        return [_encodable(payload, f"payload {index}") for index, payload in enumerate(payloads)]

    @field_validator("unique_key")
    @classmethod
    def _key_encodable(cls, key: str | None) -> str | None:
        return key if key is None else _encodable(key, "unique_key")


class EnqueueOut(BaseModel):
    """The ids of the put jobs, in the order of the payloads."""

    ids: list[int]
    added: int = Field(description="Jobs added; 0 when a job with the unique key was already queued or running.")


class RequeueOut(BaseModel):
    """The jobs a requeue queued again, and the reason for each job it rejected."""

    requeued: list[int]
    rejected: dict[int, str]


class PurgeIn(BaseModel):
    """The finished jobs to delete: their states and their minimum age."""

    model_config = REQUEST_CONFIG

    states: list[FinishedState] = Field(default=["done", "failed", "cancelled"], min_length=1)
    older_than_s: float = Field(default=0.0, ge=0, le=MAX_DELAY_S, allow_inf_nan=False,
                                description="Only jobs that finished more than this many seconds ago.")


class PurgeOut(BaseModel):
    """How many jobs a purge deleted."""

    purged: int


class CountsOut(BaseModel):
    """The number of jobs in each state."""

    queued: int
    running: int
    done: int
    failed: int
    cancelled: int

    @classmethod
    def of(cls, counts: dict[JobState, int]) -> CountsOut:
        """Build the response model of a store's counts."""
        return cls(**{state.value: count for state, count in counts.items()})


class PoolWorkerOut(BaseModel):
    """A worker of this process's pool."""

    id: str
    kind: WorkerKind
    state: str
    runs: int
    successes: int
    errors: int
    last_error: str | None


class PoolOut(BaseModel):
    """The pool of workers that runs in the dashboard's process."""

    running: bool
    queue: str
    producers: int
    consumers: int
    paused: list[WorkerKind]
    workers: list[PoolWorkerOut]


class ScaleIn(BaseModel):
    """The numbers of producers and consumers to run; a missing one stays as it is."""

    model_config = REQUEST_CONFIG

    n_prod: int | None = Field(default=None, ge=0, le=MAX_WORKERS_PER_KIND)
    n_cons: int | None = Field(default=None, ge=0, le=MAX_WORKERS_PER_KIND)


class KindIn(BaseModel):
    """The kind of worker to pause or resume; null for every kind."""

    model_config = REQUEST_CONFIG

    kind: WorkerKind | None = None


class RegisteredWorkerOut(BaseModel):
    """A worker of any process or machine, as the store's registry records it."""

    id: str
    kind: str
    host: str
    pid: int
    state: str
    started_at: float
    heartbeat_at: float
    runs: int
    successes: int
    errors: int
    lost: bool = Field(description="True when a worker that is not stopped missed three heartbeats.")

    @classmethod
    def of(cls, record: WorkerRecord, *, lost: bool) -> RegisteredWorkerOut:
        """Build the response model of a registry row."""
        return cls(**vars(record), lost=lost)


class BucketOut(BaseModel):
    """Jobs that finished in one interval, which starts at `start` (epoch seconds)."""

    start: float
    done: int
    failed: int


class ThroughputOut(BaseModel):
    """Jobs done and failed per interval, oldest first; intervals in which nothing finished are left out."""

    interval_s: float
    since: float
    buckets: list[BucketOut]


class SnapshotOut(BaseModel):
    """Everything the dashboard shows apart from the jobs table, as the event stream sends it."""

    time: float
    queue: str
    counts: CountsOut
    pool: PoolOut
    workers: list[RegisteredWorkerOut] = Field(
        description="Every worker that is not stopped, and the most recently stopped ones.")
    stopped_not_shown: int = Field(
        default=0, description="Stopped workers left out of `workers`; GET /api/workers lists them all.")
    throughput: ThroughputOut
