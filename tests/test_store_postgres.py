"""What only the PostgreSQL store does: its schema, the database clock, lost connections, LISTEN/NOTIFY.

The shared contract runs in test_store_contract; these tests open stores in
schemas of their own in the session's test database.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from persistentq.errors import DatabaseUnavailableError, InvalidPayloadError, InvalidStateError, StoreError
from persistentq.store import JobState, Outcome, OutcomeKind
from persistentq.store import postgres_listener
from persistentq.store.postgres import PersistentQPostgres, pool_size, redact_url
from persistentq.store.postgres_schema import SCHEMA_VERSION
from postgres_server import fresh_schema_store, import_psycopg, schema_name

psycopg = import_psycopg()
from psycopg.conninfo import make_conninfo  # noqa: E402 - after the import check above

WAIT_S = 10.0
N_STARTERS = 8


@pytest.fixture
def pg_store(postgres_url: str, tmp_path: Path):
    store = fresh_schema_store(postgres_url, tmp_path)
    yield store
    store.close()


def admin_query(url: str, query: str, params: dict | None = None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def terminate_other_connections(url: str) -> int:
    """Terminate the server process of every other connection to the test database, as a restart would."""
    rows = admin_query(
        url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    count = 0
    for (pid,) in rows:
        count += admin_query(url, "SELECT pg_terminate_backend(%(pid)s)", {"pid": pid})[0][0]
    return count


# The schema.


def test_schema_created_with_version(pg_store, postgres_url):
    """Opening a store creates its schema with the jobs and workers tables and records the version."""
    tables = admin_query(
        postgres_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %(schema)s ORDER BY 1",
        {"schema": pg_store.schema},
    )
    assert [name for (name,) in tables] == ["jobs", "schema_version", "workers"]
    versions = admin_query(postgres_url, f"SELECT version FROM {pg_store.schema}.schema_version")
    assert versions == [(SCHEMA_VERSION,)]


def test_schema_reopen_keeps_jobs(pg_store, postgres_url):
    """A second store on the same schema finds the jobs and adds no second version row."""
    job_id = pg_store.put("kept")

    with PersistentQPostgres(postgres_url, schema=pg_store.schema) as again:
        assert again.get(job_id).payload == "kept"
    versions = admin_query(postgres_url, f"SELECT count(*) FROM {pg_store.schema}.schema_version")
    assert versions == [(1,)]


def test_schema_without_usage_privilege(pg_store, postgres_url):
    """A user without USAGE on an existing queue schema gets one line naming the GRANT to run."""
    role = f"t_role_{uuid.uuid4().hex[:10]}"
    admin_query(postgres_url, f'CREATE ROLE "{role}" LOGIN')
    try:
        with pytest.raises(StoreError) as caught:
            PersistentQPostgres(make_conninfo(postgres_url, user=role), schema=pg_store.schema)
    finally:
        admin_query(postgres_url, f'DROP ROLE "{role}"')

    message = str(caught.value)
    assert f"has no USAGE privilege on the queue schema '{pg_store.schema}'" in message
    assert f"GRANT USAGE ON SCHEMA {pg_store.schema} TO {role}" in message
    assert "\n" not in message


def test_schema_concurrent_starters(postgres_url, tmp_path):
    """Eight stores opening one new schema at the same moment all succeed, and it is created once."""
    schema = schema_name(tmp_path)
    barrier = threading.Barrier(N_STARTERS)

    def open_store(_: int) -> PersistentQPostgres:
        barrier.wait(timeout=WAIT_S)
        return PersistentQPostgres(postgres_url, schema=schema, max_connections=1)

    with ThreadPoolExecutor(N_STARTERS) as executor:
        stores = list(executor.map(open_store, range(N_STARTERS)))
    try:
        ids = [store.put(f"from store {n}") for n, store in enumerate(stores)]
        assert sorted(job.id for job in stores[0].jobs(limit=100)) == sorted(ids)
    finally:
        for store in stores:
            store.close()
    assert admin_query(postgres_url, f"SELECT count(*) FROM {schema}.schema_version") == [(1,)]


def test_schema_newer_version_rejected(pg_store, postgres_url):
    """A schema written by a newer persistentq is rejected with a message naming both versions."""
    admin_query(postgres_url, f"UPDATE {pg_store.schema}.schema_version SET version = {SCHEMA_VERSION + 1}")

    with pytest.raises(StoreError, match=rf"version {SCHEMA_VERSION + 1}, newer .*\({SCHEMA_VERSION}\); upgrade"):
        PersistentQPostgres(postgres_url, schema=pg_store.schema)


@pytest.mark.parametrize("schema", ["Public", "1abc", "a-b", "x" * 64, ""])
def test_schema_name_invalid(postgres_url, schema):
    """A schema name that is not a plain lower-case identifier is a ValueError naming it."""
    with pytest.raises(ValueError, match="schema must be"):
        PersistentQPostgres(postgres_url, schema=schema)


# Connecting.


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://postgres@127.0.0.1:1/postgres", "refused"),
        ("postgresql://postgres@127.0.0.1:notaport/postgres", "port"),
        ("postgresql://postgres@127.0.0.1/persistentq_no_such_database", "does not exist"),
    ],
)
def test_connect_failure_names_url(url, reason):
    """A server that cannot be reached raises DatabaseUnavailableError naming the URL and the reason."""
    with pytest.raises(DatabaseUnavailableError) as caught:
        PersistentQPostgres(url)

    message = str(caught.value)
    assert url in message
    assert reason in message
    assert "check general.database" in message


def test_connect_failure_hides_password():
    """The password of a URL never appears in an error message."""
    with pytest.raises(DatabaseUnavailableError) as caught:
        PersistentQPostgres("postgresql://postgres:hunter2@127.0.0.1:1/postgres")

    assert "hunter2" not in str(caught.value)
    assert "postgres:***@127.0.0.1:1" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgresql://host/db", "postgresql://host/db"),
        ("postgres://u:p:q@host:5/db?sslmode=require", "postgres://u:***@host:5/db?sslmode=require"),
        ("postgresql://u@host/db?sslmode=require&password=x%26y", "postgresql://u@host/db?sslmode=require&password=***"),
        ("postgresql://u@host/db?PASSWORD=secret", "postgresql://u@host/db?PASSWORD=***"),
    ],
)
def test_redact_url(url, shown):
    """redact_url replaces only the password."""
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres:s%40cret@[::1:5432/postgres", "postgresql://postgres@[::1:5432/postgres?password=s%40cret"],
    ids=["user-part", "parameter"],
)
def test_unparsable_url_hides_password(url):
    """libpq repeats a URL it cannot parse; the error shows neither the written nor the decoded password."""
    with pytest.raises(DatabaseUnavailableError) as caught:
        PersistentQPostgres(url)

    message = str(caught.value)
    assert "IPv6 host address" in message
    assert "s%40cret" not in message
    assert "s@cret" not in message


def test_url_scheme_any_case(postgres_url, tmp_path):
    """A URL whose scheme is in upper case, which the config accepts, opens the store."""
    scheme, _, rest = postgres_url.partition("://")
    with PersistentQPostgres(f"{scheme.upper()}://{rest}", schema=schema_name(tmp_path)) as store:
        job_id = store.put("upper")
        assert store.get(job_id).payload == "upper"
        assert store.url.startswith(f"{scheme}://")


def test_outage_calls_fail_fast_then_recover(postgres_url, tmp_path, monkeypatch):
    """Once a wait for a connection has timed out, later calls give up within OUTAGE_TIMEOUT_S until the server is back."""
    from persistentq.store import postgres

    monkeypatch.setattr(postgres, "POOL_TIMEOUT_S", 3.0)
    monkeypatch.setattr(postgres, "OUTAGE_TIMEOUT_S", 0.2)
    name = f"t_outage_{uuid.uuid4().hex[:10]}"
    admin_query(postgres_url, f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    store = PersistentQPostgres(url)
    try:
        job_id = store.put("kept")
        admin_query(postgres_url, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        admin_query(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %(name)s",
            {"name": name},
        )

        with pytest.raises(DatabaseUnavailableError, match="within 3 s"):
            store.counts()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError, match="within 0.2 s"):
            store.counts()
        assert time.monotonic() - started < 2.5

        admin_query(postgres_url, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                assert store.get(job_id).payload == "kept"
                break
            except DatabaseUnavailableError:
                assert time.monotonic() < deadline, "no connection within WAIT_S after the server came back"
                time.sleep(0.1)
        assert store.counts()[JobState.QUEUED] == 1
    finally:
        store.close()
        admin_query(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_pool_size_grows_with_workers():
    """The pool has a connection per worker and two more, and at least three."""
    assert pool_size(0) == 3
    assert pool_size(1) == 3
    assert pool_size(10) == 12


def test_repr_hides_password(postgres_url, tmp_path):
    """The store's repr shows the URL without its password."""
    url = postgres_url.replace("postgres@", "postgres:topsecret@")
    with fresh_schema_store(url, tmp_path) as store:
        assert "topsecret" not in repr(store)
        assert "postgres:***@" in repr(store)


