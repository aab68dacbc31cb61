"""The SQLite event store: schema, the one write transaction, the writer's store, import.

Tables:

* ``events``: one row per event.  Times, latencies and costs are integers
  (µs since the epoch, µs, nano-USD) so every sum is exact and independent
  of insertion order.
* ``rollup``: per (provider, role, outcome) counters, updated in the same
  transaction as every insert, so an unfiltered summary never scans events.
* ``runs``: each write batch's sorted latencies and totals per series
  (:mod:`runner.metrics._runs`), compacted as events trickle in.

Events carry their task's tags in ``events.tags`` (schema version 3); a
summary with tags reads events (:class:`runner.metrics._query.TagSummary`).

**The one transaction.**  :func:`store_rows` is the only code that writes
events.  The writer's store runs it through :func:`write_events`, one batch
per call: in a child process
(:class:`~runner.metrics._writer_process.ProcessStore`), or in a worker
thread through the :class:`~runner._owner.OwnedConnection` its task owns
(:class:`SqliteStore`); ``metrics migrate`` (:func:`import_jsonl`) calls
it synchronously with every batch of the file in one call, so one
transaction.  It is idempotent:
``(ts_us, event_id)`` is unique and rows are inserted with ``INSERT OR
IGNORE``, so a re-sent batch adds nothing (a re-sent event has its time).
Time comes first in that key so inserts land at the end of the index.

Into a database with no events yet, a bulk import drops the unique index,
loads, and builds the index once at the end (a duplicate within the file is
then removed before the index is built, and the runs are rebuilt).

The schema carries its version in ``schema_version``; :data:`MIGRATIONS` is
the ordered list of steps, and opening a database applies the missing ones.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Final, cast

import anyio
import anyio.to_thread
import msgspec
from msgspec import Struct

from runner._errors import StorageError
from runner._owner import OwnedConnection
from runner.metrics._events import EVENT_COLUMNS, MetricEvent, Row, to_row
from runner.metrics._jsonl import OnTorn, reason
from runner.metrics._reader import CHILD_THRESHOLD, NEVER, read_rows_fast
from runner.metrics._runs import (
    DEFAULT_COMPACTION,
    Compaction,
    Prepared,
    RollupRow,
    RunBody,
    RunRow,
    batch_runs,
    build_runs,
    merge_runs,
    series_of,
    to_merge,
)

_json: Final = msgspec.json.Encoder()
_tails_decoder: Final = msgspec.json.Decoder(list[tuple[int, int, int]])

#: Seconds SQLite waits on a locked database before a write counts as failed.
BUSY_TIMEOUT: Final = 5.0
#: Rows per ``executemany`` when importing.
IMPORT_BATCH: Final = 50_000
#: Rows per multi-row ``INSERT``, largest first: a batch goes in as the fewest
#: statements these sizes add up to (sizes above SQLite's variable limit skipped),
#: and each size's statement is prepared once per connection.
INSERT_SIZES: Final = (1024, 256, 64, 16, 4, 1)
#: The writer's full batch (``runner.metrics._writer.DEFAULT_BATCH``), which a
#: writer whose thread waits for the GIL stores in one statement: see
#: :class:`SqliteStore`.
WHOLE_BATCH: Final = 5_000
#: Seconds a batch's write may spend waiting, beyond its CPU time, before the
#: writer counts its thread as starved of the GIL (an uncontended batch waits
#: a few milliseconds at most; a starved one waited 100-300 ms).
STARVED_WAIT: Final = 0.05

# The identity of an event for idempotent writes.  Part of schema version 1,
# and built again by a bulk import into an empty database.
IDENTITY_INDEX: Final = "CREATE UNIQUE INDEX events_identity ON events (ts_us, event_id)"

#: Each entry moves the schema from version ``i`` to ``i + 1``.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            ts_us INTEGER NOT NULL,
            latency_us INTEGER NOT NULL,
            success INTEGER NOT NULL,
            error_code TEXT,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cost_nusd INTEGER NOT NULL
        )""",
        # Time first, so inserts land at the end of the index (event ids are
        # random; a random-position index costs more than the insert itself)
        # and the same index serves --since/--until.
        IDENTITY_INDEX,
        # outcome is '' for a success, else the error code ('unknown' if none).
        """CREATE TABLE rollup (
            provider TEXT NOT NULL,
            role TEXT NOT NULL,
            outcome TEXT NOT NULL,
            requests INTEGER NOT NULL,
            latency_us_sum INTEGER NOT NULL,
            latency_us_max INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cost_nusd INTEGER NOT NULL,
            PRIMARY KEY (provider, role, outcome)
        ) WITHOUT ROWID""",
        # One row per (write batch, provider, role): that batch's totals,
        # failures by code (JSON) and latencies, sorted and packed as
        # little-endian int64 microseconds.  Percentiles merge these runs
        # instead of sorting events or keeping a latency index (whose
        # random-position inserts halve write speed); time-filtered summaries
        # add up the runs inside the window.  Every event of the series with
        # an id in [first_id, last_id] is in the run, so a run straddling a
        # time edge is replaced by its events, read by id range.
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            role TEXT NOT NULL,
            first_id INTEGER NOT NULL,
            last_id INTEGER NOT NULL,
            min_ts_us INTEGER NOT NULL,
            max_ts_us INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            latency_us_sum INTEGER NOT NULL,
            latency_us_max INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cost_nusd INTEGER NOT NULL,
            errors TEXT NOT NULL,
            latencies BLOB NOT NULL
        )""",
    ),
    # Compaction looks up a series' newest runs after every write; the index
    # (with the implicit rowid) gives them newest first without a scan.
    ("CREATE INDEX runs_series ON runs (provider, role)",),
    # The task's tags, as |a|b| (runner.metrics._events.join_tags), '' for
    # none: a summary with tags filters with instr() and reads events, so
    # the rollup and runs stay as they are.  A column with a constant
    # default rewrites nothing, so an old database migrates at once; its
    # events read as untagged.
    ("ALTER TABLE events ADD COLUMN tags TEXT NOT NULL DEFAULT ''",),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

INSERT_EVENTS: Final = (
    "INSERT OR IGNORE INTO events (event_id, task_id, provider, role, model, attempt, ts_us,"
    " latency_us, success, error_code, input_tokens, output_tokens, cost_nusd, tags)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, nullif(?, 0), ?, ?, ?, ?)"
)
#: What the writer binds for a missing error code: the integer 0, stored as
#: NULL by :data:`INSERT_EVENTS`.  sqlite3 looks up an adapter for every None
#: it binds (several thousand instructions, in the writer's thread, holding
#: the GIL), not for an int; and no error code (a str, '' included) equals 0.
_NO_CODE: Final = cast(str, 0)
LAST_ID: Final = "SELECT coalesce(max(id), 0) FROM events"
_COLUMNS: Final = INSERT_EVENTS.count("?")
_INTO_ROLLUP: Final = """
INSERT INTO rollup (provider, role, outcome, requests, latency_us_sum, latency_us_max,
                    input_tokens, output_tokens, cost_nusd)"""
_ADD_TO_ROLLUP: Final = """
ON CONFLICT (provider, role, outcome) DO UPDATE SET
    requests = requests + excluded.requests,
    latency_us_sum = latency_us_sum + excluded.latency_us_sum,
    latency_us_max = max(latency_us_max, excluded.latency_us_max),
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    cost_nusd = cost_nusd + excluded.cost_nusd
"""
# Adds a batch's figures (from runner.metrics._runs.build_runs) to the rollup.
ADD_ROLLUP: Final = f"{_INTO_ROLLUP}\nVALUES (?, ?, ?, ?, ?, ?, ?, ?, ?){_ADD_TO_ROLLUP}"

INSERT_RUN: Final = (
    "INSERT INTO runs (provider, role, first_id, last_id, min_ts_us, max_ts_us, requests,"
    " latency_us_sum, latency_us_max, input_tokens, output_tokens, cost_nusd, errors, latencies)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The rows added after an id, with their ids: for building runs when a batch
# held duplicates (their ids are then not consecutive positions of the batch).
NEW_EVENTS: Final = f"SELECT id, {EVENT_COLUMNS} FROM events WHERE id > ? ORDER BY id"  # noqa: S608 - a fixed column list

# A series' newest runs, newest first, for deciding whether to compact.
TAIL_RUNS: Final = (
    "SELECT id, requests FROM runs WHERE provider = ? AND role = ? ORDER BY id DESC LIMIT ?"
)

# --- a batch's figures in a fixed number of statements -----------------------
#
# Python's sqlite3 releases the GIL around every step, reset and prepare.
# While the event loop's thread is busy, the writer's thread then waits a
# switch interval (5 ms) to get it back, each time: a batch that took one
# statement per run, per rollup row and per run read back for compaction
# spent most of its time waiting.  These take all of a batch's runs (rollup
# rows, series) as one JSON text (msgspec-encoded ints, strings and nulls:
# exact) and one statement each.  The ORDER BY in the subquery makes
# json_each's rows arrive in order; as a co-routine, each row's text is
# rendered once rather than once per column.  (The events themselves stay
# bound, many to a statement: as JSON, SQLite parsing every event's text
# again for each column cost half as much again as the whole write did;
# docs/benchmarks.md, issue 13, fifth pass.)

#: A batch of up to this many events takes the plain statements, a row (or a
#: series) each: SQLite runs them faster than the JSON ones, and a small batch
#: comes from a writer that is not busy, so the GIL is there for the taking.
SMALL_BATCH: Final = 256
#: A batch's runs: ``?1`` is the JSON array of each run's columns up to ``errors``
#: followed by where its latencies start in ``?2`` (1-based) and their length;
#: ``?2`` is every run's latencies, concatenated.
INSERT_RUNS: Final = (
    "INSERT INTO runs (provider, role, first_id, last_id, min_ts_us, max_ts_us, requests,"
    " latency_us_sum, latency_us_max, input_tokens, output_tokens, cost_nusd, errors, latencies)"
    " SELECT v->>0, v->>1, v->>2, v->>3, v->>4, v->>5, v->>6, v->>7, v->>8, v->>9, v->>10,"
    " v->>11, v->>12, substr(?2, v->>13, v->>14)"
    " FROM (SELECT key, value AS v FROM json_each(?1) ORDER BY key)"
)
#: A batch's rollup rows (:data:`ADD_ROLLUP`), ``?`` the JSON array of them.
#: ``WHERE true`` tells the parser the ON CONFLICT is the upsert, not a join's ON.
_FROM_JSON_ROWS: Final = (
    "\nSELECT v->>0, v->>1, v->>2, v->>3, v->>4, v->>5, v->>6, v->>7, v->>8"
    "\nFROM (SELECT value AS v FROM json_each(?)) WHERE true"
)
ADD_ROLLUPS: Final = f"{_INTO_ROLLUP}{_FROM_JSON_ROWS}{_ADD_TO_ROLLUP}"
#: :data:`TAIL_RUNS` of every series in ``?1`` (a JSON array of [provider, role])
#: at once, as one row: a JSON array of [series position, run id, requests].
#: One row, because every row fetched is a step of its own.
TAILS: Final = (
    "SELECT json_group_array(json_array(s.key, r.id, r.requests))"
    " FROM json_each(?1) AS s JOIN runs AS r ON r.id IN"
    " (SELECT id FROM runs WHERE provider = s.value->>0 AND role = s.value->>1"
    " ORDER BY id DESC LIMIT ?2)"
)
# The runs to merge (ids bound by :func:`ids_sql`), in id order.
MERGE_SOURCE: Final = (
    "SELECT first_id, last_id, min_ts_us, max_ts_us, requests, latency_us_sum, latency_us_max,"
    " input_tokens, output_tokens, cost_nusd, errors, latencies FROM runs WHERE id IN ({})"
    " ORDER BY id"
)
MERGE_UPDATE: Final = (
    "UPDATE runs SET first_id = ?, last_id = ?, min_ts_us = ?, max_ts_us = ?, requests = ?,"
    " latency_us_sum = ?, latency_us_max = ?, input_tokens = ?, output_tokens = ?,"
    " cost_nusd = ?, errors = ?, latencies = ? WHERE id = ?"
)
MERGE_DELETE: Final = "DELETE FROM runs WHERE id IN ({})"
# Keeps the first copy of each (ts_us, event_id) added after id ?1.
_DEDUPLICATE: Final = (
    "DELETE FROM events WHERE id > ?1 AND id NOT IN"
    " (SELECT min(id) FROM events WHERE id > ?1 GROUP BY ts_us, event_id)"
)


def ids_sql(template: str, ids: Sequence[int]) -> str:
    """``template`` with its ``IN ({})`` holding one placeholder per id."""
    return template.format(", ".join("?" * len(ids)))


# --- the schema -------------------------------------------------------------


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database (0 for an empty one)."""
    has = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if has is None:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate_schema(conn: sqlite3.Connection) -> None:
    """Bring the schema up to :data:`SCHEMA_VERSION`, each step in its own transaction."""
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"metrics database schema version {version} is newer than this runner"
            f" understands ({SCHEMA_VERSION}); upgrade runner"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        with conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            for statement in MIGRATIONS[target - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection for writing: the file (and directory) created, WAL, schema migrated.

    ``check_same_thread=False`` because the owner runs each call in whichever
    worker thread anyio gives it, one at a time.  Raises
    :class:`sqlite3.Error` or :class:`OSError` when it cannot.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, isolation_level=None, timeout=BUSY_TIMEOUT, check_same_thread=False
    )
    try:
        # WAL so readers never block the writer; NORMAL sync is durable in WAL mode.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        migrate_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def prepare_database(path: str | Path) -> None:
    """Create the database (and its directory) if needed and migrate its schema."""
    connect(path).close()


