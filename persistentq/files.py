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
from collections.abc import Callable
from pathlib import Path

from .errors import InvalidStateError, PermanentJobError

NAME_LENGTH = 10
NAME_ALPHABET = string.ascii_lowercase + string.digits
OUTPUT_SUFFIX = ".out"
FAILED_SUFFIX = ".failed"


def input_path(primary_path: Path, payload: str) -> Path:
    """Return the input file a payload names; PermanentJobError when it would leave `primary_path`."""
    unsafe = (
        not payload
        or payload in (".", "..")
        or "/" in payload
        or "\\" in payload
        or "\0" in payload
        or os.path.isabs(payload)
        or (len(payload) > 1 and payload[1] == ":")
    )
    if unsafe:
        raise PermanentJobError(
            f"payload {payload!r:.80} is not a plain file name inside primary_path "
            "(no path separators, '..' or absolute paths); the job cannot be processed"
        )
    return primary_path / payload


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


def process_file(primary_path: Path, payload: str) -> str:
    """Read the input file, write its processed content to `<name>.out`, return that name.

    The processing itself is a stand-in: upper-case text and a line count.
    """
    source = input_path(primary_path, payload)
    text = source.read_text(encoding="utf-8")
    output = source.with_name(source.name + OUTPUT_SUFFIX)
    lines = text.count("\n")
    write_atomically(output, f"{text.upper()}# {lines} lines processed at {time.strftime('%H:%M:%S')}\n")
    return output.name


class FilePipeline:
    """The default producer function, consumer function and job hooks, all on `primary_path`."""

    def __init__(self, primary_path: Path, *, rng: random.Random | None = None) -> None:
        self.primary_path = Path(primary_path)
        self.rng = rng or random.Random()

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
        return functools.partial(process_file, self.primary_path)

    # Job hooks.

    def on_failed(self, payload: str) -> None:
        """Rename the input of a job that failed for good to `<name>.failed`."""
        source = self._input_or_none(payload)
        if source is not None and source.exists():
            os.replace(source, source.with_name(source.name + FAILED_SUFFIX))

    def before_requeue(self, payload: str) -> None:
        """Rename `<name>.failed` back so the job can run again; reject it when the file is gone."""
        source = self._input_or_none(payload)
        if source is None:
            return  # An unsafe payload fails again at once; there is no file to restore.
        failed = source.with_name(source.name + FAILED_SUFFIX)
        if failed.exists():
            os.replace(failed, source)
        elif not source.exists():
            raise InvalidStateError(
                f"cannot requeue the job of {payload!r}: its input file {failed} was already "
                "removed by the cleaner; put a new job instead"
            )

    def discard(self, payload: str) -> None:
        """Delete the `.failed` input of a failed job, renaming a leftover input first."""
        source = self._input_or_none(payload)
        if source is None:
            return
        self.on_failed(payload)
        source.with_name(source.name + FAILED_SUFFIX).unlink(missing_ok=True)

    def _input_or_none(self, payload: str) -> Path | None:
        try:
            return input_path(self.primary_path, payload)
        except PermanentJobError:
            return None
