"""The benchmark harness: repetitions, statistics, the machine, the table and the JSON.

A *case* is a function that takes the run's :class:`Settings` and returns
:class:`Metric` values, each with one sample per repetition.  The harness runs
the cases, summarises every metric (median, quartiles, min and max), checks
it against its :class:`Target` if it has one, prints a table and
writes one JSON document.  A case that cannot run here (an optional package
missing, a component not built yet) raises :class:`Skip` with the reason.

Figures are only ever judged by their median: on a shared two-core machine a
single repetition can be off by a lot, and the spread says how much.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Literal

import msgspec
from msgspec import Struct, field

#: Packages whose versions go into the results (missing ones are recorded as null).
PACKAGES = (
    "runner",
    "anyio",
    "msgspec",
    "aiohttp",
    "structlog",
    "stamina",
    "rich",
    "litellm",
    "openai",
    "httpx",
)

SCHEMA_VERSION = 1


class Skip(Exception):
    """A case that cannot run here; the message says why and what would enable it."""


class Settings(Struct, frozen=True, kw_only=True):
    """What a case needs to know about this run."""

    full: bool = False
    #: Timed repetitions per measurement (warm-up runs come on top).
    repetitions: int = 5
    #: A directory the case may fill; removed after the run.
    scratch: str = ""


class Target(Struct, frozen=True, kw_only=True):
    """A performance target (docs/benchmarks.md) a metric's median is checked against."""

    op: Literal["<=", ">="]
    value: float
    text: str

    def met_by(self, value: float) -> bool:
        return value <= self.value if self.op == "<=" else value >= self.value


class Metric(Struct, kw_only=True):
    """One measured quantity: its samples (one per repetition) and what they mean."""

    name: str
    unit: str
    samples: list[float]
    target: Target | None = None
    note: str | None = None


class Stats(Struct, frozen=True, kw_only=True):
    """Median and spread of a metric's samples."""

    n: int
    median: float
    q1: float
    q3: float
    min: float
    max: float


class MetricResult(Struct, frozen=True, kw_only=True):
    """A metric as written to the JSON: samples, statistics, target outcome."""

    name: str
    unit: str
    stats: Stats
    samples: list[float]
    target: Target | None = None
    met: bool | None = None
    note: str | None = None


class CaseResult(Struct, frozen=True, kw_only=True):
    """One case's outcome: ``ok`` with metrics, ``skipped`` or ``error`` with a note."""

    case: str
    title: str
    status: Literal["ok", "skipped", "error"]
    seconds: float
    metrics: list[MetricResult] = field(default_factory=list)
    note: str | None = None


#: A target row's verdict (:mod:`benchmarks._targets`).
Outcome = Literal["met", "missed", "not measured"]


class Part(Struct, frozen=True, kw_only=True):
    """One figure of a row as measured (``stats`` is None when it was not)."""

    metric: str
    unit: str
    target: Target
    stats: Stats | None = None
    met: bool | None = None
    reason: str | None = None


class TargetRow(Struct, frozen=True, kw_only=True):
    """A row as the run found it; ``reason`` says why it was not measured."""

    label: str
    outcome: Outcome
    parts: list[Part]
    reason: str | None = None


class Machine(Struct, frozen=True, kw_only=True):
    """Where the figures were taken."""

    cpu_count: int | None
    cpu_available: int | None
    cpu_model: str | None
    memory_gib: float | None
    python: str
    implementation: str
    platform: str
    packages: dict[str, str | None]
    git_commit: str | None
    load_average: list[float] | None


class Report(Struct, frozen=True, kw_only=True):
    """The whole JSON document of one run."""

    schema: int
    mode: Literal["quick", "full"]
    started_at: str
    seconds: float
    machine: Machine
    cases: list[CaseResult]
    load_average_after: list[float] | None = None
    #: The issue 13 targets as read off the cases' figures (:mod:`benchmarks._targets`).
    targets: list[TargetRow] = field(default_factory=list)


CaseFunction = Callable[[Settings], Sequence[Metric]]


class Case(Struct, frozen=True, kw_only=True):
    """A named benchmark case."""

    name: str
    title: str
    run: CaseFunction


# --- measuring ----------------------------------------------------------------


def collect(
    once: Callable[[], Mapping[str, float]], repetitions: int, *, warmup: int = 1
) -> dict[str, list[float]]:
    """Run ``once`` ``warmup`` times untimed, then ``repetitions`` times; gather its values.

    ``once`` returns the figures of one repetition by name.  A collection
    between repetitions keeps one repetition's garbage from landing in the next.
    """
    for _ in range(warmup):
        once()
    samples: dict[str, list[float]] = {}
    for _ in range(repetitions):
        gc.collect()
        for name, value in once().items():
            samples.setdefault(name, []).append(value)
    return samples


