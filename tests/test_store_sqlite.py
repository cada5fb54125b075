"""SQLite-only behaviour of PersistentQSQLite: schema version, WAL, the claim index, concurrency."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from persistentq.errors import StoreError
from persistentq.store import JobState, Outcome, OutcomeKind, PersistentQSQLite
from persistentq.store import checks
from persistentq.store import sqlite_schema as sql

LEASE_S = 60.0
MAX_ATTEMPTS = 3
THREAD_TIMEOUT_S = 60.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.sqlite3"


@pytest.fixture
def sqlite_store(db_path: Path):
    store = PersistentQSQLite(db_path)
    try:
        yield store
    finally:
        store.close()


def pragma(path: Path, name: str) -> object:
    """Read one PRAGMA through a connection of our own, not the store's."""
    with sqlite3.connect(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


def claim_and_ack_all(store: PersistentQSQLite, worker_id: str, limit: int) -> list[int]:
    """Claim and ack jobs until the queue is empty, and return the ids claimed."""
    claimed: list[int] = []
    while True:
        jobs = store.claim(limit=limit, lease_s=LEASE_S, worker_id=worker_id, max_attempts=MAX_ATTEMPTS)
        if not jobs:
            return claimed
        matched = store.settle([Outcome(OutcomeKind.ACK, job.id, job.lease_token) for job in jobs])
        assert all(matched), f"{worker_id} lost the lease of a job it had just claimed"
        claimed += [job.id for job in jobs]


# Schema and connection settings


def test_schema_version_in_user_version(sqlite_store, db_path):
    """A new file records the schema version in PRAGMA user_version."""
    assert pragma(db_path, "user_version") == sql.SCHEMA_VERSION


def test_newer_schema_version_raises(db_path):
    """A file written by a newer persistentq raises StoreError naming both versions."""
    newer = sql.SCHEMA_VERSION + 1
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {newer}")

    with pytest.raises(StoreError) as caught:
        PersistentQSQLite(db_path)

    message = str(caught.value)
    assert f"schema version {newer}" in message
    assert f"({sql.SCHEMA_VERSION})" in message
    assert pragma(db_path, "user_version") == newer


def test_journal_mode_is_wal(sqlite_store, db_path):
    """The store switches the file to WAL mode."""
    sqlite_store.put("hello")

    assert pragma(db_path, "journal_mode") == "wal"


@pytest.mark.parametrize(("setting", "level"), [("normal", 1), ("full", 2)])
def test_synchronous_setting_applied(db_path, setting, level):
    """The `synchronous` argument sets PRAGMA synchronous on the store's connections."""
    store = PersistentQSQLite(db_path, synchronous=setting)
    try:
        # PRAGMA synchronous is per connection, so only the store's own connection shows it.
        with store._connection() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
    finally:
        store.close()


def test_synchronous_invalid_raises(db_path):
    """An unknown `synchronous` value raises ValueError naming the value."""
    with pytest.raises(ValueError, match="'off'"):
        PersistentQSQLite(db_path, synchronous="off")


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-stats", "after-analyze"])
def test_claim_plan_uses_claim_index(sqlite_store, db_path, analyzed):
    """The claim's SELECT walks jobs_claim_order in claim order with no sort step, with or without ANALYZE."""
    ids = sqlite_store.put_many([f"job {n}" for n in range(3000)])
    sqlite_store.cancel(ids[:2000])
    if analyzed:
        with sqlite3.connect(db_path) as conn:
            conn.execute("ANALYZE")
    match = re.search(r"WHERE id IN \((.*)\)\s*RETURNING", sql.CLAIM, re.DOTALL)
    assert match, "the claim statement no longer has the shape UPDATE ... WHERE id IN (SELECT ...)"
    params = {"queue": "default", "now": time.time(), "limit": 10, "lease_s": 1.0, "worker_id": "w", "max_attempts": 3}

    with sqlite3.connect(db_path) as conn:
        inner_plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + match.group(1), params)]
        full_plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql.CLAIM, params)]

    assert any("jobs_claim_order" in step for step in inner_plan), inner_plan
    assert not any("TEMP B-TREE" in step for step in inner_plan), inner_plan
    assert any("jobs_claim_order" in step for step in full_plan), full_plan
    assert not any("TEMP B-TREE" in step for step in full_plan), full_plan


# Durability


