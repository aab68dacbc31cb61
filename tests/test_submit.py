"""``python -m runner submit`` in local mode: one result per line, summary, exit codes."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import msgspec
import pytest
from rich.console import Console

from runner import ErrorInfo, HistoryEntry, Result, Usage, UsageError
from runner.cli import main
from runner.cli._results_file import ResultsFile
from runner.cli._summary import Summary

CONFIG = """\
version: 1
providers:
  - {id: sim-a, type: simulated, model: a-1, pricing: {input_per_million: 1, output_per_million: 1}}
  - {id: sim-b, type: simulated, model: b-1}
  - {id: sim-broken, type: simulated, model: x-1, failure_rate: 1.0, failure_codes: [auth_failed]}
  - {id: sim-busy, type: simulated, model: y-1, failure_rate: 1.0, failure_codes: [server_error]}
roles:
  coder: {provider: sim-a}
  reviewer: {provider: sim-b}
  fragile: {provider: sim-broken, fallbacks: [sim-b]}
  doomed: {provider: sim-broken}
  busy: {provider: sim-busy}
default_provider: sim-a
retry: {max_attempts: 3, initial_delay: 0, max_delay: 0, jitter: 0}
cooldown: {failures: 1000, seconds: 1}
metrics: {store: none}
logging: {level: warning}
workflows:
  quick:
    stages:
      - {name: planning, role: reviewer}
      - {name: generation, role: coder}
  shaky:
    stages:
      - {name: planning, role: reviewer}
      - {name: generation, role: busy}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "runner.yaml"
    path.write_text(CONFIG)
    return path


