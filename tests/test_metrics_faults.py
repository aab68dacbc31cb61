"""Metrics stores under faults, through the command line: torn files, unwritable paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.cli import main

CONFIG = """\
version: 1
providers:
  - {{id: sim, type: simulated, model: sim-1}}
default_provider: sim
metrics: {{store: {store}, path: {path}}}
logging: {{level: warning}}
worker: {{journal: {journal}, port: 0}}
"""


def write_config(tmp_path: Path, store: str, path: Path) -> Path:
    config = tmp_path / "runner.yaml"
    config.write_text(CONFIG.format(store=store, path=path, journal=tmp_path / "journal.db"))
    return config


def write_tasks(path: Path, first: int, count: int) -> Path:
    lines = [json.dumps({"id": f"t{n}", "prompt": f"p{n}"}) for n in range(first, first + count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_run_after_a_crash_mid_write_keeps_every_event_importable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSONL store torn by a crash, then a second run: migrate imports all 200 events.

    Failed before the fix: the second run appended onto the torn line, and
    migrate stopped at line 101 ("not a metric event") having imported 0 of 200.
    """
    store = tmp_path / "metrics.jsonl"
    config = write_config(tmp_path, "jsonl", store)
    out = str(tmp_path / "results.jsonl")
    first = write_tasks(tmp_path / "a.jsonl", 0, 100)
    assert main(["submit", str(first), "--config", str(config), "--out", out]) == 0
    with store.open("ab") as f:  # the process died in the middle of writing an event
        f.write(b'{"event_id":"dead","task_id":"t-x","provider":"si')
    second = write_tasks(tmp_path / "b.jsonl", 100, 100)
    assert main(["submit", str(second), "--config", str(config), "--out", out]) == 0
    capsys.readouterr()

    db = tmp_path / "metrics.db"
    assert main(["metrics", "migrate", str(store), "--db", str(db)]) == 0
    printed, warned = capsys.readouterr()
    assert printed == (
        f"imported 200 new events from {store} into {db}"
        " (0 already there; skipped 1 torn line: 101)\n"
    )
    assert warned.startswith(f"warning: {store}:101: skipped a torn line (")

    assert main(["metrics", "summary", "--db", str(store), "--format", "json"]) == 0
    printed, warned = capsys.readouterr()
    assert json.loads(printed)[0]["requests"] == 200
    assert f"{store}:101: skipped a torn line" in warned


@pytest.mark.parametrize("store", ["sqlite", "jsonl"])
def test_submit_with_an_unwritable_metrics_path_is_one_line_and_exit_2(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """metrics.path under a regular file: one line naming the path and the fix, exit 2, no work.

    Failed before the fix: an ExceptionGroup traceback and exit 1.
    """
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    path = blocker / "metrics.db"
    config = write_config(tmp_path, store, path)
    tasks = write_tasks(tmp_path / "tasks.jsonl", 0, 3)
    out = tmp_path / "results.jsonl"
    assert main(["submit", str(tasks), "--config", str(config), "--out", str(out)]) == 2
    printed, warned = capsys.readouterr()
    why = f"({blocker} is not a directory)"
    spill = f" nor its spill file {path}.spill.jsonl {why}" if store == "sqlite" else ""
    assert warned == (
        f"error: metrics: cannot write {path} {why}{spill};"
        " fix metrics.path or set metrics.store: none\n"
    )
    assert printed == ""
    assert not out.exists(), "no task may start, so no results file either"


def test_worker_with_an_unwritable_metrics_path_stops_before_opening_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker refuses a bad metrics.path with the same line, before the journal is opened.

    Failed before the fix: the journal was created and purged first.
    """
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    path = blocker / "metrics.db"
    config = write_config(tmp_path, "sqlite", path)
    assert main(["worker", "--config", str(config)]) == 2
    _, warned = capsys.readouterr()
    why = f"({blocker} is not a directory)"
    assert warned == (
        f"error: metrics: cannot write {path} {why} nor its spill file {path}.spill.jsonl {why};"
        " fix metrics.path or set metrics.store: none\n"
    )
    assert not (tmp_path / "journal.db").exists()


def test_a_failing_metrics_database_keeps_stdout_for_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Writes retried then spilled: stdout holds only result lines, the notices go to stderr.

    Failed before the fix: stamina logged each scheduled retry to stdout
    (through structlog's default logger), between the result lines.
    """
    import sqlite3

    import stamina

    from runner.metrics._sqlite import prepare_database

    db = tmp_path / "metrics.db"
    prepare_database(db)
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TRIGGER full BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    conn.commit()
    conn.close()
    config = write_config(tmp_path, "sqlite", db)
    tasks = write_tasks(tmp_path / "tasks.jsonl", 0, 3)
    with stamina.set_testing(True, attempts=3):
        assert main(["submit", str(tasks), "--config", str(config), "--out", "-"]) == 0
    printed, warned = capsys.readouterr()
    assert [json.loads(line)["status"] for line in printed.splitlines()] == ["completed"] * 3
    assert f"metrics: cannot write to {db} (disk full)" in warned
    assert f"metrics: 3 events are in {db}.spill.jsonl; import them with:" in warned
