"""Reading metric events back: filters, the summary, and export.

Every figure is exact.  The store keeps latency in whole microseconds and cost
in whole nano-USD (:mod:`runner.metrics._sqlite`); the summary is computed from
those integers, so sums do not depend on order and a SQLite summary equals
one computed from the same events in Python.

Definitions (per group):

* ``requests``: events; ``successes``: events with ``success``; ``failures``:
  the rest; ``success_rate``: ``successes / requests``.
* ``errors``: failures counted by ``error_code`` (a failure without a code
  counts as ``unknown``).
* ``latency_ms.avg``: the exact mean, rounded half-even to 3 decimals of a
  ms (1 µs); ``max``: the largest.
* ``latency_ms.p50/p95/p99``: **nearest rank**.  With the n latencies sorted
  ascending, the p-th percentile is the value at 1-based rank
  ``ceil(p * n / 100)``: always an observed latency, never interpolated.
* tokens are sums; ``total_tokens`` is input + output; ``cost_usd`` is the
  sum of nano-USD divided by 1e9.

``--since`` includes its instant, ``--until`` excludes its own.  Grouped by
only one of provider and role, the other key is ``None`` (``null`` in JSON),
so every row has the same shape.

Tags: ``--tag T`` (repeatable) keeps the events that carry every tag given;
grouped by ``tag``, an event counts once under each distinct tag it carries,
and an untagged event in the row whose tag is ``None``.  A row has a ``tag``
only when the summary groups by tag.

How it stays fast on a million events: with no time filter, the counters
come from ``rollup`` (one row per provider, role and outcome) and the
percentiles from the sorted ``runs`` (merged, then indexed by rank); no
event row is read.  With a time filter, runs inside the window are added
whole, and a run that straddles an edge is replaced by its series' events in
its id range that fall inside the window.  Compaction
(:class:`~runner.metrics._runs.Compaction`) keeps the runs few and merges
only consecutive runs of a series, so "every event of the series in the
run's id range is in the run" holds for merged runs too.

A summary with a tag filter or by tag reads the matching events instead
(:class:`TagSummary`): tags are any labels callers choose, so keeping runs
per tag would multiply the runs every summary merges, and slow the writer,
for summaries that do not ask for tags.
"""

from __future__ import annotations

import re
import sqlite3
from array import array
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, Final

import msgspec
from msgspec import UNSET, Struct, UnsetType

from runner._errors import UsageError
from runner._task_check import tag_problem
from runner.metrics._events import (
    EVENT_COLUMNS,
    MetricEvent,
    from_row,
    join_tags,
    split_tags,
    to_row,
    ts_to_us,
)
from runner.metrics._runs import nearest_ranks, unpack_latencies

PERCENTILES: Final = (50, 95, 99)

#: A summary row's (provider, role); ``None`` for a key not grouped by.
Key = tuple[str | None, str | None]

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ACCEPTED = "ISO 8601 (2026-11-26, 2026-11-26T21:00:00Z) or a span ago: 30s, 15m, 2h, 7d, 1w"


class Filters(Struct, frozen=True, kw_only=True):
    """Which events a query covers; ``None`` means no limit on that field."""

    provider: str | None = None
    role: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Only events that carry every one of these tags.
    tags: tuple[str, ...] = ()

    def describe(self) -> str:
        """The active filters as ``name=value`` words, for messages."""
        parts = [
            f"{name}={value.isoformat() if isinstance(value, datetime) else value}"
            for name, value in (
                ("provider", self.provider),
                ("role", self.role),
                *(("tag", tag) for tag in self.tags),
                ("since", self.since),
                ("until", self.until),
            )
            if value is not None
        ]
        return " ".join(parts)

    def matches(self, e: MetricEvent) -> bool:
        """Whether one event passes every filter."""
        if self.provider is not None and e.provider != self.provider:
            return False
        if self.role is not None and e.role != self.role:
            return False
        if self.tags and not all(t in e.tags for t in self.tags):
            return False
        us = e.ts_us
        if self.since is not None and us < ts_to_us(self.since):
            return False
        return self.until is None or us < ts_to_us(self.until)


class Grouping(Struct, frozen=True):
    """Which keys a summary groups by."""

    provider: bool = True
    role: bool = True
    tag: bool = False


class LatencySummary(Struct, frozen=True, kw_only=True):
    """Latency figures in milliseconds."""

    avg: float
    p50: float
    p95: float
    p99: float
    max: float


