"""An example consumer function: count the words of a text file and write a report beside it.

Run it on the text files of a folder (see README.md in the repository root):

    basic enqueue --config examples/wordcount/config.yaml "$PWD"/examples/wordcount/texts/*.txt
    basic run --config examples/wordcount/config.yaml --duration 10
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

WORD = re.compile(r"[a-z']+")


def count_words(payload: str) -> str:
    """Count the words of the file named by `payload`, write `<file>.words`, return a summary.

    A plain def, so persistentq runs it in a child process and stops it at n_time.
    A missing file raises FileNotFoundError, which counts a failed attempt.
    """
    source = Path(payload)
    words = WORD.findall(source.read_text(encoding="utf-8").lower())
    common = collections.Counter(words).most_common(5)
    report = source.with_name(source.name + ".words")
    lines = [f"{source.name}: {len(words)} words"] + [f"{count:6d}  {word}" for word, count in common]
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"{len(words)} words, most common: {common[0][0] if common else '-'}"
