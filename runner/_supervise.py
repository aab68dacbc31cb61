"""Supervision: where a status changes, and how every task gets its one Result.

:class:`Supervisor` is the only code that moves a task's status (through
:func:`runner._states.move`) and the only code that settles a context (builds
its Result with ``runner._results`` and hands it over).  Plain tasks (the
dispatcher's pool) and workflows (the Runner's task group) both run under
:meth:`Supervisor.supervise`, which promises, whatever the body does:

* the context is settled exactly once, ``completed``, ``failed`` or
  ``cancelled``;
* an unexpected exception (a bug in runner, a raising metrics sink or
  observer) ends the task ``failed`` with code ``unknown``
  and goes no further: the pool and the runner keep serving.  The warning
  names only the exception type; the debug log adds where it was raised,
  never its message, which could carry anything (a prompt, a key);
* a cancellation settles the task ``cancelled`` and then propagates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from runner._context import TaskExecutionContext, resolve
from runner._log import ExecutionLog
from runner._results import entry_of, not_run, result_of
from runner._states import TERMINAL, Move, move
from runner._task import ErrorInfo, HistoryEntry, Result, Status

#: Called on every status move with the task's context and the move.  Contexts
#: compare by identity, so an observer tells tasks apart by the context (or by
#: ``ctx.task``, the Task object given to ``submit``), never by id.
Observer = Callable[[TaskExecutionContext, HistoryEntry], None]

Body = Callable[[TaskExecutionContext], Awaitable[None]]


class Counters:
    """Running totals for :meth:`runner.Runner.statistics`."""

    __slots__ = ("cancelled", "completed", "failed", "fallbacks", "retries")

    def __init__(self) -> None:
        self.completed = self.failed = self.cancelled = 0
        self.retries = self.fallbacks = 0


class Supervisor:
    """Status moves, Results and the set of live contexts of one runner."""

    def __init__(
        self,
        *,
        log: ExecutionLog,
        clock: Callable[[], float],
        wall: Callable[[], float],
        observer: Observer | None = None,
    ) -> None:
        self._log = log
        self._clock = clock
        self._wall = wall
        self._observer = observer
        # Checked once per move: the entry is formatted only for someone who reads it.
        self._tells = log.enabled or observer is not None
        #: Every accepted context without its Result yet (plain tasks, stages, workflows).
        self.live: set[TaskExecutionContext] = set()
        self.counters = Counters()
        self._idle: anyio.Event | None = None

    # -- running a body -------------------------------------------------------------

    async def supervise(self, ctx: TaskExecutionContext, body: Body) -> None:
        """Run ``body(ctx)`` and settle ``ctx`` once, whatever happens (module docstring).

        ``body`` brings the task to a terminal status with :meth:`record` (or
        :meth:`end_cancelled`); settling is left to this method.
        """
        try:
            await body(ctx)
        except anyio.get_cancelled_exc_class():
            self.finish_cancelled(ctx)
            raise
        except Exception as exc:
            self.finish_crashed(ctx, exc)
            return
        self.conclude(ctx)

    def conclude(self, ctx: TaskExecutionContext) -> None:
        """What :meth:`supervise` does once its body returned: settle ``ctx`` if not yet.

        The dispatcher's workers run a task's body in their own frame (one
        coroutine fewer per task in flight) and call this, as ``supervise`` does.
        """
        if ctx.result is None:
            if ctx.status in TERMINAL:
                self._deliver(ctx, result_of(ctx))  # settle(), once per task
            else:
                self.finish_crashed(ctx, RuntimeError("the task ended without a terminal status"))

    # -- status moves ---------------------------------------------------------------

    def record(
        self,
        ctx: TaskExecutionContext,
        status: Status,
        *,
        provider: str | None = None,
        attempt: int | None = None,
        error_code: str | None = None,
        latency_ms: float | None = None,
    ) -> Move:
        """Move ``ctx`` to ``status`` (or raise), then log and observe the move.

        A raising observer (or log processor) propagates to the body that made the move,
        which :meth:`supervise` then ends ``failed`` with code ``unknown``.
        """
        entry = move(
            ctx, status, provider=provider, at=self._wall(), attempt=attempt, error_code=error_code
        )
        if status in TERMINAL:
            self._count(ctx, status)
        if self._tells:
            self._tell(ctx, entry, latency_ms)
        return entry

    def _count(self, ctx: TaskExecutionContext, status: Status) -> None:
        ctx.finished_at = self._clock()
        if ctx.chain is None:
            return  # a workflow: its stages are counted
        counters = self.counters
        if status == "completed":
            counters.completed += 1
        elif status == "failed":
            counters.failed += 1
        else:
            counters.cancelled += 1

    def _tell(self, ctx: TaskExecutionContext, move: Move, latency_ms: float | None) -> None:
        if self._log.enabled:
            self._log.move(ctx.id, ctx.role, move, latency_ms=latency_ms, workflow=ctx.workflow)
        if self._observer is not None:
            self._observer(ctx, entry_of(move))

    def _record_last(self, ctx: TaskExecutionContext, status: Status, error: ErrorInfo) -> None:
        """The terminal move of a task that is being cancelled or has crashed.

        Unlike :meth:`record` nothing escapes: a failing log or observer here
        would otherwise leave the task without its Result.
        """
        ctx.error = error
        entry = move(
            ctx, status, provider=ctx.provider, at=self._wall(), attempt=ctx.attempts or None
        )
        self._count(ctx, status)
        if self._tells:
            try:
                self._tell(ctx, entry, None)
            except Exception as exc:
                self.problem("observer_failed", ctx, exc)

    # -- ending a task --------------------------------------------------------------

    def end_cancelled(self, ctx: TaskExecutionContext, message: str | None = None) -> None:
        """Move a task (or workflow) in any non-terminal state to ``cancelled``."""
        if ctx.status in TERMINAL:
            return
        if message is None:
            message = (
                "cancelled before it ran" if ctx.status == "pending" else "cancelled while running"
            )
        error = ErrorInfo(code="cancelled", message=message, provider=ctx.provider, retryable=False)
        self._record_last(ctx, "cancelled", error)

    def finish_cancelled(self, ctx: TaskExecutionContext, message: str | None = None) -> None:
        """End ``ctx`` as cancelled and settle it; a no-op once it has its Result."""
        if ctx.result is not None:
            return
        self.end_cancelled(ctx, message)
        self.settle(ctx)

    def finish_crashed(self, ctx: TaskExecutionContext, exc: BaseException) -> None:
        """End a task whose own code raised: ``failed`` with code ``unknown``, settled.

        ``pending -> failed`` is not a legal move, so a task that crashed before
        its first attempt ends ``cancelled`` (still with code ``unknown``); one
        that crashed after its terminal move keeps that status.
        """
        self.problem("task_crashed", ctx, exc)
        if ctx.result is not None:
            return
        if ctx.status not in TERMINAL:
            error = ErrorInfo(
                code="unknown",
                message=f"internal error: {type(exc).__name__}",
                provider=ctx.provider,
                retryable=False,
            )
            self._record_last(ctx, "cancelled" if ctx.status == "pending" else "failed", error)
        try:
            result = result_of(ctx)
        except Exception as inner:
            # Even the Result cannot be built: the task still gets one.
            self.problem("result_failed", ctx, inner)
            result = not_run(
                ctx.id, f"internal error: {type(exc).__name__}", status="failed", code="unknown"
            )
        self._deliver(ctx, result)

    def problem(self, event: str, ctx: TaskExecutionContext, exc: BaseException) -> None:
        """Warn about an exception turned into a failure: its type, and in debug where.

        The message is never logged: it could carry a prompt or a key.
        """
        try:
            self._log.problem(event, task_id=ctx.id, exception=type(exc).__name__)
            self._log.cause(event, exc)
        except Exception:  # noqa: S110 - a broken log stream must not lose the task
            pass

    # -- results --------------------------------------------------------------------

    def settle(self, ctx: TaskExecutionContext) -> None:
        """Build a terminal context's Result and deliver it (once)."""
        self._deliver(ctx, result_of(ctx))

    def _deliver(self, ctx: TaskExecutionContext, result: Result) -> None:
        try:
            resolve(ctx, result)
        except Exception as exc:
            # A waiter's callback failed (a closed stream): the handle has the Result anyway.
            self.problem("delivery_failed", ctx, exc)
        live = self.live
        live.discard(ctx)
        if not live and self._idle is not None:
            self._idle.set()

    async def wait(self, ctx: TaskExecutionContext) -> Result:
        """The Result of ``ctx``, once it has one."""
        if ctx.result is None:
            if ctx.waiter is None:
                ctx.waiter = anyio.Event()
            await ctx.waiter.wait()
        result = ctx.result
        if result is None:
            raise RuntimeError(f"task {ctx.id!r} woke without a result")
        return result

    async def wait_idle(self) -> None:
        """Return once every live context has its Result."""
        while self.live:
            self._idle = anyio.Event()
            await self._idle.wait()

    # -- cancellation ---------------------------------------------------------------

    def request_cancel(self, ctx: TaskExecutionContext) -> None:
        """Cancel ``ctx`` in any state; a no-op once it has its Result.

        A task nobody has started (queued, or a workflow whose coroutine has
        not run yet) is settled at once; whoever picks it up later sees the
        Result.  A started one has its current scope cancelled, and is marked,
        so that it stops at its next step if it is between two scopes; its
        own code then settles it.
        """
        if ctx.result is not None:
            return
        ctx.cancel_requested = True
        if ctx.scope is not None:
            ctx.scope.cancel()
        elif ctx.status == "pending":
            self.finish_cancelled(ctx)
