"""The control panel's widgets and layout, with a stable CSS class on each (`pq-...`) to find it by."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from ..pool import WORKER_KINDS, WorkerPool
from ..store.base import JobState

SLIDER_MAX = 16
KIND_TITLES = {"producer": "Producers", "consumer": "Consumers", "cleaner": "Cleaner"}
STYLE = """<style>
.pq-panel .pq-number { font-weight: bold; font-size: 1.2em; }
.pq-panel .pq-worker-table td, .pq-panel .pq-worker-table th { padding: 0 8px; text-align: left; }
.pq-panel .pq-worker-lost td { color: #c62828; }
.pq-panel .pq-worker-stopped td { color: #888; }
</style>"""


@dataclass
class PanelWidgets:
    """Every widget of one panel. The dicts are keyed by worker kind or by job state."""

    root: Any
    state: Any
    start_all: Any
    stop_all: Any
    requeue: Any
    starts: dict[str, Any]
    stops: dict[str, Any]
    pauses: dict[str, Any]
    states: dict[str, Any]
    sliders: dict[str, Any]
    counts: dict[JobState, Any]
    rate: Any
    workers: Any
    log: Any


def build_widgets(pool: WorkerPool, counts: dict[str, int]) -> PanelWidgets:
    """Build the panel's widgets for `pool`, sliders set to `counts` of producers and consumers."""
    state = _classed(widgets.Button(description="stopped", disabled=True, layout=_width(100)), "pq-state")
    start_all = _classed(widgets.Button(description="Start all", icon="play", button_style="success"), "pq-start-all")
    stop_all = _classed(widgets.Button(description="Stop all", icon="stop", button_style="danger"), "pq-stop-all")
    requeue = _classed(widgets.Button(description="Requeue failed", icon="redo"), "pq-requeue-failed")

    starts, stops, pauses, states, sliders = {}, {}, {}, {}, {}
    rows = []
    for kind in WORKER_KINDS:
        starts[kind] = _classed(widgets.Button(description="Start", icon="play", layout=_width(90)), f"pq-start-{kind}")
        stops[kind] = _classed(widgets.Button(description="Stop", icon="stop", layout=_width(90)), f"pq-stop-{kind}")
        pauses[kind] = _classed(widgets.ToggleButton(description="Pause", icon="pause", layout=_width(100)),
                                f"pq-pause-{kind}")
        states[kind] = _classed(widgets.Button(description="stopped", disabled=True, layout=_width(100)),
                                f"pq-state-{kind}")
        row = [widgets.HTML(f"<b>{KIND_TITLES[kind]}</b>", layout=widgets.Layout(width="90px")),
               starts[kind], stops[kind], pauses[kind], states[kind]]
        if kind != "cleaner":
            sliders[kind] = _classed(
                widgets.IntSlider(value=counts[kind], min=0, max=max(SLIDER_MAX, counts[kind]),
                                  description="count", continuous_update=False),
                f"pq-slider-{kind}",
            )
            row.append(sliders[kind])
        rows.append(widgets.HBox(row))

    spaced = widgets.Layout(margin="0 20px 0 0")
    job_counts = {
        job_state: _classed(widgets.HTML(f"<span class='pq-number'>0</span> {job_state.value}", layout=spaced),
                            f"pq-count-{job_state.value}")
        for job_state in JobState
    }
    rate = _classed(widgets.HTML("<span class='pq-number'>0.0</span> jobs/s finished"), "pq-rate")
    workers = _classed(widgets.HTML("no worker registered yet"), "pq-workers")
    log = _classed(widgets.Output(layout=widgets.Layout(max_height="220px", overflow="auto",
                                                       border="1px solid #ddd")), "pq-log")

    where = _where(pool)
    title = (f"{STYLE}<b>persistentq</b>: queue <code>{html.escape(pool.config.general.queue)}</code> in "
             f"<code title='{html.escape(where, quote=True)}'>{html.escape(_short(where))}</code>")
    root = widgets.VBox([
        widgets.HBox([widgets.HTML(title), state]),
        widgets.HBox([start_all, stop_all, requeue]),
        *rows,
        widgets.HBox([*job_counts.values(), rate]),
        widgets.HTML("<b>Workers</b>"), workers,
        widgets.HTML("<b>Log</b>"), log,
    ])
    root.add_class("pq-panel")
    return PanelWidgets(root, state, start_all, stop_all, requeue, starts, stops, pauses, states, sliders,
                        job_counts, rate, workers, log)


def _width(pixels: int) -> Any:
    return widgets.Layout(width=f"{pixels}px")


def _short(path: str) -> str:
    """Return the last two parts of a path, enough to tell queues apart. The tooltip shows the whole path."""
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else path


def _classed(widget: Any, css_class: str) -> Any:
    widget.add_class(css_class)
    return widget


def _where(pool: WorkerPool) -> str:
    path = pool.config.database_path
    return str(path) if path is not None else "PostgreSQL"
