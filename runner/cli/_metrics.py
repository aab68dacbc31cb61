"""``python -m runner metrics summary | export | migrate``.

Where the events are: ``--db PATH`` if given (a path ending in ``.jsonl`` is
read as a JSONL store, a ``postgresql://`` URL as a cluster database), else
the config's cluster database when it has one, else its ``metrics.path``
(found as every command finds its config).  An empty store, or filters that match nothing,
say so on stderr and exit 0 (``--format json`` still prints ``[]``); a
missing store, a bad ``--since``/``--until``/``--group-by`` is exit 2 with
one message (raised as :class:`UsageError`, turned into the exit code by
``runner.cli._main``).
"""

from __future__ import annotations

import argparse
import csv
import sqlite3
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio
import msgspec

from runner._errors import UsageError
from runner.cli._tables import Column, print_table
from runner.metrics._events import MetricEvent
from runner.metrics._jsonl import EventLine, OnTorn, encode_line, read_jsonl, to_line
from runner.metrics._query import (
    Filters,
    Grouping,
    SummaryRow,
    count_events,
    export_db,
    parse_grouping,
    parse_tag,
    parse_time,
    summarize_db,
    summarize_events,
)
from runner.metrics._sqlite import import_jsonl, open_for_reading

if TYPE_CHECKING:
    from rich.console import Console

    from runner.cluster._pool import Database

_EVENT_FIELDS = EventLine.__struct_fields__
_encoder = msgspec.json.Encoder()


def _warn_torn(path: str | Path) -> OnTorn:
    """Where a JSONL reader reports the torn lines it skips: a warning each, on stderr."""

    def warn(number: int, detail: str) -> None:
        print(f"warning: {path}:{number}: skipped a torn line ({detail})", file=sys.stderr)

    return warn


def _is_postgres(text: str) -> bool:
    """Whether ``text`` is a PostgreSQL URL rather than a file.

    A URL has a scheme and so a colon; a path seldom has one.  Without it,
    the cluster's module (and asyncpg with it) is not imported: that import
    was a fifth of a ``metrics summary`` over a million SQLite events.
    """
    if ":" not in text:
        return False
    from runner.cluster._pool import is_postgres_url

    return is_postgres_url(text)


def _store(args: argparse.Namespace) -> tuple[str, str]:
    """(kind, path) of the store to read: ``--db`` or the config's.

    ``kind`` is ``sqlite``, ``jsonl`` or ``postgres`` (then ``path`` is the URL).
    """
    if args.db:
        if _is_postgres(args.db):
            return "postgres", args.db
        return ("jsonl" if args.db.endswith(".jsonl") else "sqlite"), args.db
    from runner.cli._main import notice
    from runner.config._load import discover_stores

    # Only the metrics: and cluster: sections are read: no provider key is needed.
    source, metrics, cluster = discover_stores(args.config, notice=notice)
    if cluster.database:
        return "postgres", cluster.database
    if metrics.store == "none":
        raise UsageError(
            f"metrics are off in {source} (metrics.store: none), so none were"
            " recorded; pass --db PATH to read a metrics database"
        )
    return metrics.store, metrics.path


def _filters(args: argparse.Namespace) -> Filters:
    now = datetime.now(UTC)
    since = parse_time(args.since, now=now) if args.since else None
    until = parse_time(args.until, now=now) if args.until else None
    if since is not None and until is not None and since >= until:
        raise UsageError(f"--since {since.isoformat()} is not before --until {until.isoformat()}")
    tags = tuple(dict.fromkeys(parse_tag(t) for t in args.tag))
    return Filters(provider=args.provider, role=args.role, since=since, until=until, tags=tags)


def _missing_jsonl(path: str) -> UsageError:
    return UsageError(
        f"no metrics file at {path}; run 'python -m runner submit' with"
        f" metrics.store: jsonl and metrics.path: {path} to create it"
    )


class _Counted:
    """An event iterable that remembers whether it yielded anything."""

    def __init__(self, events: Iterable[MetricEvent]) -> None:
        self._events = events
        self.seen = 0

    def __iter__(self) -> Iterator[MetricEvent]:
        for e in self._events:
            self.seen += 1
            yield e


