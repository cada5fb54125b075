"""Notebooks executed top to bottom in a real Jupyter kernel with nbclient."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def execute(notebook: nbformat.NotebookNode, folder: Path, timeout_s: int = 120) -> nbformat.NotebookNode:
    """Run every cell of `notebook` in a fresh python3 kernel whose working directory is `folder`.

    nbclient raises CellExecutionError, with the cell and its traceback, when a cell raises.
    """
    client = NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    client.execute()
    return notebook


def outputs_of(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def done_jobs(folder: Path) -> int:
    """Return the done jobs in every SQLite queue file under `folder`."""
    total = 0
    for database in folder.rglob("*.sqlite3"):
        with sqlite3.connect(database) as conn:
            total += conn.execute("SELECT count(*) FROM jobs WHERE state = 'done'").fetchone()[0]
    return total


def test_notebooks_folder_is_not_empty() -> None:
    """The demo notebook is among the notebooks that the next test runs."""
    assert ROOT / "notebooks" / "demo.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_runs_clean(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each notebook runs without an error in any cell and gets jobs done."""
    monkeypatch.setenv("PERSISTENTQ_DEMO_FAST", "1")
    stored = nbformat.read(path, as_version=4)
    assert [output for output in outputs_of(stored) if output.output_type == "error"] == [], "stored with errors"
    shutil.copy(path, tmp_path / path.name)

    notebook = execute(nbformat.read(tmp_path / path.name, as_version=4), tmp_path)

    outputs = outputs_of(notebook)
    assert [output for output in outputs if output.output_type == "error"] == []
    stderr = "".join(output.text for output in outputs if output.get("name") == "stderr")
    assert "Traceback" not in stderr
    assert done_jobs(tmp_path) > 0
    if path.name == "demo.ipynb":
        assert any(WIDGET_MIME in output.get("data", {}) for output in outputs), "no panel displayed"
        assert any("image/png" in output.get("data", {}) for output in outputs), "no plot drawn"


def test_demo_rerun_with_leftovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Running the demo a second time on the queue the first run left behind works."""
    monkeypatch.setenv("PERSISTENTQ_DEMO_FAST", "1")
    shutil.copy(ROOT / "notebooks" / "demo.ipynb", tmp_path)
    execute(nbformat.read(tmp_path / "demo.ipynb", as_version=4), tmp_path)
    first = done_jobs(tmp_path)

    execute(nbformat.read(tmp_path / "demo.ipynb", as_version=4), tmp_path)

    assert done_jobs(tmp_path) > first


SETUP = """
import json, time
import persistentq
from persistentq.notebook import show_panel, start_pool, wait_until_empty
config = persistentq.config_from_dict({{
    "general": {{"primary_path": ".", "n_prod": 0, "n_cons": {n_cons}, "shutdown_grace": 1}},
    "consumer": {{"interval_min": 0, "interval_max": 0, "poll_interval": 0.05,
                 "n_time": 1, "n_tries": 2, "retry_backoff": 0}},
}})
"""


def test_notebook_def_stopped_at_n_time(tmp_path: Path) -> None:
    """A plain def defined in a kernel cell that sleeps past n_time is killed, and each attempt counts as failed."""
    notebook = new_notebook(cells=[
        new_code_cell(SETUP.format(n_cons=1)),
        new_code_cell("def sleepy(payload):\n    time.sleep(60)\n    return 'woke up'"),
        new_code_cell(
            "pool = await start_pool(config, consumer_function=sleepy)\n"
            "job_id = pool.store.put('nap')\n"
            "started = time.monotonic()\n"
            "wait_until_empty(config, timeout_s=30)\n"
            "elapsed = time.monotonic() - started\n"
            "job = pool.store.get(job_id)\n"
            "await pool.stop()\n"
            "print(json.dumps({'state': job.state.value, 'attempts': job.attempts,"
            " 'error': job.last_error, 'elapsed': elapsed}))"
        ),
    ])

    execute(notebook, tmp_path)

    report = json.loads(notebook.cells[-1].outputs[-1].text)
    assert report["state"] == "failed"
    assert report["attempts"] == 2
    assert "sleepy timed out after 1 s, the n_time limit" in report["error"]
    assert "was killed" in report["error"]
    assert report["elapsed"] < 20  # two 1 s attempts, far from the 60 s sleep


def test_rerun_panel_cell_keeps_n_cons(tmp_path: Path) -> None:
    """Running the panel cell three times in one kernel leaves exactly n_cons consumers running."""
    panel_cell = (
        "async def echo(payload):\n    return payload\n"
        "panel = show_panel(config, consumer_function=echo)\n"
        "await panel.start()"
    )
    notebook = new_notebook(cells=[
        new_code_cell(SETUP.format(n_cons=3)),
        new_code_cell(panel_cell),
        new_code_cell(panel_cell),
        new_code_cell(panel_cell),
        new_code_cell(
            "import asyncio, os\n"
            "await asyncio.sleep(0.5)\n"
            "running = [w for w in panel.pool.store.workers()\n"
            "           if w.kind == 'consumer' and w.state == 'running' and w.pid == os.getpid()]\n"
            "tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith('consumer-') and not t.done()"
            " and 'heartbeat' not in t.get_name()]\n"
            "print(json.dumps({'pool': len(panel.pool.consumers), 'registered': len(running),"
            " 'tasks': len(tasks)}))\n"
            "await panel.stop()"
        ),
    ])

    execute(notebook, tmp_path)

    report = json.loads(notebook.cells[-1].outputs[-1].text)
    assert report == {"pool": 3, "registered": 3, "tasks": 3}
