"""`basic` on PostgreSQL: the management commands, connection errors, and `basic migrate` from SQLite."""

from __future__ import annotations

import socket
import sqlite3
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from persistentq.cli import main
from persistentq.store.base import JobState
from persistentq.store.postgres import PersistentQPostgres
from persistentq.store.sqlite import PersistentQSQLite

REFUSED_URL = "postgresql://postgres@127.0.0.1:1/postgres"  # no server listens on port 1


@pytest.fixture
def queue() -> str:
    return f"cli_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def config_file(tmp_path: Path, postgres_url: str, queue: str) -> Path:
    """A config whose queue is in the test database, on a queue of this test's own."""
    path = tmp_path / "config.yaml"
    path.write_text(f"general:\n  primary_path: data\n  database: {postgres_url}\n  queue: {queue}\n")
    return path


@pytest.fixture
def pg(postgres_url: str):
    store = PersistentQPostgres(postgres_url)
    yield store
    store.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def basic(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_enqueue_and_jobs(config_file, pg, queue):
    """enqueue puts jobs in PostgreSQL, and jobs lists them newest first."""
    result = basic("enqueue", "--config", str(config_file), "a", "b", "--priority", "3")
    assert result.exit_code == 0, result.output
    ids = [int(line) for line in result.output.split()]
    assert [pg.get(job_id).payload for job_id in ids] == ["a", "b"]
    assert {pg.get(job_id).queue for job_id in ids} == {queue}

    listed = basic("jobs", "--config", str(config_file))
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[2].split()[:2] == [str(ids[1]), "queued"]
    assert lines[3].split()[:2] == [str(ids[0]), "queued"]


def test_status_counts(config_file, pg, queue):
    """status shows the queue's counts per state and the redacted database."""
    pg.put_many(["a", "b"], queue=queue)
    cancelled = pg.put("c", queue=queue)
    pg.cancel([cancelled])

    result = basic("status", "--config", str(config_file))

    assert result.exit_code == 0, result.output
    assert "PersistentQPostgres(" in result.output
    rows = dict(line.split() for line in result.output.splitlines()[1:8] if line.split()[0] in
                {state.value for state in JobState})
    assert rows == {"queued": "2", "running": "0", "done": "0", "failed": "0", "cancelled": "1"}


def test_cancel_retry_purge(config_file, pg, queue):
    """cancel, retry and purge change the PostgreSQL queue as they change a SQLite one."""
    job_id = pg.put("x", queue=queue)
    assert basic("cancel", "--config", str(config_file), str(job_id)).exit_code == 0
    assert pg.get(job_id).state is JobState.CANCELLED

    assert basic("retry", "--config", str(config_file), str(job_id)).exit_code == 0
    assert pg.get(job_id).state is JobState.QUEUED

    pg.cancel([job_id])
    result = basic("purge", "--config", str(config_file))
    assert result.exit_code == 0, result.output
    assert "purged 1 jobs" in result.output
    assert pg.counts(queue=queue) == dict.fromkeys(JobState, 0)


def test_database_from_environment(tmp_path, postgres_url, pg):
    """PERSISTENTQ_DATABASE points the commands at PostgreSQL when the config names no database."""
    queue_config = tmp_path / "config.yaml"
    queue_config.write_text("general:\n  queue: from_env\n")

    result = basic("enqueue", "--config", str(queue_config), "env job",
                   env={"PERSISTENTQ_DATABASE": postgres_url})

    assert result.exit_code == 0, result.output
    assert pg.get(int(result.output)).queue == "from_env"
    assert not (tmp_path / "queue.sqlite3").exists()


@pytest.mark.parametrize(
    "command",
    [["status"], ["jobs"], ["enqueue", "a"], ["cancel", "1"], ["retry", "1"], ["purge"],
     ["run", "--duration", "1"], ["web-app", "--port", str(free_port())], ["migrate", "--from", "missing.sqlite3"]],
    ids=lambda command: command[0],
)
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (REFUSED_URL, "Connection refused"),
        ("postgresql://postgres@127.0.0.1:notaport/postgres", "notaport"),
        ("postgresql://postgres:s3cret@127.0.0.1:1/postgres", "Connection refused"),
        # libpq repeats a URL that it cannot parse in its message.
        ("postgresql://postgres:s3cret@[::1:5432/postgres", "IPv6 host address"),
        ("postgresql://postgres@127.0.0.1:1/postgres?password=s3cret", "Connection refused"),
    ],
    ids=["refused", "bad-port", "password", "unparsable-with-password", "password-parameter"],
)
def test_unreachable_database_exit_2(tmp_path, command, url, reason):
    """A refused connection or a malformed URL ends every command with one error line and exit 2."""
    config = tmp_path / "config.yaml"
    config.write_text(f"general:\n  database: '{url}'\n")

    result = basic(command[0], "--config", str(config), *command[1:])

    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "cannot connect to the PostgreSQL database" in errors[0]
    assert reason in errors[0]
    assert "Traceback" not in result.output
    assert "s3cret" not in result.output


