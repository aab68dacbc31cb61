"""The benchmark harness: statistics, outcomes, the JSON document and the table.

No timing is asserted (the machine is shared); a tiny fake case stands in for
the real ones, which ``make bench`` runs.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from benchmarks import CASE_MODULES, http_compare
from benchmarks._cli import load_case, main
from benchmarks._harness import (
    Case,
    CaseResult,
    Metric,
    Report,
    Settings,
    Skip,
    Target,
    collect,
    evaluate,
    percentile,
    print_table,
    run_cases,
    summarise,
    write_json,
)
from benchmarks._targets import ISSUE_13, evaluate_targets, print_targets, target_cells
from benchmarks.http_server import chunked_end, open_server
from benchmarks.http_wire import route


def tiny(settings: Settings) -> Sequence[Metric]:
    counter = iter(range(100))
    samples = collect(lambda: {"value": float(next(counter))}, settings.repetitions)
    return [
        Metric(
            name="value",
            unit="x",
            samples=samples["value"],
            target=Target(op=">=", value=2, text="at least two"),
        ),
        Metric(name="plain", unit="s", samples=[0.5]),
    ]


def skipped(settings: Settings) -> Sequence[Metric]:
    raise Skip("litellm is not installed")


def broken(settings: Settings) -> Sequence[Metric]:
    raise RuntimeError("3 of 4 tasks completed")


CASES = [
    Case(name="tiny", title="a tiny case", run=tiny),
    Case(name="skip", title="a skipped case", run=skipped),
    Case(name="broken", title="a failing case", run=broken),
]


def quiet(line: str) -> None:
    return None


def test_summarise_gives_median_quartiles_and_range() -> None:
    """Median, inclusive quartiles, min and max come from the samples."""
    stats = summarise([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats.n, stats.median, stats.q1, stats.q3, stats.min, stats.max) == (
        5,
        3.0,
        2.0,
        4.0,
        1.0,
        5.0,
    )
    assert summarise([7.0]).q1 == summarise([7.0]).q3 == 7.0


def test_percentile_is_nearest_rank() -> None:
    """p50 and p99 of 1..100 are 50 and 99; the extremes stay in range."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0


def test_collect_runs_warmup_untimed_then_repetitions() -> None:
    """The warm-up's figures are discarded; each repetition adds one sample per name."""
    calls = iter(range(10))
    samples = collect(lambda: {"n": float(next(calls))}, 3, warmup=2)
    assert samples == {"n": [2.0, 3.0, 4.0]}


def test_report_records_ok_skipped_and_error_cases(tmp_path: Path) -> None:
    """One failing case does not stop the others; each outcome keeps its note."""
    report = run_cases(CASES, Settings(repetitions=3, scratch=str(tmp_path)), log=quiet)
    outcomes = {c.case: (c.status, c.note) for c in report.cases}
    assert outcomes == {
        "tiny": ("ok", None),
        "skip": ("skipped", "litellm is not installed"),
        "broken": ("error", "RuntimeError: 3 of 4 tasks completed"),
    }
    value = report.cases[0].metrics[0]
    assert value.samples == [1.0, 2.0, 3.0]  # the warm-up's 0 is not among them
    assert value.stats.median == 2.0
    assert value.met is True
    assert report.cases[0].metrics[1].met is None


