"""The SQLite store whose transactions run in a process of their own.

:class:`ProcessStore` is the :class:`~runner.metrics._store.EventStore` a run
with ``metrics.store: sqlite`` writes through.  It is :class:`SqliteStore`'s
transaction (:func:`~runner.metrics._sqlite.write_events`), run by a child
Python process (this module's :func:`main`) instead of a worker thread.

Why a process.  Python's sqlite3 lets go of the GIL around every statement,
and a thread waiting for the GIL only forces a switch when the holder has
not let go of it for a whole switch interval (5 ms).  An event loop lets go
of it on every pass (its ``select``), so while thousands of calls are in
flight the writer's thread got the GIL back only when it won a race: 100-150
ms before each batch's thread even started, a writer that fell behind the
event loop for good, and a final flush of 15,000 events left waiting at the
end of a run (measured in docs/benchmarks.md, issue 13, seventh pass).  A
child process has a GIL of its own; the event loop only encodes each batch
(msgspec, about 0.4 µs an event) and writes it to a pipe.

The protocol, over the child's stdin and stdout, is frames: a 4-byte
little-endian length, then msgpack.  The parent sends an :class:`Opening`
(the database and compaction settings), then one frame per batch (a list of
:class:`~runner.metrics._events.MetricEvent`); the child answers every frame
with one :class:`Reply`: how many events were new, or why the transaction
failed (a :class:`~runner._errors.StorageError` in the parent, which the
writer retries and then spills, as for the thread).  A small first batch
is written by a worker thread and the child started by the next write; a
large one starts the child (:class:`ProcessStore`).  The child ends when
its stdin does (the parent closed it, or died), and it ignores SIGINT: a
Ctrl-C reaches the whole process group, and it is the parent that decides
when writing stops.  If the child dies, the write in progress fails (the
writer retries it: a re-sent batch adds nothing) and the next write starts
a new child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import anyio
import msgspec
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from runner._errors import StorageError
from runner.metrics._events import MetricEvent
from runner.metrics._jsonl import reason
from runner.metrics._runs import DEFAULT_COMPACTION, Compaction
from runner.metrics._sqlite import SqliteStore, connect, write_events

#: Bytes of a frame's length prefix (little-endian).
HEADER: Final = 4
#: The pipe buffer each side asks for (Linux; the default maximum for any
#: user): a full batch of 5,000 events, about 1 MB, in one or two writes
#: instead of sixteen 64 KiB ones, each a pass of a busy event loop.
PIPE_SIZE: Final = 1 << 20
_F_SETPIPE_SZ: Final = 1031
#: A first batch of up to this many events is written by the worker thread,
#: and the child is started by the next write; a larger one starts the child
#: and waits for it.  The writer lets a batch gather for 50 ms, so a first
#: batch this small means a short run, or events arriving at under 20,000 a
#: second: an event loop with time to spare, which hands the GIL back to a
#: thread soon enough.  A larger one comes from a busy loop, where the
#: thread waited 100-500 ms for the GIL.
THREAD_FIRST: Final = 1_024
#: Seconds the child may take to finish after its stdin is closed (its last
#: transaction, closing the database) before it is killed.
END_DEADLINE: Final = 10.0
#: Seconds the child may take to answer one frame before it is killed and the
#: write fails.  A batch takes tens of milliseconds and a locked database
#: fails after ``BUSY_TIMEOUT`` (5 s): only a stopped or wedged child is
#: this late, and the writer must not wait for it forever.
ANSWER_DEADLINE: Final = 60.0


class Opening(msgspec.Struct, frozen=True, array_like=True):
    """The first frame to a child: which database, and how to compact its runs."""

    path: str
    compaction: Compaction | None


class Reply(msgspec.Struct, frozen=True, array_like=True):
    """The child's answer to each frame: events new to the database, or why it failed."""

    added: int = 0
    error: str | None = None


_encoder: Final = msgspec.msgpack.Encoder()
_replies: Final = msgspec.msgpack.Decoder(Reply)


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(HEADER, "little") + payload


# --- the parent's side --------------------------------------------------------


