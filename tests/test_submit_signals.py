"""A real ``python -m runner submit`` interrupted by signals still accounts for every line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

pytestmark = pytest.mark.slow

TASKS = 200

CONFIG = """\
version: 1
providers:
  - {{id: sim-slow, type: simulated, model: slow-1, latency_ms: {{mean: {latency}}}}}
default_provider: sim-slow
concurrency: 8
grace_period: {grace}
metrics: {{store: sqlite, path: {db}}}
"""


def start(tmp_path: Path, *, latency: int, grace: str) -> tuple[subprocess.Popen[bytes], Path]:
    config = tmp_path / "runner.yaml"
    config.write_text(CONFIG.format(latency=latency, grace=grace, db=tmp_path / "metrics.db"))
    tasks = tmp_path / "tasks.jsonl"
    lines = [f'{{"id": "t-{i:03d}", "prompt": "slow {i}"}}' for i in range(TASKS)]
    lines.insert(0, "not json")  # line 1: its rejected result shows the run is under way
    tasks.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "runner", "submit", str(tasks), "--config", str(config)]
    proc = subprocess.Popen(  # noqa: S603 (our own interpreter, our own arguments)
        [*cmd, "--out", str(out)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return proc, out


def wait_for_results(proc: subprocess.Popen[bytes], out: Path, lines: int) -> None:
    """Poll until the run's results have ``lines`` lines (no timing is asserted).

    While the run goes they are in the hidden partial file beside ``out``.
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for partial in out.parent.glob(f".{out.name}.*.partial"):
            if partial.read_bytes().count(b"\n") >= lines:
                return
        if proc.poll() is not None:
            pytest.fail(f"submit ended early: {proc.communicate()}")
        time.sleep(0.05)
    pytest.fail("no results were written")


def check_every_line_once(out: Path) -> Counter[str]:
    rows = [msgspec.json.decode(line) for line in out.read_bytes().splitlines()]
    ids = Counter(r["id"] for r in rows)
    expected = {f"t-{i:03d}" for i in range(TASKS)} | {"line-1"}
    assert set(ids) == expected
    assert max(ids.values()) == 1
    statuses = {r["id"]: r["status"] for r in rows}
    assert statuses.pop("line-1") == "rejected"
    assert set(statuses.values()) <= {"completed", "cancelled"}
    return Counter(statuses.values())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_running_cancels_the_rest(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGINT/SIGTERM: exit 130, every input id once, completed or cancelled."""
    proc, out = start(tmp_path, latency=300, grace="30s")
    wait_for_results(proc, out, 9)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=50)
    assert proc.returncode == 130, stderr.decode()
    statuses = check_every_line_once(out)
    assert statuses["completed"] >= 8
    assert statuses["cancelled"] > 0
    assert b"interrupted: finishing running tasks" in stderr
    assert b"201 tasks in " in stdout
    assert b"Traceback" not in stderr


def test_second_signal_cancels_at_once(tmp_path: Path) -> None:
    """A second SIGINT skips the grace period; every line still gets its one result."""
    proc, out = start(tmp_path, latency=600_000, grace="10m")
    # Nothing completes on its own (10-minute latency); the rejected line 1 shows
    # the file is being read.
    wait_for_results(proc, out, 1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=50)
    assert proc.returncode == 130, stderr.decode()
    assert b"interrupted again: cancelling at once" in stderr
    assert check_every_line_once(out) == Counter(cancelled=TASKS)


def test_stdin_is_read_line_by_line_and_a_third_signal_stops_reading(tmp_path: Path) -> None:
    """``submit -``: each line runs as it arrives (stdin still open); three SIGINTs end it."""
    config = tmp_path / "runner.yaml"
    config.write_text(
        "providers:\n  - {id: sim, type: simulated}\ndefault_provider: sim\n"
        "metrics: {store: none}\ngrace_period: 5s\n"
    )
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "runner", "submit", "-", "--config", str(config)]
    proc = subprocess.Popen(  # noqa: S603 (our own interpreter, our own arguments)
        [*cmd, "--out", str(out)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    # Like `tail -f tasks.jsonl | runner submit -`: lines come one by one, no EOF.
    for i in range(2):
        proc.stdin.write(f'{{"id": "s-{i}", "prompt": "x"}}\n'.encode())
        proc.stdin.flush()
        wait_for_results(proc, out, i + 1)
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr.decode()
    assert b"interrupted again: lines after 2 have no result line" in stderr
    assert b"Traceback" not in stderr
    ids = [msgspec.json.decode(line)["id"] for line in out.read_bytes().splitlines()]
    assert ids == ["s-0", "s-1"]
