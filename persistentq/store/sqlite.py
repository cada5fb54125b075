"""The queue in one SQLite file: PersistentQSQLite.

    store = PersistentQSQLite("queue.sqlite3")
    job_id = store.put("hello")
    [job] = store.claim(limit=1, lease_s=30, worker_id="me", max_attempts=3)
    store.ack(job.id, job.lease_token, result="done")

Each thread gets its own connection, because a sqlite3 connection must not be
used by two threads at once. Writes go through `_transaction`, which opens
with BEGIN IMMEDIATE so the write lock is taken before the first read and a
transaction never has to upgrade its lock half way (the upgrade is where
SQLite returns "database is locked" without waiting).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from ..errors import InvalidStateError, JobNotFoundError, StoreError
from . import sqlite_schema as sql
from .base import (
    DEFAULT_QUEUE,
    FINISHED_STATES,
    MAX_ERROR_CHARS,
    MAX_RESULT_CHARS,
    ClaimedJob,
    Job,
    JobState,
    Outcome,
    OutcomeKind,
    PersistentQStore,
    Recovered,
    WorkerRecord,
    job_from_row,
)
from .checks import check_local_filesystem, check_payload, check_put_options, clip

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_SQLITE_VERSION = (3, 35, 0)  # UPDATE ... RETURNING
BUSY_TIMEOUT_S = 10.0
# How long a write keeps retrying while other processes hold the lock, before
# the caller sees StoreError. SQLite's own busy handler covers most waits, and
# this loop covers the few places where SQLite returns SQLITE_BUSY at once.
LOCK_WAIT_S = 300.0

_OUTCOME_SQL = {
    OutcomeKind.ACK: sql.ACK,
    OutcomeKind.RETRY: sql.RETRY,
    OutcomeKind.FAIL: sql.FAIL,
    OutcomeKind.RELEASE: sql.RELEASE,
}


def _require_sqlite_version() -> None:
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        required = ".".join(map(str, MIN_SQLITE_VERSION))
        raise StoreError(
            f"SQLite {sqlite3.sqlite_version} is too old: persistentq needs {required} or newer "
            "for UPDATE ... RETURNING; use a Python built against a newer SQLite"
        )


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _database_error_message(path: Path, exc: sqlite3.DatabaseError) -> str:
    message = str(exc)
    if "not a database" in message:
        return f"{path} is not a SQLite database ({message}); set general.database to a new file name"
    if "unable to open" in message:
        return (f"cannot open the queue database {path} ({message}); set general.database "
                "to a file, not a folder, in a folder you can write")
    return f"{path}: {message}"


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "locked" in message or "busy" in message


class PersistentQSQLite(PersistentQStore):
    """A queue stored in one SQLite file, shared by threads and processes on one machine."""

    def __init__(self, path: str | Path, *, synchronous: str = "normal") -> None:
        _require_sqlite_version()
        if synchronous.lower() not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self.path = Path(path).resolve()
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        self._connections: list[tuple[sqlite3.Connection, threading.RLock]] = []
        self._connections_lock = threading.Lock()
        self._put_listeners: list[Callable[[str], None]] = []
        self._closed = False

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder of the queue database {self.path}: {exc.strerror}; "
                "set general.database to a file in a folder you can write"
            ) from exc
        check_local_filesystem(self.path)
        self._create_schema()
        self._file_id = _file_id(self.path)

    def __repr__(self) -> str:
        return f"PersistentQSQLite({str(self.path)!r}, synchronous={self.synchronous.lower()!r})"

    # Connections and transactions.

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """Lend this thread's connection, opened on first use, for one statement or transaction.

        Each connection has a lock that only `close` contends for, so closing
        the store waits for a statement in progress in another thread instead
        of closing the connection under it (which crashes the interpreter).
        """
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        conn, lock = getattr(self._local, "conn", None), getattr(self._local, "lock", None)
        if conn is None:
            conn, lock = self._retry_busy(self._open_connection), threading.RLock()
            self._local.conn, self._local.lock = conn, lock
            with self._connections_lock:
                self._connections.append((conn, lock))
        with lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed")
            yield conn

    def _open_connection(self) -> sqlite3.Connection:
        # isolation_level=None leaves transactions to `_transaction` alone.
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{self.path}: SQLite could not switch to WAL mode (journal_mode is {mode})")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _retry_busy(self, operation: Callable[[], T]) -> T:
        deadline = time.monotonic() + LOCK_WAIT_S
        delay_s = 0.001
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise StoreError(_database_error_message(self.path, exc)) from exc
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{self.path}: the database stayed locked for {LOCK_WAIT_S:.0f} s; "
                        "another process holds a write transaction open"
                    ) from exc
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 0.1)
            except sqlite3.DatabaseError as exc:
                raise StoreError(_database_error_message(self.path, exc)) from exc

    @contextmanager
    def _transaction_once(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` in one write transaction, retried while the file is locked."""

        def attempt() -> T:
            with self._transaction_once() as conn:
                return work(conn)

        return self._retry_busy(attempt)

    def _read(self, query: str, params: Sequence[object] = ()) -> list[tuple]:
        def read() -> list[tuple]:
            with self._connection() as conn:
                return conn.execute(query, params).fetchall()

        return self._retry_busy(read)

    def _create_schema(self) -> None:
        def create(conn: sqlite3.Connection) -> None:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > sql.SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this persistentq "
                    f"supports ({sql.SCHEMA_VERSION}); upgrade persistentq"
                )
            if version == sql.SCHEMA_VERSION:
                return
            for statement in sql.CREATE_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for statement in sql.CREATE_JOB_COUNTS:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {sql.SCHEMA_VERSION}")

        self._transaction(create)

    def close(self) -> None:
        """Close every connection of every thread, each after its statement in progress ends.

        Later calls raise StoreError. Idempotent.
        """
        self._closed = True
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn, lock in connections:
            with lock:
                conn.close()

    def check_health(self) -> None:
        """Raise StoreError when the database file was deleted or replaced since it was opened.

        Connections keep writing to a deleted file without any error, so
        without this check a run would go on with work that no other process can see.
        """
        if _file_id(self.path) != self._file_id:
            raise StoreError(
                f"the queue database {self.path} was deleted or replaced while this process used it; "
                "work from now on is lost, so stop this process and start it again (in a notebook, "
                "await pool.stop() and start the pool again)"
            )

    def data_version(self) -> int:
        """Return SQLite's data_version for this thread's connection.

        The value changes whenever another connection, in this process or
        another one, commits to the file. The asyncio bridge polls it to
        notice puts made by other processes.
        """
        return self._read("PRAGMA data_version")[0][0]

    def add_put_listener(self, listener: Callable[[str], None]) -> None:
        self._put_listeners.append(listener)

    def remove_put_listener(self, listener: Callable[[str], None]) -> None:
        self._put_listeners.remove(listener)

    def _notify_put(self, queue: str) -> None:
        for listener in self._put_listeners:
            listener(queue)

    # Putting jobs.

    def put(
        self,
        payload: str,
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        delay_s: float = 0.0,
        unique_key: str | None = None,
    ) -> int:
        check_payload(payload)
        check_put_options(priority, delay_s)
        self.check_health()
        now = time.time()
        row = (queue, payload, priority, now, now + delay_s, unique_key)

        def insert(conn: sqlite3.Connection) -> tuple[int, bool]:
            if unique_key is not None:
                found = conn.execute(sql.FIND_ACTIVE_UNIQUE, (queue, unique_key)).fetchone()
                if found is not None:
                    return found[0], False
            return conn.execute(sql.INSERT_JOB, row).lastrowid, True

        job_id, inserted = self._transaction(insert)
        if inserted:
            self._notify_put(queue)
        return job_id

    def put_many(
        self,
        payloads: Iterable[str],
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        delay_s: float = 0.0,
    ) -> list[int]:
        payloads = list(payloads)
        for payload in payloads:
            check_payload(payload)
        check_put_options(priority, delay_s)
        if not payloads:
            return []
        self.check_health()
        now = time.time()
        rows = [(queue, payload, priority, now, now + delay_s, None) for payload in payloads]

        def insert(conn: sqlite3.Connection) -> list[int]:
            # The rows get consecutive ids: each new id is one more than the
            # last one handed out, and the write lock is held from the first insert to the last.
            conn.executemany(sql.INSERT_JOB, rows)
            last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            return list(range(last - len(rows) + 1, last + 1))

        ids = self._transaction(insert)
        self._notify_put(queue)
        return ids

    # Claims, outcomes and leases.

    def claim(
        self,
        *,
        queue: str = DEFAULT_QUEUE,
        limit: int = 1,
        lease_s: float,
        worker_id: str,
        max_attempts: int,
    ) -> list[ClaimedJob]:
        if limit < 1:
            return []
        # One stat call, so that no job is put or run in a file that is gone from its folder.
        self.check_health()

        def claim_batch(conn: sqlite3.Connection) -> list[tuple]:
            now = time.time()
            self._recover(conn, queue, max_attempts, now)
            params = {"now": now, "lease_s": lease_s, "worker_id": worker_id}
            params.update(queue=queue, limit=limit, max_attempts=max_attempts)
            return conn.execute(sql.CLAIM, params).fetchall()

        rows = self._transaction(claim_batch)
        # RETURNING gives rows in no set order, so restore the claim order.
        rows.sort(key=lambda row: (-row[3], row[6], row[0]))
        return [ClaimedJob(*row[:6]) for row in rows]

    def _recover(self, conn: sqlite3.Connection, queue: str, max_attempts: int, now: float) -> Recovered:
        params = {"queue": queue, "now": now, "max_attempts": max_attempts}
        failed = conn.execute(sql.FAIL_EXPIRED, params).rowcount
        requeued = conn.execute(sql.REQUEUE_EXPIRED, params).rowcount
        if failed or requeued:
            log.warning(
                "recovered jobs whose lease expired in queue %r: %d requeued, %d failed",
                queue, requeued, failed,
            )
        return Recovered(requeued=requeued, failed=failed)

    def recover_expired(self, *, queue: str = DEFAULT_QUEUE, max_attempts: int) -> Recovered:
        return self._transaction(lambda conn: self._recover(conn, queue, max_attempts, time.time()))

    def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []

        def write(conn: sqlite3.Connection) -> list[bool]:
            now = time.time()
            matched = []
            for outcome in outcomes:
                params = {
                    "now": now,
                    "job_id": outcome.job_id,
                    "lease_token": outcome.lease_token,
                    "worker_id": outcome.worker_id,
                    "result": clip(outcome.result, MAX_RESULT_CHARS),
                    "error": clip(outcome.error, MAX_ERROR_CHARS),
                    "delay_s": outcome.delay_s,
                }
                matched.append(conn.execute(_OUTCOME_SQL[outcome.kind], params).rowcount == 1)
            return matched

        return self._transaction(write)

    def renew(self, leases: Sequence[tuple[int, str]], *, lease_s: float) -> list[bool]:
        if not leases:
            return []

        def write(conn: sqlite3.Connection) -> list[bool]:
            now = time.time()
            return [
                conn.execute(
                    sql.RENEW,
                    {"now": now, "lease_s": lease_s, "job_id": job_id, "lease_token": token},
                ).rowcount
                == 1
                for job_id, token in leases
            ]

        return self._transaction(write)

    # Management.

    def _states_of(self, conn: sqlite3.Connection, job_ids: list[int]) -> dict[int, JobState]:
        rows = conn.execute(sql.STATES_OF_IDS, (json.dumps(job_ids),)).fetchall()
        states = {job_id: JobState(state) for job_id, state in rows}
        missing = sorted(set(job_ids) - states.keys())
        if missing:
            listed = ", ".join(map(str, missing[:10]))
            raise JobNotFoundError(f"no job with id {listed} in {self.path}")
        return states

    def cancel(self, job_ids: Iterable[int]) -> int:
        ids = [int(job_id) for job_id in job_ids]

        def write(conn: sqlite3.Connection) -> int:
            self._states_of(conn, ids)
            return conn.execute(sql.CANCEL, (time.time(), json.dumps(ids))).rowcount

        return self._transaction(write)

    def requeue(self, job_ids: Iterable[int], *, require_leftovers: bool = False) -> int:
        ids = [int(job_id) for job_id in job_ids]
        ids_json = json.dumps(ids)

        def write(conn: sqlite3.Connection) -> int:
            states = self._states_of(conn, ids)
            wrong = {job_id: state for job_id, state in states.items()
                     if state not in (JobState.FAILED, JobState.CANCELLED)}
            if wrong:
                job_id, state = min(wrong.items())
                raise InvalidStateError(
                    f"job {job_id} is {state}; only failed or cancelled jobs can be requeued"
                )
            clash = conn.execute(sql.ACTIVE_KEY_CLASH, (ids_json,)).fetchone()
            if clash:
                raise InvalidStateError(
                    f"job {clash[0]} cannot be requeued: job {clash[1]} with the same unique key "
                    "is queued or running"
                )
            discarded = conn.execute(sql.DISCARDED_OF_IDS, (ids_json,)).fetchone() if require_leftovers else None
            if discarded:
                raise InvalidStateError(
                    f"job {discarded[0]} cannot be requeued: the cleaner already removed what it "
                    "left behind; put a new job instead"
                )
            return conn.execute(sql.REQUEUE, (time.time(), ids_json)).rowcount

        requeued = self._transaction(write)
        if requeued:
            for queue in {row[0] for row in self._read(sql.QUEUES_OF_IDS, (json.dumps(ids),))}:
                self._notify_put(queue)
        return requeued

    def purge(
        self,
        *,
        queue: str = DEFAULT_QUEUE,
        states: Iterable[JobState] = FINISHED_STATES,
        older_than_s: float = 0.0,
    ) -> int:
        states = [JobState(state) for state in states]
        active = [state for state in states if state not in FINISHED_STATES]
        if active:
            raise InvalidStateError(
                f"cannot purge {active[0]} jobs; purge takes done, failed or cancelled"
            )
        cutoff = time.time() - older_than_s
        params = (queue, json.dumps([state.value for state in states]), cutoff)
        return self._transaction(lambda conn: conn.execute(sql.PURGE, params).rowcount)

    # Reading.

    def get(self, job_id: int) -> Job:
        rows = self._read(sql.GET_JOB, (int(job_id),))
        if not rows:
            raise JobNotFoundError(f"no job with id {job_id} in {self.path}")
        return job_from_row(rows[0])

    def counts(self, *, queue: str = DEFAULT_QUEUE) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for state, count in self._read(sql.COUNTS, (queue,)):
            counts[JobState(state)] = count
        return counts

    def _page_rows(
        self,
        *,
        queue: str,
        state: JobState | None,
        limit: int,
        offset: int,
        search: str | None,
        since: float | None,
        until: float | None,
    ) -> list[tuple]:
        params: list[object] = [queue]
        if state is not None:
            params.append(JobState(state).value)
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{escaped}%")
        params += [float(bound) for bound in (since, until) if bound is not None]
        params += [int(limit), int(offset)]
        query = sql.page_query(
            with_state=state is not None,
            with_search=bool(search),
            with_since=since is not None,
            with_until=until is not None,
        )
        return self._read(query, params)

    def _throughput_rows(
        self, *, queue: str, interval_s: float, since: float, until: float
    ) -> list[tuple[int, int, int]]:
        params = {"queue": queue, "interval": interval_s, "since": since, "until": until}
        return self._read(sql.THROUGHPUT, params)

    def failed_undiscarded(self, *, queue: str = DEFAULT_QUEUE, limit: int = 100) -> list[Job]:
        return [job_from_row(row) for row in self._read(sql.FAILED_UNDISCARDED, (queue, limit))]

    def mark_discarded(self, job_ids: Iterable[int]) -> list[int]:
        ids = json.dumps([int(job_id) for job_id in job_ids])
        rows = self._transaction(lambda conn: conn.execute(sql.MARK_DISCARDED, (ids,)).fetchall())
        return sorted(row[0] for row in rows)

    # The worker registry.

    def register_worker(self, record: WorkerRecord) -> None:
        self.heartbeat([record])

    def heartbeat(self, records: Sequence[WorkerRecord]) -> None:
        if records:
            rows = [vars(record) for record in records]
            self._transaction(lambda conn: conn.executemany(sql.UPSERT_WORKER, rows))

    def workers(self) -> list[WorkerRecord]:
        return [WorkerRecord(*row) for row in self._read(sql.LIST_WORKERS)]

    def forget_workers(self, *, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        return self._transaction(lambda conn: conn.execute(sql.FORGET_WORKERS, (cutoff,)).rowcount)