def summarise(samples: Sequence[float]) -> Stats:
    """Median, quartiles (inclusive method, so two samples still have an IQR), min, max."""
    if not samples:
        raise ValueError("a metric needs at least one sample")
    ordered = sorted(samples)
    if len(ordered) == 1:
        q1 = q3 = ordered[0]
    else:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return Stats(
        n=len(ordered),
        median=statistics.median(ordered),
        q1=q1,
        q3=q3,
        min=ordered[0],
        max=ordered[-1],
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, nearest rank."""
    if not ordered:
        raise ValueError("no values")
    rank = math.ceil(q / 100 * len(ordered))  # 1-based: the smallest value with q % at or below
    return ordered[max(0, min(len(ordered), rank) - 1)]


def evaluate(metric: Metric) -> MetricResult:
    """A metric's statistics and whether its median meets its target."""
    stats = summarise(metric.samples)
    met = None if metric.target is None else metric.target.met_by(stats.median)
    return MetricResult(
        name=metric.name,
        unit=metric.unit,
        stats=stats,
        samples=[round(s, 6) for s in metric.samples],
        target=metric.target,
        met=met,
        note=metric.note,
    )


def run_case(case: Case, settings: Settings, *, log: Callable[[str], None]) -> CaseResult:
    """Run one case, turning :class:`Skip` and any error into a result with a note."""
    log(f"{case.name}: {case.title} ...")
    started = time.perf_counter()
    try:
        metrics = [evaluate(m) for m in case.run(settings)]
    except Skip as exc:
        log(f"{case.name}: skipped: {exc}")
        return CaseResult(
            case=case.name,
            title=case.title,
            status="skipped",
            seconds=time.perf_counter() - started,
            note=str(exc),
        )
    except Exception as exc:
        # One broken case must not cost the figures of the others.
        traceback.print_exc(file=sys.stderr)
        return CaseResult(
            case=case.name,
            title=case.title,
            status="error",
            seconds=time.perf_counter() - started,
            note=f"{type(exc).__name__}: {exc}",
        )
    seconds = time.perf_counter() - started
    log(f"{case.name}: done in {seconds:.1f} s")
    return CaseResult(
        case=case.name, title=case.title, status="ok", seconds=seconds, metrics=metrics
    )


def log_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


#: Runs one case to its result: :func:`run_case` here, or in a process of its own.
CaseRunner = Callable[[Case, Settings], CaseResult]


def run_cases(
    cases: Iterable[Case],
    settings: Settings,
    *,
    log: Callable[[str], None] = log_to_stderr,
    run_one: CaseRunner | None = None,
) -> Report:
    """Run every case in order (with ``run_one``, default in this process); assemble the report."""
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    machine = machine_info()
    if run_one is None:
        results = [run_case(case, settings, log=log) for case in cases]
    else:
        results = [run_one(case, settings) for case in cases]
    return Report(
        schema=SCHEMA_VERSION,
        mode="full" if settings.full else "quick",
        started_at=started_at.isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 3),
        machine=machine,
        cases=results,
        load_average_after=_load_average(),
    )


# --- the machine --------------------------------------------------------------


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> Machine:
    """CPU, memory, Python and package versions, commit and load, as of now."""
    try:
        available: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        available = None
    return Machine(
        cpu_count=os.cpu_count(),
        cpu_available=available,
        cpu_model=_cpu_model(),
        memory_gib=_memory_gib(),
        python=platform.python_version(),
        implementation=platform.python_implementation(),
        platform=platform.platform(),
        packages={p: _version(p) for p in PACKAGES},
        git_commit=_git_commit(),
        load_average=_load_average(),
    )


# --- output -------------------------------------------------------------------


def write_json(report: Report, path: str | Path) -> Path:
    """Write the report as indented JSON (creating the directory); return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    encoded = msgspec.json.format(msgspec.json.encode(report), indent=2)
    target.write_bytes(encoded + b"\n")
    return target


def fmt(value: float) -> str:
    """A figure with about three significant digits and thousands separators."""
    magnitude = abs(value)
    if magnitude >= 100 or value == int(value):
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:,.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _target_text(result: MetricResult) -> tuple[str, str]:
    if result.target is None:
        return "", ""
    mark = "yes" if result.met else "NO"
    return f"{result.target.op} {fmt(result.target.value)}", mark


def table_rows(report: Report) -> list[tuple[str, ...]]:
    """One row per metric (or per skipped/failed case): the table's content as text."""
    rows: list[tuple[str, ...]] = []
    for case in report.cases:
        if case.status != "ok":
            rows.append((case.case, case.status, "", "", "", "", "", case.note or ""))
            continue
        for m in case.metrics:
            s = m.stats
            target, met = _target_text(m)
            rows.append(
                (
                    case.case,
                    m.name,
                    f"{fmt(s.median)} {m.unit}",
                    f"{fmt(s.q1)}–{fmt(s.q3)}",
                    f"{fmt(s.min)}–{fmt(s.max)}",
                    target,
                    met,
                    m.note or "",
                )
            )
    return rows


HEADERS = ("case", "metric", "median", "IQR", "min–max", "target", "met", "note")


def print_table(report: Report, *, file: object = None) -> None:
    """Print the results table (rich when it can draw, plain columns otherwise)."""
    from rich.console import Console
    from rich.table import Table

    m = report.machine
    title = (
        f"runner benchmarks ({report.mode} mode, {report.seconds:.0f} s) on {m.cpu_model},"
        f" {m.cpu_available}/{m.cpu_count} CPUs, Python {m.python}"
    )
    table = Table(title=title, title_justify="left")
    for header in HEADERS:
        justify: Literal["left", "right"] = (
            "right" if header in {"median", "IQR", "min–max"} else "left"
        )
        table.add_column(header, justify=justify, overflow="fold")
    for row in table_rows(report):
        style = "bold red" if row[6] == "NO" or row[1] == "error" else None
        table.add_row(*row, style=style)
    # Wide enough for the notes even when printing to a file or a pipe.
    console = Console(file=file or sys.stdout, width=max(160, Console().width))  # type: ignore[arg-type]
    console.print(table)
