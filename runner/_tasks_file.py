"""Reading a JSONL tasks file as a stream: each line a :class:`Task` or a rejection.

A :class:`TasksFile` reads a path (or ``-``, standard input) a block of lines
at a time and turns every non-blank line into either a ``Task`` ready to run
(its ``id`` defaulted to ``line-<n>``) or a ``Result`` with status
``rejected`` whose message starts with the line number.  Memory stays bounded
whatever the file's length: one block of raw lines, plus the ids seen so far,
which repeat detection cannot do without (see :class:`_FileIds` for what that
costs).
"""

from __future__ import annotations

import os
import re
import stat
import sys
import threading
from array import array
from collections import deque
from collections.abc import Callable, Collection, Iterator
from typing import BinaryIO, Final

import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import msgspec
from anyio.lowlevel import EventLoopToken

from runner._errors import UsageError
from runner._results import rejected
from runner._task import Result, Task
from runner._task import explain_validation as explain_validation  # the HTTP API uses it too
from runner._task_check import id_problem, shape_problem

#: Raw bytes read per block: small enough to be nothing in memory, large
#: enough that the thread hop per block costs nothing per line.
BLOCK_BYTES: Final = 64 * 1024

_DECODER: Final = msgspec.json.Decoder(Task)

#: The rejection of a line nested too deeply for the JSON reader.
TOO_DEEP: Final = "nested too deeply to read; a task line is a flat JSON object"

_BYTE: Final = re.compile(r"\(byte (\d+)\)")


class _IdOnly(msgspec.Struct):
    """Just a line's ``id``, to re-read an earlier line cheaply."""

    id: str | None = None


_ID_DECODER: Final = msgspec.json.Decoder(_IdOnly)


def _columns(message: str) -> str:
    """msgspec counts bytes from 0; people count columns from 1."""
    return _BYTE.sub(lambda m: f"(column {int(m[1]) + 1})", message)


_BOM: Final = b"\xef\xbb\xbf"


def _opens_array(head: bytes) -> bool:
    """Whether the first thing in the file (after a byte order mark) opens a JSON array."""
    return head.removeprefix(_BOM).lstrip().startswith(b"[")


def _array_error(name: str) -> UsageError:
    return UsageError(
        f"{name} is one JSON array, not JSONL: submit reads one JSON task per line"
        f" (convert it with: jq -c '.[]' {name} > tasks.jsonl)"
    )


class _Background:
    """Blocking reads of a pipe or terminal in a daemon thread, one block at a time.

    A read waited for may be abandoned (a signal ends the wait); its block is
    kept and handed to the next :meth:`read`, so no line is lost.  The
    thread is a daemon so that a read no input will ever end (``tail -f``)
    does not keep the process alive.  Only one read is ever outstanding, so
    memory stays one block.
    """

    def __init__(self, read: Callable[[], bytes]) -> None:
        self._read = read
        self._wanted = threading.Semaphore(0)
        self._blocks: deque[bytes | BaseException] = deque()
        self._arrived: anyio.Event | None = None
        self._token: EventLoopToken | None = None
        self._thread: threading.Thread | None = None

    async def read(self) -> bytes:
        """The next block (empty at the end), waiting for it as long as it takes."""
        if self._arrived is None:
            self._arrived = anyio.Event()
            if self._thread is None:
                self._token = anyio.lowlevel.current_token()
                self._thread = threading.Thread(
                    target=self._run, name="runner tasks reader", daemon=True
                )
                self._thread.start()
            self._wanted.release()
        await self._arrived.wait()
        self._arrived = None
        block = self._blocks.popleft()
        if isinstance(block, BaseException):
            raise block
        return block

    def _run(self) -> None:
        while True:
            self._wanted.acquire()
            try:
                block: bytes | BaseException = self._read()
            except Exception as exc:  # raised in the reader's task, not lost in the thread
                block = exc
            self._blocks.append(block)
            arrived = self._arrived
            if arrived is not None:
                try:
                    anyio.from_thread.run_sync(arrived.set, token=self._token)
                except RuntimeError:  # the event loop has gone: nobody is waiting
                    return
            if not block or isinstance(block, BaseException):
                return


def rejection(
    line: int, message: str, *, id: str | None = None, code: str = "invalid_task"
) -> Result:
    """The result line for an input line that cannot run."""
    return rejected(id or f"line-{line}", f"line {line}: {message}", line=line, code=code)


class _ExactIds:
    """Ids seen so far, exactly: about 120 bytes an id (the string, its line, the slot)."""

    def __init__(self) -> None:
        self._lines: dict[str, int] = {}

    def add(self, task_id: str, line: int, offset: int) -> int | None:
        first = self._lines.setdefault(task_id, line)
        return None if first == line else first


