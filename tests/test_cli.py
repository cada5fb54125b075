"""The management commands of `basic`, run in-process with click's runner on a real queue file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from persistentq.cli import format_table, main
from persistentq.config import load_config
from persistentq.files import FAILED_SUFFIX, FilePipeline
from persistentq.store.base import JobState, WorkerRecord
from persistentq.store.sqlite import PersistentQSQLite


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    """Return a config file whose queue and files live in tmp_path/data."""
    path = tmp_path / "config.yaml"
    path.write_text("general:\n  primary_path: data\n")
    return path


@pytest.fixture()
def store(config_file: Path) -> PersistentQSQLite:
    """Open the queue that config_file names."""
    opened = PersistentQSQLite(load_config(config_file).database_path)
    yield opened
    opened.close()


def basic(config_file: Path, *args: str, input: str | None = None) -> Result:
    """Run `basic ARGS --config config_file` and return click's result."""
    command, *rest = args
    return CliRunner().invoke(main, [command, "--config", str(config_file), *rest], input=input)


def fail_job(store: PersistentQSQLite, payload: str) -> int:
    """Put a job ahead of all others, claim it, and fail it; return its id."""
    job_id = store.put(payload, priority=100)
    [job] = store.claim(lease_s=30, worker_id="test", max_attempts=1)
    assert job.id == job_id
    store.fail(job.id, job.lease_token, error="ValueError: broken")
    return job_id


def test_enqueue_prints_ids(config_file: Path, store: PersistentQSQLite) -> None:
    """enqueue puts each payload and prints one id per line."""
    result = basic(config_file, "enqueue", "a", "b", "--priority", "5")

    assert result.exit_code == 0, result.output
    ids = [int(line) for line in result.output.split()]
    assert [store.get(job_id).payload for job_id in ids] == ["a", "b"]
    assert {store.get(job_id).priority for job_id in ids} == {5}


def test_enqueue_from_stdin(config_file: Path, store: PersistentQSQLite) -> None:
    """enqueue --stdin puts one job per non-empty line."""
    result = basic(config_file, "enqueue", "--stdin", input="x\n\ny\n")

    assert result.exit_code == 0, result.output
    assert sorted(job.payload for job in store.jobs()) == ["x", "y"]


def test_enqueue_unique_key(config_file: Path, store: PersistentQSQLite) -> None:
    """A second enqueue with the same unique key prints the first job's id."""
    first = basic(config_file, "enqueue", "a", "--unique-key", "k")
    second = basic(config_file, "enqueue", "b", "--unique-key", "k")

    assert first.stdout == second.stdout
    assert "already queued or running; nothing added" in second.stderr
    assert store.counts()[JobState.QUEUED] == 1


def test_enqueue_without_payload_is_usage_error(config_file: Path) -> None:
    """enqueue with nothing to put exits 2 with a usage message."""
    result = basic(config_file, "enqueue")

    assert result.exit_code == 2
    assert "at least one PAYLOAD" in result.output


def test_enqueue_oversize_payload(config_file: Path, store: PersistentQSQLite) -> None:
    """A payload over 1 MiB is rejected with the limit in the message, and nothing is put."""
    result = basic(config_file, "enqueue", "--stdin", input="x" * (1024 * 1024 + 1) + "\n")

    assert result.exit_code == 1
    assert "1 MiB" in result.output
    assert store.counts()[JobState.QUEUED] == 0


def test_status_shows_counts_and_workers(config_file: Path, store: PersistentQSQLite) -> None:
    """status prints a count for every state and each registered worker."""
    store.put_many(["a", "b"])
    store.register_worker(WorkerRecord("consumer-1@h:1", "consumer", "h", 1, "running", 0.0, 0.0))
    result = basic(config_file, "status")

    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert ["queued", "2"] in rows
    for state in JobState:
        assert state.value in result.output
    assert "consumer-1@h:1" in result.output
    assert "lost" in result.output


def test_jobs_filters_by_state(config_file: Path, store: PersistentQSQLite) -> None:
    """jobs --state shows only jobs in that state, with their last error."""
    store.put("still-queued")
    fail_job(store, "broken-one")
    result = basic(config_file, "jobs", "--state", "failed")

    assert result.exit_code == 0, result.output
    assert "broken-one" in result.output
    assert "ValueError: broken" in result.output
    assert "still-queued" not in result.output


