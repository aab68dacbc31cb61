"""``GET /v1/tasks``: pages newest first, filters, opaque cursors, bad parameters, auth.

Through aiohttp's TestClient over the real SQLite journal and the scriptable
Runner of test_worker_api.py.  asyncio only (aiohttp).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import ClientResponse

from tests.test_worker_api import NDJSON, Setup, _open

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Setup]:
    async for setup in _open(tmp_path):
        yield setup


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[Setup]:
    """Tasks run until the test finishes them."""
    async for setup in _open(tmp_path, auto=False, queue_size=3):
        yield setup


async def _json(response: ClientResponse) -> Any:
    return msgspec.json.decode(await response.read())


async def _walk(setup: Setup, **params: str) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = dict(params) | ({"cursor": cursor} if cursor else {})
        r = await setup.client.get("/v1/tasks", params=query)
        assert r.status == 200, await r.text()
        body = await _json(r)
        assert set(body) == {"tasks", "next_cursor"}
        pages.append(body["tasks"])
        if body["next_cursor"] is None:
            return pages
        cursor = body["next_cursor"]


async def test_pages_walk_every_task_exactly_once_newest_first(api: Setup) -> None:
    """25 tasks in 25 requests, pages of 7: each id once, newest accepted first."""
    for i in range(25):
        r = await api.client.post("/v1/tasks", json={"id": f"t{i:02}", "prompt": "p"})
        assert r.status == 202
    for i in range(25):
        await api.client.get(f"/v1/tasks/t{i:02}", params={"wait": "5"})
    pages = await _walk(api, limit="7")
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    ids = [t["id"] for p in pages for t in p]
    # Later requests are accepted no earlier, and ties go by id descending.
    assert ids == [f"t{i:02}" for i in reversed(range(25))]
    first = pages[0][0]
    assert set(first) == {"id", "status", "accepted_at", "finished_at"}
    assert first["status"] == "completed"
    accepted = datetime.fromisoformat(first["accepted_at"])
    assert accepted.tzinfo is not None
    assert abs(datetime.now(UTC) - accepted) < timedelta(minutes=5)
    assert datetime.fromisoformat(first["finished_at"]) >= accepted
    # Without limit: one page of up to 100.
    assert [len(p) for p in await _walk(api)] == [25]


async def test_status_and_since_filter(held: Setup) -> None:
    """A cancelled task among pending ones; since as a duration and as an ISO time."""
    r = await held.client.post(
        "/v1/tasks", data=b'{"id":"a","prompt":"p"}\n{"id":"b","prompt":"p"}\n', headers=NDJSON
    )
    assert r.status == 202
    assert (await held.client.delete("/v1/tasks/a")).status == 200
    assert await _walk(held, status="cancelled") == [
        [{"id": "a", "status": "cancelled", "accepted_at": ANY_TIME, "finished_at": ANY_TIME}]
    ]
    assert await _walk(held, status="completed") == [[]]
    assert [t["id"] for t in (await _walk(held, since="1h"))[0]] == ["b", "a"]
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert [t["id"] for t in (await _walk(held, since=past))[0]] == ["b", "a"]
    assert await _walk(held, since=future) == [[]]  # no offset: read as UTC
    assert await _walk(held, since=future + "Z", status="cancelled") == [[]]


class _AnyTime:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and datetime.fromisoformat(other).tzinfo is not None


ANY_TIME: Any = _AnyTime()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "limit must be a whole number from 1 to 1000, not '0'"),
        ("limit=1001", "limit must be a whole number from 1 to 1000, not '1001'"),
        ("limit=ten", "limit must be a whole number from 1 to 1000, not 'ten'"),
        ("limit=-5", "limit must be a whole number from 1 to 1000, not '-5'"),
        (
            "status=done",
            "status must be one of pending, running, retrying, completed, failed, cancelled,"
            " rejected, not 'done'",
        ),
        (
            "since=yesterday",
            "since must be a duration back from now (30s, 15m, 2h, 7d) or an ISO 8601 time"
            " (2026-12-04T21:00:00Z; UTC if it has no offset), not 'yesterday'",
        ),
        (
            "cursor=bogus",
            "cursor is not one this worker gave out; pass the next_cursor of the previous page"
            " unchanged, or leave it out to start from the newest task",
        ),
        (
            "order=asc",
            "unknown query parameter 'order'; GET /v1/tasks takes status, since, tag, limit"
            " and cursor",
        ),
    ],
)
async def test_bad_parameters_are_400_with_the_error_shape(
    api: Setup, query: str, message: str
) -> None:
    r = await api.client.get("/v1/tasks?" + query)
    assert r.status == 400
    assert await _json(r) == {"error": "bad_request", "message": message}


async def test_tag_filters_on_the_tasks_tags(api: Setup) -> None:
    for task in ({"id": "x1", "tags": ["x"]}, {"id": "y1", "tags": ["y"]}, {"id": "n"}):
        r = await api.client.post("/v1/tasks", json=task | {"prompt": "p"})
        assert r.status == 202
    assert [t["id"] for t in (await _walk(api, tag="x"))[0]] == ["x1"]


async def test_the_list_needs_the_token(tmp_path: Path) -> None:
    async for setup in _open(tmp_path, token="s3cret-token"):
        c = setup.client
        for headers in ({}, {"Authorization": "Bearer nope"}):
            r = await c.get("/v1/tasks", headers=headers)
            assert r.status == 401
            assert (await _json(r))["error"] == "unauthorized"
        good = {"Authorization": "Bearer s3cret-token"}
        assert (await c.post("/v1/tasks", json={"id": "a", "prompt": "p"}, headers=good)).status
        r = await c.get("/v1/tasks", headers=good)
        assert r.status == 200
        assert [t["id"] for t in (await _json(r))["tasks"]] == ["a"]
