"""The queue designs the benchmarks compare, behind one small synchronous interface.

Each design opens its own queue in a folder of its own, so every measure
starts from a fresh database file, or for PostgreSQL a fresh database named
from the folder. `DESIGNS` is the registry the runner reads: a new design is
one subclass of `Design` (or of `StoreDesign`, when it is a persistentq
store that the worker measures can drive) and one entry in that mapping.
"""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from persistentq.store.base import PersistentQStore
from persistentq.store.sqlite import PersistentQSQLite

from . import postgres_server
from .sizes import FULL, POSTGRES_FULL, Sizes

# Leases long enough that no benchmark job is ever taken over while it runs.
LEASE_S = 600.0
MAX_ATTEMPTS = 3
# Claims taken by `Design.take` name this worker.
TAKER_ID = "benchmark"


class Design(ABC):
    """One queue implementation: put, take one job, ack it."""

    name: ClassVar[str]
    # Whether `put_many` adds a batch in one commit; designs without it show n/a.
    has_put_many: ClassVar[bool] = True
    # The module a peer needs; it is benchmark-only, so it may be missing.
    module: ClassVar[str | None] = None
    # The raw loop this design's ratios divide by: the limit of the same database.
    reference: ClassVar[str] = "raw"
    # Job counts of a full run; a quick run uses sizes.QUICK for every design.
    full_sizes: ClassVar[Sizes] = FULL

    def __init__(self, folder: Path, synchronous: str) -> None:
        self.folder = folder
        self.synchronous = synchronous.upper()
        folder.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def put(self, payload: str) -> None:
        """Add one job in its own commit."""

    def put_many(self, payloads: Sequence[str]) -> None:
        """Add several jobs in one commit."""
        raise NotImplementedError(f"{self.name} has no batch put")

    @abstractmethod
    def take(self) -> tuple[str, Any] | None:
        """Claim the oldest queued job and return its payload and a handle for `ack`, or None."""

    @abstractmethod
    def ack(self, handle: Any) -> None:
        """Mark a taken job done."""

    @abstractmethod
    def synchronous_setting(self) -> str:
        """Return the durability setting this design ran with (NORMAL or FULL first), and how it was set."""

    def fill(self, payloads: Sequence[str]) -> None:
        """Add a backlog before a measure starts, by the fastest way the design offers."""
        if self.has_put_many:
            self.put_many(payloads)
        else:
            for payload in payloads:
                self.put(payload)

    def close(self) -> None:
        """Close every connection the design opened."""

    def database_file(self) -> Path:
        """Return the one file that contains this design's queue once it is closed."""
        raise NotImplementedError(f"{self.name} keeps no single database file")

    def template_source(self) -> str:
        """Return what `copy_template` copies this queue from once it is closed: its file by default."""
        return str(self.database_file())

    @classmethod
    def copy_template(cls, source: str, folder: Path) -> None:
        """Put a copy of the closed queue `source` where this design opens its queue for `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / Path(source).name)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Return why this design cannot run here, or None when it can."""
        if cls.module is None or importlib.util.find_spec(cls.module) is not None:
            return None
        return f"module {cls.module} is not installed; pip install -e '.[bench]'"

    @classmethod
    def discard(cls, folder: Path) -> None:
        """Remove what this design keeps outside `folder` for `folder`; files inside it the runner removes."""


_SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def read_synchronous(conn: sqlite3.Connection) -> str:
    """Return the `synchronous` setting of a connection as its name."""
    value = conn.execute("PRAGMA synchronous").fetchone()[0]
    return _SYNCHRONOUS_NAMES.get(value, str(value))


# The limit: the least a queue can do with one claim and one ack transaction per job.
RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    payload TEXT NOT NULL,
    state INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state_id ON jobs (state, id);
