"""``python -m runner metrics summary | export | migrate``: exit codes, messages, shapes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runner.cli import main
from runner.metrics._events import MetricEvent, ts_to_us
from runner.metrics._jsonl import append_jsonl
from runner.metrics._sqlite import import_jsonl, prepare_database

BASE = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)
EVENT_FIELDS = MetricEvent.__struct_fields__


def event(n: int, **kw: object) -> MetricEvent:
    fields: dict[str, object] = {
        "event_id": f"e{n}",
        "task_id": f"t{n}",
        "provider": ("openai-gpt4o", "claude-sonnet")[n % 2],
        "role": ("coder", "reviewer", "planner")[n % 3],
        "model": "m",
        "attempt": 1 + n % 2,
        "ts_us": ts_to_us(BASE + timedelta(seconds=n)),
        "latency_ms": 10.0 + n,
        "success": n % 5 != 0,
        "error_code": None if n % 5 else "rate_limited",
        "input_tokens": 12,
        "output_tokens": 30,
        "cost_usd": 0.00048,
    }
    fields.update(kw)
    return MetricEvent(**fields)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database holding 60 events over one minute."""
    source = tmp_path / "seed.jsonl"
    append_jsonl(source, [event(n) for n in range(60)])
    path = tmp_path / "metrics.db"
    import_jsonl(path, source)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["metrics", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_json_has_one_row_per_provider_and_role(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format json prints the documented row shape, one per (provider, role)."""
    code, out, _ = run(capsys, "summary", "--db", str(db), "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 6
    assert set(rows[0]) == {
        "provider",
        "role",
        "requests",
        "successes",
        "failures",
        "success_rate",
        "latency_ms",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cost_usd",
        "errors",
    }
    assert set(rows[0]["latency_ms"]) == {"avg", "p50", "p95", "p99", "max"}
    assert sum(r["requests"] for r in rows) == 60
    assert sum(r["errors"].get("rate_limited", 0) for r in rows) == 12


def test_summary_grouped_by_role_leaves_provider_null(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--group-by role gives one row per role with provider null."""
    _, out, _ = run(capsys, "summary", "--db", str(db), "--group-by", "role", "--format", "json")
    rows = json.loads(out)
    assert [(r["provider"], r["role"], r["requests"]) for r in rows] == [
        (None, "coder", 20),
        (None, "planner", 20),
        (None, "reviewer", 20),
    ]


def test_summary_csv_flattens_latency_and_errors(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format csv has one column per latency figure and per error code."""
    _, out, _ = run(capsys, "summary", "--db", str(db), "--format", "csv", "--role", "coder")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["provider"] for r in rows] == ["claude-sonnet", "openai-gpt4o"]
    assert {"latency_p99_ms", "errors.rate_limited", "total_tokens"} <= set(rows[0])


def test_summary_table_is_plain_text_off_a_terminal(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a terminal the table is aligned plain text with a header line."""
    code, out, _ = run(capsys, "summary", "--db", str(db), "--provider", "openai-gpt4o")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["provider", "role", "requests"]
    assert len(lines) == 4
    assert out.count("rate_limited=2") == 3


def test_an_empty_database_says_so_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty database: a message on stderr, [] for json, exit 0."""
    path = tmp_path / "empty.db"
    prepare_database(path)
    code, out, err = run(capsys, "summary", "--db", str(path), "--format", "json")
    assert (code, out.strip()) == (0, "[]")
    assert err.strip() == f"no metric events in {path}"


def test_a_filter_matching_nothing_says_which(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Filters that match nothing are named in the message; exit 0."""
    code, out, err = run(
        capsys, "summary", "--db", str(db), "--provider", "x", "--since", "2026-11-26T22:00:00Z"
    )
    assert (code, out) == (0, "")
    assert err.strip() == f"no events match provider=x since=2026-11-26T22:00:00+00:00 in {db}"


def test_a_missing_database_is_exit_2_with_how_to_create_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing database file names the path and how to create one."""
    path = tmp_path / "nope.db"
    code, _, err = run(capsys, "summary", "--db", str(path))
    assert code == 2
    assert f"error: no metrics database at {path}; run 'python -m runner submit'" in err


def test_an_unreadable_since_is_exit_2(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--since yesterday is refused with the accepted forms."""
    code, _, err = run(capsys, "summary", "--db", str(db), "--since", "yesterday")
    assert code == 2
    assert "cannot read time 'yesterday'; use ISO 8601" in err


def test_export_then_migrate_gives_the_same_summary(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export as jsonl, migrate into a fresh database: same summary; again adds nothing."""
    exported = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "export", "--db", str(db), "--output", str(exported))
    assert (code, err.strip()) == (0, f"exported 60 events to {exported}")
    fresh = tmp_path / "fresh.db"
    code, out, _ = run(capsys, "migrate", str(exported), "--db", str(fresh))
    assert (code, out.strip()) == (
        0,
        f"imported 60 new events from {exported} into {fresh} (0 already there)",
    )
    _, again, _ = run(capsys, "migrate", str(exported), "--db", str(fresh))
    assert "imported 0 new events" in again
    summaries = [
        run(capsys, "summary", "--db", str(path), "--format", "json")[1] for path in (db, fresh)
    ]
    assert summaries[0] == summaries[1]


def test_export_formats_carry_every_event_field(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """json is an array of event lines, csv a column per line field (ts in ISO); both filter."""
    _, out, _ = run(
        capsys, "export", "--db", str(db), "--format", "json", "--until", "2026-11-26T21:00:10Z"
    )
    events = json.loads(out)
    assert [e["event_id"] for e in events] == [f"e{n}" for n in range(10)]
    assert events[0]["ts"] == "2026-11-26T21:00:00Z"
    _, out, _ = run(capsys, "export", "--db", str(db), "--format", "csv", "--role", "coder")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 20
    assert list(rows[0]) == [*EVENT_FIELDS[:6], "ts", *EVENT_FIELDS[7:]]
    assert rows[0]["ts"] == "2026-11-26T21:00:00Z"


def test_a_jsonl_store_can_be_summarized_directly(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--db FILE.jsonl reads a JSONL store and gives the same summary as SQLite."""
    source = tmp_path / "seed.jsonl"
    from_jsonl = run(capsys, "summary", "--db", str(source), "--format", "json")[1]
    from_sqlite = run(capsys, "summary", "--db", str(db), "--format", "json")[1]
    assert from_jsonl == from_sqlite


def test_the_config_names_the_default_database(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --db, the config's metrics.path is read."""
    config = tmp_path / "runner.yaml"
    config.write_text(
        "version: 1\n"
        "providers:\n  - {id: sim, type: simulated}\n"
        "default_provider: sim\n"
        f"metrics: {{store: sqlite, path: {db}}}\n"
    )
    code, out, _ = run(capsys, "summary", "--config", str(config), "--format", "json")
    assert code == 0
    assert sum(r["requests"] for r in json.loads(out)) == 60


def test_migrate_of_a_missing_file_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """migrate names a missing source file."""
    code, _, err = run(capsys, "migrate", str(tmp_path / "x.jsonl"), "--db", str(tmp_path / "m.db"))
    assert code == 2
    assert f"no such file: {tmp_path / 'x.jsonl'}" in err


def test_export_into_a_pipe_closed_early_stops_without_a_traceback(db: Path) -> None:
    """metrics export | head: the reader leaves early; no traceback, exit 141 (SIGPIPE's)."""
    source = db.parent / "many.jsonl"
    append_jsonl(source, [event(n) for n in range(60, 5000)])
    import_jsonl(db, source)
    export = [sys.executable, "-m", "runner", "metrics", "export", "--db", str(db)]
    with subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
        [*export, "--format", "csv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # as head does after its lines
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    assert first.startswith(b"event_id,task_id,")
    assert (code, err) == (141, "")
