"""Notebook views and failure helpers on a real SQLite file, outside Jupyter."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from persistentq import config_from_dict
from persistentq.notebook import (
    counts_view,
    failed_jobs,
    jobs_view,
    plot_throughput,
    requeue_failed,
    throughput_view,
)
from persistentq.notebook.views import MAX_INTERVALS, epoch_seconds
from persistentq.store.base import JobState
from persistentq.store.sqlite import PersistentQSQLite


@pytest.fixture
def config(tmp_path: Path):
    return config_from_dict({"general": {"primary_path": str(tmp_path), "n_prod": 0}})


def finish(store: PersistentQSQLite, count: int, *, fail: bool = False) -> list[int]:
    """Claim `count` queued jobs and ack them, or fail them when `fail` is set."""
    claimed = store.claim(limit=count, lease_s=30, worker_id="test", max_attempts=1)
    for job in claimed:
        if fail:
            store.fail(job.id, job.lease_token, error=f"boom {job.payload}")
        else:
            store.ack(job.id, job.lease_token, result="ok")
    return [job.id for job in claimed]


def test_jobs_view_filters_and_types(config) -> None:
    """jobs_view filters by state, payload text and time, newest first, with typed columns."""
    store = PersistentQSQLite(config.database_path)
    store.put_many([f"apple-{i}" for i in range(5)] + [f"pear-{i}" for i in range(5)])
    finish(store, 3)
    store.close()

    frame = jobs_view(config)
    assert list(frame.index) == sorted(frame.index, reverse=True)
    assert len(frame) == 10
    assert isinstance(frame["state"].dtype, pd.CategoricalDtype)
    assert frame["attempts"].dtype == "int64"
    assert str(frame["created_at"].dtype).startswith("datetime64")
    assert str(frame["created_at"].dt.tz) == "UTC"

    assert set(jobs_view(config, state="done").index) == {1, 2, 3}
    assert set(jobs_view(config, state=JobState.QUEUED)["payload"]) == {
        "apple-3", "apple-4", *(f"pear-{i}" for i in range(5))
    }
    assert len(jobs_view(config, search="pear")) == 5
    assert len(jobs_view(config, search="pear", limit=2)) == 2
    assert jobs_view(config, since=pd.Timedelta("1h")).shape[0] == 10
    assert jobs_view(config, until=pd.Timestamp.now(tz="UTC") - pd.Timedelta("1h")).empty
    assert jobs_view(config, since=time.time() + 60).empty


def test_jobs_view_rejects_bad_arguments(config) -> None:
    """A bad state, limit or time names the value and what is expected."""
    with pytest.raises(ValueError, match="state must be one of queued, running, done, failed, cancelled.*'don'"):
        jobs_view(config, state="don")
    with pytest.raises(ValueError, match="limit must be an integer from 1 to 9223372036854775807, got 0"):
        jobs_view(config, limit=0)
    with pytest.raises(ValueError, match="since must be a datetime.*'yesterday-ish'"):
        jobs_view(config, since="yesterday-ish")
    with pytest.raises(ValueError, match="until must be a finite time"):
        jobs_view(config, until=float("nan"))


def test_views_reject_since_after_until(config) -> None:
    """A since later than until is an error naming both times, not an empty frame."""
    with pytest.raises(ValueError, match=r"since \(2026-12-04T11:00:00\+00:00\) is after until \(2026-12-04T10:00:00"):
        jobs_view(config, since="2026-12-04 11:00", until="2026-12-04 10:00")
    with pytest.raises(ValueError, match="is after until"):
        throughput_view(config, since=pd.Timedelta("1h"), until=pd.Timedelta("2h"))
    assert jobs_view(config, since=1000, until=1000).empty


def test_jobs_view_limit_and_search_types(config) -> None:
    """A numpy integer limit works; a limit past 64 bits and a non-str search raise clear errors."""
    store = PersistentQSQLite(config.database_path)
    store.put_many(["a", "b", "c"])
    store.close()

    assert len(jobs_view(config, limit=np.int64(2))) == 2
    with pytest.raises(ValueError, match="limit must be an integer from 1 to"):
        jobs_view(config, limit=2**63)
    with pytest.raises(TypeError, match="search must be a str or None, got int: 5"):
        jobs_view(config, search=5)


def test_epoch_seconds_forms() -> None:
    """Naive datetimes are local time, aware ones keep their zone, a timedelta counts back from now."""
    local_minute = dt.datetime(1970, 1, 2, 0, 1).timestamp()
    assert epoch_seconds("1970-01-02 00:01", "since") == local_minute
    assert epoch_seconds(dt.datetime(1970, 1, 2, 0, 1), "since") == local_minute
    assert epoch_seconds("1970-01-01 00:01+00:00", "since") == 60.0
    assert epoch_seconds(pd.Timestamp("1970-01-01 01:00", tz="Europe/Paris"), "since") == 0.0
    assert epoch_seconds(12.5, "since") == 12.5
    ago = epoch_seconds(pd.Timedelta(minutes=10), "since")
    assert abs(ago - (time.time() - 600)) < 5


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="time.tzset is POSIX only")
def test_naive_now_means_local_time(monkeypatch) -> None:
    """datetime.now() minus half an hour is half an hour ago on a machine outside UTC."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        since = epoch_seconds(dt.datetime.now() - dt.timedelta(minutes=30), "since")
    finally:
        monkeypatch.undo()
        time.tzset()

    assert abs(since - (time.time() - 1800)) < 5


