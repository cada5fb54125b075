"""The `basic` command: run the workers and manage the queue from a terminal.

    basic run --config config.yaml --duration 60
    basic status
    basic jobs --state failed --limit 20
    basic retry --all-failed
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any

import click

from .config import Config, load_config
from .errors import ConfigError, DatabaseUnavailableError, PersistentQError, StoreError
from .pool import WorkerPool
from .signals import install_stop_handlers
from .admin import purge_jobs, requeue_jobs
from .store.base import FINISHED_STATES, Job, JobState, PersistentQStore
from .store.factory import open_store
from .workers.base import HEARTBEAT_S

log = logging.getLogger("persistentq.cli")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
STATE_NAMES = [state.value for state in JobState]
FINISHED_NAMES = [state.value for state in FINISHED_STATES]

MAX_ID = 2**63 - 1
JOB_ID = click.IntRange(min=1, max=MAX_ID)
PRIORITY = click.IntRange(min=-MAX_ID, max=MAX_ID)
STALE_STOPPED_S = 600  # `status` lists stopped workers for this long after they stop


class Seconds(click.ParamType):
    """A finite number of seconds, >= 0 (or > 0 with `positive`)."""

    name = "seconds"

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds < 0 or (self.positive and seconds == 0):
            bound = "> 0" if self.positive else ">= 0"
            self.fail(f"{value!r} must be a finite number of seconds {bound}", param, ctx)
        return seconds


config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Config file. Default: ./config.yaml when present, else built-in defaults.",
)


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn persistentq errors into one line on stderr.

    Exit 2 for a config error or a database that cannot be reached, 1 for the rest.
    """

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ConfigError, DatabaseUnavailableError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except PersistentQError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except UnicodeEncodeError as exc:
            # A shell argument with bytes that are not UTF-8 reaches Python as lone surrogates.
            click.echo(
                f"error: an argument has a character that is not valid Unicode text ({exc.reason} at "
                f"position {exc.start}); pass UTF-8 text",
                err=True,
            )
            sys.exit(2)

    return wrapper


def open_queue(config_path: Path | None, *, create: bool = False) -> tuple[Config, PersistentQStore]:
    """Load the config and open its store, for the management commands.

    Without `create`, a queue database that does not exist yet is an error,
    so a command run from the wrong folder does not report an empty queue.
    """
    config = load_config(config_path)
    return config, open_store(config, create=create)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="persistentq")
def main() -> None:
    """persistentq: a persistent producer/consumer job queue on SQLite or PostgreSQL.

    Producers put jobs, consumers claim them and run a function on each,
    a cleaner removes what failed for good. Every state lives in the queue
    database, so a killed worker loses nothing.
    """


@main.command()
@config_option
@click.option("--duration", type=Seconds(positive=True), default=None,
              metavar="SECONDS", help="Stop after this many seconds. Default: run until Ctrl-C.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Lowest level of log lines shown.")
@handle_errors
def run(config_path: Path | None, duration: float | None, log_level: str) -> None:
    """Run producers, consumers and the cleaner in the foreground.

    Ctrl-C, SIGTERM or SIGHUP stops taking new jobs and lets running jobs finish within
    general.shutdown_grace seconds. Jobs still running then go back to the
    queue. A second Ctrl-C hands them back at once.
    """
    config = load_config(config_path)
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    asyncio.run(_run_pool(config, duration))


async def _run_pool(config: Config, duration_s: float | None) -> None:
    pool = WorkerPool(config)
    stop = asyncio.Event()
    install_stop_handlers(pool, stop)
    queue_place = pool.store if config.database_url is not None else config.general.primary_path
    if config.source is None:
        log.warning("no config file: using the built-in defaults; files go to %s, the queue to %s",
                    config.general.primary_path, queue_place)
    else:
        log.info("config %s; files in %s, the queue in %s", config.source, config.general.primary_path,
                 queue_place)
    await pool.run(duration_s, stop=stop)


@main.command(name="web-app")
@config_option
@click.option("--host", default=None, help="Address to serve on. Default: web.host (127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port. Default: web.port (8000).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Lowest level of log lines shown.")
@handle_errors
def web_app(config_path: Path | None, host: str | None, port: int | None, log_level: str) -> None:
    """Serve the dashboard while producers, consumers and the cleaner run in this process.

    A host other than a loopback address needs web.token or PERSISTENTQ_WEB_TOKEN.
    Ctrl-C stops it as it stops `basic run`.
    """
    from .web.serve import serve_dashboard  # FastAPI loads only for this command

    config = load_config(config_path)
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    serve_dashboard(config, host=host, port=port)


