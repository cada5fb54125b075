"""The queue in a PostgreSQL database, shared by many machines: PersistentQPostgres.

    store = PersistentQPostgres("postgresql://app@db.example.com/jobs", max_connections=6)
    job_id = store.put("hello")
    [job] = store.claim(limit=1, lease_s=30, worker_id="me", max_attempts=3)
    store.ack(job.id, job.lease_token, result="done")

Connections come from a psycopg_pool pool, one per call, in autocommit mode.
Every call goes through `_transaction`, which runs a function inside one
explicit transaction. When the connection broke before COMMIT was sent, the
server rolled the transaction back, so `_transaction` runs it again on a
fresh connection without applying anything twice. Times come from the
database's clock.

Each put sends NOTIFY in its own transaction. Put listeners hear of puts made
through this object at once, and, once one is added, of puts made by every
other process through a LISTEN thread (see postgres_listener).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from ..errors import DatabaseUnavailableError, InvalidPayloadError, InvalidStateError, JobNotFoundError, StoreError
from . import postgres_schema as sql
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
from .checks import check_payload, check_put_options, clip
from .postgres_listener import KEEPALIVES, NotifyListener

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

T = TypeVar("T")

INSTALL_HINT = "the PostgreSQL store needs psycopg: pip install 'persistentq[postgres]'"
DEFAULT_SCHEMA = "persistentq"
MIN_SERVER_VERSION = 130000  # gen_random_uuid() is built in from PostgreSQL 13
CONNECT_TIMEOUT_S = 10
# How long a call waits for a free pooled connection, including while the
# pool reconnects to a restarted server, before it raises StoreError.
POOL_TIMEOUT_S = 30.0
# How long a call waits for a connection while an earlier wait has timed out and none has come since.
OUTAGE_TIMEOUT_S = 1.0
IMPORT_BATCH = 1000  # jobs per INSERT statement of `import_jobs`
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# A password given as a query parameter of the URL: postgresql://app@host/db?password=...
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)([^&]*)", re.IGNORECASE)

_OUTCOME_SQL = {
    OutcomeKind.ACK: sql.ACK,
    OutcomeKind.RETRY: sql.RETRY,
    OutcomeKind.FAIL: sql.FAIL,
    OutcomeKind.RELEASE: sql.RELEASE,
}


def redact_url(url: str) -> str:
    """Return `url` with its password replaced by ***, in the user part and in a password= parameter."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        rest = f"{credentials.split(':', 1)[0]}:***@{host}"
    rest = _PASSWORD_PARAMETER.sub(r"\g<1>***", rest)
    return f"{scheme}://{rest}"


