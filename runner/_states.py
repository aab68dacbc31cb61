"""The task status state machine, as data.

:data:`TRANSITIONS` is the table of legal moves (docs/lifecycle.md),
:data:`TERMINAL` the states a task never leaves and :data:`FINAL` the
statuses a Result can carry (the terminal ones, plus ``rejected`` for a task
that was never run).  Nothing else defines them.  :func:`move` is the only code
that changes a task's status: it checks the move against the table, records
it as a :class:`Move` in the task's history, and raises
:class:`~runner._errors.TransitionError` for anything else, which is always a
bug in runner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Protocol, get_args

from msgspec import Struct

from runner._errors import TransitionError
from runner._task import FinalStatus, Status

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

#: Statuses of a Result: a terminal state, or ``rejected`` (never run).
FINAL: Final[frozenset[FinalStatus]] = frozenset(get_args(FinalStatus))


def is_legal(current: Status, new: Status) -> bool:
    """Whether the table allows moving from ``current`` to ``new``."""
    return new in TRANSITIONS[current]


class Move(Struct, frozen=True, gc=False):
    """One status move while the task is in flight: a history entry not yet formatted.

    The time stays a float (seconds since the epoch) until a Result or a log
    line needs it as text (``runner._results.entry_of``); most moves are never
    looked at before then.  ``gc=False``: it holds only strings and numbers,
    so the garbage collector need not track the millions of them a big run makes.
    """

    status: Status
    wall: float
    provider: str | None = None
    attempt: int | None = None
    error_code: str | None = None


class Movable(Protocol):
    """What :func:`move` needs of a task: its id, status and history.

    A protocol, so the state machine sits below the execution context that uses it.
    """

    id: str
    status: Status
    history: tuple[Move, ...]


def move(
    ctx: Movable,
    status: Status,
    *,
    provider: str | None,
    at: float,
    attempt: int | None = None,
    error_code: str | None = None,
) -> Move:
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
    entry = Move(status, at, provider, attempt, error_code)
    ctx.status = status
    ctx.history += (entry,)
    return entry
