"""The metrics writer: the single owner of the metrics store.

Producers (the dispatcher, one call per provider attempt) hold a
:class:`MetricsSink` and ``await sink.send(event)``.  Events travel through a
bounded memory stream to one writer task, which takes what is waiting (up to a
batch), and writes it in one transaction.  When the writer falls behind, the
stream fills and ``send`` waits: no event is ever dropped.

:func:`open_metrics_writer` is the usual entry point::

    async with open_metrics_writer(config.metrics) as sink:
        ...                                   # dispatch; await sink.send(event)

It opens the store and starts the writer before it yields, and on exit (also
on cancellation or error) closes the stream and lets the writer drain and
commit what it was given, shielded, within ``flush_deadline`` seconds.

``await sink.flush()`` returns once every event sent before it is stored (or
spilled, or reported lost): the worker calls it before it journals a task's
result, so a result that survives a crash never lacks its metric events.

A write that fails (database locked past its busy timeout, disk full, an
unwritable path) is retried; if it still fails, that batch and every later
one go to the spill file (the database path + ``.spill.jsonl``), and stderr
says so and how to import it.  If even the spill file cannot be written, the
count of lost events is printed: never a silent loss.

The SQLite store uses aiosqlite, so the writer needs the asyncio backend;
:class:`MemorySink` and the ``none`` store work on asyncio and trio.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TextIO, cast, runtime_checkable

import aiosqlite
import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runner._errors import StorageError
from runner.metrics._events import MetricEvent
from runner.metrics._store import (
    DEFAULT_COMPACTION,
    INSERT_EVENTS,
    INSERT_RUN,
    LAST_ID,
    MERGE_DELETE,
    MERGE_SOURCE,
    MERGE_UPDATE,
    NEW_EVENTS,
    TAIL_RUNS,
    UPDATE_ROLLUP,
    Compaction,
    NewEvent,
    RunBody,
    append_jsonl,
    batch_runs,
    build_runs,
    ids_sql,
    merge_runs,
    prepare_database,
    series_of,
    spill_path,
    to_merge,
    to_row,
)

#: Events the stream holds before producers wait.
DEFAULT_BUFFER = 20_000
#: Most events written in one transaction.
DEFAULT_BATCH = 5_000
#: Seconds the final flush may take after the producers are done.
DEFAULT_FLUSH_DEADLINE = 10.0
#: Seconds SQLite waits on a locked database before a write counts as failed.
BUSY_TIMEOUT = 5.0


class StoreSettings(Protocol):
    """Where events go: the ``metrics:`` section of a config, or anything shaped like it.

    A protocol rather than the config's own Struct, so the metrics layer does
    not depend on the config layer.
    """

    @property
    def store(self) -> str: ...

    @property
    def path(self) -> str: ...


class MetricsSink(Protocol):
    """Where producers put metric events."""

    async def send(self, event: MetricEvent) -> None:
        """Hand over one event; waits while the writer is behind."""
        ...


@runtime_checkable
class FlushableSink(MetricsSink, Protocol):
    """A sink that can say when what it was given is stored (every sink here can)."""

    async def flush(self) -> None:
        """Return once every event sent before the call is stored, spilled or reported lost."""
        ...


class EventStore(Protocol):
    """A place the writer puts batches: SQLite, a JSONL file, or a test double."""

    @property
    def name(self) -> str:
        """What to call this store in messages (its path)."""
        ...

    async def write(self, events: Sequence[MetricEvent]) -> None:
        """Store every event of the batch or raise (``sqlite3.Error``/``OSError``)."""
        ...

    async def aclose(self) -> None:
        """Release the store."""
        ...


class MemorySink:
    """Collects events in :attr:`events`; for tests of other components (asyncio or trio)."""

    def __init__(self) -> None:
        self.events: list[MetricEvent] = []

    async def send(self, event: MetricEvent) -> None:
        self.events.append(event)

    async def flush(self) -> None:
        return None


class NullSink:
    """The ``metrics.store: none`` sink: stores nothing, so it drops nothing."""

    async def send(self, event: MetricEvent) -> None:
        return None

    async def flush(self) -> None:
        return None


class _StreamSink:
    """The sink in front of the writer's stream."""

    __slots__ = ("_sent", "_stream", "_writer")

    def __init__(self, stream: MemoryObjectSendStream[MetricEvent], writer: _Writer) -> None:
        self._stream = stream
        self._writer = writer
        self._sent = 0

    async def send(self, event: MetricEvent) -> None:
        # The non-blocking try first spares a scheduler round trip per event;
        # only a full stream makes the producer wait (that is the backpressure).
        try:
            self._stream.send_nowait(event)
        except anyio.WouldBlock:
            await self._stream.send(event)
        self._sent += 1

    async def flush(self) -> None:
        # One writer takes the stream in order, so "the first _sent events
        # are handled" means every event sent before this call is.
        await self._writer.wait_handled(self._sent)


