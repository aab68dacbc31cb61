"""Reading a big JSONL file in a second process, for ``metrics migrate``.

An import is two jobs of about equal weight, both holding the GIL: decoding
lines into rows (msgspec and the row conversion) and inserting rows
(sqlite3 binds every value in Python's thread).  Threads cannot overlap
them, so a file big enough to repay starting an interpreter is decoded by a
child process while the caller inserts: about half the wall time on two
cores.  The child is the only reader of the file and the caller the only
writer of the database, and the child's rows arrive in file order, so the
import is the same one transaction, with the same runs, as when read
inline.

The child sends ``("rows", batch)``, ``("torn", number, detail)``,
``("error", message)`` (a line that is not an event) and finally
``("done",)`` through a one-way pipe; the pipe's buffer bounds how far it
reads ahead.  It ignores Ctrl-C (the caller stops it) and is killed if the
caller stops reading for any reason.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Generator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final

from runner._errors import UsageError
from runner.metrics._events import Row
from runner.metrics._jsonl import OnTorn, read_rows

#: Batches of rows, as a generator: closing it stops a reader process.
Rows = Generator[list[Row], None, None]

#: Files smaller than this are read inline: a child costs ~0.2 s to start.
CHILD_THRESHOLD: Final = 32 << 20


def _produce(path: str, size: int, out: Connection) -> None:
    """The child: send the file's rows in batches, then ``done`` (or the error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    try:
        for rows in read_rows(path, size=size, on_torn=lambda n, d: out.send(("torn", n, d))):
            out.send(("rows", rows))
    except UsageError as exc:
        out.send(("error", str(exc)))
    else:
        out.send(("done",))
    finally:
        out.close()


def _from_child(path: str | Path, size: int, on_torn: OnTorn | None) -> Rows:
    # spawn, not fork: the caller may have threads (anyio's workers, a test runner).
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_produce, args=(str(path), size, send), daemon=True)
    child.start()
    send.close()
    try:
        while True:
            try:
                message = receive.recv()
            except EOFError:
                child.join()
                raise UsageError(
                    f"the process reading {path} stopped (exit code {child.exitcode});"
                    " nothing was imported"
                ) from None
            if message[0] == "rows":
                yield message[1]
            elif message[0] == "torn":
                if on_torn is not None:
                    on_torn(message[1], message[2])
            elif message[0] == "error":
                raise UsageError(message[1])
            else:
                return
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join()


def read_rows_fast(
    path: str | Path,
    *,
    size: int,
    on_torn: OnTorn | None = None,
    threshold: int = CHILD_THRESHOLD,
) -> Rows:
    """The rows of :func:`~runner.metrics._jsonl.read_rows`, from a child process for big files.

    Close the iterator when done with it early (the caller's ``finally``):
    that stops the child.
    """
    try:
        big = Path(path).stat().st_size >= threshold
    except OSError:
        big = False  # read_rows names the file and the reason
    if big:
        return _from_child(path, size, on_torn)
    return read_rows(path, size=size, on_torn=on_torn)
