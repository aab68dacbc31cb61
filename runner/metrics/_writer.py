"""The metrics writer: the one task that owns the metrics store.

Producers (the dispatcher, one call per provider attempt) hold a
:class:`MetricsSink` and ``await sink.send(event)``.  Events travel through a
bounded memory stream to one writer task, which waits for an event, lets
more gather for up to ``linger`` seconds (:data:`DEFAULT_LINGER`; a
``flush()`` or the close cuts it short), takes what is waiting (up to a
batch) and hands it to the store (:class:`~runner.metrics._store.EventStore`)
in one ``write``: for SQLite one transaction, run in a worker thread.  When
the writer falls behind, the stream fills and ``send`` waits: no event is
ever dropped.  Everything here runs on asyncio and trio.

:func:`open_metrics_writer` is the usual entry point::

    async with open_metrics_writer(config.metrics, notify=notify) as sink:
        ...                                   # dispatch; await sink.send(event)

It opens the store and starts the writer before it yields, and on exit (also
on cancellation or error) closes the stream and lets the writer drain and
store what it was given, shielded, within ``flush_deadline`` seconds.

``await sink.flush()`` returns once every event sent before it is stored (or
spilled, or reported lost): the worker calls it before it journals a task's
result, so a result that survives a crash never lacks its metric events.

A write that fails (:class:`~runner._errors.StorageError`: database locked
past its busy timeout, disk full, an unwritable path) is retried with
stamina's backoff (``stamina.set_testing`` turns the waits off); if it still
fails, that batch and every later one go to the spill file (the database
path + ``.spill.jsonl``), and ``notify`` says so and how to import it.  If
even the spill file cannot be written, the count of lost events is told:
never a silent loss.  Every message goes through ``notify``; this layer
never prints.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final, Protocol, runtime_checkable

import anyio
import stamina
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runner._errors import StorageError
from runner._owner import receive_batch
from runner.metrics._events import MetricEvent
from runner.metrics._jsonl import JsonlStore
from runner.metrics._store import EventStore, Notify, StoreSettings, open_store, spill_path

#: Events the stream holds before producers wait.
DEFAULT_BUFFER: Final = 20_000
#: Most events written in one transaction.  Each batch leaves one run per
#: series, and a summary's time edge re-reads the runs it cuts through: with
#: 20,000 a `--since` over 1,000,000 events took 3.8 times as long.
DEFAULT_BATCH: Final = 5_000
#: Seconds the writer lets events gather after the first one of a batch.
DEFAULT_LINGER: Final = 0.05
#: Seconds the final flush may take after the producers are done.
DEFAULT_FLUSH_DEADLINE: Final = 10.0
#: Tries per batch before the writer turns to the spill file.
DEFAULT_ATTEMPTS: Final = 3


class MetricsSink(Protocol):
    """Where producers put metric events.

    A sink may also offer ``send_nowait(event) -> bool``: take the event
    without waiting, or return False (nothing taken) when ``send`` would
    wait.  The dispatcher tries it first and awaits ``send`` only on False.
    """

    async def send(self, event: MetricEvent) -> None:
        """Hand over one event; waits while the writer is behind."""
        ...


@runtime_checkable
class FlushableSink(MetricsSink, Protocol):
    """A sink that can say when what it was given is stored (every sink here can)."""

    async def flush(self) -> None:
        """Return once every event sent before the call is stored, spilled or reported lost."""
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

    def send_nowait(self, event: MetricEvent) -> bool:
        """Takes (drops) every event at once."""
        return True

    async def flush(self) -> None:
        return None


class _StreamSink:
    """The sink in front of the writer's stream."""

    __slots__ = ("_sent", "_stream", "_writer")

    def __init__(self, stream: MemoryObjectSendStream[MetricEvent], writer: _Writer) -> None:
        self._stream = stream
        self._writer = writer
        self._sent = 0

    def send_nowait(self, event: MetricEvent) -> bool:
        """Hand over ``event`` if the stream has room now; False (nothing sent) if it is full."""
        try:
            self._stream.send_nowait(event)
        except anyio.WouldBlock:
            return False
        self._sent += 1
        return True

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