class _FileIds:
    """Ids seen so far in a regular file, at about 27-53 bytes an id.

    Each id is kept as its 64-bit ``hash()`` with its line and byte offset in
    three flat arrays, 20 bytes a slot (open addressing, doubled at three
    quarters full: linear probing stays short at that load, and the table is
    a third smaller than when doubled at half full).  Equal hashes are
    confirmed by re-reading the earlier line at its offset, so two different
    ids whose hashes collide are never taken for a repeat.  Standard input
    cannot be re-read, so it uses :class:`_ExactIds` instead.
    """

    def __init__(
        self,
        recall: Callable[[int, int], str],
        *,
        size: int = 1 << 12,
        hash_id: Callable[[str], int] = hash,
    ) -> None:
        self._recall = recall  # (line, offset) -> the id registered for that line
        self._hash = hash_id  # a parameter so tests can force collisions
        self._hashes = array("q", bytes(8 * size))
        self._lines = array("I", bytes(4 * size))  # 0 marks an empty slot: lines count from 1
        self._offsets = array("Q", bytes(8 * size))
        self._used = 0

    def add(self, task_id: str, line: int, offset: int) -> int | None:
        h = self._hash(task_id)
        mask = len(self._lines) - 1
        i = h & mask
        while self._lines[i]:
            if self._hashes[i] == h and self._recall(self._lines[i], self._offsets[i]) == task_id:
                return self._lines[i]
            i = (i + 1) & mask
        self._hashes[i], self._lines[i], self._offsets[i] = h, line, offset
        self._used += 1
        if 4 * self._used > 3 * len(self._lines):
            self._grow()
        return None

    def _grow(self) -> None:
        old = zip(self._hashes, self._lines, self._offsets, strict=True)
        size = 2 * len(self._lines)
        self._hashes = array("q", bytes(8 * size))
        self._lines = array("I", bytes(4 * size))
        self._offsets = array("Q", bytes(8 * size))
        mask = size - 1
        for h, line, offset in old:
            if line:
                i = h & mask
                while self._lines[i]:
                    i = (i + 1) & mask
                self._hashes[i], self._lines[i], self._offsets[i] = h, line, offset