def write_tasks(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def results(path: Path) -> list[Result]:
    decoder = msgspec.json.Decoder(Result)
    return [decoder.decode(line) for line in path.read_bytes().splitlines()]


def submit(tmp_path: Path, config: Path, tasks: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "out" / "results.jsonl"
    code = main(["submit", str(tasks), "--config", str(config), "--out", str(out), *extra])
    return code, out


def test_every_line_gets_one_result_and_exit_0(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All tasks completing gives exit 0, one completed result per line and a summary on stdout."""
    tasks = write_tasks(
        tmp_path,
        [
            '{"id": "t-1", "role": "coder", "prompt": "a"}',
            '{"id": "t-2", "role": "reviewer", "messages": [{"role": "user", "content": "b"}]}',
            "",
            '{"prompt": "no id, no role"}',
            '{"id": "w-1", "workflow": "quick", "input": "a slugify function"}',
        ],
    )
    code, out = submit(tmp_path, config, tasks)
    assert code == 0
    got = results(out)
    assert sorted(r.id for r in got) == ["line-4", "t-1", "t-2", "w-1"]
    assert {r.status for r in got} == {"completed"}
    by_id = {r.id: r for r in got}
    assert by_id["line-4"].provider == "sim-a"
    assert [s.stage for s in by_id["w-1"].stages or []] == ["planning", "generation"]
    printed = capsys.readouterr().out
    assert "4 tasks in " in printed
    assert "4 completed, 0 failed, 0 cancelled, 0 rejected" in printed
    assert f"results: {out}" in printed


def test_bad_lines_are_rejected_by_number_while_the_rest_run(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid lines get rejected results naming their line; valid ones complete; exit 1."""
    tasks = write_tasks(
        tmp_path,
        [
            '{"id": "t-1", "role": "coder", "prompt": "a"}',
            "{oops",
            '{"id": "t-3", "role": "coder", "promt": "a"}',
            '{"id": "t-4", "role": "coder"}',
            '{"id": "t-1", "role": "coder", "prompt": "again"}',
            '{"id": "t-6", "role": "coder", "prompt": "b"}',
        ],
    )
    code, out = submit(tmp_path, config, tasks)
    assert code == 1
    got = {r.id: r for r in results(out)}
    assert len(got) == 6
    assert {i: got[i].status for i in ("t-1", "t-6")} == {"t-1": "completed", "t-6": "completed"}
    rejected = {r.line: r.error.message for r in got.values() if r.error and r.line}
    assert rejected == {
        2: "line 2: not valid JSON: JSON is malformed: object keys must be strings (column 2)",
        3: "line 3: unknown field 'promt' (did you mean 'prompt'?)",
        4: "line 4: missing 'prompt' or 'messages'",
        5: "line 5: id 't-1' repeats line 1",
    }
    printed = capsys.readouterr().out
    assert "2 completed, 0 failed, 0 cancelled, 4 rejected" in printed
    assert "4 rejected lines:" in printed
    assert "  line 5: id 't-1' repeats line 1" in printed


def test_failed_task_gives_exit_1(tmp_path: Path) -> None:
    """A task whose whole chain fails is reported failed, with its error, and exit is 1."""
    # The default provider ends every chain, so here it is the broken one too.
    config = tmp_path / "broken.yaml"
    config.write_text(CONFIG.replace("default_provider: sim-a", "default_provider: sim-broken"))
    tasks = write_tasks(tmp_path, ['{"id": "d-1", "role": "doomed", "prompt": "a"}'])
    code, out = submit(tmp_path, config, tasks)
    assert code == 1
    (result,) = results(out)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.code == "auth_failed"


def test_summary_counts_retries_and_fallbacks(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary counts fallbacks and same-provider retries, overall and per provider/role."""
    tasks = write_tasks(
        tmp_path,
        [
            '{"id": "f-1", "role": "fragile", "prompt": "a"}',
            '{"id": "f-2", "role": "fragile", "prompt": "b"}',
            '{"id": "b-1", "role": "busy", "prompt": "c"}',
        ],
    )
    code, _ = submit(tmp_path, config, tasks)
    assert code == 0
    printed = capsys.readouterr().out
    assert "3 completed, 0 failed, 0 cancelled, 0 rejected" in printed
    # busy: 3 attempts on sim-busy (2 retries), then the default provider (a fallback);
    # fragile: auth_failed moves on to sim-b at once (a fallback, no retry).
    assert "2 retries, 3 fallbacks," in printed
    rows = {tuple(line.split()[:2]): line.split()[2:8] for line in printed.splitlines()[5:7]}
    assert rows == {
        ("sim-a", "busy"): ["1", "1", "0", "0", "2", "1"],
        ("sim-b", "fragile"): ["2", "2", "0", "0", "0", "2"],
    }


def test_summary_counts_retries_inside_workflow_stages(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A workflow stage's retries are in its own history and so in the summary's count."""
    tasks = write_tasks(tmp_path, ['{"id": "w-1", "workflow": "shaky", "input": "x"}'])
    code, out = submit(tmp_path, config, tasks)
    assert code == 0
    assert "2 retries, 1 fallback," in capsys.readouterr().out
    (result,) = results(out)
    assert result.stages is not None
    generation = result.stages[1]
    assert generation.attempts == 4
    tried = [(e.provider, e.attempt) for e in generation.history if e.status == "running"]
    assert tried == [("sim-busy", 1), ("sim-busy", 2), ("sim-busy", 3), ("sim-a", 4)]


def test_results_to_stdout_put_the_summary_on_stderr(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --out -, results go to stdout as JSONL and the summary to stderr."""
    tasks = write_tasks(tmp_path, ['{"id": "t-1", "prompt": "a"}', '{"id": "t-2", "prompt": "b"}'])
    code = main(["submit", str(tasks), "--config", str(config), "--out", "-"])
    assert code == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert sorted(msgspec.json.decode(line)["id"] for line in lines) == ["t-1", "t-2"]
    assert "2 tasks in " in captured.err


def test_tasks_from_stdin(tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'-' as FILE reads the tasks from standard input."""
    data = b'{"id": "s-1", "prompt": "a"}\n{"id": "s-2", "prompt": "b"}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out = submit(tmp_path, config, Path("-"))
    assert code == 0
    assert sorted(r.id for r in results(out)) == ["s-1", "s-2"]


def test_missing_tasks_file_is_exit_2(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tasks file that does not exist is one clear message and exit 2."""
    code, out = submit(tmp_path, config, tmp_path / "nope.jsonl")
    assert code == 2
    assert capsys.readouterr().err == f"error: tasks file not found: {tmp_path / 'nope.jsonl'}\n"
    assert not out.exists()


def test_bad_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config that does not validate is exit 2, with its problems and no traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nproviders: []\ndefault_provider: nowhere\n")
    tasks = write_tasks(tmp_path, ['{"prompt": "a"}'])
    code, _ = submit(tmp_path, bad, tasks)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the config is not valid")
    assert "Traceback" not in err


def test_bad_concurrency_is_exit_2(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--concurrency below 1 is a usage error."""
    tasks = write_tasks(tmp_path, ['{"prompt": "a"}'])
    code, _ = submit(tmp_path, config, tasks, "--concurrency", "0")
    assert code == 2
    assert capsys.readouterr().err == "error: --concurrency must be at least 1 (got 0)\n"


def test_long_file_gives_every_id_once(tmp_path: Path, config: Path) -> None:
    """A 20,000-line file streams through with every id in the results exactly once."""
    path = tmp_path / "tasks.jsonl"
    with path.open("w") as f:
        for i in range(20_000):
            f.write(f'{{"id": "t-{i}", "role": "coder", "prompt": "p{i}"}}\n')
    code, out = submit(tmp_path, config, path, "--concurrency", "256")
    assert code == 0
    ids = [r.id for r in results(out)]
    assert len(ids) == 20_000
    assert set(ids) == {f"t-{i}" for i in range(20_000)}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_summary_on_a_terminal_is_a_table() -> None:
    """On a terminal the summary is a rich table with the same numbers."""
    summary = Summary()
    summary.add(Result(id="a", status="completed", role="coder", provider="sim-a", attempts=1))
    summary.add(Result(id="b", status="failed", role="coder", provider="sim-a", attempts=3))
    stream = _Terminal()
    summary.render(stream, wall=2.0)
    text = stream.getvalue()
    assert "2 tasks in 2.00 s (2 finished, 1.0 per second)" in text
    assert "1 completed, 1 failed, 0 cancelled, 0 rejected" in text
    row = next(line for line in text.splitlines() if line.startswith("sim-a"))
    assert row.split()[:6] == ["sim-a", "coder", "2", "1", "1", "0"]


def test_summary_wording_uses_plurals_and_rates_over_finished_tasks() -> None:
    """One of each reads in the singular; rejected and unstarted lines do not inflate the rate."""
    summary = Summary()
    summary.add(
        Result(
            id="a",
            status="completed",
            role="coder",
            provider="sim-a",
            attempts=2,
            fallback_used=True,
            usage=Usage(input_tokens=1, output_tokens=0, total_tokens=1),
            history=[
                HistoryEntry(status="pending", at="t"),
                HistoryEntry(status="running", at="t", provider="sim-a", attempt=1),
                HistoryEntry(status="retrying", at="t", provider="sim-a", attempt=1),
                HistoryEntry(status="running", at="t", provider="sim-a", attempt=2),
                HistoryEntry(status="completed", at="t", provider="sim-a", attempt=2),
            ],
        )
    )
    for i in range(3):
        summary.add(
            Result(
                id=f"r{i}",
                status="rejected",
                error=ErrorInfo(code="invalid_task", message=f"line {i}: no"),
            )
        )
    summary.add(Result(id="c", status="cancelled", role="coder"))
    text = summary.plain(wall=0.5)
    lines = text.splitlines()
    assert lines[0] == "5 tasks in 0.50 s (1 finished, 2.0 per second)"
    assert lines[2] == "1 retry, 1 fallback, 1 token, cost $0.000000"
    assert "3 rejected lines:" in lines


@pytest.mark.parametrize("width", [80, 120])
def test_summary_table_keeps_ids_and_roles_whole_at_80_and_120_columns(width: int) -> None:
    """Every provider id and role is shown whole and no line is wider than the terminal."""
    summary = Summary()
    for provider in ("sim-fast", "sim-flaky", "sim-careful"):
        for role in ("coder", "reviewer", "workflow:default"):
            summary.add(
                Result(
                    id=f"{provider}-{role}",
                    status="completed",
                    role=role,
                    provider=provider,
                    attempts=1,
                    usage=Usage(input_tokens=100_000, output_tokens=20_000, total_tokens=120_000),
                    cost_usd=0.0123456,
                )
            )
    buffer = io.StringIO()
    summary.render(buffer, wall=1.0, console=Console(file=buffer, width=width))
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= width
    for provider in ("sim-fast", "sim-flaky", "sim-careful"):
        for role in ("coder", "reviewer", "workflow:default"):
            assert any(line.split()[:2] == [provider, role] for line in text.splitlines()), (
                provider,
                role,
            )


def test_unwritable_results_file_is_exit_2(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A results path that cannot be created is a usage error, before any task runs."""
    (tmp_path / "taken").write_text("a file, not a directory")
    tasks = write_tasks(tmp_path, ['{"prompt": "a"}'])
    out = tmp_path / "taken" / "results.jsonl"
    code = main(["submit", str(tasks), "--config", str(config), "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"error: cannot write results to {out}: ")


def test_a_deeply_nested_line_gets_its_one_result_like_every_other(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1,001 lines, one nested 1,000 deep with a typo: 1,001 result lines, exit 1, no traceback."""
    bomb = '{"id": "bomb", "promt": "x", "junk": ' + "[" * 1000 + "]" * 1000 + "}"
    lines = [f'{{"id": "t-{i}", "prompt": "p"}}' for i in range(1000)]
    tasks = write_tasks(tmp_path, [*lines[:500], bomb, *lines[500:]])
    code, out = submit(tmp_path, config, tasks)
    assert code == 1
    got = results(out)
    assert len(got) == 1001
    (rejected,) = [r for r in got if r.status == "rejected"]
    assert rejected.id == "line-501"
    assert rejected.error is not None
    assert rejected.error.message == "line 501: unknown field 'promt' (did you mean 'prompt'?)"
    assert "Traceback" not in capsys.readouterr().err


def test_bad_ids_are_rejected_lines_and_the_rest_run(tmp_path: Path, config: Path) -> None:
    """An id with a newline or of 10,000 characters is a rejected line-<n>; other lines run."""
    tasks = write_tasks(
        tmp_path,
        [
            msgspec.json.encode({"id": "a\nb", "prompt": "p"}).decode(),
            msgspec.json.encode({"id": "x" * 10_000, "prompt": "p"}).decode(),
            '{"id": "fine", "prompt": "p"}',
        ],
    )
    code, out = submit(tmp_path, config, tasks)
    assert code == 1
    got = {r.id: r for r in results(out)}
    assert {i: r.status for i, r in got.items()} == {
        "line-1": "rejected",
        "line-2": "rejected",
        "fine": "completed",
    }
    assert got["line-2"].error is not None
    assert got["line-2"].error.message == (
        "line 2: 'id' is 10,000 characters long; the most is 256"
    )


@pytest.mark.parametrize("how", ["same path", "hard link", "symlink", "stdin"])
def test_results_into_the_tasks_file_are_refused_and_it_is_kept(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """--out naming the tasks file (by any name, or as stdin): exit 2, the file untouched."""
    tasks = write_tasks(tmp_path, ['{"id": "a", "prompt": "x"}'])
    before = tasks.read_bytes()
    out = tasks
    source = str(tasks)
    if how == "hard link":
        out = tmp_path / "link.jsonl"
        out.hardlink_to(tasks)
    elif how == "symlink":
        out = tmp_path / "sym.jsonl"
        out.symlink_to(tasks)
    elif how == "stdin":
        source = "-"
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(tasks.open("rb")))
    try:
        code = main(["submit", source, "--config", str(config), "--out", str(out)])
    finally:
        if how == "stdin":
            sys.stdin.close()
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: --out {out} is the tasks file itself: the results would replace the tasks;"
        " give another --out\n"
    )
    assert tasks.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")) == []


def test_an_existing_results_file_is_replaced_at_the_end_and_the_summary_says_so(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old results stay whole until the run ends; then they are replaced, mode kept."""
    tasks = write_tasks(tmp_path, ['{"id": "new", "prompt": "x"}'])
    out = tmp_path / "out" / "results.jsonl"
    out.parent.mkdir()
    out.write_text('{"id": "old", "status": "completed"}\n')
    out.chmod(0o640)
    code, _ = submit(tmp_path, config, tasks)
    assert code == 0
    assert [r.id for r in results(out)] == ["new"]
    assert out.stat().st_mode & 0o777 == 0o640
    assert f"results: {out} (replaced the previous file)" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["results.jsonl"]


def test_a_symlinked_results_file_is_replaced_where_it_points(tmp_path: Path, config: Path) -> None:
    """--out through a symlink writes the file it points at and keeps the link."""
    tasks = write_tasks(tmp_path, ['{"id": "new", "prompt": "x"}'])
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    assert main(["submit", str(tasks), "--config", str(config), "--out", str(link)]) == 0
    assert link.is_symlink()
    assert [r.id for r in results(real)] == ["new"]


def test_results_to_a_device_are_written_straight_to_it(tmp_path: Path, config: Path) -> None:
    """--out /dev/null is written as it is: no partial file beside it, no rename."""
    tasks = write_tasks(tmp_path, ['{"id": "a", "prompt": "x"}'])
    assert main(["submit", str(tasks), "--config", str(config), "--out", os.devnull]) == 0
    assert Path(os.devnull).is_char_device()


def test_a_run_that_stops_on_an_error_leaves_the_old_results_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without commit the old results file is untouched; what was written is kept beside it."""
    out = tmp_path / "results.jsonl"
    out.write_text("old\n")

    def stopped_run() -> None:
        with ResultsFile.open(str(out)) as results_file:
            results_file.write(Result(id="a", status="completed"))
            raise UsageError("the worker went away")

    with pytest.raises(UsageError):
        stopped_run()
    assert out.read_text() == "old\n"
    (partial,) = tmp_path.glob(".results.jsonl.*.partial")
    assert partial.read_text() == '{"id":"a","status":"completed"}\n'
    assert capsys.readouterr().err == (
        f"note: the run stopped; the results written so far (1 line) are in {partial},"
        f" and {out} was left as it was\n"
    )
    with pytest.raises(UsageError), ResultsFile.open(str(out)):
        raise UsageError("before any result")
    assert sorted(tmp_path.iterdir()) == [partial, out]  # an empty partial is removed


def test_an_empty_tasks_file_is_a_warning_and_exit_0(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty (or all blank) file: exit 0, one warning saying it has no tasks."""
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n  \n")
    code, out = submit(tmp_path, config, tasks)
    assert code == 0
    assert out.read_bytes() == b""
    err = capsys.readouterr().err
    assert err == f"warning: {tasks} has no tasks (it is empty or only blank lines)\n"


def test_a_tasks_file_with_a_byte_order_mark_runs(tmp_path: Path, config: Path) -> None:
    """A file saved with a UTF-8 BOM runs like any other."""
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b'\xef\xbb\xbf{"id": "t-1", "role": "coder", "prompt": "a"}\n')
    code, out = submit(tmp_path, config, tasks)
    assert code == 0
    assert [(r.id, r.status) for r in results(out)] == [("t-1", "completed")]


def test_a_json_array_file_is_one_error_suggesting_jsonl(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One JSON array instead of JSONL: exit 2, one message, no results file."""
    tasks = tmp_path / "tasks.json"
    tasks.write_text('[{"prompt": "a"},\n {"prompt": "b"}]\n')
    code, out = submit(tmp_path, config, tasks)
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {tasks} is one JSON array, not JSONL: submit reads one JSON task per line"
        f" (convert it with: jq -c '.[]' {tasks} > tasks.jsonl)\n"
    )
    assert not out.exists()


def test_a_json_array_on_stdin_is_the_same_error(
    tmp_path: Path,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same from standard input, found at its first line: exit 2, no traceback."""
    data = b'[{"prompt": "a"}, {"prompt": "b"}]\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code = main(["submit", "-", "--config", str(config), "--out", str(tmp_path / "r.jsonl")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: <stdin> is one JSON array, not JSONL")
    assert "Traceback" not in err


def test_the_bar_says_why_nothing_runs_and_notices_are_said_once() -> None:
    """With tasks waiting, no attempt under way and a provider cooling, the bar says so."""
    from runner._registry import Notice
    from runner._tasks_file import TasksFile
    from runner.cli._screen import Screen
    from runner.cli._submit import Submission

    said = io.StringIO()
    now = [100.0]
    run = Submission(
        TasksFile(io.BytesIO(b""), name="<test>", known_workflows=(), close=False),
        ResultsFile(io.BytesIO(), name="<out>", close=False),
        grace=1.0,
        screen=Screen(said),
        clock=lambda: now[0],
    )
    run._in_flight = 3  # three tasks handed to the runner, none finished
    run.notice(
        Notice(
            kind="cooldown_started",
            provider="claude",
            seconds=30.0,
            message="provider claude is cooling down for 30 s after 3 consecutive failures",
        )
    )
    now[0] += 7
    assert run.status() == "waiting: claude cooling down, 23 s"
    ctx = object()
    run.observe(ctx, HistoryEntry(status="running", at="t", provider="sim"))
    assert run.status() == ""  # something runs: no excuse needed
    run.observe(ctx, HistoryEntry(status="completed", at="t", provider="sim"))
    now[0] += 24
    assert run.status() == ""  # the cooldown is over
    run.notice(Notice(kind="cooldown_ended", provider="claude", message="provider claude is back"))
    assert said.getvalue().splitlines() == [
        "warning: provider claude is cooling down for 30 s after 3 consecutive failures",
        "note: provider claude is back",
    ]
