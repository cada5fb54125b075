"""persistentq in Jupyter: a control panel, DataFrame views of the queue, and helpers for plain cells.

    from persistentq.notebook import show_panel, jobs_view, counts_view, plot_throughput

    panel = show_panel("config.yaml", consumer_function=work)   # displays the panel
    await panel.start()
    jobs_view(panel.pool, state="failed")

Importing this package changes no event loop: nest-asyncio is applied by the
synchronous helpers (`run_for`, `wait_until_empty`, `run_sync`) on their
first call in a running loop, and only then. The views and helpers work
outside Jupyter too; only the panel needs ipywidgets and a running loop.
"""

import importlib
from typing import Any

_EXPORTS = {
    "ControlPanel": "persistentq.notebook.panel",
    "counts_view": "persistentq.notebook.views",
    "failed_jobs": "persistentq.notebook.failures",
    "jobs_view": "persistentq.notebook.views",
    "plot_throughput": "persistentq.notebook.views",
    "pool_for": "persistentq.notebook.session",
    "requeue_failed": "persistentq.notebook.failures",
    "run_for": "persistentq.notebook.sync",
    "run_sync": "persistentq.notebook.sync",
    "show_panel": "persistentq.notebook.panel",
    "start_pool": "persistentq.notebook.session",
    "stop_pools": "persistentq.notebook.session",
    "throughput_view": "persistentq.notebook.views",
    "until_empty": "persistentq.notebook.sync",
    "wait_until_empty": "persistentq.notebook.sync",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Imported on first use, so the views load without ipywidgets and the panel without matplotlib.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'persistentq.notebook' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
