"""Metric events in the cluster database, and the same summaries as on SQLite.

The tables mirror the SQLite store's (:mod:`runner.metrics._store`):
``runner_events`` one row per event, ``runner_rollup`` the per (provider,
role, outcome) counters, ``runner_runs`` each write batch's sorted latencies
per series, compacted the same way.  Each worker's writer writes its own
batches; a transaction-level advisory lock makes the writes of the cluster
take turns, because a run's promise ("every event of the series with an id
in the run's range is in the run") needs each batch's ids to be one block.
Batches are a few thousand events, so taking turns costs little.

:func:`summarize` is :func:`runner.metrics._query.summarize_db` over these
tables, with the same integer arithmetic and the same row type, so a summary
over the cluster equals the SQLite one for the same events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import asyncpg
import msgspec

from runner._errors import StorageError
from runner.cluster._pool import TRANSIENT, Connection, Database
from runner.metrics._events import MetricEvent, from_row, join_tags, to_row, ts_to_us
from runner.metrics._query import (
    Filters,
    Grouping,
    Key,
    SummaryRow,
    TagSummary,
    _Group,
    _rows,
    tagged,
)
from runner.metrics._runs import (
    DEFAULT_COMPACTION,
    Compaction,
    RunBody,
    batch_runs,
    build_runs,
    merge_runs,
    series_of,
    to_merge,
    unpack_latencies,
)

#: Serialises metric writes across the cluster (see the module docstring).
_WRITE_LOCK: Final = 7_347_003
#: Seconds a batch write keeps retrying a lost connection before the writer spills it.
WRITE_RETRY: Final = 30.0

_INSERT: Final = """
INSERT INTO runner_events (id, event_id, task_id, provider, role, model, attempt, ts_us,
                           latency_us, success, error_code, input_tokens, output_tokens, cost_nusd,
                           tags)
SELECT $1::bigint + ord, event_id, task_id, provider, role, model, attempt, ts_us, latency_us,
       success, error_code, input_tokens, output_tokens, cost_nusd, tags
FROM unnest(
    $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::bigint[],
    $9::bigint[], $10::bool[], $11::text[], $12::bigint[], $13::bigint[], $14::bigint[],
    $15::text[]
) WITH ORDINALITY AS e(event_id, task_id, provider, role, model, attempt, ts_us, latency_us,
                       success, error_code, input_tokens, output_tokens, cost_nusd, tags, ord)
ON CONFLICT (ts_us, event_id) DO NOTHING
"""
_INSERT_RUNS: Final = """
INSERT INTO runner_runs (provider, role, first_id, last_id, min_ts_us, max_ts_us, requests,
                         latency_us_sum, latency_us_max, input_tokens, output_tokens, cost_nusd,
                         errors, latencies)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
"""
_ADD_ROLLUP: Final = """
INSERT INTO runner_rollup AS r (provider, role, outcome, requests, latency_us_sum, latency_us_max,
                                input_tokens, output_tokens, cost_nusd)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (provider, role, outcome) DO UPDATE SET
    requests = r.requests + excluded.requests,
    latency_us_sum = r.latency_us_sum + excluded.latency_us_sum,
    latency_us_max = greatest(r.latency_us_max, excluded.latency_us_max),
    input_tokens = r.input_tokens + excluded.input_tokens,
    output_tokens = r.output_tokens + excluded.output_tokens,
    cost_nusd = r.cost_nusd + excluded.cost_nusd