class SummaryRow(Struct, frozen=True, kw_only=True):
    """One group of the summary, the shape ``metrics summary --format json`` prints."""

    provider: str | None
    role: str | None
    #: Only when grouped by tag: the tag, ``None`` for the untagged events' row.
    tag: str | UnsetType | None = UNSET
    requests: int
    successes: int
    failures: int
    success_rate: float
    latency_ms: LatencySummary
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float
    errors: dict[str, int]


def parse_time(text: str, *, now: datetime) -> datetime:
    """An ISO 8601 time (naive means UTC) or a span before ``now`` such as ``15m``."""
    span = _SPAN.match(text)
    if span:
        return now - timedelta(seconds=float(span[1]) * _UNIT_SECONDS[span[2]])
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"cannot read time {text!r}; use {_ACCEPTED}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def parse_grouping(text: str) -> Grouping:
    """Any of ``provider``, ``role`` and ``tag``, comma-separated, in any order."""
    keys = {k.strip() for k in text.split(",") if k.strip()}
    if not keys or not keys <= {"provider", "role", "tag"}:
        raise UsageError(
            f"cannot group by {text!r}; use provider, role, tag or several of them"
            " separated by commas (provider,role)"
        )
    return Grouping(provider="provider" in keys, role="role" in keys, tag="tag" in keys)


def parse_tag(text: str) -> str:
    """A ``--tag`` value, checked by the rule every task's tags follow."""
    problem = tag_problem(text, "--tag")
    if problem is not None:
        raise UsageError(problem)
    return text


def outcome(success: bool, error_code: str | None) -> str:
    """'' for a success, else the error code ('unknown' when it has none)."""
    return "" if success else (error_code or "unknown")


