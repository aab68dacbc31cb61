"""The cluster schema's upgrades, and the task list read from its indexes (asyncio only).

A database left at the version before the listing indexes is upgraded by a
worker's start (:func:`migrate`), keeping its rows; the plans PostgreSQL
picks for ``GET /v1/tasks`` on a filled table are then index scans, where
the same listing was a sequential scan and a sort before.  The table is
filled (20,000 tasks, analysed) rather than the planner told to avoid
sequential scans, so the plans are the ones a real cluster would get.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.cluster._pool import Database, open_database
from runner.cluster._queue import Queue, list_query
from runner.cluster._schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from runner.service._cluster import cancelled_result
from tests.pg_support import pg_url

__all__ = ["pg_url"]

pytestmark = pytest.mark.anyio

#: The version that added the listing indexes, wherever later migrations go.
LISTING = 1 + next(
    i for i, steps in enumerate(MIGRATIONS) if any("runner_tasks_listed" in s for s in steps)
)

TASKS = 20_000
# One task in a hundred is running, one in a hundred is tagged 'nightly';
# one a second, the newest now.
FILL = f"""
INSERT INTO runner_tasks (id, task, status, result, submitted_at, finished_at)
SELECT 't' || lpad(g::text, 6, '0'),
       CASE WHEN g % 100 = 0 THEN '{{"prompt":"x","tags":["nightly"]}}'
            ELSE '{{"prompt":"x","tags":["daily"]}}' END,
       CASE WHEN g % 100 = 1 THEN 'running' ELSE 'completed' END,
       CASE WHEN g % 100 = 1 THEN NULL ELSE '{{}}' END,
       now() - make_interval(secs => {TASKS} - g),
       CASE WHEN g % 100 = 1 THEN NULL ELSE now() - make_interval(secs => {TASKS} - g) END
FROM generate_series(1, {TASKS}) AS g
"""  # noqa: S608 - constants only


def _nodes(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Every node of a JSON plan as (node type, index name)."""
    out = [(plan["Node Type"], plan.get("Index Name"))]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


async def _plan(db: Database, **page: Any) -> list[tuple[str, str | None]]:
    sql, args = list_query(limit=101, **page)
    raw = await db.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return _nodes(json.loads(raw)[0]["Plan"])


async def test_the_previous_version_is_upgraded_and_the_task_list_uses_the_indexes(
    pg_url: str,
) -> None:
    """Start on a database at the version before: indexes added, rows kept, no seq scan."""
    async with open_database(pg_url) as db:
        assert await migrate(db, target=LISTING - 1) == 0
        await db.execute(FILL)
        await db.execute("ANALYZE runner_tasks")
        before = await _plan(db)
        assert ("Seq Scan", None) in before
        assert any(node == "Sort" for node, _ in before)

        # What a worker's start does.
        assert await migrate(db) == LISTING - 1
        assert await db.run(schema_version) == SCHEMA_VERSION
        await db.execute("ANALYZE runner_tasks")

        queue = Queue(db, worker_id="w", lease=30, cancelled=cancelled_result)
        newest = (await queue.list(limit=1)).tasks[0]
        middle = await queue.list(limit=TASKS // 2)
        assert middle.next_cursor is not None
        cases: dict[str, tuple[dict[str, Any], str]] = {
            "first page": ({}, "runner_tasks_listed"),
            "a page after a cursor": ({"cursor": middle.next_cursor}, "runner_tasks_listed"),
            "since ten minutes": ({"since": newest.accepted_at - 600}, "runner_tasks_listed"),
            "a rare status": ({"status": "running"}, "runner_tasks_listed_status"),
            "a rare tag": ({"tag": "nightly"}, "runner_tasks_tags"),
            # Nearly every row has it: walking the order's index is cheaper.
            "a common tag": ({"tag": "daily"}, "runner_tasks_listed"),
        }
        for name, (page, index) in cases.items():
            nodes = await _plan(db, **page)
            assert all(node != "Seq Scan" for node, _ in nodes), (name, nodes)
            assert index in {used for _, used in nodes}, (name, nodes)

        # The listing itself, on the upgraded table.
        assert newest.id == "t020000"
        running = await queue.list(limit=3, status="running")
        assert [t.id for t in running.tasks] == ["t019901", "t019801", "t019701"]
        tagged = await queue.list(limit=2, tag="nightly")
        assert [t.id for t in tagged.tasks] == ["t020000", "t019900"]
        assert len((await queue.list(limit=TASKS, since=newest.accepted_at - 599)).tasks) == 600


async def test_migration_2_can_run_twice(pg_url: str) -> None:
    """Migration 2's statements run again on an upgraded database change nothing, fail nothing."""
    async with open_database(pg_url) as db:
        assert await migrate(db, target=LISTING) == 0
        for statement in MIGRATIONS[LISTING - 1]:
            await db.execute(statement)
        indexes = await db.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'runner_tasks'"
            " AND indexname IN ('runner_tasks_listed', 'runner_tasks_listed_status',"
            " 'runner_tasks_tags') ORDER BY indexname"
        )
        columns = await db.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'runner_cooldowns' AND column_name = 'failures'"
        )
        assert await migrate(db) == LISTING
    assert [r["indexname"] for r in indexes] == [
        "runner_tasks_listed",
        "runner_tasks_listed_status",
        "runner_tasks_tags",
    ]
    assert len(columns) == 1
