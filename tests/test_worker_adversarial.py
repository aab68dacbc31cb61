"""The worker under attack, as a real process: slow clients, hostile bodies, SIGKILL.

Each test holds one of the figures docs/worker.md ("Limits and timeouts") and
docs/lifecycle.md ("Crash guarantees") promise, measured the way an attacker
or a crash would cause it.  Loopback only; every process is stopped at the
end; each test takes a few seconds.  The thresholds are the promises (for
example "/healthz answers within 1 s"), not performance targets.
"""

from __future__ import annotations

import json
import resource
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import pytest

from tests.worker_support import ROOT, WorkerProcess, worker_config

pytestmark = pytest.mark.slow

TOKEN = "adversarial-token-7"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.discard()


def _with_token(config: Path, extra: str = "") -> Path:
    text = config.read_text().replace(
        "port: 0}", f'port: 0, auth_token: "${{RUNNER_TOKEN}}"{extra}}}'
    )
    config.write_text(text)
    return config


def test_half_sent_requests_cannot_starve_healthz_or_flood_the_log(
    tmp_path: Path, processes: list[WorkerProcess]
) -> None:
    """1,100 half-sent requests against a 1,024 open-files limit: the worker keeps answering."""
    config = _with_token(worker_config(tmp_path, latency=1, jitter=0))
    w = WorkerProcess(config, tmp_path, env={"RUNNER_TOKEN": TOKEN}, open_files=1024)
    processes.append(w)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1300:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    try:
        with ExitStack() as stack:
            for _ in range(1100):
                s = stack.enter_context(socket.create_connection(("127.0.0.1", w.port)))
                s.sendall(b"POST /v1/tasks HTTP/1.1\r\nHost: w\r\nContent-Length: 10")
            # With every half-sent request still open: health and real clients are served.
            slowest = max(w.healthz_seconds() for _ in range(5))
            assert slowest < 1.0, w.log.read_text()
            body = b'{"id": "real", "prompt": "p"}'
            assert w.call("POST", "/v1/tasks", body, AUTH)[0] == 202
            status, view = w.call("GET", "/v1/tasks/real?wait=10", headers=AUTH)
            assert (status, view["status"]) == (200, "completed")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert w.healthz_seconds() < 1.0
    assert w.stop() == 0
    log = w.log.read_text()
    assert "Traceback" not in log
    assert len(log) < 4096, log
    assert log.count("connections open (worker.max_connections)") == 1
    print(
        f"\n1,100 half-sent requests: slowest /healthz {slowest:.3f} s;"
        f" log {len(log.splitlines())} lines"
    )


