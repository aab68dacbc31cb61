"""One task owns each database connection: the pattern both stores share.

sqlite3 blocks, so every use of a connection runs in one of anyio's worker
threads (``anyio.to_thread.run_sync``), which works on asyncio and trio
alike.  :class:`OwnedConnection` pairs the connection with a
``CapacityLimiter(1)``: one thread at a time, whoever calls.  Its owner (the
metrics writer task, the journal's serving task) is the only caller by
design; the limiter makes a second caller, a bug, wait its turn instead of
sharing the connection between two threads.

:func:`receive_batch` is how both owners take work: wait for one item, then
take whatever else is already waiting, so a burst becomes one transaction
and a trickle is never held back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, TypeVarTuple

import anyio
import anyio.to_thread

if TYPE_CHECKING:  # only a type here; importing it cost a short command (metrics summary) 8 ms
    from anyio.streams.memory import MemoryObjectReceiveStream

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class OwnedConnection:
    """A sqlite3 connection used from one worker thread at a time.

    Open the connection with ``check_same_thread=False``: successive calls may
    land on different worker threads, and the limiter is what makes that safe.
    """

    __slots__ = ("_conn", "_limiter")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._limiter = anyio.CapacityLimiter(1)

    async def run(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """``fn(connection, *args)`` in a worker thread.

        Not abandoned on cancellation: a transaction either commits or rolls
        back before the caller sees the cancellation, never half-way.
        """
        return await anyio.to_thread.run_sync(fn, self._conn, *args, limiter=self._limiter)

    async def aclose(self) -> None:
        """Close the connection (after whatever call is running), even when cancelled."""
        with anyio.CancelScope(shield=True):
            await self.run(_close)


def _close(conn: sqlite3.Connection) -> None:
    conn.close()


async def receive_batch(receive: MemoryObjectReceiveStream[T], limit: int) -> list[T]:
    """Wait for one item, then take what else is waiting, up to ``limit`` in all.

    An empty list means the stream has ended (closed and drained).
    """
    try:
        batch = [await receive.receive()]
    except anyio.EndOfStream:
        return []
    while len(batch) < limit:
        try:
            batch.append(receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return batch