# Times.


def test_times_from_database_clock(pg_store, postgres_url):
    """A job's times come from the server's clock, as the server reports it."""
    job_id = pg_store.put("clock")
    [(server_now,)] = admin_query(postgres_url, "SELECT extract(epoch FROM now())::double precision")

    created_at = pg_store.get(job_id).created_at
    assert server_now - 5 <= created_at <= server_now


def test_claim_lease_from_database_clock(pg_store):
    """A claim's lease expiry is its start plus lease_s, both from the database."""
    pg_store.put("leased")
    [claimed] = pg_store.claim(lease_s=12.5, worker_id="w", max_attempts=3)

    job = pg_store.get(claimed.id)
    assert job.lease_expires_at == pytest.approx(job.started_at + 12.5, abs=1e-6)


# Lost connections.


def test_terminated_connections_retried(pg_store, postgres_url):
    """Calls after every pooled connection was terminated from SQL succeed on new connections."""
    pg_store.put_many(["a", "b"])
    assert pg_store.counts()[JobState.QUEUED] == 2

    assert terminate_other_connections(postgres_url) >= 1

    job_id = pg_store.put("c")
    [claimed] = pg_store.claim(lease_s=30, worker_id="w", max_attempts=3)
    assert pg_store.ack(claimed.id, claimed.lease_token)
    assert pg_store.counts()[JobState.QUEUED] == 2
    assert pg_store.get(job_id).payload == "c"


