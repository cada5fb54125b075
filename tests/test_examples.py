"""The README's examples, run as a user would: word count, the sped-up demo, the Python snippet."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from persistentq.config import load_config
from persistentq.store.base import JobState
from persistentq.store.sqlite import PersistentQSQLite

ROOT = Path(__file__).resolve().parents[1]
BASIC = Path(sys.executable).parent / "basic"


def run(args: list[str], cwd: Path, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """Run a command in `cwd`, returning its result; fail the test on a non-zero exit."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def copy_wordcount(source: Path, destination: Path) -> None:
    """Copy the word-count example without what a run of the README's steps left in it."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("queue", "*.words"))


def test_copy_wordcount_skips_leftovers(tmp_path: Path) -> None:
    """The copy leaves out the queue folder and the reports of an earlier run."""
    source = tmp_path / "source"
    (source / "texts").mkdir(parents=True)
    (source / "queue").mkdir()
    (source / "queue" / "queue.sqlite3").write_text("old queue")
    (source / "texts" / "a.txt").write_text("a text")
    (source / "texts" / "a.txt.words").write_text("old report")

    copy_wordcount(source, tmp_path / "copy")

    copied = sorted(path.relative_to(tmp_path / "copy").as_posix() for path in (tmp_path / "copy").rglob("*"))
    assert copied == ["texts", "texts/a.txt"]


def test_wordcount_example(tmp_path: Path) -> None:
    """The word-count example counts every text file and records a summary per job."""
    example = tmp_path / "wordcount"
    copy_wordcount(ROOT / "examples" / "wordcount", example)
    texts = sorted((example / "texts").glob("*.txt"))
    config = example / "config.yaml"

    run([str(BASIC), "enqueue", "--config", str(config), *map(str, texts)], cwd=tmp_path)
    run([str(BASIC), "run", "--config", str(config), "--duration", "4"], cwd=tmp_path)

    store = PersistentQSQLite(load_config(config).database_path)
    jobs = store.jobs()
    assert {job.state for job in jobs} == {JobState.DONE}
    assert sorted(job.payload for job in jobs) == sorted(map(str, texts))
    for text in texts:
        words = len(re.findall(r"[a-z']+", text.read_text().lower()))
        report = Path(f"{text}.words").read_text()
        assert report.startswith(f"{text.name}: {words} words")
    store.close()


def test_demo_config_retries(tmp_path: Path) -> None:
    """The sped-up demo processes jobs and retries failed attempts within seconds."""
    demo = tmp_path / "demo"
    shutil.copytree(ROOT / "examples" / "demo", demo, ignore=shutil.ignore_patterns("data"))

    done = run([str(BASIC), "run", "--config", str(demo / "config.yaml"), "--duration", "8"], cwd=tmp_path)

    store = PersistentQSQLite(demo / "data" / "queue.sqlite3")
    counts = store.counts()
    assert counts[JobState.DONE] > 0
    assert "retry in" in done.stderr
    store.close()


def test_readme_python_snippet(tmp_path: Path) -> None:
    """The Python snippet of the README runs as written and prints the job's outcome."""
    readme = (ROOT / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    snippet = next(code for code in snippets if "WorkerPool" in code and "print(" in code)
    (tmp_path / "snippet.py").write_text(snippet)

    done = run([sys.executable, "snippet.py"], cwd=tmp_path)

    assert done.stdout.split() == ["done", "HELLO"]
