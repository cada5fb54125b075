"""Tests with real OS processes on one PostgreSQL database, each process as if on its own machine.

Every consumer process gets a primary_path of its own, and every test a
queue of its own in the session's test database. The helpers for starting,
waiting for and killing processes are those of test_processes.
"""

from __future__ import annotations

import statistics
import time
import uuid
from pathlib import Path

import pytest

from persistentq import JobState, PersistentQPostgres
from test_processes import (  # noqa: F401 - `processes` is a fixture
    VICTIM,
    Process,
    Processes,
    assert_clean_stderr,
    duplicates_of,
    kill_hard,
    processes,
    read_lines,
)
from postgres_server import import_psycopg

psycopg = import_psycopg()

N_JOBS = 20_000
N_CONSUMER_PROCESSES = 8
PUT_BATCH = 50
DRAIN_TIMEOUT_S = 300.0
LEASE_S = 2
# Long enough that a consumer woken within WAKE_BOUND_S was woken by NOTIFY, not by its poll.
IDLE_POLL_S = 30
WAKE_BOUND_S = 3.0
WAKE_SAMPLES = 5


def new_queue() -> str:
    return f"q_{uuid.uuid4().hex[:10]}"


def settings_args(*settings: str) -> list[str]:
    return [part for setting in settings for part in ("--set", setting)]


def start_consumer(
    processes: Processes, name: str, url: str, queue: str, function: str, *settings: str, barrier: bool = False
) -> Process:
    """Start a consumer process on `queue` with a primary_path of its own, as on a machine of its own."""
    machine = processes.folder / f"machine-{name}"
    machine.mkdir()
    extra = ["--ready", processes.folder / f"ready-{name}", "--go", processes.folder / "go"] if barrier else []
    return processes.worker(
        name, "consume", "--database", url, "--primary-path", machine, "--function", function,
        *settings_args(f"general.queue={queue}", *settings), *extra,
    )


def listening_backends(url: str) -> int:
    """Return how many connections to the test database are waiting in LISTEN."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
        ).fetchone()[0]


def terminate_other_backends(url: str) -> int:
    """Terminate every other connection to the test database, as a server restart would; return how many."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]


@pytest.fixture
def queue_store(postgres_url: str):
    """The test database in its default schema, as the consumer processes open it."""
    store = PersistentQPostgres(postgres_url)
    yield store
    store.close()


def test_eight_processes_share_jobs(processes: Processes, tmp_path: Path, postgres_url: str, queue_store) -> None:
    """8 consumer processes and a producer behind a barrier: each of 20,000 jobs done exactly once, by all."""
    queue = new_queue()
    consumers = [
        start_consumer(processes, f"consumer-{i}", postgres_url, queue, "record",
                       "general.n_cons=4", "consumer.poll_interval=2", barrier=True)
        for i in range(N_CONSUMER_PROCESSES)
    ]
    producer = processes.worker(
        "producer", "produce", "--database", postgres_url, "--queue", queue, "--count", str(N_JOBS),
        "--batch", str(PUT_BATCH), "--ready", tmp_path / "ready-producer", "--go", tmp_path / "go",
    )
    everyone = [*consumers, producer]
    processes.wait_until(
        lambda: all((tmp_path / f"ready-{process.name}").exists() for process in everyone),
        description="every process ready", alive=everyone,
    )
    (tmp_path / "go").touch()
    started = time.monotonic()

    processes.wait_until(
        lambda: queue_store.counts(queue=queue)[JobState.DONE] == N_JOBS,
        description=f"{N_JOBS} jobs done", timeout_s=DRAIN_TIMEOUT_S, alive=consumers,
    )
    elapsed_s = time.monotonic() - started
    for consumer in consumers:
        consumer.popen.terminate()
    for process in everyone:
        assert process.wait_exit() == 0, process.report()
        assert_clean_stderr(process)

    processed = {consumer.name: read_lines(tmp_path / f"processed-{consumer.pid}.log") for consumer in consumers}
    print(f"{N_JOBS} jobs done in {elapsed_s:.1f} s ({N_JOBS / elapsed_s:.0f} jobs/s)")
    print("jobs per consumer process:", {name: len(lines) for name, lines in processed.items()})
    duplicates = duplicates_of(processed)
    assert not duplicates, f"{len(duplicates)} payloads processed twice, such as {duplicates[:10]}"
    seen = {payload for lines in processed.values() for payload in lines}
    expected = {f"job-{i}" for i in range(N_JOBS)}
    assert seen - expected == set()
    missing = sorted(expected - seen)
    assert not missing, f"{len(missing)} payloads never processed, such as {missing[:10]}"
    counts = queue_store.counts(queue=queue)
    assert counts == {**dict.fromkeys(JobState, 0), JobState.DONE: N_JOBS}, counts
    jobs = queue_store.jobs(queue=queue, limit=N_JOBS + 1)
    assert {job.attempts for job in jobs} == {1}
    for name, lines in processed.items():
        assert lines, f"{name} processed no job"