def test_counts_view_series(config) -> None:
    """counts_view returns every state, in state order, as int64 counts."""
    store = PersistentQSQLite(config.database_path)
    store.put_many(["a", "b", "c", "d"])
    finish(store, 1)
    finish(store, 1, fail=True)
    store.close()

    counts = counts_view(config)

    assert list(counts.index) == [state.value for state in JobState]
    assert counts.dtype == "int64"
    assert counts.to_dict() == {"queued": 2, "running": 0, "done": 1, "failed": 1, "cancelled": 0}


def test_throughput_view_fills_gaps(config) -> None:
    """Intervals without finished jobs appear as zero rows between the first and the last."""
    store = PersistentQSQLite(config.database_path)
    store.put_many(["a", "b", "c"])
    finish(store, 2)
    finish(store, 1, fail=True)
    # Move the finish times apart: two jobs in one interval, one three intervals later.
    with sqlite3.connect(config.database_path) as conn:
        conn.execute("UPDATE jobs SET finished_at = CASE id WHEN 3 THEN 1030.5 ELSE 1000.5 END")
    frame = throughput_view(store, interval_s=10)
    store.close()

    assert list(frame.columns) == ["done", "failed"]
    assert frame.index[0] == pd.Timestamp(1000, unit="s", tz="UTC")
    assert frame.to_dict("list") == {"done": [2, 0, 0, 0], "failed": [0, 0, 0, 1]}
    assert frame.dtypes.tolist() == ["int64", "int64"]


def test_throughput_view_bounds(config) -> None:
    """since and until widen the range with zeros; too many intervals is an error naming the fix."""
    store = PersistentQSQLite(config.database_path)
    store.put("a")
    finish(store, 1)
    now = time.time()

    frame = throughput_view(store, interval_s=60, since=now - 600, until=now + 600)
    assert len(frame) in (20, 21)
    assert frame["done"].sum() == 1

    assert throughput_view(store, interval_s=60, since=now + 3600).empty
    with pytest.raises(ValueError, match=f"more than {MAX_INTERVALS}; use a larger interval_s"):
        throughput_view(store, interval_s=0.001, since=now - 3600, until=now)
    with pytest.raises(ValueError, match="interval_s must be a number of seconds > 0, got 0"):
        throughput_view(store, interval_s=0)
    store.close()