def test_closed_store_raises(pg_store):
    """A call on a closed store raises StoreError; close is idempotent."""
    pg_store.close()
    pg_store.close()

    with pytest.raises(StoreError, match="closed"):
        pg_store.put("late")


# LISTEN/NOTIFY.


def test_listener_hears_other_store(pg_store, postgres_url):
    """A put through another store object, as from another process, reaches this store's put listeners."""
    heard: list[str] = []
    arrived = threading.Event()

    def listener(queue: str) -> None:
        heard.append(queue)
        arrived.set()

    pg_store.add_put_listener(listener)
    assert pg_store.wait_until_listening(WAIT_S)
    with PersistentQPostgres(postgres_url, schema=pg_store.schema) as other:
        other.put("remote", queue="mail")
        assert arrived.wait(WAIT_S), "no notification arrived"
    assert heard == ["mail"]


def test_listener_skips_own_puts(pg_store):
    """Puts through the listening store call its listeners once, not again when their NOTIFY comes back."""
    heard: list[str] = []
    pg_store.add_put_listener(heard.append)
    assert pg_store.wait_until_listening(WAIT_S)

    pg_store.put("mine", queue="own")
    time.sleep(0.5)  # Time for the store's own notification to come back, which must be skipped.

    assert heard == ["own"]


def test_listener_other_schema_silent(pg_store, postgres_url, tmp_path):
    """Puts in another schema of the same database do not wake this store's listeners."""
    heard: list[str] = []
    pg_store.add_put_listener(heard.append)
    assert pg_store.wait_until_listening(WAIT_S)

    with fresh_schema_store(postgres_url, tmp_path / "other") as other:
        other.put("elsewhere")
        other.add_put_listener(lambda queue: None)
        time.sleep(0.5)

    assert heard == []


