"""The cluster database's tables, versioned, created on first start.

:data:`MIGRATIONS` is the ordered list of steps; entry ``i`` moves the schema
from version ``i`` to ``i + 1``.  :func:`migrate` applies the missing ones
under a transaction-level advisory lock, so workers starting together do not
race, and refuses a database whose version is newer than this runner knows:
an older worker must not write tables it does not understand.

Times are the server's (``now()``, ``clock_timestamp()``), never a worker's,
so leases, buckets and cooldowns do not depend on the workers' clocks
agreeing.  Metric event times are the workers' own (the attempt's wall time),
as on SQLite, stored as microseconds since the epoch.
"""

from __future__ import annotations

from typing import Final

from runner._errors import UsageError
from runner.cluster._pool import Connection, Database

#: The advisory lock key that serialises migrations (any constant is fine).
_MIGRATION_LOCK: Final = 7_347_001

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        # -- the queue and journal: one row per task id ----------------------
        """CREATE TABLE runner_tasks (
            seq bigserial NOT NULL,
            id text PRIMARY KEY,
            task text NOT NULL,
            status text NOT NULL,
            result text,
            owner text,
            claims integer NOT NULL DEFAULT 0,
            lease_until timestamptz,
            cancel_requested boolean NOT NULL DEFAULT false,
            submitted_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        )""",
        # What the next claim takes: unowned, unfinished, oldest first.
        "CREATE INDEX runner_tasks_ready ON runner_tasks (seq)"
        " WHERE result IS NULL AND owner IS NULL",
        # What the reclaim sweep looks at: leases that may have run out.
        "CREATE INDEX runner_tasks_leased ON runner_tasks (lease_until)"
        " WHERE result IS NULL AND owner IS NOT NULL",
        # The retention purge and the task list.
        "CREATE INDEX runner_tasks_finished ON runner_tasks (finished_at)"
        " WHERE finished_at IS NOT NULL",
        # -- shared provider limits ------------------------------------------
        # A token bucket: level at 'updated', refilled at 'rate' per second up
        # to 'capacity'.  Reservations may take it below zero (debt).
        """CREATE TABLE runner_buckets (
            provider text NOT NULL,
            kind text NOT NULL,
            capacity double precision NOT NULL,
            rate double precision NOT NULL,
            level double precision NOT NULL,
            updated timestamptz NOT NULL,
            PRIMARY KEY (provider, kind)
        )""",
        # One row per concurrency slot of a provider; a slot is free when it
        # has no holder or its holder's lease ran out (a dead worker).
        """CREATE TABLE runner_slots (
            provider text NOT NULL,
            slot integer NOT NULL,
            holder text,
            lease_until timestamptz,
            PRIMARY KEY (provider, slot)
        )""",
        """CREATE TABLE runner_cooldowns (
            provider text PRIMARY KEY,
            until timestamptz NOT NULL
        )""",
        # -- metric events: the SQLite store's tables, in PostgreSQL ---------
        """CREATE TABLE runner_events (
            id bigint PRIMARY KEY,
            event_id text NOT NULL,
            task_id text NOT NULL,
            provider text NOT NULL,
            role text NOT NULL,
            model text NOT NULL,
            attempt integer NOT NULL,
            ts_us bigint NOT NULL,
            latency_us bigint NOT NULL,
            success boolean NOT NULL,
            error_code text,
            input_tokens bigint NOT NULL,
            output_tokens bigint NOT NULL,
            cost_nusd bigint NOT NULL
        )""",
        "CREATE UNIQUE INDEX runner_events_identity ON runner_events (ts_us, event_id)",
        """CREATE TABLE runner_rollup (
            provider text NOT NULL,
            role text NOT NULL,
            outcome text NOT NULL,
            requests bigint NOT NULL,
            latency_us_sum bigint NOT NULL,
            latency_us_max bigint NOT NULL,
            input_tokens bigint NOT NULL,
            output_tokens bigint NOT NULL,
            cost_nusd bigint NOT NULL,
            PRIMARY KEY (provider, role, outcome)
        )""",
        """CREATE TABLE runner_runs (
            id bigserial PRIMARY KEY,
            provider text NOT NULL,
            role text NOT NULL,
            first_id bigint NOT NULL,
            last_id bigint NOT NULL,
            min_ts_us bigint NOT NULL,
            max_ts_us bigint NOT NULL,
            requests bigint NOT NULL,
            latency_us_sum bigint NOT NULL,
            latency_us_max bigint NOT NULL,
            input_tokens bigint NOT NULL,
            output_tokens bigint NOT NULL,
            cost_nusd bigint NOT NULL,
            errors text NOT NULL,
            latencies bytea NOT NULL
        )""",
        "CREATE INDEX runner_runs_series ON runner_runs (provider, role, id)",
    ),
    (
        # -- 2: the task list's indexes, the cluster-wide failure count -------
        # Each statement may run again (a database upgraded by hand, a copy
        # of the tables without runner_schema), so each says IF NOT EXISTS.
        # GET /v1/tasks pages newest first by (submitted_at, id); read
        # backwards, this index gives a page without sorting the table, and
        # a cursor or ``since`` starts the walk where the page begins.
        "CREATE INDEX IF NOT EXISTS runner_tasks_listed ON runner_tasks (submitted_at, id)",
        # ``?status=``: a rare status (running, failed) is found without
        # walking every other row.
        "CREATE INDEX IF NOT EXISTS runner_tasks_listed_status"
        " ON runner_tasks (status, submitted_at, id)",
        # ``?tag=``: the tags array of the task line (the expression must be
        # written exactly so in the query for the index to serve it).
        "CREATE INDEX IF NOT EXISTS runner_tasks_tags"
        " ON runner_tasks USING gin ((task::jsonb -> 'tags'))",
        # The consecutive failures of a provider, counted across the cluster
        # (runner.cluster._limits); 'until' is '-infinity' when it never cooled.
        "ALTER TABLE runner_cooldowns ADD COLUMN IF NOT EXISTS failures integer NOT NULL DEFAULT 0",
    ),
    # -- 3: metric events carry their task's tags, as on SQLite (schema version 3
    # there): |a|b| or '', read by summaries with a tag filter or by tag.  A
    # constant default rewrites nothing (PostgreSQL 11 and later).
    ("ALTER TABLE runner_events ADD COLUMN IF NOT EXISTS tags text NOT NULL DEFAULT ''",),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


