"""The closing summary of a ``submit`` run, tallied from its result lines.

It is built from results alone (not from the runner's internals), so a local
run and a run on a worker (``--url``) end with the same summary.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Final, TextIO, get_args

from msgspec import Struct

from runner._task import FinalStatus, HistoryEntry, Result
from runner.cli._tables import Column, print_table

if TYPE_CHECKING:
    from rich.console import Console

#: A Result's statuses in the order the summary prints them (the order of FinalStatus).
STATUSES: Final[tuple[FinalStatus, ...]] = get_args(FinalStatus)
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
        """``30 tasks in 0.37 s (26 finished, 70.3 per second)``: the first line.

        The rate is over the tasks that ran to an end (completed or failed):
        rejected lines and tasks cancelled unstarted take no time and would
        inflate it.
        """
        finished = self.by_status["completed"] + self.by_status["failed"]
        rate = finished / wall if wall > 0 else 0.0
        return (
            f"{plural(self.total, 'task')} in {wall:.2f} s"
            f" ({finished:,} finished, {rate:,.1f} per second)"
        )

    def counts(self) -> str:
        """``3 completed, 0 failed, 0 cancelled, 1 rejected``."""
        return ", ".join(f"{self.by_status[s]:,} {s}" for s in STATUSES)

    def totals(self) -> str:
        """``2 retries, 1 fallback, 2,219 tokens, cost $0.007575``."""
        return (
            f"{plural(self.retries, 'retry', 'retries')}, {plural(self.fallbacks, 'fallback')}, "
            f"{plural(self.tokens, 'token')}, cost ${self.cost_usd:.6f}"
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

    def render(
        self,
        stream: TextIO,
        *,
        wall: float,
        results: str | None = None,
        console: Console | None = None,
    ) -> None:
        """Print the summary: a rich table on a terminal (or ``console``), else plain text."""
        if console is not None or stream.isatty():
            self._render_rich(stream, wall=wall, results=results, console=console)
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
        out = ["", f"{plural(rejected, 'rejected line')}:"]
        out.extend(f"  {message}" for message in self.rejections)
        if rejected > len(self.rejections):
            out.append(f"  ... and {rejected - len(self.rejections):,} more in the results file")
        return out

    def _render_rich(
        self,
        stream: TextIO,
        *,
        wall: float,
        results: str | None,
        console: Console | None = None,
    ) -> None:
        from rich.console import Console
        from rich.text import Text

        console = console or Console(file=stream, highlight=False)
        console.print(Text(self.headline(wall), style="bold"))
        console.print(Text(self.counts()))
        console.print(Text(self.totals()))
        header, rows = self.table()
        if rows:
            console.print()
            print_table(console, self._columns(header, rows), rows)
        for line in self._rejection_lines():
            console.print(Text(line), soft_wrap=True)
        if results is not None:
            console.print(Text(f"results: {results}"), soft_wrap=True)

    @staticmethod
    def _columns(header: list[str], rows: list[list[str]]) -> list[Column]:
        """Provider and role never cut; a column of zeros gives way before one with news."""
        columns = []
        for i, name in enumerate(header):
            rank = _DROP_RANKS.get(name, 0)
            if rank and all(row[i] in ("0", "0.000000") for row in rows):
                rank += 10
            columns.append(Column(name, justify="left" if i < 2 else "right", key=i < 2, drop=rank))
        return columns


#: Which summary columns give way first on a narrow terminal (see ``_tables``).
_DROP_RANKS: Final = {
    "cancelled": 6,
    "fallbacks": 5,
    "tokens": 4,
    "retries": 3,
    "failed": 2,
    "cost_usd": 1,
}


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 task``, ``2 tasks``, ``1,000 tasks``; ``nouns`` where adding s is wrong."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"