"""
RAW_QUEUED, RAW_RUNNING, RAW_DONE = 0, 1, 2
RAW_INSERT = "INSERT INTO jobs (payload, state) VALUES (?, 0)"
RAW_CLAIM = """
UPDATE jobs SET state = 1
WHERE id = (SELECT id FROM jobs WHERE state = 0 ORDER BY id LIMIT 1)
RETURNING id, payload
"""
RAW_ACK = "UPDATE jobs SET state = 2 WHERE id = ?"


class RawLoop(Design):
    """The reference: plain sqlite3, WAL, an index on (state, id), nothing else."""

    name = "raw sqlite3"

    def __init__(self, folder: Path, synchronous: str) -> None:
        super().__init__(folder, synchronous)
        self.conn = sqlite3.connect(folder / "raw.sqlite3", timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={self.synchronous}")
        self.conn.executescript(RAW_SCHEMA)

    def put(self, payload: str) -> None:
        self.conn.execute(RAW_INSERT, (payload,))

    def put_many(self, payloads: Sequence[str]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(RAW_INSERT, ((payload,) for payload in payloads))
        self.conn.execute("COMMIT")

    def take(self) -> tuple[str, Any] | None:
        # BEGIN IMMEDIATE takes the write lock before the SELECT, so two
        # processes cannot claim the same row.
        self.conn.execute("BEGIN IMMEDIATE")
        row = self.conn.execute(RAW_CLAIM).fetchone()
        self.conn.execute("COMMIT")
        return None if row is None else (row[1], row[0])

    def ack(self, handle: Any) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(RAW_ACK, (handle,))
        self.conn.execute("COMMIT")

    def synchronous_setting(self) -> str:
        return f"{read_synchronous(self.conn)} (PRAGMA)"

    def close(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()

    def database_file(self) -> Path:
        return self.folder / "raw.sqlite3"


FILL_BATCH = 100_000
FINISH_JOBS = """
UPDATE jobs
SET state = CASE id % 50 WHEN 0 THEN 'failed' WHEN 1 THEN 'cancelled' ELSE 'done' END,
    attempts = 1, started_at = created_at, finished_at = created_at + 0.001,
    last_error = CASE id % 50 WHEN 0 THEN 'ValueError: failed on purpose' END,
    result = CASE WHEN id % 50 > 1 THEN 'ok' END