def hide_password(text: str, url: str) -> str:
    """Return `text` with every copy of the password of `url`, as written or percent-decoded, replaced by ***.

    libpq repeats the whole URL in some of its messages, for example when
    the URL cannot be parsed.
    """
    text = text.replace(url, redact_url(url))
    for secret in sorted(_passwords(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _passwords(url: str) -> set[str]:
    _, _, rest = url.partition("://")
    credentials, at, _ = rest.rpartition("@")
    found = [credentials.split(":", 1)[1]] if at and ":" in credentials else []
    found += [match.group(2) for match in _PASSWORD_PARAMETER.finditer(rest)]
    return {form for secret in found for form in (secret, unquote(secret)) if form}


def _lower_scheme(url: str) -> str:
    """Return `url` with a POSTGRESQL:// or Postgres:// scheme in lower case, the only case libpq parses.

    The config accepts the scheme in any case, as URL schemes are case-insensitive.
    """
    scheme, separator, rest = url.partition("://")
    if separator and scheme.lower() in ("postgresql", "postgres"):
        return f"{scheme.lower()}://{rest}"
    return url


def pool_size(n_workers: int) -> int:
    """Return the maximum number of pooled connections for a process running `n_workers` workers.

    The workers reach the store through one thread, which uses one connection
    at a time. The other connections serve calls made on other threads, such
    as the web app's requests and the notebook views, which read the state of
    every worker. The pool opens a connection only when a call needs one.
    """
    return max(n_workers, 1) + 2


def _import_psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise StoreError(INSTALL_HINT) from exc
    return psycopg, psycopg_pool


class PersistentQPostgres(PersistentQStore):
    """A queue stored in a PostgreSQL database, shared by threads, processes and machines."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 4,
        schema: str = DEFAULT_SCHEMA,
        synchronous: str = "normal",
        create: bool = True,
    ) -> None:
        psycopg, psycopg_pool = _import_psycopg()
        if not SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be a lower-case PostgreSQL name (letters, digits, _), got {schema!r}"
            )
        if max_connections < 1:
            raise ValueError(f"max_connections must be 1 or more, got {max_connections}")
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        # With "full" every commit waits for the WAL flush, as SQLite's FULL does.
        self._async_outcomes = synchronous == "normal"
        # The server's synchronous_commit, which durable transactions keep.
        self._durable_setting = "on"
        self.url = url = _lower_scheme(url)
        self.display_url = redact_url(url)
        self.schema = schema
        # Puts carry this id in their notification, so the LISTEN thread can
        # skip the puts whose listeners this object has already called.
        self._sender = uuid.uuid4().hex
        self._channel = f"persistentq_{schema}"
        self._put_listeners: list[Callable[[str], None]] = []
        self._listeners_lock = threading.Lock()
        self._listener: NotifyListener | None = None
        self._claimed_queues: set[str] = set()
        self._closed = False
        self._outage = False

        self._create_schema(psycopg, create=create)
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S, **KEEPALIVES},
            configure=self._configure,
            timeout=POOL_TIMEOUT_S,
            name=f"persistentq-{schema}",
            open=True,
        )

    def __repr__(self) -> str:
        return f"PersistentQPostgres({self.display_url!r}, schema={self.schema!r})"

    # Connections and transactions.

    def _connect_error(self, exc: Exception) -> DatabaseUnavailableError:
        reason = hide_password(" ".join(str(exc).split()), self.url) or type(exc).__name__
        return DatabaseUnavailableError(
            f"cannot connect to the PostgreSQL database {self.display_url}: {reason}; "
            "check general.database or PERSISTENTQ_DATABASE (postgresql://user@host:port/database) "
            "and that the server runs"
        )

    def _create_schema(self, psycopg: Any, *, create: bool) -> None:
        """Create the schema and its tables if missing, under an advisory lock, on a connection of its own.

        Without `create`, a database without the schema raises StoreError
        instead, so a command pointed at the wrong database changes nothing.
        """
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except (psycopg.Error, ValueError) as exc:
            raise self._connect_error(exc) from exc
        try:
            with conn:
                self._check_server(conn)
                if not create and conn.execute(sql.SCHEMA_EXISTS, {"schema": self.schema}).fetchone() is None:
                    raise StoreError(
                        f"no queue in {self.display_url}: it has no schema {self.schema!r}; check "
                        "general.database or PERSISTENTQ_DATABASE, or start the queue with basic run "
                        "or basic enqueue"
                    )
                with conn.transaction():
                    conn.execute(sql.ADVISORY_XACT_LOCK, {"lock_name": f"persistentq schema {self.schema}"})
                    self._create_tables(conn)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot set up the queue schema {self.schema!r} in {self.display_url}: "
                f"{hide_password(_one_line(exc), self.url)}"
            ) from exc

    def _check_server(self, conn: psycopg.Connection) -> None:
        version = conn.execute(sql.SERVER_VERSION).fetchone()[0]
        if version < MIN_SERVER_VERSION:
            raise StoreError(
                f"{self.display_url} runs PostgreSQL {conn.info.parameter_status('server_version')}; "
                "persistentq needs PostgreSQL 13 or newer"
            )

    def _create_tables(self, conn: psycopg.Connection) -> None:
        from psycopg import sql as composed

        if conn.execute(sql.SCHEMA_EXISTS, {"schema": self.schema}).fetchone() is None:
            conn.execute(composed.SQL("CREATE SCHEMA {}").format(composed.Identifier(self.schema)))
        elif not conn.execute(sql.SCHEMA_USAGE, {"schema": self.schema}).fetchone()[0]:
            # Without USAGE the tables look missing, and creating them fails with a misleading error.
            raise StoreError(
                f"the database user {conn.info.user!r} has no USAGE privilege on the queue schema "
                f"{self.schema!r} in {self.display_url}; as its owner, run GRANT USAGE ON SCHEMA "
                f"{self.schema} TO {conn.info.user}, and grant SELECT, INSERT, UPDATE and DELETE on its tables"
            )
        self._configure(conn)
        version = None
        if conn.execute(sql.VERSION_TABLE_EXISTS).fetchone()[0]:
            version = conn.execute(sql.READ_VERSION).fetchone()[0]
        if version is not None and version > sql.SCHEMA_VERSION:
            raise StoreError(
                f"the queue schema {self.schema!r} in {self.display_url} has version {version}, "
                f"newer than this persistentq supports ({sql.SCHEMA_VERSION}); upgrade persistentq"
            )
        if version == sql.SCHEMA_VERSION:
            return
        for statement in sql.CREATE_TABLES:
            conn.execute(statement)
        conn.execute(sql.WRITE_VERSION, {"version": sql.SCHEMA_VERSION})
        log.info("created the queue schema %r (version %d) in %s", self.schema, sql.SCHEMA_VERSION,
                 self.display_url)

    def _configure(self, conn: psycopg.Connection) -> None:
        # The name passed SCHEMA_NAME, so it needs no quoting in search_path.
        conn.execute("SELECT set_config('search_path', %(schema)s, false)", {"schema": self.schema})
        if self._async_outcomes:
            setting = conn.execute(sql.SHOW_COMMIT_SETTING).fetchone()[0]
            if setting not in sql.COMMIT_SETTINGS:
                raise StoreError(f"{self.display_url} reports synchronous_commit {setting!r}, not one of "
                                 f"{sorted(sql.COMMIT_SETTINGS)}; set general.synchronous: full")
            self._durable_setting = setting
            conn.execute(sql.ASYNC_COMMIT_SESSION)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """Lend a pooled connection, raising StoreError when none comes within POOL_TIMEOUT_S."""
        from psycopg_pool import PoolTimeout

        if self._closed:
            raise StoreError(f"{self!r} is closed")
        # After a wait that timed out, and until a connection comes again, each call
        # waits only OUTAGE_TIMEOUT_S. Otherwise the calls queued one behind another
        # during an outage would each wait POOL_TIMEOUT_S, and so would a stop.
        timeout_s = OUTAGE_TIMEOUT_S if self._outage else POOL_TIMEOUT_S
        try:
            with self._pool.connection(timeout=timeout_s) as conn:
                self._outage = False
                yield conn
        except PoolTimeout as exc:
            self._outage = True
            raise DatabaseUnavailableError(
                f"no connection to {self.display_url} within {timeout_s:g} s: "
                "the server is down or unreachable, or every pooled connection is busy"
            ) from exc

    def _transaction(self, work: Callable[[psycopg.Connection], T], *, durable: bool = True) -> T:
        """Run `work(conn)` in one transaction and return its result.

        A connection that broke before COMMIT was sent is replaced and the
        work runs again, up to once per pooled connection (a terminated
        server process breaks each idle connection of the pool). A failure
        during COMMIT is raised, because the transaction may have committed.

        With `durable` False the work runs in autocommit mode, each statement
        its own transaction, and with synchronous "normal" without waiting
        for the WAL flush (see ASYNC_COMMIT_SESSION). Only reads, claims and
        outcomes may use it: a claim or outcome that runs again after a
        broken connection is safe, because the lease token rejects a second
        outcome and a lost claim's lease expires.
        """
        import psycopg

        attempts = self._pool.max_size + 1
        for attempt in range(1, attempts + 1):
            committing = False
            try:
                with self._connection() as conn:
                    try:
                        if not durable:
                            return work(conn)
                        begin = "BEGIN"
                        if self._async_outcomes:
                            begin = sql.BEGIN_DURABLE.format(setting=self._durable_setting)
                        conn.execute(begin)
                        try:
                            result = work(conn)
                        except BaseException:
                            if not conn.broken:
                                conn.execute("ROLLBACK")
                            raise
                        committing = True
                        conn.execute("COMMIT")
                        return result
                    except psycopg.OperationalError as exc:
                        if committing or not conn.broken or attempt == attempts:
                            raise
                        log.warning("connection to %s lost (%s); running the transaction again on "
                                    "another connection", self.display_url, _one_line(exc))
            except psycopg.Error as exc:
                raise self._store_error(exc, committing=committing) from exc
        raise AssertionError("unreachable")

    def _read(self, query: str, params: dict[str, Any] | None = None) -> list[tuple]:
        """Run one SELECT and return its rows, retried like a transaction when the connection broke."""
        return self._transaction(lambda conn: conn.execute(query, params).fetchall(), durable=False)

    def _store_error(self, exc: Exception, *, committing: bool) -> StoreError:
        reason = hide_password(_one_line(exc), self.url)
        if committing:
            return StoreError(
                f"the connection to {self.display_url} broke during COMMIT ({reason}); the last "
                "change may or may not have been written"
            )
        return StoreError(f"{self.display_url}: {reason}")

    def close(self) -> None:
        """Stop the LISTEN thread and close every pooled connection. Idempotent."""
        self._closed = True
        with self._listeners_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self._pool.close()

    # Put listeners and notifications.

    def add_put_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(queue)` after each put through this object, and after puts by other processes.

        Puts by other processes arrive through LISTEN on a thread of this
        store, which the first listener starts.
        """
        with self._listeners_lock:
            self._put_listeners.append(listener)
            if self._listener is None and not self._closed:
                self._listener = NotifyListener(
                    self.url, channel=self._channel, sender=self._sender,
                    on_put=self._notify_put, on_poll=self._poll_claimed_queues,
                    display_url=self.display_url,
                )
                self._listener.start()

    def remove_put_listener(self, listener: Callable[[str], None]) -> None:
        with self._listeners_lock:
            self._put_listeners.remove(listener)

    def wait_until_listening(self, timeout_s: float) -> bool:
        """Return True once the LISTEN thread is connected, False after `timeout_s` or without one."""
        listener = self._listener
        return listener is not None and listener.listening.wait(timeout_s)

    def _notify_put(self, queue: str) -> None:
        with self._listeners_lock:
            listeners = list(self._put_listeners)
        for listener in listeners:
            listener(queue)

    def _poll_claimed_queues(self) -> None:
        """Wake the listeners for every queue claimed from, while LISTEN is down and once it is back."""
        # In CPython set.copy runs without releasing the GIL, so a claim adding a queue
        # meanwhile cannot break the iteration.
        for queue in self._claimed_queues.copy():
            self._notify_put(queue)

    def _notice(self, queue: str) -> dict[str, str] | None:
        """Return the NOTIFY parameters of a put to `queue`, or None when its name is too long to send."""
        if len(queue.encode("utf-8")) > sql.MAX_NOTIFY_QUEUE_BYTES:
            return None
        return {"channel": self._channel, "notice": f"{self._sender}:{queue}"}

    def _send_notify(self, conn: psycopg.Connection, queue: str) -> None:
        notice = self._notice(queue)
        if notice is not None:
            conn.execute(sql.NOTIFY, notice)

    def _lock_unique_key(self, conn: psycopg.Connection, queue: str, unique_key: str) -> None:
        """Make puts and requeues of one unique key take turns until the commit.

        Without it, two of them could both find no active job with the key
        and both make one active.
        """
        conn.execute(sql.ADVISORY_XACT_LOCK, {"lock_name": f"persistentq key {queue} {unique_key}"})

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
        _check_storable(payload)
        check_put_options(priority, delay_s)
        params = {"queue": queue, "payload": payload, "priority": priority,
                  "delay_s": float(delay_s), "unique_key": unique_key}

        def insert(conn: psycopg.Connection) -> tuple[int, bool]:
            if unique_key is not None:
                self._lock_unique_key(conn, queue, unique_key)
                found = conn.execute(sql.FIND_ACTIVE_UNIQUE, params).fetchone()
                if found is not None:
                    return found[0], False
            notice = self._notice(queue)
            if notice is None:
                return conn.execute(sql.INSERT_JOB, params).fetchone()[0], True
            return conn.execute(sql.INSERT_JOB_NOTIFY, {**params, **notice}).fetchone()[0], True

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
            _check_storable(payload)
        check_put_options(priority, delay_s)
        if not payloads:
            return []
        params = {"queue": queue, "payloads": payloads, "priority": priority, "delay_s": float(delay_s)}

        def insert(conn: psycopg.Connection) -> list[int]:
            ids = [row[0] for row in conn.execute(sql.INSERT_MANY, params).fetchall()]
            self._send_notify(conn, queue)
            return sorted(ids)

        ids = self._transaction(insert)
        self._notify_put(queue)
        return ids

    def import_jobs(self, jobs: Sequence[Job], *, discarded_ids: Iterable[int] = ()) -> list[int]:
        """Copy queued or finished jobs from another store in one commit, all or none.

        Each job keeps its queue, payload, state, priority, attempts, times,
        error, result and unique key, and gets a new id. The new ids are
        returned in the order given. Jobs in `discarded_ids` are failed jobs
        whose leftovers were already removed. Raises InvalidStateError for a
        running job, because its lease belongs to the other store.
        """
        running = [job.id for job in jobs if job.state is JobState.RUNNING]
        if running:
            raise InvalidStateError(
                f"job {running[0]} is running; stop its worker first, because only queued "
                "or finished jobs can be imported"
            )
        for job in jobs:
            try:
                _check_storable(job.payload)
            except InvalidPayloadError as exc:
                raise InvalidPayloadError(f"job {job.id}: {exc}; nothing was imported") from None
        discarded = set(discarded_ids)
        batches = [jobs[start:start + IMPORT_BATCH] for start in range(0, len(jobs), IMPORT_BATCH)]

        def insert(conn: psycopg.Connection) -> list[int]:
            ids: list[int] = []
            for batch in batches:
                rows = conn.execute(sql.IMPORT_JOBS, _import_arrays(batch, discarded)).fetchall()
                ids += sorted(row[0] for row in rows)
            for queue in sorted({job.queue for job in jobs if job.state is JobState.QUEUED}):
                self._send_notify(conn, queue)
            return ids

        return self._transaction(insert) if jobs else []

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
        self._claimed_queues.add(queue)
        params = {"queue": queue, "limit": limit, "lease_s": float(lease_s),
                  "worker_id": worker_id, "max_attempts": max_attempts}

        def claim_batch(conn: psycopg.Connection) -> list[tuple]:
            # Expired leases are recovered only when the queue has too few
            # available jobs to fill the claim, which spares a busy queue one
            # statement per claim. The cleaner recovers them in a busy queue.
            rows = conn.execute(sql.CLAIM, params).fetchall()
            if len(rows) < limit and self._recover(conn, queue, max_attempts).requeued:
                rows += conn.execute(sql.CLAIM, {**params, "limit": limit - len(rows)}).fetchall()
            return rows

        rows = self._transaction(claim_batch, durable=False)
        # RETURNING gives rows in no set order, so restore the claim order.
        rows.sort(key=lambda row: (-row[3], row[6], row[0]))
        return [ClaimedJob(*row[:6]) for row in rows]

    def _recover(self, conn: psycopg.Connection, queue: str, max_attempts: int) -> Recovered:
        states = [row[0] for row in conn.execute(
            sql.RECOVER_EXPIRED, {"queue": queue, "max_attempts": max_attempts}
        ).fetchall()]
        recovered = Recovered(requeued=states.count("queued"), failed=states.count("failed"))
        if states:
            log.warning(
                "recovered jobs whose lease expired in queue %r: %d requeued, %d failed",
                queue, recovered.requeued, recovered.failed,
            )
        return recovered

    def recover_expired(self, *, queue: str = DEFAULT_QUEUE, max_attempts: int) -> Recovered:
        return self._transaction(lambda conn: self._recover(conn, queue, max_attempts))

    def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        if len({outcome.job_id for outcome in outcomes}) < len(outcomes):
            # Outcomes for one job must apply in order (the first one wins), so
            # each gets its own statement.
            groups = [[(position, outcome)] for position, outcome in enumerate(outcomes)]
        else:
            by_kind: dict[OutcomeKind, list[tuple[int, Outcome]]] = {}
            for position, outcome in enumerate(outcomes):
                by_kind.setdefault(outcome.kind, []).append((position, outcome))
            groups = list(by_kind.values())

        def write(conn: psycopg.Connection) -> list[bool]:
            matched = [False] * len(outcomes)
            for group in groups:
                query = _OUTCOME_SQL[group[0][1].kind]
                for row in conn.execute(query, _outcome_arrays([outcome for _, outcome in group])):
                    matched[group[row[0] - 1][0]] = True
            return matched

        return self._transaction(write, durable=False)

    def renew(self, leases: Sequence[tuple[int, str]], *, lease_s: float) -> list[bool]:
        if not leases:
            return []
        params = {"ids": [int(job_id) for job_id, _ in leases], "tokens": [token for _, token in leases],
                  "lease_s": float(lease_s)}

        def write(conn: psycopg.Connection) -> list[bool]:
            renewed = {row[0] - 1 for row in conn.execute(sql.RENEW, params)}
            return [position in renewed for position in range(len(leases))]

        return self._transaction(write)

    # Management.

    def _states_of(self, conn: psycopg.Connection, job_ids: list[int]) -> dict[int, JobState]:
        rows = conn.execute(sql.STATES_OF_IDS, {"ids": job_ids}).fetchall()
        states = {job_id: JobState(state) for job_id, state in rows}
        missing = sorted(set(job_ids) - states.keys())
        if missing:
            listed = ", ".join(map(str, missing[:10]))
            raise JobNotFoundError(f"no job with id {listed} in {self.display_url}")
        return states

    def cancel(self, job_ids: Iterable[int]) -> int:
        ids = [int(job_id) for job_id in job_ids]

        def write(conn: psycopg.Connection) -> int:
            self._states_of(conn, ids)
            return conn.execute(sql.CANCEL, {"ids": ids}).rowcount

        return self._transaction(write)

    def requeue(self, job_ids: Iterable[int], *, require_leftovers: bool = False) -> int:
        ids = [int(job_id) for job_id in job_ids]

        def write(conn: psycopg.Connection) -> tuple[int, list[str]]:
            states = self._states_of(conn, ids)
            wrong = {job_id: state for job_id, state in states.items()
                     if state not in (JobState.FAILED, JobState.CANCELLED)}
            if wrong:
                job_id, state = min(wrong.items())
                raise InvalidStateError(
                    f"job {job_id} is {state}; only failed or cancelled jobs can be requeued"
                )
            for queue, unique_key in conn.execute(sql.UNIQUE_KEYS_OF_IDS, {"ids": ids}).fetchall():
                self._lock_unique_key(conn, queue, unique_key)
            clash = conn.execute(sql.ACTIVE_KEY_CLASH, {"ids": ids}).fetchone()
            if clash:
                raise InvalidStateError(
                    f"job {clash[0]} cannot be requeued: job {clash[1]} with the same unique key "
                    "is queued or running"
                )
            discarded = conn.execute(sql.DISCARDED_OF_IDS, {"ids": ids}).fetchone() if require_leftovers else None
            if discarded:
                raise InvalidStateError(
                    f"job {discarded[0]} cannot be requeued: the cleaner already removed what it "
                    "left behind; put a new job instead"
                )
            requeued = conn.execute(sql.REQUEUE, {"ids": ids}).rowcount
            queues = [row[0] for row in conn.execute(sql.QUEUES_OF_IDS, {"ids": ids})] if requeued else []
            for queue in queues:
                self._send_notify(conn, queue)
            return requeued, queues

        requeued, queues = self._transaction(write)
        for queue in queues:
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
        params = {"queue": queue, "states": [state.value for state in states],
                  "older_than_s": float(older_than_s)}
        return self._transaction(lambda conn: conn.execute(sql.PURGE, params).rowcount)

    # Reading.

    def get(self, job_id: int) -> Job:
        rows = self._read(sql.GET_JOB, {"id": int(job_id)})
        if not rows:
            raise JobNotFoundError(f"no job with id {job_id} in {self.display_url}")
        return job_from_row(rows[0])

    def counts(self, *, queue: str = DEFAULT_QUEUE) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for state, count in self._read(sql.COUNTS, {"queue": queue}):
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
        params = {
            "queue": queue,
            "state": JobState(state).value if state is not None else None,
            "search": search,
            "since": float(since) if since is not None else None,
            "until": float(until) if until is not None else None,
            "limit": int(limit),
            "offset": int(offset),
        }
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
        return [job_from_row(row) for row in self._read(sql.FAILED_UNDISCARDED, {"queue": queue, "limit": limit})]

    def mark_discarded(self, job_ids: Iterable[int]) -> list[int]:
        params = {"ids": [int(job_id) for job_id in job_ids]}
        rows = self._transaction(lambda conn: conn.execute(sql.MARK_DISCARDED, params).fetchall())
        return sorted(row[0] for row in rows)

    # The worker registry.

    def register_worker(self, record: WorkerRecord) -> None:
        self.heartbeat([record])

    def heartbeat(self, records: Sequence[WorkerRecord]) -> None:
        if records:
            rows = [vars(record) for record in records]
            self._transaction(lambda conn: conn.cursor().executemany(sql.UPSERT_WORKER, rows))

    def workers(self) -> list[WorkerRecord]:
        return [WorkerRecord(*row) for row in self._read(sql.LIST_WORKERS)]

    def forget_workers(self, *, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        return self._transaction(lambda conn: conn.execute(sql.FORGET_WORKERS, {"cutoff": cutoff}).rowcount)


def _outcome_arrays(outcomes: Sequence[Outcome]) -> dict[str, list]:
    """Return the parallel arrays that the outcome statements unnest, one element per outcome."""
    return {
        "ids": [outcome.job_id for outcome in outcomes],
        "tokens": [outcome.lease_token for outcome in outcomes],
        "worker_ids": [outcome.worker_id for outcome in outcomes],
        "results": [_escape_nul(clip(outcome.result, MAX_RESULT_CHARS)) for outcome in outcomes],
        "errors": [_escape_nul(clip(outcome.error, MAX_ERROR_CHARS)) for outcome in outcomes],
        "delays": [float(outcome.delay_s) for outcome in outcomes],
    }


def _check_storable(payload: str) -> None:
    """Raise InvalidPayloadError for a payload with a NUL character, which PostgreSQL text cannot store."""
    position = payload.find("\x00")
    if position >= 0:
        raise InvalidPayloadError(
            f"payload has a NUL character (\\x00) at position {position}, which PostgreSQL text "
            "cannot store; encode binary data as text, for example with base64"
        )


def _escape_nul(text: str | None) -> str | None:
    """Return `text` with NUL characters written as \\x00, so one result or error cannot fail a grouped commit."""
    return None if text is None else text.replace("\x00", "\\x00")


def _import_arrays(jobs: Sequence[Job], discarded: set[int]) -> dict[str, list]:
    """Return the parallel arrays that IMPORT_JOBS unnests, one element per job."""
    return {
        "queues": [job.queue for job in jobs],
        "payloads": [job.payload for job in jobs],
        "states": [JobState(job.state).value for job in jobs],
        "priorities": [job.priority for job in jobs],
        "attempts": [job.attempts for job in jobs],
        "created": [job.created_at for job in jobs],
        "available": [job.available_at for job in jobs],
        "started": [job.started_at for job in jobs],
        "finished": [job.finished_at for job in jobs],
        "errors": [_escape_nul(job.last_error) for job in jobs],
        "results": [_escape_nul(job.result) for job in jobs],
        "unique_keys": [job.unique_key for job in jobs],
        "discarded": [job.id in discarded for job in jobs],
    }



def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
