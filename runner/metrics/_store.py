"""Where metric events live: the SQLite schema, the JSONL store, and import.

Two stores hold the same :class:`~runner.metrics._events.MetricEvent` records:

* **SQLite** (``metrics.store: sqlite``): table ``events``, one row per event,
  plus ``rollup``, per (provider, role, outcome) counters kept up to date in
  the same transaction as every insert, so an unfiltered summary never scans
  the events.  Times, latencies and costs are stored as integers
  (microseconds since the epoch, microseconds, nano-USD) so every sum is
  exact and independent of insertion order.  ``runs`` keeps each write
  batch's sorted latencies per (provider, role) for percentiles; every write
  also *compacts* (:class:`Compaction`): it merges a series' newest runs when
  they are all small, so events that trickle in one or two per batch do not
  leave one run per batch for the summary to unpack.
* **JSONL** (``metrics.store: jsonl``, the spill file, ``metrics export``):
  one MetricEvent JSON object per line.  A torn last line (a crash mid-write)
  is skipped with a warning; a bad line anywhere else is an error.

The schema carries its version in ``schema_version``; :data:`MIGRATIONS` is
the ordered list of steps, and opening a database applies the missing ones.
Importing (:func:`import_jsonl`) is idempotent: ``event_id`` is unique and
rows are inserted with ``INSERT OR IGNORE``.
"""

from __future__ import annotations

import sqlite3
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, TextIO

import msgspec

from runner._errors import StorageError, UsageError
from runner.metrics._events import MetricEvent

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)

#: Suffix appended to the database path to name the spill file.
SPILL_SUFFIX: Final = ".spill.jsonl"

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
        # The identity of an event for idempotent import.  Time first, so
        # inserts land at the end of the index (event ids are random; a
        # random-position index costs more than the insert itself) and the
        # same index serves --since/--until.
        "CREATE UNIQUE INDEX events_identity ON events (ts_us, event_id)",
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
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

