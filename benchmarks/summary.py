"""Medians, ranges, ratios within each repetition, the targets, and the table and plot of a run."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .designs import DESIGNS, PEERS, REFERENCE, STORE_DESIGNS, reference_of
from .measures import MEASURES, MEASURES_BY_KEY
from .runner import RunResults

CHECK_KEYS = ("put", "done", "duplicates", "lost", "lock_errors")


@dataclass(frozen=True)
class Spread:
    """The median, min and max of one figure over the repetitions."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        return cls(statistics.median(values), min(values), max(values)) if values else None


def metric_values(run: RunResults, measure: str, design: str, metric: str) -> list[float | None]:
    """Return one figure per repetition, None where that repetition failed or lacked it."""
    return [rep["metrics"].get(metric) for rep in run.results.get((measure, design), [])]


def _per_repetition(run: RunResults, measure: str, design: str, metric: str) -> dict[int, float]:
    return {
        index: value
        for index, value in enumerate(metric_values(run, measure, design, metric))
        if value is not None
    }


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure of one measure on one design."""

    measure: str
    design: str
    metric: str
    spread: Spread
    vs_reference: Spread | None
    synchronous: str
    checks: dict[str, int]


def rows(run: RunResults) -> list[Row]:
    """Return the table's rows in registry order, each with its ratio to the reference design."""
    table = []
    for measure in MEASURES:
        for design in measure.designs:
            repetitions = run.results.get((measure.key, design))
            if not repetitions:
                continue
            for metric in repetitions[0]["metrics"]:
                values = [v for v in metric_values(run, measure.key, design, metric) if v is not None]
                table.append(Row(
                    measure=measure.key,
                    design=design,
                    metric=metric,
                    spread=Spread.of(values),
                    vs_reference=_ratio_to_reference(run, measure.key, design, metric),
                    synchronous=repetitions[0].get("synchronous", ""),
                    checks=_summed_checks(repetitions),
                ))
    return table


def _ratio_to_reference(run: RunResults, measure: str, design: str, metric: str) -> Spread | None:
    reference_design = reference_of(design)
    if reference_design is None:
        return None
    own = _per_repetition(run, measure, design, metric)
    reference = _per_repetition(run, measure, reference_design, metric)
    return Spread.of([own[i] / reference[i] for i in own if reference.get(i)])


def _summed_checks(repetitions: list[dict]) -> dict[str, int]:
    checked = [rep["checks"] for rep in repetitions if "checks" in rep]
    return {key: sum(checks[key] for checks in checked) for key in CHECK_KEYS} if checked else {}


# Targets: each is evaluated in every repetition, and the median decides.

Figure = Callable[[RunResults, int], "float | None"]


def figure(measure: str, design: str, metric: str) -> Figure:
    """Return a function giving one figure of one repetition."""
    return lambda run, index: _per_repetition(run, measure, design, metric).get(index)


def fastest(measure: str, designs: tuple[str, ...], metric: str) -> Figure:
    """Return a function giving the best figure among `designs` in one repetition."""

    def best(run: RunResults, index: int) -> float | None:
        values = [_per_repetition(run, measure, design, metric).get(index) for design in designs]
        values = [value for value in values if value is not None]
        return max(values) if values else None

    return best


@dataclass(frozen=True)
class Target:
    """A goal: a figure, divided by another figure when `denominator` is set, against a bound."""

    title: str
    numerator: Figure
    bound: float
    at_least: bool  # True: the figure must reach the bound; False: stay under it
    denominator: Figure | None = None

    def values(self, run: RunResults, repetitions: int) -> list[float]:
        found = []
        for index in range(repetitions):
            top = self.numerator(run, index)
            bottom = self.denominator(run, index) if self.denominator else 1.0
            if top is not None and bottom:
                found.append(top / bottom)
        return found

    def met(self, spread: Spread) -> bool:
        return spread.median >= self.bound if self.at_least else spread.median <= self.bound


ACKING_PEERS = tuple(peer for peer in PEERS if peer != "huey")


def targets() -> list[Target]:
    """Return the targets for every persistentq store design.

    Ratios to a raw loop divide by the raw loop of the same database. The
    peers are SQLite queues, so only the SQLite store is held against them.
    """
    found = []
    for design in STORE_DESIGNS:
        name = "" if design == "persistentq" else f" [{design}]"
        reference = DESIGNS[design].reference
        raw_loop = figure("claim_ack", reference, "jobs/s")
        cycle = figure("cycle_async", design, "jobs/s")
        found.append(Target(f"worker cycle (async) / raw claim+ack{name}", cycle, 1.0, True, raw_loop))
        if reference == REFERENCE:
            found += [
                Target(f"worker cycle (async) / fastest peer get+ack{name}", cycle, 5.0, True,
                       fastest("claim_ack", PEERS, "jobs/s")),
                Target(f"worker cycle (async) / fastest peer that acks{name}", cycle, 5.0, True,
                       fastest("claim_ack", ACKING_PEERS, "jobs/s")),
            ]
        found += [
            Target(f"worker cycle (sync, child processes) / raw claim+ack{name}",
                   figure("cycle_sync", design, "jobs/s"), 0.25, True, raw_loop),
            Target(f"1 producer + 4 consumers / raw in the same set-up{name}",
                   figure("multiprocess", design, "jobs/s"), 0.7, True,
                   figure("multiprocess", reference, "jobs/s")),
            Target(f"drain from the big backlog / from a small one{name}",
                   figure("drain_big", design, "jobs/s"), 0.9, True,
                   figure("drain_small", design, "jobs/s")),
            Target(f"wake-up p50, one process (ms){name}",
                   figure("wake_in_process", design, "p50 ms"), 5.0, False),
            Target(f"wake-up p50, across processes (ms){name}",
                   figure("wake_cross_process", design, "p50 ms"), 50.0, False),
            Target(f"event-loop lag p99 under a held write lock (ms){name}",
                   figure("loop_lag", design, "p99 ms"), 20.0, False),
            Target(f"DataFrame of 10,000 rows from the big queue (ms){name}",
                   figure("dataframe", design, "ms"), 100.0, False),
            Target(f"counts per state of the big queue (ms){name}", figure("counts", design, "ms"), 50.0, False),
        ]
    return found