def test_data_survives_reopen(db_path):
    """Jobs, their states and open leases are the same after closing and reopening the file."""
    store = PersistentQSQLite(db_path)
    done_id, running_id, queued_id = store.put_many(["done", "running", "queued"])
    done, running = store.claim(limit=2, lease_s=LEASE_S, worker_id="w", max_attempts=MAX_ATTEMPTS)
    assert store.ack(done.id, done.lease_token, result="out")
    before = [store.get(job_id) for job_id in (done_id, running_id, queued_id)]
    store.close()

    reopened = PersistentQSQLite(db_path)
    try:
        assert [reopened.get(job_id) for job_id in (done_id, running_id, queued_id)] == before
        assert reopened.counts()[JobState.RUNNING] == 1
        assert reopened.ack(running.id, running.lease_token) is True
    finally:
        reopened.close()


def test_closed_store_raises(db_path):
    """Reads and writes on a closed store raise StoreError."""
    store = PersistentQSQLite(db_path)
    store.put("hello")
    store.close()

    with pytest.raises(StoreError, match="closed"):
        store.put("again")
    with pytest.raises(StoreError, match="closed"):
        store.counts()


def test_put_waits_for_write_lock(sqlite_store, db_path):
    """A put waits while another connection holds the write lock, then commits."""
    sqlite_store.put("first")
    finished = threading.Event()
    errors: list[BaseException] = []

    def put_second() -> None:
        try:
            sqlite_store.put("second")
        except BaseException as exc:  # handed to the test thread, which fails on it
            errors.append(exc)
        finally:
            finished.set()

    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        thread = threading.Thread(target=put_second)
        thread.start()
        assert not finished.wait(timeout=0.3), "put committed while another connection held the lock"
        blocker.execute("COMMIT")
        assert finished.wait(timeout=THREAD_TIMEOUT_S)
        thread.join(timeout=THREAD_TIMEOUT_S)
    finally:
        blocker.close()

    assert errors == []
    assert sqlite_store.counts()[JobState.QUEUED] == 2


# Concurrency


def test_threads_claim_distinct_jobs(sqlite_store):
    """Eight threads claiming from one store object never share a job, and none is lost."""
    n_threads, n_jobs = 8, 400
    job_ids = sqlite_store.put_many([f"job {n}" for n in range(n_jobs)])
    start = threading.Barrier(n_threads, timeout=THREAD_TIMEOUT_S)
    claimed: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def consume(index: int) -> None:
        try:
            start.wait()
            claimed[index] = claim_and_ack_all(sqlite_store, f"thread-{index}", limit=3)
        except BaseException as exc:  # handed to the test thread, which fails on it
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(index,)) for index in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=THREAD_TIMEOUT_S)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    all_claimed = [job_id for ids in claimed.values() for job_id in ids]
    assert len(all_claimed) == len(set(all_claimed)), "a job was claimed twice"
    assert sorted(all_claimed) == job_ids
    assert sqlite_store.counts()[JobState.DONE] == n_jobs


def test_threads_put_many_ids_match_payloads(sqlite_store):
    """Concurrent put_many calls from several threads each get the ids of their own rows."""
    n_threads, batch = 8, 50
    start = threading.Barrier(n_threads, timeout=THREAD_TIMEOUT_S)
    returned: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def produce(index: int) -> None:
        try:
            start.wait()
            returned[index] = sqlite_store.put_many([f"{index}:{n}" for n in range(batch)])
        except BaseException as exc:  # handed to the test thread, which fails on it
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(index,)) for index in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=THREAD_TIMEOUT_S)

    assert errors == []
    assert len(returned) == n_threads
    for index, ids in returned.items():
        payloads = [sqlite_store.get(job_id).payload for job_id in ids]
        assert payloads == [f"{index}:{n}" for n in range(batch)]


def run_children_together(code: str, args: list[list[str]]) -> list[str]:
    """Run `python -c code` once per argument list, release the children together, return their outputs.

    Each child prints one line when it is ready and then waits for a line on
    stdin, so all of them start their real work at the same moment.
    """
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, *child_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for child_args in args
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=THREAD_TIMEOUT_S) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    for child, (_, stderr) in zip(children, outputs):
        assert child.returncode == 0, stderr
    return [stdout for stdout, _ in outputs]


# A child that claims and acks until the queue is empty, then prints the ids.
CHILD_CONSUMER = """
import json, sys
from persistentq.store import Outcome, OutcomeKind, PersistentQSQLite

store = PersistentQSQLite(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
claimed = []
while True:
    jobs = store.claim(limit=2, lease_s=60, worker_id=sys.argv[2], max_attempts=3)
    if not jobs:
        break
    matched = store.settle([Outcome(OutcomeKind.ACK, job.id, job.lease_token) for job in jobs])
    if not all(matched):
        sys.exit("lost the lease of a job just claimed")
    claimed += [job.id for job in jobs]
store.close()
print(json.dumps(claimed), flush=True)
"""

