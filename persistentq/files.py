"""The file pipeline, the default job: producers write input files, consumers write `<name>.out`.

    pipeline = FilePipeline(Path("data"))
    name = pipeline.produce()         # writes data/<name>, returns the payload
    process_file(Path("data"), name)  # writes data/<name>.out, returns "<name>.out"

Every file lives directly in `primary_path`, named by the job's payload.
"""

from __future__ import annotations

import functools
import os
import random
import string
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InvalidStateError, PermanentJobError

if TYPE_CHECKING:
    from .config import Config

NAME_LENGTH = 10
NAME_ALPHABET = string.ascii_lowercase + string.digits
OUTPUT_SUFFIX = ".out"
FAILED_SUFFIX = ".failed"


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
# Names the pipeline writes itself, so a payload naming one is never an input.
RESERVED_SUFFIXES = (OUTPUT_SUFFIX, FAILED_SUFFIX, ".tmp")
MAX_NAME_BYTES = 255


def input_path(primary_path: Path, payload: str, protected: frozenset[str] = frozenset()) -> Path:
    """Return the input file a payload names, or raise PermanentJobError saying why it cannot be one.

    The payload must be a plain file name inside `primary_path`. It may not
    contain path separators or `..`, be absolute or hidden, end in one of the
    pipeline's own suffixes, or be one of the `protected` names (the queue
    database and its side files). A failing job can therefore never rename or
    delete a file that is not an input.
    """
    reason = _unsafe_reason(payload, protected)
    if reason:
        raise PermanentJobError(f"payload {payload!r:.80} is not a valid input file name: {reason}")
    return primary_path / payload


def _unsafe_reason(payload: str, protected: frozenset[str]) -> str | None:
    if not payload or "/" in payload or "\\" in payload or "\0" in payload:
        return "it must be a plain file name inside primary_path, without path separators"
    if payload in (".", "..") or os.path.isabs(payload) or (len(payload) > 1 and payload[1] == ":"):
        return "it must be a plain file name inside primary_path, not '..' or an absolute path"
    if payload.startswith("."):
        return "hidden names are reserved for temporary files"
    if payload.endswith(RESERVED_SUFFIXES):
        return f"names ending in {', '.join(RESERVED_SUFFIXES)} are the pipeline's own files"
    if payload in protected:
        return "it names a file of the queue itself"
    if len(payload.encode("utf-8", "replace")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    return None


def _regular_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`.

    A crash leaves either the whole file or none, never half of one.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{random.getrandbits(32):08x}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def process_file(primary_path: Path, payload: str, protected: frozenset[str] = frozenset()) -> str:
    """Read the input file, write its processed content to `<name>.out`, return that name.

    The processing itself is a stand-in: upper-case text and a line count.
    A missing input, or one that is not a regular file, fails the job at once.
    """
    source = input_path(primary_path, payload, protected)
    if not _regular_file(source):
        state = "is not a regular file" if source.exists() else "does not exist"
        raise PermanentJobError(f"input file {source} {state}")
    text = source.read_text(encoding="utf-8")
    output = source.with_name(source.name + OUTPUT_SUFFIX)
    lines = text.count("\n")
    write_atomically(output, f"{text.upper()}# {lines} lines processed at {time.strftime('%H:%M:%S')}\n")
    return output.name


class FilePipeline:
    """The default producer function, consumer function and job hooks, all on `primary_path`."""

    def __init__(
        self,
        primary_path: Path,
        *,
        protected: Iterable[str | Path] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.primary_path = Path(primary_path)
        # Names in primary_path that payloads may never name: the queue database and its side files.
        self.protected = frozenset(Path(path).name for path in protected)
        self.rng = rng or random.Random()

    @classmethod
    def for_config(cls, config: Config) -> FilePipeline:
        """Return the pipeline on `general.primary_path`, protecting the queue's and config's files."""
        protected: list[Path] = [config.source] if config.source else []
        if config.database_path is not None:
            database = config.database_path
            protected += [database, *(database.with_name(database.name + side) for side in SQLITE_SIDE_FILES)]
        return cls(config.general.primary_path, protected=protected)

    def __repr__(self) -> str:
        return f"FilePipeline({str(self.primary_path)!r})"

    def produce(self) -> str:
        """Write a new input file with a random 10-character name and return the name."""
        while True:
            name = "".join(self.rng.choices(NAME_ALPHABET, k=NAME_LENGTH))
            path = self.primary_path / name
            if not path.exists():
                break
        words = [
            "".join(self.rng.choices(string.ascii_lowercase, k=self.rng.randint(3, 9)))
            for _ in range(self.rng.randint(5, 20))
        ]
        write_atomically(path, f"{name}\n{' '.join(words)}\n")
        return name

    @property
    def process(self) -> Callable[[str], str]:
        """The consumer function: a plain def, so n_time is enforced in a child process."""
        return functools.partial(process_file, self.primary_path, protected=self.protected)

    # Job hooks.

    def on_failed(self, payload: str) -> None:
        """Rename the input of a job that failed for good to `<name>.failed`."""
        source = self._input_or_none(payload)
        if source is not None and _regular_file(source):
            os.replace(source, source.with_name(source.name + FAILED_SUFFIX))

    def before_requeue(self, payload: str) -> None:
        """Rename `<name>.failed` back so the job can run again; reject it when the file is gone."""
        source = self._input_or_none(payload)
        if source is None:
            return  # An unsafe payload fails again at once; there is no file to restore.
        failed = source.with_name(source.name + FAILED_SUFFIX)
        if _regular_file(failed):
            os.replace(failed, source)
        elif not source.exists():
            raise InvalidStateError(
                f"cannot requeue the job of {payload!r}: neither {source.name} nor {failed.name} "
                f"exists in {self.primary_path} (the cleaner removes the .failed files of failed "
                "jobs); put a new job instead"
            )

    def discard(self, payload: str) -> None:
        """Delete the `.failed` input of a failed job, renaming a leftover input first."""
        source = self._input_or_none(payload)
        if source is None:
            return
        self.on_failed(payload)
        failed = source.with_name(source.name + FAILED_SUFFIX)
        if _regular_file(failed):
            failed.unlink()

    def _input_or_none(self, payload: str) -> Path | None:
        try:
            return input_path(self.primary_path, payload, self.protected)
        except PermanentJobError:
            return None
