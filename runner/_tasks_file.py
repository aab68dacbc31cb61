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
from array import array
from collections import deque
from collections.abc import Callable, Collection, Iterator
from typing import BinaryIO, Final

import anyio.to_thread
import msgspec

from runner._errors import UsageError
from runner._task import ErrorInfo, Result, Task
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


def rejection(
    line: int, message: str, *, id: str | None = None, code: str = "invalid_task"
) -> Result:
    """The result line for an input line that cannot run."""
    return Result(
        id=id or f"line-{line}",
        status="rejected",
        line=line,
        error=ErrorInfo(code=code, message=f"line {line}: {message}"),
    )


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
    numbers; :attr:`line` is the number of lines read so far.
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
        self._eof = False
        #: ``(st_dev, st_ino)`` of what is read, standard input included, so a
        #: results path that is this very file can be refused.
        self.identity: tuple[int, int] | None = None
        try:
            info = os.fstat(stream.fileno())
        except (OSError, ValueError):  # an in-memory stream in tests
            mode = 0
        else:
            mode = info.st_mode
            self.identity = (info.st_dev, info.st_ino)
        # Offsets count from where reading began, so only a regular file opened
        # here (at its start) can be re-read by offset, or counted by name.
        #: True for a regular file opened by path (not standard input).
        self.rereadable = stat.S_ISREG(mode) and close
        self._ids: _ExactIds | _FileIds = _FileIds(self._recall) if self.rereadable else _ExactIds()

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
                self._refill(self._stream.readlines(BLOCK_BYTES))

    async def next(self) -> Task | Result | None:
        """The next line's item (``None`` at the end), reading blocks in a worker thread.

        A read in progress is never abandoned on cancellation (its lines would
        be lost); it finishes first, so every line is seen exactly once.
        """
        while True:
            item = self._take()
            if item is not None or self._eof:
                return item
            block = await anyio.to_thread.run_sync(self._stream.readlines, BLOCK_BYTES)
            self._refill(block)

    def _refill(self, block: list[bytes]) -> None:
        if block:
            self._raw.extend(block)
        else:
            self._eof = True

    def _take(self) -> Task | Result | None:
        while self._raw:
            raw = self._raw.popleft()
            self.line += 1
            offset = self._offset
            self._offset += len(raw)
            if raw.isspace():
                self.blank += 1
                continue
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
