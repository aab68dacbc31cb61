"""Task tags: short labels checked at every entry point and recorded on every metric event."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from runner import Task
from runner._errors import TaskError
from runner._task_check import MAX_TAG_LENGTH, MAX_TAGS
from runner.cli._main import main
from runner.metrics._jsonl import encode_line, read_jsonl
from runner.metrics._writer import MemorySink
from tests.dispatch_support import make_config, open_runner

CONFIG = """\
version: 1
providers:
  - {id: sim, type: simulated, model: s-1}
default_provider: sim
metrics: {store: none}
logging: {level: warning}
"""


def _submit(tmp_path: Path, lines: list[object]) -> tuple[int, dict[int, dict[str, object]]]:
    config = tmp_path / "runner.yaml"
    config.write_text(CONFIG)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "results.jsonl"
    code = main(["submit", str(tasks), "--config", str(config), "--out", str(out)])
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    return code, {int(str(r.get("line") or r["id"].removeprefix("line-"))): r for r in rows}


def test_a_list_of_tags_becomes_a_tuple_in_python() -> None:
    """Task(tags=[...]) keeps a tuple, like messages; a non-string tag names the field."""
    assert Task(prompt="x", tags=["a", "b"]).tags == ("a", "b")  # type: ignore[arg-type]
    with pytest.raises(TaskError, match=r"tags\[1\]"):
        Task(prompt="x", tags=["a", 2])  # type: ignore[arg-type]


def test_bad_tags_reject_the_line_with_a_message_saying_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Too many, too long, blank, control characters or not strings: rejected, others run."""
    code, rows = _submit(
        tmp_path,
        [
            {"prompt": "hi", "tags": [f"t{i}" for i in range(MAX_TAGS + 1)]},
            {"prompt": "hi", "tags": ["ok", "x" * (MAX_TAG_LENGTH + 1)]},
            {"prompt": "hi", "tags": ["  "]},
            {"prompt": "hi", "tags": ["a\nb"]},
            {"prompt": "hi", "tags": "nightly"},
            {"prompt": "hi", "tags": [f"t{i}" for i in range(MAX_TAGS - 1)] + ["x" * 64]},
        ],
    )
    assert code == 1
    errors = {line: str(r.get("error")) for line, r in rows.items() if r["status"] == "rejected"}
    assert set(errors) == {1, 2, 3, 4, 5}
    assert f"'tags' has {MAX_TAGS + 1} tags; the most is {MAX_TAGS}" in errors[1]
    assert f"'tags[1]' is 65 characters long; the most is {MAX_TAG_LENGTH}" in errors[2]
    assert "'tags[0]' is empty" in errors[3]
    assert "'tags[0]' contains the control character U+000A at position 2" in errors[4]
    assert "'tags'" in errors[5]
    assert rows[6]["status"] == "completed"


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_the_python_api_refuses_bad_tags() -> None:
    """Runner.run with too many tags: a rejected Result naming 'tags', no metric event."""
    async with open_runner(make_config()) as r:
        refused = await r.run(Task(role="coder", prompt="x", tags=tuple("abcdefghijklmnopq")))
    assert refused.status == "rejected"
    assert refused.error is not None
    assert refused.error.message == f"'tags' has 17 tags; the most is {MAX_TAGS}"


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_every_metric_event_of_a_task_carries_its_tags() -> None:
    """Runner.run: each attempt's event has the task's tags; an untagged task's have ()."""
    sink = MemorySink()
    async with open_runner(make_config(), sink=sink) as r:
        tagged = await r.run(Task(id="t", role="coder", prompt="x", tags=("nightly", "team-a")))
        plain = await r.run(Task(id="p", role="coder", prompt="x"))
    assert (tagged.status, plain.status) == ("completed", "completed")
    by_task = {e.task_id: e.tags for e in sink.events}
    assert by_task == {"t": ("nightly", "team-a"), "p": ()}


def _jsonl_config(tmp_path: Path, store: Path) -> Path:
    config = tmp_path / "runner.yaml"
    config.write_text(
        CONFIG.replace("metrics: {store: none}", f"metrics: {{store: jsonl, path: {store}}}")
        + "workflows:\n  two:\n    stages:\n"
        "      - {name: planning, role: planner}\n      - {name: generation, role: coder}\n"
    )
    return config


def test_tags_reach_the_jsonl_store_and_every_export_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """submit with a JSONL store, then export: jsonl/json carry the list, csv one '|' column.

    A workflow task's stage events carry the workflow task's tags.
    """
    store = tmp_path / "metrics.jsonl"
    config = _jsonl_config(tmp_path, store)
    tasks = tmp_path / "tasks.jsonl"
    lines = [
        {"id": "a", "prompt": "hi", "tags": ["nightly", "team-a"]},
        {"id": "b", "prompt": "hi"},
        {"id": "w", "workflow": "two", "input": "x", "tags": ["wf"]},
    ]
    tasks.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "results.jsonl"
    assert main(["submit", str(tasks), "--config", str(config), "--out", str(out)]) == 0
    capsys.readouterr()
    expected = {"a": ["nightly", "team-a"], "b": [], "w/planning": ["wf"], "w/generation": ["wf"]}

    assert main(["metrics", "export", "--config", str(config), "--format", "jsonl"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {r["task_id"]: r["tags"] for r in rows} == expected

    assert main(["metrics", "export", "--config", str(config), "--format", "json"]) == 0
    assert {r["task_id"]: r["tags"] for r in json.loads(capsys.readouterr().out)} == expected

    assert main(["metrics", "export", "--config", str(config), "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["task_id"]: r["tags"] for r in table} == {
        "a": "nightly|team-a",
        "b": "",
        "w/planning": "wf",
        "w/generation": "wf",
    }


def test_a_jsonl_line_written_before_tags_still_reads(tmp_path: Path) -> None:
    """An event line without 'tags' (older runner) reads as an event with no tags."""
    old = tmp_path / "old.jsonl"
    old.write_text(
        '{"event_id":"e1","task_id":"t1","provider":"p","role":"r","model":"m","attempt":1,'
        '"ts":"2026-11-26T21:00:00Z","latency_ms":5.0,"success":true,"error_code":null,'
        '"input_tokens":1,"output_tokens":2,"cost_usd":0.0}\n'
    )
    [event] = list(read_jsonl(old))
    assert (event.task_id, event.tags) == ("t1", ())
    assert encode_line(event).endswith(b',"tags":[]}')