# A child that opens a store on a file that may not exist yet and puts jobs.
CHILD_CREATOR = """
import json, sys
from persistentq.store import PersistentQSQLite

print("ready", flush=True)
sys.stdin.readline()
store = PersistentQSQLite(sys.argv[1])
ids = store.put_many(["job"] * 10)
store.close()
print(json.dumps(ids), flush=True)
"""


def test_processes_claim_distinct_jobs(sqlite_store, db_path):
    """Store objects in separate processes claiming from one file never share a job."""
    n_processes, n_jobs = 4, 600
    job_ids = sqlite_store.put_many([f"job {n}" for n in range(n_jobs)])

    outputs = run_children_together(
        CHILD_CONSUMER, [[str(db_path), f"process-{index}"] for index in range(n_processes)]
    )

    claimed = [job_id for output in outputs for job_id in json.loads(output)]
    assert len(claimed) == len(set(claimed)), "a job was claimed by two processes"
    assert sorted(claimed) == job_ids
    assert sqlite_store.counts()[JobState.DONE] == n_jobs


def test_processes_create_file_together(db_path):
    """Processes that open a new file at the same moment all create or reuse one schema."""
    n_processes = 6

    outputs = run_children_together(CHILD_CREATOR, [[str(db_path)]] * n_processes)

    ids = [job_id for output in outputs for job_id in json.loads(output)]
    assert len(set(ids)) == 10 * n_processes
    assert pragma(db_path, "user_version") == sql.SCHEMA_VERSION


def test_creates_missing_folder(tmp_path):
    """The store creates the folders above a new database file."""
    path = tmp_path / "a" / "b" / "queue.sqlite3"

    store = PersistentQSQLite(path)
    try:
        store.put("hello")
    finally:
        store.close()

    assert path.is_file()


# Checks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/mounts, Linux only")
def test_filesystem_type_of_real_path(tmp_path):
    """filesystem_type names the filesystem under a real folder."""
    fs_type = checks.filesystem_type(tmp_path)

    assert isinstance(fs_type, str)
    assert fs_type


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/mounts, Linux only")
def test_filesystem_type_prefers_deepest_mount():
    """filesystem_type takes the deepest mount point that contains the path, not the root."""
    assert checks.filesystem_type(Path("/proc")) == "proc"
    assert checks.filesystem_type(Path("/proc/self")) == "proc"


@pytest.mark.parametrize("fs_type", ["nfs", "nfs4", "cifs", "fuse.sshfs"])
def test_check_local_filesystem_rejects_network(monkeypatch, tmp_path, fs_type):
    """check_local_filesystem raises StoreError naming a network filesystem under the file."""
    monkeypatch.setattr(checks, "filesystem_type", lambda path: fs_type)

    with pytest.raises(StoreError, match=re.escape(f"({fs_type})")):
        checks.check_local_filesystem(tmp_path / "queue.sqlite3")


@pytest.mark.parametrize("fs_type", ["ext4", "tmpfs", None])
def test_check_local_filesystem_accepts_local(monkeypatch, tmp_path, fs_type):
    """check_local_filesystem accepts a local filesystem, or an unknown one off Linux."""
    monkeypatch.setattr(checks, "filesystem_type", lambda path: fs_type)

    checks.check_local_filesystem(tmp_path / "queue.sqlite3")


def test_clip_keeps_end():
    """clip cuts long text to max_chars, keeping the end after a marker."""
    clipped = checks.clip("abcdefghij", 8)

    assert clipped == "[...]hij"
    assert len(clipped) == 8


@pytest.mark.parametrize("text", [None, "", "abc", "abcdefgh"], ids=["None", "empty", "short", "exact"])
def test_clip_leaves_short_text(text):
    """clip returns None and text of at most max_chars unchanged."""
    assert checks.clip(text, 8) == text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay_s": float("nan")}, "delay_s must be a finite number"),
        ({"delay_s": float("inf")}, "delay_s must be a finite number"),
        ({"delay_s": -1}, "delay_s must be a finite number"),
        ({"priority": 2**70}, "priority must be between"),
    ],
)
def test_put_rejects_bad_options(tmp_path, options, message):
    """put and put_many reject a delay or priority SQLite cannot store, and add nothing."""
    store = PersistentQSQLite(tmp_path / "queue.sqlite3")
    with pytest.raises(ValueError, match=message):
        store.put("a", **options)
    with pytest.raises(ValueError, match=message):
        store.put_many(["a"], **options)

    assert sum(store.counts().values()) == 0
    store.close()


