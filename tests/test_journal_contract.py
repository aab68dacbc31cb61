"""The journal contract (runner._journal), run against every backend.

Each test runs on the single-machine SQLite journal (on asyncio and trio)
and on the cluster's PostgreSQL queue (asyncio: asyncpg), through
tests/journal_support.py's harness.  The PostgreSQL runs need a server
(tests/pg_support.py: skipped without one, except under CI=true).
What only one backend does (the SQLite file lock, leases and claims) is
tested beside it: tests/test_worker_journal*.py, tests/test_cluster_queue.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from runner._journal import BadCursor, IdConflict, Listed, Stored, encode_cursor
from tests.journal_support import BACKENDS, Harness, open_harness

pytestmark = pytest.mark.anyio


@pytest.fixture(params=list(BACKENDS))
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return BACKENDS[request.param][1]


@pytest.fixture
async def h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    kind = BACKENDS[request.node.callspec.params["anyio_backend"]][0]
    async with open_harness(kind, tmp_path) as harness:
        yield harness


async def _walk(h: Harness, limit: int, **filters: object) -> list[list[str]]:
    """Every page's ids, following next_cursor to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await h.journal.list(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        pages.append([t.id for t in page.tasks])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


# -- accept, get, results ---------------------------------------------------


async def test_accept_inserts_new_ids_and_returns_existing_rows(h: Harness) -> None:
    """A new id is inserted (None); a journaled id returns its first row, kept across a reopen."""
    first = await h.accept_at(h.now, [("a", b'{"id":"a","prompt":"1"}'), ("b", b'{"id":"b"}')])
    again = await h.accept_at(h.now, [("a", b'{"id":"a","prompt":"1"}'), ("c", b"{}")])
    assert first == [None, None]
    assert again == [Stored(id="a", status="pending"), None]
    await h.reopen()
    assert await h.unfinished() == [
        ("a", b'{"id":"a","prompt":"1"}'),
        ("b", b'{"id":"b"}'),
        ("c", b"{}"),
    ]


async def test_an_id_journaled_for_another_task_is_a_conflict_and_nothing_goes_in(
    h: Harness,
) -> None:
    """A journaled id with a different task raises IdConflict; no row of the batch is added."""
    await h.accept_at(h.now, [("a", b'{"id":"a","prompt":"1"}')])
    with pytest.raises(IdConflict) as caught:
        await h.accept_at(h.now, [("new", b"{}"), ("a", b'{"id":"a","prompt":"2"}'), ("a2", b"{}")])
    assert caught.value.positions == [1]
    assert await h.journal.get("new") is None
    # A comparison that finds them equal makes it a duplicate instead.
    same = await h.accept_at(h.now, [("a", b'{"prompt":"1","id":"a"}')], same=lambda x, y: True)
    assert same == [Stored(id="a", status="pending")]
    assert await h.unfinished() == [("a", b'{"id":"a","prompt":"1"}')]


async def test_finished_tasks_keep_one_result_and_their_status(h: Harness) -> None:
    """A terminal result is written once; a second one and a later status move change nothing."""
    await h.accept_at(h.now, [("a", b"{}"), ("b", b"{}")])
    await h.move("a", "running")
    await h.finish_at(h.now, "a", "completed", b'{"id":"a","status":"completed"}')
    await h.finish_at(h.now, "a", "failed", b'{"id":"a","status":"failed"}')
    await h.move("a", "running")  # a late move after the result: ignored
    await h.move("b", "retrying")
    await h.reopen()
    assert await h.journal.get("a") == Stored(
        id="a", status="completed", result=b'{"id":"a","status":"completed"}'
    )
    assert await h.journal.get("b") == Stored(id="b", status="retrying")
    assert await h.journal.get("zzz") is None
    assert await h.unfinished() == [("b", b"{}")]


async def test_purge_removes_only_results_older_than_retention(h: Harness) -> None:
    """Results past the retention go; newer results and unfinished tasks stay."""
    await h.accept_at(h.now - 3000, [("old", b"{}"), ("new", b"{}"), ("open", b"{}")])
    await h.finish_at(h.now - 2000, "old", "completed", b"{}")
    await h.finish_at(h.now - 500, "new", "completed", b"{}")
    assert await h.purge_at(h.now, 1000.0) == 1
    assert await h.journal.get("old") is None
    assert await h.journal.get("new") is not None
    assert await h.unfinished() == [("open", b"{}")]


async def test_concurrent_accepts_all_land(h: Harness) -> None:
    """Many concurrent callers each get their answer and every row is stored."""

    async def one(i: int) -> None:
        assert await h.journal.accept([(f"t{i}", b"{}")]) == [None]

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(one, i)
    assert len(await h.unfinished()) == 200