@main.command()
@config_option
@handle_errors
def status(config_path: Path | None) -> None:
    """Show jobs per state and the registered workers."""
    config, store = open_queue(config_path)
    with store:
        counts = store.counts(queue=config.general.queue)
        workers = store.workers()
    click.echo(f"queue {config.general.queue!r} in {store}")
    click.echo(format_table(["state", "jobs"], [[state.value, counts[state]] for state in JobState]))
    click.echo()
    if not workers:
        click.echo("no workers registered")
        return
    now = time.time()
    stale = [w for w in workers if w.state == "stopped" and now - w.heartbeat_at > STALE_STOPPED_S]
    workers = [worker for worker in workers if worker not in stale]
    rows = [
        [
            worker.id, worker.kind,
            "lost" if worker.is_lost(now, HEARTBEAT_S) else worker.state,
            _age(now - worker.heartbeat_at), worker.runs, worker.successes, worker.errors,
        ]
        for worker in workers
    ]
    headers = ["worker", "kind", "state", "heartbeat", "runs", "successes", "errors"]
    if rows:
        click.echo(format_table(headers, rows))
    if stale:
        click.echo(f"and {len(stale)} workers that stopped more than {STALE_STOPPED_S // 60} minutes ago")


@main.command()
@config_option
@click.option("--state", type=click.Choice(STATE_NAMES), default=None, help="Only jobs in this state.")
@click.option("--search", default=None, help="Only jobs whose payload contains this text.")
@click.option("--limit", type=click.IntRange(min=1, max=1_000_000), default=20, show_default=True,
              help="Number of jobs shown, newest first.")
@handle_errors
def jobs(config_path: Path | None, state: str | None, search: str | None, limit: int) -> None:
    """List jobs as a table, newest first."""
    config, store = open_queue(config_path)
    with store:
        found = store.jobs(queue=config.general.queue, state=JobState(state) if state else None,
                           search=search, limit=limit)
    if not found:
        click.echo("no jobs")
        return
    headers = ["id", "state", "attempts", "priority", "created", "payload", "result or error"]
    click.echo(format_table(headers, [_job_row(job) for job in found]))


def _job_row(job: Job) -> list[object]:
    outcome = job.result if job.state == JobState.DONE else job.last_error
    last_line = (outcome or "").strip().splitlines()[-1:] or [""]
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created_at))
    return [job.id, job.state.value, job.attempts, job.priority, created,
            _shorten(job.payload, 40, keep_end=True), _shorten(last_line[0], 60)]


@main.command()
@config_option
@click.argument("payloads", nargs=-1)
@click.option("--stdin", "from_stdin", is_flag=True, help="Also read one payload per line from stdin.")
@click.option("--priority", type=PRIORITY, default=0, show_default=True, help="Higher runs first.")
@click.option("--delay", type=Seconds(), default=0.0, metavar="SECONDS",
              help="Seconds before the job may be claimed.")
@click.option("--unique-key", default=None,
              help="Skip the put while a queued or running job has this key (one payload only).")
