"""One task on its way through the runner: :class:`TaskExecutionContext`.

The dispatcher pulls these from its queue and is the only writer of their
execution fields; the status itself changes only through
:func:`runner._states.move`.  Once terminal, ``runner._results`` turns the
context into the :class:`~runner._task.Result` users see, and :func:`resolve`
hands that Result to whoever waits for it (a handle, a ``run_many`` stream)
exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from msgspec import Struct

from runner._registry import Chain
from runner._scope import Cancellable
from runner._states import Move
from runner._task import ErrorInfo, Message, Result, Status, Task, Usage
from runner.config._model import ProviderConfig
from workers._base import CompletionResponse


class TaskExecutionContext(Struct, kw_only=True, eq=False):
    """A task, its chain, and everything recorded while it runs.

    ``eq=False`` gives identity equality and hashing, so contexts can sit in
    sets even when two users' tasks share an id, and an observer can tell a
    context from any other by identity (``ctx.task`` is the very Task object
    given to ``submit``; a workflow's stages have Task objects of their own).
    ``chain`` is ``None`` for a workflow, whose stages are contexts of their own.
    """

    task: Task
    id: str
    role: str | None
    chain: Chain | None
    workflow: str | None = None
    status: Status = "pending"
    #: Attempts across the whole chain.
    attempts: int = 0
    #: The provider of the current (or last) attempt, and its configured model.
    provider: str | None = None
    model: str | None = None
    #: Every status move so far; formatted into HistoryEntry only for the Result.
    #: A tuple of untracked Moves: the garbage collector stops tracking it at
    #: its first pass, so it is never among the objects it walks again.
    history: tuple[Move, ...] = ()
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
    # Plumbing: the scope that cancels this task's current step (an attempt,
    # a workflow), whether a cancel was asked for (a plain task is between
    # scopes while it records an attempt), who waits for its result, and the
    # result once terminal.
    scope: Cancellable | None = None
    cancel_requested: bool = False
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
        history=(Move("pending", wall),),
        notify=notify,
    )
    if task.workflow is None:
        if task.messages is None:
            # request_messages() for a prompt, inlined: nearly every task.
            ctx.messages, ctx.system = (
                (Message(role="user", content=task.prompt or ""),),
                task.system,
            )
        else:
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
