"""What the worker promises about its journal when things go wrong.

A journal that refuses writes (a full disk), a DELETE that races the hand-over
to a full Runner queue, a crash right after an answer, and the order of
metric events and results.  The Runner is the scriptable stand-in of
tests/worker_support.py; the journal is the real SQLite one, wrapped where a
test needs it to fail.  asyncio only (aiohttp).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from runner import Task
from runner.metrics import MemorySink
from runner.service._http import Reports
from runner.service._journal import JournalError, LocalJournal, Stored, open_journal
from runner.service._prometheus import PrometheusTee
from runner.service._server import make_app
from runner.service._worker import Worker
from tests.worker_support import FakeHandle, FakeRunner, Lines

pytestmark = pytest.mark.anyio

FULL = "the journal could not be written: database or disk is full"


class Breakable:
    """A real journal whose writes fail, as on a full disk, while ``broken`` is set."""

    def __init__(self, journal: LocalJournal) -> None:
        self._journal = journal
        self.broken = False

    def _check(self) -> None:
        if self.broken:
            raise JournalError(FULL)

    async def accept(self, tasks: Any, **options: Any) -> list[Stored | None]:
        self._check()
        return await self._journal.accept(tasks, **options)

    async def finish(self, task_id: str, status: str, result: bytes) -> None:
        self._check()
        await self._journal.finish(task_id, status, result)

    def record_status(self, task_id: str, status: str) -> None:
        if not self.broken:
            self._journal.record_status(task_id, status)

    async def get(self, task_id: str) -> Stored | None:
        return await self._journal.get(task_id)  # reads still work on a full disk

    async def unfinished(self) -> list[tuple[str, bytes]]:
        return await self._journal.unfinished()


class GatedRunner(FakeRunner):
    """A Runner whose queue is full: ``submit`` waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(auto=False)
        self.gate = anyio.Event()
        self.waiting = anyio.Event()

    async def submit(self, task: Task) -> FakeHandle:
        self.waiting.set()
        await self.gate.wait()
        return await super().submit(task)


class Setup:
    def __init__(
        self, client: TestClient[Any, Any], worker: Worker, runner: FakeRunner, lines: Lines
    ) -> None:
        self.client = client
        self.worker = worker
        self.runner = runner
        self.lines = lines


@asynccontextmanager
async def _serving(
    path: Path, runner: FakeRunner, *, wrap: Any = None, crash: bool = False
) -> AsyncIterator[Setup]:
    """A worker over the journal at ``path``; ``crash`` ends it without a drain, like SIGKILL."""
    lines = Lines()
    retries = anyio.Event()

    async def sleep(seconds: float) -> None:
        await retries.wait()  # the retry loop runs when the test says so

    async with open_journal(str(path)) as real, anyio.create_task_group() as tg:
        journal = wrap(real) if wrap else real
        worker = Worker(
            journal,
            queue_size=10,
            report=lines.append,
            sleep=sleep,
            cancel_wait=0.2,
        )
        worker.retry_now = retries  # type: ignore[attr-defined]
        await tg.start(worker.run, runner)
        app = make_app(
            worker,
            PrometheusTee(MemorySink()),
            known_workflows={"default"},
            auth_token=None,
            max_request_bytes=1 << 20,
            reports=Reports(lines.append),
        )
        async with TestClient(TestServer(app)) as client:
            yield Setup(client, worker, runner, lines)
        if crash:
            tg.cancel_scope.cancel()
        else:
            await runner.shutdown()
            worker.close()


async def _json(response: Any) -> Any:
    return msgspec.json.decode(await response.read())


async def _rows(path: Path) -> dict[str, Stored | None]:
    async with open_journal(str(path)) as journal:
        unfinished = [i for i, _ in await journal.unfinished()]
        return {i: await journal.get(i) for i in ("a", "b", "c", *unfinished)}


