"""Tests with real OS processes on one SQLite file: killed workers, concurrent consumers, graceful stops.

Each test starts tests/proc_worker.py or `basic run` with subprocess, waits
for marker files and store counts with deadlines, and kills whatever is still
running when it ends. Every process writes its stderr to a file in tmp_path,
and a failed assertion shows those files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from persistentq import Job, JobState, PersistentQSQLite
from proc_worker import HAVE_PROC, pids_working_in

TESTS_DIR = Path(__file__).resolve().parent
PROC_WORKER = TESTS_DIR / "proc_worker.py"
BASIC = Path(sys.executable).parent / "basic"

START_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 20.0
POLL_S = 0.05
STDERR_SHOWN_CHARS = 4000


@dataclass
class Process:
    """A started OS process with its stderr in a file."""

    name: str
    popen: subprocess.Popen
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def report(self) -> str:
        """Return the name, pid, exit code and the end of stderr, for assertion messages."""
        text = self.stderr()
        if len(text) > STDERR_SHOWN_CHARS:
            text = "[...]\n" + text[-STDERR_SHOWN_CHARS:]
        return f"--- {self.name} (pid {self.pid}, exit code {self.popen.poll()}) stderr:\n{text}"

    def wait_exit(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        """Wait for the process and return its exit code. Fail when it still runs after `timeout_s` seconds."""
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout_s:g} s\n{self.report()}") from None


class Processes:
    """The processes one test starts; `kill_all` ends those still running."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Process] = []

    def start(self, name: str, command: Sequence[str | Path]) -> Process:
        """Start `command` in the test's folder, with tests/ on PYTHONPATH and PROC_WORKER_DIR set to that folder."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
        env["PROC_WORKER_DIR"] = str(self.folder)
        stderr_path = self.folder / f"{name}.stderr"
        with open(self.folder / f"{name}.stdout", "wb") as stdout, open(stderr_path, "wb") as stderr:
            popen = subprocess.Popen(
                [str(part) for part in command], stdout=stdout, stderr=stderr, env=env, cwd=self.folder
            )
        process = Process(name, popen, stderr_path)
        self.started.append(process)
        return process

    def worker(self, name: str, *args: str | Path) -> Process:
        """Start tests/proc_worker.py with `args`."""
        return self.start(name, [sys.executable, PROC_WORKER, *args])

    def report(self) -> str:
        return "\n".join(process.report() for process in self.started)

    def wait_until(
        self,
        condition: Callable[[], bool],
        *,
        description: str,
        timeout_s: float = START_TIMEOUT_S,
        alive: Sequence[Process] = (),
    ) -> None:
        """Poll `condition` until it is true. Fail at the deadline, or as soon as a process in `alive` exits."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            exited = [process.name for process in alive if process.popen.poll() is not None]
            if exited:
                raise AssertionError(f"{', '.join(exited)} exited while waiting for {description}\n{self.report()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:g} s waiting for {description}\n{self.report()}")
            time.sleep(POLL_S)

    def kill_all(self) -> None:
        for process in self.started:
            if process.popen.poll() is None:
                process.popen.kill()
            process.popen.wait(timeout=EXIT_TIMEOUT_S)


@pytest.fixture
def processes(tmp_path: Path):
    group = Processes(tmp_path)
    yield group
    group.kill_all()  # pytest runs this teardown whether the test passed or failed.


def read_lines(path: Path) -> list[str]:
    """Return the lines of a log file, or none when it does not exist yet."""
    if not path.exists():
        return []
    return path.read_text(encoding="utf-8").splitlines()


def job_by_payload(store: PersistentQSQLite) -> dict[str, Job]:
    return {job.payload: job for job in store.jobs(limit=1_000_000)}


def assert_clean_stderr(process: Process) -> None:
    text = process.stderr()
    assert "database is locked" not in text, process.report()
    assert "Traceback" not in text, process.report()


# A killed consumer.

VICTIM = "victim"
OTHERS = [f"job-{i}" for i in range(9)]
LEASE_S = 2


def put_victim_and_others(database: Path) -> PersistentQSQLite:
    """Open the queue and put VICTIM first, so a consumer claims it before the others."""
    store = PersistentQSQLite(database)
    store.put(VICTIM)
    store.put_many(OTHERS)
    return store


