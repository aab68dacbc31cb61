"""The journal's listing: newest first, keyset pages, filters, opaque cursors, old journals.

asyncio and trio, like the rest of the journal's tests.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from runner.service._journal import BadCursor, Journal, Listed, encode_cursor, open_journal
from runner.service._journal_sqlite import SCHEMA_VERSION

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _walk(journal: Journal, limit: int, **filters: object) -> list[list[str]]:
    """Every page's ids, following next_cursor to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await journal.list(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        pages.append([t.id for t in page.tasks])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def test_pages_walk_every_task_once_newest_first_ties_by_id(tmp_path: Path) -> None:
    """Batches share an accept time: within one, ids descend; every task is seen once."""
    now = [1000.0]
    async with open_journal(str(tmp_path / "j.db"), clock=lambda: now[0]) as journal:
        await journal.accept([(f"a{i}", b"{}") for i in range(5)])
        now[0] = 1000.1  # not exactly representable: the cursor must keep it exact
        await journal.accept([(f"b{i}", b"{}") for i in range(4)])
        now[0] = 1001.0
        await journal.accept([("c0", b"{}")])
        expected = ["c0", "b3", "b2", "b1", "b0", "a4", "a3", "a2", "a1", "a0"]
        for limit in (1, 3, 4, 10, 1000):
            pages = await _walk(journal, limit)
            assert [i for p in pages for i in p] == expected, limit
            assert all(len(p) == limit for p in pages[:-1])
        # A page that ends exactly at the last task says there is no next one.
        assert [len(p) for p in await _walk(journal, 5)] == [5, 5]
        first = await journal.list(limit=2)
        assert first.tasks == [
            Listed(id="c0", status="pending", accepted_at=1001.0),
            Listed(id="b3", status="pending", accepted_at=1000.1),
        ]


async def test_tasks_accepted_during_a_walk_do_not_shift_its_pages(tmp_path: Path) -> None:
    """Keyset pages: newer tasks land before the cursor, so no task is skipped or repeated."""
    now = [1.0]
    async with open_journal(str(tmp_path / "j.db"), clock=lambda: now[0]) as journal:
        for i in range(6):
            now[0] = float(i)
            await journal.accept([(f"t{i}", b"{}")])
        page = await journal.list(limit=2)
        now[0] = 10.0
        await journal.accept([("late", b"{}")])
        seen = [t.id for t in page.tasks]
        while page.next_cursor is not None:
            page = await journal.list(limit=2, cursor=page.next_cursor)
            seen += [t.id for t in page.tasks]
        assert seen == ["t5", "t4", "t3", "t2", "t1", "t0"]


async def test_status_since_and_tag_filter_and_page_together(tmp_path: Path) -> None:
    now = [100.0]
    async with open_journal(str(tmp_path / "j.db"), clock=lambda: now[0]) as journal:
        await journal.accept([("old", b'{"tags":["x"]}'), ("old2", b"{}")])
        now[0] = 200.0
        await journal.accept(
            [("n1", b'{"tags":["x","y"]}'), ("n2", b'{"tags":["y"]}'), ("n3", b"{}")]
        )
        await journal.finish("n1", "completed", b"{}")
        await journal.finish("old", "completed", b"{}")
        journal.record_status("n2", "running")
        pages = await _walk(journal, 1, status="completed")
        assert pages == [["n1"], ["old"]]
        done = (await journal.list(limit=10, status="completed")).tasks
        assert done[0].finished_at == 200.0
        assert await _walk(journal, 2, since=200.0) == [["n3", "n2"], ["n1"]]
        assert await _walk(journal, 10, since=200.5) == [[]]
        assert await _walk(journal, 10, status="running") == [["n2"]]
        assert await _walk(journal, 1, tag="x") == [["n1"], ["old"]]
        assert await _walk(journal, 10, tag="x", since=150.0) == [["n1"]]
        assert await _walk(journal, 10, tag="z") == [[]]


@pytest.mark.parametrize(
    "cursor",
    ["", "not base64!", "bm90IGpzb24", encode_cursor(1.0, "a")[:-3] + "xyz", "WzEsMiwzXQ", "é"],
)
async def test_a_cursor_it_did_not_hand_out_is_a_bad_cursor(tmp_path: Path, cursor: str) -> None:
    async with open_journal(str(tmp_path / "j.db")) as journal:
        await journal.accept([("a", b"{}")])
        with pytest.raises(BadCursor, match="is not one this worker gave out"):
            await journal.list(limit=10, cursor=cursor)
        # The journal keeps working after a refused cursor.
        assert [t.id for t in (await journal.list(limit=10)).tasks] == ["a"]


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