class _Writer:
    """The writer task's state: where batches go and what was spilled or lost."""

    def __init__(
        self,
        store: EventStore,
        spill: JsonlStore,
        notify: Notify,
        *,
        batch_size: int,
        attempts: int,
        retry_delay: float,
        linger: float = 0.0,
    ) -> None:
        self.store = store
        self.spill = spill
        self.notify = notify
        self.batch_size = batch_size
        self.linger = linger
        self._hurry: anyio.Event | None = None
        #: Callers of wait_handled() waiting, and whether the stream is closed:
        #: either means no lingering.
        self._flushing = 0
        self.closing = False
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.spilling = False
        self.spilled = 0
        self.lost = 0
        self.inflight: Sequence[MetricEvent] = ()
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
                while batch := await receive_batch(receive, self.batch_size):
                    if self.linger and len(batch) < self.batch_size:
                        await self._gather(receive, batch)
                    self.inflight = batch
                    await self.write(batch)
                    self.inflight = ()
                    self.handled += len(batch)
                    self._progress.set()
                    self._progress = anyio.Event()
            finally:
                self.done.set()
                self._progress.set()

    async def _gather(
        self, receive: MemoryObjectReceiveStream[MetricEvent], batch: list[MetricEvent]
    ) -> None:
        """Let events gather for up to ``linger`` seconds, then top ``batch`` up.

        A burst of answers (a wave of tasks ending together) becomes one
        transaction written after the burst, instead of small ones whose
        worker-thread work (binding every value holds the GIL) competes with
        the event loop settling those very tasks.  :meth:`hurry` (a flush, the
        close) cuts the wait short.
        """
        if not self._flushing and not self.closing:
            hurry = self._hurry = anyio.Event()
            with anyio.move_on_after(self.linger):
                await hurry.wait()
            self._hurry = None
        while len(batch) < self.batch_size:
            try:
                batch.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break

    def hurry(self) -> None:
        """Stop a linger in progress: what is waiting is written now."""
        if self._hurry is not None:
            self._hurry.set()

    def close(self) -> None:
        """The stream is closed: write the rest without lingering."""
        self.closing = True
        self.hurry()

    async def wait_handled(self, count: int) -> None:
        """Return once ``count`` events are handled, or the writer has stopped.

        No batch lingers while someone waits here.
        """
        self._flushing += 1
        try:
            while self.handled < count and not self.done.is_set():
                self.hurry()
                await self._progress.wait()
        finally:
            self._flushing -= 1

    async def _store_with_retries(self, batch: Sequence[MetricEvent]) -> None:
        async for attempt in stamina.retry_context(
            on=StorageError,
            attempts=self.attempts,
            timeout=None,
            wait_initial=self.retry_delay,
            wait_max=10 * self.retry_delay,
            wait_jitter=self.retry_delay / 2,
        ):
            with attempt:
                await self.store.write(batch)

    async def write(self, batch: Sequence[MetricEvent]) -> None:
        """Write a batch to the store, retrying; spill it if the store keeps failing."""
        if not self.spilling:
            try:
                await self._store_with_retries(batch)
            except StorageError as exc:
                self.spilling = True
                self.notify(
                    "warning",
                    f"metrics: cannot write to {self.store.name} ({exc});"
                    f" writing events to {self.spill.name} instead",
                )
            else:
                return
        try:
            await self.spill.write(batch)
        except StorageError as exc:
            self._lose(batch, exc)
        else:
            self.spilled += len(batch)

    def _lose(self, events: Sequence[MetricEvent], exc: StorageError) -> None:
        self.lost += len(events)
        self.notify(
            "error",
            f"metrics: {len(events)} events could not be written to"
            f" {self.store.name} nor {self.spill.name} ({exc}); they are lost",
        )

    def rescue(self, receive: MemoryObjectReceiveStream[MetricEvent]) -> None:
        """After the flush deadline: spill what was in flight or still queued.

        The batch in flight may also have reached the store; importing the
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
        self.notify(
            "warning",
            f"metrics: flush deadline passed; spilling {len(events)} events to {self.spill.name}",
        )
        try:
            # In this thread: the deadline has passed, so nothing may be awaited.
            self.spill.write_now(events)
        except StorageError as exc:
            self._lose(events, exc)
        else:
            self.spilled += len(events)

    def report(self, import_hint: str) -> None:
        if self.spilled:
            self.notify(
                "warning",
                f"metrics: {self.spilled} events are in {self.spill.name};"
                f" import them with: {import_hint}",
            )


@asynccontextmanager
async def open_event_writer(
    store: EventStore,
    *,
    spill: JsonlStore,
    notify: Notify,
    buffer_size: int = DEFAULT_BUFFER,
    batch_size: int = DEFAULT_BATCH,
    flush_deadline: float = DEFAULT_FLUSH_DEADLINE,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_delay: float = 0.1,
    import_hint: str | None = None,
    linger: float = DEFAULT_LINGER,
) -> AsyncIterator[FlushableSink]:
    """Run a writer in front of an already open ``store``; close the store on exit.

    :func:`open_metrics_writer` builds the store from the config; tests use
    this directly with a store they control.
    """
    writer = _Writer(
        store,
        spill,
        notify,
        batch_size=batch_size,
        attempts=attempts,
        retry_delay=retry_delay,
        linger=linger,
    )
    send, receive = anyio.create_memory_object_stream[MetricEvent](buffer_size)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run, receive)
            try:
                yield _StreamSink(send, writer)
            finally:
                send.close()
                writer.close()
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


@asynccontextmanager
async def open_metrics_writer(
    config: StoreSettings,
    *,
    notify: Notify,
    buffer_size: int = DEFAULT_BUFFER,
    batch_size: int = DEFAULT_BATCH,
    flush_deadline: float = DEFAULT_FLUSH_DEADLINE,
) -> AsyncIterator[FlushableSink]:
    """Open the configured store, start its writer, and yield the sink producers use.

    Ready when it yields; on exit every event sent has been stored, spilled
    (told to ``notify``) or, only if even the spill file failed, reported
    lost.  A store that cannot be opened at all raises
    :class:`~runner._errors.StorageError` before any work starts.
    """
    if config.store == "none":
        yield NullSink()
        return
    store = await open_store(config, notify)
    spill = JsonlStore(spill_path(config.path))
    hint = f"python -m runner metrics migrate {spill.name} --db {config.path}"
    if config.store == "jsonl":
        hint = f"python -m runner metrics migrate {spill.name}"
    async with open_event_writer(
        store,
        spill=spill,
        notify=notify,
        buffer_size=buffer_size,
        batch_size=batch_size,
        flush_deadline=flush_deadline,
        import_hint=hint,
    ) as sink:
        yield sink