def open_for_reading(path: str | Path) -> sqlite3.Connection:
    """An existing metrics database, migrated, for queries.

    A missing file is a :class:`StorageError` that says how to create one.
    """
    if not Path(path).is_file():
        raise StorageError(
            f"no metrics database at {path}; run 'python -m runner submit' with"
            " metrics.store: sqlite to create it, or import a JSONL store with"
            f" 'python -m runner metrics migrate FILE.jsonl --db {path}'"
        )
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        migrate_schema(conn)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read metrics database {path}: {exc}") from exc
    return conn


# --- the one write transaction ------------------------------------------------


def _merge(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Merge the runs ``ids`` (one series' newest, in id order) into the first of them."""
    bodies: list[RunBody] = conn.execute(ids_sql(MERGE_SOURCE, ids), ids).fetchall()
    conn.execute(MERGE_UPDATE, (*merge_runs(bodies), ids[0]))
    conn.execute(ids_sql(MERGE_DELETE, ids[1:]), ids[1:])


def compact(
    conn: sqlite3.Connection,
    series: Sequence[tuple[str, str]],
    compaction: Compaction,
    *,
    one_query: bool = True,
) -> int:
    """Merge each series' newest runs if they are all small (see :class:`Compaction`).

    One query reads every series' newest runs (``one_query``; else one
    query a series); only a series that merges costs statements of its own.
    Runs inside the caller's transaction; returns how many series merged.
    """
    tails: list[list[tuple[int, int]]]
    if not one_query:
        tails = [conn.execute(TAIL_RUNS, (*s, compaction.count)).fetchall() for s in series]
    else:
        (found,) = conn.execute(TAILS, (_json.encode(series), compaction.count)).fetchone()
        tails = [[] for _ in series]
        for position, run_id, requests in _tails_decoder.decode(found):
            tails[position].append((run_id, requests))
        for tail in tails:
            tail.sort(reverse=True)  # newest first, as to_merge takes them
    merged = 0
    for tail in tails:
        if ids := to_merge(tail, compaction):
            _merge(conn, ids)
            merged += 1
    return merged


def _new_figures(
    conn: sqlite3.Connection, after: int
) -> Iterator[tuple[list[RunRow], list[RollupRow]]]:
    """Runs and rollup rows of every event added after id ``after``, read back in chunks."""
    cur = conn.execute(NEW_EVENTS, (after,))
    while chunk := cur.fetchmany(IMPORT_BATCH):
        yield build_runs([r[0] for r in chunk], [r[1:] for r in chunk])


def _exact(payload: bytes) -> bool:
    """Whether SQLite's JSON functions read back every string of ``payload`` whole.

    SQLite 3.40 ends a JSON string at an escaped NUL (``\\u0000``), which
    msgspec writes for a ``\\0`` in a string: such a batch goes through the
    statements that bind each value.  (A backslash followed by ``u0000`` in
    a string matches too; it then only takes the slower way.)
    """
    return b"\\u0000" not in payload


def _add(
    conn: sqlite3.Connection,
    runs: list[RunRow],
    rollup: list[RollupRow],
    compaction: Compaction | None,
) -> None:
    """Store a batch's runs and rollup rows, then compact its series.

    Three statements, whatever the number of series; a small batch
    (:data:`SMALL_BATCH`), or one whose JSON SQLite would not read back
    whole, takes the plain ones, a row or a series each.
    """
    packed = _packed(runs, rollup) if sum(run[6] for run in runs) > SMALL_BATCH else None
    if packed is None:
        conn.executemany(INSERT_RUN, runs)
        conn.executemany(ADD_ROLLUP, rollup)
    else:
        packed_runs, blobs, packed_rollup = packed
        conn.execute(INSERT_RUNS, (packed_runs, blobs))
        conn.execute(ADD_ROLLUPS, (packed_rollup,))
    if compaction is not None:
        compact(conn, list(series_of(runs)), compaction, one_query=packed is not None)


def _packed(runs: list[RunRow], rollup: list[RollupRow]) -> tuple[bytes, bytes, bytes] | None:
    """:data:`INSERT_RUNS`' and :data:`ADD_ROLLUPS`' arguments; ``None`` unless :func:`_exact`."""
    heads: list[tuple[object, ...]] = []
    start = 1
    for run in runs:
        heads.append((*run[:13], start, len(run[13])))
        start += len(run[13])
    packed_runs, packed_rollup = _json.encode(heads), _json.encode(rollup)
    if not (_exact(packed_runs) and _exact(packed_rollup)):
        return None
    return packed_runs, b"".join(run[13] for run in runs), packed_rollup


@functools.lru_cache(maxsize=len(INSERT_SIZES) + 1)
def _insert_many(rows: int) -> str:
    """:data:`INSERT_EVENTS` for ``rows`` rows at once."""
    head, _, values = INSERT_EVENTS.partition(" VALUES ")
    return f"{head} VALUES {', '.join([values] * rows)}"


def _insert_events(conn: sqlite3.Connection, rows: Sequence[Row], *, whole: bool = False) -> int:
    """Insert ``rows``, ignoring those stored already; return how many were new.

    Many rows to a statement, in as few statements as :data:`INSERT_SIZES`
    make up (5,000 rows: eleven).  What the sqlite3 module does per
    statement (a step, a reset, checking the parameters) cost more than a
    quarter of a bulk import's inserts when every row was a statement of its
    own; and it lets go of the GIL around every step, which the writer's
    thread waits up to a switch interval (5 ms) to get back while the event
    loop is busy: a 5,000-event batch written 128 rows to a statement (the
    rest one by one) took 300-500 ms instead of its 30 ms of CPU, and the
    writer fell behind.  With ``whole``, a batch of :data:`WHOLE_BATCH` rows
    is one statement (when SQLite's variable limit allows it).
    """
    most = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _COLUMNS
    added = start = 0
    for size in (WHOLE_BATCH, *INSERT_SIZES) if whole else INSERT_SIZES:
        if size > most:
            continue
        end = start + (len(rows) - start) // size * size
        if end == start:
            continue
        if size == 1:
            added += conn.executemany(INSERT_EVENTS, rows[start:end]).rowcount
        else:
            flat = (list(chain.from_iterable(rows[i : i + size])) for i in range(start, end, size))
            added += conn.executemany(_insert_many(size), flat).rowcount
        start = end
    return added


def store_rows(
    conn: sqlite3.Connection,
    batches: Iterable[Sequence[Row]],
    *,
    compaction: Compaction | None = DEFAULT_COMPACTION,
    bulk: bool = False,
    whole: bool = False,
) -> int:
    """Store every batch in one transaction (events, runs, rollup); return how many were new.

    The only code that writes events (the writer calls it with one batch,
    ``metrics migrate`` with a whole file).  All or nothing: on any error
    the transaction is rolled back and the error raised.  Each batch leaves
    one run per series, compacted (:class:`Compaction`; ``None`` leaves the
    runs as written).  A batch's events take a few statements
    (:func:`_insert_events`), its runs, rollup rows and compaction check
    one each (:func:`_add`).  With ``bulk`` and an empty table the unique
    index is built after the load instead of kept up to date through it.
    A :class:`~runner.metrics._runs.Prepared` batch brings its figures
    along (they are used when the whole batch was new).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        (last,) = conn.execute(LAST_ID).fetchone()
        deferred = bulk and last == 0
        if deferred:
            conn.execute("DROP INDEX events_identity")
        top = last
        for rows in batches:
            added = _insert_events(conn, rows, whole=whole)
            if added == len(rows):
                if isinstance(rows, Prepared):
                    _add(conn, *rows.figures_at(top + 1), compaction)
                else:
                    _add(conn, *batch_runs(top + 1, rows), compaction)
            else:  # some were stored already (a re-sent batch): figures of what was added
                for runs, rollup in _new_figures(conn, top):
                    _add(conn, runs, rollup, compaction)
            top += added
        if deferred:
            try:
                conn.execute(IDENTITY_INDEX)
            except sqlite3.IntegrityError:  # the file held an event twice: keep the first
                conn.execute(_DEDUPLICATE, (last,))
                conn.execute(IDENTITY_INDEX)
                conn.execute("DELETE FROM runs")
                conn.execute("DELETE FROM rollup")
                for runs, rollup in _new_figures(conn, last):
                    _add(conn, runs, rollup, None)
            (top,) = conn.execute("SELECT count(*) FROM events").fetchone()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int(top - last)


# --- the writer's store -------------------------------------------------------


def write_events(
    conn: sqlite3.Connection,
    events: Sequence[MetricEvent],
    compaction: Compaction | None,
    whole: bool,
) -> tuple[int, float]:
    """Store ``events``; how many were new, and the seconds spent waiting rather than working."""
    wall, cpu = time.perf_counter(), time.thread_time()
    rows = [to_row(e, _NO_CODE) for e in events]
    added = store_rows(conn, [rows], compaction=compaction, whole=whole)
    return added, (time.perf_counter() - wall) - (time.thread_time() - cpu)


class SqliteStore:
    """The SQLite :class:`~runner.metrics._store.EventStore`: one connection, one owner.

    Every call runs :func:`store_rows` in a worker thread through an
    :class:`~runner._owner.OwnedConnection`, so it works on asyncio and trio.

    Each of a batch's statements lets go of the GIL, and while the event
    loop's thread is busy (thousands of calls in flight) the writer's thread
    waits up to a switch interval (5 ms) to get it back, every time: batches
    of 5,000 took 160-330 ms for 20-60 ms of CPU, and the writer fell behind
    for good.  Once a batch has waited more than :data:`STARVED_WAIT`
    beyond its CPU time, a full batch's events go in as one statement
    (``whole``) for the rest of the connection's life.  Not from the start:
    that statement takes 30-50 ms to prepare, which a writer that keeps up
    (its batches waiting a few milliseconds) never needs to spend.
    """

    def __init__(self, conn: OwnedConnection, path: str, compaction: Compaction | None) -> None:
        self._conn = conn
        self.name = path
        self._compaction = compaction
        #: Whether a batch's thread was starved of the GIL (see above).
        self.whole = False

    @classmethod
    async def open(
        cls, path: str | Path, *, compaction: Compaction | None = DEFAULT_COMPACTION
    ) -> SqliteStore:
        """Create or migrate the database at ``path`` and connect to it.

        Raises :class:`StorageError` when the file cannot be opened as a
        database or is from a newer runner (the message says which).
        """
        try:
            conn = await anyio.to_thread.run_sync(connect, path)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(reason(exc)) from exc
        return cls(OwnedConnection(conn), str(path), compaction)

    async def write(self, events: Sequence[MetricEvent]) -> int:
        try:
            added, waited = await self._conn.run(write_events, events, self._compaction, self.whole)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(reason(exc)) from exc
        if waited > STARVED_WAIT:
            self.whole = True
        return added

    async def aclose(self) -> None:
        await self._conn.aclose()


# --- import -------------------------------------------------------------------


class ImportReport(Struct, frozen=True, kw_only=True):
    """What ``metrics migrate`` did: events read, events new to the database, torn lines skipped."""

    read: int
    added: int
    torn: list[int]


def _journal_for_load(conn: sqlite3.Connection) -> None:
    """A rollback journal instead of WAL for loading a database that holds no events.

    WAL writes every page twice, to the log and again at the checkpoint; a
    rollback journal keeps only the pages that existed before the
    transaction (a handful in a new database; pages added need none), and
    the load stays one atomic transaction.  FULL sync, as a rollback journal
    needs to survive a power cut.  Not possible while another connection has
    the database open (a run writing to it): the load then keeps WAL.
    """
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.OperationalError:  # "database is locked": another connection has it open
        return
    conn.execute("PRAGMA synchronous=FULL")


def import_jsonl(
    db_path: str | Path,
    jsonl_path: str | Path,
    *,
    on_torn: OnTorn | None = None,
    child_threshold: int = CHILD_THRESHOLD,
) -> ImportReport:
    """Import a JSONL store into SQLite in one transaction (idempotent by event).

    Torn lines are skipped, listed in the report and told to ``on_torn``; a
    line that is JSON but not an event raises :class:`UsageError` and
    nothing is imported.  Into a database with no events yet, files of
    ``child_threshold`` bytes or more are decoded in a second process
    (:mod:`runner.metrics._reader`).
    """
    torn: list[int] = []
    read = 0

    def note(number: int, detail: str) -> None:
        torn.append(number)
        if on_torn is not None:
            on_torn(number, detail)

    def counted(batches: Iterator[list[Row]]) -> Iterator[list[Row]]:
        nonlocal read
        for batch in batches:
            read += len(batch)
            yield batch

    conn = connect(db_path)
    try:
        # A bigger page cache for one big transaction and the index built after it.
        conn.execute("PRAGMA cache_size=-65536")
        # Into a database that holds events, checking each against the unique
        # index is most of the work and the reader process would only add its
        # own: it pays off for the bulk load into an empty one.
        (last,) = conn.execute(LAST_ID).fetchone()
        threshold = child_threshold if last == 0 else NEVER
        if last == 0:
            _journal_for_load(conn)
        rows = read_rows_fast(jsonl_path, size=IMPORT_BATCH, on_torn=note, threshold=threshold)
        try:
            added = store_rows(conn, counted(rows), bulk=True)
        finally:
            rows.close()  # stops a reader process that is still running
            if last == 0:
                # Back to WAL, so readers never block the writer.  Should another
                # connection hold a lock now, the next connect() sets WAL anyway.
                with contextlib.suppress(sqlite3.OperationalError):
                    conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return ImportReport(read=read, added=added, torn=torn)