def start_blocked_consumer(processes: Processes, database: Path, n_tries: int) -> Process:
    """Start a consumer whose function blocks on VICTIM, and wait until the attempt runs."""
    blocked = processes.worker(
        "blocked", "consume", "--database", database, "--function", "block",
        "--set", f"consumer.lease={LEASE_S}", "--set", f"consumer.n_tries={n_tries}",
    )
    marker = processes.folder / f"started-{VICTIM}"
    processes.wait_until(marker.exists, description=f"the marker {marker.name}", alive=[blocked])
    return blocked


def kill_hard(process: Process) -> None:
    process.popen.send_signal(signal.SIGKILL)
    assert process.wait_exit() == -signal.SIGKILL, process.report()


def test_killed_job_rerun_after_lease(processes: Processes, tmp_path: Path) -> None:
    """A job whose consumer is killed stays leased while it lives, then runs again: done, attempts 2."""
    database = tmp_path / "queue.sqlite3"
    store = put_victim_and_others(database)
    blocked = start_blocked_consumer(processes, database, n_tries=3)
    blocked_since = time.monotonic()

    # With cleaner.interval 3600 the rescuer's cleaner sweeps once, at its start, while the
    # blocked consumer still renews its lease, so a claim is what recovers the victim.
    rescuer = processes.worker(
        "rescuer", "consume", "--database", database, "--function", "record",
        "--set", "general.n_cons=2", "--set", f"consumer.lease={LEASE_S}", "--set", "cleaner.interval=3600",
    )
    processes.wait_until(
        lambda: store.counts()[JobState.DONE] >= len(OTHERS)
        and time.monotonic() > blocked_since + 3 * LEASE_S,
        description="the other jobs done and three lease lengths passed", alive=[blocked, rescuer],
    )
    victim = job_by_payload(store)[VICTIM]
    assert victim.state == JobState.RUNNING, "a live consumer's lease was taken over"
    assert victim.attempts == 1

    kill_hard(blocked)
    assert store.get(victim.id).state == JobState.RUNNING, "a killed consumer's job is running until its lease expires"
    processes.wait_until(
        lambda: store.get(victim.id).state == JobState.DONE, description="the victim done", alive=[rescuer]
    )
    rescuer.popen.send_signal(signal.SIGTERM)
    assert rescuer.wait_exit() == 0, rescuer.report()
    assert_clean_stderr(rescuer)

    victim = store.get(victim.id)
    assert victim.attempts == 2, "the killed attempt counts"
    assert victim.worker_id.endswith(f":{rescuer.pid}"), victim.worker_id
    assert "lease expired" in (victim.last_error or ""), victim.last_error
    jobs = job_by_payload(store)
    assert {payload: job.attempts for payload, job in jobs.items() if payload != VICTIM} == dict.fromkeys(OTHERS, 1)
    counts = store.counts()
    assert counts[JobState.DONE] == 1 + len(OTHERS), counts
    assert sum(counts.values()) == 1 + len(OTHERS), counts
    processed = read_lines(tmp_path / f"processed-{rescuer.pid}.log")
    assert sorted(processed) == sorted([VICTIM, *OTHERS]), "each job completed exactly once"
    store.close()


@pytest.mark.parametrize(
    ("recovered_by", "rescuer_settings", "others_state"),
    [
        pytest.param("claim", ["general.n_cons=2", "cleaner.interval=3600"], JobState.DONE, id="by-claim"),
        pytest.param("cleaner", ["general.n_cons=0", "cleaner.interval=0.2"], JobState.QUEUED, id="by-cleaner"),
    ],
)
def test_killed_last_attempt_fails(
    processes: Processes,
    tmp_path: Path,
    recovered_by: str,
    rescuer_settings: list[str],
    others_state: JobState,
) -> None:
    """A job killed on its last attempt ends failed with a lease error; no other job is lost."""
    database = tmp_path / "queue.sqlite3"
    store = put_victim_and_others(database)
    blocked = start_blocked_consumer(processes, database, n_tries=1)

    # The rescuer starts while the blocked consumer still renews its lease, so
    # the first sweep of its cleaner, which runs at once, finds nothing to recover.
    settings = [f"consumer.lease={LEASE_S}", "consumer.n_tries=1", *rescuer_settings]
    rescuer = processes.worker(
        "rescuer", "consume", "--database", database, "--function", "record",
        *[part for setting in settings for part in ("--set", setting)],
    )
    processes.wait_until(
        lambda: store.counts()[others_state] == len(OTHERS), description=f"the others {others_state}",
        alive=[blocked, rescuer],
    )
    kill_hard(blocked)
    victim = job_by_payload(store)[VICTIM]
    assert (victim.state, victim.attempts) == (JobState.RUNNING, 1)
    processes.wait_until(
        lambda: store.get(victim.id).state != JobState.RUNNING and store.counts()[others_state] >= len(OTHERS),
        description=f"the victim recovered by the {recovered_by} and the others {others_state}", alive=[rescuer],
    )
    rescuer.popen.send_signal(signal.SIGTERM)
    assert rescuer.wait_exit() == 0, rescuer.report()
    assert_clean_stderr(rescuer)

    victim = store.get(victim.id)
    assert victim.state == JobState.FAILED, "a job whose last attempt was killed must fail"
    assert victim.attempts == 1
    assert "lease expired" in (victim.last_error or ""), victim.last_error
    counts = store.counts()
    assert counts[JobState.FAILED] == 1, counts
    assert counts[others_state] == len(OTHERS), counts
    assert sum(counts.values()) == 1 + len(OTHERS), counts
    processed = read_lines(tmp_path / f"processed-{rescuer.pid}.log")
    assert VICTIM not in processed
    store.close()