class ChildGone(Exception):
    """The child's pipes closed: it exited, or was killed."""


def _command() -> list[str]:
    # -P: the working directory does not go first on the child's sys.path,
    # so a file there named like a module cannot stand in for it.
    return [sys.executable, "-P", "-m", __name__]


def _environment() -> dict[str, str]:
    """The parent's environment, with the directory runner was imported from on PYTHONPATH.

    The child must import the same runner as the parent, also when the
    parent found it through ``sys.path`` rather than an installation.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _kill(process: Process) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited
        process.kill()


class _Child:
    """One running child: its process, the buffered end of its stdout, where it stands."""

    __slots__ = ("process", "ready", "replies")

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self.replies = BufferedByteReceiveStream(process.stdout)
        #: Whether it said it opened the database.
        self.ready = False

    @classmethod
    async def spawn(cls, path: str, compaction: Compaction | None) -> _Child:
        """A child told which database to open; :meth:`confirm` reads its answer.

        It imports and opens the database while the caller goes on.
        """
        try:
            process = await anyio.open_process(
                _command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=_environment(),
            )
        except OSError as exc:
            raise StorageError(f"cannot start the metrics writer process: {reason(exc)}") from None
        child = cls(process)
        try:
            await child.send(_encoder.encode(Opening(path, compaction)))
        except ChildGone:
            pass  # confirm() tells how it ended
        except BaseException:  # cancelled: no child is left behind
            _kill(process)
            with anyio.CancelScope(shield=True):
                await child.end()
            raise
        return child

    async def confirm(self) -> None:
        """Wait for its answer to the opening; :class:`StorageError` (child ended) if it failed."""
        try:
            reply = await self.receive()
        except ChildGone:
            code = await self.end()
            raise StorageError(
                f"the metrics writer process ended as it started (exit code {code})"
            ) from None
        if reply.error is not None:
            await self.end()
            raise StorageError(reply.error)
        self.ready = True

    async def send(self, payload: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            await stdin.send(_frame(payload))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            raise ChildGone from None

    async def receive(self) -> Reply:
        try:
            size = int.from_bytes(await self.replies.receive_exactly(HEADER), "little")
            return _replies.decode(await self.replies.receive_exactly(size))
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            anyio.IncompleteRead,
            OSError,
        ):
            raise ChildGone from None

    async def exchange(self, payload: bytes) -> Reply:
        """Send one frame and read the child's reply to it; :class:`ChildGone` if it is gone."""
        await self.send(payload)
        return await self.receive()

    async def end(self) -> int:
        """Close the child's stdin and wait for it to exit (killed after END_DEADLINE); its code."""
        process = self.process
        stdin = process.stdin
        assert stdin is not None
        with contextlib.suppress(anyio.BrokenResourceError, OSError):  # it is gone already
            await stdin.aclose()
        with anyio.move_on_after(END_DEADLINE):
            await process.wait()
        if process.returncode is None:
            _kill(process)
        code = await process.wait()
        await process.aclose()
        return code


