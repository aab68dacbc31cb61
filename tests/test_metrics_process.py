"""The SQLite store's child process: writes, crashes, a stopped child, Ctrl-C, shutdown.

runner writes metric events through :class:`ProcessStore`: the transaction
runs in a child Python process, so the event loop never waits for a writer
thread to get the GIL back.  These tests drive real children.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
import stamina
from anyio.abc import Process

from runner import StorageError
from runner.config import MetricsConfig
from runner.metrics import _writer_process
from runner.metrics._jsonl import JsonlStore
from runner.metrics._query import Filters, export_db
from runner.metrics._sqlite import SqliteStore, open_for_reading
from runner.metrics._store import open_store, spill_path
from runner.metrics._writer import open_event_writer
from runner.metrics._writer_process import HEADER, THREAD_FIRST, Opening, ProcessStore, Reply
from tests.test_metrics_store import event


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test here drives real children on both backends (anyio's process pipes)."""
    return str(request.param)


@pytest.fixture
def no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3):
        yield


def stored(db: Path) -> list[tuple[object, ...]]:
    conn = open_for_reading(db)
    try:
        return [tuple(msgspec.structs.astuple(e)) for e in export_db(conn, Filters())]
    finally:
        conn.close()


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Process]:
    """Every process the store starts from here on, in order."""
    started: list[Process] = []
    opened = anyio.open_process

    async def open_process(*args: object, **kwargs: object) -> Process:
        process = await opened(*args, **kwargs)  # type: ignore[arg-type]
        started.append(process)
        return process

    monkeypatch.setattr(anyio, "open_process", open_process)
    return started


def running(pid: int) -> bool:
    """Whether ``pid`` is a process, a zombie included (one nobody waited for)."""
    return os.path.exists(f"/proc/{pid}")


@pytest.mark.anyio
async def test_the_process_store_writes_what_the_thread_store_writes(tmp_path: Path) -> None:
    """Same rows as the thread's, on both backends.

    A small first batch goes through the worker thread; the next write
    starts the child, and later batches go to that one child.
    """
    events = [
        event(n, success=n % 3 != 0, error_code=None if n % 3 else "timeout", tags=("a", "b"))
        for n in range(30)
    ]
    store = await ProcessStore.open(tmp_path / "child.db")
    assert store.child is None
    try:
        assert await store.write(events[:20]) == 20
        assert store.child is None  # the thread wrote it
        assert await store.write(events[10:]) == 10  # a re-sent half adds nothing
        child = store.child
        assert child is not None
        assert await store.write(events[25:]) == 0
        assert store.child is child  # one child for the whole run
    finally:
        await store.aclose()
    assert child.returncode == 0
    assert store.child is None
    thread = await SqliteStore.open(tmp_path / "thread.db")
    try:
        await thread.write(events)
    finally:
        await thread.aclose()
    assert stored(tmp_path / "child.db") == stored(tmp_path / "thread.db")
    assert len(stored(tmp_path / "child.db")) == 30


@pytest.mark.anyio
async def test_a_run_that_writes_once_starts_no_child(tmp_path: Path) -> None:
    """One small batch (a short run, a wave's events at its end): the thread writes it."""
    store = await ProcessStore.open(tmp_path / "m.db")
    assert await store.write([event(n) for n in range(5)]) == 5
    assert store.child is None
    await store.aclose()
    assert len(stored(tmp_path / "m.db")) == 5


@pytest.mark.anyio
async def test_a_large_first_batch_waits_for_the_child(tmp_path: Path) -> None:
    """More than THREAD_FIRST events at once come from a busy loop: the child writes them."""
    store = await ProcessStore.open(tmp_path / "m.db")
    first = [event(n) for n in range(THREAD_FIRST + 1)]
    assert await store.write(first) == THREAD_FIRST + 1
    child = store.child
    assert child is not None
    await store.aclose()
    assert child.returncode == 0  # it was sent the batch: ended, not killed
    assert len(stored(tmp_path / "m.db")) == THREAD_FIRST + 1


@pytest.mark.anyio
async def test_a_run_without_events_starts_no_child(tmp_path: Path) -> None:
    store = await ProcessStore.open(tmp_path / "m.db")
    assert store.child is None
    await store.aclose()
    assert store.child is None
    assert (tmp_path / "m.db").is_file()  # created and migrated all the same


async def engaged(path: Path) -> ProcessStore:
    """A store past its first batch (one event, ``event(10_000)``): its writes go to a child."""
    store = await ProcessStore.open(path)
    await store.write([event(10_000)])
    return store