@handle_errors
def enqueue(config_path: Path | None, payloads: Sequence[str], from_stdin: bool, priority: int,
            delay: float, unique_key: str | None) -> None:
    """Put jobs on the queue and print their ids."""
    payloads = list(payloads)
    if from_stdin:
        payloads += [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not payloads:
        raise click.UsageError("give at least one PAYLOAD, or --stdin")
    if unique_key is not None and len(payloads) != 1:
        raise click.UsageError(f"--unique-key takes one payload, got {len(payloads)}")
    config, store = open_queue(config_path, create=True)
    queue = config.general.queue
    with store:
        if unique_key is not None:
            started = time.time()
            ids = [store.put(payloads[0], queue=queue, priority=priority, delay_s=delay, unique_key=unique_key)]
            if store.get(ids[0]).created_at < started:
                click.echo(f"job {ids[0]} with key {unique_key!r} is already queued or running; "
                           "nothing added", err=True)
        else:
            ids = store.put_many(payloads, queue=queue, priority=priority, delay_s=delay)
    for job_id in ids:
        click.echo(job_id)


@main.command()
@config_option
@click.argument("job_ids", nargs=-1, type=JOB_ID, required=True)
@handle_errors
def cancel(config_path: Path | None, job_ids: Sequence[int]) -> None:
    """Cancel queued jobs.

    Jobs in other states are left as they are.
    """
    _, store = open_queue(config_path)
    with store:
        try:
            before = {job_id: store.get(job_id).state for job_id in job_ids}
        except PersistentQError as exc:
            raise StoreError(f"{exc}; nothing was cancelled") from exc
        cancelled = store.cancel(job_ids)
    click.echo(f"cancelled {cancelled} of {len(set(job_ids))} jobs")
    skipped = {job_id: state for job_id, state in before.items() if state != JobState.QUEUED}
    for job_id, state in skipped.items():
        click.echo(f"error: job {job_id} is {state}; only queued jobs can be cancelled", err=True)
    if skipped:
        sys.exit(1)


@main.command()
@config_option
@click.argument("job_ids", nargs=-1, type=JOB_ID)
@click.option("--all-failed", is_flag=True, help="Requeue every failed job.")
@handle_errors
def retry(config_path: Path | None, job_ids: Sequence[int], all_failed: bool) -> None:
    """Queue failed or cancelled jobs again.

    Their attempts start again from 0. For file jobs, <name>.failed is renamed
    back; a job whose file the cleaner already removed is rejected.
    """
    if bool(job_ids) == all_failed:
        raise click.UsageError("give JOB_IDS or --all-failed, not both and not neither")
    config, store = open_queue(config_path)
    with store:
        if all_failed:
            job_ids = _all_failed_ids(store, config.general.queue)
        result = requeue_jobs(store, config, job_ids)
    click.echo(f"requeued {len(result.requeued)} jobs")
    for reason in result.rejected.values():
        click.echo(f"error: {reason}", err=True)
    if result.rejected:
        sys.exit(1)


@main.command()
@config_option
@click.option("--state", "states", type=click.Choice(FINISHED_NAMES), multiple=True,
              help="State to purge; repeat for several. Default: done, failed and cancelled.")
@click.option("--older-than", type=Seconds(), default=0.0, metavar="SECONDS",
              show_default=True, help="Only jobs that finished more than this many seconds ago.")
@handle_errors
def purge(config_path: Path | None, states: Sequence[str], older_than: float) -> None:
    """Delete finished jobs from the queue."""
    config, store = open_queue(config_path)
    chosen = [JobState(state) for state in states] or list(FINISHED_STATES)
    with store:
        purged = purge_jobs(store, config, states=chosen, older_than_s=older_than)
    click.echo(f"purged {purged} jobs")


@main.command()
@config_option
@click.option("--from", "source", type=click.Path(dir_okay=False, path_type=Path), required=True,
              metavar="SQLITE_FILE", help="The SQLite queue file to copy from; its jobs stay as they are.")
@click.option("--to", "target", default=None, metavar="URL",
              help="The postgresql:// URL to copy into. Default: general.database of the config, "
                   "or PERSISTENTQ_DATABASE, which must then be such a URL.")
@click.option("--queue", "queues", multiple=True,
              help="Queue to copy; repeat for several. Default: general.queue of the config.")
@click.option("--allow-nonempty", is_flag=True,
              help="Copy into target queues that already have jobs (a repeated migration copies jobs twice).")
@handle_errors
def migrate(config_path: Path | None, source: Path, target: str | None, queues: Sequence[str],
            allow_nonempty: bool) -> None:
    """Copy queued and failed jobs from a SQLite queue file into PostgreSQL.

    Jobs keep their payload, state, attempts, priority, last error and times,
    and get new ids in the same order. Done and cancelled jobs stay behind.
    Stop the workers of the SQLite queue first: a queue with running jobs is
    rejected. Everything is copied in one commit, or nothing is.
    """
    from .migrate import check_target_url, migrate_sqlite
    from .store.postgres import PersistentQPostgres

    config = load_config(config_path)
    url = target or config.database_url
    if url is None:
        raise ConfigError(
            f"no migration target: general.database is {config.general.database!r}, not a PostgreSQL URL; "
            "pass --to postgresql://user@host/database"
        )
    chosen = list(dict.fromkeys(queues)) or [config.general.queue]
    with PersistentQPostgres(check_target_url(url)) as store:
        report = migrate_sqlite(source, store, queues=chosen, allow_nonempty=allow_nonempty)
    for queue, states in report.copied.items():
        counted = ", ".join(f"{count} {state.value}" for state, count in states.items())
        click.echo(f"queue {queue!r}: copied {counted}")
    click.echo(f"copied {report.total} jobs from {source} to {store.display_url}")


def _all_failed_ids(store: PersistentQStore, queue: str, page_size: int = 10_000) -> list[int]:
    ids: list[int] = []
    while page := store.jobs(queue=queue, state=JobState.FAILED, limit=page_size, offset=len(ids)):
        ids += [job.id for job in page]
    return ids


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Align rows under headers; numbers right-aligned, text left-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    numeric = [all(isinstance(row[i], int) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [value.rjust(width) if is_number else value.ljust(width)
                 for value, width, is_number in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * width for width in widths]), *map(line, cells)])


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s ago"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _shorten(text: str, width: int, *, keep_end: bool = False) -> str:
    """Cut `text` to `width` characters, with control characters (terminal escapes) shown escaped."""
    text = _CONTROL.sub(lambda match: repr(match.group())[1:-1], text.replace("\n", " "))
    if len(text) <= width:
        return text
    return "..." + text[-(width - 3):] if keep_end else text[: width - 3] + "..."
