"""Summary figures, filters, grouping and the percentile definition.

The property tests compare every figure of the SQLite summary (rollups and
latency runs, with and without time filters, with runs as written and after
compaction merged them) and of the JSONL summary with a reference computed
from the raw events in plain Python.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from statistics import mean

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import UsageError
from runner.metrics._events import MetricEvent, to_row, ts_to_us
from runner.metrics._query import (
    Filters,
    Grouping,
    SummaryRow,
    parse_grouping,
    parse_time,
    summarize_db,
    summarize_events,
)
from runner.metrics._runs import Compaction
from runner.metrics._sqlite import migrate_schema, store_rows

BASE = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)
PROVIDERS = ("p1", "p2", "p3")
ROLES = ("coder", "reviewer")
CODES = (None, "", "rate_limited", "timeout")


def event(n: int, **kw: object) -> MetricEvent:
    fields: dict[str, object] = {
        "event_id": f"e{n}",
        "task_id": f"t{n}",
        "provider": "p1",
        "role": "coder",
        "model": "m",
        "attempt": 1,
        "ts_us": ts_to_us(BASE + timedelta(seconds=n)),
        "latency_ms": 10.0,
        "success": True,
    }
    fields.update(kw)
    return MetricEvent(**fields)  # type: ignore[arg-type]


@st.composite
def event_sets(draw: st.DrawFn) -> list[MetricEvent]:
    count = draw(st.integers(0, 40))
    events = []
    for n in range(count):
        success = draw(st.booleans())
        events.append(
            event(
                n,
                provider=draw(st.sampled_from(PROVIDERS)),
                role=draw(st.sampled_from(ROLES)),
                # Whole microseconds and nano-USD: what the store keeps.
                ts_us=ts_to_us(BASE) + draw(st.integers(0, 10_000)),
                latency_ms=draw(st.integers(0, 5_000_000)) / 1000,
                success=success,
                error_code=None if success else draw(st.sampled_from(CODES)),
                input_tokens=draw(st.integers(0, 10_000)),
                output_tokens=draw(st.integers(0, 10_000)),
                cost_usd=draw(st.integers(0, 10**9)) / 1e9,
            )
        )
    return events


def nearest_rank(values: list[int], p: int) -> int:
    """The p-th percentile by nearest rank: the value at rank ceil(p/100 * n), 1-based."""
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(p, 100) * len(ordered)))
    return ordered[rank - 1]


def reference(events: list[MetricEvent], f: Filters, g: Grouping) -> list[SummaryRow]:
    """The summary computed from raw events, as plainly as possible."""
    groups: dict[tuple[str | None, str | None], list[MetricEvent]] = {}
    for e in events:
        if f.provider is not None and e.provider != f.provider:
            continue
        if f.role is not None and e.role != f.role:
            continue
        if f.since is not None and e.ts < f.since:
            continue
        if f.until is not None and e.ts >= f.until:
            continue
        key = (e.provider if g.provider else None, e.role if g.role else None)
        groups.setdefault(key, []).append(e)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0] or "", k[1] or "")):
        evs = groups[key]
        latencies = [round(e.latency_ms * 1000) for e in evs]
        successes = sum(1 for e in evs if e.success)
        errors = Counter(e.error_code or "unknown" for e in evs if not e.success)
        rows.append(
            SummaryRow(
                provider=key[0],
                role=key[1],
                requests=len(evs),
                successes=successes,
                failures=len(evs) - successes,
                success_rate=successes / len(evs),
                latency_ms={  # type: ignore[arg-type]
                    "avg": float(round(mean(Fraction(v, 1000) for v in latencies), 3)),
                    "p50": nearest_rank(latencies, 50) / 1000,
                    "p95": nearest_rank(latencies, 95) / 1000,
                    "p99": nearest_rank(latencies, 99) / 1000,
                    "max": max(latencies) / 1000,
                },
                input_tokens=sum(e.input_tokens for e in evs),
                output_tokens=sum(e.output_tokens for e in evs),
                total_tokens=sum(e.input_tokens + e.output_tokens for e in evs),
                cost_usd=sum(round(e.cost_usd * 1e9) for e in evs) / 1e9,
                errors=dict(sorted(errors.items())),
            )
        )
    return rows


def as_plain(rows: list[SummaryRow]) -> list[dict[str, object]]:
    import msgspec

    return [msgspec.to_builtins(r) for r in rows]


def memory_db(
    events: list[MetricEvent], cuts: list[int], compaction: Compaction | None = None
) -> sqlite3.Connection:
    """A database holding ``events``, written in batches split at ``cuts``."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate_schema(conn)
    rows = [to_row(e) for e in events]
    bounds = [0, *sorted(c % (len(rows) + 1) for c in cuts), len(rows)]
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            store_rows(conn, [rows[lo:hi]], compaction=compaction)
    return conn


