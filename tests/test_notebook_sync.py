"""Synchronous notebook helpers: nest-asyncio only on first use, workers progressing between calls.

nest-asyncio patches asyncio for the whole process, so each case runs in a
fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def run_python(code: str, cwd: Path) -> str:
    """Run `code` in a fresh interpreter in `cwd` and return its stdout; fail on a non-zero exit."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_import_applies_no_nesting(tmp_path: Path) -> None:
    """Importing every notebook module leaves asyncio and new loops unpatched."""
    out = run_python("""
        import asyncio
        import persistentq.notebook as nb
        from persistentq.notebook import panel, views, sync, session, failures
        for name in nb.__all__:
            getattr(nb, name)
        loop = asyncio.new_event_loop()
        print(hasattr(asyncio, "_nest_patched"), hasattr(type(loop), "_nest_patched"))
    """, tmp_path)
    assert out.split() == ["False", "False"]


def test_run_for_nests_on_first_use(tmp_path: Path) -> None:
    """run_for inside a running loop applies nest-asyncio once, and background tasks run meanwhile."""
    out = run_python("""
        import asyncio
        from persistentq.notebook.sync import nesting_applied, run_for

        async def cell():
            loop = asyncio.get_running_loop()
            ticks = []

            async def tick():
                while True:
                    ticks.append(1)
                    await asyncio.sleep(0.01)

            task = loop.create_task(tick())
            print(nesting_applied(loop))
            run_for(0.3)                     # a plain call, as from a synchronous cell
            print(nesting_applied(loop), len(ticks) > 5)
            run_for(0)
            task.cancel()

        asyncio.run(cell())
    """, tmp_path)
    assert out.split() == ["False", "True", "True"]


def test_helpers_without_running_loop(tmp_path: Path) -> None:
    """Outside any loop, workers started with run_sync keep working across helper calls."""
    out = run_python("""
        import asyncio
        from persistentq import config_from_dict
        from persistentq.notebook import counts_view, run_for, run_sync, start_pool, wait_until_empty

        async def double(payload):
            return str(2 * int(payload))

        config = config_from_dict({
            "general": {"primary_path": ".", "n_prod": 0, "n_cons": 2, "shutdown_grace": 1},
            "consumer": {"interval_min": 0, "interval_max": 0, "poll_interval": 0.05},
        })
        pool = run_sync(start_pool(config, consumer_function=double))
        pool.store.put_many([str(i) for i in range(20)])
        run_for(0.1)
        counts = wait_until_empty(config, timeout_s=20)
        print(counts_view(config)["done"], pool.store.get(20).result)
        run_sync(pool.stop())
        print(hasattr(asyncio, "_nest_patched"))
    """, tmp_path)
    assert out.split() == ["20", "38", "False"]


def test_wait_until_empty_times_out(tmp_path: Path) -> None:
    """With no consumer, wait_until_empty raises TimeoutError naming the counts and the fix; jobs stay."""
    out = run_python("""
        from persistentq import config_from_dict
        from persistentq.notebook import counts_view, wait_until_empty
        from persistentq.store.factory import open_store

        config = config_from_dict({"general": {"primary_path": "."}})
        store = open_store(config)
        store.put_many(["a", "b"])
        store.close()
        try:
            wait_until_empty(config, timeout_s=0.2, poll_s=0.05)
        except TimeoutError as exc:
            print(exc)
        print("queued", counts_view(config)["queued"])
        try:
            wait_until_empty(config, timeout_s=-1)
        except ValueError as exc:
            print(exc)
    """, tmp_path)
    assert "queue 'default' still has 2 queued and 0 running jobs after 0.2 s; start consumers" in out
    assert "queued 2" in out
    assert "timeout_s must be a finite number of seconds >= 0, got -1" in out
