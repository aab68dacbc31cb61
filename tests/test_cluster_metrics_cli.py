"""``metrics summary|export|migrate`` on a cluster database: the same answers as on SQLite."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from runner.cli._main import main
from runner.cluster._metrics import _ADD_ROLLUP, _INSERT_RUNS, PgEventStore
from runner.cluster._pool import open_database
from runner.cluster._schema import SCHEMA_VERSION, migrate
from runner.metrics._events import MetricEvent, to_row
from runner.metrics._jsonl import append_jsonl
from runner.metrics._runs import batch_runs
from runner.metrics._sqlite import import_jsonl
from tests.pg_support import pg_url_sync
from tests.test_cluster_metrics import _events

__all__ = ["pg_url_sync"]


async def _fill(url: str, events: list[MetricEvent]) -> None:
    async with open_database(url) as db:
        await migrate(db)
        await PgEventStore(db).write(events)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_summary_and_export_match_sqlite(
    pg_url_sync: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same events give the same summary (json, csv, table) and export on both stores,
    with and without tag filters and grouping by tag."""
    events = _events(400, seed=3)
    asyncio.run(_fill(pg_url_sync, events))
    spill = tmp_path / "e.jsonl"
    append_jsonl(spill, events)
    sqlite = tmp_path / "m.db"
    import_jsonl(sqlite, spill)
    for argv in (
        ("summary", "--format", "json"),
        ("summary", "--format", "csv", "--group-by", "role"),
        ("summary", "--format", "json", "--since", "2026-11-26T21:10:00Z", "--provider", "p1"),
        ("export", "--format", "csv", "--until", "2026-11-26T21:20:00Z"),
        ("summary", "--format", "json", "--group-by", "tag"),
        ("summary", "--format", "csv", "--group-by", "tag,role", "--since", "2026-11-26T21:10:00Z"),
        ("summary", "--tag", "nightly", "--tag", "team-a", "--provider", "p2"),
        ("export", "--format", "csv", "--tag", "node:plan"),
        ("export", "--format", "jsonl", "--tag", "nightly", "--since", "2026-11-26T21:30:00Z"),
    ):
        code_pg, out_pg, _ = _run(capsys, "metrics", *argv, "--db", pg_url_sync)
        code_sq, out_sq, _ = _run(capsys, "metrics", *argv, "--db", str(sqlite))
        assert (code_pg, out_pg) == (code_sq, out_sq), argv
        assert out_pg
    assert len(json.loads(_run(capsys, "metrics", "summary", "--format", "json",
                               "--db", pg_url_sync)[1])) == 6  # fmt: skip
    by_tag = json.loads(
        _run(capsys, "metrics", "summary", "--format", "json", "--group-by", "tag",
             "--db", pg_url_sync)[1]
    )  # fmt: skip
    expected = Counter[str | None](tag for e in events for tag in set(e.tags))
    expected[None] = sum(1 for e in events if not e.tags)
    assert {r["tag"]: r["requests"] for r in by_tag} == dict(expected)
    assert [r["tag"] for r in by_tag][-1] is None


