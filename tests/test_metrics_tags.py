"""Tags in the metrics stores: ``metrics summary --tag`` and ``--group-by tag``.

Every figure of a summary by tag or with a tag filter, from SQLite (batches,
re-sent duplicates, compaction) and from JSONL, is compared with a reference
computed from the raw events in plain Python; the command line's json, csv and
table outputs are checked against the same reference.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections import Counter
from datetime import timedelta
from fractions import Fraction
from pathlib import Path
from statistics import mean

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import UsageError
from runner.cli._main import main
from runner.metrics._events import MetricEvent, to_row, ts_to_us
from runner.metrics._jsonl import append_jsonl
from runner.metrics._query import (
    Filters,
    Grouping,
    export_db,
    parse_grouping,
    summarize_db,
    summarize_events,
)
from runner.metrics._sqlite import import_jsonl, open_for_reading, store_rows
from tests.test_metrics_query import (
    BASE,
    CODES,
    PROVIDERS,
    ROLES,
    as_plain,
    event,
    memory_db,
    trickle_db,
)

TAGS = ("nightly", "node:plan", "node:code", "team-a")

#: A grouping of any non-empty set of the three keys.
all_groupings = st.sampled_from(
    [
        Grouping(provider=p, role=r, tag=t)
        for p in (True, False)
        for r in (True, False)
        for t in (True, False)
        if p or r or t
    ]
)
tag_tuples = st.lists(st.sampled_from(TAGS), max_size=3).map(tuple)


@st.composite
def tagged_events(draw: st.DrawFn) -> list[MetricEvent]:
    events = []
    for n in range(draw(st.integers(0, 40))):
        success = draw(st.booleans())
        events.append(
            event(
                n,
                provider=draw(st.sampled_from(PROVIDERS)),
                role=draw(st.sampled_from(ROLES)),
                ts_us=ts_to_us(BASE) + draw(st.integers(0, 10_000)),
                latency_ms=draw(st.integers(0, 5_000_000)) / 1000,
                success=success,
                error_code=None if success else draw(st.sampled_from(CODES)),
                input_tokens=draw(st.integers(0, 10_000)),
                output_tokens=draw(st.integers(0, 10_000)),
                cost_usd=draw(st.integers(0, 10**9)) / 1e9,
                # Repeats too: a task may carry a tag twice; it counts once.
                tags=draw(tag_tuples),
            )
        )
    return events


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
    tags=st.lists(st.sampled_from(TAGS), max_size=2, unique=True).map(tuple),
)


def nearest_rank(values: list[int], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(Fraction(p, 100) * len(ordered))) - 1] / 1000


def figures(evs: list[MetricEvent]) -> dict[str, object]:
    """Every figure of one summary row, from its events, as plainly as possible."""
    latencies = [round(e.latency_ms * 1000) for e in evs]
    successes = sum(1 for e in evs if e.success)
    return {
        "requests": len(evs),
        "successes": successes,
        "failures": len(evs) - successes,
        "success_rate": successes / len(evs),
        "latency_ms": {
            "avg": float(round(mean(Fraction(v, 1000) for v in latencies), 3)),
            "p50": nearest_rank(latencies, 50),
            "p95": nearest_rank(latencies, 95),
            "p99": nearest_rank(latencies, 99),
            "max": max(latencies) / 1000,
        },
        "input_tokens": sum(e.input_tokens for e in evs),
        "output_tokens": sum(e.output_tokens for e in evs),
        "total_tokens": sum(e.input_tokens + e.output_tokens for e in evs),
        "cost_usd": sum(round(e.cost_usd * 1e9) for e in evs) / 1e9,
        "errors": dict(
            sorted(Counter(e.error_code or "unknown" for e in evs if not e.success).items())
        ),
    }


def reference(events: list[MetricEvent], f: Filters, g: Grouping) -> list[dict[str, object]]:
    """The summary rows as ``--format json`` gives them, computed from the raw events."""
    groups: dict[tuple[str | None, str | None, str | None], list[MetricEvent]] = {}
    for e in events:
        if f.provider is not None and e.provider != f.provider:
            continue
        if f.role is not None and e.role != f.role:
            continue
        if f.since is not None and e.ts < f.since:
            continue
        if f.until is not None and e.ts >= f.until:
            continue
        if not set(f.tags) <= set(e.tags):
            continue
        names: list[str | None] = [None]
        if g.tag and e.tags:
            names = sorted(set(e.tags))  # type: ignore[assignment]  # str is a str | None
        for name in names:
            key = (e.provider if g.provider else None, e.role if g.role else None, name)
            groups.setdefault(key, []).append(e)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0] or "", k[1] or "", k[2] is None, k[2] or "")):
        row: dict[str, object] = {"provider": key[0], "role": key[1]}
        if g.tag:
            row["tag"] = key[2]
        rows.append(row | figures(groups[key]))
    return rows


@settings(max_examples=300, deadline=None)
@given(
    events=tagged_events(),
    cuts=st.lists(st.integers(0, 50), max_size=4),
    resend=st.integers(0, 40),
    f=filters_st,
    g=all_groupings,
)
def test_every_tag_figure_equals_the_reference(
    events: list[MetricEvent], cuts: list[int], resend: int, f: Filters, g: Grouping
) -> None:
    """Any tag filter and grouping, on SQLite (batches, re-sent events) and JSONL: the reference."""
    conn = memory_db(events, cuts)
    store_rows(conn, [[to_row(e) for e in events[:resend]]])
    expected = reference(events, f, g)
    assert as_plain(summarize_db(conn, f, g)) == expected
    assert as_plain(summarize_events(events, f, g)) == expected
    exported = list(export_db(conn, f))
    assert sorted(e.event_id for e in exported) == sorted(
        e.event_id for e in events if f.matches(e)
    )


@settings(max_examples=100, deadline=None)
@given(
    events=tagged_events(),
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=8),
    f=filters_st,
    g=all_groupings,
)
def test_tag_figures_hold_after_compaction(
    events: list[MetricEvent], sizes: list[int], f: Filters, g: Grouping
) -> None:
    """Written 1-3 events at a time and compacted, tag figures still equal the reference."""
    from runner.metrics._runs import Compaction

    conn = trickle_db(events, sizes, Compaction(small=4, count=2))
    assert as_plain(summarize_db(conn, f, g)) == reference(events, f, g)


def test_an_event_with_two_tags_counts_once_under_each() -> None:
    """Two tags: one request under each; a repeated tag once; untagged in the None row, last."""
    events = [
        event(0, tags=("a", "b"), latency_ms=10.0),
        event(1, tags=("b", "b"), latency_ms=30.0),
        event(2, latency_ms=50.0),
    ]
    rows = summarize_events(events, Filters(), parse_grouping("tag"))
    assert [(r.tag, r.requests, r.latency_ms.max) for r in rows] == [
        ("a", 1, 10.0),
        ("b", 2, 30.0),
        (None, 1, 50.0),
    ]
    (both,) = summarize_events(events, Filters(tags=("a", "b")), Grouping())
    assert both.requests == 1


def test_grouping_accepts_tag_with_the_other_keys() -> None:
    """--group-by takes tag alone or with provider and role; anything else says what it takes."""
    assert parse_grouping("tag,provider") == Grouping(provider=True, role=False, tag=True)
    assert parse_grouping(" tag ") == Grouping(provider=False, role=False, tag=True)
    with pytest.raises(
        UsageError,
        match=r"^cannot group by 'tags'; use provider, role, tag or several of them separated by"
        r" commas \(provider,role\)$",
    ):
        parse_grouping("tags")


# --- the command line -----------------------------------------------------------------


def _events(n: int, seed: int) -> list[MetricEvent]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        success = rng.random() < 0.75
        out.append(
            event(
                i,
                provider=rng.choice(("p1", "p2")),
                role=rng.choice(("coder", "reviewer")),
                ts_us=ts_to_us(BASE) + rng.randrange(0, 3_600_000_000),
                latency_ms=rng.randrange(0, 5_000_000) / 1000,
                success=success,
                error_code=None if success else rng.choice(("rate_limited", "timeout")),
                input_tokens=rng.randrange(0, 1000),
                output_tokens=rng.randrange(0, 1000),
                cost_usd=rng.randrange(0, 10**7) / 1e9,
                tags=tuple(rng.sample(TAGS, rng.randrange(0, 3))),
            )
        )
    return out


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["metrics", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def stores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[list[MetricEvent], Path]:
    """300 tagged events in a JSONL file, and imported from it by ``metrics migrate``."""
    events = _events(300, seed=7)
    source = tmp_path / "m.jsonl"
    append_jsonl(source, events)
    code, out, _ = _run(capsys, "migrate", str(source), "--db", str(tmp_path / "m.db"))
    assert (code, out) == (
        0,
        f"imported 300 new events from {source} into {tmp_path / 'm.db'} (0 already there)\n",
    )
    return events, tmp_path


def test_migrate_carries_tags_into_sqlite(stores: tuple[list[MetricEvent], Path]) -> None:
    """Every event imported from JSONL keeps its tags, also through the reader process."""
    events, tmp = stores
    conn = open_for_reading(tmp / "m.db")
    assert sorted(export_db(conn, Filters()), key=lambda e: e.event_id) == sorted(
        events, key=lambda e: e.event_id
    )
    conn.close()
    import_jsonl(tmp / "child.db", tmp / "m.jsonl", child_threshold=0)
    conn = open_for_reading(tmp / "child.db")
    assert sorted(e.tags for e in export_db(conn, Filters(tags=("nightly",)))) == sorted(
        e.tags for e in events if "nightly" in e.tags
    )
    conn.close()


@pytest.mark.parametrize(
    ("argv", "f", "g"),
    [
        (["--group-by", "tag"], Filters(), Grouping(provider=False, role=False, tag=True)),
        (["--tag", "nightly"], Filters(tags=("nightly",)), Grouping()),
        (
            ["--group-by", "tag,provider", "--tag", "team-a", "--tag", "nightly"],
            Filters(tags=("team-a", "nightly")),
            Grouping(provider=True, role=False, tag=True),
        ),
        (
            ["--group-by", "role,tag", "--since", "2026-11-26T21:20:00Z", "--provider", "p2"],
            Filters(provider="p2", since=BASE + timedelta(minutes=20)),
            Grouping(provider=False, role=True, tag=True),
        ),
    ],
)
def test_summary_json_and_csv_by_tag_equal_the_reference(
    stores: tuple[list[MetricEvent], Path],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    f: Filters,
    g: Grouping,
) -> None:
    """--tag and --group-by tag: json and csv give the reference's figures, on SQLite and JSONL."""
    events, tmp = stores
    expected = reference(events, f, g)
    assert len(expected) >= 2
    outputs = {}
    for db in ("m.db", "m.jsonl"):
        code, out, err = _run(capsys, "summary", *argv, "--format", "json", "--db", str(tmp / db))
        assert (code, err) == (0, "")
        assert json.loads(out) == expected
        code, out_csv, _ = _run(capsys, "summary", *argv, "--format", "csv", "--db", str(tmp / db))
        outputs[db] = (out, out_csv)
    assert outputs["m.db"] == outputs["m.jsonl"]
    lines = list(csv.DictReader(io.StringIO(outputs["m.db"][1])))
    assert ("tag" in lines[0]) == g.tag
    for line, row in zip(lines, expected, strict=True):
        lat = row["latency_ms"]
        assert isinstance(lat, dict)
        assert line["provider"] == (row["provider"] or "")
        assert line["role"] == (row["role"] or "")
        if g.tag:
            assert line["tag"] == (row["tag"] or "")
        assert [int(line[k]) for k in ("requests", "successes", "failures")] == [
            row["requests"], row["successes"], row["failures"]
        ]  # fmt: skip
        assert [float(line[f"latency_{k}_ms"]) for k in ("avg", "p50", "p95", "p99", "max")] == [
            lat[k] for k in ("avg", "p50", "p95", "p99", "max")
        ]
        assert [int(line[k]) for k in ("input_tokens", "output_tokens", "total_tokens")] == [
            row["input_tokens"], row["output_tokens"], row["total_tokens"]
        ]  # fmt: skip
        assert float(line["cost_usd"]) == row["cost_usd"]
        errors = row["errors"]
        assert isinstance(errors, dict)
        assert {
            k.removeprefix("errors."): int(v)
            for k, v in line.items()
            if k.startswith("errors.") and v != "0"
        } == errors