def test_killed_consumer_job_redelivered(processes: Processes, tmp_path: Path, postgres_url: str, queue_store) -> None:
    """A consumer killed with SIGKILL mid-job: after its lease the job runs again elsewhere and is done."""
    queue = new_queue()
    victim_id = queue_store.put(VICTIM, queue=queue)
    blocked = start_consumer(processes, "blocked", postgres_url, queue, "block", f"consumer.lease={LEASE_S}")
    marker = tmp_path / f"started-{VICTIM}"
    processes.wait_until(marker.exists, description=f"the marker {marker.name}", alive=[blocked])
    others = queue_store.put_many([f"job-{i}" for i in range(5)], queue=queue)

    kill_hard(blocked)
    killed_at = time.time()
    assert queue_store.get(victim_id).state is JobState.RUNNING
    rescuer = start_consumer(processes, "rescuer", postgres_url, queue, "record",
                             "general.n_cons=2", f"consumer.lease={LEASE_S}")
    processes.wait_until(
        lambda: queue_store.counts(queue=queue)[JobState.DONE] == 1 + len(others),
        description="the victim and the others done", alive=[rescuer],
    )
    rescuer.popen.terminate()
    assert rescuer.wait_exit() == 0, rescuer.report()
    assert_clean_stderr(rescuer)

    victim = queue_store.get(victim_id)
    assert victim.attempts == 2, "the killed attempt counts"
    assert victim.worker_id.endswith(f":{rescuer.pid}"), victim.worker_id
    assert "lease expired" in (victim.last_error or ""), victim.last_error
    assert victim.started_at >= killed_at - 1.0, "the job started again only after the kill"
    processed = read_lines(tmp_path / f"processed-{rescuer.pid}.log")
    assert sorted(processed) == sorted([VICTIM, *(f"job-{i}" for i in range(5))]), "each job done exactly once"


def test_terminated_connections_survived(processes: Processes, tmp_path: Path, postgres_url: str, queue_store) -> None:
    """Terminating every connection from SQL: the consumers reconnect, LISTEN again and finish every job."""
    queue = new_queue()
    consumers = [
        start_consumer(processes, f"consumer-{i}", postgres_url, queue, "record",
                       "general.n_cons=2", f"consumer.poll_interval={IDLE_POLL_S}")
        for i in range(2)
    ]
    queue_store.put_many([f"before-{i}" for i in range(50)], queue=queue)
    processes.wait_until(
        lambda: queue_store.counts(queue=queue)[JobState.DONE] == 50,
        description="the first 50 jobs done", alive=consumers,
    )
    processes.wait_until(lambda: listening_backends(postgres_url) >= 2,
                         description="both consumers listening", alive=consumers)

    assert terminate_other_backends(postgres_url) >= 2
    processes.wait_until(
        lambda: all("LISTEN connection" in consumer.stderr() and "restored" in consumer.stderr()
                    for consumer in consumers),
        description="both consumers logging the lost and restored LISTEN connection", alive=consumers,
    )
    queue_store.put_many([f"after-{i}" for i in range(50)], queue=queue)
    processes.wait_until(
        lambda: queue_store.counts(queue=queue)[JobState.DONE] == 100,
        description="the 50 jobs put after the terminations done", timeout_s=2 * WAKE_BOUND_S + 5,
        alive=consumers,
    )
    for consumer in consumers:
        consumer.popen.terminate()
        assert consumer.wait_exit() == 0, consumer.report()
        assert "Traceback" not in consumer.stderr(), consumer.report()

    processed = {consumer.name: read_lines(tmp_path / f"processed-{consumer.pid}.log") for consumer in consumers}
    assert not duplicates_of(processed)
    assert queue_store.counts(queue=queue)[JobState.DONE] == 100


def test_notify_wakes_idle_consumer(processes: Processes, postgres_url: str, queue_store) -> None:
    """A job put while a consumer in another process is idle starts within seconds, not at its 30 s poll."""
    queue = new_queue()
    consumer = start_consumer(processes, "idle", postgres_url, queue, "record",
                              f"consumer.poll_interval={IDLE_POLL_S}")
    warm_up = queue_store.put("warm-up", queue=queue)
    processes.wait_until(lambda: queue_store.get(warm_up).state is JobState.DONE,
                         description="the warm-up job done", alive=[consumer])
    processes.wait_until(lambda: listening_backends(postgres_url) >= 1,
                         description="the consumer listening", alive=[consumer])

    latencies_s = []
    for sample in range(WAKE_SAMPLES):
        time.sleep(0.3)  # lets the consumer go back to waiting on its empty queue
        job_id = queue_store.put(f"wake-{sample}", queue=queue)
        processes.wait_until(lambda: queue_store.get(job_id).state is JobState.DONE,
                             description=f"job wake-{sample} done", timeout_s=IDLE_POLL_S / 2, alive=[consumer])
        job = queue_store.get(job_id)
        latencies_s.append(job.started_at - job.created_at)
    consumer.popen.terminate()
    assert consumer.wait_exit() == 0, consumer.report()

    print(f"put-to-start latency of an idle consumer in another process: median "
          f"{statistics.median(latencies_s) * 1000:.1f} ms, max {max(latencies_s) * 1000:.1f} ms")
    for latency_s in latencies_s:
        assert latency_s < WAKE_BOUND_S, f"a job waited {latency_s:.2f} s: {latencies_s}"