def trickle_db(
    events: list[MetricEvent], sizes: list[int], compaction: Compaction
) -> sqlite3.Connection:
    """A database holding ``events``, written in batches of the given sizes (cycled)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate_schema(conn)
    rows = [to_row(e) for e in events]
    start = 0
    for size in itertools.cycle(sizes):
        if start >= len(rows):
            break
        store_rows(conn, [rows[start : start + size]], compaction=compaction)
        start += size
    return conn


filters_st = st.builds(
    Filters,
    provider=st.sampled_from((None, *PROVIDERS)),
    role=st.sampled_from((None, *ROLES)),
    since=st.one_of(
        st.none(), st.integers(0, 10_000).map(lambda us: BASE + timedelta(microseconds=us))
    ),
    until=st.one_of(
        st.none(), st.integers(0, 10_000).map(lambda us: BASE + timedelta(microseconds=us))
    ),
)
groupings = st.sampled_from((Grouping(True, True), Grouping(True, False), Grouping(False, True)))


@settings(max_examples=300, deadline=None)
@given(
    events=event_sets(),
    cuts=st.lists(st.integers(0, 50), max_size=4),
    resend=st.integers(0, 40),
    f=filters_st,
    g=groupings,
)
def test_every_figure_equals_the_reference(
    events: list[MetricEvent], cuts: list[int], resend: int, f: Filters, g: Grouping
) -> None:
    """For random events, batches, filters and groupings, every figure equals the reference."""
    conn = memory_db(events, cuts)
    # Re-sending some events (an import of overlapping files) changes nothing.
    store_rows(conn, [[to_row(e) for e in events[:resend]]])
    expected = as_plain(reference(events, f, g))
    assert as_plain(summarize_db(conn, f, g)) == expected
    assert as_plain(summarize_events(events, f, g)) == expected


compactions = st.builds(Compaction, small=st.integers(1, 8), count=st.integers(2, 4))


@settings(max_examples=300, deadline=None)
@given(
    events=event_sets(),
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=8),
    compaction=compactions,
    resend=st.integers(0, 40),
    f=filters_st,
    g=groupings,
)
def test_every_figure_equals_the_reference_after_compaction(
    events: list[MetricEvent],
    sizes: list[int],
    compaction: Compaction,
    resend: int,
    f: Filters,
    g: Grouping,
) -> None:
    """Written 1-3 events at a time and compacted, every figure still equals the reference."""
    conn = trickle_db(events, sizes, compaction)
    # A re-sent batch adds nothing, compacted runs included.
    store_rows(conn, [[to_row(e) for e in events[:resend]]], compaction=compaction)
    assert as_plain(summarize_db(conn, f, g)) == as_plain(reference(events, f, g))


def test_a_time_edge_through_a_compacted_run_reads_exactly_its_side() -> None:
    """--since/--until falling inside a merged run count only the events on their side."""
    events = [event(n, latency_ms=float(100 - n), success=n % 7 != 0) for n in range(60)]
    conn = trickle_db(events, [1, 2], Compaction(small=16, count=4))
    since, until = BASE + timedelta(seconds=13), BASE + timedelta(seconds=41)
    cut = conn.execute(
        "SELECT count(*) FROM runs WHERE requests > 2 AND min_ts_us < ?1 AND max_ts_us >= ?1",
        (ts_to_us(since),),
    ).fetchone()
    assert cut == (1,)  # the edge does fall inside a merged run
    for f in (Filters(since=since), Filters(until=until), Filters(since=since, until=until)):
        assert as_plain(summarize_db(conn, f, Grouping())) == as_plain(
            reference(events, f, Grouping())
        )


def test_nearest_rank_percentiles_on_known_values() -> None:
    """p50/p95/p99 of 1..100 ms are 50, 95 and 99 ms; of three values, ranks 2, 3, 3."""
    hundred = [event(n, latency_ms=float(n + 1)) for n in range(100)]
    (row,) = summarize_events(hundred, Filters(), Grouping())
    assert (row.latency_ms.p50, row.latency_ms.p95, row.latency_ms.p99) == (50.0, 95.0, 99.0)
    three = [event(n, latency_ms=v) for n, v in enumerate((30.0, 10.0, 20.0))]
    (row,) = summarize_events(three, Filters(), Grouping())
    assert (row.latency_ms.p50, row.latency_ms.p95, row.latency_ms.p99) == (20.0, 30.0, 30.0)
    assert row.latency_ms.avg == 20.0
    assert row.latency_ms.max == 30.0


def test_since_includes_and_until_excludes_its_instant() -> None:
    """An event exactly at --since counts; one exactly at --until does not."""
    events = [event(0), event(1), event(2)]
    f = Filters(since=BASE + timedelta(seconds=1), until=BASE + timedelta(seconds=2))
    conn = memory_db(events, [])
    (row,) = summarize_db(conn, f, Grouping())
    assert row.requests == 1


def test_one_key_grouping_leaves_the_other_null() -> None:
    """Grouped by provider only, rows carry role None (null in JSON)."""
    events = [event(0, role="coder"), event(1, role="reviewer")]
    rows = summarize_db(memory_db(events, []), Filters(), parse_grouping("provider"))
    assert [(r.provider, r.role, r.requests) for r in rows] == [("p1", None, 2)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", BASE - timedelta(minutes=15)),
        ("2h", BASE - timedelta(hours=2)),
        ("7d", BASE - timedelta(days=7)),
        ("30s", BASE - timedelta(seconds=30)),
        ("2026-11-26T20:00:00Z", datetime(2026, 11, 26, 20, tzinfo=UTC)),
        ("2026-11-26T21:00:00+01:00", datetime(2026, 11, 26, 20, tzinfo=UTC)),
        ("2026-11-26", datetime(2026, 11, 26, tzinfo=UTC)),
    ],
)
def test_times_parse_as_iso_or_a_span_before_now(text: str, expected: datetime) -> None:
    """ISO 8601 (naive is UTC) and 15m/2h/7d/30s spans both parse."""
    assert parse_time(text, now=BASE) == expected


def test_an_unreadable_time_says_what_is_accepted() -> None:
    """A bad time is a UsageError listing the accepted forms."""
    with pytest.raises(UsageError, match=r"cannot read time 'soon'; use ISO 8601 .* 15m"):
        parse_time("soon", now=BASE)


def test_an_unknown_grouping_is_a_usage_error() -> None:
    """--group-by accepts only provider and role."""
    with pytest.raises(UsageError, match="cannot group by 'model'"):
        parse_grouping("model")
    assert parse_grouping("role,provider") == Grouping(True, True)
