"""The cluster's task queue and journal: one PostgreSQL table shared by every worker.

Each task id has one row in ``runner_tasks``.  A task moves through it so:

* **enqueue**: inserted (a known id is a duplicate and keeps its first row)
  and ``NOTIFY runner_tasks`` wakes the workers, in one transaction, so the
  task is durable before any caller is told it was accepted;
* **claim**: a worker takes the oldest unowned rows with
  ``FOR UPDATE SKIP LOCKED`` (workers never wait for each other's picks),
  sets itself as ``owner``, bumps ``claims`` and starts a lease of
  ``lease`` seconds;
* **renew**: while the task runs the owner renews its leases, by id, every
  ``lease / 3``; a worker that dies stops renewing, and once a lease has run
  out any worker's sweep (:meth:`Queue.reclaim`) makes the task ready again;
* **finish**: the one terminal write, conditional on the writer still holding
  the lease (same owner, same claim number, no result yet), with
  ``NOTIFY runner_done``.  A worker whose lease was lost (it stalled past
  ``lease``, another worker reclaimed the task) writes nothing, so every id
  gets exactly one terminal result even though a task can run twice;
* **cancel**: ``cancel_requested`` is set durably; an unowned task gets its
  ``cancelled`` result at once, an owned one is announced with
  ``NOTIFY runner_cancel`` to its owner, which stops it and writes the
  result.  A cancelled task whose owner died is finished by the sweep.

Execution is therefore *at least once*: a provider call in flight when its
worker died is made again by the worker that reclaims the task.

:class:`Queue` is a :class:`~runner._journal.Journal` (accept, get, list,
purge: the same promises, types and errors as the single-machine journal,
checked by the same tests); claims, leases, the conditional finish and
cancellation are its own, as that module's docstring explains.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from msgspec import Struct

from runner._errors import QueueFull
from runner._journal import IdConflict, Listed, Page, Stored, decode_cursor, encode_cursor
from runner.cluster._pool import Connection, Database

TERMINAL: Final = frozenset({"completed", "failed", "cancelled", "rejected"})

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST_US: Final = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_LAST_US: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)

#: Channels: new work, a terminal result (payload: the id), a cancellation (the id).
TASKS_CHANNEL: Final = "runner_tasks"
DONE_CHANNEL: Final = "runner_done"
CANCEL_CHANNEL: Final = "runner_cancel"

#: Builds the ``cancelled`` result line of a task that never ran: (id, task JSON, why).
CancelledResult = Callable[[str, bytes, str], bytes]


class Claim(Struct, frozen=True, kw_only=True):
    """A task this worker now holds: its id, task line and claim number."""

    id: str
    task: bytes
    claims: int


class Finish(Struct, frozen=True, kw_only=True):
    """One terminal write: the claim it is conditional on, and the result line."""

    id: str
    claims: int
    status: str
    result: bytes


class Renewal(Struct, frozen=True, kw_only=True):
    """What a heartbeat learned: leases this worker lost, cancellations it missed."""

    lost: frozenset[str]
    cancel: frozenset[str]


_ENQUEUE: Final = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS i(id, task, ord)
), added AS (
    INSERT INTO runner_tasks (id, task, status)
    SELECT id, task, 'pending' FROM input ORDER BY ord
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT id FROM added
"""
_CLAIM: Final = """
WITH picked AS (
    SELECT id FROM runner_tasks
    WHERE result IS NULL AND owner IS NULL
    ORDER BY seq LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE runner_tasks t
SET owner = $2, claims = t.claims + 1, updated_at = now(),
    lease_until = now() + make_interval(secs => $3)
FROM picked WHERE t.id = picked.id
RETURNING t.seq, t.id, t.task, t.claims
"""
_RENEW: Final = """
UPDATE runner_tasks SET lease_until = now() + make_interval(secs => $3)
WHERE owner = $1 AND id = ANY($2::text[]) AND result IS NULL
RETURNING id, cancel_requested
"""
_STATUS: Final = """
UPDATE runner_tasks t SET status = s.status, updated_at = now()
FROM unnest($1::text[], $2::text[]) AS s(id, status)
WHERE t.id = s.id AND t.owner = $3 AND t.result IS NULL
"""
_FINISH: Final = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[])
        AS i(id, claims, status, result)
), done AS (
    UPDATE runner_tasks t
    SET status = input.status, result = input.result, owner = NULL, lease_until = NULL,
        updated_at = now(), finished_at = now()
    FROM input
    WHERE t.id = input.id AND t.owner = $5 AND t.claims = input.claims AND t.result IS NULL
    RETURNING t.id
), earlier AS (
    -- Written by this very statement before: its connection was lost after
    -- the commit, so it runs again (Database.run).  The row holds exactly
    -- this result from this claim: ours, which another run would not match.
    SELECT t.id FROM runner_tasks t JOIN input ON t.id = input.id
    WHERE t.claims = input.claims AND t.result = input.result
)
SELECT id, pg_notify('runner_done', id) FROM done
UNION ALL SELECT id, NULL FROM earlier
"""
_RELEASE: Final = """
UPDATE runner_tasks SET owner = NULL, lease_until = NULL, status = 'pending', updated_at = now()
WHERE owner = $1 AND id = ANY($2::text[]) AND result IS NULL
RETURNING id
"""
_EXPIRED: Final = """
UPDATE runner_tasks SET owner = NULL, lease_until = NULL, status = 'pending', updated_at = now()
WHERE id IN (
    SELECT id FROM runner_tasks
    WHERE result IS NULL AND owner IS NOT NULL AND lease_until < now()
      AND NOT cancel_requested
    FOR UPDATE SKIP LOCKED
)
RETURNING id
"""
_EXPIRED_CANCELLED: Final = """
SELECT id, task FROM runner_tasks
WHERE result IS NULL AND owner IS NOT NULL AND lease_until < now() AND cancel_requested
FOR UPDATE SKIP LOCKED
"""
_WRITE_CANCELLED: Final = """
UPDATE runner_tasks t
SET status = 'cancelled', result = s.result, owner = NULL, lease_until = NULL,
    cancel_requested = true, updated_at = now(), finished_at = now()
