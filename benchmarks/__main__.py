"""Command line: python -m benchmarks [--quick] [--repeat N] [--output DIR] ...

Runs every measure on persistentq, the raw sqlite3 loop, the peers and, when its
server accepts connections, PostgreSQL's raw loop and persistentq on PostgreSQL; prints
progress while it runs, then the table of medians, ranges and ratios, and the
targets. With --output it also writes results.json, table.md and throughput.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
from importlib import metadata
from pathlib import Path

from . import postgres_server
from .designs import DESIGNS, REFERENCES, STORE_DESIGNS
from .measures import MEASURES
from .runner import RunOptions, run
from .summary import check_problems, markdown_side_by_side, markdown_table, markdown_targets, plot

PACKAGES = ("persistentq", "persist-queue", "litequeue", "localqueue", "huey", "pandas", "psycopg")


def parse_args(argv: list[str]) -> RunOptions:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 1 repetition unless --repeat is given; a smoke test, not a figure to quote")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions of every measure (default 5, 1 with --quick)")
    parser.add_argument("--synchronous", choices=("normal", "full"), default="normal",
                        help="durability for every design that lets it be set: SQLite's synchronous, and for "
                             "PostgreSQL whether claims and acks wait for the WAL flush (default normal)")
    parser.add_argument("--measure", action="append", default=[], choices=[m.key for m in MEASURES],
                        help="run only this measure; repeat the option for several")
    parser.add_argument("--design", action="append", default=[], choices=list(DESIGNS),
                        help="run only this design; repeat the option for several")
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder for the databases, on the disk to measure (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the databases after the run")
    parser.add_argument("--output", type=Path, default=None,
                        help="folder to write results.json, table.md and throughput.png to")
    args = parser.parse_args(argv)
    repeat = args.repeat
    if repeat is None:
        repeat = 1 if args.quick else 5
    if repeat < 1:
        parser.error(f"--repeat must be 1 or more, got {repeat}")
    return RunOptions(
        repeat=repeat,
        quick=args.quick,
        synchronous=args.synchronous,
        measures=tuple(args.measure),
        designs=tuple(args.design),
        folder=args.dir,
        keep=args.keep,
    ), args.output


def machine() -> dict[str, str]:
    """Return what the figures depend on: CPU, cores, OS, Python, SQLite and package versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "load average": " ".join(f"{load:.2f}" for load in os.getloadavg()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version(),
        **versions,
    }


def postgres_version() -> str:
    """Return the version of the benchmark's PostgreSQL server, or why it is not available."""
    if DESIGNS["raw-pg"].unavailable_reason() is not None:
        return "not available"
    import psycopg

    with psycopg.connect(postgres_server.server_url(), connect_timeout=postgres_server.CONNECT_TIMEOUT_S) as conn:
        return conn.info.parameter_status("server_version") or "unknown"


def main(argv: list[str] | None = None) -> int:
    options, output = parse_args(sys.argv[1:] if argv is None else argv)
    facts = machine()
    print("machine: " + ", ".join(f"{key} {value}" for key, value in facts.items()), flush=True)
    try:
        results = run(options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table, goals, side_by_side = markdown_table(results), markdown_targets(results), markdown_side_by_side(results)
    print(f"\nfinished in {results.seconds:.0f} s, {options.repeat} repetitions\n")
    print(table)
    print()
    print(side_by_side)
    print()
    print(goals)
    for design, reason in results.skipped.items():
        print(f"NOT RUN: {design}: {reason}")
    for line in results.failures:
        print(f"FAILED: {line}")
    # A peer that delivers a job twice is a finding about the peer, and a
    # failure of the run only for a raw loop or a persistentq store.
    own_problems = []
    for design, line in check_problems(results):
        peer = design not in (*REFERENCES, *STORE_DESIGNS)
        print(f"{'FINDING' if peer else 'PROBLEM'}: {line}")
        if not peer:
            own_problems.append(line)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        data = {"machine": facts, **results.to_json()}
        (output / "results.json").write_text(json.dumps(data, indent=1, default=str))
        (output / "table.md").write_text(f"{table}\n\n{side_by_side}\n\n{goals}\n")
        plot(results, output / "throughput.png")
        print(f"\nwrote {output / 'results.json'}, table.md and throughput.png")
    return 1 if results.failures or own_problems else 0


if __name__ == "__main__":
    sys.exit(main())
