"""A ``POST /v1/tasks`` body turned into tasks, with bounded work and a bounded answer.

The body is already bounded (``worker.max_request_bytes``); what a hostile
or careless one can still cost is bounded here:

* **Lines**: a request holds at most ``max_tasks`` tasks (the worker passes
  ``worker.queue_size``: a bigger batch could never be accepted anyway);
  the next non-blank line stops the parse with :class:`TooManyTasks` (413).
* **The answer**: at most :data:`MAX_LISTED_LINES` bad lines are listed, each
  message cut to :data:`MAX_MESSAGE_CHARS`; the rest are counted.
* **The event loop**: the parse gives way to other requests every
  :data:`SLICE_LINES` lines or :data:`SLICE_BYTES` bytes, so ``/healthz``
  and the other clients are served while a large body is checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from typing import Final

import anyio.lowlevel
import msgspec

from runner._task import Task
from runner._task_check import id_problem, shape_problem
from runner._tasks_file import TOO_DEEP, explain_validation

#: Most bad lines a 400 lists; the others are only counted (``unlisted``).
MAX_LISTED_LINES: Final = 100
#: Longest message for one bad line (a line can quote a huge field name).
MAX_MESSAGE_CHARS: Final = 200
#: The parse yields to the event loop after this many lines ...
SLICE_LINES: Final = 500
#: ... or this many bytes, whichever comes first.
SLICE_BYTES: Final = 256 * 1024

_DECODER: Final = msgspec.json.Decoder(Task)
# The next byte that is not ASCII whitespace: where the next non-blank line is.
_SOMETHING: Final = re.compile(rb"\S")


class LineError(msgspec.Struct, frozen=True, kw_only=True):
    """One invalid line of a request: its number (from 1) and what is wrong."""

    line: int
    message: str


class TooManyTasks(Exception):
    """The request holds more than ``limit`` tasks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the request holds more than {limit} tasks")


class Parsed:
    """What a body holds: its tasks if every line is valid, else the listed problems."""

    __slots__ = ("bad", "lines", "numbers", "problems", "tasks")

    def __init__(self) -> None:
        #: Every task, in order; only kept while no line is bad (the batch is then refused).
        self.tasks: list[Task] = []
        #: The line number of each of :attr:`tasks`.
        self.numbers: list[int] = []
        #: The first :data:`MAX_LISTED_LINES` bad lines.
        self.problems: list[LineError] = []
        #: Bad lines in all, listed or not.
        self.bad = 0
        #: Non-blank lines in all.
        self.lines = 0


async def parse_tasks(
    body: bytes,
    *,
    jsonl: bool,
    known_workflows: Collection[str],
    new_id: Callable[[], str],
    max_tasks: int,
) -> Parsed:
    """The tasks of a request body, or its bad lines (see the module docstring for bounds).

    A task without an ``id`` gets ``new_id()``; an id repeated within the
    body is an error on its later line.  Raises :class:`TooManyTasks` past
    ``max_tasks`` non-blank lines.
    """
    parsed = Parsed()
    seen: dict[str, int] = {}
    lines, size = 0, 0
    for line in _lines(body) if jsonl else iter([(1, body)]):
        if line is None:
            await anyio.lowlevel.checkpoint()
            continue
        number, raw = line
        parsed.lines += 1
        if parsed.lines > max_tasks:
            raise TooManyTasks(max_tasks)
        outcome = _check(raw, number, seen, known_workflows, new_id)
        if isinstance(outcome, Task):
            if not parsed.bad:
                parsed.tasks.append(outcome)
                parsed.numbers.append(number)
        else:
            parsed.bad += 1
            parsed.tasks, parsed.numbers = [], []  # the batch is refused: no need to hold them
            if len(parsed.problems) < MAX_LISTED_LINES:
                parsed.problems.append(LineError(line=number, message=_cut(outcome)))
        lines += 1
        size += len(raw)
        if lines >= SLICE_LINES or size >= SLICE_BYTES:
            lines, size = 0, 0
            await anyio.lowlevel.checkpoint()
    return parsed


def _lines(body: bytes) -> Iterator[tuple[int, bytes] | None]:
    """Each non-blank line with its number; ``None`` after each blank :data:`SLICE_BYTES`.

    Blank stretches are skipped in C, a slice at a time (the caller yields to
    the event loop on ``None``).  A split would build one bytes object per
    line, blank or not: 5 million of them (200 MB) for 10 MiB of newlines.
    """
    number, pos, size = 1, 0, len(body)
    search = _SOMETHING.search
    while pos < size:
        window = min(pos + SLICE_BYTES, size)
        found = search(body, pos, window)
        if found is None:
            number += body.count(b"\n", pos, window)
            pos = window
            yield None
            continue
        start = body.rfind(b"\n", pos, found.start()) + 1 or pos
        number += body.count(b"\n", pos, start)
        end = body.find(b"\n", start)
        if end < 0:
            end = len(body)
        yield number, body[start:end]
        pos = end


def _check(
    raw: bytes,
    number: int,
    seen: dict[str, int],
    known_workflows: Collection[str],
    new_id: Callable[[], str],
) -> Task | str:
    """The task on line ``number``, or what is wrong with it (``line N: ...``)."""
    try:
        task = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        return f"line {number}: {explain_validation(str(exc))}"
    except msgspec.DecodeError as exc:
        return f"line {number}: not valid JSON: {exc}"
    except RecursionError:
        return f"line {number}: {TOO_DEEP}"
    if task.id is None:
        task = msgspec.structs.replace(task, id=new_id())
    task_id = task.id or ""
    # Checked before the repeat test, so a bad id is never quoted back.
    problem = id_problem(task_id)
    if problem is not None:
        return f"line {number}: {problem}"
    first = seen.setdefault(task_id, number)
    if first != number:
        return f"line {number}: id '{task_id}' repeats line {first}"
    problem = shape_problem(task, known_workflows)
    if problem is not None:
        return f"line {number}: {problem}"
    return task


def _cut(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"