def _nothing(path: str, total: int, filters: Filters) -> str:
    if total == 0:
        return f"no metric events in {path}"
    return f"no events match {filters.describe()} in {path}"


def cmd_summary(args: argparse.Namespace) -> int:
    """Print the summary as a table, JSON or CSV."""
    filters = _filters(args)
    grouping = parse_grouping(args.group_by)
    kind, path = _store(args)
    if kind == "postgres":
        from runner.cluster._pool import redact

        total, rows = anyio.run(_pg_summary, path, filters, grouping)
        path = redact(path)
    elif kind == "sqlite":
        conn = open_for_reading(path)
        try:
            total = count_events(conn)
            rows = summarize_db(conn, filters, grouping) if total else []
        finally:
            conn.close()
    else:
        if not Path(path).is_file():
            raise _missing_jsonl(path)
        counted = _Counted(read_jsonl(path, on_torn=_warn_torn(path)))
        rows = summarize_events(counted, filters, grouping)
        total = counted.seen
    if not rows:
        print(_nothing(path, total, filters), file=sys.stderr)
        if args.format == "json":
            print("[]")
        return 0
    if args.format == "json":
        print(msgspec.json.format(msgspec.json.encode(rows), indent=2).decode())
    elif args.format == "csv":
        _write_summary_csv(rows, grouping, sys.stdout)
    elif sys.stdout.isatty():
        print_rich(rows, grouping)
    else:
        _print_plain(rows, grouping, sys.stdout)
    return 0


async def _check_and_upgrade(db: Database) -> None:
    """Refuse a database runner never set up; bring an older runner's schema up to date.

    Reading needs this runner's columns (the events' tags); a worker would
    upgrade the schema the same way when it starts.
    """
    from runner.cluster._schema import SCHEMA_VERSION, check_readable, migrate, schema_version

    await check_readable(db)
    if await db.run(schema_version) < SCHEMA_VERSION:
        await migrate(db)


async def _pg_summary(
    url: str, filters: Filters, grouping: Grouping
) -> tuple[int, list[SummaryRow]]:
    from runner.cluster._metrics import count_events as pg_count
    from runner.cluster._metrics import summarize
    from runner.cluster._pool import open_database

    async with open_database(url, min_size=1, max_size=1, retry_timeout=10) as db:
        await _check_and_upgrade(db)
        total = await pg_count(db)
        return total, (await summarize(db, filters, grouping) if total else [])


async def _pg_export(url: str, filters: Filters, writer: EventWriter) -> int:
    from runner.cluster._metrics import count_events as pg_count
    from runner.cluster._metrics import export
    from runner.cluster._pool import open_database

    async with open_database(url, min_size=1, max_size=1, retry_timeout=10) as db:
        await _check_and_upgrade(db)
        async for event in export(db, filters):
            writer.add(event)
        return await pg_count(db)


async def _pg_import(url: str, source: Path) -> tuple[int, int]:
    from runner.cluster._metrics import PgEventStore
    from runner.cluster._pool import open_database
    from runner.cluster._schema import migrate

    read = added = 0
    async with open_database(url, min_size=1, max_size=1, retry_timeout=10) as db:
        await migrate(db)
        store = PgEventStore(db)
        batch: list[MetricEvent] = []
        for event in read_jsonl(source, on_torn=_warn_torn(source)):
            batch.append(event)
            if len(batch) >= 10_000:
                added += await store.write(batch)
                read += len(batch)
                batch = []
        if batch:
            added += await store.write(batch)
            read += len(batch)
    return read, added


#: What the table shows in the tag column for the row of untagged events.
UNTAGGED = "-"


def _keys(grouping: Grouping) -> list[str]:
    """The key columns of a summary, in order."""
    return [k for k in ("provider", "role", "tag") if getattr(grouping, k)]


def _key_cells(r: SummaryRow, keys: list[str]) -> list[str]:
    return [(UNTAGGED if k == "tag" else "") if (v := getattr(r, k)) is None else v for k in keys]


