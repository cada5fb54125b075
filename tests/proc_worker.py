"""A worker process for the process tests: a WorkerPool of consumers, or a producer that puts jobs.

    python tests/proc_worker.py consume --database queue.sqlite3 --function record \\
        --set general.n_cons=8 --ready ready-1 --go go
    python tests/proc_worker.py produce --database queue.sqlite3 --count 20000 --batch 50
    python tests/proc_worker.py consume --database postgresql://postgres@127.0.0.1/db \\
        --primary-path machine-1 --function record --set general.queue=q1

--database is a SQLite file or a PostgreSQL URL; with a URL, --primary-path
names the folder the consumer's files live in, as on a machine of its own.

Given --ready and --go, both commands open the store, create the --ready file,
and start work only once the test creates the --go file: a barrier across
processes. SIGTERM stops a consumer pool gracefully, and it then exits 0.

The consumer functions below write their markers and logs in the folder named
by the PROC_WORKER_DIR environment variable. `basic run` can load them as
`proc_worker:<name>` when this folder is on PYTHONPATH. The tests also import
`pids_working_in` from here to find processes left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

import yaml

from persistentq import PersistentQPostgres, PersistentQSQLite, PersistentQStore, WorkerPool, config_from_dict

DIR_VARIABLE = "PROC_WORKER_DIR"
BLOCK_S = 60.0
BARRIER_TIMEOUT_S = 120.0
BARRIER_POLL_S = 0.01
EXIT_NO_GO = 3


# Consumer functions.


def _work_dir() -> Path:
    return Path(os.environ[DIR_VARIABLE])


@functools.cache
def _log_file(name: str) -> TextIO:
    # Line-buffered and in append mode: each line reaches the file when written,
    # so a killed process loses no line it wrote.
    return open(_work_dir() / name, "a", buffering=1, encoding="utf-8")


def _append_line(name: str, line: str) -> None:
    _log_file(name).write(line + "\n")


async def block(payload: str) -> str:
    """Create the marker file `started-<payload>`, then sleep BLOCK_S seconds, long enough to be killed."""
    (_work_dir() / f"started-{payload}").touch()
    await asyncio.sleep(BLOCK_S)
    return "not killed"


async def record(payload: str) -> str:
    """Sleep about a millisecond, then append the payload to `processed-<pid>.log`."""
    await asyncio.sleep(0.001)
    _append_line(f"processed-{os.getpid()}.log", payload)
    return payload


async def nap(payload: str) -> str:
    """Sleep the seconds the payload starts with ("0.5 job-3"), logging its start and its end.

    The payload goes to `started.log` before the sleep and to `finished.log` after it.
    """
    seconds = float(payload.split()[0])
    _append_line("started.log", payload)
    await asyncio.sleep(seconds)
    _append_line("finished.log", payload)
    return "slept"


def nap_sync(payload: str) -> str:
    """Do what `nap` does in a plain def, which the consumer runs in a child process."""
    seconds = float(payload.split()[0])
    _append_line("started.log", payload)
    time.sleep(seconds)
    _append_line("finished.log", payload)
    return "slept"


FUNCTIONS = {"block": block, "record": record, "nap": nap, "nap_sync": nap_sync}


# The barrier.


def pass_barrier(ready: Path | None, go: Path | None) -> bool:
    """Create `ready`, then wait for `go`. Return False when `go` is still missing after BARRIER_TIMEOUT_S."""
    if ready is None or go is None:
        return True
    ready.touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while not go.exists():
        if time.monotonic() > deadline:
            print(f"proc_worker: timed out after {BARRIER_TIMEOUT_S:g} s waiting for {go}", file=sys.stderr)
            return False
        time.sleep(BARRIER_POLL_S)
    return True


# Leftover processes.

# pids_working_in reads /proc, so it works on Linux only.
HAVE_PROC = Path("/proc/self/cwd").exists()


def pids_working_in(folder: Path) -> list[int]:
    """Return the ids of the processes whose current directory is `folder`, as /proc shows them on Linux.

    The children that run plain defs take over their parent's current directory,
    so after `basic run` with cwd `folder` exits, none should be left.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cwd").resolve() == folder.resolve():
                pids.append(int(entry.name))
        except OSError:
            continue  # The process ended, or belongs to another user.
    return pids