# basic migrate


def sqlite_queue(path: Path) -> tuple[PersistentQSQLite, dict[str, int]]:
    """Build a SQLite queue with jobs in every state and return it with the ids by payload."""
    store = PersistentQSQLite(path)
    ids = {
        "first": store.put("first"),
        "urgent": store.put("urgent", priority=9),
        "later": store.put("later", delay_s=3600),
        "keyed": store.put("keyed", unique_key="k1"),
    }
    for payload, error in (("broken", "ValueError: broken"), ("gone", "OSError: gone")):
        ids[payload] = store.put(payload, priority=100)
        for attempt in range(1, 4):
            [job] = store.claim(lease_s=30, worker_id="w", max_attempts=3)
            if attempt < 3:
                store.retry(job.id, job.lease_token, error=f"{error} {attempt}")
            else:
                store.fail(job.id, job.lease_token, error=error)
    store.mark_discarded([ids["gone"]])
    ids["retried"] = store.put("retried", priority=50)
    [job] = store.claim(lease_s=30, worker_id="w", max_attempts=3)
    store.retry(job.id, job.lease_token, error="TimeoutError: once", delay_s=600)
    ids["done"] = store.put("done", priority=100)
    [job] = store.claim(lease_s=30, worker_id="w", max_attempts=3)
    store.ack(job.id, job.lease_token, result="out")
    ids["cancelled"] = store.put("cancelled")
    store.cancel([ids["cancelled"]])
    ids["other queue"] = store.put("other queue", queue="mail")
    return store, ids


def test_migrate_keeps_jobs(tmp_path, postgres_url, pg, queue):
    """migrate copies queued and failed jobs with payload, state, attempts, priority, errors and times."""
    source, ids = sqlite_queue(tmp_path / "queue.sqlite3")
    before = {payload: source.get(job_id) for payload, job_id in ids.items()}
    source.close()

    result = basic("migrate", "--from", str(tmp_path / "queue.sqlite3"), "--to", postgres_url,
                   "--queue", "default", "--queue", "mail")

    assert result.exit_code == 0, result.output
    assert "copied 8 jobs" in result.output
    copied = {job.payload: job for q in ("default", "mail") for job in pg.jobs(queue=q, limit=100)}
    assert sorted(copied) == sorted(p for p in ids if p not in ("done", "cancelled"))
    for payload, job in copied.items():
        old = before[payload]
        for field in ("queue", "state", "attempts", "priority", "created_at", "available_at",
                      "started_at", "finished_at", "last_error", "result", "unique_key"):
            assert getattr(job, field) == getattr(old, field), f"{payload}: {field}"
    assert [job.payload for job in pg.failed_undiscarded(queue="default")] == ["broken"]
    # The claim order survives: priority, then available time, then the order of the SQLite ids.
    claimed = pg.claim(queue="default", limit=10, lease_s=30, worker_id="w", max_attempts=3)
    assert [job.payload for job in claimed] == ["urgent", "first", "keyed"]
    assert pg.put("again", unique_key="k1") == copied["keyed"].id


