"""The metrics storage seam: what a store must do, and which store a config gets.

An :class:`EventStore` takes batches of
:class:`~runner.metrics._events.MetricEvent` from the metrics writer
(:mod:`runner.metrics._writer`), its only caller.  Today there are two: the
SQLite store and the JSONL file (:mod:`runner.metrics._jsonl`), which is
also the spill file the writer falls back to.  SQLite's transaction runs in
a child process of its own (:class:`~runner.metrics._writer_process.ProcessStore`;
a small first batch goes through its worker thread), or, where Python
cannot start one (no ``sys.executable``), in a worker thread
(:class:`~runner.metrics._sqlite.SqliteStore`).  A backend must guarantee:

* **One owner.**  Only the writer task calls ``write`` and ``aclose``, one
  call at a time; the store needs no locking of its own, and keeps its
  connection to itself.
* **Atomic batches.**  ``write`` stores the whole batch or none of it.  On
  failure it raises :class:`~runner._errors.StorageError` (never a driver's
  own error); the writer retries the batch, then spills it.
* **Idempotent by event.**  An event is identified by its ``event_id``: a
  batch written again (a retry after a failure that did commit, an imported
  spill file) adds nothing, and ``write`` returns how many events were new.
  The JSONL file is an append log and the exception: its duplicates are
  dropped when it is imported.
* **Any backend, any loop.**  ``write`` works on asyncio and trio: a
  blocking driver runs in a child process driven through anyio's process
  pipes, or in a worker thread (``anyio.to_thread.run_sync``, one thread at
  a time, see :class:`~runner._owner.OwnedConnection`); an async driver must
  be anyio-native.
* **Prompt close.**  ``aclose`` releases the store; it is called once, after
  the last ``write``, shielded from cancellation.

A PostgreSQL store would be one more class with these three members, with
``UNIQUE (event_id)`` and ``INSERT ... ON CONFLICT DO NOTHING`` for the
idempotence, chosen by :func:`open_store` from ``metrics.store``.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol

from runner._errors import StorageError
from runner.metrics._events import MetricEvent
from runner.metrics._jsonl import JsonlStore, reason
from runner.metrics._sqlite import SqliteStore, prepare_database
from runner.metrics._writer_process import ProcessStore

#: Suffix appended to the database path to name the spill file.
SPILL_SUFFIX: Final = ".spill.jsonl"


class EventStore(Protocol):
    """A place the metrics writer puts batches of events (see the module docstring)."""

    @property
    def name(self) -> str:
        """What to call this store in messages (its path)."""
        ...

    async def write(self, events: Sequence[MetricEvent]) -> int:
        """Store the whole batch or raise :class:`StorageError`; return how many events were new."""
        ...

    async def aclose(self) -> None:
        """Release the store."""
        ...


class StoreSettings(Protocol):
    """Where events go: the ``metrics:`` section of a config, or anything shaped like it.

    A protocol rather than the config's own Struct, so the metrics layer does
    not depend on the config layer.
    """

    @property
    def store(self) -> str: ...

    @property
    def path(self) -> str: ...


class Notify(Protocol):
    """Where the metrics layer's messages go: ``notify("warning" | "error", text)``.

    The library never prints: the Runner passes its execution log, the
    command line prints.
    """

    def __call__(self, level: str, message: str, /) -> None: ...


def spill_path(db_path: str | Path) -> Path:
    """The JSONL file that receives events the configured store could not take."""
    return Path(f"{db_path}{SPILL_SUFFIX}")


def _unwritable(path: str, reason: str, spill: Path | None = None, spill_reason: str = "") -> str:
    also = f" nor its spill file {spill} ({spill_reason})" if spill is not None else ""
    return (
        f"metrics: cannot write {path} ({reason}){also}; fix metrics.path or set"
        " metrics.store: none"
    )


def check_store(config: StoreSettings) -> None:
    """Make sure events can be written where the config says, before any work starts.

    Creates the store (the SQLite database with its schema, or the JSONL
    file) so a bad ``metrics.path`` is one :class:`StorageError` naming the path
    and the fix.  A database that cannot be opened is still fine when its
    spill file can be written: the writer will fall back to it, and say so.
    """
    if config.store == "none":
        return
    if config.store == "jsonl":
        try:
            JsonlStore(config.path).check_writable()
        except OSError as exc:
            raise StorageError(_unwritable(config.path, reason(exc))) from None
        return
    try:
        prepare_database(config.path)
    except (sqlite3.Error, OSError) as exc:
        spill = spill_path(config.path)
        try:
            JsonlStore(spill).check_writable()
        except OSError as exc2:
            raise StorageError(_unwritable(config.path, reason(exc), spill, reason(exc2))) from None


async def open_store(config: StoreSettings, notify: Notify) -> EventStore:
    """The store the config asks for; its spill file, with a warning, if SQLite cannot be opened.

    Raises :class:`StorageError` (the message of :func:`check_store`) when
    neither can be written.
    """
    if config.store == "jsonl":
        store = JsonlStore(config.path)
        try:
            store.check_writable()
        except OSError as exc:
            raise StorageError(_unwritable(config.path, reason(exc))) from None
        return store
    try:
        if sys.executable:
            return await ProcessStore.open(config.path)
        return await SqliteStore.open(config.path)
    except StorageError as exc:
        fallback = JsonlStore(spill_path(config.path))
        try:
            fallback.check_writable()
        except OSError as exc2:
            raise StorageError(
                _unwritable(config.path, str(exc), Path(fallback.name), reason(exc2))
            ) from None
        notify(
            "warning",
            f"metrics: cannot open SQLite database {config.path} ({exc});"
            f" writing events to {fallback.name} (JSONL) instead",
        )
        return fallback