# Many consumer processes on one file.

N_JOBS = 20_000
N_CONSUMER_PROCESSES = 4
# One put, so one commit, per job: the most contention for the write lock.
PUT_BATCH = 1
DRAIN_TIMEOUT_S = 240.0


@dataclass
class Fleet:
    """Consumer processes and one producer on one queue, released together by the --go file."""

    consumers: list[Process]
    producer: Process
    store: PersistentQSQLite
    started: float  # time.monotonic() when the --go file was created

    @property
    def everyone(self) -> list[Process]:
        return [*self.consumers, self.producer]

    def processed(self, folder: Path) -> dict[str, list[str]]:
        """Return the payloads each consumer process logged, by process name."""
        return {consumer.name: read_lines(folder / f"processed-{consumer.pid}.log") for consumer in self.consumers}

    def stop(self) -> None:
        """SIGTERM every consumer; every process must then exit 0 with no lock error or traceback."""
        for consumer in self.consumers:
            consumer.popen.send_signal(signal.SIGTERM)
        for process in self.everyone:
            assert process.wait_exit() == 0, process.report()
            assert_clean_stderr(process)


def start_fleet(processes: Processes, folder: Path) -> Fleet:
    """Start N_CONSUMER_PROCESSES processes of 8 consumers each and a producer of N_JOBS jobs; release them together."""
    database = folder / "queue.sqlite3"
    go = folder / "go"
    consumer_settings = ["general.n_cons=8", "consumer.poll_interval=0.05"]
    consumers = [
        processes.worker(
            f"consumer-{i}", "consume", "--database", database, "--function", "record",
            "--ready", folder / f"ready-consumer-{i}", "--go", go,
            *[part for setting in consumer_settings for part in ("--set", setting)],
        )
        for i in range(N_CONSUMER_PROCESSES)
    ]
    producer = processes.worker(
        "producer", "produce", "--database", database, "--count", str(N_JOBS), "--batch", str(PUT_BATCH),
        "--ready", folder / "ready-producer", "--go", go,
    )
    everyone = [*consumers, producer]
    processes.wait_until(
        lambda: all((folder / f"ready-{process.name}").exists() for process in everyone),
        description="every process ready", alive=everyone,
    )
    store = PersistentQSQLite(database)
    go.touch()
    return Fleet(consumers, producer, store, time.monotonic())


def duplicates_of(processed: dict[str, list[str]]) -> list[str]:
    seen = Counter(payload for lines in processed.values() for payload in lines)
    return sorted(payload for payload, count in seen.items() if count > 1)


def test_concurrent_consumers_no_duplicates(processes: Processes, tmp_path: Path) -> None:
    """Four consumer processes and a producer on one file: each job runs exactly once, none is lost."""
    fleet = start_fleet(processes, tmp_path)
    put_s: list[float] = []

    def all_done() -> bool:
        if not put_s and fleet.producer.popen.poll() is not None:
            put_s.append(time.monotonic() - fleet.started)
        return fleet.store.counts()[JobState.DONE] == N_JOBS

    processes.wait_until(all_done, description=f"{N_JOBS} jobs done", timeout_s=DRAIN_TIMEOUT_S, alive=fleet.consumers)
    elapsed_s = time.monotonic() - fleet.started
    fleet.stop()

    processed = fleet.processed(tmp_path)
    producer_note = f"the producer exited after {put_s[0]:.1f} s" if put_s else "the producer exited last"
    print(f"{N_JOBS} jobs done in {elapsed_s:.1f} s ({N_JOBS / elapsed_s:.0f} jobs/s); {producer_note}")
    print("jobs per consumer process:", {name: len(lines) for name, lines in processed.items()})
    duplicates = duplicates_of(processed)
    assert not duplicates, f"{len(duplicates)} payloads processed twice, such as {duplicates[:10]}"
    seen = {payload for lines in processed.values() for payload in lines}
    expected = {f"job-{i}" for i in range(N_JOBS)}
    assert seen - expected == set()
    missing = sorted(expected - seen)
    assert not missing, f"{len(missing)} payloads never processed, such as {missing[:10]}"

    counts = fleet.store.counts()
    assert counts == {**dict.fromkeys(JobState, 0), JobState.DONE: N_JOBS}, counts
    attempts = Counter(job.attempts for job in fleet.store.jobs(limit=N_JOBS + 1))
    assert attempts == {1: N_JOBS}, f"jobs by attempts used: {attempts}"
    for name, lines in processed.items():
        assert lines, f"{name} processed no job"
    fleet.store.close()


