"""`make run` end to end: the example tasks through the local config, then the metrics."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runner.cli import main

ROOT = Path(__file__).resolve().parent.parent


def derived_attempts(results: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Attempts per (provider, role) as the results file alone tells them.

    Every attempt is one ``running`` move in a history, naming the provider:
    a plain task's own history, or each workflow stage's.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for result in results:
        if result["status"] == "rejected":
            continue
        stages = result.get("stages")
        runs = (
            [(stage["role"], stage["history"]) for stage in stages]
            if isinstance(stages, list)
            else [(result["role"], result["history"])]
        )
        for role, history in runs:
            for move in history:
                if move["status"] == "running":
                    counts[move["provider"], role] += 1
    return counts


@pytest.mark.slow
def test_make_run_summary_counts_equal_the_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the example run, summary rows are one per provider and role and match the results."""
    monkeypatch.chdir(tmp_path)  # metrics.path in config/local.yaml is relative: .runner/
    shutil.copy(ROOT / "config" / "local.yaml", tmp_path / "local.yaml")
    tasks = ROOT / "examples" / "tasks.jsonl"
    code = main(["submit", str(tasks), "--config", "local.yaml", "--out", "results.jsonl"])
    assert code == 1  # the example has deliberately invalid lines
    capsys.readouterr()

    results = [json.loads(line) for line in Path("results.jsonl").read_text().splitlines()]
    lines = [line for line in tasks.read_text().splitlines() if line.strip()]
    assert len(results) == len(lines)

    assert main(["metrics", "summary", "--config", "local.yaml", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = [(row["provider"], row["role"]) for row in rows]
    assert len(keys) == len(set(keys)), "one row per provider and role"

    expected = derived_attempts(results)
    assert {key: row["requests"] for key, row in zip(keys, rows, strict=True)} == dict(expected)
    assert sum(row["requests"] for row in rows) == sum(
        r.get("attempts", 0) for r in results if r["status"] != "rejected"
    )
    completed = sum(1 for r in results if r["status"] == "completed")
    assert completed > 0
