"""The control panel without a browser: its buttons and sliders drive a real pool on a real SQLite file."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from persistentq import config_from_dict
from persistentq.notebook import session, show_panel
from persistentq.notebook.panel_status import RateMeter, workers_table
from persistentq.store.base import JobState, WorkerRecord
from persistentq.store.sqlite import PersistentQSQLite
from persistentq.workers.base import HEARTBEAT_S, WorkerState


def fast_config(tmp_path: Path, **general):
    """A config whose workers turn fast, with `general` keys overriding the counts."""
    return config_from_dict({
        "general": {"primary_path": str(tmp_path), "n_prod": 1, "n_cons": 2, "shutdown_grace": 1, **general},
        "producer": {"interval": 0.05},
        "consumer": {"interval_min": 0, "interval_max": 0, "poll_interval": 0.05, "retry_backoff": 0.01},
        "cleaner": {"interval": 0.2},
    })


def produce() -> list[str]:
    return ["a", "b"]


async def consume(payload: str) -> str:
    await asyncio.sleep(0.001)
    return payload.upper()


async def until(condition: Callable[[], bool], timeout_s: float = 10.0, description: str = "condition") -> None:
    """Wait until `condition()` is true, failing the test after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {description}")
        await asyncio.sleep(0.02)


def run(scenario: Callable[[], object]) -> None:
    """Run `scenario` on a fresh event loop, then stop every pool it left running."""

    async def main() -> None:
        try:
            await scenario()
        finally:
            await session.stop_pools(grace_s=0)

    asyncio.run(main())


def running_kinds(pool) -> dict[str, int]:
    return {
        kind: sum(1 for worker in pool.workers if worker.kind == kind and worker.state == WorkerState.RUNNING)
        for kind in ("producer", "consumer", "cleaner")
    }


def test_buttons_start_and_stop_real_workers(tmp_path: Path) -> None:
    """Start all, per-kind stop and start, and Stop all change the pool's workers."""

    async def scenario() -> None:
        panel = show_panel(fast_config(tmp_path), consumer_function=consume, producer_function=produce,
                           display=False, refresh_s=0.05)
        pool = panel.pool
        assert not pool.running

        panel.w.start_all.click()
        await panel.wait_idle()
        assert running_kinds(pool) == {"producer": 1, "consumer": 2, "cleaner": 1}
        await until(lambda: pool.counts()[JobState.DONE] >= 5, description="jobs done")

        panel.w.stops["producer"].click()
        await panel.wait_idle()
        assert running_kinds(pool) == {"producer": 0, "consumer": 2, "cleaner": 1}
        panel.w.stops["cleaner"].click()
        await panel.wait_idle()
        assert pool.cleaner is None
        assert pool.running

        panel.w.starts["cleaner"].click()
        await panel.wait_idle()
        assert running_kinds(pool)["cleaner"] == 1
        await until(lambda: panel.w.states["producer"].description == "stopped", description="producer state shown")
        assert panel.w.states["consumer"].button_style == "success"

        panel.w.stop_all.click()
        await panel.wait_idle()
        assert not pool.running
        assert pool.workers == []
        await until(lambda: panel.w.state.description == "stopped", description="panel state stopped")
        panel.close()

    run(scenario)


def test_sliders_scale_running_workers(tmp_path: Path) -> None:
    """Moving the sliders while running scales producers and consumers; while stopped it only sets the count."""

    async def scenario() -> None:
        panel = show_panel(fast_config(tmp_path), consumer_function=consume, producer_function=produce,
                           display=False, refresh_s=0.05)
        pool = panel.pool
        panel.w.sliders["consumer"].value = 3
        await panel.wait_idle()
        assert not pool.running

        await panel.start()
        assert len(pool.consumers) == 3
        panel.w.sliders["consumer"].value = 5
        panel.w.sliders["producer"].value = 2
        await panel.wait_idle()
        assert running_kinds(pool) == {"producer": 2, "consumer": 5, "cleaner": 1}

        panel.w.sliders["consumer"].value = 1
        await panel.wait_idle()
        assert len(pool.consumers) == 1
        assert pool.runner.max_children == 1

        with pytest.raises(ValueError, match="worker counts must be integers from 0 to 16, got -1"):
            await panel.scale(n_cons=-1)
        await panel.stop()
        panel.close()

    run(scenario)