FROM unnest($1::text[], $2::text[]) AS s(id, result)
WHERE t.id = s.id AND t.result IS NULL
RETURNING t.id
"""


def list_query(
    *,
    limit: int,
    cursor: str | None = None,
    status: str | None = None,
    since: float | None = None,
    tag: str | None = None,
) -> tuple[str, list[object]]:
    """The statement and arguments of one page of :meth:`Queue.list` (``limit`` rows).

    Written for the indexes of schema 2: the keyset and ``since`` compare
    ``submitted_at`` itself, the tag test is the indexed expression.
    Raises :class:`~runner._journal.BadCursor` for a cursor no page handed out.
    """
    us = "(extract(epoch from {}) * 1000000)::bigint"
    where: list[str] = []
    args: list[object] = []
    if cursor is not None:
        at, task_id = decode_cursor(cursor)
        # Compared as timestamptz, not as an expression of it, so the
        # (submitted_at, id) index can start the page at the cursor.
        args.extend((_timestamp(round(at * 1_000_000)), task_id))
        where.append(f"(submitted_at, id) < (${len(args) - 1}, ${len(args)})")
    if status is not None:
        args.append(status)
        where.append(f"status = ${len(args)}")
    if since is not None:
        args.append(_timestamp(math.ceil(since * 1_000_000)))
        where.append(f"submitted_at >= ${len(args)}")
    if tag is not None:
        args.append(tag)
        where.append(f"(task::jsonb -> 'tags') ? ${len(args)}")
    args.append(limit)
    clause = " WHERE " + " AND ".join(where) if where else ""
    sql = (
        f"SELECT id, status, {us.format('submitted_at')}, {us.format('finished_at')}"  # noqa: S608 - fixed fragments, values bound
        f" FROM runner_tasks{clause} ORDER BY submitted_at DESC, id DESC LIMIT ${len(args)}"
    )
    return sql, args


def _timestamp(us: int) -> datetime:
    """The instant ``us`` microseconds after the epoch, exactly (no float on the way).

    Held within the years 1 to 9999 (``datetime``'s range, inside
    timestamptz's): a forged cursor or a ``since`` of a million days then
    lists as any instant beyond every task would, instead of an OverflowError.
    """
    return _EPOCH + timedelta(microseconds=min(max(us, _FIRST_US), _LAST_US))


def _stored(task_id: str, status: str, result: str | None) -> Stored:
    return Stored(id=task_id, status=status, result=None if result is None else result.encode())


class Queue:
    """The shared queue as one worker (or one direct submitter) sees it."""

    def __init__(
        self,
        db: Database,
        *,
        worker_id: str,
        lease: float,
        cancelled: CancelledResult,
    ) -> None:
        self.db = db
        self.worker_id = worker_id
        self.lease = lease
        self._cancelled = cancelled

    # -- intake ------------------------------------------------------------

    async def accept(
        self,
        tasks: Sequence[tuple[str, bytes]],
        *,
        same: Callable[[bytes, bytes], bool] = operator.eq,
        room: int | None = None,
    ) -> list[Stored | None]:
        """Insert each ``(id, task JSON)`` unless its id is known; all in one transaction.

        Returns, per task, ``None`` if it was inserted or the row that held
        its id already (a duplicate).  A known id whose task is not
        ``same(queued, given)`` raises :class:`~runner._journal.IdConflict`
        and nothing of the batch is inserted.  With ``room`` (the cluster's
        bound on unfinished tasks), raises :class:`~runner._errors.QueueFull`,
        nothing inserted, when the new tasks would leave more than ``room``
        unfinished in the whole cluster.
        """
        ids = [t[0] for t in tasks]
        bodies = [t[1].decode() for t in tasks]

        async def run(conn: Connection) -> list[Stored | None]:
            async with conn.transaction():
                if room is not None:
                    # One intake at a time while counting, so two POSTs cannot
                    # both see the last free places.
                    await conn.execute("SELECT pg_advisory_xact_lock(7347002)")
                    unfinished = await conn.fetchval(
                        "SELECT count(*) FROM runner_tasks WHERE result IS NULL"
                    )
                    known = await conn.fetchval(
                        "SELECT count(*) FROM runner_tasks WHERE id = ANY($1::text[])", ids
                    )
                    if unfinished + len(ids) - known > room:
                        raise QueueFull(max(room - unfinished, 0), retry_after=1)
                added = {r["id"] for r in await conn.fetch(_ENQUEUE, ids, bodies)}
                others = [i for i in ids if i not in added]
                found: dict[str, Stored] = {}
                if others:
                    rows = await conn.fetch(
                        "SELECT id, task, status, result FROM runner_tasks"
                        " WHERE id = ANY($1::text[])",
                        others,
                    )
                    given = dict(zip(ids, bodies, strict=True))
                    clashes = {
                        r["id"]
                        for r in rows
                        if not same(r["task"].encode(), given[r["id"]].encode())
                    }
                    if clashes:
                        # Raised inside the transaction: the inserts roll back with it.
                        raise IdConflict([n for n, i in enumerate(ids) if i in clashes])
                    found = {r["id"]: _stored(r["id"], r["status"], r["result"]) for r in rows}
                if added:
                    await conn.execute("SELECT pg_notify($1, '')", TASKS_CHANNEL)
                return [None if i in added else found.get(i) for i in ids]

        return await self.db.run(run)

    # -- a worker's side ---------------------------------------------------

    async def claim(self, limit: int) -> list[Claim]:
        """Take up to ``limit`` ready tasks, oldest first, with a fresh lease."""
        rows = await self.db.fetch(_CLAIM, limit, self.worker_id, self.lease)
        rows.sort(key=lambda r: r["seq"])
        return [Claim(id=r["id"], task=r["task"].encode(), claims=r["claims"]) for r in rows]

    async def renew(self, ids: Sequence[str], statuses: dict[str, str] | None = None) -> Renewal:
        """Extend the leases of ``ids`` (and record their latest statuses).

        Says which of them this worker no longer holds (reclaimed by another
        worker, or finished) and which were asked to stop.
        """
        ids = list(ids)

        async def run(conn: Connection) -> Renewal:
            async with conn.transaction():
                if statuses:
                    await conn.execute(
                        _STATUS, list(statuses), list(statuses.values()), self.worker_id
                    )
                rows = await conn.fetch(_RENEW, self.worker_id, ids, self.lease)
            held = {r["id"] for r in rows}
            return Renewal(
                lost=frozenset(i for i in ids if i not in held),
                cancel=frozenset(r["id"] for r in rows if r["cancel_requested"]),
            )

        return await self.db.run(run)

    async def finish(self, items: Sequence[Finish]) -> set[str]:
        """Write terminal results of tasks this worker holds; return the ids written.

        An id missing from the answer was not written: the lease was lost
        (another worker has the task, or it is already finished).  A result
        this call wrote before its connection was lost (the commit made, the
        answer not received) counts as written when the retry finds it.
        """

        async def run(conn: Connection) -> set[str]:
            rows = await conn.fetch(
                _FINISH,
                [i.id for i in items],
                [i.claims for i in items],
                [i.status for i in items],
                [i.result.decode() for i in items],
                self.worker_id,
            )
            return {r["id"] for r in rows}

        return await self.db.run(run)

    async def release(self, ids: Sequence[str]) -> int:
        """Give back unfinished tasks (a graceful stop), so other workers run them at once."""
        if not ids:
            return 0

        async def run(conn: Connection) -> int:
            async with conn.transaction():
                rows = await conn.fetch(_RELEASE, self.worker_id, list(ids))
                if rows:
                    await conn.execute("SELECT pg_notify($1, '')", TASKS_CHANNEL)
                return len(rows)

        return await self.db.run(run)

    async def reclaim(self) -> tuple[int, int]:
        """Make tasks whose lease ran out ready again; finish the cancelled ones.

        Returns (tasks made ready, cancelled tasks finished).  Any worker may
        run it; concurrent sweeps skip each other's rows.
        """

        async def run(conn: Connection) -> tuple[int, int]:
            async with conn.transaction():
                ready = await conn.fetch(_EXPIRED)
                doomed = await conn.fetch(_EXPIRED_CANCELLED)
                written: list[Any] = []
                if doomed:
                    results = [
                        self._cancelled(
                            r["id"],
                            r["task"].encode(),
                            "cancelled by DELETE; the worker running it stopped",
                        ).decode()
                        for r in doomed
                    ]
                    written = await conn.fetch(_WRITE_CANCELLED, [r["id"] for r in doomed], results)
                    for r in written:
                        await conn.execute("SELECT pg_notify($1, $2)", DONE_CHANNEL, r["id"])
                if ready:
                    await conn.execute("SELECT pg_notify($1, '')", TASKS_CHANNEL)
                return len(ready), len(written)

        return await self.db.run(run)

    # -- anyone's side -----------------------------------------------------

    async def get(self, task_id: str) -> Stored | None:
        """The task with this id, or ``None``."""
        row = await self.db.run(
            lambda conn: conn.fetchrow(
                "SELECT status, result FROM runner_tasks WHERE id = $1", task_id
            )
        )
        return None if row is None else _stored(task_id, row["status"], row["result"])

    async def results(self, ids: Sequence[str]) -> list[Stored]:
        """The finished tasks among ``ids``."""
        rows = await self.db.fetch(
            "SELECT id, status, result FROM runner_tasks"
            " WHERE id = ANY($1::text[]) AND result IS NOT NULL",
            list(ids),
        )
        return [_stored(r["id"], r["status"], r["result"]) for r in rows]

    async def cancel(self, task_id: str) -> Stored | None:
        """Ask for the task to stop, durably; ``None`` for an unknown id.

        A task nobody holds gets its ``cancelled`` result now; a held one is
        announced to its owner.  A finished task is left as it is.
        """

        async def run(conn: Connection) -> Stored | None:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "SELECT task, status, result, owner FROM runner_tasks WHERE id = $1 FOR UPDATE",
                    task_id,
                )
                if row is None:
                    return None
                if row["result"] is not None:
                    return _stored(task_id, row["status"], row["result"])
                if row["owner"] is None:
                    result = self._cancelled(
                        task_id, row["task"].encode(), "cancelled by DELETE before it started"
                    ).decode()
                    await conn.execute(
                        "UPDATE runner_tasks SET status = 'cancelled', result = $2,"
                        " cancel_requested = true, updated_at = now(), finished_at = now()"
                        " WHERE id = $1",
                        task_id,
                        result,
                    )
                    await conn.execute("SELECT pg_notify($1, $2)", DONE_CHANNEL, task_id)
                    return _stored(task_id, "cancelled", result)
                await conn.execute(
                    "UPDATE runner_tasks SET cancel_requested = true WHERE id = $1", task_id
                )
                await conn.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, task_id)
                return _stored(task_id, row["status"], None)

        return await self.db.run(run)

    async def unfinished(self) -> int:
        """Tasks of the whole cluster without a terminal result."""
        return int(await self.db.fetchval("SELECT count(*) FROM runner_tasks WHERE result IS NULL"))

    async def purge(self, retention: float) -> int:
        """Delete results finished more than ``retention`` seconds ago; return how many."""
        status = await self.db.execute(
            "DELETE FROM runner_tasks WHERE finished_at < now() - make_interval(secs => $1)",
            retention,
        )
        return int(status.rsplit(" ", 1)[-1])

    # Last of the methods: ``list`` would shadow the builtin in later annotations.
    async def list(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        status: str | None = None,
        since: float | None = None,
        tag: str | None = None,
    ) -> Page:
        """Up to ``limit`` tasks of the whole cluster after ``cursor``, newest first.

        :meth:`~runner._journal.Journal.list`: ordered by accept time, then id
        (descending), keyset pages with the same opaque cursors.  Times are
        whole microseconds (what timestamptz holds), so a cursor names its
        row exactly.  Indexes serve the order and each filter
        (``runner_tasks_listed``, ``runner_tasks_listed_status``,
        ``runner_tasks_tags``; tests/test_cluster_schema.py shows the plans).
        """
        # One row more than asked says whether another page follows.
        sql, args = list_query(limit=limit + 1, cursor=cursor, status=status, since=since, tag=tag)
        rows = await self.db.fetch(sql, *args)
        tasks = [
            Listed(
                id=r[0],
                status=r[1],
                accepted_at=int(r[2]) / 1_000_000,
                finished_at=None if r[3] is None else int(r[3]) / 1_000_000,
            )
            for r in rows[:limit]
        ]
        last = tasks[-1] if len(rows) > limit and tasks else None
        return Page(
            tasks=tasks,
            next_cursor=None if last is None else encode_cursor(last.accepted_at, last.id),
        )