def test_migrate_twice_rejected(tmp_path, postgres_url, pg):
    """A second migration into the same queue is rejected and copies nothing twice."""
    source, _ = sqlite_queue(tmp_path / "queue.sqlite3")
    source.close()
    database = str(tmp_path / "queue.sqlite3")
    target_queue = f"twice_{uuid.uuid4().hex[:8]}"
    config = tmp_path / "config.yaml"
    config.write_text(f"general:\n  queue: {target_queue}\n")
    source = PersistentQSQLite(database)
    source.put("in the chosen queue", queue=target_queue)
    source.close()

    first = basic("migrate", "--config", str(config), "--from", database, "--to", postgres_url)
    second = basic("migrate", "--config", str(config), "--from", database, "--to", postgres_url)

    assert first.exit_code == 0, first.output
    assert second.exit_code == 1, second.output
    assert f"queue '{target_queue}'" in second.output
    assert "already has 1 jobs" in second.output
    assert "--allow-nonempty" in second.output
    assert sum(pg.counts(queue=target_queue).values()) == 1


def test_migrate_running_rejected(tmp_path, postgres_url, pg, queue):
    """A SQLite queue with a running job is rejected before anything is copied."""
    source = PersistentQSQLite(tmp_path / "queue.sqlite3")
    source.put_many(["a", "b"], queue=queue)
    source.claim(queue=queue, lease_s=30, worker_id="w", max_attempts=3)
    source.close()

    result = basic("migrate", "--from", str(tmp_path / "queue.sqlite3"), "--to", postgres_url, "--queue", queue)

    assert result.exit_code == 1, result.output
    assert "1 running jobs" in result.output
    assert "nothing was copied" in result.output
    assert sum(pg.counts(queue=queue).values()) == 0


def test_migrate_target_from_config(tmp_path, config_file, pg, queue):
    """Without --to, migrate copies into the config's PostgreSQL database and queue."""
    source = PersistentQSQLite(tmp_path / "old.sqlite3")
    source.put("moved", queue=queue)
    source.close()

    result = basic("migrate", "--config", str(config_file), "--from", str(tmp_path / "old.sqlite3"))

    assert result.exit_code == 0, result.output
    assert [job.payload for job in pg.jobs(queue=queue)] == ["moved"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "sqlite:///x.db"], "must be a postgresql:// URL"),
        (["--to", REFUSED_URL], "cannot connect to the PostgreSQL database"),
        ([], "no migration target"),
    ],
    ids=["wrong-scheme", "refused", "no-target"],
)
def test_migrate_bad_target_exit_2(tmp_path, args, message):
    """A wrong, unreachable or missing target is one error line and exit 2."""
    source = PersistentQSQLite(tmp_path / "queue.sqlite3")
    source.put("a")
    source.close()
    config = tmp_path / "config.yaml"
    config.write_text("general:\n  n_prod: 1\n")

    result = basic("migrate", "--config", str(config), "--from", str(tmp_path / "queue.sqlite3"), *args)

    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_migrate_missing_source(tmp_path, postgres_url):
    """A --from file that does not exist is an error naming it, and creates no file."""
    missing = tmp_path / "nothing.sqlite3"

    result = basic("migrate", "--from", str(missing), "--to", postgres_url)

    assert result.exit_code == 1, result.output
    assert f"no SQLite queue file at {missing}" in result.output
    assert not missing.exists()