def test_pause_toggle_pauses_kind(tmp_path: Path) -> None:
    """The pause toggle of consumers pauses them and no job gets done until it is released."""

    async def scenario() -> None:
        panel = show_panel(fast_config(tmp_path, n_prod=0), consumer_function=consume,
                           display=False, refresh_s=0.05)
        pool = panel.pool
        await panel.start()

        panel.w.pauses["consumer"].value = True
        await until(lambda: all(c.state == WorkerState.PAUSED for c in pool.consumers), description="consumers paused")
        assert panel.w.pauses["consumer"].description == "Resume"
        ids = pool.store.put_many(["x"] * 5)
        await asyncio.sleep(0.3)
        assert pool.counts()[JobState.DONE] == 0
        await until(lambda: panel.w.states["consumer"].description == "paused", description="paused state shown")
        assert panel.w.states["consumer"].button_style == "warning"

        panel.w.pauses["consumer"].value = False
        await until(lambda: pool.counts()[JobState.DONE] == len(ids), description="jobs done after resume")
        assert panel.w.pauses["consumer"].description == "Pause"
        await panel.stop()
        panel.close()

    run(scenario)


def test_rerun_panel_keeps_n_cons(tmp_path: Path) -> None:
    """Showing the panel again for the same queue attaches to the running pool: still exactly n_cons consumers."""

    async def scenario() -> None:
        config = fast_config(tmp_path, n_cons=3)
        first = show_panel(config, consumer_function=consume, producer_function=produce,
                           display=False, refresh_s=0.05)
        await first.start()
        second = show_panel(config, consumer_function=consume, producer_function=produce,
                            display=False, refresh_s=0.05)
        second.w.start_all.click()
        await second.wait_idle()

        assert second.pool is first.pool
        assert first._closed
        assert len(second.pool.consumers) == 3
        assert second.w.sliders["consumer"].value == 3
        await asyncio.sleep(0.2)
        registered = [w for w in second.pool.store.workers()
                      if w.kind == "consumer" and w.state == "running" and w.pid == os.getpid()]
        assert len(registered) == 3
        await second.stop()
        second.close()

    run(scenario)


def test_background_task_error_in_log(tmp_path: Path) -> None:
    """A failing background task, one never awaited, and a failing consumer all show their traceback."""

    async def scenario() -> None:
        async def broken(payload: str) -> str:
            raise KeyError(f"no such record {payload}")

        async def exploding() -> None:
            raise RuntimeError("background task exploded")

        panel = show_panel(fast_config(tmp_path, n_prod=0), consumer_function=broken,
                           display=False, refresh_s=0.05)
        panel.run_in_background(exploding(), name="exploding task")
        await panel.wait_idle()
        await until(lambda: "background task exploded" in _log_text(panel), description="action error in the log")
        assert "Traceback (most recent call last)" in _log_text(panel)
        assert 'raise RuntimeError("background task exploded")' in _log_text(panel)
        await until(lambda: panel.w.state.description == "error", description="error state shown")
        assert panel.w.state.button_style == "danger"

        async def forgotten() -> None:
            raise ValueError("nobody awaited this task")

        task = asyncio.get_running_loop().create_task(forgotten(), name="forgotten task")
        await asyncio.sleep(0.05)
        del task
        gc.collect()
        await until(lambda: "nobody awaited this task" in _log_text(panel), description="unretrieved error in the log")
        assert "background task forgotten task raised" in _log_text(panel)

        await panel.start()
        panel.pool.store.put("r1")
        await until(lambda: "no such record r1" in _log_text(panel), description="job error in the log")
        await panel.stop()
        panel.close()

    run(scenario)


def _log_text(panel) -> str:
    return "".join(output.get("text", "") for output in panel.w.log.outputs)


def test_worker_table_shows_other_processes_and_lost(tmp_path: Path) -> None:
    """Workers of other processes are listed, and one silent for three heartbeats is shown lost."""

    async def scenario() -> None:
        config = fast_config(tmp_path)
        store = PersistentQSQLite(config.database_path)
        now = time.time()
        store.register_worker(WorkerRecord(
            id="consumer-1@other:4242", kind="consumer", host="other", pid=4242, state="running",
            started_at=now - 100, heartbeat_at=now - 4 * HEARTBEAT_S,
        ))
        store.register_worker(WorkerRecord(
            id="producer-9@other:4243", kind="producer", host="other", pid=4243, state="running",
            started_at=now, heartbeat_at=now,
        ))
        store.close()

        panel = show_panel(config, consumer_function=consume, display=False, refresh_s=0.05)
        await until(lambda: "consumer-1@other:4242" in panel.w.workers.value, description="worker table")
        table = panel.w.workers.value
        assert "<tr class='pq-worker-lost'><td>consumer-1@other:4242</td>" in table
        assert "<tr class='pq-worker-running'><td>producer-9@other:4243</td>" in table
        assert "<b>1</b> live, <b>1</b> lost" in table
        panel.close()

    run(scenario)


def test_workers_table_cuts_stopped_rows() -> None:
    """Live workers come first and stopped ones past the row limit are counted, not listed."""
    now = time.time()
    records = [
        WorkerRecord(id=f"consumer-{i}@h:1", kind="consumer", host="h", pid=1, state="stopped",
                     started_at=now, heartbeat_at=now)
        for i in range(40)
    ] + [WorkerRecord(id="producer-1@h:1", kind="producer", host=socket.gethostname(), pid=1,
                      state="running", started_at=now, heartbeat_at=now)]

    table = workers_table(records, now=now)

    assert table.index("producer-1@h:1") < table.index("consumer-0@h:1")
    assert "35 more stopped workers not shown" in table
    assert "consumer-4@h:1" in table
    assert "consumer-5@h:1" not in table


