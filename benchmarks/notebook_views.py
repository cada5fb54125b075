"""Time the notebook's DataFrame views on a queue of a million jobs.

    python benchmarks/notebook_views.py [--jobs 1000000] [--repeat 3] [--path DIR]

Builds (or reuses) a SQLite queue under DIR with the given number of jobs:
70% done, 10% failed, 20% queued, created over the last 24 hours, with a
finish time one second after creation. Then it reads each view `--repeat`
times and prints the median time in milliseconds and the rows returned.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from persistentq.notebook import counts_view, jobs_view, throughput_view
from persistentq.store.sqlite import PersistentQSQLite

DAY_S = 24 * 3600


def build(path: Path, jobs: int) -> PersistentQSQLite:
    """Return a store at `path` with `jobs` jobs, filling it first when it contains fewer."""
    store = PersistentQSQLite(path)
    have = sum(store.counts().values())
    if have >= jobs:
        return store
    chunk = 100_000
    for start in range(have, jobs, chunk):
        store.put_many([f"report-{number:07d}.csv" for number in range(start, min(start + chunk, jobs))])
    # Spread creation over the last day and finish most jobs, in one statement per state.
    now = time.time()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE jobs SET created_at = ? - (? - id) * ? / ?", (now, jobs, DAY_S, jobs))
        conn.execute("UPDATE jobs SET state = 'done', attempts = 1, finished_at = created_at + 1, "
                     "result = 'ok' WHERE id % 10 < 7")
        conn.execute("UPDATE jobs SET state = 'failed', attempts = 3, finished_at = created_at + 1, "
                     "last_error = 'ValueError: bad row' WHERE id % 10 = 7")
    return store


def median_ms(call, repeat: int) -> tuple[float, int]:
    """Return the median wall time of `call()` in ms and the length of its result."""
    times, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
        size = len(result)
    return statistics.median(times), size


# The writer runs in its own process, as a worker would, so that it shares no GIL with the reads.
WRITER = """
import json, sys, time
from persistentq.store.sqlite import PersistentQSQLite
store = PersistentQSQLite(sys.argv[1])
latencies, deadline = [], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    started = time.perf_counter()
    store.put("written during reads", queue="writer")
    latencies.append((time.perf_counter() - started) * 1000)
print(json.dumps(latencies))
"""


def put_latencies_ms(path: Path, seconds: float, reads=None) -> list[float]:
    """Put one job at a time from another process for `seconds`, and return each put's time in ms.

    With `reads`, this process runs them over and over meanwhile.
    """
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(seconds)], stdout=subprocess.PIPE)
    deadline = time.monotonic() + seconds + 0.5
    while time.monotonic() < deadline and writer.poll() is None:
        for read in reads or []:
            read()
        if not reads:
            time.sleep(0.05)
    output, _ = writer.communicate()
    return json.loads(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the queue")
    parser.add_argument("--repeat", type=int, default=3, help="reads per view; the median is printed")
    parser.add_argument("--path", type=Path, default=None, help="folder of the queue file (default: a temp dir)")
    args = parser.parse_args()

    folder = args.path or Path(tempfile.mkdtemp(prefix="pq-views-"))
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    store = build(folder / "queue.sqlite3", args.jobs)
    print(f"queue of {sum(store.counts().values()):,} jobs ready in {time.perf_counter() - started:.1f} s")

    views = {
        "jobs_view(limit=10_000)": lambda: jobs_view(store, limit=10_000),
        "jobs_view(state='done', limit=10_000)": lambda: jobs_view(store, state="done", limit=10_000),
        "jobs_view(state='failed', since=6 h ago, limit=10_000)":
            lambda: jobs_view(store, state="failed", since=pd.Timedelta("6h"), limit=10_000),
        "jobs_view(search='-09', limit=10_000)": lambda: jobs_view(store, search="-09", limit=10_000),
        # Only the 10 oldest jobs match, so this reads the whole table.
        "jobs_view(search='report-000001', limit=10_000)":
            lambda: jobs_view(store, search="report-000001", limit=10_000),
        "counts_view()": lambda: counts_view(store),
        "throughput_view(interval_s=60)": lambda: throughput_view(store, interval_s=60),
        "throughput_view(interval_s=60, since=1 h ago)":
            lambda: throughput_view(store, interval_s=60, since=pd.Timedelta("1h")),
    }
    print(f"| view | median ms of {args.repeat} | rows |")
    print("|---|---:|---:|")
    for name, call in views.items():
        ms, rows = median_ms(call, args.repeat)
        shown = f"{ms:.0f}" if ms >= 10 else f"{ms:.2f}"
        print(f"| `{name}` | {shown} | {rows:,} |")

    # A writer putting jobs while the views read: WAL readers should not hold it up.
    for label, reads in (("no reads", None), ("views reading", list(views.values()))):
        latencies = put_latencies_ms(folder / "queue.sqlite3", 5.0, reads)
        print(f"put while {label}: {len(latencies):,} puts in 5 s, median {statistics.median(latencies):.2f} ms, "
              f"max {max(latencies):.1f} ms")
    store.close()


if __name__ == "__main__":
    main()