INSERT_EVENTS: Final = (
    "INSERT OR IGNORE INTO events (event_id, task_id, provider, role, model, attempt, ts_us,"
    " latency_us, success, error_code, input_tokens, output_tokens, cost_nusd)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
LAST_ID: Final = "SELECT coalesce(max(id), 0) FROM events"
# Folds the rows inserted after id ?1 into the rollup.  Ignored duplicates get
# no id, so "id > last id before the insert" is exactly the new rows.
UPDATE_ROLLUP: Final = """
INSERT INTO rollup (provider, role, outcome, requests, latency_us_sum, latency_us_max,
                    input_tokens, output_tokens, cost_nusd)
SELECT provider, role,
       CASE WHEN success THEN '' ELSE coalesce(nullif(error_code, ''), 'unknown') END,
       count(*), sum(latency_us), max(latency_us), sum(input_tokens), sum(output_tokens),
       sum(cost_nusd)
FROM events WHERE id > ?1 GROUP BY 1, 2, 3
ON CONFLICT (provider, role, outcome) DO UPDATE SET
    requests = requests + excluded.requests,
    latency_us_sum = latency_us_sum + excluded.latency_us_sum,
    latency_us_max = max(latency_us_max, excluded.latency_us_max),
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    cost_nusd = cost_nusd + excluded.cost_nusd
"""

INSERT_RUN: Final = (
    "INSERT INTO runs (provider, role, first_id, last_id, min_ts_us, max_ts_us, requests,"
    " latency_us_sum, latency_us_max, input_tokens, output_tokens, cost_nusd, errors, latencies)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The rows a batch really added, for building runs when some were duplicates.
NEW_EVENTS: Final = (
    "SELECT id, provider, role, ts_us, latency_us, success, error_code, input_tokens,"
    " output_tokens, cost_nusd FROM events WHERE id > ?"
)

# A series' newest runs, newest first, for deciding whether to compact.
TAIL_RUNS: Final = (
    "SELECT id, requests FROM runs WHERE provider = ? AND role = ? ORDER BY id DESC LIMIT ?"
)
# The runs to merge (ids bound by :func:`_ids_sql`), in id order.
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

Row = tuple[str, str, str, str, str, int, int, int, int, str | None, int, int, int]
RunRow = tuple[str, str, int, int, int, int, int, int, int, int, int, int, str, bytes]
#: An event with its id, in :data:`NEW_EVENTS` column order.
NewEvent = tuple[int, str, str, int, int, int, str | None, int, int, int]

#: A run's columns from ``first_id`` on, in :data:`MERGE_SOURCE` order.
RunBody = tuple[int, int, int, int, int, int, int, int, int, int, str, bytes]

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(MetricEvent)
_errors_decoder: Final = msgspec.json.Decoder(dict[str, int])


class Compaction(msgspec.Struct, frozen=True, kw_only=True):
    """When a write merges a series' newest runs into one.

    A run with fewer than ``small`` events is small.  When a series' newest
    ``count`` runs are all small, they are merged into one run.  A series
    therefore ends in at most ``count - 1`` small runs.  While its batches
    are small, every earlier run holds at least ``small`` events (a merge
    still below ``small`` is merged again the next time); a big batch only
    leaves the fewer than ``count`` small runs before it as they are.  So
    the runs a summary unpacks stay few however small the write batches are.
    A merged run holds fewer than ``count * small`` events, which bounds what
    a time edge through it reads.  Each merge costs about ``small``
    latencies once every ``count - 1`` writes of the series: a few per write.
    """

    small: int = 1024
    count: int = 8


#: What writers use unless told otherwise.
DEFAULT_COMPACTION: Final = Compaction()


def spill_path(db_path: str | Path) -> Path:
    """The JSONL file that receives events SQLite could not take."""
    return Path(f"{db_path}{SPILL_SUFFIX}")


def ts_to_us(ts: datetime) -> int:
    """Microseconds since the epoch; a naive time is taken as UTC."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - EPOCH) // _ONE_US


def us_to_ts(us: int) -> datetime:
    """The UTC time ``us`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=us)


def to_row(e: MetricEvent) -> Row:
    """The ``events`` row for one event (latency to the µs, cost to the nano-USD)."""
    return (
        e.event_id,
        e.task_id,
        e.provider,
        e.role,
        e.model,
        e.attempt,
        ts_to_us(e.ts),
        round(e.latency_ms * 1000),
        1 if e.success else 0,
        e.error_code,
        e.input_tokens,
        e.output_tokens,
        round(e.cost_usd * 1e9),
    )


def pack_latencies(values: list[int]) -> bytes:
    """Sorted latencies as little-endian int64, the ``runs.latencies`` format."""
    packed = array("q", sorted(values))
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_latencies(blob: bytes, into: array[int]) -> None:
    """Append the latencies of a packed run to ``into``."""
    start = len(into)
    into.frombytes(blob)
    if sys.byteorder == "big":
        tail = into[start:]
        tail.byteswap()
        into[start:] = tail


def build_runs(items: Iterable[NewEvent]) -> list[RunRow]:
    """One run per (provider, role) from a batch's events, in id order."""
    series: dict[tuple[str, str], list[NewEvent]] = {}
    for item in items:
        events = series.get((item[1], item[2]))
        if events is None:
            series[(item[1], item[2])] = [item]
        else:
            events.append(item)
    runs: list[RunRow] = []
    for (provider, role), events in series.items():
        latencies = [e[4] for e in events]
        ts = [e[3] for e in events]
        errors: dict[str, int] = {}
        for e in events:
            if not e[5]:
                code = e[6] or "unknown"
                errors[code] = errors.get(code, 0) + 1
        runs.append(
            (
                provider,
                role,
                events[0][0],
                events[-1][0],
                min(ts),
                max(ts),
                len(events),
                sum(latencies),
                max(latencies),
                sum(e[7] for e in events),
                sum(e[8] for e in events),
                sum(e[9] for e in events),
                _encoder.encode(dict(sorted(errors.items()))).decode(),
                pack_latencies(latencies),
            )
        )
    return runs


def batch_runs(first_id: int, rows: Sequence[Row]) -> list[RunRow]:
    """The runs of a batch that was inserted whole, its ids starting at ``first_id``."""
    return build_runs(
        (first_id + i, r[2], r[3], r[6], r[7], r[8], r[9], r[10], r[11], r[12])
        for i, r in enumerate(rows)
    )


def to_merge(tail: Sequence[tuple[int, int]], compaction: Compaction) -> list[int]:
    """The ids of the runs to merge, given a series' newest runs (id, requests), newest first.

    Empty unless the newest ``compaction.count`` runs are all small.
    """
    if compaction.count < 2 or len(tail) < compaction.count:
        return []
    newest = tail[: compaction.count]
    if any(requests >= compaction.small for _, requests in newest):
        return []
    return sorted(run_id for run_id, _ in newest)


def merge_runs(bodies: Sequence[RunBody]) -> RunBody:
    """One run holding the events of consecutive runs of one series (given in id order).

    Consecutive runs of a series hold every event of the series between the
    first one's ``first_id`` and the last one's ``last_id``, so the merged
    run keeps the promise the time-edge reads rely on.
    """
    latencies: array[int] = array("q")
    errors: dict[str, int] = {}
    for body in bodies:
        unpack_latencies(body[11], latencies)
        for code, count in _errors_decoder.decode(body[10]).items():
            errors[code] = errors.get(code, 0) + count
    return (
        bodies[0][0],
        bodies[-1][1],
        min(b[2] for b in bodies),
        max(b[3] for b in bodies),
        sum(b[4] for b in bodies),
        sum(b[5] for b in bodies),
        max(b[6] for b in bodies),
        sum(b[7] for b in bodies),
        sum(b[8] for b in bodies),
        sum(b[9] for b in bodies),
        _encoder.encode(dict(sorted(errors.items()))).decode(),
        # Sorting concatenated sorted runs is a linear merge for Timsort.
        pack_latencies(latencies.tolist()),
    )


def ids_sql(template: str, ids: Sequence[int]) -> str:
    """``template`` with its ``IN ({})`` holding one placeholder per id."""
    return template.format(", ".join("?" * len(ids)))


def series_of(runs: Iterable[RunRow]) -> set[tuple[str, str]]:
    """The (provider, role) pairs a batch's runs belong to."""
    return {(r[0], r[1]) for r in runs}


def compact_series(
    conn: sqlite3.Connection, provider: str, role: str, compaction: Compaction
) -> bool:
    """Merge the series' newest runs if they are all small (see :class:`Compaction`).

    Runs inside the caller's transaction; returns whether it merged.
    """
    tail = conn.execute(TAIL_RUNS, (provider, role, compaction.count)).fetchall()
    ids = to_merge(tail, compaction)
    if not ids:
        return False
    bodies = conn.execute(ids_sql(MERGE_SOURCE, ids), ids).fetchall()
    conn.execute(MERGE_UPDATE, (*merge_runs(bodies), ids[0]))
    conn.execute(ids_sql(MERGE_DELETE, ids[1:]), ids[1:])
    return True


def from_row(r: Sequence[object]) -> MetricEvent:
    """The event an ``events`` row (in :data:`EVENT_COLUMNS` order) stands for."""
    (eid, tid, provider, role, model, attempt, ts_us, lat, ok, code, tin, tout, cost) = r
    return MetricEvent(
        event_id=str(eid),
        task_id=str(tid),
        provider=str(provider),
        role=str(role),
        model=str(model),
        attempt=int(attempt),  # type: ignore[call-overload]
        ts=us_to_ts(int(ts_us)),  # type: ignore[call-overload]
        latency_ms=int(lat) / 1000,  # type: ignore[call-overload]
        success=bool(ok),
        error_code=None if code is None else str(code),
        input_tokens=int(tin),  # type: ignore[call-overload]
        output_tokens=int(tout),  # type: ignore[call-overload]
        cost_usd=int(cost) / 1e9,  # type: ignore[call-overload]
    )


EVENT_COLUMNS: Final = (
    "event_id, task_id, provider, role, model, attempt, ts_us, latency_us, success,"
    " error_code, input_tokens, output_tokens, cost_nusd"
)


# --- SQLite -----------------------------------------------------------------


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


def tune(conn: sqlite3.Connection) -> None:
    """WAL so readers never block the writer; NORMAL sync is durable in WAL mode."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def prepare_database(path: str | Path) -> None:
    """Create the database (and its directory) if needed and migrate its schema.

    Raises :class:`sqlite3.Error` or :class:`OSError` when it cannot.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        tune(conn)
        migrate_schema(conn)
    finally:
        conn.close()


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


def insert_rows(
    conn: sqlite3.Connection,
    rows: Iterable[Row],
    *,
    compaction: Compaction | None = DEFAULT_COMPACTION,
) -> int:
    """Insert rows and fold them into the rollup in one transaction; return how many were new.

    In the same transaction, every series the batch added to is compacted
    (:class:`Compaction`); ``None`` leaves the runs as written.
    """
    rows = list(rows)
    conn.execute("BEGIN IMMEDIATE")
    try:
        (last,) = conn.execute(LAST_ID).fetchone()
        added = conn.executemany(INSERT_EVENTS, rows).rowcount
        if added == len(rows):
            runs = batch_runs(last + 1, rows)
        else:
            runs = build_runs(conn.execute(NEW_EVENTS, (last,)).fetchall())
        conn.executemany(INSERT_RUN, runs)
        conn.execute(UPDATE_ROLLUP, (last,))
        if compaction is not None:
            for provider, role in series_of(runs):
                compact_series(conn, provider, role, compaction)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return added


def import_jsonl(
    db_path: str | Path, jsonl_path: str | Path, *, stderr: TextIO | None = None
) -> tuple[int, int]:
    """Import a JSONL store into SQLite; return (events read, events added).

    Idempotent: an event whose ``event_id`` is already stored is skipped.
    """
    prepare_database(db_path)
    conn = sqlite3.connect(db_path, isolation_level=None)
    read = added = 0
    try:
        batch: list[Row] = []
        for event in read_jsonl(jsonl_path, stderr=stderr):
            batch.append(to_row(event))
            if len(batch) >= 10_000:
                added += insert_rows(conn, batch)
                read += len(batch)
                batch.clear()
        if batch:
            added += insert_rows(conn, batch)
            read += len(batch)
    finally:
        conn.close()
    return read, added


# --- JSONL ------------------------------------------------------------------


def encode_lines(events: Iterable[MetricEvent]) -> bytes:
    """Events as JSONL, one MetricEvent object per line."""
    return b"".join(_encoder.encode(e) + b"\n" for e in events)


def append_jsonl(path: str | Path, events: Sequence[MetricEvent]) -> None:
    """Append events to a JSONL store, creating it (and its directory) if needed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("ab") as f:
        f.write(encode_lines(events))


def read_jsonl(path: str | Path, *, stderr: TextIO | None = None) -> Iterator[MetricEvent]:
    """Every event of a JSONL store, streamed.

    A torn last line (no newline, not valid) is skipped with a warning on
    ``stderr``; an invalid complete line is a :class:`UsageError` naming it.
    """
    try:
        f = Path(path).open("rb")  # noqa: SIM115 - closed by the with below; the generator owns it
    except OSError as exc:
        raise StorageError(f"cannot read metrics file {path}: {exc.strerror}") from exc
    with f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield _decoder.decode(line)
            except msgspec.DecodeError as exc:
                if not line.endswith(b"\n"):
                    if stderr is not None:
                        print(
                            f"warning: {path}:{number}: skipped a torn last line ({exc})",
                            file=stderr,
                        )
                    return
                raise UsageError(f"{path}:{number}: not a metric event: {exc}") from exc
