"""`basic run` of the file pipeline on PostgreSQL, as on two machines that share the files' folder."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from persistentq import JobState, PersistentQPostgres
from persistentq.files import FAILED_SUFFIX, OUTPUT_SUFFIX
from test_end_to_end import BASIC, RUN_S, TIMEOUT_S, assert_processed, basic, pipeline_sections, status_counts, write_config


def machine_config(folder: Path, shared: Path, url: str, queue: str, *, n_prod: int, n_cons: int) -> Path:
    """Write the config of one machine: the shared files' folder, the database URL, a queue of the test's own."""
    sections = pipeline_sections(n_prod=n_prod, n_cons=n_cons)
    sections["general"].update(primary_path=str(shared), database=url, queue=queue)
    return write_config(folder / "config.yaml", sections)


def test_two_machines_share_pipeline(tmp_path: Path, postgres_url: str) -> None:
    """A producer machine and a consumer machine on one database: every done job's output is in the shared folder."""
    shared = tmp_path / "shared"
    shared.mkdir()
    queue = f"e2e_{uuid.uuid4().hex[:8]}"
    producer_config = machine_config(tmp_path / "producer", shared, postgres_url, queue, n_prod=1, n_cons=0)
    consumer_config = machine_config(tmp_path / "consumer", shared, postgres_url, queue, n_prod=0, n_cons=2)

    runs = {}
    for name, config in (("producer", producer_config), ("consumer", consumer_config)):
        with open(tmp_path / f"{name}.stderr", "wb") as stderr:
            runs[name] = subprocess.Popen(
                [str(BASIC), "run", "--config", str(config), "--duration", str(RUN_S)],
                stdout=subprocess.DEVNULL, stderr=stderr, cwd=config.parent,
            )
    for name, process in runs.items():
        stderr = (tmp_path / f"{name}.stderr").read_text(errors="replace")
        assert process.wait(timeout=TIMEOUT_S) == 0, f"{name}:\n{stderr[-4000:]}"
        assert "Traceback" not in stderr, f"{name}:\n{stderr[-4000:]}"

    with PersistentQPostgres(postgres_url) as store:
        jobs = store.jobs(queue=queue, limit=1_000_000)
        workers = [worker for worker in store.workers() if worker.pid in {p.pid for p in runs.values()}]
    by_state = {state: [job for job in jobs if job.state is state] for state in JobState}
    print({state.value: len(found) for state, found in by_state.items()})
    assert by_state[JobState.DONE], "no job was done"
    assert by_state[JobState.FAILED], "no job failed, so the cleaner was not tested"
    assert not by_state[JobState.RUNNING]
    consumer_pid = runs["consumer"].pid
    for job in by_state[JobState.DONE]:
        assert job.worker_id.endswith(f":{consumer_pid}"), job.worker_id
        assert job.result == f"{job.payload}{OUTPUT_SUFFIX}"
        assert_processed(shared, job.payload)
    assert {worker.kind for worker in workers} == {"producer", "consumer", "cleaner"}
    leftovers = {path.name.removesuffix(FAILED_SUFFIX) for path in shared.glob(f"*{FAILED_SUFFIX}")}
    assert leftovers <= {job.payload for job in by_state[JobState.FAILED]}

    status = basic(tmp_path, "status", "status", "--config", consumer_config, cwd=tmp_path)
    assert status.returncode == 0, status.report()
    assert status_counts(status)["done"] == len(by_state[JobState.DONE])