def test_listener_reconnects_after_termination(pg_store, postgres_url, caplog, monkeypatch):
    """A terminated LISTEN connection is logged, replaced, and notifications arrive again."""
    monkeypatch.setattr(postgres_listener, "BACKOFF_FIRST_S", 0.1)
    heard: list[str] = []
    arrived = threading.Event()

    def listener(queue: str) -> None:
        heard.append(queue)
        arrived.set()

    caplog.set_level(logging.WARNING, logger="persistentq.store.postgres_listener")
    pg_store.claim(queue="polled", lease_s=30, worker_id="w", max_attempts=3)
    pg_store.add_put_listener(listener)
    assert pg_store.wait_until_listening(WAIT_S)

    terminate_other_connections(postgres_url)
    deadline = time.monotonic() + WAIT_S
    while pg_store._listener.reconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pg_store._listener.reconnects == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any("LISTEN connection" in message and "failed (attempt 1)" in message for message in messages), messages
    assert any("restored" in message for message in messages), messages
    # After an outage the listener wakes every queue claimed from, since puts may have been missed.
    assert "polled" in heard

    heard.clear()
    arrived.clear()
    with PersistentQPostgres(postgres_url, schema=pg_store.schema) as other:
        other.put("after", queue="mail")
        assert arrived.wait(WAIT_S), "no notification after the reconnect"
    assert heard == ["mail"]


def test_listener_backoff_restarts_after_reconnect(pg_store, postgres_url, caplog, monkeypatch):
    """Each loss of a LISTEN connection that had been restored is attempt 1 again, with the first backoff."""
    monkeypatch.setattr(postgres_listener, "BACKOFF_FIRST_S", 0.1)
    caplog.set_level(logging.WARNING, logger="persistentq.store.postgres_listener")
    pg_store.add_put_listener(lambda queue: None)
    assert pg_store.wait_until_listening(WAIT_S)

    for round_number in range(1, 4):
        terminate_other_connections(postgres_url)
        deadline = time.monotonic() + WAIT_S
        while pg_store._listener.reconnects < round_number and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pg_store._listener.reconnects == round_number

    failures = [record.getMessage() for record in caplog.records if "failed (attempt" in record.getMessage()]
    assert len(failures) == 3, failures
    assert all("failed (attempt 1)" in message for message in failures), failures


def test_listener_polls_while_server_unreachable(caplog, monkeypatch):
    """While LISTEN cannot connect, each attempt is logged with its backoff, and on_poll runs meanwhile."""
    monkeypatch.setattr(postgres_listener, "BACKOFF_FIRST_S", 0.1)
    monkeypatch.setattr(postgres_listener, "FALLBACK_POLL_S", 0.1)
    caplog.set_level(logging.WARNING, logger="persistentq.store.postgres_listener")
    polls = threading.Semaphore(0)
    unreachable = "postgresql://postgres@127.0.0.1:1/postgres"  # no server listens on port 1
    listener = postgres_listener.NotifyListener(
        unreachable, channel="persistentq_test", sender="me", on_put=lambda queue: None,
        on_poll=polls.release, display_url=unreachable,
    )
    listener.start()
    try:
        for poll in range(3):
            assert polls.acquire(timeout=WAIT_S), f"poll {poll + 1} did not come while LISTEN was down"
    finally:
        listener.stop()

    attempts = [record.getMessage() for record in caplog.records if "failed (attempt" in record.getMessage()]
    assert len(attempts) >= 2, attempts
    assert unreachable in attempts[0]
    assert "attempt 1)" in attempts[0]
    assert "attempt 2 in 0.1 s" in attempts[0]
    assert "attempt 2)" in attempts[1]
    assert "attempt 3 in 0.2 s" in attempts[1]
    assert not listener.listening.is_set()


# NUL characters, which PostgreSQL text cannot store.


def test_put_nul_payload_rejected(pg_store):
    """A payload with a NUL character is an InvalidPayloadError naming its position, and nothing is added."""
    with pytest.raises(InvalidPayloadError, match=r"NUL character \(\\x00\) at position 3"):
        pg_store.put("abc\x00def")
    with pytest.raises(InvalidPayloadError, match="base64"):
        pg_store.put_many(["fine", "bad\x00"])

    assert sum(pg_store.counts().values()) == 0


def test_settle_nul_error_escaped(pg_store):
    """An error text with a NUL character is stored escaped, and the other outcomes of its commit are written."""
    pg_store.put_many(["a", "b"])
    first, second = pg_store.claim(limit=2, lease_s=30, worker_id="w", max_attempts=3)

    matched = pg_store.settle([
        Outcome(OutcomeKind.FAIL, first.id, first.lease_token, error="bad byte \x00 here"),
        Outcome(OutcomeKind.ACK, second.id, second.lease_token, result="out\x00put"),
    ])

    assert matched == [True, True]
    assert pg_store.get(first.id).last_error == "bad byte \\x00 here"
    assert pg_store.get(second.id).result == "out\\x00put"