WHERE id <= :last
"""


class StoreDesign(Design):
    """A persistentq store, driven through its contract; the worker measures use `store` too."""

    name = "persistentq"

    def __init__(self, folder: Path, synchronous: str) -> None:
        super().__init__(folder, synchronous)
        self.store = self.open_store()

    def open_store(self) -> PersistentQStore:
        """Open this design's store on a fresh queue; a PostgreSQL design overrides this."""
        return PersistentQSQLite(self.folder / "queue.sqlite3", synchronous=self.synchronous)

    def put(self, payload: str) -> None:
        self.store.put(payload)

    def put_many(self, payloads: Sequence[str]) -> None:
        self.store.put_many(payloads)

    def take(self) -> tuple[str, Any] | None:
        jobs = self.store.claim(limit=1, lease_s=LEASE_S, worker_id=TAKER_ID, max_attempts=MAX_ATTEMPTS)
        return (jobs[0].payload, jobs[0]) if jobs else None

    def ack(self, handle: Any) -> None:
        self.store.ack(handle.id, handle.lease_token)

    def synchronous_setting(self) -> str:
        return f"{self.store.synchronous} (general.synchronous)"

    def fill(self, payloads: Sequence[str]) -> None:
        # Batches keep the write lock for well under a second each.
        for start in range(0, len(payloads), FILL_BATCH):
            self.store.put_many(payloads[start:start + FILL_BATCH])

    def finish_jobs(self, keep_queued: int) -> None:
        """Give every job but the newest `keep_queued` an outcome: mostly done, 2% failed, 2% cancelled.

        Only a queue for the view measures is built this way. SQL does it in
        seconds where claims and acks through the store would take minutes.
        """
        conn = sqlite3.connect(self.database_file(), timeout=60, isolation_level=None)
        last = conn.execute("SELECT max(id) FROM jobs").fetchone()[0] - keep_queued
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(FINISH_JOBS, {"last": last})
        conn.execute("COMMIT")
        conn.close()

    def close(self) -> None:
        self.store.close()

    def database_file(self) -> Path:
        return self.folder / "queue.sqlite3"

    def lock_holder(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        """Return a function and its first arguments that hold the store's write lock from another process.

        The function is called with the seconds to hold, and events to set
        once it holds the lock and once it has released it.
        """
        from .roles import hold_write_lock

        return hold_write_lock, (self.database_file(),)


class PersistQueueDesign(Design):
    """persist-queue's SQLiteAckQueue: get marks a row unacked, ack marks it acked."""

    name = "persist-queue"
    module = "persistqueue"
    has_put_many = False

    def __init__(self, folder: Path, synchronous: str) -> None:
        super().__init__(folder, synchronous)
        from persistqueue import SQLiteAckQueue

        self.queue = SQLiteAckQueue(str(folder / "persist-queue"), auto_resume=False, multithreading=True)
        # SQLiteAckQueue has no durability option, so the PRAGMA goes to its
        # connections, which it keeps in _getter and _putter.
        for conn in {id(c): c for c in (self.queue._getter, self.queue._putter)}.values():
            conn.execute(f"PRAGMA synchronous={self.synchronous}")

    def put(self, payload: str) -> None:
        self.queue.put(payload)

    def take(self) -> tuple[str, Any] | None:
        from persistqueue import Empty

        try:
            item = self.queue.get(block=False, raw=True)
        except Empty:
            return None
        return item["data"], item["pqid"]

    def ack(self, handle: Any) -> None:
        self.queue.ack(id=handle)

    def synchronous_setting(self) -> str:
        return f"{read_synchronous(self.queue._getter)} (PRAGMA on its connections)"

    def close(self) -> None:
        self.queue.close()


class LiteQueueDesign(Design):
    """litequeue: pop marks a message locked, done marks it done."""

    name = "litequeue"
    module = "litequeue"

    def __init__(self, folder: Path, synchronous: str) -> None:
        super().__init__(folder, synchronous)
        from litequeue import LiteQueue

        self.queue = LiteQueue(str(folder / "litequeue.sqlite3"), timeout=30)
        # LiteQueue sets NORMAL itself; its connection is public, so FULL can be set there.
        self.queue.conn.execute(f"PRAGMA synchronous={self.synchronous}")

    def put(self, payload: str) -> None:
        self.queue.put(payload)

    def put_many(self, payloads: Sequence[str]) -> None:
        with self.queue.transaction(mode="IMMEDIATE"):
            for payload in payloads:
                self.queue.put(payload)

    def take(self) -> tuple[str, Any] | None:
        message = self.queue.pop()
        return None if message is None else (message.data, message.message_id)

    def ack(self, handle: Any) -> None:
        self.queue.done(handle)

    def synchronous_setting(self) -> str:
        return f"{read_synchronous(self.queue.conn)} (PRAGMA on LiteQueue.conn)"

    def close(self) -> None:
        self.queue.close()


class LocalQueueDesign(Design):
    """localqueue's SimpleQueue (SQLite driven from Rust): get leases a job, ack confirms it."""

    name = "localqueue"
    module = "localqueue"

    def __init__(self, folder: Path, synchronous: str) -> None:
        super().__init__(folder, synchronous)
        from localqueue import DeliveryPolicy, DurabilityMode, SimpleQueue

        # DurabilityMode is the only way in: RELAXED is NORMAL and DURABLE is FULL.
        mode = DurabilityMode.DURABLE if self.synchronous == "FULL" else DurabilityMode.RELAXED
        self.mode = mode
        self.queue = SimpleQueue(
            str(folder / "localqueue"),
            delivery=DeliveryPolicy(lease_seconds=int(LEASE_S), max_retries=MAX_ATTEMPTS),
            durability=mode,
        )

    def put(self, payload: str) -> None:
        self.queue.put(payload)

    def put_many(self, payloads: Sequence[str]) -> None:
        self.queue.put_many(list(payloads))

    def take(self) -> tuple[str, Any] | None:
        from localqueue import Empty

        try:
            job = self.queue.get_nowait()
        except Empty:
            return None
        return job.data, job

    def ack(self, handle: Any) -> None:
        self.queue.ack(handle)

    def synchronous_setting(self) -> str:
        name = "FULL" if self.synchronous == "FULL" else "NORMAL"
        return f"{name} (DurabilityMode.{self.mode.name})"

    def close(self) -> None:
        self.queue.close()


class HueyDesign(Design):
    """huey's SqliteStorage: dequeue deletes the row in one transaction, so there is no ack.

    Its take is therefore at-most-once: a consumer killed after dequeue loses the job.
    """

    name = "huey"
    module = "huey"
    has_put_many = False

    def __init__(self, folder: Path, synchronous: str) -> None:
        super().__init__(folder, synchronous)
        from huey.storage import SqliteStorage

        # fsync=True sets FULL and fsync=False sets OFF, so NORMAL goes to its connection.
        self.storage = SqliteStorage(name="bench", filename=str(folder / "huey.sqlite3"), timeout=30)
        self.storage.conn.execute(f"PRAGMA synchronous={self.synchronous}")

    def put(self, payload: str) -> None:
        self.storage.enqueue(payload.encode())

    def take(self) -> tuple[str, Any] | None:
        data = self.storage.dequeue()
        return None if data is None else (bytes(data).decode(), None)

    def ack(self, handle: Any) -> None:
        """Do nothing: the dequeue already deleted the row."""

    def synchronous_setting(self) -> str:
        return f"{read_synchronous(self.storage.conn)} (PRAGMA on SqliteStorage.conn)"

    def close(self) -> None:
        self.storage.close()


# PostgreSQL's limit: the same three columns and index as RAW_SCHEMA, and a
# claim that passes over rows other claimers have locked.
PG_RAW_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jobs "
    "(id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload text NOT NULL, state smallint NOT NULL)",
    "CREATE INDEX IF NOT EXISTS jobs_state_id ON jobs (state, id)",
)
PG_RAW_INSERT = "INSERT INTO jobs (payload, state) VALUES (%s, 0)"
PG_RAW_INSERT_MANY = "INSERT INTO jobs (payload, state) SELECT unnest(%s::text[]), 0"
PG_RAW_CLAIM = """
UPDATE jobs SET state = 1
WHERE id = (SELECT id FROM jobs WHERE state = 0 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, payload
"""
PG_RAW_ACK = "UPDATE jobs SET state = 2 WHERE id = %s"
# The store's own split at general.synchronous "normal": claims and outcomes
# commit without waiting for the WAL flush, puts wait for it.
PG_ASYNC_COMMIT = "SET synchronous_commit TO off"


