"""Figures of the control panel: the rate of finished jobs, the state of each kind of worker, the worker table."""

from __future__ import annotations

import collections
import html
import time

from ..pool import WorkerPool
from ..store.base import WorkerRecord
from ..workers.base import HEARTBEAT_S, WorkerState

# The rate of finished jobs is measured over this many seconds of samples.
RATE_WINDOW_S = 5.0
# Rows of the worker table. Stopped workers are listed after live ones, and cut first.
MAX_WORKER_ROWS = 25
# Stopped workers of earlier runs stay in the registry until the cleaner
# deletes their rows a day later, so only the most recent few are listed.
MAX_STOPPED_ROWS = 5


class RateMeter:
    """Jobs finished per second, from samples of the running total of done and failed jobs."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, finished: int, now: float | None = None) -> float:
        """Record the total of finished jobs at `now` and return the rate over the window."""
        now = time.monotonic() if now is None else now
        self._samples.append((now, finished))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        (first_time, first_count), (last_time, last_count) = self._samples[0], self._samples[-1]
        if last_time <= first_time:
            return 0.0
        # A purge lowers the total, which is not negative throughput.
        return max(last_count - first_count, 0) / (last_time - first_time)


def kind_state(pool: WorkerPool, kind: str) -> str:
    """Return "error", "stopped", "paused" or "running" for the workers of one kind in `pool`."""
    workers = [worker for worker in pool.workers if worker.kind == kind]
    states = {worker.state for worker in workers}
    if WorkerState.ERROR in states:
        return "error"
    if not pool.running or not workers:
        return "stopped"
    if states <= {WorkerState.PAUSED}:
        return "paused"
    return "running"


def workers_table(records: list[WorkerRecord], now: float | None = None) -> str:
    """Return an HTML table of registered workers, live ones first, with lost workers marked."""
    now = time.time() if now is None else now
    live = [record for record in records if record.state != "stopped"]
    stopped = [record for record in records if record.state == "stopped"]
    listed = live[:MAX_WORKER_ROWS] + stopped[:MAX_STOPPED_ROWS]

    rows = []
    for record in listed:
        lost = record.is_lost(now, HEARTBEAT_S)
        state = "lost" if lost else record.state
        css = "pq-worker-lost" if lost else f"pq-worker-{html.escape(record.state)}"
        rows.append(
            f"<tr class='{css}'><td>{html.escape(record.id)}</td><td>{html.escape(record.kind)}</td>"
            f"<td>{html.escape(record.host)}</td><td>{record.pid}</td><td><b>{html.escape(state)}</b></td>"
            f"<td>{_age(now - record.heartbeat_at)}</td><td>{record.runs}</td><td>{record.errors}</td></tr>"
        )
    hidden_live = max(0, len(live) - MAX_WORKER_ROWS)
    hidden_stopped = max(0, len(stopped) - MAX_STOPPED_ROWS)
    notes = []
    if hidden_live:
        notes.append(f"{hidden_live} more live")
    if hidden_stopped:
        notes.append(f"{hidden_stopped} more stopped")
    footer = f"<div>{' and '.join(notes)} workers not shown</div>" if notes else ""
    lost_count = sum(record.is_lost(now, HEARTBEAT_S) for record in records)
    summary = (
        f"<div><b>{len(live) - lost_count}</b> live, <b>{lost_count}</b> lost, "
        f"<b>{len(stopped)}</b> stopped workers registered (all processes)</div>"
    )
    header = (
        "<tr><th>worker</th><th>kind</th><th>host</th><th>pid</th><th>state</th>"
        "<th>heartbeat</th><th>runs</th><th>errors</th></tr>"
    )
    return f"{summary}<table class='pq-worker-table'>{header}{''.join(rows)}</table>{footer}"


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"
