"""The issue 13 targets: one row each, read off the figures the cases measured.

Each row names the figure(s) it judges (a case and a metric of it) and its
target.  A row is **met** when every figure's median meets its target,
**missed** when one misses, and **not measured** (with the reason) when a
figure is absent: its case was not run (``--only``), was skipped or failed,
or left the figure out because a package is not installed.  Nothing here
measures; rows only read the report, so the table can never claim a
figure the run did not take.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Final

from msgspec import Struct

from benchmarks._harness import (
    CaseResult,
    MetricResult,
    Outcome,
    Part,
    Report,
    Target,
    TargetRow,
    fmt,
)


class Figure(Struct, frozen=True, kw_only=True):
    """One figure a row judges: a metric of a case, and the target its median must meet."""

    case: str
    metric: str
    unit: str
    target: Target
    #: A package the figure needs beyond runner's own (it is left out without it).
    needs: str | None = None


class Spec(Struct, frozen=True, kw_only=True):
    """A row of the issue's table: what it is and the figures that decide it."""

    label: str
    figures: tuple[Figure, ...]


def _lte(value: float, text: str) -> Target:
    return Target(op="<=", value=value, text=text)


def _gte(value: float, text: str) -> Target:
    return Target(op=">=", value=value, text=text)


#: The rows of issue 13, in its order.
ISSUE_13: Final = (
    Spec(
        label="real HTTP, runner vs raw aiohttp on the same local server, conc 64, metrics on",
        figures=(
            Figure(
                case="http",
                metric="ratio runner/raw aiohttp",
                unit="x",
                target=_lte(1.25, "runner within 1.25x of raw aiohttp"),
            ),
        ),
    ),
    Spec(
        label="real HTTP, official openai SDK / runner",
        figures=(
            Figure(
                case="http",
                metric="ratio openai SDK/runner",
                unit="x",
                target=_gte(15, "the openai SDK takes at least 15x runner's time"),
                needs="openai",
            ),
        ),
    ),
    Spec(
        label="real HTTP, LiteLLM Router (real HTTP, same server) / runner",
        figures=(
            Figure(
                case="http",
                metric="ratio litellm/runner",
                unit="x",
                target=_gte(30, "LiteLLM takes at least 30x runner's time"),
                needs="litellm",
            ),
        ),
    ),
    Spec(
        label="simulated zero-latency, µs/task with SQLite metrics (LiteLLM mock ratio)",
        figures=(
            Figure(
                case="dispatch",
                metric="µs/task, store sqlite",
                unit="µs",
                target=_lte(20, "at most 20 µs a task"),
            ),
            Figure(
                case="litellm",
                metric="ratio litellm/runner",
                unit="x",
                target=_gte(100, "LiteLLM mock at least 100x runner's time"),
                needs="litellm",
            ),
        ),
    ),
    Spec(
        label="1,000 tasks in one wave on 100 ms providers",
        figures=(
            Figure(
                case="scaling",
                metric="1,000 in flight, one wave",
                unit="x ideal",
                target=_lte(1.15, "within 1.15x of the ideal"),
            ),
        ),
    ),
    Spec(
        label="5,000 in flight, sustained, 100 ms providers",
        figures=(
            Figure(
                case="scaling",
                metric="5,000 in flight, sustained",
                unit="x ideal",
                target=_lte(1.5, "within 1.5x of the ideal"),
            ),
        ),
    ),
    Spec(
        label="`metrics migrate` 1,000,000 JSONL events",
        figures=(
            Figure(
                case="metrics_migrate",
                metric="1,000,000 events into a new database",
                unit="s",
                target=_lte(5.0, "within 5 s, whole command"),
            ),
        ),
    ),
    Spec(
        label="`metrics summary` over 1,000,000 events, whole command",
        figures=(
            Figure(
                case="metrics_summary",
                metric="1,000,000 events",
                unit="s",
                target=_lte(0.20, "within 0.20 s, whole command"),
            ),
        ),
    ),
    Spec(
        label="info-level logging cost per task",
        figures=(
            Figure(
                case="dispatch",
                metric="info log cost µs/task",
                unit="µs",
                target=_lte(10, "at most +10 µs a task"),
            ),
        ),
    ),
)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _absent(figure: Figure, case: CaseResult | None, installed: Callable[[str], bool]) -> str:
    """Why a figure is not in the report."""
    if case is None:
        return f"the {figure.case} case was not run (not chosen with --only)"
    if case.status == "skipped":
        return f"the {figure.case} case was skipped: {case.note}"
    if case.status == "error":
        return f"the {figure.case} case failed: {case.note}"
    if figure.needs is not None and not installed(figure.needs):
        return f"{figure.needs} is not installed (pip install -e '.[compare]')"
    return f"the {figure.case} case reported no '{figure.metric}'"