def test_concurrent_sigterm_mid_drain(processes: Processes, tmp_path: Path) -> None:
    """SIGTERM to busy consumer processes: every job is done once or still queued, none running or lost."""
    fleet = start_fleet(processes, tmp_path)
    processes.wait_until(
        lambda: fleet.store.counts()[JobState.DONE] >= N_JOBS // 4,
        description=f"{N_JOBS // 4} jobs done", timeout_s=DRAIN_TIMEOUT_S, alive=fleet.consumers,
    )
    fleet.stop()

    counts = fleet.store.counts()
    print("after SIGTERM:", {state.value: count for state, count in counts.items()})
    assert counts[JobState.RUNNING] == 0, counts
    assert counts[JobState.QUEUED] > 0, "the queue was empty at SIGTERM, so the stop tested nothing"
    assert counts[JobState.QUEUED] + counts[JobState.DONE] == N_JOBS, counts
    processed = fleet.processed(tmp_path)
    duplicates = duplicates_of(processed)
    assert not duplicates, f"{len(duplicates)} payloads processed twice, such as {duplicates[:10]}"
    done = {job.payload for job in fleet.store.jobs(state=JobState.DONE, limit=N_JOBS)}
    logged = {payload for lines in processed.values() for payload in lines}
    assert sorted(logged - done)[:10] == [], "jobs ran but their ack was lost at the stop"
    assert sorted(done - logged)[:10] == [], "jobs done without running"
    queued = fleet.store.jobs(state=JobState.QUEUED, limit=N_JOBS)
    assert {job.attempts for job in queued} == {0}, "a job handed back at the stop used up an attempt"
    fleet.store.close()


# Graceful stops of `basic run`.


