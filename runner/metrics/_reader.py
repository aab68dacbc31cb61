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

The child sends tagged messages through a one-way pipe: ``R`` and a batch
of rows with its runs and rollup rows (a
:class:`~runner.metrics._runs.Prepared` batch; building the figures in the
child balances the two processes' work), ``T`` and a torn line's number and
detail, ``E`` and a message (a line that is not an event), finally ``D``.
Payloads are msgpack (msgspec): pickling the rows cost more CPU than
decoding the JSON they came from.  The pipe's buffer bounds how far the
child reads ahead.  The child ignores Ctrl-C (the caller stops it) and is
killed if the caller stops reading for any reason.
"""

from __future__ import annotations

import signal
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from runner._errors import UsageError
from runner.metrics._events import Row
from runner.metrics._jsonl import OnTorn, read_rows
from runner.metrics._runs import Prepared, batch_runs

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

#: Batches of rows, as a generator: closing it stops a reader process.
Rows = Generator[list[Row], None, None]

#: Files smaller than this are read inline: a child costs ~0.2 s to start.
CHILD_THRESHOLD: Final = 32 << 20
#: A threshold no file reaches: always read inline.
NEVER: Final = 1 << 62


_encoder: Final = msgspec.msgpack.Encoder()
# (first_id, rows, runs, rollup), the parts of a Prepared batch.
_batch: Final = msgspec.msgpack.Decoder(
    tuple[int, list[tuple], list[tuple], list[tuple]]  # type: ignore[type-arg]  # Row, RunRow, RollupRow
)
_torn: Final = msgspec.msgpack.Decoder(tuple[int, str])


def _produce(path: str, size: int, out: Connection) -> None:
    """The child: send the file's rows in batches, then ``D`` (or the error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops

    def torn(number: int, detail: str) -> None:
        out.send_bytes(b"T" + _encoder.encode((number, detail)))

    try:
        first = 1
        for rows in read_rows(path, size=size, on_torn=torn):
            # The figures too: it balances the work (the parent inserts), and
            # the parent moves them if the rows land elsewhere than ids 1, 2, ...
            runs, rollup = batch_runs(first, rows)
            out.send_bytes(b"R" + _encoder.encode((first, rows, runs, rollup)))
            first += len(rows)
    except UsageError as exc:
        out.send_bytes(b"E" + str(exc).encode())
    else:
        out.send_bytes(b"D")
    finally:
        out.close()


def _from_child(path: str | Path, size: int, on_torn: OnTorn | None) -> Rows:
    # Imported here: every command that reads metrics imports this module,
    # and multiprocessing alone was 3 % of a summary's time.
    import multiprocessing

    # spawn, not fork: the caller may have threads (anyio's workers, a test runner).
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_produce, args=(str(path), size, send), daemon=True)
    child.start()
    send.close()
    try:
        while True:
            try:
                message = receive.recv_bytes()
            except EOFError:
                child.join()
                raise UsageError(
                    f"the process reading {path} stopped (exit code {child.exitcode});"
                    " nothing was imported"
                ) from None
            tag, body = message[:1], memoryview(message)[1:]
            if tag == b"R":
                first, rows, runs, rollup = _batch.decode(body)
                yield Prepared(rows, first, runs, rollup)
            elif tag == b"T":
                if on_torn is not None:
                    on_torn(*_torn.decode(body))
            elif tag == b"E":
                raise UsageError(bytes(body).decode())
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
