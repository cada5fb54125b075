"""pandas DataFrames built from jobs, for notebooks and reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

from .base import Job, JobState

if TYPE_CHECKING:
    import pandas as pd

TIME_COLUMNS = ("created_at", "available_at", "started_at", "finished_at", "lease_expires_at")
JOB_FIELDS = tuple(field.name for field in fields(Job))


def jobs_frame(jobs: Sequence[Job]) -> pd.DataFrame:
    """Return one row per job: times as UTC datetimes, state as a categorical, id as index."""
    return rows_frame([tuple(job.__dict__.values()) for job in jobs])


def rows_frame(rows: Sequence[tuple]) -> pd.DataFrame:
    """Build the jobs DataFrame straight from database rows in JOB_FIELDS order."""
    import pandas as pd

    frame = pd.DataFrame.from_records(list(rows), columns=list(JOB_FIELDS))
    for column in TIME_COLUMNS:
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    frame["state"] = pd.Categorical(
        frame["state"].astype(str), categories=[state.value for state in JobState]
    )
    for column in ("priority", "attempts"):
        frame[column] = frame[column].astype("int64")
    return frame.set_index("id")