def _table(rows: list[SummaryRow], grouping: Grouping) -> tuple[list[str], list[list[str]]]:
    keys = _keys(grouping)
    head = [*keys, "requests", "ok %", "avg ms", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    head += ["in tok", "out tok", "cost $", "errors"]
    body = []
    for r in rows:
        lat = r.latency_ms
        cells = [*_key_cells(r, keys), str(r.requests), f"{r.success_rate * 100:.1f}"]
        cells += [f"{v:.1f}" for v in (lat.avg, lat.p50, lat.p95, lat.p99, lat.max)]
        cells += [str(r.input_tokens), str(r.output_tokens), f"{r.cost_usd:.6f}"]
        cells.append(" ".join(f"{code}={n}" for code, n in r.errors.items()) or "-")
        body.append(cells)
    return head, body


def _print_plain(rows: list[SummaryRow], grouping: Grouping, out: TextIO) -> None:
    head, body = _table(rows, grouping)
    keys = len(_keys(grouping))
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    for line in [head, *body]:
        cells = [
            c.ljust(w) if i < keys or i == len(head) - 1 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), file=out)


#: Which summary columns give way first on a narrow terminal (see ``_tables``).
_DROP_RANKS = {
    "max ms": 7,
    "in tok": 6,
    "out tok": 6,
    "avg ms": 5,
    "p99 ms": 4,
    "cost $": 3,
    "p50 ms": 2,
}


def print_rich(rows: list[SummaryRow], grouping: Grouping, console: Console | None = None) -> None:
    """The summary as a table that fits the terminal; provider ids, roles and tags are never cut."""
    from rich.console import Console

    head, body = _table(rows, grouping)
    keys = len(_keys(grouping))
    columns = [
        Column(
            name,
            justify="right" if keys <= i < len(head) - 1 else "left",
            key=i < keys,
            wrap=i == len(head) - 1,
            drop=_DROP_RANKS.get(name, 0),
        )
        for i, name in enumerate(head)
    ]
    print_table(console or Console(), columns, body, title="metrics summary")


def _write_summary_csv(rows: list[SummaryRow], grouping: Grouping, out: TextIO) -> None:
    """One line per row; a ``tag`` column (empty for the untagged row) only when grouped by tag."""
    codes = sorted({code for r in rows for code in r.errors})
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "provider",
            "role",
            *(["tag"] if grouping.tag else []),
            "requests",
            "successes",
            "failures",
            "success_rate",
            *(f"latency_{k}_ms" for k in ("avg", "p50", "p95", "p99", "max")),
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "cost_usd",
            *(f"errors.{code}" for code in codes),
        ]
    )
    for r in rows:
        lat = r.latency_ms
        writer.writerow(
            [
                r.provider or "",
                r.role or "",
                *([r.tag or ""] if grouping.tag else []),
                r.requests,
                r.successes,
                r.failures,
                r.success_rate,
                lat.avg,
                lat.p50,
                lat.p95,
                lat.p99,
                lat.max,
                r.input_tokens,
                r.output_tokens,
                r.total_tokens,
                r.cost_usd,
                *(r.errors.get(code, 0) for code in codes),
            ]
        )