def test_summary_table_by_tag(
    stores: tuple[list[MetricEvent], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The plain table has a tag column; the untagged events' row shows '-' and comes last."""
    events, tmp = stores
    code, out, _ = _run(capsys, "summary", "--group-by", "tag", "--db", str(tmp / "m.db"))
    assert code == 0
    head, *body = out.splitlines()
    assert head.split()[:3] == ["tag", "requests", "ok"]
    expected = reference(events, Filters(), Grouping(provider=False, role=False, tag=True))
    assert [(line.split()[0], int(line.split()[1])) for line in body] == [
        (str(r["tag"] or "-"), r["requests"]) for r in expected
    ]
    assert body[-1].startswith("-  ")


def test_export_by_tag(
    stores: tuple[list[MetricEvent], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """export --tag gives exactly the events carrying every tag given (SQLite: in time order)."""
    events, tmp = stores
    wanted = [e for e in events if {"nightly", "team-a"} <= set(e.tags)]
    assert wanted
    in_time = sorted(wanted, key=lambda e: (e.ts_us, e.event_id))
    for db, order in (("m.db", in_time), ("m.jsonl", wanted)):
        code, out, _ = _run(
            capsys, "export", "--tag", "nightly", "--tag", "team-a", "--db", str(tmp / db)
        )
        assert code == 0
        lines = [json.loads(line) for line in out.splitlines()]
        assert [(x["event_id"], x["tags"]) for x in lines] == [
            (e.event_id, list(e.tags)) for e in order
        ]


def test_a_tag_nothing_carries_says_so(
    stores: tuple[list[MetricEvent], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A tag no event carries: the filters named on stderr, exit 0, [] in json."""
    _, tmp = stores
    code, out, err = _run(
        capsys, "summary", "--tag", "absent", "--format", "json", "--db", str(tmp / "m.db")
    )
    assert (code, out) == (0, "[]\n")
    assert err == f"no events match tag=absent in {tmp / 'm.db'}\n"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "error: --tag is empty\n"),
        ("   ", "error: --tag is empty\n"),
        ("x" * 65, "error: --tag is 65 characters long; the most is 64\n"),
        (
            "a\tb",
            "error: --tag contains the control character U+0009 at position 2;"
            " use printable characters only\n",
        ),
        (
            "a|b",
            "error: --tag contains '|', which separates tags in CSV export;"
            " use another character\n",
        ),
    ],
)
def test_a_bad_tag_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    """--tag follows the task tags' rule: a bad one is one error line, exit 2, for both commands."""
    append_jsonl(tmp_path / "m.jsonl", _events(3, seed=1))
    for command in ("summary", "export"):
        code, out, err = _run(capsys, command, "--tag", value, "--db", str(tmp_path / "m.jsonl"))
        assert (code, out, err) == (2, "", message)