# Concurrent callers.


def test_unique_key_concurrent_puts(pg_store, postgres_url):
    """Eight stores putting one unique key at the same moment add one job, and all get its id."""
    stores = [PersistentQPostgres(postgres_url, schema=pg_store.schema, max_connections=1)
              for _ in range(N_STARTERS)]
    barrier = threading.Barrier(N_STARTERS)

    def put(store: PersistentQPostgres) -> int:
        barrier.wait(timeout=WAIT_S)
        return store.put("only once", unique_key="k")

    try:
        with ThreadPoolExecutor(N_STARTERS) as executor:
            ids = list(executor.map(put, stores))
    finally:
        for store in stores:
            store.close()

    assert len(set(ids)) == 1, ids
    assert pg_store.counts()[JobState.QUEUED] == 1


def test_concurrent_claims_distinct(pg_store, postgres_url):
    """Eight stores claiming batches at once from one queue never get the same job, and get them all."""
    ids = pg_store.put_many([f"job {n}" for n in range(400)])
    stores = [PersistentQPostgres(postgres_url, schema=pg_store.schema, max_connections=1)
              for _ in range(N_STARTERS)]
    barrier = threading.Barrier(N_STARTERS)

    def drain(store: PersistentQPostgres) -> list[int]:
        barrier.wait(timeout=WAIT_S)
        claimed = []
        while jobs := store.claim(limit=7, lease_s=30, worker_id="w", max_attempts=3):
            claimed += [job.id for job in jobs]
        return claimed

    try:
        with ThreadPoolExecutor(N_STARTERS) as executor:
            batches = list(executor.map(drain, stores))
    finally:
        for store in stores:
            store.close()

    claimed = [job_id for batch in batches for job_id in batch]
    assert len(claimed) == len(set(claimed)), "a job was claimed twice"
    assert sorted(claimed) == ids
    assert pg_store.counts()[JobState.RUNNING] == 400


def test_unique_key_put_races_requeue(pg_store, postgres_url):
    """A put and a requeue of one unique key at the same moment leave one active job with that key."""
    for round_number in range(10):
        key = f"k{round_number}"
        cancelled = pg_store.put("old", unique_key=key)
        pg_store.cancel([cancelled])
        with PersistentQPostgres(postgres_url, schema=pg_store.schema, max_connections=1) as other:
            barrier = threading.Barrier(2)

            def requeue() -> str:
                barrier.wait(timeout=WAIT_S)
                try:
                    pg_store.requeue([cancelled])
                except InvalidStateError:
                    return "rejected"
                return "requeued"

            def put() -> int:
                barrier.wait(timeout=WAIT_S)
                return other.put("new", unique_key=key)

            with ThreadPoolExecutor(2) as executor:
                requeued = executor.submit(requeue)
                put_id = executor.submit(put).result(timeout=WAIT_S)
                outcome = requeued.result(timeout=WAIT_S)

        active = [job for job in pg_store.jobs(limit=100)
                  if job.unique_key == key and job.state is JobState.QUEUED]
        assert len(active) == 1, (outcome, active)
        expected = cancelled if outcome == "requeued" else put_id
        assert active[0].id == expected


# Durability of claims and outcomes.


@pytest.mark.parametrize(("synchronous", "expected"), [("normal", "off"), ("full", "on")])
def test_outcome_commit_follows_synchronous(postgres_url, tmp_path, synchronous, expected):
    """Claims and outcomes skip the WAL flush under "normal" only, while puts always wait for it."""
    store = fresh_schema_store(postgres_url, tmp_path, synchronous=synchronous)

    def setting(conn) -> str:
        return conn.execute("SHOW synchronous_commit").fetchone()[0]

    try:
        assert store._transaction(setting, durable=False) == expected
        assert store._transaction(setting) == "on"
    finally:
        store.close()


def test_bad_synchronous_rejected(postgres_url, tmp_path):
    """A synchronous value other than normal or full is a ValueError naming it."""
    with pytest.raises(ValueError, match="'sometimes'"):
        fresh_schema_store(postgres_url, tmp_path, synchronous="sometimes")