async def schema_version(conn: Connection) -> int:
    """The database's schema version (0 for a database runner never used)."""
    exists = await conn.fetchval("SELECT to_regclass('runner_schema') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM runner_schema"))


def newer_schema(name: str, version: int) -> UsageError:
    """The refusal for a database written by a newer runner."""
    return UsageError(
        f"the cluster database {name} has schema version {version}, newer than this runner"
        f" understands ({SCHEMA_VERSION}); upgrade runner on this machine"
    )


async def migrate(db: Database, *, target: int = SCHEMA_VERSION) -> int:
    """Create or upgrade the tables up to ``target``; return the version found.

    Raises :class:`UsageError` when the database is newer than this runner.
    """

    async def run(conn: Connection) -> int:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            found = await schema_version(conn)
            if found > SCHEMA_VERSION:
                raise newer_schema(db.name, found)
            await conn.execute("CREATE TABLE IF NOT EXISTS runner_schema (version integer)")
            for version in range(found + 1, target + 1):
                for statement in MIGRATIONS[version - 1]:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO runner_schema (version) VALUES ($1)", version)
            return found

    return await db.run(run)


async def check_readable(db: Database) -> None:
    """Refuse a database runner has not set up, or one newer than this runner."""

    async def run(conn: Connection) -> int:
        return await schema_version(conn)

    found = await db.run(run)
    if found == 0:
        raise UsageError(
            f"the cluster database {db.name} holds no runner data yet; start a worker with"
            " this cluster.database first"
        )
    if found > SCHEMA_VERSION:
        raise newer_schema(db.name, found)
