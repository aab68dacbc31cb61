"""The one place Results are built: for tasks that ran, workflows, and tasks that never ran.

A :class:`~runner._task.Result` (and a workflow's
:class:`~runner._task.StageResult` list) is made here and nowhere else, so
the result line means the same whichever way a task ended and whoever wrote
it (the Runner, ``submit``, the worker).  The statuses a Result may carry are
:data:`runner._states.FINAL`.

While a task is in flight its history is a list of
:class:`~runner._states.Move` (float times); :func:`entry_of` formats one
into the :class:`~runner._task.HistoryEntry` users read, when a Result is
built or a move is logged or observed, never before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, Protocol, cast

from runner._clock import iso_ms, recent_ms
from runner._states import TERMINAL, Move
from runner._task import (
    ErrorInfo,
    FinalStatus,
    HistoryEntry,
    Result,
    StageResult,
    Status,
    Task,
    Usage,
)
from workers._base import CompletionResponse

__all__ = [
    "Finished",
    "entry_of",
    "history_of",
    "not_run",
    "rejected",
    "result_of",
    "task_result",
    "workflow_result",
]


class Finished(Protocol):
    """What a Result is built from: a terminal execution context (plain task or workflow).

    A protocol, so this module sits below the context (and can serve
    ``runner._tasks_file``, which never sees one).
    """

    id: str
    status: Status
    role: str | None
    workflow: str | None
    provider: str | None
    model: str | None
    attempts: int
    fallback_used: bool
    response: CompletionResponse | None
    latency_ms: float | None
    cost_usd: float | None
    error: ErrorInfo | None
    history: tuple[Move, ...]
    enqueued_at: float
    started_at: float | None
    finished_at: float | None
    stage_results: list[Result] | None
    stage_roles: tuple[tuple[str, str], ...]
    task: Task


def entry_of(move: Move) -> HistoryEntry:
    """The history entry users read for one in-flight move."""
    return HistoryEntry(
        status=move.status,
        at=iso_ms(move.wall),
        provider=move.provider,
        attempt=move.attempt,
        error_code=move.error_code,
    )


def history_of(moves: Iterable[Move]) -> list[HistoryEntry]:
    """Every move formatted, in order (``entry_of`` inlined: three or more per task)."""
    return [
        HistoryEntry(
            status=m.status,
            at=recent_ms(int(m.wall * 1000)) or iso_ms(m.wall),
            provider=m.provider,
            attempt=m.attempt,
            error_code=m.error_code,
        )
        for m in moves
    ]


# Rounding: round(x * 1000) / 1000 is round(x, 3) at under half the cost
# (round() with digits goes through a decimal string); over a million random
# latencies the two never differed, and for costs (1e10) they can differ only
# on an exact half of a tenth of a micro-dollar.


def _usd(amount: float | None) -> float | None:
    """Costs to a tenth of a micro-dollar: float sums otherwise print 17 digits."""
    if amount is None:
        return None
    try:
        return round(amount * 1e10) / 1e10
    except (OverflowError, ValueError):  # inf or nan (a price set so in Python): as it is
        return amount


def _terminal(ctx: Finished) -> FinalStatus:
    status = ctx.status
    if status not in TERMINAL:
        raise RuntimeError(f"task {ctx.id!r} is {status}, not terminal")
    return cast(FinalStatus, status)


def result_of(ctx: Finished) -> Result:
    """The Result of a terminal context, plain task or workflow."""
    return task_result(ctx) if ctx.workflow is None else workflow_result(ctx)


#: A terminal status is a final one: the checked statuses, typed as such.
_FINAL_OF: dict[Status, FinalStatus] = {s: cast(FinalStatus, s) for s in TERMINAL}


def task_result(ctx: Finished) -> Result:
    """The Result of a terminal plain task (or workflow stage)."""
    # _terminal, inlined (once per task): one dict look-up, no cast() call.
    status = _FINAL_OF.get(ctx.status)
    if status is None:
        raise RuntimeError(f"task {ctx.id!r} is {ctx.status}, not terminal")
    response = ctx.response if status == "completed" else None
    queued_ms = None
    started_at = ctx.started_at
    if started_at is not None:
        queued_ms = round((started_at - ctx.enqueued_at) * 1e6) / 1000
    if response is not None:
        latency = ctx.latency_ms
        return Result(
            id=ctx.id,
            status=status,
            role=ctx.role,
            provider=ctx.provider,
            model=response.model,
            attempts=ctx.attempts,
            fallback_used=ctx.fallback_used,
            output=response.text,
            finish_reason=response.finish_reason,
            usage=response.usage,
            cost_usd=_usd(ctx.cost_usd),
            latency_ms=None if latency is None else round(latency * 1000) / 1000,
            queued_ms=queued_ms,
            history=history_of(ctx.history),
            metadata=ctx.task.metadata,
        )
    latency_ms = None
    if started_at is not None and ctx.finished_at is not None:
        latency_ms = round((ctx.finished_at - started_at) * 1e6) / 1000
    return Result(
        id=ctx.id,
        status=status,
        role=ctx.role,
        provider=ctx.provider,
        model=ctx.model,
        attempts=ctx.attempts,
        fallback_used=ctx.fallback_used,
        latency_ms=latency_ms,
        queued_ms=queued_ms,
        error=ctx.error,
        history=history_of(ctx.history),
        metadata=ctx.task.metadata,
    )


def workflow_result(ctx: Finished) -> Result:
    """The Result of a terminal workflow: its stages, their sums, the last output."""
    status = _terminal(ctx)
    done = ctx.stage_results or []
    last = done[-1] if done else None
    completed = status == "completed" and last is not None
    usages = [r.usage for r in done if r.usage is not None]
    costs = [r.cost_usd for r in done if r.cost_usd is not None]
    latency_ms = None
    if ctx.started_at is not None and ctx.finished_at is not None:
        latency_ms = round((ctx.finished_at - ctx.started_at) * 1000, 3)
    return Result(
        id=ctx.id,
        status=status,
        provider=last.provider if last is not None else None,
        model=last.model if last is not None else None,
        attempts=sum(r.attempts for r in done),
        fallback_used=any(r.fallback_used for r in done),
        output=last.output if completed and last is not None else None,
        finish_reason=last.finish_reason if completed and last is not None else None,
        usage=Usage(
            input_tokens=sum(u.input_tokens for u in usages),
            output_tokens=sum(u.output_tokens for u in usages),
            total_tokens=sum(u.total_tokens for u in usages),
        )
        if usages
        else None,
        cost_usd=_usd(sum(costs)) if costs else None,
        latency_ms=latency_ms,
        queued_ms=done[0].queued_ms if done else None,
        error=ctx.error if status != "completed" else None,
        history=history_of(ctx.history),
        workflow=ctx.workflow,
        stages=[
            StageResult(
                stage=name,
                role=role,
                status=r.status,
                provider=r.provider,
                attempts=r.attempts,
                output=r.output,
                error=r.error,
                history=r.history,
            )
            for (name, role), r in zip(ctx.stage_roles, done, strict=False)
        ],
        metadata=ctx.task.metadata,
    )


def rejected(
    task_id: str,
    message: str,
    *,
    role: str | None = None,
    workflow: str | None = None,
    line: int | None = None,
    code: str = "invalid_task",
) -> Result:
    """The Result of a task that cannot run as written (code ``invalid_task`` unless told)."""
    return Result(
        id=task_id,
        status="rejected",
        role=role,
        workflow=workflow,
        line=line,
        error=ErrorInfo(code=code, message=message),
    )


def not_run(
    task_id: str,
    message: str,
    *,
    status: Literal["cancelled", "failed"] = "cancelled",
    code: str = "cancelled",
    role: str | None = None,
    workflow: str | None = None,
    at: float | None = None,
    before: Sequence[Status] = ("pending",),
) -> Result:
    """The Result of an accepted task that ended without running (interrupted, lost).

    With ``at`` (seconds since the epoch) its history is the ``before``
    statuses then the final one, all at that time, the way a task cancelled
    while queued reads.
    """
    history: list[HistoryEntry] = []
    if at is not None:
        history = history_of([*(Move(s, at) for s in before), Move(status, at)])
    return Result(
        id=task_id,
        status=status,
        role=role,
        workflow=workflow,
        error=ErrorInfo(code=code, message=message, retryable=False),
        history=history,
    )
