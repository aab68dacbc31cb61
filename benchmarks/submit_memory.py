"""Peak memory of ``python -m runner submit`` on a long tasks file.

The tasks file is streamed (docs/cli.md: "memory stays bounded however long it
is"), so peak RSS should not grow with the number of lines.  The command
runs as a child process on zero-latency simulated providers with SQLite
metrics on, and its own peak RSS is read with ``wait4`` by a minimal
launcher (Linux carries a parent's peak RSS across fork and exec, so this
process, large by then, cannot start it directly).  A small file is run too,
so growth with the file is visible: the ratio of the two peaks is reported.  Every line must have a
result line.  Quick mode uses 100,000 lines, ``--full`` 1,000,000.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks._harness import Case, Metric, Settings, Skip

ROOT = Path(__file__).resolve().parent.parent
SMALL = 10_000

#: Runs its arguments as a command and prints the command's peak RSS in KiB
#: (Linux's unit for ru_maxrss); it imports nothing more, so it stays small.
LAUNCHER = """\
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""

CONFIG = """\
version: 1
providers:
  - {{id: sim-0, type: simulated, latency_ms: {{mean: 0, jitter: 0}}, max_concurrency: 64}}
  - {{id: sim-1, type: simulated, latency_ms: {{mean: 0, jitter: 0}}, max_concurrency: 64}}
  - {{id: sim-2, type: simulated, latency_ms: {{mean: 0, jitter: 0}}, max_concurrency: 64}}
roles:
  coder: {{provider: sim-0, fallbacks: [sim-1, sim-2]}}
default_provider: sim-2
concurrency: 64
metrics: {{store: sqlite, path: {db}}}
logging: {{level: warning}}
"""


def write_tasks(path: Path, lines: int) -> None:
    """A tasks file of ``lines`` small coder tasks."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(f'{{"id": "t-{i}", "role": "coder", "prompt": "Write function {i}."}}\n')


def count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def submit_peak(scratch: Path, lines: int) -> tuple[float, float]:
    """Run submit on a file of ``lines`` lines; its peak RSS in MiB and wall seconds."""
    tasks = scratch / f"tasks-{lines}.jsonl"
    results = scratch / f"results-{lines}.jsonl"
    config = scratch / f"submit-{lines}.yaml"
    write_tasks(tasks, lines)
    config.write_text(CONFIG.format(db=scratch / f"submit-{lines}.db"), encoding="utf-8")
    command = [sys.executable, "-m", "runner", "submit", str(tasks)]
    command += ["--config", str(config), "--out", str(results), "--no-progress"]
    # Linux carries a process's peak RSS across fork and exec, so a child of
    # this (large, by now) process would report our size, not its own.  A
    # small launcher process starts submit instead and reports its peak.
    launcher = [sys.executable, "-c", LAUNCHER, *command]
    started = time.perf_counter()
    done = subprocess.run(
        launcher,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"submit exited {done.returncode}: {done.stderr.decode()[-500:]}")
    if (written := count_lines(results)) != lines:
        raise RuntimeError(f"submit wrote {written} result lines for {lines} tasks")
    for path in (tasks, results):
        path.unlink()
    return int(done.stdout.split()[-1]) / 1024, seconds


def run(settings: Settings) -> Sequence[Metric]:
    if not hasattr(os, "wait4"):
        raise Skip("needs os.wait4 (Linux or macOS) to read a child's peak RSS")
    lines = 1_000_000 if settings.full else 100_000
    scratch = Path(settings.scratch)
    # One run per size: peak RSS barely varies, and a million tasks take a while.
    small_rss, _ = submit_peak(scratch, SMALL)
    big_rss, seconds = submit_peak(scratch, lines)
    return [
        Metric(name=f"peak RSS, {SMALL:,} lines", unit="MiB", samples=[small_rss]),
        Metric(
            name=f"peak RSS, {lines:,} lines",
            unit="MiB",
            samples=[big_rss],
            note="1,000,000 lines with --full" if not settings.full else None,
        ),
        Metric(
            name="peak RSS growth",
            unit="x",
            samples=[big_rss / small_rss],
            note=f"{lines:,} lines vs {SMALL:,}",
        ),
        Metric(
            name="submit throughput",
            unit="lines/s",
            samples=[lines / seconds],
            note="whole command, SQLite metrics on",
        ),
    ]


CASE = Case(name="submit_memory", title="peak RSS of submit on a long tasks file", run=run)