def test_jobs_rejects_unknown_state(config_file: Path) -> None:
    """jobs --state with an unknown state exits 2 and lists the valid ones."""
    result = basic(config_file, "jobs", "--state", "finished")

    assert result.exit_code == 2
    assert "queued" in result.output


def test_cancel_queued_job(config_file: Path, store: PersistentQSQLite) -> None:
    """cancel moves a queued job to cancelled."""
    job_id = store.put("a")
    result = basic(config_file, "cancel", str(job_id))

    assert result.exit_code == 0, result.output
    assert store.get(job_id).state == JobState.CANCELLED


def test_cancel_unknown_job(config_file: Path, store: PersistentQSQLite) -> None:
    """cancel of an id that does not exist exits 1, names the id and cancels nothing."""
    job_id = store.put("a")
    result = basic(config_file, "cancel", str(job_id), "999")

    assert result.exit_code == 1
    assert "999" in result.output
    assert "nothing was cancelled" in result.output
    assert store.get(job_id).state == JobState.QUEUED


def test_cancel_failed_job_names_state(config_file: Path, store: PersistentQSQLite) -> None:
    """cancel of a job that is not queued exits 1 and names its state."""
    job_id = fail_job(store, "done-for")
    result = basic(config_file, "cancel", str(job_id))

    assert result.exit_code == 1
    assert f"job {job_id} is failed" in result.output
    assert store.get(job_id).state == JobState.FAILED


def test_status_without_queue_is_error(tmp_path: Path) -> None:
    """status where no queue exists exits 1, names the path, and creates nothing."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text("general:\n  primary_path: data\n")
    result = basic(config_file, "status")

    assert result.exit_code == 1
    assert "no queue at" in result.output
    assert not (tmp_path / "data" / "queue.sqlite3").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("enqueue", "a", "--delay", "nan"),
        ("enqueue", "a", "--delay", "inf"),
        ("enqueue", "a", "--priority", "99999999999999999999"),
        ("cancel", "99999999999999999999"),
        ("cancel", "0"),
        ("jobs", "--limit", "0"),
        ("purge", "--older-than", "-5"),
        ("run", "--duration", "nan"),
    ],
)
def test_out_of_range_options_are_usage_errors(config_file: Path, store: PersistentQSQLite, args) -> None:
    """Options outside their range exit 2 with a usage message, and no job is put."""
    result = basic(config_file, *args)

    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output
    assert "Traceback" not in result.output
    assert sum(store.counts().values()) == 0


def test_jobs_escapes_control_characters(config_file: Path, store: PersistentQSQLite) -> None:
    """jobs shows terminal escape characters in payloads escaped, never raw."""
    store.put("red\x1b[31mtext\r")
    result = basic(config_file, "jobs")

    assert "\x1b" not in result.output
    assert "\\x1b[31mtext\\r" in result.output


def test_retry_renames_failed_file_back(config_file: Path, store: PersistentQSQLite) -> None:
    """retry of a failed file job renames <name>.failed back and queues the job with 0 attempts."""
    pipeline = FilePipeline(load_config(config_file).general.primary_path)
    name = pipeline.produce()
    job_id = fail_job(store, name)
    pipeline.on_failed(name)
    result = basic(config_file, "retry", str(job_id))

    assert result.exit_code == 0, result.output
    assert store.get(job_id).state == JobState.QUEUED
    assert store.get(job_id).attempts == 0
    assert (pipeline.primary_path / name).exists()
    assert not (pipeline.primary_path / (name + FAILED_SUFFIX)).exists()


def test_retry_rejects_cleaned_job(config_file: Path, store: PersistentQSQLite) -> None:
    """retry of a failed file job whose file the cleaner removed exits 1 and keeps it failed."""
    pipeline = FilePipeline(load_config(config_file).general.primary_path)
    name = pipeline.produce()
    job_id = fail_job(store, name)
    pipeline.discard(name)
    result = basic(config_file, "retry", str(job_id))

    assert result.exit_code == 1
    assert "the cleaner removes the .failed files" in result.output
    assert store.get(job_id).state == JobState.FAILED


def test_retry_all_failed(config_file: Path, store: PersistentQSQLite) -> None:
    """retry --all-failed requeues every failed job."""
    pipeline = FilePipeline(load_config(config_file).general.primary_path)
    ids = [fail_job(store, pipeline.produce()) for _ in range(3)]
    result = basic(config_file, "retry", "--all-failed")

    assert result.exit_code == 0, result.output
    assert "requeued 3 jobs" in result.output
    assert {store.get(job_id).state for job_id in ids} == {JobState.QUEUED}


def test_retry_needs_ids_or_flag(config_file: Path) -> None:
    """retry without ids and without --all-failed is a usage error."""
    result = basic(config_file, "retry")

    assert result.exit_code == 2
    assert "--all-failed" in result.output


def test_purge_by_state(config_file: Path, store: PersistentQSQLite) -> None:
    """purge --state failed deletes failed jobs and keeps queued ones."""
    queued = store.put("keep")
    failed = fail_job(store, "drop")
    result = basic(config_file, "purge", "--state", "failed")

    assert result.exit_code == 0, result.output
    assert "purged 1 jobs" in result.output
    assert store.get(queued).state == JobState.QUEUED
    assert [job.id for job in store.jobs()] == [queued]
    assert failed not in [job.id for job in store.jobs()]


def test_purge_older_than_keeps_recent(config_file: Path, store: PersistentQSQLite) -> None:
    """purge --older-than keeps jobs that finished more recently."""
    fail_job(store, "recent")
    result = basic(config_file, "purge", "--older-than", "3600")

    assert result.exit_code == 0, result.output
    assert store.counts()[JobState.FAILED] == 1


def test_bad_config_exits_2(tmp_path: Path) -> None:
    """A command with an invalid config exits 2 with the key and value, without a traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("consumer:\n  n_tries: 0\n")
    result = basic(bad, "status")

    assert result.exit_code == 2
    assert "consumer.n_tries" in result.output
    assert "Traceback" not in result.output