def test_plot_throughput_draws_lines(config) -> None:
    """plot_throughput draws a done and a failed line, and titles an empty queue."""
    import matplotlib

    matplotlib.use("Agg")
    empty = plot_throughput(config, interval_s=1)
    assert empty.get_title() == "No job has finished yet"

    store = PersistentQSQLite(config.database_path)
    store.put_many(["a", "b"])
    finish(store, 1)
    finish(store, 1, fail=True)
    store.close()
    ax = plot_throughput(config, interval_s=1)

    assert [line.get_label() for line in ax.get_lines()] == ["done", "failed"]
    assert ax.get_title() == "Jobs finished per 1 s"


def test_requeue_failed_custom_jobs(config) -> None:
    """Failed jobs of a pool with a Python function requeue without touching any file."""
    from persistentq.notebook import pool_for

    def work(payload: str) -> str:
        return payload

    pool = pool_for(config, consumer_function=work)
    store = PersistentQSQLite(config.database_path)
    store.put_many(["x", "y", "z"])
    failed = finish(store, 2, fail=True)
    store.close()

    assert list(failed_jobs(pool)["last_error"]) == ["boom y", "boom x"]
    result = requeue_failed(pool, [failed[0]])
    assert result.requeued == [failed[0]]
    assert result.rejected == {}
    result = requeue_failed(pool)
    assert result.requeued == [failed[1]]
    assert counts_view(pool)["queued"] == 3
    with pytest.raises(ValueError, match="job ids must be integers, got 'x'"):
        requeue_failed(pool, ["x"])


def test_requeue_failed_one_id_or_str(config) -> None:
    """One integer id requeues that job; a str of digits is rejected instead of requeueing one job per digit."""
    from persistentq.notebook import pool_for

    pool = pool_for(config, consumer_function=str.upper)
    store = PersistentQSQLite(config.database_path)
    store.put_many(["x", "y"])
    failed = finish(store, 2, fail=True)
    store.close()

    with pytest.raises(TypeError, match="job_ids must be an integer or a list of integers, got '12'"):
        requeue_failed(pool, "12")
    assert counts_view(pool)["failed"] == 2
    result = requeue_failed(pool, np.int64(failed[0]))
    assert result.requeued == [failed[0]]


def test_requeue_failed_file_job_without_file(config) -> None:
    """A failed file-pipeline job whose file is gone is rejected with the reason, and stays failed."""
    store = PersistentQSQLite(config.database_path)
    store.put("abcdefghij")
    failed = finish(store, 1, fail=True)
    store.close()

    result = requeue_failed(config)

    assert result.requeued == []
    assert list(result.rejected) == failed
    assert counts_view(config)["failed"] == 1


def test_views_of_pool_on_deleted_file(tmp_path: Path) -> None:
    """A running pool whose queue folder was deleted makes the views raise; a restarted pool uses a new file."""
    import asyncio
    import shutil

    from persistentq.errors import StoreError
    from persistentq.notebook import start_pool

    folder = tmp_path / "queue"
    config = config_from_dict({"general": {"primary_path": str(folder), "n_prod": 0, "n_cons": 1}})

    async def main() -> int:
        pool = await start_pool(config, consumer_function=str.upper)
        shutil.rmtree(folder)
        with pytest.raises(StoreError, match="deleted or replaced"):
            counts_view(config)
        with pytest.raises(StoreError, match="deleted or replaced"):
            pool.store.put("lost")
        await pool.stop()

        pool = await start_pool(config, consumer_function=str.upper)
        try:
            return pool.store.put("kept")
        finally:
            await pool.stop()

    job_id = asyncio.run(main())

    with sqlite3.connect(folder / "queue.sqlite3") as conn:
        assert conn.execute("SELECT payload FROM jobs WHERE id = ?", (job_id,)).fetchall() == [("kept",)]
