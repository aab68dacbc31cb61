"""One task on its way through the runner: :class:`TaskExecutionContext`.

The dispatcher pulls these from its queue and is the only writer of their
execution fields; the status itself changes only through
:func:`runner._states.move`.  Once terminal, :func:`build_result` turns the
context into the :class:`~runner._task.Result` users see, and
:func:`resolve` hands that Result to whoever waits for it (a handle, a
``run_many`` stream) exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from msgspec import Struct, field

from runner._registry import Chain
from runner._states import iso_ms
from runner._task import ErrorInfo, HistoryEntry, Message, Result, StageResult, Status, Task, Usage
from runner.config._model import ProviderConfig
from workers._base import CompletionResponse


class TaskExecutionContext(Struct, kw_only=True, eq=False):
    """A task, its chain, and everything recorded while it runs.

    ``eq=False`` gives identity equality and hashing, so contexts can sit in
    sets even when two users' tasks share an id.  ``chain`` is ``None`` for a
    workflow, whose stages are contexts of their own.
    """

    task: Task
    id: str
    role: str | None
    chain: Chain | None
    workflow: str | None = None
    status: Status = "pending"
    #: Attempts across the whole chain.
    attempts: int = 0
    #: The provider of the current (or last) attempt.
    provider: str | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    #: Monotonic times: accepted, first running, terminal.
    enqueued_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    fallback_used: bool = False
    response: CompletionResponse | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    error: ErrorInfo | None = None
    #: The request's messages and system prompt, built once per task.
    messages: tuple[Message, ...] = ()
    system: str | None = None
    # Plumbing: the scope that cancels this task while it runs, who waits for
    # its result, and the result once terminal.
    scope: anyio.CancelScope | None = None
    waiter: anyio.Event | None = None
    notify: Callable[[Result], None] | None = None
    result: Result | None = None
    #: A workflow's stage Results so far, in stage order.
    stage_results: list[Result] | None = None
    #: A workflow's stage names and roles, in order (for its StageResult list).
    stage_roles: tuple[tuple[str, str], ...] = ()


def new_context(
    task: Task,
    task_id: str,
    chain: Chain | None,
    *,
    now: float,
    wall: float,
    notify: Callable[[Result], None] | None = None,
) -> TaskExecutionContext:
    """A pending context for ``task``, its history opened with the ``pending`` entry."""
    ctx = TaskExecutionContext(
        task=task,
        id=task_id,
        role=(task.role or (chain.role if chain is not None else None)),
        chain=chain,
        workflow=task.workflow,
        enqueued_at=now,
        history=[HistoryEntry(status="pending", at=iso_ms(wall))],
        notify=notify,
    )
    if task.workflow is None:
        ctx.messages, ctx.system = request_messages(task)
    return ctx


def request_messages(task: Task) -> tuple[tuple[Message, ...], str | None]:
    """The user/assistant turns and the system prompt of a plain task.

    ``system`` messages are moved into the system prompt (after ``task.system``),
    because not every provider accepts them among the turns.
    """
    if task.messages is None:
        return (Message(role="user", content=task.prompt or ""),), task.system
    system_parts = [task.system] if task.system else []
    turns: list[Message] = []
    for m in task.messages:
        if m.role == "system":
            system_parts.append(m.content)
        else:
            turns.append(m)
    return tuple(turns), ("\n\n".join(system_parts) or None)


def cost_of(usage: Usage, provider: ProviderConfig) -> float:
    """USD for ``usage`` at the provider's prices (0.0 without pricing)."""
    pricing = provider.pricing
    if pricing is None:
        return 0.0
    return (
        usage.input_tokens * pricing.input_per_million
        + usage.output_tokens * pricing.output_per_million
    ) / 1_000_000


def _usd(amount: float | None) -> float | None:
    """Costs to a tenth of a micro-dollar: float sums otherwise print 17 digits."""
    return None if amount is None else round(amount, 10)


def build_result(ctx: TaskExecutionContext) -> Result:
    """The Result line of a terminal plain task (workflows build their own)."""
    status = ctx.status
    if status not in ("completed", "failed", "cancelled"):
        raise RuntimeError(f"task {ctx.id!r} is {status}, not terminal")
    response = ctx.response if status == "completed" else None
    queued_ms = None
    if ctx.started_at is not None:
        queued_ms = round((ctx.started_at - ctx.enqueued_at) * 1000, 3)
    latency_ms = None if ctx.latency_ms is None else round(ctx.latency_ms, 3)
    if response is None and ctx.started_at is not None and ctx.finished_at is not None:
        latency_ms = round((ctx.finished_at - ctx.started_at) * 1000, 3)
    return Result(
        id=ctx.id,
        status=status,
        role=ctx.role,
        provider=ctx.provider,
        model=response.model if response is not None else _model_of(ctx),
        attempts=ctx.attempts,
        fallback_used=ctx.fallback_used,
        output=response.text if response is not None else None,
        finish_reason=response.finish_reason if response is not None else None,
        usage=response.usage if response is not None else None,
        cost_usd=_usd(ctx.cost_usd) if response is not None else None,
        latency_ms=latency_ms,
        queued_ms=queued_ms,
        error=ctx.error if status != "completed" else None,
        history=ctx.history,
    )


def result_of(ctx: TaskExecutionContext) -> Result:
    """The Result of a terminal context, plain task or workflow."""
    return build_result(ctx) if ctx.chain is not None else workflow_result(ctx)


def workflow_result(ctx: TaskExecutionContext) -> Result:
    """The Result of a terminal workflow: its stages, their sums, the last output."""
    status = ctx.status
    if status not in ("completed", "failed", "cancelled"):
        raise RuntimeError(f"workflow {ctx.id!r} is {status}, not terminal")
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
        history=ctx.history,
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
    )


def _model_of(ctx: TaskExecutionContext) -> str | None:
    if ctx.chain is None or ctx.provider is None:
        return None
    for route in ctx.chain.routes:
        if route.provider.id == ctx.provider:
            return route.provider.model
    return None


def resolve(ctx: TaskExecutionContext, result: Result) -> bool:
    """Hand ``result`` to the task's waiters; False if it already had one.

    The first resolution wins, so a task reached by both a worker and a
    shutdown sweep still yields exactly one Result.
    """
    if ctx.result is not None:
        return False
    ctx.result = result
    if ctx.waiter is not None:
        ctx.waiter.set()
    if ctx.notify is not None:
        ctx.notify(result)
    return True
