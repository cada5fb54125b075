"""End-to-end tests of the `basic` command: the default file pipeline, help texts, a bad config.

Every test runs the installed `basic` script as a subprocess with a timeout
and writes its stdout and stderr to files in tmp_path.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from persistentq import JobState, PersistentQSQLite
from persistentq.cli import main as basic_group
from persistentq.files import FAILED_SUFFIX, OUTPUT_SUFFIX
from proc_worker import HAVE_PROC, pids_working_in

BASIC = Path(sys.executable).parent / "basic"
RUN_S = 6
TIMEOUT_S = 60.0
DATABASE_NAME = "queue.sqlite3"
STATE_LINE = re.compile(r"^(?P<state>[a-z]+)\s+(?P<jobs>\d+)$")


@dataclass
class Result:
    """The exit code and output of one `basic` invocation."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str

    def report(self) -> str:
        return (
            f"--- {' '.join(self.command)} exited {self.returncode}\n"
            f"stdout:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-4000:]}"
        )


def basic(log_folder: Path, name: str, *args: str | Path, cwd: Path, timeout_s: float = TIMEOUT_S) -> Result:
    """Run `basic *args`; stdout and stderr go to `<name>.stdout` and `<name>.stderr` in `log_folder`."""
    assert BASIC.exists(), f"the basic script is not installed beside {sys.executable}"
    command = [str(BASIC), *map(str, args)]
    stdout_path = log_folder / f"{name}.stdout"
    stderr_path = log_folder / f"{name}.stderr"
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        try:
            # On timeout, subprocess.run kills the process and waits for it.
            returncode = subprocess.run(command, stdout=stdout, stderr=stderr, cwd=cwd, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{' '.join(command)} still running after {timeout_s:g} s; stderr:\n"
                f"{stderr_path.read_text(errors='replace')[-4000:]}"
            ) from None
    return Result(command, returncode, read_text(stdout_path), read_text(stderr_path))


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def write_config(path: Path, sections: dict[str, dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    return path


def pipeline_sections(*, n_prod: int, n_cons: int) -> dict[str, dict[str, object]]:
    """Return a config of the file pipeline with short waits, a 30 % failure rate and two tries."""
    return {
        "consumer": {
            "interval_min": 0, "interval_max": 0, "poll_interval": 0.1,
            "failure_rate": 0.3, "n_tries": 2, "retry_backoff": 0,
        },
        "producer": {"interval": 0.05},
        "cleaner": {"interval": 0.5},
        "general": {"primary_path": "data", "n_prod": n_prod, "n_cons": n_cons},
    }


def assert_processed(data: Path, payload: str) -> None:
    """Check that `<payload>.out` contains the stand-in processing of the input: upper case and a line count."""
    text = (data / payload).read_text(encoding="utf-8")
    output = (data / f"{payload}{OUTPUT_SUFFIX}").read_text(encoding="utf-8")
    assert output.startswith(text.upper()), f"{payload}{OUTPUT_SUFFIX} does not start with the upper-cased input"
    footer = output[len(text):]
    assert re.fullmatch(rf"# {text.count(chr(10))} lines processed at \d\d:\d\d:\d\d\n", footer), footer


def data_files(data: Path) -> set[str]:
    """Return the names in `data`, without the database and its WAL files."""
    return {path.name for path in data.iterdir() if not path.name.startswith(DATABASE_NAME)}


def status_counts(result: Result) -> dict[str, int]:
    """Parse the state table that `basic status` prints."""
    counts = {}
    for line in result.stdout.splitlines():
        match = STATE_LINE.match(line.strip())
        if match and match["state"] in {state.value for state in JobState}:
            counts[match["state"]] = int(match["jobs"])
    return counts


def test_run_file_pipeline(tmp_path: Path) -> None:
    """`basic run` of the file pipeline: done jobs have their output, failed jobs leave no file."""
    config = write_config(tmp_path / "config.yaml", pipeline_sections(n_prod=1, n_cons=2))
    data = tmp_path / "data"
    run = basic(tmp_path, "run", "run", "--config", config, "--duration", str(RUN_S), cwd=tmp_path)
    assert run.returncode == 0, run.report()
    assert "Traceback" not in run.stderr, run.report()
    if HAVE_PROC:
        assert pids_working_in(tmp_path) == [], "a child process outlived basic run"

    with PersistentQSQLite(data / DATABASE_NAME) as store:
        jobs = store.jobs(limit=1_000_000)
        counts = store.counts()
    by_state = {state: [job for job in jobs if job.state == state] for state in JobState}
    print({state.value: len(found) for state, found in by_state.items()})
    assert by_state[JobState.DONE], "no job was done"
    assert by_state[JobState.FAILED], "no job failed, so the cleaner was not tested"
    assert counts[JobState.RUNNING] == 0, counts
    assert counts[JobState.CANCELLED] == 0, counts

    for job in by_state[JobState.DONE]:
        assert job.result == f"{job.payload}{OUTPUT_SUFFIX}"
        assert_processed(data, job.payload)
    for job in by_state[JobState.QUEUED]:
        assert (data / job.payload).exists(), f"the input of queued job {job.id} is gone"
    outputs = {path.name for path in data.glob(f"*{OUTPUT_SUFFIX}")}
    assert outputs == {f"{job.payload}{OUTPUT_SUFFIX}" for job in by_state[JobState.DONE]}
    failed_payloads = {job.payload for job in by_state[JobState.FAILED]}
    leftovers = {path.name.removesuffix(FAILED_SUFFIX) for path in data.glob(f"*{FAILED_SUFFIX}")}
    assert leftovers <= failed_payloads, "a .failed file belongs to a job that is not failed"
    assert not {payload for payload in failed_payloads if (data / payload).exists()}, (
        "a failed job's input was neither renamed to .failed nor discarded"
    )
    print(f"{len(leftovers)} of {len(failed_payloads)} failed jobs still had a .failed file after the run")

    # The cleaner of the first run sweeps every 0.5 s and does not sweep again
    # when the pool stops, so jobs that failed after its last sweep keep their
    # .failed file. A second run with no producer and no consumer starts only a
    # cleaner. Its first sweep starts at once, and the stop after 1 s lets a
    # sweep in progress finish within general.shutdown_grace (10 s by default).
    clean_config = write_config(tmp_path / "clean.yaml", pipeline_sections(n_prod=0, n_cons=0))
    clean = basic(tmp_path, "clean", "run", "--config", clean_config, "--duration", "1", cwd=tmp_path)
    assert clean.returncode == 0, clean.report()

    assert list(data.glob(f"*{FAILED_SUFFIX}")) == [], "the cleaner left .failed files"
    expected = {job.payload for state in (JobState.DONE, JobState.QUEUED) for job in by_state[state]}
    expected |= outputs
    assert data_files(data) == expected, "files that belong to no job, or jobs whose files are missing"

    status = basic(tmp_path, "status", "status", "--config", config, cwd=tmp_path)
    assert status.returncode == 0, status.report()
    with PersistentQSQLite(data / DATABASE_NAME) as store:
        assert status_counts(status) == {state.value: count for state, count in store.counts().items()}, status.report()
        assert store.counts() == counts, "the cleaning run changed the jobs"
        workers = store.workers()
    assert Counter(worker.kind for worker in workers) == {"producer": 1, "consumer": 2, "cleaner": 2}
    for worker in workers:
        assert worker.state == "stopped", worker
        assert worker.id in status.stdout, status.report()


def command_names(help_text: str) -> list[str]:
    """Return the subcommand names listed under "Commands:" in click's help text."""
    _, _, commands = help_text.partition("\nCommands:\n")
    return [line.split()[0] for line in commands.splitlines() if line.startswith("  ") and line.strip()]


def test_help_every_command(tmp_path: Path) -> None:
    """`basic --help` lists every subcommand, and `basic <command> --help` exits 0 for each."""
    top = basic(tmp_path, "help", "--help", cwd=tmp_path)
    assert top.returncode == 0, top.report()
    names = command_names(top.stdout)
    assert names == sorted(basic_group.commands), top.report()
    assert {"run", "status"} <= set(names)

    for name in names:
        result = basic(tmp_path, f"help-{name}", name, "--help", cwd=tmp_path)
        assert result.returncode == 0, result.report()
        assert result.stdout.startswith(f"Usage: basic {name}"), result.report()


@pytest.mark.parametrize(
    ("sections", "key", "shown"),
    [
        pytest.param({"consumer": {"n_tries": 0}}, "consumer.n_tries", "got 0", id="n_tries-0"),
        pytest.param({"general": {"n_cons": -1}}, "general.n_cons", "got -1", id="n_cons-negative"),
    ],
)
def test_run_bad_config_exit_2(tmp_path: Path, sections: dict, key: str, shown: str) -> None:
    """An invalid value stops `basic run` with exit code 2 and one message, before any file is created."""
    folder = tmp_path / "project"
    config = write_config(folder / "config.yaml", sections)
    result = basic(tmp_path, "run", "run", "--config", config, "--duration", "1", cwd=folder)
    assert result.returncode == 2, result.report()
    assert key in result.stderr, result.report()
    assert shown in result.stderr, result.report()
    assert "Traceback" not in result.stderr, result.report()
    assert sorted(path.name for path in folder.iterdir()) == ["config.yaml"], "a file was created"