class _Prober:
    """Calls /healthz over and over in a thread, keeping the slowest answer time."""

    def __init__(self, w: WorkerProcess) -> None:
        self._w = w
        self._stop = threading.Event()
        self.slowest = 0.0
        self.calls = 0
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.slowest = max(self.slowest, self._w.healthz_seconds())
            self.calls += 1
            time.sleep(0.02)

    def __enter__(self) -> _Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _post_raw(port: int, body: bytes) -> socket.socket:
    """Send a whole JSONL POST and return the socket without reading the answer."""
    s = socket.create_connection(("127.0.0.1", port))
    head = (
        "POST /v1/tasks HTTP/1.1\r\nHost: w\r\nContent-Type: application/x-ndjson\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    s.sendall(head.encode() + body)
    return s


def test_hostile_bodies_get_small_answers_while_healthz_stays_quick(
    tmp_path: Path, processes: list[WorkerProcess]
) -> None:
    """10 MiB bodies of bad lines, three answers unread: small JSON, /healthz < 1 s, bounded RSS."""
    w = WorkerProcess(worker_config(tmp_path), tmp_path)
    processes.append(w)
    newlines = b"x\n" * (5 * 1024 * 1024)  # 10 MiB, 5,242,880 lines
    bad_lines = (b"{" + b"a" * 1022 + b"\n") * 10_000  # 10 MiB, 10,000 lines
    ndjson = {"Content-Type": "application/x-ndjson"}
    with _Prober(w) as prober:
        status, body = w.call("POST", "/v1/tasks", newlines, ndjson)
        assert (status, body["error"]) == (413, "too_many_tasks")
        status, body = w.call("POST", "/v1/tasks", bad_lines, ndjson)
        assert (status, body["error"], body["unlisted"]) == (400, "invalid_tasks", 9_900)
        assert len(body["lines"]) == 100
        unread = [_post_raw(w.port, bad_lines) for _ in range(3)]
        for s in unread:
            s.settimeout(30)
            assert s.recv(12) == b"HTTP/1.1 400"  # answered; the rest is left unread
    for s in unread:
        s.close()
    print(
        f"\n10 MiB hostile bodies: answers of {sorted(len(b) for b in w.bodies)[-2:]} bytes;"
        f" slowest /healthz {prober.slowest:.3f} s over {prober.calls} calls;"
        f" peak RSS {w.peak_rss_mib():.0f} MiB"
    )
    assert max(len(b) for b in w.bodies) < 32_000
    assert prober.calls >= 3  # it ran while the bodies were sent and parsed
    assert prober.slowest < 1.0
    assert w.peak_rss_mib() < 300
    assert w.stop() == 0
    assert "Traceback" not in w.log.read_text()


def _journal(tmp: Path) -> dict[str, tuple[str, dict[str, Any] | None]]:
    with closing(sqlite3.connect(tmp / "journal.db")) as db:
        rows = db.execute("SELECT id, status, result FROM tasks").fetchall()
    return {i: (s, json.loads(r) if r else None) for i, s, r in rows}


def _events_per_task(tmp: Path) -> Counter[str]:
    with closing(sqlite3.connect(tmp / "metrics.db")) as db:
        return Counter(row[0] for row in db.execute("SELECT task_id FROM events"))


def _wait_idle(w: WorkerProcess) -> None:
    """Until no accepted task is waiting or running (finished ones may await their write)."""
    deadline = time.monotonic() + 30
    while True:
        health = w.call("GET", "/healthz")[1]
        if health["queue_depth"] == 0 and health["in_flight"] == 0:
            return
        assert time.monotonic() < deadline, health
        time.sleep(0.05)


def test_no_journaled_result_lacks_its_metric_events_when_the_writer_is_stuck(
    tmp_path: Path, processes: list[WorkerProcess]
) -> None:
    """Metrics database locked, tasks finish, SIGKILL: nothing is journaled without its events."""
    config = worker_config(tmp_path, latency=1, jitter=0)
    w = WorkerProcess(config, tmp_path)
    processes.append(w)
    with closing(sqlite3.connect(tmp_path / "metrics.db", timeout=0)) as lock:
        lock.execute("BEGIN IMMEDIATE")  # the writer now waits for its busy timeout
        assert w.post_jsonl([{"id": f"k{i}", "prompt": "p"} for i in range(20)])[0] == 202
        _wait_idle(w)  # every task has run; its events wait behind the lock
        w.proc.kill()
        w.proc.wait()
        lock.rollback()
    journaled = {i for i, (_, result) in _journal(tmp_path).items() if result is not None}
    assert journaled <= set(_events_per_task(tmp_path))
    again = WorkerProcess(config, tmp_path)
    processes.append(again)
    for i in range(20):
        assert again.call("GET", f"/v1/tasks/k{i}?wait=30")[1]["status"] == "completed"
    assert again.stop() == 0
    assert set(_events_per_task(tmp_path)) == {f"k{i}" for i in range(20)}


def test_sigkill_mid_run_loses_no_metric_event_of_a_journaled_result(
    tmp_path: Path, processes: list[WorkerProcess]
) -> None:
    """2,000 tasks, SIGKILL mid-run: each journaled result has one event per attempt."""
    config = worker_config(tmp_path, latency=50, jitter=20)
    w = WorkerProcess(config, tmp_path)
    processes.append(w)
    ids = [f"s{i:04d}" for i in range(2000)]
    for start in range(0, 2000, 500):
        batch = [{"id": i, "prompt": "p"} for i in ids[start : start + 500]]
        assert w.post_jsonl(batch)[0] == 202
    assert w.call("GET", f"/v1/tasks/{ids[600]}?wait=30")[1]["status"] == "completed"
    w.proc.kill()
    w.proc.wait()
    before = {i: r for i, (_, r) in _journal(tmp_path).items() if r is not None}
    events = _events_per_task(tmp_path)
    assert 600 <= len(before) < 2000
    missing = [i for i, r in before.items() if events[i] != r["attempts"]]
    assert missing == []
    again = WorkerProcess(config, tmp_path)
    processes.append(again)
    for i in ids:
        assert again.call("GET", f"/v1/tasks/{i}?wait=30")[1]["status"] == "completed"
    assert again.stop() == 0
    events = _events_per_task(tmp_path)
    assert all(events[i] >= 1 for i in ids)
    print(f"\nSIGKILL: {len(before)} results journaled before it, 0 of them without their events")


def test_an_answered_delete_survives_sigkill(
    tmp_path: Path, processes: list[WorkerProcess]
) -> None:
    """DELETE of a task queued in the Runner or being handed to it: cancelled after SIGKILL."""
    slow = worker_config(tmp_path, latency=20_000, jitter=0, concurrency=1)
    w = WorkerProcess(slow, tmp_path)
    processes.append(w)
    # r0 runs, r1 fills the Runner's queue (as large as concurrency), r2 waits to be handed over.
    assert w.post_jsonl([{"id": f"r{i}", "prompt": "p"} for i in range(3)])[0] == 202
    deadline = time.monotonic() + 20
    while w.call("GET", "/v1/tasks/r0")[1]["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for task_id in ("r2", "r1"):
        status, view = w.call("DELETE", f"/v1/tasks/{task_id}")
        assert (status, view["status"]) == (200, "cancelled"), view
    w.proc.kill()
    w.proc.wait()
    fast = worker_config(tmp_path, latency=1, jitter=0, concurrency=1)
    again = WorkerProcess(fast, tmp_path)
    processes.append(again)
    statuses = {i: again.call("GET", f"/v1/tasks/r{i}?wait=30")[1]["status"] for i in range(3)}
    assert statuses == {0: "completed", 1: "cancelled", 2: "cancelled"}
    assert again.stop() == 0


def test_a_journal_path_naming_another_database_is_refused(tmp_path: Path) -> None:
    """worker.journal pointing at an application's database: exit 2, one line, file untouched."""
    app_db = tmp_path / "journal.db"  # where worker_config puts the journal
    with closing(sqlite3.connect(app_db)) as db:
        db.execute("CREATE TABLE invoices (n INTEGER)")
        db.commit()
    before = app_db.read_bytes()
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "runner", "worker", "--config", str(worker_config(tmp_path))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"error: journal {app_db} is not a runner journal: it is a SQLite database with other"
        " tables (invoices); point worker.journal at a new file\n"
    )
    assert app_db.read_bytes() == before