class _Group:
    """Running totals for one summary row."""

    __slots__ = (
        "cost",
        "errors",
        "input",
        "lat_max",
        "lat_sum",
        "latencies",
        "output",
        "requests",
        "runs",
    )

    def __init__(self) -> None:
        self.requests = self.lat_sum = self.input = self.output = self.cost = 0
        self.lat_max: int | None = None
        self.errors: dict[str, int] = {}
        #: Latencies in no order (events read one by one).
        self.latencies: array[int] = array("q")
        #: Sorted runs of latencies, as stored: ranked without sorting them together.
        self.runs: list[array[int]] = []

    def add(
        self, out: str, n: int, lat_sum: int, lat_max: int, tin: int, tout: int, cost: int
    ) -> None:
        """Add ``n`` events with outcome ``out`` ('' counts them as successes) and their sums."""
        self.requests += n
        self.lat_sum += lat_sum
        self.lat_max = lat_max if self.lat_max is None else max(self.lat_max, lat_max)
        self.input += tin
        self.output += tout
        self.cost += cost
        if out:
            self.errors[out] = self.errors.get(out, 0) + n

    def add_run(self, blob: bytes) -> None:
        """Add a stored run's latencies (packed and sorted: ``runs.latencies``)."""
        run: array[int] = array("q")
        unpack_latencies(blob, run)
        self.runs.append(run)

    def row(
        self, provider: str | None, role: str | None, tag: str | UnsetType | None = UNSET
    ) -> SummaryRow:
        n = self.requests
        failures = sum(self.errors.values())
        runs = [*self.runs, array("q", sorted(self.latencies))]
        ranks = [max(1, -(-p * n // 100)) for p in PERCENTILES]
        ranked = [v / 1000 for v in nearest_ranks(runs, ranks)]
        return SummaryRow(
            provider=provider,
            role=role,
            tag=tag,
            requests=n,
            successes=n - failures,
            failures=failures,
            success_rate=(n - failures) / n,
            latency_ms=LatencySummary(
                avg=float(round(Fraction(self.lat_sum, n * 1000), 3)),
                p50=ranked[0],
                p95=ranked[1],
                p99=ranked[2],
                max=(self.lat_max or 0) / 1000,
            ),
            input_tokens=self.input,
            output_tokens=self.output,
            total_tokens=self.input + self.output,
            cost_usd=self.cost / 1e9,
            errors=dict(sorted(self.errors.items())),
        )


def _rows(groups: dict[Key, _Group]) -> list[SummaryRow]:
    return [groups[key].row(*key) for key in sorted(groups, key=lambda k: (k[0] or "", k[1] or ""))]


#: What a summary with tags asks the SQLite store: the matching events' figures
#: per (provider, role, stored tags, outcome), with their latencies as decimal
#: text joined by commas (one string per cell is far cheaper to fetch than a row
#: per event).  ``{where}`` takes the filters.  The PostgreSQL store asks the same
#: (:mod:`runner.cluster._metrics`); both feed :meth:`TagSummary.add_cell`.
TAGGED_CELLS: Final = (
    "SELECT provider, role, tags,"
    " CASE WHEN success THEN '' ELSE coalesce(nullif(error_code, ''), 'unknown') END,"
    " count(*), sum(latency_us), max(latency_us), sum(input_tokens), sum(output_tokens),"
    " sum(cost_nusd), group_concat(latency_us) FROM events{where} GROUP BY 1, 2, 3, 4"
)


class TagSummary:
    """A summary over events' own rows: for a tag filter, grouping by tag, and JSONL stores.

    Both databases feed it cells (:data:`TAGGED_CELLS`), a JSONL store single
    events, so every store gives the same figures.  Grouped by tag, an event
    is added to the group of each distinct tag it carries, and an untagged
    one to the group of tag ``None``.
    """

    def __init__(self, grouping: Grouping) -> None:
        self._grouping = grouping
        self._groups: dict[tuple[str | None, str | None, str | None], _Group] = {}
        # The groups of each (provider, role, stored tags) seen: events repeat
        # a few of these, so the keys are worked out once for each.
        self._targets: dict[tuple[str, str, str | None], list[_Group]] = {}

    def _targets_of(self, provider: str, role: str, tags: str | None) -> list[_Group]:
        g = self._grouping
        p, r = (provider if g.provider else None), (role if g.role else None)
        names: Iterable[str | None] = dict.fromkeys(split_tags(tags)) or (None,)
        targets = []
        for name in names if g.tag else (None,):
            group = self._groups.get((p, r, name))
            if group is None:
                group = self._groups[(p, r, name)] = _Group()
            targets.append(group)
        self._targets[(provider, role, tags)] = targets
        return targets

    def add(
        self,
        provider: str,
        role: str,
        tags: str | None,
        success: object,
        error_code: str | None,
        latency: int,
        tin: int,
        tout: int,
        cost: int,
    ) -> None:
        """Add one event (latency in µs, cost in nano-USD, tags as stored)."""
        targets = self._targets.get((provider, role, tags))
        if targets is None:
            targets = self._targets_of(provider, role, tags)
        out = "" if success else (error_code or "unknown")
        for group in targets:
            group.add(out, 1, latency, latency, tin, tout, cost)
            group.latencies.append(latency)

    def add_cell(
        self,
        provider: str,
        role: str,
        tags: str | None,
        out: str,
        n: int,
        lat_sum: int,
        lat_max: int,
        tin: int,
        tout: int,
        cost: int,
        latencies: str,
    ) -> None:
        """Add ``n`` events of one (provider, role, stored tags, outcome) and their sums;
        ``latencies`` are their µs as decimal text joined by commas."""
        targets = self._targets.get((provider, role, tags))
        if targets is None:
            targets = self._targets_of(provider, role, tags)
        values = array("q", map(int, latencies.split(",")))
        for group in targets:
            group.add(out, n, lat_sum, lat_max, tin, tout, cost)
            group.latencies.extend(values)

    def add_cells(self, cells: Iterable[Sequence[Any]]) -> None:
        """Add the cells of :data:`TAGGED_CELLS` (or its PostgreSQL twin)."""
        for cell in cells:
            self.add_cell(*cell)

    def rows(self) -> list[SummaryRow]:
        """The summary rows, by provider, role, then tag (the untagged row last)."""
        tagged = self._grouping.tag
        order = sorted(
            self._groups, key=lambda k: (k[0] or "", k[1] or "", k[2] is None, k[2] or "")
        )
        return [
            self._groups[k].row(k[0], k[1], k[2] if tagged else UNSET)
            for k in order
            if self._groups[k].requests
        ]


def summarize_events(
    events: Iterable[MetricEvent], filters: Filters, grouping: Grouping
) -> list[SummaryRow]:
    """The summary of events held in memory or read from a JSONL store."""
    summary = TagSummary(grouping)
    for e in events:
        if filters.matches(e):
            r = to_row(e)
            summary.add(r[2], r[3], r[13], r[8], r[9], r[7], r[10], r[11], r[12])
    return summary.rows()


def tagged(filters: Filters, grouping: Grouping) -> bool:
    """Whether a summary must read events for its tags (else rollup and runs answer it)."""
    return bool(filters.tags) or grouping.tag


def _where(filters: Filters, *, time: bool, tags: bool = False) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if filters.provider is not None:
        clauses.append("provider = ?")
        params.append(filters.provider)
    if filters.role is not None:
        clauses.append("role = ?")
        params.append(filters.role)
    if time and filters.since is not None:
        clauses.append("ts_us >= ?")
        params.append(ts_to_us(filters.since))
    if time and filters.until is not None:
        clauses.append("ts_us < ?")
        params.append(ts_to_us(filters.until))
    if tags:
        for tag in filters.tags:
            clauses.append("instr(tags, ?) > 0")  # exact: see join_tags
            params.append(join_tags((tag,)))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


_AGGREGATE_ROLLUP: Final = (
    "SELECT provider, role, outcome, requests, latency_us_sum, latency_us_max, input_tokens,"
    " output_tokens, cost_nusd FROM rollup"
)
_RUNS: Final = (
    "SELECT provider, role, first_id, last_id, min_ts_us, max_ts_us, requests, latency_us_sum,"
    " latency_us_max, input_tokens, output_tokens, cost_nusd, errors, latencies FROM runs"
)
# The events of one series in an id range and a time window: for runs that
# straddle a time edge.
_EDGE_AGGREGATE: Final = (
    "SELECT CASE WHEN success THEN '' ELSE coalesce(nullif(error_code, ''), 'unknown') END,"
    " count(*), sum(latency_us), max(latency_us), sum(input_tokens), sum(output_tokens),"
    " sum(cost_nusd) FROM events WHERE id BETWEEN ? AND ? AND provider = ? AND role = ?"
    " AND ts_us >= ? AND ts_us < ? GROUP BY 1"
)
_EDGE_LATENCIES: Final = (
    "SELECT latency_us FROM events WHERE id BETWEEN ? AND ? AND provider = ? AND role = ?"
    " AND ts_us >= ? AND ts_us < ?"
)
_decode_errors: Final = msgspec.json.Decoder(dict[str, int])


def summarize_db(
    conn: sqlite3.Connection, filters: Filters, grouping: Grouping
) -> list[SummaryRow]:
    """The summary of a SQLite store (see the module docstring for how and why)."""
    if tagged(filters, grouping):
        where, params = _where(filters, time=True, tags=True)
        summary = TagSummary(grouping)
        summary.add_cells(conn.execute(TAGGED_CELLS.format(where=where), params))
        return summary.rows()
    timed = filters.since is not None or filters.until is not None
    groups: dict[Key, _Group] = {}

    def group(provider: str, role: str) -> _Group:
        k = (provider if grouping.provider else None, role if grouping.role else None)
        g = groups.get(k)
        if g is None:
            g = groups[k] = _Group()
        return g

    where, params = _where(filters, time=False)
    if not timed:
        for provider, role, *figures in conn.execute(_AGGREGATE_ROLLUP + where, params):
            group(provider, role).add(*figures)
    since = ts_to_us(filters.since) if filters.since is not None else -(2**63)
    until = ts_to_us(filters.until) if filters.until is not None else 2**63 - 1
    clauses = [where.removeprefix(" WHERE ")] if where else []
    if timed:
        clauses.append("max_ts_us >= ? AND min_ts_us < ?")
        params += [since, until]
    straddling: list[tuple[int, int, str, str]] = []
    runs_where = " WHERE " + " AND ".join(clauses) if clauses else ""
    for provider, role, first, last, lo, hi, n, *sums, errors, blob in conn.execute(
        _RUNS + runs_where, params
    ):
        if lo < since or hi >= until:
            straddling.append((first, last, provider, role))
            continue
        g = group(provider, role)
        g.add_run(blob)
        if timed:
            g.add("", n, *sums)
            for code, count in _decode_errors.decode(errors).items():
                g.errors[code] = g.errors.get(code, 0) + count
    # A run straddling a time edge holds every event of its series in its id
    # range, so reading that range with the time filter replaces it exactly.
    for first, last, provider, role in straddling:
        g = group(provider, role)
        edge = (first, last, provider, role, since, until)
        for out, n, *sums in conn.execute(_EDGE_AGGREGATE, edge):
            g.add(out, n, *sums)
        g.latencies.extend(v for (v,) in conn.execute(_EDGE_LATENCIES, edge))
    return _rows({k: g for k, g in groups.items() if g.requests})


def count_events(conn: sqlite3.Connection) -> int:
    """How many events the database holds (from the rollup, without a scan)."""
    (n,) = conn.execute("SELECT coalesce(sum(requests), 0) FROM rollup").fetchone()
    return int(n)


def export_db(conn: sqlite3.Connection, filters: Filters) -> Iterator[MetricEvent]:
    """Every matching event of a SQLite store, in time order, streamed."""
    where, params = _where(filters, time=True, tags=True)
    sql = f"SELECT {EVENT_COLUMNS} FROM events{where} ORDER BY ts_us, event_id"  # noqa: S608 - fixed fragments, values bound
    for row in conn.execute(sql, params):
        yield from_row(row)