# Commands.


def consume(args: argparse.Namespace) -> int:
    """Run a WorkerPool with no producer until SIGTERM, then stop it gracefully."""
    config = config_from_dict(_settings(args))
    pool = WorkerPool(config, consumer_function=FUNCTIONS[args.function])
    pool.counts()  # Opens the store and creates the schema before the barrier.
    if not pass_barrier(args.ready, args.go):
        pool.store.close()
        return EXIT_NO_GO
    asyncio.run(_run_until_sigterm(pool))
    return 0


async def _run_until_sigterm(pool: WorkerPool) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await pool.run(stop=stop)


def _settings(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """Return the pool's config: no waits, no producer, one consumer, changed by each --set."""
    if is_url(args.database):
        if args.primary_path is None:
            raise SystemExit("proc_worker: --primary-path is required with a PostgreSQL --database")
        primary_path, database = args.primary_path.resolve(), args.database
    else:
        database_path = Path(args.database).resolve()
        primary_path, database = database_path.parent, database_path.name
    settings: dict[str, dict[str, object]] = {
        "consumer": {"interval_min": 0, "interval_max": 0, "poll_interval": 0.05},
        "general": {
            "primary_path": str(primary_path),
            "database": database,
            "n_prod": 0,
            "n_cons": 1,
        },
    }
    for assignment in args.set:
        key, equals, value = assignment.partition("=")
        section, dot, name = key.partition(".")
        if not equals or not dot:
            raise SystemExit(f"proc_worker: --set takes section.key=value, got {assignment!r}")
        settings.setdefault(section, {})[name] = yaml.safe_load(value)
    return settings


def produce(args: argparse.Namespace) -> int:
    """Put `--count` jobs with payloads `<prefix><i>`, in batches of `--batch` (1: one put per job)."""
    with open_database(args.database) as store:
        if not pass_barrier(args.ready, args.go):
            return EXIT_NO_GO
        payloads = [f"{args.prefix}{i}" for i in range(args.count)]
        for start in range(0, len(payloads), args.batch):
            batch = payloads[start : start + args.batch]
            if len(batch) == 1:
                store.put(batch[0], queue=args.queue)
            else:
                store.put_many(batch, queue=args.queue)
    return 0


def is_url(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


def open_database(database: str) -> PersistentQStore:
    """Open a SQLite file, or a PostgreSQL URL in its default schema."""
    return PersistentQPostgres(database) if is_url(database) else PersistentQSQLite(database)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("consume", "produce"):
        command = commands.add_parser(name)
        command.add_argument("--database", required=True, help="SQLite file or PostgreSQL URL of the queue")
        command.add_argument("--ready", type=Path, help="file to create once ready to start")
        command.add_argument("--go", type=Path, help="file to wait for before starting")

    consumer = commands.choices["consume"]
    consumer.add_argument("--function", choices=sorted(FUNCTIONS), required=True)
    consumer.add_argument("--primary-path", type=Path, help="folder of the files; required with a URL")
    consumer.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                          help="a config value, parsed as YAML; repeat for several")

    producer = commands.choices["produce"]
    producer.add_argument("--count", type=int, required=True, help="number of jobs to put")
    producer.add_argument("--batch", type=int, default=1, help="jobs per put_many; 1 puts each job alone")
    producer.add_argument("--prefix", default="job-", help="payloads are this prefix and a number")
    producer.add_argument("--queue", default="default", help="queue to put the jobs on")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    args = parse_args(argv)
    return consume(args) if args.command == "consume" else produce(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
