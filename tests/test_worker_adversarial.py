"""The worker under attack, as a real process: slow clients, hostile bodies, SIGKILL.

Each test holds one of the figures docs/worker.md ("Limits and timeouts") and
docs/lifecycle.md ("Crash guarantees") promise, measured the way an attacker
or a crash would cause it.  Loopback only; every process is stopped at the
end; each test takes a few seconds.  The thresholds are the promises (for
example "/healthz answers within 1 s"), not performance targets.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.worker_support import WorkerProcess, worker_config

pytestmark = pytest.mark.slow

TOKEN = "adversarial-token-7"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()
        w._out.close()


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
            assert max(w.healthz_seconds() for _ in range(5)) < 1.0
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
        f"healthz slowest {prober.slowest:.3f} s over {prober.calls} calls;"
        f" peak RSS {w.peak_rss_mib():.0f} MiB"
    )
    assert max(len(b) for b in w.bodies) < 32_000
    assert prober.calls > 10
    assert prober.slowest < 1.0
    assert w.peak_rss_mib() < 300
    assert w.stop() == 0
    assert "Traceback" not in w.log.read_text()
