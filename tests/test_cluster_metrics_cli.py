"""``metrics summary|export|migrate`` on a cluster database: the same answers as on SQLite."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from runner.cli._main import main
from runner.cluster._metrics import PgEventStore
from runner.cluster._pool import open_database
from runner.cluster._schema import migrate
from runner.metrics._jsonl import append_jsonl
from runner.metrics._sqlite import import_jsonl
from tests.pg_support import pg_url_sync
from tests.test_cluster_metrics import _events

__all__ = ["pg_url_sync"]


async def _fill(url: str, events: list[object]) -> None:
    async with open_database(url) as db:
        await migrate(db)
        await PgEventStore(db).write(events)  # type: ignore[arg-type]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_summary_and_export_match_sqlite(
    pg_url_sync: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same events give the same summary (json, csv) and export on both stores."""
    events = _events(400, seed=3)
    asyncio.run(_fill(pg_url_sync, events))  # type: ignore[arg-type]
    spill = tmp_path / "e.jsonl"
    append_jsonl(spill, events)
    sqlite = tmp_path / "m.db"
    import_jsonl(sqlite, spill)
    for argv in (
        ("summary", "--format", "json"),
        ("summary", "--format", "csv", "--group-by", "role"),
        ("summary", "--format", "json", "--since", "2026-11-26T21:10:00Z", "--provider", "p1"),
        ("export", "--format", "csv", "--until", "2026-11-26T21:20:00Z"),
    ):
        code_pg, out_pg, _ = _run(capsys, "metrics", *argv, "--db", pg_url_sync)
        code_sq, out_sq, _ = _run(capsys, "metrics", *argv, "--db", str(sqlite))
        assert (code_pg, out_pg) == (code_sq, out_sq), argv
        assert out_pg
    assert len(json.loads(_run(capsys, "metrics", "summary", "--format", "json",
                               "--db", pg_url_sync)[1])) == 6  # fmt: skip


def test_config_with_cluster_section_reads_the_database(
    pg_url_sync: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--config with a cluster database summarises the cluster, not metrics.path."""
    asyncio.run(_fill(pg_url_sync, _events(50, seed=4)))  # type: ignore[arg-type]
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
    """A worker's spill file goes into the cluster database; a second import adds nothing."""
    spill = tmp_path / "spill.jsonl"
    append_jsonl(spill, _events(30, seed=5))
    code, out, _ = _run(capsys, "metrics", "migrate", str(spill), "--db", pg_url_sync)
    assert code == 0
    assert "imported 30 new events" in out
    code, out, _ = _run(capsys, "metrics", "migrate", str(spill), "--db", pg_url_sync)
    assert "imported 0 new events" in out
    assert "(30 already there)" in out


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
