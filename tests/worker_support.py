"""Helpers for the worker tests: a Runner whose tasks finish when the test says so,
and the worker as a real process on 127.0.0.1 with a tiny HTTP client."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Generator
from pathlib import Path
from typing import Any

import anyio

from runner import ErrorInfo, Result, Task


class FakeHandle:
    """A task the test finishes by hand (``release``) or that a cancel ends."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.result: Result | None = None
        self.done = anyio.Event()

    def finish(self, status: str = "completed") -> None:
        if self.result is None:
            error = (
                ErrorInfo(code="cancelled", message="cancelled") if status == "cancelled" else None
            )
            self.result = Result(id=self.task.id or "", status=status, output="ok", error=error)  # type: ignore[arg-type]
            self.done.set()

    async def cancel(self) -> None:
        self.finish("cancelled")

    async def _wait(self) -> Result:
        await self.done.wait()
        assert self.result is not None
        return self.result

    def __await__(self) -> Generator[Any, None, Result]:
        return self._wait().__await__()


class FakeRunner:
    """Records every submitted task; ``auto`` finishes them at once."""

    def __init__(self, *, auto: bool = True) -> None:
        self.auto = auto
        self.handles: dict[str, FakeHandle] = {}
        self.submitted: list[str] = []

    async def submit(self, task: Task) -> FakeHandle:
        handle = FakeHandle(task)
        self.submitted.append(task.id or "")
        self.handles[task.id or ""] = handle
        if self.auto:
            handle.finish()
        return handle

    async def shutdown(self, grace: float | None = None) -> None:
        for handle in self.handles.values():
            handle.finish("cancelled")


class Lines(list[str]):
    """What a report callback said, one line each (``Reports(lines.append)``)."""


ROOT = Path(__file__).resolve().parent.parent


def worker_config(
    tmp: Path,
    *,
    latency: int = 150,
    jitter: int = 50,
    grace: str = "5s",
    extra: str = "",
    concurrency: int = 50,
) -> Path:
    path = tmp / "worker.yaml"
    path.write_text(
        f"""\
version: 1
providers:
  - id: sim
    type: simulated
    model: sim-1
    latency_ms: {{mean: {latency}, jitter: {jitter}}}
    max_concurrency: 64
    pricing: {{input_per_million: 1.0, output_per_million: 2.0}}
{extra}default_provider: sim
concurrency: {concurrency}
grace_period: {grace}
metrics: {{store: sqlite, path: {tmp / "metrics.db"}}}
logging: {{level: warning}}
worker: {{journal: {tmp / "journal.db"}, port: 0}}
"""
    )
    return path


class WorkerProcess:
    """A worker subprocess and a tiny HTTP client for it."""

    def __init__(
        self,
        config: Path,
        tmp: Path,
        *args: str,
        env: dict[str, str] | None = None,
        open_files: int | None = None,
    ) -> None:
        self.log = tmp / f"worker-{time.monotonic_ns()}.log"
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in stop()

        command = [sys.executable, "-m", "runner", "worker", "--config", str(config), *args]
        if open_files is not None:
            # The limit is set by the child itself (no preexec_fn: the test
            # process may have threads), then it runs as `python -m runner`.
            launcher = (
                "import resource, runpy, sys;"
                f" resource.setrlimit(resource.RLIMIT_NOFILE, ({open_files}, {open_files}));"
                " sys.argv[0] = 'runner'; runpy.run_module('runner', run_name='__main__')"
            )
            command[1:3] = ["-c", launcher]
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.url = self._wait_for_port()
        self.bodies: list[bytes] = []

    def _wait_for_port(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(rb"listening on (http://127\.0\.0\.1:\d+)", self.log.read_bytes())
            if found:
                return found[1].decode()
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.log.read_text()}")
            time.sleep(0.05)
        raise AssertionError("worker did not start")

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        url = self.url + path  # always http://127.0.0.1:<port>: our own worker
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=70) as response:  # noqa: S310
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            status = exc.code
        self.bodies.append(raw)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def post_jsonl(self, lines: list[dict[str, Any]]) -> tuple[int, Any]:
        body = "\n".join(json.dumps(x) for x in lines).encode()
        return self.call("POST", "/v1/tasks", body, {"Content-Type": "application/x-ndjson"})

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self._out.close()
        return code

    def discard(self) -> None:
        """After a test: SIGKILL the worker if it still runs, close its log."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def healthz_seconds(self) -> float:
        """How long one ``GET /healthz`` took (it must answer 200)."""
        start = time.monotonic()
        status, body = self.call("GET", "/healthz")
        assert (status, body["status"]) == (200, "ok"), body
        return time.monotonic() - start

    def peak_rss_mib(self) -> float:
        """The process's peak resident memory so far (Linux ``VmHWM``), in MiB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        assert found is not None
        return int(found[1]) / 1024
