"""The SQLite journal's listing indexes, also in a journal written before they existed.

What a listing shows (order, pages, filters, cursors) is the contract every
backend keeps: tests/test_journal_contract.py.  asyncio and trio.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from runner.service._journal import open_journal
from runner.service._journal_sqlite import SCHEMA_VERSION

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_version_1_journal_opens_gets_the_listing_indexes_and_lists(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            """CREATE TABLE tasks (
                id TEXT PRIMARY KEY, task TEXT NOT NULL, status TEXT NOT NULL, result TEXT,
                submitted_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL);
            CREATE INDEX tasks_finished ON tasks (finished_at);
            INSERT INTO tasks VALUES ('old', '{}', 'completed', '{}', 5.0, 6.0, 6.0);
            INSERT INTO tasks VALUES ('open', '{}', 'pending', NULL, 7.0, 7.0, NULL);
            PRAGMA user_version=1;"""
        )
    async with open_journal(str(path)) as journal:
        assert [t.id for t in (await journal.list(limit=10)).tasks] == ["open", "old"]
        assert await journal.unfinished() == [("open", b"{}")]
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        plan = " ".join(
            str(row[3])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE (submitted_at, id) < (1.0, 'a')"
                " ORDER BY submitted_at DESC, id DESC LIMIT 5"
            )
        )
        # The page is read from the index, not by sorting the whole table.
        assert "tasks_listed" in plan
        assert "TEMP B-TREE" not in plan
