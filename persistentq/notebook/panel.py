"""The ipywidgets control panel: start, stop, pause and scale workers in the kernel, watch the queue.

    panel = show_panel("config.yaml", consumer_function=work)
    await panel.start()                # or click "Start all"
    await panel.scale(n_cons=4)        # or move the consumers slider
    await panel.stop()                 # graceful, as the "Stop all" button

The workers are asyncio tasks on the kernel's running event loop, so cells
stay runnable while they work. A task on the same loop refreshes the counts,
the rate of finished jobs and the worker table about once a second. Every
exception from a background task, and every worker log line, goes to the
log area.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..pool import WORKER_KINDS, WorkerPool
from ..store.base import JobState
from ..store.factory import open_store
from ..workers.functions import JobFunction
from . import session
from .panel_log import PanelLogHandler, attach_handler, detach_handler, log_unhandled_task_errors
from .panel_status import RateMeter, kind_state, workers_table

log = logging.getLogger(__name__)

WIDGETS_HINT = "the control panel needs ipywidgets: pip install ipywidgets (a runtime dependency of persistentq)"
REFRESH_S = 1.0
# Button styles of ipywidgets for each state a kind or the panel can be in.
STATE_STYLES = {"running": "success", "paused": "warning", "error": "danger", "stopped": ""}

_panels: dict[int, ControlPanel] = {}  # the panel shown last for each pool, by id(pool)


def show_panel(
    source: Any = None,
    *,
    consumer_function: JobFunction | None = None,
    producer_function: JobFunction | None = None,
    refresh_s: float = REFRESH_S,
    display: bool = True,
) -> ControlPanel:
    """Display a control panel for a config, a config path or a WorkerPool, and return it.

    Without `source`, ./config.yaml is used when it exists, else the defaults.

    Run it again, in the same kernel, and the new panel controls the same
    pool: it never starts a second set of workers. The older panel of that
    pool stops refreshing.
    """
    pool = session.pool_for(source, consumer_function=consumer_function, producer_function=producer_function)
    old = _panels.pop(id(pool), None)
    if old is not None:
        old.close()
    panel = ControlPanel(pool, refresh_s=refresh_s)
    _panels[id(pool)] = panel
    if display:
        from IPython.display import display as ipython_display

        ipython_display(panel.widget)
    return panel


class ControlPanel:
    """Widgets bound to one WorkerPool, whose buttons and sliders change its real workers."""

    def __init__(self, pool: WorkerPool, *, refresh_s: float = REFRESH_S) -> None:
        try:
            import ipywidgets  # noqa: F401
        except ImportError as exc:
            raise ImportError(WIDGETS_HINT) from exc
        if isinstance(refresh_s, bool) or not isinstance(refresh_s, (int, float)) or not 0 < refresh_s < math.inf:
            # 0 would reread the queue without pause and starve the kernel's loop.
            raise ValueError(f"refresh_s must be a number of seconds > 0, got {refresh_s!r}")
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "the control panel needs a running event loop, as a Jupyter kernel has; "
                "outside Jupyter use the views and persistentq.notebook.run_sync instead"
            ) from None
        self.pool = pool
        self.refresh_s = refresh_s
        self._loop_thread = threading.get_ident()
        self._enabled = {kind: _has_workers(pool, kind) for kind in WORKER_KINDS}
        self._error: str | None = None
        self._actions: set[asyncio.Task] = set()
        self._apply_lock = asyncio.Lock()
        self._rate = RateMeter()
        self._closed = False

        from .panel_widgets import build_widgets

        self.w = build_widgets(pool, self._initial_counts())
        self.widget = self.w.root
        self._connect()
        self._read_store = open_store(pool.config)
        self.log_handler = PanelLogHandler()
        attach_handler(self.log_handler)
        log_unhandled_task_errors(self.loop)
        self._refresh_task = self.loop.create_task(self._refresh_forever(), name="persistentq panel refresh")
        self._refresh_task.add_done_callback(self._on_refresh_done)

    def __repr__(self) -> str:
        return f"<ControlPanel for {self.pool!r}>"

    # Actions, each usable from code with `await` and bound to a widget.

    async def start(self, kind: str | None = None) -> None:
        """Start the workers of one kind ("producer", "consumer", "cleaner"), or all of them."""
        for name in _kinds(kind):
            self._enabled[name] = True
        await self._apply()

    async def stop(self, kind: str | None = None) -> None:
        """Stop the workers of one kind, or all. The pool stops for good when no kind is left running."""
        for name in _kinds(kind):
            self._enabled[name] = False
        await self._apply()

    def pause(self, kind: str | None = None) -> None:
        """Pause one kind of worker, or all: each finishes its current turn, then waits."""
        self.pool.pause(kind)
        self._show_pause_buttons()

    def resume(self, kind: str | None = None) -> None:
        """Resume one kind of worker, or all."""
        self.pool.resume(kind)
        self._show_pause_buttons()

    async def scale(self, *, n_prod: int | None = None, n_cons: int | None = None) -> None:
        """Set how many producers and consumers run. Kinds that are running change at once."""
        for slider, value in ((self.w.sliders["producer"], n_prod), (self.w.sliders["consumer"], n_cons)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= slider.max:
                raise ValueError(f"worker counts must be integers from 0 to {slider.max}, got {value!r}")
            slider.value = value
        await self._apply()

    async def wait_idle(self, timeout_s: float = 60.0) -> None:
        """Wait until every action started by a button or a slider has finished."""
        deadline = time.monotonic() + timeout_s
        while self._actions:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"panel actions still running after {timeout_s:g} s")
            await asyncio.wait(set(self._actions), timeout=remaining)

    def run_in_background(self, awaitable: Awaitable[Any], name: str | None = None) -> asyncio.Task:
        """Run `awaitable` as a task on the kernel's loop; an exception it raises is shown in the log area."""
        task = self.loop.create_task(_as_coroutine(awaitable), name=name)
        self._actions.add(task)
        task.add_done_callback(self._on_action_done)
        return task

    def close(self) -> None:
        """Stop refreshing and detach from logging. The pool and its workers keep running."""
        if self._closed:
            return
        self._closed = True
        self._refresh_task.cancel()
        detach_handler(self.log_handler)
        self._read_store.close()
        if _panels.get(id(self.pool)) is self:
            del _panels[id(self.pool)]

    async def refresh(self) -> None:
        """Read the queue and the worker registry once and update every widget."""
        queue = self.pool.config.general.queue
        await asyncio.to_thread(self._read_store.check_health)
        counts = await asyncio.to_thread(self._read_store.counts, queue=queue)
        records = await asyncio.to_thread(self._read_store.workers)
        for state in JobState:
            self.w.counts[state].value = f"<span class='pq-number'>{counts[state]}</span> {state.value}"
        rate = self._rate.add(counts[JobState.DONE] + counts[JobState.FAILED])
        self.w.rate.value = f"<span class='pq-number'>{rate:.1f}</span> jobs/s finished"
        self.w.workers.value = workers_table(records)
        self._show_states()
        self.log_handler.flush_to(self.w.log)

    # Applying the requested workers to the pool.

    async def _apply(self) -> None:
        """Make the pool run the workers the panel requests. When requests overlap, the last one wins."""
        async with self._apply_lock:
            self._error = None
            n_prod, n_cons, cleaner = self._targets()
            if not any(self._enabled.values()):
                await self.pool.stop()
            elif not self.pool.running:
                changes = {"general.n_prod": n_prod, "general.n_cons": n_cons}
                self.pool.config = self.pool.config.replace(**changes)
                self.pool.run_cleaner = cleaner
                await self.pool.start()
            else:
                await self.pool.scale(n_prod=n_prod, n_cons=n_cons, cleaner=cleaner)
        self._show_states()

    def _targets(self) -> tuple[int, int, bool]:
        n_prod = self.w.sliders["producer"].value if self._enabled["producer"] else 0
        n_cons = self.w.sliders["consumer"].value if self._enabled["consumer"] else 0
        return n_prod, n_cons, self._enabled["cleaner"]

    def _initial_counts(self) -> dict[str, int]:
        general = self.pool.config.general
        return {
            "producer": len(self.pool.producers) or general.n_prod,
            "consumer": len(self.pool.consumers) or general.n_cons,
        }

    # Widgets.

    def _connect(self) -> None:
        self.w.start_all.on_click(lambda _: self._from_widget(self.start))
        self.w.stop_all.on_click(lambda _: self._from_widget(self.stop))
        self.w.requeue.on_click(lambda _: self._from_widget(self._requeue_failed))
        for kind in WORKER_KINDS:
            self.w.starts[kind].on_click(lambda _, kind=kind: self._from_widget(self.start, kind))
            self.w.stops[kind].on_click(lambda _, kind=kind: self._from_widget(self.stop, kind))
            self.w.pauses[kind].observe(lambda change, kind=kind: self._on_pause_toggle(kind, change), "value")
        for slider in self.w.sliders.values():
            slider.observe(lambda _: self._from_widget(self._apply_if_running), "value")

    def _from_widget(self, action: Callable[..., Any], *args: Any) -> None:
        """Run a widget's action on the kernel's loop, from whichever thread the widget event came."""
        def run() -> None:
            result = action(*args)
            if asyncio.iscoroutine(result):
                self.run_in_background(result, name=f"persistentq panel {action.__name__}")

        if threading.get_ident() == self._loop_thread:
            self._guard(run)
        else:
            self.loop.call_soon_threadsafe(self._guard, run)

    def _guard(self, function: Callable[[], None]) -> None:
        try:
            function()
        except Exception as exc:
            self._record_error(exc, "a panel control failed")

    async def _apply_if_running(self) -> None:
        if self.pool.running:
            await self._apply()

    async def _requeue_failed(self) -> None:
        from .failures import requeue_failed

        result = await asyncio.to_thread(requeue_failed, self.pool)
        log.info("requeued %d failed jobs, %d rejected", len(result.requeued), len(result.rejected))
        for job_id, reason in result.rejected.items():
            log.warning("job %d was not requeued: %s", job_id, reason)

    def _on_pause_toggle(self, kind: str, change: dict[str, Any]) -> None:
        if change["new"] == (kind in self._paused_kinds()):
            return
        self._guard(lambda: self.pause(kind) if change["new"] else self.resume(kind))

    def _paused_kinds(self) -> set[str]:
        return set(self.pool.paused_kinds)

    def _show_pause_buttons(self) -> None:
        paused = self._paused_kinds()
        for kind, button in self.w.pauses.items():
            button.value = kind in paused
            button.description = "Resume" if kind in paused else "Pause"

    def _show_states(self) -> None:
        states = {kind: kind_state(self.pool, kind) for kind in WORKER_KINDS}
        for kind, state in states.items():
            _show_state(self.w.states[kind], state)
        if self._error is not None:
            overall = "error"
        elif "error" in states.values():
            overall = "error"
        elif not self.pool.running:
            overall = "stopped"
        elif all(state in ("paused", "stopped") for state in states.values()):
            overall = "paused"
        else:
            overall = "running"
        _show_state(self.w.state, overall)
        self._show_pause_buttons()

    # Background tasks.

    async def _refresh_forever(self) -> None:
        last_error = None
        while True:
            try:
                await self.refresh()
                last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Logged once per distinct error, so a broken store does not flood the log each second.
                if repr(exc) != last_error:
                    self._record_error(exc, "refreshing the panel failed")
                    last_error = repr(exc)
                self.log_handler.flush_to(self.w.log)
            await asyncio.sleep(self.refresh_s)

    def _on_refresh_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._record_error(task.exception(), "the panel stopped refreshing")
            self.log_handler.flush_to(self.w.log)

    def _on_action_done(self, task: asyncio.Task) -> None:
        self._actions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._record_error(task.exception(), f"background task {task.get_name()} failed")
            self._show_states()
            self.log_handler.flush_to(self.w.log)

    def _record_error(self, exc: BaseException, context: str) -> None:
        self._error = f"{type(exc).__name__}: {exc}"
        log.error("%s: %s", context, self._error, exc_info=(type(exc), exc, exc.__traceback__))


def _show_state(button: Any, state: str) -> None:
    button.description = state
    button.button_style = STATE_STYLES[state]
    for name in STATE_STYLES:
        button.remove_class(f"pq-is-{name}")
    button.add_class(f"pq-is-{state}")


def _has_workers(pool: WorkerPool, kind: str) -> bool:
    if not pool.running:
        return False
    if kind == "cleaner":
        return pool.cleaner is not None
    return bool(pool.producers if kind == "producer" else pool.consumers)


def _kinds(kind: str | None) -> tuple[str, ...]:
    if kind is None:
        return WORKER_KINDS
    if kind not in WORKER_KINDS:
        raise ValueError(f"kind must be one of {', '.join(WORKER_KINDS)} or None, got {kind!r}")
    return (kind,)


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable

