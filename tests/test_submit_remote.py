"""``submit --url`` against workers that are down, silent or not workers at all.

The worker-side behaviour of ``submit --url`` (same results as a local run,
tokens, a worker killed mid-run) is in test_worker_process.py; these tests
need no worker.  stamina's test mode makes the reconnect loop one attempt, so
nothing here waits for the real retry window.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import stamina

from runner.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_backoff() -> Iterator[None]:
    with stamina.set_testing(True):
        yield


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _tasks(tmp_path: Path, count: int = 3) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(f'{{"id": "t-{i}", "prompt": "p"}}\n' for i in range(count)))
    return path


def test_a_worker_that_is_down_is_one_clear_error_and_the_old_results_stay(
    tmp_path: Path, closed_port: int, no_backoff: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listening: exit 2 naming the URL and what to check; --out left as it was."""
    out = tmp_path / "results.jsonl"
    out.write_text("earlier results\n")
    url = f"http://127.0.0.1:{closed_port}"
    code = main(["submit", str(_tasks(tmp_path)), "--url", url, "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: cannot reach the worker at {url} (connection refused): check that"
        " 'python -m runner worker' is running there and that --url names its host and port\n"
    )
    assert out.read_text() == "earlier results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl", "tasks.jsonl"]


def test_the_retry_hooks_are_put_back_after_the_run(
    tmp_path: Path, closed_port: int, no_backoff: None
) -> None:
    """submit silences stamina's retry logs only while it runs."""
    before = stamina.instrumentation.get_on_retry_hooks()
    url = f"http://127.0.0.1:{closed_port}"
    assert main(["submit", str(_tasks(tmp_path)), "--url", url, "--out", "-"]) == 2
    assert stamina.instrumentation.get_on_retry_hooks() == before


class _NotAWorker(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_url_that_is_not_a_worker_says_so(
    tmp_path: Path, no_backoff: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A web server that is not a worker: exit 2, 'check --url', nothing sent."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotAWorker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code = main(["submit", str(_tasks(tmp_path)), "--url", url, "--out", "-"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {url} does not answer as a runner worker (GET /healthz gave 404): check --url\n"
    )


@pytest.mark.slow
def test_ctrl_c_while_a_silent_worker_is_reached_cancels_every_line(tmp_path: Path) -> None:
    """A worker that takes the connection and never answers: SIGINT ends it, exit 130.

    Every line is written ``cancelled``, and there is no traceback and no
    aiohttp "Unclosed" warning (the run is in development mode, which shows them).
    """
    tasks = _tasks(tmp_path, count=5)
    out = tmp_path / "results.jsonl"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(30)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        command = ["-X", "dev", "-m", "runner", "submit", str(tasks), "--url", url]
        proc = subprocess.Popen(  # noqa: S603 (our own interpreter, our own arguments)
            [sys.executable, *command, "--out", str(out), "--no-progress"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        connection, _ = listener.accept()  # submit is now waiting for /healthz
        with connection:
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr.decode()
    assert stderr.decode() == "interrupted before any task started: none will run\n"
    rows = [msgspec.json.decode(line) for line in out.read_bytes().splitlines()]
    assert [(r["id"], r["status"]) for r in rows] == [(f"t-{i}", "cancelled") for i in range(5)]
