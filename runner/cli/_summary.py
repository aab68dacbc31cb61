"""The closing summary of a ``submit`` run, tallied from its result lines.

It is built from results alone (not from the runner's internals), so a local
run and a run on a worker (``--url``) end with the same summary.
"""

from __future__ import annotations

from collections import Counter
from typing import Final, TextIO

from msgspec import Struct

from runner._task import FinalStatus, HistoryEntry, Result

STATUSES: Final[tuple[FinalStatus, ...]] = ("completed", "failed", "cancelled", "rejected")
#: Rejection messages kept for display; the results file has them all.
SHOWN_REJECTIONS: Final = 5


class Row(Struct, kw_only=True):
    """Tallies for one provider and role."""

    provider: str
    role: str
    tasks: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    retries: int = 0
    fallbacks: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


def retries_of(history: list[HistoryEntry]) -> int:
    """Attempts that repeated the previous attempt's provider (a fallback is not a retry)."""
    retries = 0
    previous: str | None = None
    started = False
    for entry in history:
        if entry.status == "running":
            if started and entry.provider == previous:
                retries += 1
            previous, started = entry.provider, True
    return retries


class Summary:
    """Running tallies over results: counts by status, by provider and role, and totals."""

    def __init__(self) -> None:
        self.by_status: Counter[str] = Counter()
        self.rows: dict[tuple[str, str], Row] = {}
        self.retries = 0
        self.fallbacks = 0
        self.tokens = 0
        self.cost_usd = 0.0
        self.rejections: list[str] = []

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def add(self, result: Result) -> None:
        self.by_status[result.status] += 1
        if result.status == "rejected":
            if len(self.rejections) < SHOWN_REJECTIONS and result.error is not None:
                self.rejections.append(result.error.message)
            return
        role = result.role or (f"workflow:{result.workflow}" if result.workflow else "-")
        key = (result.provider or "-", role)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row(provider=key[0], role=key[1])
        row.tasks += 1
        if result.status == "completed":
            row.completed += 1
        elif result.status == "failed":
            row.failed += 1
        else:
            row.cancelled += 1
        retries = (
            sum(retries_of(stage.history) for stage in result.stages)
            if result.stages is not None
            else retries_of(result.history)
        )
        row.retries += retries
        self.retries += retries
        if result.fallback_used:
            row.fallbacks += 1
            self.fallbacks += 1
        if result.usage is not None:
            row.tokens += result.usage.total_tokens
            self.tokens += result.usage.total_tokens
        if result.cost_usd is not None:
            row.cost_usd += result.cost_usd
            self.cost_usd += result.cost_usd

    def headline(self, wall: float) -> str:
        """``N tasks in S s (R tasks/s)``: the first line."""
        rate = self.total / wall if wall > 0 else 0.0
        return f"{self.total} tasks in {wall:.2f} s ({rate:,.1f} tasks/s)"

    def counts(self) -> str:
        """``3 completed, 0 failed, 0 cancelled, 1 rejected``."""
        return ", ".join(f"{self.by_status[s]} {s}" for s in STATUSES)

    def totals(self) -> str:
        return (
            f"retries {self.retries}, fallbacks {self.fallbacks}, "
            f"tokens {self.tokens:,}, cost ${self.cost_usd:.6f}"
        )

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the per provider and role table, sorted by provider, role."""
        header = [
            "provider", "role", "tasks", "completed", "failed", "cancelled",
            "retries", "fallbacks", "tokens", "cost_usd",
        ]  # fmt: skip
        rows = [
            [r.provider, r.role]
            + [str(n) for n in (r.tasks, r.completed, r.failed, r.cancelled, r.retries)]
            + [str(r.fallbacks), f"{r.tokens:,}", f"{r.cost_usd:.6f}"]
            for _, r in sorted(self.rows.items())
        ]
        return header, rows

    def render(self, stream: TextIO, *, wall: float, results: str | None = None) -> None:
        """Print the summary: a rich table on a terminal, plain aligned text otherwise."""
        if stream.isatty():
            self._render_rich(stream, wall=wall, results=results)
        else:
            stream.write(self.plain(wall=wall, results=results))
        stream.flush()

    def plain(self, *, wall: float, results: str | None = None) -> str:
        """The summary as plain text, columns aligned with spaces."""
        lines = [self.headline(wall), self.counts(), self.totals()]
        table = self._aligned_table()
        if table:
            lines.append("")
            lines.extend(table)
        lines.extend(self._rejection_lines())
        if results is not None:
            lines.append(f"results: {results}")
        return "\n".join(lines) + "\n"

    def _aligned_table(self) -> list[str]:
        header, rows = self.table()
        if not rows:
            return []
        widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
        return [
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
            for cells in [header, *rows]
        ]

    def _rejection_lines(self) -> list[str]:
        rejected = self.by_status["rejected"]
        if not rejected:
            return []
        out = ["", f"rejected lines ({rejected}):"]
        out.extend(f"  {message}" for message in self.rejections)
        if rejected > len(self.rejections):
            out.append(f"  ... and {rejected - len(self.rejections)} more in the results file")
        return out

    def _render_rich(self, stream: TextIO, *, wall: float, results: str | None) -> None:
        from rich import box
        from rich.console import Console
        from rich.table import Table

        console = Console(file=stream, highlight=False)
        console.print(self.headline(wall), style="bold")
        console.print(self.counts())
        console.print(self.totals())
        header, rows = self.table()
        if rows:
            table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
            for i, name in enumerate(header):
                table.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
            for cells in rows:
                table.add_row(*cells)
            aligned = self._aligned_table()
            # The plain table's width plus rich's padding: rich would cut cells short otherwise.
            if max(len(line) for line in aligned) + len(header) <= console.width:
                console.print(table)
            else:  # too narrow for the table: lines may wrap, but no number is cut short
                console.print()
                for line in aligned:
                    console.print(line, markup=False, crop=False, soft_wrap=True)
        for line in self._rejection_lines():
            console.print(line, markup=False, soft_wrap=True)
        if results is not None:
            console.print(f"results: {results}", markup=False, soft_wrap=True)