def test_open_non_database_file(tmp_path):
    """Opening a file that is not a SQLite database raises StoreError with the path and the fix."""
    path = tmp_path / "config.yaml"
    path.write_text("consumer:\n  n_tries: 3\n" * 100)

    with pytest.raises(StoreError, match="is not a SQLite database.*set general.database"):
        PersistentQSQLite(path)
    assert path.read_text().startswith("consumer:")


def test_open_directory_as_database(tmp_path):
    """Opening a folder as the database raises StoreError saying a file is needed."""
    with pytest.raises(StoreError, match="not a folder"):
        PersistentQSQLite(tmp_path)


def test_undiscarded_plan_uses_partial_index(sqlite_store, db_path):
    """The cleaner's query for failed jobs to discard uses jobs_undiscarded, not a scan."""
    params = ("default", 100)
    with sqlite3.connect(db_path) as conn:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql.FAILED_UNDISCARDED, params)]

    assert any("jobs_undiscarded" in step for step in plan), plan


def test_bad_unicode_result_keeps_group(sqlite_store):
    """An ack whose result has a lone surrogate is stored escaped and does not sink the acks beside it."""
    sqlite_store.put_many(["a", "b"])
    first, second = sqlite_store.claim(limit=2, lease_s=30, worker_id="w", max_attempts=3)
    outcomes = [
        Outcome(OutcomeKind.ACK, first.id, first.lease_token, result="out-\udcff"),
        Outcome(OutcomeKind.ACK, second.id, second.lease_token, result="fine"),
    ]

    assert sqlite_store.settle(outcomes) == [True, True]
    assert sqlite_store.get(first.id).result == "out-\\udcff"
    assert sqlite_store.get(second.id).state == JobState.DONE


@pytest.mark.parametrize("with_state", [False, True], ids=["all-states", "one-state"])
def test_page_plan_needs_no_sort(sqlite_store, db_path, with_state):
    """A page of jobs, newest first, is read in index order with no sort step."""
    sqlite_store.put_many([f"job {n}" for n in range(500)])
    query = sql.page_query(with_state=with_state, with_search=False)
    params = ("default", "queued", 10, 0) if with_state else ("default", 10, 0)
    with sqlite3.connect(db_path) as conn:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query, params)]

    assert not any("TEMP B-TREE" in step for step in plan), plan


def test_close_while_threads_use_store(db_path):
    """Closing the store while other threads use it ends their calls with StoreError, never a crash."""
    script = f"""
import threading, sys
from persistentq.errors import StoreError
from persistentq.store import PersistentQSQLite
store = PersistentQSQLite({str(db_path)!r})
started = threading.Barrier(5)
errors = []
def hammer():
    started.wait()
    try:
        while True:
            store.put("x")
            store.counts()
    except StoreError as exc:
        errors.append(str(exc))
threads = [threading.Thread(target=hammer) for _ in range(4)]
for thread in threads:
    thread.start()
started.wait()
import time; time.sleep(0.3)
store.close()
for thread in threads:
    thread.join(10)
print(len(errors))
"""
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "4", done.stdout + done.stderr


def test_check_health_notices_deleted_file(db_path):
    """check_health raises StoreError once the database file is deleted or replaced, not before."""
    store = PersistentQSQLite(db_path)
    store.put("a")
    store.check_health()

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(StoreError, match="deleted or replaced"):
        store.check_health()

    PersistentQSQLite(db_path).close()
    with pytest.raises(StoreError, match="deleted or replaced"):
        store.check_health()
    store.close()


def test_deleted_file_stops_puts_and_claims(db_path):
    """Puts and claims raise StoreError once the file is gone, instead of working in a file no other process can see."""
    store = PersistentQSQLite(db_path)
    store.put("before")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)

    with pytest.raises(StoreError, match="deleted or replaced"):
        store.put("lost")
    with pytest.raises(StoreError, match="deleted or replaced"):
        store.put_many(["lost", "too"])
    with pytest.raises(StoreError, match="deleted or replaced"):
        store.claim(lease_s=30, worker_id="w", max_attempts=3)
    store.close()