def test_json_document_has_machine_and_per_case_statistics(tmp_path: Path) -> None:
    """The JSON names the machine and gives every metric its median and spread."""
    report = run_cases(CASES[:2], Settings(repetitions=2, scratch=str(tmp_path)), log=quiet)
    path = write_json(report, tmp_path / "out" / "latest.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == 1
    assert doc["mode"] == "quick"
    machine = doc["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["python"].count(".") == 2
    assert machine["packages"]["msgspec"]
    assert "litellm" in machine["packages"]
    metric = doc["cases"][0]["metrics"][0]
    assert set(metric["stats"]) == {"n", "median", "q1", "q3", "min", "max"}
    assert metric["target"] == {"op": ">=", "value": 2, "text": "at least two"}
    assert metric["samples"] == [1.0, 2.0]
    assert doc["cases"][1]["status"] == "skipped"


def test_table_shows_every_metric_and_outcome(tmp_path: Path) -> None:
    """The printed table lists each metric with its median and target, and each skip."""
    report = run_cases(CASES, Settings(repetitions=3, scratch=str(tmp_path)), log=quiet)
    out = io.StringIO()
    print_table(report, file=out)
    text = out.getvalue()
    assert "2 x" in text
    assert ">= 2" in text
    assert "litellm is not installed" in text
    assert "RuntimeError" in text


def test_every_case_module_exposes_its_case() -> None:
    """Each registered case module has a CASE named as registered."""
    for name in CASE_MODULES:
        assert load_case(name).name == name


def test_cli_runs_only_the_chosen_case_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--only selection --repetitions 1`` prints the table and writes the JSON."""
    out = tmp_path / "r.json"
    assert main(["--only", "selection", "--repetitions", "1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [c["case"] for c in doc["cases"]] == ["selection"]
    names = [m["name"] for m in doc["cases"][0]["metrics"]]
    assert names[:2] == ["p50", "p99"]
    assert "selection" in capsys.readouterr().out


def test_http_server_routes_the_three_wire_formats() -> None:
    """POSTs to the three generate paths are routed; anything else is a 404."""
    assert route(b"POST", b"/v1/chat/completions") == "openai"
    assert route(b"POST", b"/v1/messages") == "anthropic"
    assert route(b"POST", b"/v1beta/models/bench-model:generateContent?key=k") == "gemini"
    assert route(b"POST", b"/v1/models/bench-model:generateContent") == "gemini"
    assert route(b"GET", b"/v1/chat/completions") is None
    assert route(b"POST", b"/v1/models") is None


def test_http_server_frames_chunked_bodies() -> None:
    """A chunked body ends after its zero-size chunk (and any trailers); not before."""
    body = bytearray(b"HEAD\r\n\r\n4\r\nabcd\r\n2;x=1\r\nef\r\n0\r\n\r\nNEXT")
    assert chunked_end(body, 8) == len(body) - 4
    trailers = bytearray(b"4\r\nabcd\r\n0\r\nT: 1\r\n\r\n")
    assert chunked_end(trailers, 0) == len(trailers)
    assert chunked_end(bytearray(b"4\r\nabcd\r\n"), 0) == -1
    assert chunked_end(bytearray(b"4\r\nab"), 0) == -1


@pytest.mark.slow
def test_http_server_process_ends_with_its_block_even_on_error() -> None:
    """Leaving the block by an exception still ends the server's process."""
    pids: list[int] = []

    def fail_inside() -> None:
        with open_server(max_seconds=60) as server:
            pids.append(server.pid)
            assert server.port > 0
            assert server.stats().served == 0
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    (pid,) = pids
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.slow
def test_http_case_runs_tiny_and_reports_every_side(tmp_path: Path) -> None:
    """The http case at 30 requests a pass writes each side's figures and the ratios."""
    settings = Settings(repetitions=1, scratch=str(tmp_path))
    sides, notes = http_compare.available(http_compare.ORDER)
    samples = http_compare.measure(settings, count=30, sides=sides, warmup=5)
    metrics = http_compare.metrics_from(samples, count=30, notes=notes)
    case = Case(name="http", title="tiny http", run=lambda s: metrics)
    report = run_cases([case], settings, log=quiet)
    doc = json.loads(write_json(report, tmp_path / "r.json").read_text())
    result = doc["cases"][0]
    assert result["status"] == "ok"
    found = {m["name"]: m for m in result["metrics"]}
    expected = {
        "server capacity µs/request",
        "server CPU µs/request (raw aiohttp pass)",
        "openai: raw aiohttp µs/request",
        "openai: runner µs/request",
        "ratio runner/raw aiohttp",
        "ratio runner/raw aiohttp, CPU",
        "ratio runner/bare client",
        "ratio runner/bare client, CPU",
        "anthropic: ratio runner/raw aiohttp",
        "gemini: ratio runner/raw aiohttp",
    }
    if "sdk-openai" in sides:
        expected |= {"openai: openai SDK µs/request", "ratio openai SDK/runner"}
    if "litellm-openai" in sides:
        expected |= {"openai: litellm Router µs/request", "ratio litellm/runner"}
    assert expected <= set(found)
    for metric in found.values():
        assert metric["stats"]["n"] == 1
        assert metric["samples"][0] > 0
    assert found["ratio runner/raw aiohttp"]["target"]["op"] == "<="


# --- the issue 13 targets table -------------------------------------------------


def _ok(case: str, figures: dict[str, float]) -> CaseResult:
    metrics = [evaluate(Metric(name=n, unit="", samples=[v, v, v])) for n, v in figures.items()]
    return CaseResult(case=case, title=case, status="ok", seconds=1.0, metrics=metrics)


def _report(cases: list[CaseResult]) -> Report:
    base = run_cases([], Settings(), log=quiet)
    return msgspec.structs.replace(base, cases=cases)


def test_the_targets_table_has_the_issues_rows_and_targets() -> None:
    """Nine rows in the issue's order, each figure with the issue's bound."""
    rows = [
        (spec.label, [(f.case, f.metric, f.target.op, f.target.value) for f in spec.figures])
        for spec in ISSUE_13
    ]
    assert rows == [
        (
            "real HTTP, runner vs raw aiohttp on the same local server, conc 64, metrics on",
            [("http", "ratio runner/raw aiohttp", "<=", 1.25)],
        ),
        (
            "real HTTP, official openai SDK / runner",
            [("http", "ratio openai SDK/runner", ">=", 15)],
        ),
        (
            "real HTTP, LiteLLM Router (real HTTP, same server) / runner",
            [("http", "ratio litellm/runner", ">=", 30)],
        ),
        (
            "simulated zero-latency, µs/task with SQLite metrics (LiteLLM mock ratio)",
            [
                ("dispatch", "µs/task, store sqlite", "<=", 20),
                ("litellm", "ratio litellm/runner", ">=", 100),
            ],
        ),
        (
            "1,000 tasks in one wave on 100 ms providers",
            [("scaling", "1,000 in flight, one wave", "<=", 1.15)],
        ),
        (
            "5,000 in flight, sustained, 100 ms providers",
            [("scaling", "5,000 in flight, sustained", "<=", 1.5)],
        ),
        (
            "`metrics migrate` 1,000,000 JSONL events",
            [("metrics_migrate", "1,000,000 events into a new database", "<=", 5.0)],
        ),
        (
            "`metrics summary` over 1,000,000 events, whole command",
            [("metrics_summary", "1,000,000 events", "<=", 0.2)],
        ),
        ("info-level logging cost per task", [("dispatch", "info log cost µs/task", "<=", 10)]),
    ]


def test_each_row_is_met_missed_or_not_measured_with_its_reason() -> None:
    """Just over a bound misses, on it or just under meets, an absent figure says why."""
    report = _report(
        [
            _ok(
                "http",
                {"ratio runner/raw aiohttp": 1.2501, "ratio openai SDK/runner": 15.0},
            ),
            _ok("dispatch", {"µs/task, store sqlite": 19.99, "info log cost µs/task": 10.0}),
            _ok(
                "scaling", {"1,000 in flight, one wave": 1.1501, "5,000 in flight, sustained": 1.49}
            ),
            CaseResult(
                case="metrics_migrate",
                title="m",
                status="skipped",
                seconds=0.0,
                note="no disk",
            ),
            CaseResult(case="metrics_summary", title="s", status="error", seconds=0.0, note="boom"),
        ]
    )
    rows = evaluate_targets(report, installed=lambda package: package != "litellm")
    outcomes = [(row.outcome, row.reason) for row in rows]
    assert outcomes == [
        ("missed", None),
        ("met", None),
        ("not measured", "litellm is not installed (pip install -e '.[compare]')"),
        ("not measured", "the litellm case was not run (not chosen with --only)"),
        ("missed", None),
        ("met", None),
        ("not measured", "the metrics_migrate case was skipped: no disk"),
        ("not measured", "the metrics_summary case failed: boom"),
        ("met", None),
    ]
    assert rows[3].parts[0].met is True  # the µs figure was measured and met
    assert rows[0].parts[0].stats is not None
    assert rows[0].parts[0].stats.median == 1.2501


def test_a_miss_outweighs_a_figure_not_taken() -> None:
    """One figure missed and the other absent: the row is missed and says what is absent."""
    report = _report([_ok("dispatch", {"µs/task, store sqlite": 20.01})])
    row = evaluate_targets(report, installed=lambda package: True)[3]
    assert (row.outcome, row.reason) == (
        "missed",
        "the litellm case was not run (not chosen with --only)",
    )
    assert "missed (not measured: the litellm case" in target_cells(row)[3]


def test_an_ok_case_without_the_figure_names_it() -> None:
    """A package present but the figure absent is reported as such, not blamed on the package."""
    report = _report([_ok("http", {"ratio runner/raw aiohttp": 1.0})])
    row = evaluate_targets(report, installed=lambda package: True)[1]
    assert row.reason == "the http case reported no 'ratio openai SDK/runner'"


def test_the_targets_are_printed_and_written_to_the_json(tmp_path: Path) -> None:
    """The printed table is titled and shows each outcome; the JSON carries the same rows."""
    report = _report([_ok("dispatch", {"µs/task, store sqlite": 19.0})])
    report = msgspec.structs.replace(report, targets=evaluate_targets(report))
    out = io.StringIO()
    print_targets(report, file=out)
    text = out.getvalue()
    assert "Issue 13 targets" in text
    assert "19 µs (IQR 19–19)" in text
    assert "not measured: the http case was not run" in text
    doc = json.loads(write_json(report, tmp_path / "r.json").read_text())
    assert [row["outcome"] for row in doc["targets"]][:4] == [
        "not measured",
        "not measured",
        "not measured",
        "not measured",
    ]
    assert doc["targets"][3]["parts"][0]["met"] is True
    assert len(doc["targets"]) == 9