def write_config(path: Path, **sections: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    return path


def nap_config(folder: Path, *, n_cons: int, shutdown_grace: float, function: str = "nap") -> Path:
    """Write a config that runs `proc_worker:<function>` in `n_cons` consumers, with no producer and no waits."""
    return write_config(
        folder / "config.yaml",
        consumer={
            "function": f"proc_worker:{function}", "interval_min": 0, "interval_max": 0, "poll_interval": 0.05,
        },
        general={"n_prod": 0, "n_cons": n_cons, "shutdown_grace": shutdown_grace},
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_sigterm_finishes_running_jobs(processes: Processes, tmp_path: Path, stop_signal: signal.Signals) -> None:
    """A stop signal to `basic run`: running jobs finish within the grace, the rest stay queued, exit 0."""
    grace_s = 5.0
    config = nap_config(tmp_path, n_cons=2, shutdown_grace=grace_s)
    store = PersistentQSQLite(tmp_path / "queue.sqlite3")
    payloads = [f"0.5 job-{i}" for i in range(40)]
    store.put_many(payloads)

    run = processes.start("basic-run", [BASIC, "run", "--config", config])
    started_log = tmp_path / "started.log"
    processes.wait_until(lambda: len(read_lines(started_log)) >= 3, description="three jobs started", alive=[run])
    run.popen.send_signal(stop_signal)
    signalled = time.monotonic()
    assert run.wait_exit(grace_s + 5) == 0, run.report()
    print(f"basic run exited {time.monotonic() - signalled:.2f} s after {stop_signal.name}")
    assert "Traceback" not in run.stderr(), run.report()

    counts = store.counts()
    assert counts[JobState.RUNNING] == 0, counts
    assert counts[JobState.QUEUED] + counts[JobState.DONE] == len(payloads), counts
    assert counts[JobState.QUEUED] > 0, "the stop came after the queue was empty, so it tested nothing"
    started = read_lines(started_log)
    finished = read_lines(tmp_path / "finished.log")
    done = {job.payload for job in store.jobs(state=JobState.DONE, limit=len(payloads))}
    assert sorted(finished) == sorted(started), "a job that started did not finish within the grace"
    assert done == set(started)
    queued = store.jobs(state=JobState.QUEUED, limit=len(payloads))
    assert {job.attempts for job in queued} == {0}
    store.close()


@pytest.mark.parametrize("function", ["nap", "nap_sync"], ids=["async-def", "plain-def"])
def test_sigterm_hands_back_long_job(processes: Processes, tmp_path: Path, function: str) -> None:
    """A job longer than shutdown_grace goes back to the queue on SIGTERM, its attempt not used."""
    grace_s = 1.0
    config = nap_config(tmp_path, n_cons=1, shutdown_grace=grace_s, function=function)
    store = PersistentQSQLite(tmp_path / "queue.sqlite3")
    job_id = store.put("30 long-job")

    run = processes.start("basic-run", [BASIC, "run", "--config", config])
    started_log = tmp_path / "started.log"
    processes.wait_until(lambda: read_lines(started_log) == ["30 long-job"], description="the job started", alive=[run])
    assert store.get(job_id).attempts == 1
    run.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert run.wait_exit(grace_s + 5) == 0, run.report()
    print(f"basic run exited {time.monotonic() - signalled:.2f} s after SIGTERM")
    assert "Traceback" not in run.stderr(), run.report()

    job = store.get(job_id)
    assert job.state == JobState.QUEUED
    assert job.attempts == 0, "a job handed back at a graceful stop must not use up an attempt"
    assert read_lines(tmp_path / "finished.log") == []
    if HAVE_PROC:
        assert pids_working_in(tmp_path) == [], "a child process outlived basic run"
    store.close()


def test_second_sigterm_hands_back_at_once(processes: Processes, tmp_path: Path) -> None:
    """A second SIGTERM ends the grace period: the running job goes back to the queue at once."""
    grace_s = 60.0
    config = nap_config(tmp_path, n_cons=1, shutdown_grace=grace_s)
    store = PersistentQSQLite(tmp_path / "queue.sqlite3")
    job_id = store.put("30 long-job")

    run = processes.start("basic-run", [BASIC, "run", "--config", config])
    started_log = tmp_path / "started.log"
    processes.wait_until(lambda: read_lines(started_log) == ["30 long-job"], description="the job started", alive=[run])
    run.popen.send_signal(signal.SIGTERM)
    # Two signals sent back to back can merge into one, so the second waits until the first is handled.
    processes.wait_until(lambda: "stopping" in run.stderr(), description="the first SIGTERM handled", alive=[run])
    run.popen.send_signal(signal.SIGTERM)
    assert run.wait_exit(EXIT_TIMEOUT_S) == 0, run.report()
    assert "Traceback" not in run.stderr(), run.report()

    job = store.get(job_id)
    assert job.state == JobState.QUEUED
    assert job.attempts == 0
    assert read_lines(tmp_path / "finished.log") == []
    store.close()


@pytest.mark.skipif(not HAVE_PROC, reason="finding the child process needs /proc")
def test_killed_run_leaves_no_child(processes: Processes, tmp_path: Path) -> None:
    """SIGKILL to `basic run` during a plain def: the child process running it exits on its own."""
    config = nap_config(tmp_path, n_cons=1, shutdown_grace=1.0, function="nap_sync")
    store = PersistentQSQLite(tmp_path / "queue.sqlite3")
    job_id = store.put("60 long-job")

    run = processes.start("basic-run", [BASIC, "run", "--config", config])
    started_log = tmp_path / "started.log"
    processes.wait_until(lambda: read_lines(started_log) == ["60 long-job"], description="the job started", alive=[run])
    children = [pid for pid in pids_working_in(tmp_path) if pid != run.pid]
    assert len(children) == 1, f"expected one child process running the plain def, found {children}"
    kill_hard(run)

    try:
        # Far shorter than the 60 s nap, so the child cannot pass by finishing its call.
        processes.wait_until(
            lambda: children[0] not in pids_working_in(tmp_path), description=f"child process {children[0]} to exit",
            timeout_s=10,
        )
    finally:
        if children[0] in pids_working_in(tmp_path):
            os.kill(children[0], signal.SIGKILL)
    assert read_lines(tmp_path / "finished.log") == []
    assert store.get(job_id).state == JobState.RUNNING, "the job stays leased until its lease expires"
    store.close()