def test_a_database_from_before_tags_is_upgraded_when_read(
    pg_url_sync: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A schema version 1 database (events without tags): summary upgrades it and reads
    its events as untagged; a worker's tagged events then group by tag."""
    events = _events(40, seed=6)
    old = [msgspec.structs.replace(e, tags=()) for e in events[:30]]
    asyncio.run(_fill_version_1(pg_url_sync, old))
    assert asyncio.run(_version(pg_url_sync)) == 1
    code, out, err = _run(capsys, "metrics", "summary", "--format", "json", "--group-by", "tag",
                          "--db", pg_url_sync)  # fmt: skip
    assert (code, err) == (0, "")
    assert [(r["tag"], r["requests"]) for r in json.loads(out)] == [(None, 30)]
    assert asyncio.run(_version(pg_url_sync)) == SCHEMA_VERSION
    asyncio.run(_fill(pg_url_sync, events[30:]))
    code, out, _ = _run(capsys, "metrics", "summary", "--format", "json", "--group-by", "tag",
                        "--db", pg_url_sync)  # fmt: skip
    rows = {r["tag"]: r["requests"] for r in json.loads(out)}
    expected = Counter[str | None](t for e in events[30:] for t in e.tags)
    expected[None] = 30 + sum(1 for e in events[30:] if not e.tags)
    assert rows == dict(expected)


async def _fill_version_1(url: str, events: list[MetricEvent]) -> None:
    """Events as a runner of schema version 1 wrote them: no tags column."""
    async with open_database(url) as db:
        await migrate(db, target=1)
        rows = [to_row(e)[:13] for e in events]
        await db.execute(
            "INSERT INTO runner_events (id, event_id, task_id, provider, role, model, attempt,"
            " ts_us, latency_us, success, error_code, input_tokens, output_tokens, cost_nusd)"
            " SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::text[], $7::int[], $8::bigint[], $9::bigint[], $10::bool[], $11::text[],"
            " $12::bigint[], $13::bigint[], $14::bigint[])",
            list(range(1, len(rows) + 1)),
            *[
                list(c) if i != 8 else [bool(v) for v in c]
                for i, c in enumerate(zip(*rows, strict=True))
            ],
        )
        runs, rollup = batch_runs(1, rows)  # type: ignore[arg-type]  # rows without tags
        async with db._pool.acquire() as conn:
            await conn.executemany(_INSERT_RUNS, runs)
            await conn.executemany(_ADD_ROLLUP, rollup)


async def _version(url: str) -> int:
    async with open_database(url) as db:
        return int(await db.fetchval("SELECT max(version) FROM runner_schema"))


def test_config_with_cluster_section_reads_the_database(
    pg_url_sync: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--config with a cluster database summarises the cluster, not metrics.path."""
    asyncio.run(_fill(pg_url_sync, _events(50, seed=4)))
    config = tmp_path / "c.yaml"
    config.write_text(
        "providers:\n  - id: a\n    type: simulated\ndefault_provider: a\n"
        f"metrics: {{path: {tmp_path / 'absent.db'}}}\ncluster: {{database: '{pg_url_sync}'}}\n"
    )
    code, out, _ = _run(capsys, "metrics", "summary", "--format", "json", "--config", str(config))
    assert code == 0
    assert sum(row["requests"] for row in json.loads(out)) == 50


def test_migrate_imports_a_spill_file_once(
    pg_url_sync: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker's spill file goes into the cluster database, tags and all; a second import
    adds nothing."""
    spill = tmp_path / "spill.jsonl"
    events = _events(30, seed=5)
    assert any(e.tags for e in events)
    append_jsonl(spill, events)
    code, out, _ = _run(capsys, "metrics", "migrate", str(spill), "--db", pg_url_sync)
    assert code == 0
    assert "imported 30 new events" in out
    code, out, _ = _run(capsys, "metrics", "migrate", str(spill), "--db", pg_url_sync)
    assert "imported 0 new events" in out
    assert "(30 already there)" in out
    code, out, _ = _run(capsys, "metrics", "export", "--format", "jsonl", "--db", pg_url_sync)
    assert {(x["event_id"], tuple(x["tags"])) for x in map(json.loads, out.splitlines())} == {
        (e.event_id, e.tags) for e in events
    }


def test_empty_and_unreachable_databases(
    pg_url_sync: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database no worker used, and one that does not answer: exit 2, one line, no password."""
    code, _, err = _run(capsys, "metrics", "summary", "--db", pg_url_sync)
    assert code == 2
    assert "holds no runner data yet" in err
    code, _, err = _run(capsys, "metrics", "summary", "--db", "postgresql://u:pw@127.0.0.1:1/x")
    assert code == 2
    assert err.startswith(
        "error: cannot reach the cluster database postgresql://u:***@127.0.0.1:1/x"
    )
    assert "pw@" not in err
    assert "Traceback" not in err
