"""``make run`` as a newcomer runs it, twice: each time the metrics table is of that run.

The target is run from a scratch directory holding copies of config/ and
examples/ (so the repository's own .runner/ is untouched), with this
interpreter as PY and the install step skipped (``-o``: it is installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _make_run(cwd: Path) -> str:
    make = ["make", "-s", "-f", str(ROOT / "Makefile"), "-o", ".venv/.installed"]
    done = subprocess.run(  # noqa: S603 (make, our own Makefile and interpreter)
        [*make, "run", f"PY={sys.executable}"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def _metrics_table(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith("provider ") and "requests" in line
    )
    return [line.split() for line in lines[start + 1 :] if line.strip()]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_shows_the_metrics_of_that_run_even_the_second_time(tmp_path: Path) -> None:
    """On the second run the metrics table still counts only that run's attempts and tokens."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    _make_run(tmp_path)
    stdout = _make_run(tmp_path)
    results = [
        msgspec.json.decode(line)
        for line in (tmp_path / ".runner" / "results.jsonl").read_bytes().splitlines()
    ]
    attempts = sum(r.get("attempts", 0) for r in results)
    tokens = sum(r["usage"]["total_tokens"] for r in results if r.get("usage"))
    rows = _metrics_table(stdout)
    # provider, role, requests, ok %, 5 latencies, in tok, out tok, cost, errors
    assert sum(int(row[2]) for row in rows) == attempts
    assert sum(int(row[9]) + int(row[10]) for row in rows) == tokens
    assert f"{tokens:,} tokens" in stdout