class SqliteStore:
    """The SQLite store, through one aiosqlite connection (asyncio only)."""

    def __init__(
        self, conn: aiosqlite.Connection, path: str, compaction: Compaction | None
    ) -> None:
        self._conn = conn
        self.name = path
        self._compaction = compaction

    @classmethod
    async def open(
        cls, path: str, *, compaction: Compaction | None = DEFAULT_COMPACTION
    ) -> SqliteStore:
        """Create or migrate the database at ``path`` and connect to it.

        Every write compacts the series it added to (see
        :class:`~runner.metrics._store.Compaction`); ``None`` never does.
        """
        await anyio.to_thread.run_sync(prepare_database, path)
        conn = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
        try:
            await conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path, compaction)

    async def write(self, events: Sequence[MetricEvent]) -> None:
        rows = [to_row(e) for e in events]
        conn = self._conn
        await conn.execute("BEGIN IMMEDIATE")
        try:
            async with conn.execute(LAST_ID) as cur:
                row = await cur.fetchone()
            last = row[0] if row else 0
            async with conn.executemany(INSERT_EVENTS, rows) as cur:
                added = cur.rowcount
            if added == len(rows):
                runs = batch_runs(last + 1, rows)
            else:  # some were already stored (a re-sent batch): runs from what was added
                async with conn.execute(NEW_EVENTS, (last,)) as cur:
                    runs = build_runs(cast(list[NewEvent], await cur.fetchall()))
            await conn.executemany(INSERT_RUN, runs)
            await conn.execute(UPDATE_ROLLUP, (last,))
            if self._compaction is not None:
                for provider, role in series_of(runs):
                    await self._compact(provider, role, self._compaction)
            await conn.execute("COMMIT")
        except Exception:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise

    async def _compact(self, provider: str, role: str, compaction: Compaction) -> None:
        """``compact_series`` of the store module, through aiosqlite, in the open transaction."""
        conn = self._conn
        async with conn.execute(TAIL_RUNS, (provider, role, compaction.count)) as cur:
            ids = to_merge(cast(list[tuple[int, int]], await cur.fetchall()), compaction)
        if not ids:
            return
        async with conn.execute(ids_sql(MERGE_SOURCE, ids), ids) as cur:
            bodies = cast(list[RunBody], await cur.fetchall())
        await conn.execute(MERGE_UPDATE, (*merge_runs(bodies), ids[0]))
        await conn.execute(ids_sql(MERGE_DELETE, ids[1:]), ids[1:])

    async def aclose(self) -> None:
        await self._conn.close()