"""
_TAIL_RUNS: Final = (
    "SELECT id, requests FROM runner_runs WHERE provider = $1 AND role = $2"
    " ORDER BY id DESC LIMIT $3"
)
_MERGE_SOURCE: Final = (
    "SELECT first_id, last_id, min_ts_us, max_ts_us, requests, latency_us_sum, latency_us_max,"
    " input_tokens, output_tokens, cost_nusd, errors, latencies FROM runner_runs"
    " WHERE id = ANY($1::bigint[]) ORDER BY id"
)
_MERGE_UPDATE: Final = (
    "UPDATE runner_runs SET first_id = $1, last_id = $2, min_ts_us = $3, max_ts_us = $4,"
    " requests = $5, latency_us_sum = $6, latency_us_max = $7, input_tokens = $8,"
    " output_tokens = $9, cost_nusd = $10, errors = $11, latencies = $12 WHERE id = $13"
)

_EVENT_COLUMNS: Final = (
    "event_id, task_id, provider, role, model, attempt, ts_us, latency_us, success::int,"
    " error_code, input_tokens, output_tokens, cost_nusd, tags"
)
_NEW_EVENTS: Final = f"SELECT id, {_EVENT_COLUMNS} FROM runner_events WHERE id > $1 ORDER BY id"  # noqa: S608 - a fixed column list
_decode_errors: Final = msgspec.json.Decoder(dict[str, int])


class PgEventStore:
    """The metrics writer's store in cluster mode (asyncio only).

    An :class:`~runner.metrics._store.EventStore`: a batch is one transaction,
    idempotent by ``(ts_us, event_id)``, and its runs and rollup rows come
    from :func:`runner.metrics._runs.build_runs`, the function the SQLite
    store uses, so both give the same figures.
    """

    def __init__(self, db: Database, *, compaction: Compaction | None = DEFAULT_COMPACTION) -> None:
        self._db = db
        self.name = db.name
        self._compaction = compaction

    async def write(self, events: Sequence[MetricEvent]) -> int:
        """Store the batch (known event ids are skipped); return how many were new.

        A database that does not take it raises
        :class:`~runner._errors.StorageError` (the cause chained), which the
        writer retries and then spills to its JSONL file.
        """
        if not events:
            return 0
        rows = [to_row(e) for e in events]
        columns = [list(c) for c in zip(*rows, strict=True)]
        columns[8] = [bool(v) for v in columns[8]]

        async def run(conn: Connection) -> int:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _WRITE_LOCK)
                last = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM runner_events"))
                status = await conn.execute(_INSERT, last, *columns)
                added = int(status.rsplit(" ", 1)[-1])
                if added == len(rows):
                    runs, rollup = batch_runs(last + 1, rows)
                else:  # some were stored already (a re-sent batch): runs from what was added
                    fetched = await conn.fetch(_NEW_EVENTS, last)
                    runs, rollup = build_runs(
                        [int(f[0]) for f in fetched], [tuple(f[1:]) for f in fetched]
                    )
                if runs:
                    await conn.executemany(_INSERT_RUNS, runs)
                if rollup:
                    await conn.executemany(_ADD_ROLLUP, rollup)
                if self._compaction is not None:
                    for provider, role in series_of(runs):
                        await _compact(conn, provider, role, self._compaction)
                return added

        try:
            return await self._db.run(run, retry_for=WRITE_RETRY)
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            raise StorageError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        return None


async def _compact(conn: Connection, provider: str, role: str, compaction: Compaction) -> None:
    tail = [
        (int(r[0]), int(r[1]))
        for r in await conn.fetch(_TAIL_RUNS, provider, role, compaction.count)
    ]
    ids = to_merge(tail, compaction)
    if not ids:
        return
    bodies: list[RunBody] = [tuple(r) for r in await conn.fetch(_MERGE_SOURCE, ids)]
    await conn.execute(_MERGE_UPDATE, *merge_runs(bodies), ids[0])
    await conn.execute("DELETE FROM runner_runs WHERE id = ANY($1::bigint[])", ids[1:])


def _where(filters: Filters, *, events: bool = False) -> tuple[list[str], list[object]]:
    """Clauses and parameters for the provider and role filters; with ``events``, also
    the time and tag filters (which only ``runner_events`` can answer)."""
    clauses: list[str] = []
    params: list[object] = []
    if filters.provider is not None:
        params.append(filters.provider)
        clauses.append(f"provider = ${len(params)}")
    if filters.role is not None:
        params.append(filters.role)
        clauses.append(f"role = ${len(params)}")
    if events:
        if filters.since is not None:
            params.append(ts_to_us(filters.since))
            clauses.append(f"ts_us >= ${len(params)}")
        if filters.until is not None:
            params.append(ts_to_us(filters.until))
            clauses.append(f"ts_us < ${len(params)}")
        for tag in filters.tags:
            params.append(join_tags((tag,)))
            clauses.append(f"strpos(tags, ${len(params)}) > 0")  # exact: see join_tags
    return clauses, params


async def count_events(db: Database) -> int:
    """How many events the cluster holds (from the rollup)."""
    return int(await db.fetchval("SELECT coalesce(sum(requests), 0) FROM runner_rollup"))


async def summarize(db: Database, filters: Filters, grouping: Grouping) -> list[SummaryRow]:
    """The summary of the cluster's events; the same rows ``summarize_db`` gives on SQLite."""

    async def run(conn: Connection) -> list[SummaryRow]:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await _summarize(conn, filters, grouping)

    return await db.run(run)


