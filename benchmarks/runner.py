"""The run: build the big templates, run every measure in a fresh process, repeat, summarize.

Repetitions are interleaved: repetition 1 runs every (measure, design)
pair, then repetition 2 runs them all again, and so on. A slow spell of a
shared machine then lands on every design alike, and ratios are taken
between figures of the same repetition.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .child import RESULT_MARKER
from .designs import DESIGNS, unavailable_reason
from .measures import MEASURES, PROCESS_TIMEOUT_S, Measure

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RunOptions:
    """Options of one run, as given on the command line."""

    repeat: int = 5
    quick: bool = False
    synchronous: str = "normal"
    measures: tuple[str, ...] = ()  # empty: every measure
    designs: tuple[str, ...] = ()  # empty: every design
    folder: Path | None = None  # where the databases go; a new temporary folder by default
    keep: bool = False  # keep the databases after the run


@dataclass
class RunResults:
    """Every figure of a run: results[(measure, design)] has one entry per repetition."""

    options: dict[str, Any]
    results: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # design -> why it did not run
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "options": self.options,
            "seconds": self.seconds,
            "failures": self.failures,
            "skipped": self.skipped,
            "results": [
                {"measure": measure, "design": design, "repetitions": repetitions}
                for (measure, design), repetitions in self.results.items()
            ],
        }


def selected_pairs(options: RunOptions, skipped: dict[str, str]) -> list[tuple[Measure, str]]:
    """Return the (measure, design) pairs to run, in table order; note designs that cannot run in `skipped`."""
    pairs = []
    for measure in MEASURES:
        if options.measures and measure.key not in options.measures:
            continue
        for design in measure.designs:
            if options.designs and design not in options.designs:
                continue
            if design in skipped:
                continue
            reason = unavailable_reason(design)
            if reason is not None:
                skipped[design] = reason
                continue
            pairs.append((measure, design))
    return pairs


def run_child(request: dict[str, Any], timeout_s: float = PROCESS_TIMEOUT_S) -> dict[str, Any]:
    """Run `python -m benchmarks.child` on one request and return its JSON result.

    Raises RuntimeError with the child's last output lines when it fails.
    """
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", json.dumps(request)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = completed.stdout.splitlines()
    if completed.returncode != 0 or RESULT_MARKER not in lines:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"exit code {completed.returncode}:\n{tail}")
    return json.loads(lines[lines.index(RESULT_MARKER) + 1])


def template_keys(pairs: list[tuple[Measure, str]]) -> list[tuple[str, str]]:
    """Return the (kind, design) of each big database that the selected measures copy."""
    return sorted({(kind, design) for measure, design in pairs for kind in measure.templates})


def build_templates(pairs: list[tuple[Measure, str]], options: RunOptions, folder: Path, out: TextIO) -> dict[str, str]:
    """Build each big database the selected measures copy, once per run."""
    templates: dict[str, str] = {}
    for kind, design in template_keys(pairs):
        started = time.perf_counter()
        print(f"building the {kind} queue for {design} ...", end=" ", file=out, flush=True)
        request = {
            "template": kind,
            "design": design,
            "folder": str(folder / f"template-{kind}-{design}"),
            "quick": options.quick,
            "synchronous": options.synchronous,
        }
        templates[f"{kind}:{design}"] = run_child(request)["file"]
        print(f"{time.perf_counter() - started:.1f} s", file=out, flush=True)
    return templates


def run(options: RunOptions, out: TextIO = sys.stdout) -> RunResults:
    """Run every selected measure `options.repeat` times, printing progress to `out`."""
    for design in options.designs:
        if design not in DESIGNS:
            raise ValueError(f"unknown design {design!r}; expected one of {', '.join(DESIGNS)}")
    skipped: dict[str, str] = {}
    pairs = selected_pairs(options, skipped)
    if not pairs and skipped:
        reasons = "; ".join(f"{design}: {reason}" for design, reason in skipped.items())
        raise ValueError(f"none of the selected designs can run here ({reasons})")
    if not pairs:
        raise ValueError("no measure selected; check --measure and --design")
    for design, reason in skipped.items():
        print(f"skipping {design}: {reason}", file=out, flush=True)
    base = options.folder or Path(tempfile.mkdtemp(prefix="persistentq-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    results = RunResults(options={**vars(options), "folder": str(base)}, skipped=skipped)
    started = time.perf_counter()
    try:
        templates = build_templates(pairs, options, base, out)
        total = len(pairs) * options.repeat
        for repetition in range(options.repeat):
            for index, (measure, design) in enumerate(pairs):
                step = repetition * len(pairs) + index + 1
                _run_one(measure, design, repetition, step, total, options, base, templates, results, out)
    finally:
        results.seconds = time.perf_counter() - started
        if not options.keep:
            # Template databases on a server outlive the folder, so each design drops its own.
            for kind, design in template_keys(pairs):
                _discard(design, base / f"template-{kind}-{design}", out)
            shutil.rmtree(base, ignore_errors=True)
    return results


def _discard(design: str, folder: Path, out: TextIO) -> None:
    """Remove what `design` keeps outside `folder`, reporting a failure instead of raising it."""
    try:
        DESIGNS[design].discard(folder)
    except Exception as exc:  # noqa: BLE001 - a cleanup failure must not hide the run's results
        print(f"could not remove the {design} database of {folder}: {exc}", file=out, flush=True)


def _run_one(
    measure: Measure,
    design: str,
    repetition: int,
    step: int,
    total: int,
    options: RunOptions,
    base: Path,
    templates: dict[str, str],
    results: RunResults,
    out: TextIO,
) -> None:
    folder = base / f"rep{repetition + 1}" / f"{measure.key}-{design}"
    request = {
        "measure": measure.key,
        "design": design,
        "folder": str(folder),
        "quick": options.quick,
        "synchronous": options.synchronous,
        "templates": templates,
    }
    prefix = f"[{step:>3}/{total}] rep {repetition + 1}/{options.repeat} {measure.key:<18} {design:<14}"
    print(prefix, end=" ", file=out, flush=True)
    started = time.perf_counter()
    try:
        result = run_child(request)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        message = f"{measure.key} on {design}, repetition {repetition + 1}: {exc}"
        results.failures.append(message)
        print(f"FAILED: {exc}", file=out, flush=True)
        return
    finally:
        if not options.keep:
            _discard(design, folder, out)
            shutil.rmtree(folder, ignore_errors=True)
    results.results.setdefault((measure.key, design), []).append(result)
    headline = ", ".join(f"{value:,.1f} {name}" for name, value in result["metrics"].items())
    print(f"{headline}  ({time.perf_counter() - started:.1f} s)", file=out, flush=True)
