"""Task metadata: the caller's JSON object comes back on the task's result line, unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import Task
from runner._task_check import MAX_METADATA_BYTES
from runner.cli import main
from tests.dispatch_support import make_config, open_runner

CONFIG = """\
version: 1
providers:
  - {id: sim, type: simulated, model: s-1}
default_provider: sim
workflows:
  two:
    stages:
      - {name: planning, role: planner}
      - {name: generation, role: coder}
metrics: {store: none}
logging: {level: warning}
"""


def _submit(tmp_path: Path, lines: list[object]) -> tuple[int, dict[str, dict[str, object]]]:
    config = tmp_path / "runner.yaml"
    config.write_text(CONFIG)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "results.jsonl"
    code = main(["submit", str(tasks), "--config", str(config), "--out", str(out)])
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    return code, {str(r["id"]): r for r in rows}


def test_metadata_is_copied_to_the_result_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task's metadata, nested values and all, is on its result line; others have none."""
    meta = {"ticket": "ABC-12", "attempt": 3, "labels": ["a", "b"], "nested": {"x": None}}
    code, rows = _submit(
        tmp_path,
        [
            {"id": "m", "prompt": "hi", "metadata": meta},
            {"id": "w", "workflow": "two", "input": "x", "metadata": {"run": 7}},
            {"id": "plain", "prompt": "hi"},
        ],
    )
    assert code == 0
    assert rows["m"]["metadata"] == meta
    assert rows["w"]["metadata"] == {"run": 7}
    assert "metadata" not in rows["plain"]


def test_metadata_that_is_not_an_object_or_too_large_rejects_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """metadata must be a JSON object of at most MAX_METADATA_BYTES: else a rejected line."""
    big = {"blob": "x" * MAX_METADATA_BYTES}
    code, rows = _submit(
        tmp_path,
        [
            {"id": "list", "prompt": "hi", "metadata": [1, 2]},
            {"id": "big", "prompt": "hi", "metadata": big},
            {"id": "ok", "prompt": "hi", "metadata": {"k": "v"}},
        ],
    )
    assert code == 1
    by_line = {r["line"]: r for r in rows.values() if r["status"] == "rejected"}
    assert set(by_line) == {1, 2}
    assert "metadata" in str(by_line[1]["error"])
    message = str(by_line[2]["error"])
    assert f"the most is {MAX_METADATA_BYTES:,}" in message
    assert rows["ok"]["status"] == "completed"


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_the_python_api_returns_metadata_on_the_result() -> None:
    """Task(metadata={...}) through Runner.run: Result.metadata is the same object's value."""
    async with open_runner(make_config()) as r:
        result = await r.run(Task(role="coder", prompt="x", metadata={"trace": "t-9"}))
        refused = await r.run(Task(role="coder", prompt="x", metadata={"b": "x" * 5000}))
    assert result.status == "completed"
    assert result.metadata == {"trace": "t-9"}
    assert refused.status == "rejected"
    assert refused.error is not None
    assert "'metadata' is" in refused.error.message
