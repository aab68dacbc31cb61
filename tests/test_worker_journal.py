"""The SQLite journal's own promises: one owner per file, foreign files refused, batches.

What every backend promises (accepts, one result, retention, listing) is in
tests/test_journal_contract.py.

The journal itself is backend-neutral (its owner runs each batch in a worker
thread through anyio), so these run on asyncio and trio; only the worker's
HTTP server around it is asyncio (aiohttp).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import anyio
import pytest

from runner import StorageError, UsageError
from runner.service._journal import open_journal

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_terminal_status_must_come_with_a_result(tmp_path: Path) -> None:
    """record_status refuses a terminal status; finish refuses a non-terminal one."""
    async with open_journal(str(tmp_path / "j.db")) as journal:
        with pytest.raises(ValueError, match="terminal"):
            journal.record_status("a", "completed")
        with pytest.raises(ValueError, match="not terminal"):
            await journal.finish("a", "running", b"{}")


async def test_a_second_owner_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    """Two workers cannot share one journal: the second is told which file and what to do."""
    path = str(tmp_path / "j.db")
    async with open_journal(path):
        with pytest.raises(StorageError) as caught:
            async with open_journal(path):
                pass
    assert str(caught.value) == (
        f"journal {path} is in use by another worker; stop it or set worker.journal to another file"
    )


async def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    """A random file named as the journal gives a usage error, not a traceback."""
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="not a runner journal") as caught:
        async with open_journal(str(path)):
            pass
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


async def test_a_failed_write_is_a_storage_error_with_its_cause(tmp_path: Path) -> None:
    """A batch SQLite refuses raises StorageError naming the journal, the sqlite error chained."""
    async with open_journal(str(tmp_path / "j.db")) as journal:
        await journal.accept([("a", b"{}")])
        await journal._conn.run(lambda conn: conn.execute("DROP TABLE tasks"))  # type: ignore[attr-defined]
        with pytest.raises(StorageError, match="the journal could not be written") as caught:
            await journal.get("a")
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


def _tables(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        return [row[0] for row in rows]


@pytest.mark.parametrize(
    ("schema", "found"),
    [
        ("CREATE TABLE users (name TEXT)", "users"),
        ("CREATE TABLE tasks (id TEXT, title TEXT)", "tasks"),
        ("CREATE TABLE tasks (id TEXT); CREATE TABLE notes (body TEXT)", "notes, tasks"),
    ],
)
async def test_another_sqlite_database_is_refused_and_left_as_it_was(
    tmp_path: Path, schema: str, found: str
) -> None:
    """worker.journal naming some other SQLite database: refused, no table added, mode kept."""
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(schema)
    before = path.read_bytes()
    with pytest.raises(UsageError) as caught:
        async with open_journal(str(path)):
            pass
    assert str(caught.value) == (
        f"journal {path} is not a runner journal: it is a SQLite database with other tables"
        f" ({found}); point worker.journal at a new file"
    )
    assert path.read_bytes() == before
    assert not (tmp_path / "app.db-wal").exists()


async def test_an_empty_file_becomes_a_journal(tmp_path: Path) -> None:
    """A zero-byte file (touch) is adopted: it holds nothing to protect."""
    path = tmp_path / "j.db"
    path.touch()
    async with open_journal(str(path)) as journal:
        assert await journal.accept([("a", b"{}")]) == [None]
    assert _tables(path) == ["tasks"]


async def test_closing_writes_every_queued_status_move(tmp_path: Path) -> None:
    """record_status does not wait; leaving the journal still writes what was queued."""
    path = str(tmp_path / "j.db")
    async with open_journal(path) as journal:
        await journal.accept([(f"t{i}", b"{}") for i in range(50)])
        for i in range(50):
            journal.record_status(f"t{i}", "running")
    async with open_journal(path) as journal:
        assert {(await journal.get(f"t{i}")).status for i in range(50)} == {"running"}  # type: ignore[union-attr]


async def test_a_closed_journal_refuses_work(tmp_path: Path) -> None:
    """An operation after close is a UsageError, not a hang."""
    async with open_journal(str(tmp_path / "j.db")) as journal:
        pass
    with pytest.raises(UsageError, match="the journal is closed"):
        journal.record_status("a", "running")
    with pytest.raises(UsageError, match="the journal is closed"):
        await journal.get("a")


async def test_cancelling_the_owner_scope_leaves_committed_accepts(tmp_path: Path) -> None:
    """A forced stop mid-run: what accept answered is on disk, and the file opens again."""
    path = str(tmp_path / "j.db")
    with anyio.CancelScope() as scope:
        async with open_journal(path) as journal:
            await journal.accept([("a", b"{}")])
            scope.cancel()
            await anyio.sleep_forever()
    async with open_journal(path) as journal:
        assert await journal.unfinished() == [("a", b"{}")]