def test_migrate_unknown_queue_rejected(tmp_path, postgres_url, pg, queue):
    """A --queue that has no jobs in the file, such as a typo, is an error listing the file's queues."""
    source = PersistentQSQLite(tmp_path / "queue.sqlite3")
    source.put("kept", queue=queue)
    source.put("other", queue="mail")
    source.close()

    result = basic("migrate", "--from", str(tmp_path / "queue.sqlite3"), "--to", postgres_url,
                   "--queue", queue, "--queue", f"{queue}x")

    assert result.exit_code == 1, result.output
    assert f"queue '{queue}x' has no jobs in" in result.output
    assert f"whose queues are '{queue}', 'mail'" in result.output
    assert "nothing was copied" in result.output
    assert sum(pg.counts(queue=queue).values()) == 0


def test_migrate_puts_during_read_left_behind(tmp_path, pg, queue, monkeypatch):
    """Jobs put while the file is read stay behind, and every job there before is copied exactly once."""
    from persistentq import migrate

    monkeypatch.setattr(migrate, "PAGE_SIZE", 10)
    path = tmp_path / "queue.sqlite3"
    source = PersistentQSQLite(path)
    source.put_many([f"old {number}" for number in range(25)], queue=queue)
    source.close()
    read_page = PersistentQSQLite.jobs
    puts = iter(range(1000))

    def read_page_then_put(self, **options):
        page = read_page(self, **options)
        self.put(f"new {next(puts)}", queue=queue)
        return page

    monkeypatch.setattr(PersistentQSQLite, "jobs", read_page_then_put)

    report = migrate.migrate_sqlite(path, pg, queues=[queue])

    payloads = [job.payload for job in pg.jobs(queue=queue, limit=1000)]
    assert len(payloads) == len(set(payloads)), sorted(payloads)
    assert set(payloads) == {f"old {number}" for number in range(25)}
    assert report.total == 25


def test_migrate_nul_payload_rejected(tmp_path, postgres_url, pg, queue):
    """A SQLite job whose payload PostgreSQL cannot store stops the migration before anything is copied."""
    source = PersistentQSQLite(tmp_path / "queue.sqlite3")
    source.put("fine", queue=queue)
    bad = source.put("nul\x00inside", queue=queue)
    source.close()

    result = basic("migrate", "--from", str(tmp_path / "queue.sqlite3"), "--to", postgres_url, "--queue", queue)

    assert result.exit_code == 1, result.output
    assert f"job {bad}: payload has a NUL character" in result.output
    assert "nothing was imported" in result.output
    assert sum(pg.counts(queue=queue).values()) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"plain text, not a database\n" * 100, "is not a SQLite database"),
        (None, "without a persistentq queue"),
    ],
    ids=["text-file", "other-database"],
)
def test_migrate_source_not_queue(tmp_path, postgres_url, content, message):
    """A --from file that contains no queue is rejected, and left byte for byte as it was."""
    source = tmp_path / "other.db"
    if content is None:
        with sqlite3.connect(source) as conn:
            conn.execute("CREATE TABLE notes (text TEXT)")
        conn.close()
    else:
        source.write_bytes(content)
    before = source.read_bytes()

    result = basic("migrate", "--from", str(source), "--to", postgres_url)

    assert result.exit_code == 1, result.output
    assert message in result.output
    assert source.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["other.db"]


@pytest.mark.parametrize("command", ["status", "jobs", "purge"])
def test_read_commands_leave_empty_database_alone(tmp_path, postgres_url, command):
    """A management command on a database without the queue schema fails and creates nothing."""
    import psycopg

    from postgres_server import database_url, server_url

    database = f"pqempty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    try:
        url = database_url(server_url(), database)
        config = tmp_path / "config.yaml"
        config.write_text(f"general:\n  database: {url}\n")

        result = basic(command, "--config", str(config))

        assert result.exit_code == 1, result.output
        assert "no queue in" in result.output
        assert "PERSISTENTQ_DATABASE" in result.output
        with psycopg.connect(url) as conn:
            schemas = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'persistentq'").fetchall()
        assert schemas == []
    finally:
        with psycopg.connect(server_url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