@pytest.mark.anyio
async def test_a_killed_child_fails_one_write_and_the_next_write_starts_another(
    tmp_path: Path,
) -> None:
    store = await engaged(tmp_path / "m.db")
    try:
        assert await store.write([event(n) for n in range(5)]) == 5
        first = store.child
        assert first is not None
        first.kill()
        await first.wait()
        gone = r"^the metrics writer process ended \(exit code -9\)$"
        with pytest.raises(StorageError, match=gone):
            await store.write([event(n) for n in range(5, 10)])
        assert store.child is None
        assert await store.write([event(n) for n in range(5, 10)]) == 5
        assert store.child is not None
        assert store.child.pid != first.pid
    finally:
        await store.aclose()
    assert len(stored(tmp_path / "m.db")) == 11


@pytest.mark.anyio
async def test_the_writer_loses_no_event_when_its_process_is_killed(
    tmp_path: Path, no_backoff: None
) -> None:
    """Kill the child between batches, twice: the writer retries, every event is stored once."""
    db = tmp_path / "m.db"
    store = await ProcessStore.open(db)
    told: list[str] = []
    pids = []
    async with open_event_writer(
        store, spill=JsonlStore(spill_path(db)), notify=lambda _l, m: told.append(m), linger=0
    ) as sink:
        await sink.send(event(10_000))  # the first batch, written by the thread
        await sink.flush()
        for round_ in range(3):
            for n in range(round_ * 500, (round_ + 1) * 500):
                await sink.send(event(n))
            await sink.flush()
            child = store.child
            assert child is not None
            pids.append(child.pid)
            child.kill()
            await child.wait()
    assert len(set(pids)) == 3  # a new child after each kill
    assert told == []  # no spill, no loss
    assert not spill_path(db).exists()
    assert [row[0] for row in stored(db)] == [f"e{n}" for n in range(1_500)] + ["e10000"]


@pytest.mark.anyio
async def test_a_database_error_in_the_child_is_a_storage_error_with_its_reason(
    tmp_path: Path,
) -> None:
    db = tmp_path / "m.db"
    store = await engaged(db)
    try:
        await store.write([event(0)])
        child = store.child
        conn = sqlite3.connect(db)
        conn.execute("DROP TABLE rollup")
        conn.close()
        with pytest.raises(StorageError, match=r"^no such table: rollup$"):
            await store.write([event(1)])
        assert store.child is child  # the child lives on; the next batch may succeed
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_database_the_child_cannot_open_is_a_storage_error(tmp_path: Path) -> None:
    """The database is replaced by a directory, then the child dies: the next one cannot open it."""
    db = tmp_path / "m.db"
    store = await engaged(db)
    try:
        await store.write([event(0)])
        for leftover in os.listdir(tmp_path):
            os.unlink(tmp_path / leftover)
        os.mkdir(db)  # a directory where the database was
        child = store.child
        assert child is not None
        child.kill()
        await child.wait()
        with pytest.raises(StorageError, match=r"^the metrics writer process ended"):
            await store.write([event(1)])
        with pytest.raises(StorageError, match=r"^unable to open database file$"):
            await store.write([event(1)])
        assert store.child is None
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_stopped_child_is_killed_after_the_answer_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that never answers (SIGSTOP) fails the write in ANSWER_DEADLINE, not never."""
    monkeypatch.setattr(_writer_process, "ANSWER_DEADLINE", 0.5)
    store = await engaged(tmp_path / "m.db")
    try:
        await store.write([event(0)])
        stuck = store.child
        assert stuck is not None
        stuck.send_signal(signal.SIGSTOP)
        late = r"^the metrics writer process did not answer within 0.5 s; it was stopped$"
        with pytest.raises(StorageError, match=late):
            await store.write([event(1)])
        assert stuck.returncode == -signal.SIGKILL
        assert await store.write([event(1)]) == 1  # a new child
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_cancelled_write_is_finished_before_the_cancellation_is_seen(
    tmp_path: Path,
) -> None:
    """Like a worker thread, the exchange is not abandoned: no stale reply is left in the pipe."""
    store = await engaged(tmp_path / "m.db")
    try:
        with anyio.CancelScope() as scope:
            scope.cancel()
            assert await store.write([event(n) for n in range(50)]) == 50
        assert await store.write([event(n) for n in range(50, 60)]) == 10
    finally:
        await store.aclose()
    assert len(stored(tmp_path / "m.db")) == 61


@pytest.mark.anyio
async def test_the_child_ignores_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group; the parent decides when writing stops."""
    store = await engaged(tmp_path / "m.db")
    try:
        await store.write([event(0)])
        child = store.child
        assert child is not None
        child.send_signal(signal.SIGINT)
        assert await store.write([event(1)]) == 1
        assert store.child is child
    finally:
        await store.aclose()
    assert child.returncode == 0