def target_lines(run: RunResults) -> list[tuple[Target, Spread | None]]:
    """Return every target with the spread of its figure, None where the run lacks a figure."""
    repetitions = int(run.options["repeat"])
    return [(target, Spread.of(target.values(run, repetitions))) for target in targets()]


# Text output.


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _spread_text(spread: Spread | None) -> str:
    if spread is None:
        return ""
    return f"{_number(spread.median)} ({_number(spread.low)}-{_number(spread.high)})"


def markdown_table(run: RunResults) -> str:
    """Return the figures of a run as a Markdown table: median (min-max) over the repetitions."""
    lines = [
        "| measure | design | figure | median (min-max) | vs its raw loop, within each repetition | synchronous | jobs put / done / dup / lost / lock errors |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for row in rows(run):
        title = MEASURES_BY_KEY[row.measure].title
        checks = " / ".join(str(row.checks[key]) for key in CHECK_KEYS) if row.checks else ""
        lines.append(
            f"| {title} | {row.design} | {row.metric} | {_spread_text(row.spread)} | "
            f"{_spread_text(row.vs_reference)} | {row.synchronous} | {checks} |"
        )
    return "\n".join(lines)


def markdown_targets(run: RunResults) -> str:
    """Return every target with its median (min-max) figure and whether it was met."""
    lines = ["| target | bound | median (min-max) | met |", "|---|---:|---:|---|"]
    for target, spread in target_lines(run):
        bound = f"{'>=' if target.at_least else '<='} {_number(target.bound)}"
        if spread is None:
            verdict = "no figure"
        else:
            verdict = "yes" if target.met(spread) else "**no**"
        lines.append(f"| {target.title} | {bound} | {_spread_text(spread)} | {verdict} |")
    return "\n".join(lines)


SIDE_BY_SIDE = ("raw", "persistentq", "raw-pg", "persistentq-pg")


def markdown_side_by_side(run: RunResults) -> str:
    """Return the headline median of every measure for SQLite's and PostgreSQL's raw loop and store, in columns."""
    lines = [
        "| measure | figure | " + " | ".join(SIDE_BY_SIDE) + " |",
        "|---|---|" + "---:|" * len(SIDE_BY_SIDE),
    ]
    for measure in MEASURES:
        metrics: list[str] = []
        for design in SIDE_BY_SIDE:
            for repetition in run.results.get((measure.key, design), [])[:1]:
                metrics += [name for name in repetition["metrics"] if name not in metrics]
        for metric in metrics:
            cells = []
            for design in SIDE_BY_SIDE:
                values = [v for v in metric_values(run, measure.key, design, metric) if v is not None]
                cells.append(_number(statistics.median(values)) if values else "n/a")
            lines.append(f"| {measure.title} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_problems(run: RunResults) -> list[tuple[str, str]]:
    """Return (design, description) for each measure whose jobs done differ from jobs put, or that saw duplicates."""
    problems = []
    for row in rows(run):
        checks = row.checks
        if not checks or row.metric not in ("jobs/s", "p50 ms"):
            continue
        if checks["done"] != checks["put"] or checks["duplicates"] or checks["lost"] or checks["lock_errors"]:
            problems.append((row.design, (
                f"{row.measure} on {row.design}: {checks['put']} put, {checks['done']} done, "
                f"{checks['duplicates']} duplicates, {checks['lost']} lost, {checks['lock_errors']} lock errors"
            )))
    return problems


THROUGHPUT_MEASURES = ("put", "claim_ack", "cycle_async", "cycle_sync", "multiprocess")


def plot(run: RunResults, path: Path) -> None:
    """Draw the median jobs/s of each design in each throughput measure, on a log scale, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    designs = [design for design in DESIGNS if any((key, design) in run.results for key in THROUGHPUT_MEASURES)]
    measures = [key for key in THROUGHPUT_MEASURES if any((key, design) in run.results for design in designs)]
    figure_, axes = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(designs)
    for offset, design in enumerate(designs):
        heights = []
        for key in measures:
            values = [v for v in metric_values(run, key, design, "jobs/s") if v is not None]
            heights.append(statistics.median(values) if values else 0)
        positions = [index + offset * width for index in range(len(measures))]
        axes.bar(positions, heights, width, label=design)
    axes.set_xticks([index + 0.4 - width / 2 for index in range(len(measures))])
    axes.set_xticklabels([MEASURES_BY_KEY[key].title.replace(", ", ",\n") for key in measures], fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel("jobs/s (median, log scale)")
    axes.set_title("Throughput per design, one run; a missing bar: the design has no such path")
    axes.legend(fontsize=8)
    figure_.tight_layout()
    figure_.savefig(path, dpi=110)
    plt.close(figure_)
