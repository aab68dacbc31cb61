"""The task status state machine, as data.

:data:`TRANSITIONS` is the table of legal moves (docs/lifecycle.md) and
:data:`TERMINAL` the states a task never leaves.  :func:`move` is the only
code that changes a task's status: it checks the move against the table,
records it (timestamped, with the provider in use) in the task's history, and
raises :class:`~runner._errors.TransitionError` for anything else, which is
always a bug in runner.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Final, Protocol, get_args

from runner._errors import TransitionError
from runner._task import HistoryEntry, Status

STATUSES: Final[tuple[Status, ...]] = get_args(Status)

#: Legal moves: from a status to the statuses it may go to next.
TRANSITIONS: Final[Mapping[Status, frozenset[Status]]] = {
    "pending": frozenset({"running", "cancelled"}),
    "running": frozenset({"completed", "failed", "retrying", "cancelled"}),
    "retrying": frozenset({"running", "failed", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

#: Statuses a task ends in; exactly one of them, exactly once.
TERMINAL: Final[frozenset[Status]] = frozenset({"completed", "failed", "cancelled"})


def is_legal(current: Status, new: Status) -> bool:
    """Whether the table allows moving from ``current`` to ``new``."""
    return new in TRANSITIONS[current]


def iso_ms(wall: float) -> str:
    """``wall`` (seconds since the epoch) as ISO 8601 UTC with milliseconds and ``Z``."""
    seconds = int(wall)
    millis = int((wall - seconds) * 1000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


# Every task makes three or more moves, nearly all within the same second as
# the move before: one cached second turns the formatting into a lookup.  The
# cache holds one immutable string, so it behaves as a pure function.
@functools.lru_cache(maxsize=1)
def _iso_second(seconds: int) -> str:
    # time.strftime on a struct_time is several times cheaper than datetime.isoformat.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


class Movable(Protocol):
    """What :func:`move` needs of a task: its id, status and history.

    A protocol, so the state machine sits below the execution context that uses it.
    """

    id: str
    status: Status
    history: list[HistoryEntry]


def move(
    ctx: Movable,
    status: Status,
    *,
    provider: str | None,
    at: float,
    attempt: int | None = None,
    error_code: str | None = None,
) -> HistoryEntry:
    """Move ``ctx`` to ``status`` at wall time ``at``, or raise ``TransitionError``.

    The move is appended to ``ctx.history`` and returned, so callers can log or
    journal exactly what was recorded.
    """
    current = ctx.status
    if status not in TRANSITIONS[current]:
        raise TransitionError(
            f"task {ctx.id!r}: illegal status move {current} -> {status}"
            f" (legal from {current}: {', '.join(sorted(TRANSITIONS[current])) or 'none'})"
        )
    entry = HistoryEntry(
        status=status, at=iso_ms(at), provider=provider, attempt=attempt, error_code=error_code
    )
    ctx.status = status
    ctx.history.append(entry)
    return entry