def opened_child(db: Path) -> subprocess.Popen[bytes]:
    """A writer child started by hand, told to open ``db``, its answer checked."""
    child = subprocess.Popen(
        [sys.executable, "-m", "runner.metrics._writer_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    opening = msgspec.msgpack.encode(Opening(str(db), None))
    child.stdin.write(len(opening).to_bytes(HEADER, "little") + opening)
    child.stdin.flush()
    size = int.from_bytes(child.stdout.read(HEADER), "little")
    assert msgspec.msgpack.decode(child.stdout.read(size), type=Reply) == Reply()
    return child


def test_the_child_ends_quietly_when_its_parent_goes_away(tmp_path: Path) -> None:
    """Its stdin ends (closed, or the parent died): it closes the database and exits 0, silently."""
    child = opened_child(tmp_path / "m.db")
    _out, err = child.communicate(timeout=10)  # closes stdin
    assert child.returncode == 0
    assert err == b""
    assert (tmp_path / "m.db").is_file()


@pytest.mark.anyio
async def test_open_store_runs_sqlite_in_a_child_unless_python_cannot_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = MetricsConfig(store="sqlite", path=str(tmp_path / "m.db"))
    store = await open_store(config, lambda _l, _m: None)
    assert isinstance(store, ProcessStore)
    await store.aclose()
    monkeypatch.setattr(sys, "executable", "")  # an embedded interpreter
    store = await open_store(config, lambda _l, _m: None)
    assert isinstance(store, SqliteStore)
    await store.aclose()


@pytest.mark.anyio
async def test_a_child_that_cannot_start_is_a_storage_error_and_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[Process]
) -> None:
    monkeypatch.setattr(_writer_process, "_command", lambda: [sys.executable, "-c", "exit(3)"])
    store = await engaged(tmp_path / "m.db")  # the thread wrote it; the child exited at once
    with pytest.raises(
        StorageError, match=r"^the metrics writer process ended as it started \(exit code 3\)$"
    ):
        await store.write([event(0)])
    assert store.child is None
    monkeypatch.setattr(_writer_process, "ANSWER_DEADLINE", 0.5)
    monkeypatch.setattr(
        _writer_process, "_command", lambda: [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    with pytest.raises(StorageError, match=r"did not answer within 0.5 s; it was stopped$"):
        await store.write([event(0)])
    assert store.child is None
    exited, stopped = spawned
    assert (exited.returncode, stopped.returncode) == (3, -signal.SIGKILL)
    assert not running(stopped.pid)  # killed and waited for, not left behind
    await store.aclose()


@pytest.mark.anyio
async def test_a_spawn_cancelled_before_the_child_reads_its_opening_leaves_no_process(
    monkeypatch: pytest.MonkeyPatch, spawned: list[Process]
) -> None:
    """Cancelled inside spawn's first write (a child that never reads): killed and waited for."""
    monkeypatch.setattr(
        _writer_process, "_command", lambda: [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    # An opening far larger than a pipe's buffer: the write blocks until cancelled.
    with anyio.move_on_after(0.5) as scope:
        await _writer_process._Child.spawn("x" * (1 << 20), None)
    assert scope.cancelled_caught
    (process,) = spawned
    assert process.returncode == -signal.SIGKILL
    assert not running(process.pid)


def test_a_child_whose_parent_dies_mid_batch_stores_the_batch_and_exits(tmp_path: Path) -> None:
    """The runner killed after sending a batch: the child commits it, cannot answer, exits 0."""
    db = tmp_path / "m.db"
    child = opened_child(db)
    assert child.stdin is not None
    assert child.stdout is not None
    batch = msgspec.msgpack.encode([event(n) for n in range(300)])
    child.stdin.write(len(batch).to_bytes(HEADER, "little") + batch)
    child.stdin.flush()
    child.stdout.close()  # nobody will read the answer: the parent is gone
    child.stdin.close()
    assert child.wait(timeout=10) == 0
    assert child.stderr is not None
    with child.stderr:
        assert child.stderr.read() == b""
    assert len(stored(db)) == 300