class JsonlStore:
    """A JSONL file that events are appended to, one line each."""

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)
        self._path = Path(path)

    def check_writable(self) -> None:
        """Create the file (and its directory) now, so a bad path fails before any work."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("ab"):
            pass

    async def write(self, events: Sequence[MetricEvent]) -> None:
        await anyio.to_thread.run_sync(append_jsonl, self._path, events)

    async def aclose(self) -> None:
        return None


class _Writer:
    """The writer task's state: where batches go and what was spilled or lost."""

    def __init__(
        self,
        store: EventStore,
        spill: JsonlStore,
        stderr: TextIO,
        *,
        batch_size: int,
        retries: int,
        retry_delay: float,
        sleep: Callable[[float], Awaitable[Any]],
    ) -> None:
        self.store = store
        self.spill = spill
        self.stderr = stderr
        self.batch_size = batch_size
        self.retries = retries
        self.retry_delay = retry_delay
        self.sleep = sleep
        self.spilling = False
        self.spilled = 0
        self.lost = 0
        self.inflight: list[MetricEvent] = []
        #: Events taken from the stream and stored, spilled or reported lost.
        self.handled = 0
        self._progress = anyio.Event()
        self.done = anyio.Event()
        self.scope = anyio.CancelScope(shield=True)

    async def run(
        self,
        receive: MemoryObjectReceiveStream[MetricEvent],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        # Shielded: the surrounding scope's cancellation must not cut the last
        # flush short; the owner ends it by closing the stream, or by
        # cancelling this scope when the flush deadline passes.
        with self.scope:
            task_status.started()
            try:
                while True:
                    try:
                        first = await receive.receive()
                    except anyio.EndOfStream:
                        return
                    batch = self.inflight = [first]
                    while len(batch) < self.batch_size:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self.write(batch)
                    self.inflight = []
                    self.handled += len(batch)
                    self._progress.set()
                    self._progress = anyio.Event()
            finally:
                self.done.set()
                self._progress.set()

    async def wait_handled(self, count: int) -> None:
        """Return once ``count`` events are handled, or the writer has stopped."""
        while self.handled < count and not self.done.is_set():
            await self._progress.wait()

    async def write(self, batch: Sequence[MetricEvent]) -> None:
        """Write a batch to the store, retrying; spill it if the store keeps failing."""
        if not self.spilling:
            for attempt in range(self.retries + 1):
                try:
                    await self.store.write(batch)
                except (sqlite3.Error, OSError) as exc:
                    error = exc
                    if attempt < self.retries:
                        await self.sleep(self.retry_delay * 2**attempt)
                else:
                    return
            self.spilling = True
            print(
                f"warning: metrics: cannot write to {self.store.name} ({error});"
                f" writing events to {self.spill.name} instead",
                file=self.stderr,
            )
        try:
            await self.spill.write(batch)
        except OSError as exc:
            self.lost += len(batch)
            print(
                f"error: metrics: {len(batch)} events could not be written to"
                f" {self.store.name} nor {self.spill.name} ({exc}); they are lost",
                file=self.stderr,
            )
        else:
            self.spilled += len(batch)

    def rescue(self, receive: MemoryObjectReceiveStream[MetricEvent]) -> None:
        """After the flush deadline: spill what was in flight or still queued.

        The batch in flight may also have reached the database; importing the
        spill file is idempotent, so a duplicate is harmless.
        """
        events = list(self.inflight)
        while True:
            try:
                events.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        if not events:
            return
        print(
            f"warning: metrics: flush deadline passed; spilling {len(events)} events"
            f" to {self.spill.name}",
            file=self.stderr,
        )
        try:
            append_jsonl(self.spill.name, events)
        except OSError as exc:
            self.lost += len(events)
            print(f"error: metrics: {len(events)} events lost ({exc})", file=self.stderr)
        else:
            self.spilled += len(events)

    def report(self, import_hint: str) -> None:
        if self.spilled:
            print(
                f"metrics: {self.spilled} events are in {self.spill.name};"
                f" import them with: {import_hint}",
                file=self.stderr,
            )


@asynccontextmanager
async def open_event_writer(
    store: EventStore,
    *,
    spill: JsonlStore,
    stderr: TextIO | None = None,
    buffer_size: int = DEFAULT_BUFFER,
    batch_size: int = DEFAULT_BATCH,
    flush_deadline: float = DEFAULT_FLUSH_DEADLINE,
    retries: int = 2,
    retry_delay: float = 0.1,
    sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
    import_hint: str | None = None,
) -> AsyncIterator[FlushableSink]:
    """Run a writer in front of an already open ``store``; close the store on exit.

    :func:`open_metrics_writer` builds the store from the config; tests use
    this directly with a store they control.
    """
    err = sys.stderr if stderr is None else stderr
    writer = _Writer(
        store,
        spill,
        err,
        batch_size=batch_size,
        retries=retries,
        retry_delay=retry_delay,
        sleep=sleep,
    )
    send, receive = anyio.create_memory_object_stream[MetricEvent](buffer_size)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run, receive)
            try:
                yield _StreamSink(send, writer)
            finally:
                send.close()
                with anyio.move_on_after(flush_deadline, shield=True):
                    await writer.done.wait()
                if not writer.done.is_set():
                    writer.scope.cancel()
                    writer.rescue(receive)
    finally:
        receive.close()
        with anyio.CancelScope(shield=True):
            await store.aclose()
        writer.report(import_hint or f"python -m runner metrics migrate {spill.name}")


async def open_store(config: StoreSettings, stderr: TextIO) -> EventStore:
    """The store the config asks for; JSONL (with a warning) if SQLite cannot be opened."""
    if config.store == "jsonl":
        store = JsonlStore(config.path)
        try:
            store.check_writable()
        except OSError as exc:
            raise StorageError(
                f"metrics: cannot write {config.path} ({exc.strerror}); fix metrics.path"
                " or set metrics.store: none"
            ) from exc
        return store
    try:
        return await SqliteStore.open(config.path)
    except (sqlite3.Error, OSError) as exc:
        fallback = JsonlStore(spill_path(config.path))
        try:
            fallback.check_writable()
        except OSError as exc2:
            raise StorageError(
                f"metrics: cannot open {config.path} ({exc}) nor {fallback.name}"
                f" ({exc2.strerror}); fix metrics.path or set metrics.store: none"
            ) from exc2
        print(
            f"warning: metrics: cannot open SQLite database {config.path} ({exc});"
            f" writing events to {fallback.name} (JSONL) instead",
            file=stderr,
        )
        return fallback


@asynccontextmanager
async def open_metrics_writer(
    config: StoreSettings,
    *,
    stderr: TextIO | None = None,
    buffer_size: int = DEFAULT_BUFFER,
    batch_size: int = DEFAULT_BATCH,
    flush_deadline: float = DEFAULT_FLUSH_DEADLINE,
) -> AsyncIterator[FlushableSink]:
    """Open the configured store, start its writer, and yield the sink producers use.

    Ready when it yields; on exit every event sent has been stored, spilled
    (said on stderr) or, only if even the spill file failed, reported lost.
    A store that cannot be opened at all raises :class:`StorageError` before
    any work starts.
    """
    err = sys.stderr if stderr is None else stderr
    if config.store == "none":
        yield NullSink()
        return
    store = await open_store(config, err)
    spill = JsonlStore(spill_path(config.path))
    hint = f"python -m runner metrics migrate {spill.name} --db {config.path}"
    if config.store == "jsonl":
        hint = f"python -m runner metrics migrate {spill.name}"
    async with open_event_writer(
        store,
        spill=spill,
        stderr=err,
        buffer_size=buffer_size,
        batch_size=batch_size,
        flush_deadline=flush_deadline,
        import_hint=hint,
    ) as sink:
        yield sink