def _csv_value(value: object) -> object:
    """Booleans as ``true``/``false`` (as JSON and most tools write them), not ``True``.

    Tags share one column, joined by ``|`` (which a tag may not contain).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "|".join(value)
    return value


def _iso(ts: datetime) -> str:
    return _encoder.encode(ts).decode().strip('"')


class EventWriter:
    """Writes events one at a time as csv, json (an array) or jsonl; :meth:`close` ends it."""

    def __init__(self, fmt: str, out: TextIO) -> None:
        self.fmt = fmt
        self.out = out
        #: Events written so far.
        self.n = 0
        self._csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(_EVENT_FIELDS)
        elif fmt == "json":
            out.write("[")

    def add(self, e: MetricEvent) -> None:
        if self._csv is not None:
            line = to_line(e)
            values = [_csv_value(getattr(line, f)) for f in _EVENT_FIELDS]
            values[_EVENT_FIELDS.index("ts")] = _iso(line.ts)
            self._csv.writerow(values)
        elif self.fmt == "json":
            self.out.write(("\n" if self.n == 0 else ",\n") + encode_line(e).decode())
        else:
            self.out.write(encode_line(e).decode() + "\n")
        self.n += 1

    def close(self) -> int:
        """Finish the document; return how many events were written."""
        if self.fmt == "json":
            self.out.write("\n]\n" if self.n else "]\n")
        return self.n


def write_events(events: Iterable[MetricEvent], fmt: str, out: TextIO) -> int:
    """Write events as csv, json (an array) or jsonl; return how many."""
    writer = EventWriter(fmt, out)
    for e in events:
        writer.add(e)
    return writer.close()


def cmd_export(args: argparse.Namespace) -> int:
    """Write every matching event to ``--output`` or stdout."""
    filters = _filters(args)
    kind, path = _store(args)
    if kind == "postgres":
        return _export_postgres(args, path, filters)
    conn: sqlite3.Connection | None = None
    if kind == "sqlite":
        conn = open_for_reading(path)
        total = count_events(conn)
        events: Iterable[MetricEvent] = export_db(conn, filters)
    else:
        if not Path(path).is_file():
            raise _missing_jsonl(path)
        counted = _Counted(read_jsonl(path, on_torn=_warn_torn(path)))
        events = (e for e in counted if filters.matches(e))
    try:
        if args.output:
            try:
                with Path(args.output).open("w", encoding="utf-8", newline="") as out:
                    n = write_events(events, args.format, out)
            except OSError as exc:
                raise UsageError(f"cannot write {args.output}: {exc.strerror}") from exc
        else:
            n = write_events(events, args.format, sys.stdout)
    finally:
        if conn is not None:
            conn.close()
    if kind != "sqlite":
        total = counted.seen
    if n == 0:
        print(_nothing(path, total, filters), file=sys.stderr)
    elif args.output:
        print(f"exported {n} events to {args.output}", file=sys.stderr)
    return 0


def _export_postgres(args: argparse.Namespace, url: str, filters: Filters) -> int:
    from runner.cluster._pool import redact

    def run(out: TextIO) -> tuple[int, int]:
        writer = EventWriter(args.format, out)
        total = anyio.run(_pg_export, url, filters, writer)
        return writer.close(), total

    if args.output:
        try:
            with Path(args.output).open("w", encoding="utf-8", newline="") as out:
                n, total = run(out)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror}") from exc
    else:
        n, total = run(sys.stdout)
    if n == 0:
        print(_nothing(redact(url), total, filters), file=sys.stderr)
    elif args.output:
        print(f"exported {n} events to {args.output}", file=sys.stderr)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Import a JSONL store into SQLite (idempotent: known event ids are skipped)."""
    source = Path(args.file)
    if not source.is_file():
        raise UsageError(f"no such file: {source}")
    if args.db:
        db = args.db
    else:
        from runner.cli._main import notice
        from runner.config._load import discover_stores

        where, metrics, cluster = discover_stores(args.config, notice=notice)
        if cluster.database:
            db = cluster.database
        elif metrics.store != "sqlite":
            raise UsageError(
                f"the config ({where}) has metrics.store: {metrics.store};"
                " name the target database with --db PATH"
            )
        else:
            db = metrics.path
    if _is_postgres(db):
        from runner.cluster._pool import redact

        read, added = anyio.run(_pg_import, db, source)
        print(
            f"imported {added} new events from {source} into {redact(db)}"
            f" ({read - added} already there)"
        )
        return 0
    try:
        report = import_jsonl(db, source, on_torn=_warn_torn(source))
    except (sqlite3.Error, OSError) as exc:
        raise UsageError(f"cannot import into {db}: {exc}") from exc
    torn = ""
    if report.torn:
        lines = ", ".join(str(n) for n in report.torn)
        torn = (
            f"; skipped {len(report.torn)} torn line{'s' if len(report.torn) > 1 else ''}: {lines}"
        )
    print(
        f"imported {report.added} new events from {source} into {db}"
        f" ({report.read - report.added} already there{torn})"
    )
    return 0