async def _summarize(conn: Connection, filters: Filters, grouping: Grouping) -> list[SummaryRow]:
    if tagged(filters, grouping):
        return await _summarize_tagged(conn, filters, grouping)
    timed = filters.since is not None or filters.until is not None
    groups: dict[Key, _Group] = {}

    def group(provider: str, role: str) -> _Group:
        k = (provider if grouping.provider else None, role if grouping.role else None)
        g = groups.get(k)
        if g is None:
            g = groups[k] = _Group()
        return g

    clauses, params = _where(filters)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    if not timed:
        rollup = (
            "SELECT provider, role, outcome, requests, latency_us_sum, latency_us_max,"  # noqa: S608 - fixed fragments, values bound
            " input_tokens, output_tokens, cost_nusd FROM runner_rollup" + where
        )
        for r in await conn.fetch(rollup, *params):
            group(r[0], r[1]).add(r[2], r[3], r[4], r[5], r[6], r[7], r[8])
    since = ts_to_us(filters.since) if filters.since is not None else -(2**63)
    until = ts_to_us(filters.until) if filters.until is not None else 2**63 - 1
    if timed:
        n = len(params)
        clauses.append(f"max_ts_us >= ${n + 1} AND min_ts_us < ${n + 2}")
        params += [since, until]
    runs_where = " WHERE " + " AND ".join(clauses) if clauses else ""
    straddling: list[tuple[int, int, str, str]] = []
    runs = (
        "SELECT provider, role, first_id, last_id, min_ts_us, max_ts_us, requests,"  # noqa: S608 - fixed fragments, values bound
        " latency_us_sum, latency_us_max, input_tokens, output_tokens, cost_nusd, errors,"
        " latencies FROM runner_runs" + runs_where
    )
    for r in await conn.fetch(runs, *params):
        provider, role, first, last, lo, hi, n_events = r[0], r[1], r[2], r[3], r[4], r[5], r[6]
        if lo < since or hi >= until:
            straddling.append((first, last, provider, role))
            continue
        g = group(provider, role)
        unpack_latencies(r[13], g.latencies)
        if timed:
            g.add("", n_events, r[7], r[8], r[9], r[10], r[11])
            for code, count in _decode_errors.decode(r[12]).items():
                g.errors[code] = g.errors.get(code, 0) + count
    # A run straddling a time edge holds every event of its series in its id
    # range, so reading that range with the time filter replaces it exactly.
    for first, last, provider, role in straddling:
        g = group(provider, role)
        edge = (first, last, provider, role, since, until)
        for r in await conn.fetch(
            "SELECT CASE WHEN success THEN '' ELSE coalesce(nullif(error_code, ''), 'unknown')"
            " END, count(*), sum(latency_us)::bigint, max(latency_us), sum(input_tokens)::bigint,"
            " sum(output_tokens)::bigint, sum(cost_nusd)::bigint FROM runner_events"
            " WHERE id BETWEEN $1 AND $2 AND provider = $3 AND role = $4"
            " AND ts_us >= $5 AND ts_us < $6 GROUP BY 1",
            *edge,
        ):
            g.add(r[0], r[1], r[2], r[3], r[4], r[5], r[6])
        g.latencies.extend(
            v
            for (v,) in await conn.fetch(
                "SELECT latency_us FROM runner_events WHERE id BETWEEN $1 AND $2"
                " AND provider = $3 AND role = $4 AND ts_us >= $5 AND ts_us < $6",
                *edge,
            )
        )
    return _rows({k: g for k, g in groups.items() if g.requests})


# runner.metrics._query.TAGGED_CELLS in PostgreSQL: the same cells, the same text.
_TAGGED_CELLS: Final = (
    "SELECT provider, role, tags,"
    " CASE WHEN success THEN '' ELSE coalesce(nullif(error_code, ''), 'unknown') END,"
    " count(*), sum(latency_us)::bigint, max(latency_us), sum(input_tokens)::bigint,"
    " sum(output_tokens)::bigint, sum(cost_nusd)::bigint, string_agg(latency_us::text, ',')"
    " FROM runner_events{where} GROUP BY 1, 2, 3, 4"
)


async def _summarize_tagged(
    conn: Connection, filters: Filters, grouping: Grouping
) -> list[SummaryRow]:
    """A summary with a tag filter or by tag: the matching events, aggregated per cell."""
    clauses, params = _where(filters, events=True)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    summary = TagSummary(grouping)
    summary.add_cells(await conn.fetch(_TAGGED_CELLS.format(where=where), *params))
    return summary.rows()


async def export(
    db: Database, filters: Filters, *, chunk: int = 5000
) -> AsyncIterator[MetricEvent]:
    """Every matching event of the cluster, in time order, streamed through a cursor."""
    clauses, params = _where(filters, events=True)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    sql = f"SELECT {_EVENT_COLUMNS} FROM runner_events{where} ORDER BY ts_us, event_id"  # noqa: S608 - fixed fragments, values bound
    conn: Any
    async with db._pool.acquire() as conn, conn.transaction(readonly=True):
        async for row in conn.cursor(sql, *params, prefetch=chunk):
            yield from_row(tuple(row))


__all__ = ["PgEventStore", "count_events", "export", "summarize"]