class PostgresRawLoop(Design):
    """PostgreSQL's reference: psycopg, one claim and one ack transaction per job, nothing else.

    Each statement runs in autocommit mode, so it is a transaction of its
    own. At NORMAL the claims and acks go through a connection with
    synchronous_commit off, as the store's do, and puts through one at the
    server's setting.
    """

    name = "raw psycopg"
    module = "psycopg"
    reference = "raw-pg"
    full_sizes = POSTGRES_FULL

    def __init__(self, folder: Path, synchronous: str) -> None:
        import psycopg

        super().__init__(folder, synchronous)
        url = postgres_server.open_database(folder)
        self.put_conn = psycopg.connect(url, autocommit=True)
        self.take_conn = psycopg.connect(url, autocommit=True)
        if self.synchronous == "NORMAL":
            self.take_conn.execute(PG_ASYNC_COMMIT)
        for statement in PG_RAW_SCHEMA:
            self.put_conn.execute(statement)

    def put(self, payload: str) -> None:
        self.put_conn.execute(PG_RAW_INSERT, (payload,))

    def put_many(self, payloads: Sequence[str]) -> None:
        self.put_conn.execute(PG_RAW_INSERT_MANY, (list(payloads),))

    def fill(self, payloads: Sequence[str]) -> None:
        for start in range(0, len(payloads), FILL_BATCH):
            self.put_many(payloads[start:start + FILL_BATCH])

    def take(self) -> tuple[str, Any] | None:
        row = self.take_conn.execute(PG_RAW_CLAIM).fetchone()
        return None if row is None else (row[1], row[0])

    def ack(self, handle: Any) -> None:
        self.take_conn.execute(PG_RAW_ACK, (handle,))

    def synchronous_setting(self) -> str:
        show = "SELECT current_setting('synchronous_commit')"
        taking = self.take_conn.execute(show).fetchone()[0]
        putting = self.put_conn.execute(show).fetchone()[0]
        return f"{self.synchronous} (synchronous_commit {taking} for claims and acks, {putting} for puts)"

    def close(self) -> None:
        self.put_conn.close()
        self.take_conn.close()

    def template_source(self) -> str:
        return postgres_server.database_name(self.folder)

    @classmethod
    def copy_template(cls, source: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        postgres_server.open_database(folder, template=source)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return super().unavailable_reason() or postgres_server.unreachable_reason()

    @classmethod
    def discard(cls, folder: Path) -> None:
        postgres_server.drop_database(folder)


# psycopg reads % as a placeholder, so the modulo operator is written %%.
PG_FINISH_JOBS = """
UPDATE jobs
SET state = CASE id %% 50 WHEN 0 THEN 'failed' WHEN 1 THEN 'cancelled' ELSE 'done' END,
    attempts = 1, started_at = created_at, finished_at = created_at + 0.001,
    last_error = CASE id %% 50 WHEN 0 THEN 'ValueError: failed on purpose' END,
    result = CASE WHEN id %% 50 > 1 THEN 'ok' END
WHERE id <= %(last)s
"""


class PostgresStoreDesign(StoreDesign):
    """PersistentQPostgres on a database of its own, with the store's default pool of 4 connections."""

    name = "persistentq on PostgreSQL"
    module = "psycopg"
    reference = "raw-pg"
    full_sizes = POSTGRES_FULL

    def open_store(self) -> PersistentQStore:
        from persistentq.store.postgres import PersistentQPostgres

        self.url = postgres_server.open_database(self.folder)
        return PersistentQPostgres(self.url, synchronous=self.synchronous.lower())

    def synchronous_setting(self) -> str:
        server = postgres_server.show_setting(self.url, "synchronous_commit")
        if self.synchronous == "NORMAL":
            return f"NORMAL (general.synchronous; synchronous_commit off for claims and outcomes, {server} for puts)"
        return f"{self.synchronous} (general.synchronous; synchronous_commit {server})"

    def finish_jobs(self, keep_queued: int) -> None:
        """Give every job but the newest `keep_queued` an outcome, as the SQLite design does, then VACUUM ANALYZE.

        The VACUUM stands in for autovacuum, which a live queue gets and
        which would otherwise run during a measure.
        """
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT set_config('search_path', %s, false)", (self.store.schema,))
            last = conn.execute("SELECT max(id) FROM jobs").fetchone()[0] - keep_queued
            conn.execute(PG_FINISH_JOBS, {"last": last})
            conn.execute("VACUUM ANALYZE jobs")

    def database_file(self) -> Path:
        raise NotImplementedError(f"{self.name} keeps its queue in a database, not a file")

    def template_source(self) -> str:
        return postgres_server.database_name(self.folder)

    @classmethod
    def copy_template(cls, source: str, folder: Path) -> None:
        PostgresRawLoop.copy_template(source, folder)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return PostgresRawLoop.unavailable_reason()

    @classmethod
    def discard(cls, folder: Path) -> None:
        postgres_server.drop_database(folder)

    def lock_holder(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        from .roles import hold_table_lock

        return hold_table_lock, (self.url, self.store.schema)


# The registry, in the order of the table: SQLite's raw loop, persistentq
# and the peers, then PostgreSQL's raw loop and persistentq on it.
DESIGNS: dict[str, type[Design]] = {
    "raw": RawLoop,
    "persistentq": StoreDesign,
    "persist-queue": PersistQueueDesign,
    "litequeue": LiteQueueDesign,
    "localqueue": LocalQueueDesign,
    "huey": HueyDesign,
    "raw-pg": PostgresRawLoop,
    "persistentq-pg": PostgresStoreDesign,
}
# SQLite's raw loop; the peer targets and the peers' ratios divide by it.
REFERENCE = "raw"
# The raw loop of each database: every other design's ratios divide by its `reference`.
REFERENCES = ("raw", "raw-pg")
PEERS = ("persist-queue", "litequeue", "localqueue", "huey")
# Designs that are persistentq stores: the worker, drain, wake-up and view measures run on these.
STORE_DESIGNS = ("persistentq", "persistentq-pg")


def reference_of(key: str) -> str | None:
    """Return the raw loop that the ratios of design `key` divide by, or None for a raw loop itself."""
    return None if key in REFERENCES else DESIGNS[key].reference


def unavailable_reason(key: str) -> str | None:
    """Return why the design registered under `key` cannot run here, or None when it can."""
    return DESIGNS[key].unavailable_reason()


def open_design(key: str, folder: Path, synchronous: str) -> Design:
    """Open the design registered under `key` on a fresh queue in `folder`."""
    try:
        design_class = DESIGNS[key]
    except KeyError:
        raise ValueError(f"unknown design {key!r}; expected one of {', '.join(DESIGNS)}") from None
    return design_class(folder, synchronous)

