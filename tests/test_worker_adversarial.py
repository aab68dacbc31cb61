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
