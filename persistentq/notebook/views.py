"""pandas views of a queue: its jobs, the counts per state, and throughput over time.

    jobs_view("config.yaml", state="failed", search="report", since=pd.Timedelta("1h"))
    counts_view(pool)                       # a Series: jobs per state
    throughput_view(pool, interval_s=10)    # a DataFrame: done and failed per 10 s
    plot_throughput(pool, interval_s=10)    # the same as a matplotlib chart

Every view takes a Config, the path of a config.yaml, a WorkerPool or a
store, reads with one query, and works without Jupyter. Times are UTC pandas
datetimes. A time bound is a datetime (naive ones are local time, as
datetime.timestamp() reads them), a string pandas parses (local time unless
it names a zone), epoch seconds, or a timedelta meaning that long before now.
SQLite readers in WAL mode neither wait for writers nor hold them up.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..store.base import JobState
from .sources import QueueSource, open_queue

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Plotting needs matplotlib, which only the [lab] extra installs.
MATPLOTLIB_HINT = "plotting needs matplotlib: pip install 'persistentq[lab]' (or pip install matplotlib)"
# More intervals than this in one throughput frame is almost surely a too small interval_s.
MAX_INTERVALS = 100_000
MAX_LIMIT = 2**63 - 1
TimeBound = Any  # datetime, pandas Timestamp, str, epoch seconds, timedelta, or None


def jobs_view(
    source: QueueSource,
    *,
    state: JobState | str | None = None,
    search: str | None = None,
    since: TimeBound = None,
    until: TimeBound = None,
    limit: int = 1000,
    queue: str | None = None,
) -> pd.DataFrame:
    """Return the newest `limit` jobs, newest first, one row per job with the job id as index.

    Filters apply together: one `state`, a payload containing `search` as
    plain text (case-sensitive), and a creation time at or after `since` and
    before `until`.
    """
    job_state = parse_state(state)
    limit = _check_limit(limit)
    if search is not None and not isinstance(search, str):
        raise TypeError(f"search must be a str or None, got {type(search).__name__}: {search!r:.80}")
    since_s, until_s = time_range(since, until)
    with open_queue(source, queue=queue) as ref:
        return ref.store.dataframe(
            queue=ref.queue, state=job_state, limit=limit, search=search or None, since=since_s, until=until_s
        )


def counts_view(source: QueueSource, *, queue: str | None = None) -> pd.Series:
    """Return the number of jobs in each state as a Series indexed by state, every state present."""
    with open_queue(source, queue=queue) as ref:
        counts = ref.store.counts(queue=ref.queue)
    index = pd.CategoricalIndex(
        [state.value for state in JobState], categories=[state.value for state in JobState], name="state"
    )
    return pd.Series([counts[state] for state in JobState], index=index, name="jobs", dtype="int64")


def throughput_view(
    source: QueueSource,
    *,
    interval_s: float = 60.0,
    since: TimeBound = None,
    until: TimeBound = None,
    queue: str | None = None,
) -> pd.DataFrame:
    """Return the jobs done and failed per `interval_s` of finish time, oldest first.

    The index is each interval's start (UTC). Intervals in which no job
    finished are filled with zeros, from `since` (else the first finished
    job) to `until` (else the last one). Raises ValueError when that would
    take more than MAX_INTERVALS rows.
    """
    interval_s = _check_interval(interval_s)
    since_s, until_s = time_range(since, until)
    with open_queue(source, queue=queue) as ref:
        rows = ref.store.throughput(queue=ref.queue, interval_s=interval_s, since=since_s, until=until_s)

    frame = pd.DataFrame(rows, columns=["interval_start", "done", "failed"])
    # Whole interval numbers, so that the filled-in rows match the store's exactly.
    frame.index = (frame.pop("interval_start") / interval_s).round().astype("int64")
    frame = frame.reindex(_interval_numbers(frame.index, interval_s, since_s, until_s), fill_value=0)
    frame.index = pd.to_datetime(frame.index * interval_s, unit="s", utc=True).rename("interval_start")
    return frame.astype("int64")


def plot_throughput(
    source: QueueSource,
    *,
    interval_s: float = 60.0,
    since: TimeBound = None,
    until: TimeBound = None,
    queue: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Plot `throughput_view` as done and failed jobs per interval, and return the matplotlib Axes."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(MATPLOTLIB_HINT) from exc

    frame = throughput_view(source, interval_s=interval_s, since=since, until=until, queue=queue)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    if frame.empty:
        ax.set_title("No job has finished yet")
        return ax
    frame.plot(ax=ax, drawstyle="steps-post", color={"done": "tab:green", "failed": "tab:red"})
    ax.set_title(f"Jobs finished per {interval_s:g} s")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("jobs")
    return ax


def parse_state(state: JobState | str | None) -> JobState | None:
    """Return `state` as a JobState; raise ValueError naming the valid states for anything else."""
    if state is None or isinstance(state, JobState):
        return state
    try:
        return JobState(str(state).strip().lower())
    except ValueError:
        valid = ", ".join(item.value for item in JobState)
        raise ValueError(f"state must be one of {valid} or None, got {state!r}") from None


def time_range(since: TimeBound, until: TimeBound) -> tuple[float | None, float | None]:
    """Return `since` and `until` as epoch seconds; raise ValueError when `since` comes after `until`."""
    since_s, until_s = epoch_seconds(since, "since"), epoch_seconds(until, "until")
    if since_s is not None and until_s is not None and since_s > until_s:
        raise ValueError(
            f"since ({_utc_text(since_s)}) is after until ({_utc_text(until_s)}), so no job could match; "
            "swap them, and note that a timedelta means that long before now"
        )
    return since_s, until_s


def _utc_text(epoch_s: float) -> str:
    try:
        return pd.Timestamp(epoch_s, unit="s", tz="UTC").isoformat(timespec="seconds")
    except (OverflowError, ValueError):
        return f"{epoch_s:g} epoch seconds"


def epoch_seconds(value: TimeBound, name: str) -> float | None:
    """Return a time bound as seconds since the epoch. A timedelta counts back from now."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite time, got {value!r}")
        return float(value)
    if isinstance(value, (dt.timedelta, pd.Timedelta)):
        return time.time() - pd.Timedelta(value).total_seconds()
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be a datetime, a date string such as '2026-12-04 10:00', epoch seconds "
            f"or a timedelta, got {value!r}"
        ) from exc
    if stamp is pd.NaT:
        raise ValueError(f"{name} must be a time, got {value!r}")
    if stamp.tzinfo is None:
        # A naive time is the machine's local time, as datetime.timestamp() reads it,
        # so datetime.now() - timedelta(minutes=30) means half an hour ago.
        return stamp.to_pydatetime(warn=False).timestamp()
    return stamp.timestamp()


def _interval_numbers(
    numbers: pd.Index, interval_s: float, since_s: float | None, until_s: float | None
) -> range:
    """Return every interval number from `since_s` (or the first one) to `until_s` (or the last)."""
    if numbers.empty and (since_s is None or until_s is None):
        return range(0)
    first = math.floor(since_s / interval_s) if since_s is not None else int(numbers[0])
    last = math.ceil(until_s / interval_s) - 1 if until_s is not None else int(numbers[-1])
    if last - first + 1 > MAX_INTERVALS:
        raise ValueError(
            f"interval_s {interval_s:g} gives {last - first + 1} intervals, more than {MAX_INTERVALS}; "
            "use a larger interval_s or a narrower since/until"
        )
    return range(first, last + 1)


def _check_limit(limit: int) -> int:
    # numbers.Integral also admits numpy integers; SQLite and PostgreSQL take at most a signed 64-bit LIMIT.
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return int(limit)


def _check_interval(interval_s: float) -> float:
    if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or not math.isfinite(interval_s) \
            or interval_s <= 0:
        raise ValueError(f"interval_s must be a number of seconds > 0, got {interval_s!r}")
    return float(interval_s)