# -- list ---------------------------------------------------------------------


async def test_pages_walk_every_task_once_newest_first_ties_by_id(h: Harness) -> None:
    """Batches share an accept time: within one, ids descend; every task is seen once."""
    t0 = h.now - 100
    await h.accept_at(t0, [(f"a{i}", b"{}") for i in range(5)])
    # 0.1 is not exactly representable: the cursor must keep the time exact.
    await h.accept_at(t0 + 0.1, [(f"b{i}", b"{}") for i in range(4)])
    await h.accept_at(t0 + 1, [("c0", b"{}")])
    expected = ["c0", "b3", "b2", "b1", "b0", "a4", "a3", "a2", "a1", "a0"]
    for limit in (1, 3, 4, 10, 1000):
        pages = await _walk(h, limit)
        assert [i for p in pages for i in p] == expected, limit
        assert all(len(p) == limit for p in pages[:-1])
    # A page that ends exactly at the last task says there is no next one.
    assert [len(p) for p in await _walk(h, 5)] == [5, 5]
    first = await h.journal.list(limit=2)
    assert first.tasks == [
        Listed(id="c0", status="pending", accepted_at=t0 + 1),
        Listed(id="b3", status="pending", accepted_at=t0 + 0.1),
    ]


async def test_tasks_accepted_during_a_walk_do_not_shift_its_pages(h: Harness) -> None:
    """Keyset pages: newer tasks land before the cursor, so no task is skipped or repeated."""
    for i in range(6):
        await h.accept_at(h.now - 100 + i, [(f"t{i}", b"{}")])
    page = await h.journal.list(limit=2)
    await h.accept_at(h.now, [("late", b"{}")])
    seen = [t.id for t in page.tasks]
    while page.next_cursor is not None:
        page = await h.journal.list(limit=2, cursor=page.next_cursor)
        seen += [t.id for t in page.tasks]
    assert seen == ["t5", "t4", "t3", "t2", "t1", "t0"]


async def test_status_since_and_tag_filter_and_page_together(h: Harness) -> None:
    """status, since and tag narrow the listing, alone and together, page by page."""
    old, new = h.now - 200, h.now - 100
    await h.accept_at(old, [("old", b'{"tags":["x"]}'), ("old2", b"{}")])
    await h.accept_at(
        new, [("n1", b'{"tags":["x","y"]}'), ("n2", b'{"tags":["y"]}'), ("n3", b"{}")]
    )
    await h.finish_at(new, "n1", "completed", b"{}")
    await h.finish_at(new, "old", "completed", b"{}")
    await h.move("n2", "running")
    assert await _walk(h, 1, status="completed") == [["n1"], ["old"]]
    done = (await h.journal.list(limit=10, status="completed")).tasks
    assert done[0].finished_at == new
    assert await _walk(h, 2, since=new) == [["n3", "n2"], ["n1"]]
    assert await _walk(h, 10, since=new + 0.5) == [[]]
    assert await _walk(h, 10, status="running") == [["n2"]]
    assert await _walk(h, 1, tag="x") == [["n1"], ["old"]]
    assert await _walk(h, 10, tag="x", since=old + 50) == [["n1"]]
    assert await _walk(h, 10, tag="z") == [[]]


async def test_a_cursor_or_since_at_any_distance_lists_without_error(h: Harness) -> None:
    """Times far outside any accept time (a forged cursor, since=100000000d) list, not crash."""
    await h.accept_at(h.now, [("a", b"{}")])
    far_future, far_past = encode_cursor(1e300, "z"), encode_cursor(-1e300, "z")
    assert [t.id for t in (await h.journal.list(limit=10, cursor=far_future)).tasks] == ["a"]
    assert (await h.journal.list(limit=10, cursor=far_past)).tasks == []
    assert await _walk(h, 10, since=-1e300) == [["a"]]
    assert await _walk(h, 10, since=1e300) == [[]]


@pytest.mark.parametrize(
    "cursor",
    ["", "not base64!", "bm90IGpzb24", encode_cursor(1.0, "a")[:-3] + "xyz", "WzEsMiwzXQ", "é"],
)
async def test_a_cursor_it_did_not_hand_out_is_a_bad_cursor(h: Harness, cursor: str) -> None:
    """A cursor that does not decode is BadCursor, and the journal keeps answering."""
    await h.accept_at(h.now, [("a", b"{}")])
    with pytest.raises(BadCursor, match="is not one this worker gave out"):
        await h.journal.list(limit=10, cursor=cursor)
    assert [t.id for t in (await h.journal.list(limit=10)).tasks] == ["a"]