def _part(figure: Figure, report: Report, installed: Callable[[str], bool]) -> Part:
    case = next((c for c in report.cases if c.case == figure.case), None)
    found: MetricResult | None = None
    if case is not None and case.status == "ok":
        found = next((m for m in case.metrics if m.name == figure.metric), None)
    if found is None:
        return Part(
            metric=f"{figure.case}: {figure.metric}",
            unit=figure.unit,
            target=figure.target,
            reason=_absent(figure, case, installed),
        )
    return Part(
        metric=f"{figure.case}: {figure.metric}",
        unit=figure.unit,
        target=figure.target,
        stats=found.stats,
        met=figure.target.met_by(found.stats.median),
    )


def evaluate_targets(
    report: Report,
    specs: Sequence[Spec] = ISSUE_13,
    *,
    installed: Callable[[str], bool] = _installed,
) -> list[TargetRow]:
    """Each row's outcome from the report's figures (``installed`` tells a package's presence)."""
    rows: list[TargetRow] = []
    for spec in specs:
        parts = [_part(f, report, installed) for f in spec.figures]
        outcome: Outcome
        if any(p.met is False for p in parts):
            outcome = "missed"
        elif all(p.met for p in parts):
            outcome = "met"
        else:
            outcome = "not measured"
        reasons = [p.reason for p in parts if p.reason is not None]
        rows.append(
            TargetRow(
                label=spec.label,
                outcome=outcome,
                parts=parts,
                reason="; ".join(reasons) or None,
            )
        )
    return rows


def _target_text(target: Target) -> str:
    return f"{'≤' if target.op == '<=' else '≥'} {fmt(target.value)}"


def target_cells(row: TargetRow) -> tuple[str, str, str, str]:
    """(case, target, measured, outcome) as text; a row of two figures has two lines."""
    targets: list[str] = []
    measured: list[str] = []
    for part in row.parts:
        targets.append(f"{_target_text(part.target)} {part.unit}".rstrip())
        if part.stats is None:
            measured.append("—")
        else:
            s = part.stats
            measured.append(f"{fmt(s.median)} {part.unit} (IQR {fmt(s.q1)}–{fmt(s.q3)})")
    if len(row.parts) > 1:  # say which figure is which
        targets = [f"{t} ({p.metric})" for t, p in zip(targets, row.parts, strict=True)]
    outcome = row.outcome if row.reason is None else f"{row.outcome}: {row.reason}"
    if row.outcome != "not measured" and row.reason is not None:
        # One figure missed, another not taken: the miss decides, the gap is said.
        outcome = f"{row.outcome} (not measured: {row.reason})"
    return row.label, "\n".join(targets), "\n".join(measured), outcome


TARGET_HEADERS: Final = ("case", "target", "measured (median, IQR)", "outcome")


def print_targets(report: Report, *, file: object = None) -> None:
    """Print the report's target rows as the "Issue 13 targets" table."""
    import sys

    from rich.console import Console
    from rich.table import Table

    load = report.machine.load_average
    after = report.load_average_after
    title = (
        f"Issue 13 targets ({report.mode} mode; load average {load} before, {after} after,"
        f" on {report.machine.cpu_count} CPUs)"
    )
    table = Table(title=title, title_justify="left", show_lines=True)
    for header in TARGET_HEADERS:
        table.add_column(header, overflow="fold")
    for row in report.targets:
        style = {"met": None, "missed": "bold red", "not measured": "yellow"}[row.outcome]
        table.add_row(*target_cells(row), style=style)
    console = Console(file=file or sys.stdout, width=max(160, Console().width))  # type: ignore[arg-type]
    console.print(table)