def test_workers_table_counts_hidden_live_rows() -> None:
    """Live workers past the row limit are counted apart from stopped ones."""
    now = time.time()
    records = [
        WorkerRecord(id=f"consumer-{i}@h:1", kind="consumer", host="h", pid=1, state="running",
                     started_at=now, heartbeat_at=now)
        for i in range(30)
    ]

    table = workers_table(records, now=now)

    assert "5 more live workers not shown" in table
    assert "stopped workers not shown" not in table


def test_rate_meter_window() -> None:
    """The rate is finished jobs per second over the window, never negative after a purge."""
    meter = RateMeter(window_s=5)
    assert meter.add(0, now=0.0) == 0.0
    assert meter.add(10, now=1.0) == 10.0
    assert meter.add(30, now=2.0) == 15.0
    for second in range(3, 10):
        rate = meter.add(30 + 10 * (second - 2), now=float(second))
    assert rate == 10.0
    assert meter.add(0, now=10.0) == 0.0


def test_panel_needs_running_loop(tmp_path: Path) -> None:
    """Outside a running event loop the panel raises an error naming what to use instead."""
    with pytest.raises(RuntimeError, match="needs a running event loop"):
        show_panel(fast_config(tmp_path), consumer_function=consume, display=False)


@pytest.mark.parametrize("refresh_s", [0, -1, float("nan"), float("inf"), "1", True])
def test_panel_rejects_bad_refresh(tmp_path: Path, refresh_s: object) -> None:
    """A refresh interval that is not a positive number of seconds is rejected before any task starts."""
    async def scenario() -> None:
        with pytest.raises(ValueError, match="refresh_s must be a number of seconds > 0"):
            show_panel(fast_config(tmp_path), consumer_function=consume, refresh_s=refresh_s, display=False)

    asyncio.run(scenario())


def test_pool_for_adopts_running_pool(tmp_path: Path) -> None:
    """A second WorkerPool on a running queue is not started: the running one is used, with the new function."""
    from persistentq import WorkerPool

    async def scenario() -> None:
        config = fast_config(tmp_path, n_prod=0)
        first = await session.start_pool(config, consumer_function=consume)

        async def shout(payload: str) -> str:
            return payload + "!"

        second = session.pool_for(WorkerPool(config, consumer_function=shout))
        assert second is first
        assert all(consumer.function is shout for consumer in first.consumers)
        job = first.store.put("hey")
        await until(lambda: first.store.get(job).state == JobState.DONE, description="job done")
        assert first.store.get(job).result == "hey!"
        assert first.producer_function == first.pipeline.produce
        await first.stop()

    run(scenario)


def test_requeue_button_requeues_failed(tmp_path: Path) -> None:
    """The Requeue failed button queues every failed job again and logs how many."""

    async def scenario() -> None:
        config = fast_config(tmp_path, n_prod=0)
        panel = show_panel(config, consumer_function=consume, display=False, refresh_s=0.05)
        store = panel.pool.store
        store.put_many(["p", "q"])
        for job in store.claim(limit=2, lease_s=30, worker_id="test", max_attempts=1):
            store.fail(job.id, job.lease_token, error="boom")

        panel.w.requeue.click()
        await panel.wait_idle()

        counts = store.counts()
        assert counts[JobState.FAILED] == 0
        assert counts[JobState.QUEUED] == 2
        await until(lambda: "requeued 2 failed jobs, 0 rejected" in _log_text(panel), description="requeue logged")
        panel.close()

    run(scenario)


def test_show_panel_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a source the panel uses ./config.yaml, as the basic command does."""
    (tmp_path / "config.yaml").write_text("general:\n    queue: from-file\n    n_cons: 3\n")
    monkeypatch.chdir(tmp_path)

    async def scenario() -> None:
        panel = show_panel(display=False)
        assert panel.pool.config.general.queue == "from-file"
        assert panel.pool.config.database_path == tmp_path / "queue.sqlite3"
        assert panel.w.sliders["consumer"].value == 3
        panel.close()

    run(scenario)


def test_show_panel_defaults_warn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """Without a source or a ./config.yaml, the panel warns that the defaults put files in this folder."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.WARNING, logger="persistentq")

    async def scenario() -> None:
        panel = show_panel(display=False)
        assert panel.pool.config.database_path == tmp_path / "queue.sqlite3"
        panel.close()

    run(scenario)

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(f"no config.yaml in {tmp_path}: using the built-in defaults" in message for message in warnings), warnings