class ProcessStore:
    """The SQLite :class:`~runner.metrics._store.EventStore`, written by a child process.

    ``open`` opens the database in this process, as
    :class:`~runner.metrics._sqlite.SqliteStore` does (a bad path is
    reported at once).  A small first batch (:data:`THREAD_FIRST`) is
    written by that store's worker thread, and the child (about 0.1 s to
    start, mostly imports) is started by the next write: a short run, or a
    wave whose events all come at its end, never starts a child, nor has
    one competing with it for the CPU while it runs.  A larger first batch
    comes from a busy event loop: it starts the child and waits for it.  A
    ``write`` is not abandoned on cancellation: the transaction commits or
    rolls back and its reply is read before the caller sees the
    cancellation, as for a worker thread, so the pipe never holds a stale
    reply.
    """

    def __init__(self, thread: SqliteStore, compaction: Compaction | None) -> None:
        self.name = thread.name
        self._thread = thread
        self._compaction = compaction
        self._child: _Child | None = None
        self._first = True

    @classmethod
    async def open(
        cls, path: str | Path, *, compaction: Compaction | None = DEFAULT_COMPACTION
    ) -> ProcessStore:
        """Create or migrate the database at ``path``; :class:`StorageError` if it cannot."""
        return cls(await SqliteStore.open(path, compaction=compaction), compaction)

    @property
    def child(self) -> Process | None:
        """The running child process, if one was started and has not ended."""
        return None if self._child is None else self._child.process

    async def write(self, events: Sequence[MetricEvent]) -> int:
        if self._first:
            self._first = False
            if len(events) <= THREAD_FIRST:
                return await self._thread.write(events)
        payload = _encoder.encode(events)
        with anyio.CancelScope(shield=True):
            reply = await self._exchange(payload)
        if reply.error is not None:
            raise StorageError(reply.error)
        return reply.added

    async def _exchange(self, payload: bytes) -> Reply:
        """The child's reply to ``payload``, a child started first if none runs."""
        child = self._child
        with anyio.move_on_after(ANSWER_DEADLINE):
            if child is None:
                child = self._child = await _Child.spawn(self.name, self._compaction)
            try:
                if not child.ready:
                    await child.confirm()
                return await child.exchange(payload)
            except ChildGone:
                self._child = None
                code = await child.end()
                raise StorageError(f"the metrics writer process ended (exit code {code})") from None
            except StorageError:
                self._child = None  # confirm() ended it
                raise
        self._child = None
        if child is not None:
            _kill(child.process)
            await child.end()
        raise StorageError(
            f"the metrics writer process did not answer within {ANSWER_DEADLINE:g} s;"
            " it was stopped"
        )

    async def aclose(self) -> None:
        child, self._child = self._child, None
        with anyio.CancelScope(shield=True):
            if child is not None:
                await child.end()
            await self._thread.aclose()


# --- the child's side ---------------------------------------------------------


def _read_exactly(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``; None if it ends first."""
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int) -> bytes | None:
    header = _read_exactly(fd, HEADER)
    return None if header is None else _read_exactly(fd, int.from_bytes(header, "little"))


def _send(fd: int, reply: Reply) -> None:
    data = memoryview(_frame(_encoder.encode(reply)))
    while data:
        data = data[os.write(fd, data) :]


def serve(inp: int, out: int) -> int:
    """Answer the frames read from ``inp`` on ``out`` until ``inp`` ends; the exit code."""
    first = _read_frame(inp)
    if first is None:
        return 0  # the parent went away before asking for anything
    opening = msgspec.msgpack.decode(first, type=Opening)
    try:
        conn = connect(opening.path)
    except (sqlite3.Error, OSError) as exc:
        _send(out, Reply(error=reason(exc)))
        return 1
    batches = msgspec.msgpack.Decoder(list[MetricEvent])
    try:
        _send(out, Reply())
        while (frame := _read_frame(inp)) is not None:
            try:
                added, _ = write_events(conn, batches.decode(frame), opening.compaction, False)
            except (sqlite3.Error, OSError) as exc:
                _send(out, Reply(error=reason(exc)))
            else:
                _send(out, Reply(added=added))
    finally:
        conn.close()
    return 0


def main() -> int:
    """The child: stdin and stdout are its pipes to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in (0, 1):
        try:
            import fcntl

            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
        except (ImportError, OSError):
            pass  # not Linux, or not a pipe: the default size works, more slowly
    # Replies go to a private copy of stdout; fd 1 itself now points where
    # stderr does, so nothing printed by accident can corrupt a frame.
    out = os.dup(1)
    os.dup2(2, 1)
    try:
        return serve(0, out)
    except BrokenPipeError:
        return 0  # the parent is gone: nobody is left to answer
    except Exception as exc:  # a bug: say which, as a reply, rather than a traceback nobody reads
        with contextlib.suppress(OSError):
            _send(out, Reply(error=f"the metrics writer process failed ({type(exc).__name__})"))
        return 1


if __name__ == "__main__":
    # Everything is stored and answered by now (replies are written with
    # os.write, unbuffered), and the database is closed: skip the
    # interpreter's teardown, which the parent's close would wait for.
    os._exit(main())