async def test_a_journal_that_refuses_writes_gets_json_503s_and_one_report(
    tmp_path: Path,
) -> None:
    """Disk full: POST and DELETE are JSON 503s accepting nothing; results wait, then land."""
    path = tmp_path / "journal.db"
    breakable: list[Breakable] = []

    def wrap(journal: LocalJournal) -> Breakable:
        breakable.append(Breakable(journal))
        return breakable[0]

    async with _serving(path, FakeRunner(auto=False), wrap=wrap) as s:
        c = s.client
        assert (await c.post("/v1/tasks", json={"id": "a", "prompt": "p"})).status == 202
        await anyio.sleep(0.05)
        breakable[0].broken = True
        for request in (
            c.post("/v1/tasks", json={"id": "b", "prompt": "p"}),
            c.delete("/v1/tasks/a"),
        ):
            r = await request
            assert r.status == 503
            assert r.headers["Retry-After"] == "5"
            body = await _json(r)
            assert body["error"] == "journal_unavailable"
            assert body["message"].startswith(FULL + "; ")
        assert (await c.get("/v1/tasks/b")).status == 404  # nothing of the refused POST stuck
        # a's result (the DELETE above cancelled it) cannot be written: served from memory.
        view = await _json(await c.get("/v1/tasks/a"))
        assert (view["status"], view["result"]["status"]) == ("cancelled", "cancelled")
        health = await _json(await c.get("/healthz"))
        assert (health["status"], health["journal"]) == ("ok", "failing")
        assert s.worker.unwritten == 1
        breakable[0].broken = False
        s.worker.retry_now.set()  # type: ignore[attr-defined]
        await s.worker.lookup("a", wait=5)  # returns once a's result is journaled
        assert s.worker.unwritten == 0
        assert (await c.post("/v1/tasks", json={"id": "b", "prompt": "p"})).status == 202
        assert (await _json(await c.get("/healthz")))["journal"] == "ok"
        assert s.lines == [
            f"{FULL}. New tasks and DELETE get 503 until it takes writes again; finished"
            " results wait in memory (retried every 1 s)",
            "the journal takes writes again",
        ]
    rows = await _rows(path)
    assert rows["a"] is not None
    assert rows["a"].status == "cancelled"
    assert rows["b"] is not None
    assert rows["b"].status == "pending"


async def test_a_delete_answered_during_a_hand_over_survives_a_crash(tmp_path: Path) -> None:
    """DELETE while the task waits for room in the Runner: journaled cancelled before the 200."""
    path = tmp_path / "journal.db"
    runner = GatedRunner()
    async with _serving(path, runner, crash=True) as s:
        assert (await s.client.post("/v1/tasks", json={"id": "c", "prompt": "p"})).status == 202
        with anyio.fail_after(5):
            await runner.waiting.wait()  # the feeder is inside runner.submit
        r = await s.client.delete("/v1/tasks/c")
        assert r.status == 200
        view = await _json(r)
        assert view["status"] == "cancelled"
        assert view["result"]["error"] == {
            "code": "cancelled",
            "message": "cancelled by DELETE before it started",
            "retryable": False,  # like every cancellation's (runner._results.not_run)
        }
        # The Runner takes it after all, and would complete it: the journal keeps cancelled.
        runner.gate.set()
        await anyio.sleep(0.05)
        runner.handles["c"].finish("completed")
        await anyio.sleep(0.05)
    # Crashed without a drain: the next start must not run c again.
    rows = await _rows(path)
    assert rows["c"] is not None
    assert rows["c"].status == "cancelled"
    async with open_journal(str(path)) as journal:
        assert await journal.unfinished() == []


async def test_a_result_is_journaled_only_after_the_metric_events_are_stored(
    tmp_path: Path,
) -> None:
    """before_finish (the metrics flush) runs to its end before the result reaches the journal."""
    path = tmp_path / "journal.db"
    stored = anyio.Event()
    calls: list[str] = []

    async def flush_metrics() -> None:
        calls.append("flush")
        await stored.wait()

    runner = FakeRunner(auto=False)
    async with open_journal(str(path)) as journal, anyio.create_task_group() as tg:
        worker = Worker(journal, queue_size=10, before_finish=flush_metrics)
        await tg.start(worker.run, runner)
        await worker.accept([Task(id="m", prompt="p")])
        await anyio.sleep(0.05)
        runner.handles["m"].finish()
        await anyio.sleep(0.05)
        assert calls == ["flush"]
        row = await journal.get("m")
        assert row is not None
        assert not row.finished  # held back behind the metric events
        stored.set()
        view = await worker.lookup("m", wait=5)
        assert view is not None
        assert view.status == "completed"
        worker.close()