def test_missing_config_exits_2(tmp_path: Path) -> None:
    """A --config path that does not exist exits 2 and names the path."""
    result = basic(tmp_path / "nowhere.yaml", "status")

    assert result.exit_code == 2
    assert "nowhere.yaml" in result.output


def test_format_table_aligns_numbers() -> None:
    """format_table right-aligns integer columns and left-aligns text."""
    table = format_table(["name", "n"], [["a", 5], ["long", 12]])

    assert table.splitlines() == ["name   n", "----  --", "a      5", "long  12"]


def test_retry_after_cleaner_marked_keeps_failed(config_file: Path, store: PersistentQSQLite) -> None:
    """A retry that loses the race to the cleaner's mark is rejected, and the cleaner still removes the file."""
    pipeline = FilePipeline.for_config(load_config(config_file))
    name = pipeline.produce()
    job_id = fail_job(store, name)
    pipeline.on_failed(name)
    assert store.mark_discarded([job_id]) == [job_id]  # the cleaner's sweep marks the job first
    result = basic(config_file, "retry", str(job_id))
    pipeline.discard(name)  # then the cleaner removes the file

    assert result.exit_code == 1
    assert "already removed" in result.output
    assert store.get(job_id).state == JobState.FAILED
    assert not (pipeline.primary_path / name).exists()
    assert not (pipeline.primary_path / (name + FAILED_SUFFIX)).exists()


def test_retry_before_cleaner_mark_keeps_file(config_file: Path, store: PersistentQSQLite) -> None:
    """A retry that wins the race keeps the input file, and the cleaner's later mark skips the job."""
    pipeline = FilePipeline.for_config(load_config(config_file))
    name = pipeline.produce()
    job_id = fail_job(store, name)
    pipeline.on_failed(name)
    candidates = [job.id for job in store.failed_undiscarded()]  # the cleaner's sweep lists the job
    result = basic(config_file, "retry", str(job_id))

    assert result.exit_code == 0, result.output
    assert store.mark_discarded(candidates) == []
    assert store.get(job_id).state == JobState.QUEUED
    assert (pipeline.primary_path / name).exists()


@pytest.mark.parametrize(
    "args",
    [("enqueue", "--unique-key", "\udcff", "hello"), ("jobs", "--search", "\udcff")],
    ids=["unique-key", "search"],
)
def test_non_utf8_argument_is_one_line(config_file: Path, store: PersistentQSQLite, args: tuple) -> None:
    """An argument with bytes that are not UTF-8 (lone surrogates) exits 2 with one line, putting nothing."""
    result = basic(config_file, *args)

    assert result.exit_code == 2, result.output
    assert "not valid Unicode text" in result.output
    assert "Traceback" not in result.output
    assert store.jobs() == []