class TasksFile:
    """A tasks file read line by line, each line a ``Task`` or a rejection ``Result``.

    ``known_workflows`` are the workflow names a ``workflow`` line may use.
    Blank lines are skipped (they get no result) but still count for line
    numbers; :attr:`line` is the number of lines read so far.  A UTF-8 byte
    order mark at the start is skipped; a file whose first line opens a JSON
    array (one array of tasks, not JSONL) is a :class:`UsageError`.

    Each read takes what has arrived, up to :data:`BLOCK_BYTES`, so lines
    from a pipe (``tail -f x | runner submit -``) are tasks as soon as they
    end, not once 64 KiB have gathered.
    """

    def __init__(
        self, stream: BinaryIO, *, name: str, known_workflows: Collection[str], close: bool
    ) -> None:
        self.name = name
        self.line = 0
        self.blank = 0
        self._stream = stream
        self._close = close
        self._workflows = known_workflows
        self._offset = 0
        self._raw: deque[bytes] = deque()
        #: The start of a line whose end has not been read yet.
        self._partial = b""
        self._eof = False
        self._first = True
        #: ``(st_dev, st_ino)`` of what is read, standard input included, so a
        #: results path that is this very file can be refused.
        self.identity: tuple[int, int] | None = None
        fd: int | None
        try:
            fd = stream.fileno()
            info = os.fstat(fd)
        except (OSError, ValueError):  # an in-memory stream in tests
            fd, mode = None, 0
        else:
            mode = info.st_mode
            self.identity = (info.st_dev, info.st_ino)
        # Offsets count from where reading began, so only a regular file opened
        # here (at its start) can be re-read by offset, or counted by name.
        #: True for a regular file opened by path (not standard input).
        self.rereadable = stat.S_ISREG(mode) and close
        self._ids: _ExactIds | _FileIds = _FileIds(self._recall) if self.rereadable else _ExactIds()
        # A pipe or a terminal may block for ever: its reads run in a thread
        # of their own, which a signal can leave waiting (see _Background).
        # They read the descriptor itself: a daemon thread blocked inside the
        # buffered reader would hold its lock while the interpreter exits.
        self._fd = None if stat.S_ISREG(mode) else fd
        self._background = None if stat.S_ISREG(mode) else _Background(self._read_block)

    @classmethod
    def open(cls, path: str, *, known_workflows: Collection[str]) -> TasksFile:
        """Open ``path`` (``-`` for standard input); a missing file is a usage error."""
        if path == "-":
            return cls(
                sys.stdin.buffer, name="<stdin>", known_workflows=known_workflows, close=False
            )
        try:
            stream = open(path, "rb")  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            raise UsageError(f"tasks file not found: {path}") from None
        except OSError as exc:
            raise UsageError(f"cannot read tasks file {path}: {exc.strerror}") from None
        try:
            # Checked before anything runs (or a results file is made).
            head = os.pread(stream.fileno(), BLOCK_BYTES, 0)
        except OSError:
            head = b""
        if _opens_array(head):
            stream.close()
            raise _array_error(path)
        return cls(stream, name=path, known_workflows=known_workflows, close=True)

    def close(self) -> None:
        if self._close:
            self._stream.close()

    def __enter__(self) -> TasksFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Task | Result]:
        """Every remaining line's item, reading in the calling thread."""
        while True:
            item = self._take()
            if item is not None:
                yield item
            elif self._eof:
                return
            else:
                self._refill(self._read_block())

    async def next(self) -> Task | Result | None:
        """The next line's item (``None`` at the end), reading blocks in a worker thread.

        Cancelling the wait never loses lines: a regular file's read is short
        and finishes first; a pipe's read may wait for ever, so it is left
        waiting, and what it brings is taken by the next call.
        """
        while True:
            item = self._take()
            if item is not None or self._eof:
                return item
            if self._background is not None:
                block = await self._background.read()
            else:
                block = await anyio.to_thread.run_sync(self._read_block)
            self._refill(block)

    def _read_block(self) -> bytes:
        """What has arrived, up to BLOCK_BYTES; empty at the end."""
        if self._fd is not None:
            return os.read(self._fd, BLOCK_BYTES)
        stream = self._stream
        read1 = getattr(stream, "read1", None)
        return bytes(read1(BLOCK_BYTES) if read1 is not None else stream.read(BLOCK_BYTES))

    def _refill(self, block: bytes) -> None:
        if not block:
            self._eof = True
            if self._partial:  # a last line without its newline
                self._raw.append(self._partial)
                self._partial = b""
            return
        lines = (self._partial + block if self._partial else block).split(b"\n")
        self._partial = lines.pop()
        self._raw.extend(lines)

    def _take(self) -> Task | Result | None:
        while self._raw:
            raw = self._raw.popleft()
            self.line += 1
            offset = self._offset
            self._offset += len(raw) + 1
            if self.line == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
                offset += len(_BOM)
            if not raw.strip():
                self.blank += 1
                continue
            if self._first:
                self._first = False
                if raw.lstrip().startswith(b"["):
                    raise _array_error(self.name)
            return self._item(raw, self.line, offset)
        return None

    def _item(self, raw: bytes, line: int, offset: int) -> Task | Result:
        try:
            task = _DECODER.decode(raw)
        except msgspec.ValidationError as exc:
            return self._invalid(raw, line, offset, explain_validation(str(exc)))
        except msgspec.DecodeError as exc:
            return rejection(line, f"not valid JSON: {_columns(str(exc))}")
        except RecursionError:
            # No Task field nests deeply today; kept so that one line can never
            # end the run, whatever the Struct grows.
            return rejection(line, TOO_DEEP)
        if task.id is None:
            task = msgspec.structs.replace(task, id=f"line-{line}")
        task_id = task.id or ""
        # A bad id is neither kept nor quoted: it may be huge or hold a newline.
        problem = id_problem(task_id)
        if problem is not None:
            return rejection(line, problem)
        first = self._ids.add(task_id, line, offset)
        if first is not None:
            return rejection(line, f"id '{task_id}' repeats line {first}")
        problem = shape_problem(task, self._workflows)
        if problem is not None:
            return rejection(line, problem, id=task_id)
        return task

    def _invalid(self, raw: bytes, line: int, offset: int, message: str) -> Result:
        """A rejection for a JSON object that is not a valid task, under its own id if usable."""
        try:
            task_id = _ID_DECODER.decode(raw).id
        except (msgspec.DecodeError, RecursionError):
            # Skipping the other fields recurses into them: a line nested a
            # thousand deep beside its typo keeps the typo's message, not its id.
            task_id = None
        if (
            task_id is not None
            and id_problem(task_id) is None
            and self._ids.add(task_id, line, offset) is None
        ):
            return rejection(line, message, id=task_id)
        return rejection(line, message)

    def _recall(self, line: int, offset: int) -> str:
        """The id registered for an earlier line, re-read from the file at ``offset``."""
        raw = b""
        while not raw.endswith(b"\n"):
            chunk = os.pread(self._stream.fileno(), 4096, offset + len(raw))
            if not chunk:
                break
            raw += chunk
        raw = raw.split(b"\n", 1)[0]
        try:
            task_id = _ID_DECODER.decode(raw).id
        except (msgspec.DecodeError, RecursionError):  # not for a line that decoded before
            return f"line-{line}"
        return task_id if task_id is not None else f"line-{line}"
