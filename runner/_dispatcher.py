"""The dispatcher: runs each task along its role's chain to one terminal state.

Tasks arrive as :class:`~runner._context.TaskExecutionContext` through a
bounded memory stream (``enqueue`` waits while it is full: that is the
backpressure).  A fixed pool of ``concurrency`` worker coroutines reads the
stream, so the global limit costs nothing per task; each provider has a
``CapacityLimiter`` of its ``max_concurrency`` and, when configured, a
:class:`~runner._ratelimit.RateLimiter`.

Per task a worker: selects the first provider of the chain that is not
cooling down (waiting for the earliest recovery when all are), makes an
attempt under the provider's timeout, records exactly one metric event for
it, and asks :class:`~runner._policy.RetryPolicy` whether to retry the same
provider (after a wait) or fall back to the next.  Every status change goes
through :meth:`Dispatcher.record`, which applies :func:`runner._states.move`
and writes the execution log line; nothing else touches a status.

Invariants kept whatever happens (faults, adapter bugs, cancellation,
shutdown): every accepted task reaches exactly one terminal state and its
Result is delivered exactly once; an attempt cut short by cancellation or the
timeout still gets its metric event (``cancelled`` / ``timeout``); an adapter
that raises something other than ``ProviderError`` produces a failed attempt
with code ``unknown``, never a crashed task group.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import anyio
from anyio.abc import TaskStatus

from runner._context import TaskExecutionContext, build_result, cost_of, resolve, result_of
from runner._errors import ProviderError, UsageError
from runner._log import ExecutionLog
from runner._policy import RetryPolicy, counts_toward_cooldown
from runner._ratelimit import RateLimiter, rate_limiter_for
from runner._registry import Registry, Route
from runner._states import TERMINAL, move
from runner._task import ErrorInfo, HistoryEntry, Result, Status
from runner.config._model import ProviderConfig
from runner.metrics._events import MetricEvent
from runner.metrics._writer import MetricsSink
from workers._base import CompletionRequest, CompletionResponse, Provider

#: Seconds a cancelled attempt may take to hand over its metric event.
EMIT_DEADLINE = 5.0

Observer = Callable[[TaskExecutionContext, HistoryEntry], None]


class _Lane:
    """Everything the hot path needs about one provider, looked up once.

    ``limiter`` is ``None`` when the provider admits at least ``concurrency``
    calls: only the ``concurrency`` workers ever make attempts (workflow
    stages go through the same queue), so such a limit can never bind, and
    skipping it saves two task lookups per attempt.
    """

    __slots__ = ("config", "limiter", "provider", "rate")

    def __init__(
        self,
        config: ProviderConfig,
        provider: Provider,
        rate: RateLimiter | None,
        *,
        concurrency: int,
    ) -> None:
        self.config = config
        self.provider = provider
        self.limiter = (
            anyio.CapacityLimiter(config.max_concurrency)
            if config.max_concurrency < concurrency
            else None
        )
        self.rate = rate


class Counters:
    """Running totals for :meth:`runner.Runner.statistics`."""

    __slots__ = ("cancelled", "completed", "failed", "fallbacks", "retries")

    def __init__(self) -> None:
        self.completed = self.failed = self.cancelled = 0
        self.retries = self.fallbacks = 0


class Dispatcher:
    """The queue, the worker pool and the per-task retry/fallback loop."""

    def __init__(
        self,
        registry: Registry,
        providers: Mapping[str, Provider],
        provider_configs: Mapping[str, ProviderConfig],
        *,
        sink: MetricsSink,
        policy: RetryPolicy,
        log: ExecutionLog,
        concurrency: int,
        queue_size: int,
        clock: Callable[[], float],
        wall: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        observer: Observer | None = None,
    ) -> None:
        self._registry = registry
        self._sink = sink
        self._policy = policy
        self._log = log
        self._concurrency = concurrency
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._observer = observer
        self._lanes = {
            pid: _Lane(
                cfg,
                providers[pid],
                rate_limiter_for(cfg.rate_limit, clock=clock, sleep=sleep),
                concurrency=concurrency,
            )
            for pid, cfg in provider_configs.items()
        }
        self._send, self._receive = anyio.create_memory_object_stream[TaskExecutionContext](
            queue_size
        )
        #: Every accepted, not yet terminal context (plain tasks, stages, workflows).
        self.live: set[TaskExecutionContext] = set()
        self.counters = Counters()
        self._closing = False
        self._idle: anyio.Event | None = None
        # Event ids: a random prefix per dispatcher plus a counter is unique
        # across runs and far cheaper than a uuid4 per attempt.
        self._event_prefix = uuid.uuid4().hex[:16]
        self._event_seq = itertools.count(1)

    def now(self) -> float:
        """The dispatcher's monotonic clock (injected in tests)."""
        return self._clock()

    def wall_now(self) -> float:
        """The dispatcher's wall clock, seconds since the epoch."""
        return self._wall()

    @property
    def closing(self) -> bool:
        """True once shutdown began: no task is accepted any more."""
        return self._closing

    # -- the worker pool ------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the worker pool until the queue is closed and drained.

        Ready (``task_status.started()``) once every worker is waiting for work.
        """
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self._concurrency):
                    tg.start_soon(self._worker)
                task_status.started()
        finally:
            # Senders still waiting (there are none after close()) would get
            # BrokenResourceError; the stream must not outlive the pool.
            self._receive.close()

    async def _worker(self) -> None:
        receive = self._receive
        while True:
            # receive() always yields to the event loop first; when work is
            # waiting that round trip is pure overhead.
            try:
                ctx = receive.receive_nowait()
            except anyio.WouldBlock:
                try:
                    ctx = await receive.receive()
                except anyio.EndOfStream:
                    return
            except anyio.EndOfStream:
                return
            # A task cancelled while queued was settled then; skip it.
            if ctx.result is None:
                await self._run(ctx)

    async def _run(self, ctx: TaskExecutionContext) -> None:
        scope = ctx.scope = anyio.CancelScope()
        with scope:
            try:
                await self._execute(ctx)
            except anyio.get_cancelled_exc_class():
                # Ours (handle.cancel, shutdown) or the surrounding scope's:
                # either way the task ends cancelled before the worker goes on
                # or goes away.
                self.finish_cancelled(ctx)
                raise
            except Exception as exc:
                # A bug in runner or in a metrics sink: the task fails with
                # ``unknown`` instead of taking the whole pool down.
                self._log.problem("task_crashed", task_id=ctx.id, exception=type(exc).__name__)
                self.finish_crashed(ctx, exc)
        ctx.scope = None

    # -- one task -------------------------------------------------------------------

    async def _execute(self, ctx: TaskExecutionContext) -> None:
        chain = ctx.chain
        if chain is None:
            raise RuntimeError(f"task {ctx.id!r} has no chain")
        registry = self._registry
        policy = self._policy
        routes = chain.routes
        index = 0
        tries = 0  # attempts on the current provider
        while True:
            selection = registry.select(chain, index)
            route = selection.route
            if route is None:
                # Every remaining provider is cooling down: wait for the first
                # to recover rather than fail the task.
                wait_until = selection.wait_until or 0.0
                await self._sleep(max(0.0, wait_until - self._clock()))
                continue
            if selection.index != index:
                index, tries = selection.index, 0
            pid = route.provider.id
            tries += 1
            outcome = await self._attempt(ctx, route, fallback=index > 0)
            if isinstance(outcome, CompletionResponse):
                ctx.response = outcome
                registry.record_success(pid)
                self.record(
                    ctx, "completed", provider=pid, attempt=ctx.attempts, latency_ms=ctx.latency_ms
                )
                self.settle(ctx, build_result(ctx))
                return
            error = outcome
            if counts_toward_cooldown(error.code):
                registry.record_failure(pid)
            ctx.error = ErrorInfo(
                code=error.code, message=error.message, provider=pid, retryable=error.retryable
            )
            delay = policy.retry_delay(error, tries)
            if delay is None:
                index, tries = index + 1, 0
                if index >= len(routes):
                    self.record(
                        ctx, "failed", provider=pid, attempt=ctx.attempts, error_code=error.code
                    )
                    self.settle(ctx, build_result(ctx))
                    return
                self.counters.fallbacks += 1
            else:
                self.counters.retries += 1
            self.record(ctx, "retrying", provider=pid, attempt=ctx.attempts, error_code=error.code)
            if delay:
                await self._sleep(delay)

    async def _attempt(
        self, ctx: TaskExecutionContext, route: Route, *, fallback: bool
    ) -> CompletionResponse | ProviderError:
        """One call to one provider; always emits exactly one metric event.

        The task moves to ``running`` only once the provider's rate limit and
        concurrency limit let the call start, so waiting for capacity counts
        as queued time, not as attempt latency.
        """
        config = route.provider
        pid = config.id
        lane = self._lanes[pid]
        if lane.rate is not None:
            await lane.rate.acquire()
        outcome: CompletionResponse | ProviderError | None = None
        limiter = lane.limiter
        if limiter is not None:
            # The non-blocking try first: anyio's acquire() always yields to
            # the event loop, a full scheduler round trip per attempt.
            try:
                limiter.acquire_nowait()
            except anyio.WouldBlock:
                await limiter.acquire()
        try:
            ctx.attempts += 1
            ctx.provider = pid
            if fallback:
                ctx.fallback_used = True
            if ctx.started_at is None:
                ctx.started_at = self._clock()
            self.record(ctx, "running", provider=pid, attempt=ctx.attempts)
            params = ctx.task.parameters
            request = CompletionRequest(
                messages=ctx.messages,
                system=ctx.system,
                parameters=route.parameters if params is None else params.over(route.parameters),
                task_id=ctx.id,
                attempt=ctx.attempts,
            )
            wall = self._wall()
            start = self._clock()
            # A bare deadline scope rather than fail_after: same effect, one
            # generator-based context manager less per attempt.  The deadline
            # is in the event loop's time, not the injected clock's: that one
            # is time.monotonic (trio's clock differs) or a test's fake clock.
            deadline = anyio.CancelScope(deadline=anyio.current_time() + config.timeout)
            try:
                with deadline:
                    outcome = await lane.provider.complete(request)
            except ProviderError as exc:
                outcome = exc
            except TimeoutError:
                outcome = None  # the adapter's own timeout: reported like ours
            except anyio.get_cancelled_exc_class():
                latency = (self._clock() - start) * 1000
                with anyio.move_on_after(EMIT_DEADLINE, shield=True):
                    await self._emit(ctx, config, wall, latency, None, "cancelled")
                raise
            except Exception as exc:
                # The adapter has a bug; its message could carry anything, so
                # only the exception type is kept.
                self._log.problem(
                    "provider_crashed",
                    task_id=ctx.id,
                    provider=pid,
                    exception=type(exc).__name__,
                )
                outcome = ProviderError(
                    "unknown",
                    f"provider adapter raised {type(exc).__name__}",
                    provider=pid,
                    retryable=False,
                )
            if outcome is None:
                outcome = ProviderError(
                    "timeout", f"no answer within {config.timeout:g}s", provider=pid
                )
            latency = (self._clock() - start) * 1000
        finally:
            if limiter is not None:
                limiter.release()
        if isinstance(outcome, CompletionResponse):
            ctx.latency_ms = latency
            ctx.cost_usd = cost_of(outcome.usage, config)
            if lane.rate is not None:
                lane.rate.charge(outcome.usage.total_tokens)
            await self._emit(ctx, config, wall, latency, outcome, None)
        else:
            await self._emit(ctx, config, wall, latency, None, outcome.code)
        return outcome

    async def _emit(
        self,
        ctx: TaskExecutionContext,
        config: ProviderConfig,
        wall: float,
        latency_ms: float,
        response: CompletionResponse | None,
        error_code: str | None,
    ) -> None:
        usage = response.usage if response is not None else None
        await self._sink.send(
            MetricEvent(
                event_id=f"{self._event_prefix}{next(self._event_seq):x}",
                task_id=ctx.id,
                provider=config.id,
                role=ctx.role or "default",
                model=response.model if response is not None else config.model,
                attempt=ctx.attempts,
                ts=datetime.fromtimestamp(wall, UTC),
                latency_ms=latency_ms,
                success=response is not None,
                error_code=error_code,
                input_tokens=usage.input_tokens if usage is not None else 0,
                output_tokens=usage.output_tokens if usage is not None else 0,
                cost_usd=(ctx.cost_usd or 0.0) if response is not None else 0.0,
            )
        )

    # -- status, results, cancellation ---------------------------------------------

    def record(
        self,
        ctx: TaskExecutionContext,
        status: Status,
        *,
        provider: str | None = None,
        attempt: int | None = None,
        error_code: str | None = None,
        latency_ms: float | None = None,
    ) -> HistoryEntry:
        """Move ``ctx`` to ``status`` (or raise), then log and observe the move."""
        entry = move(
            ctx, status, provider=provider, at=self._wall(), attempt=attempt, error_code=error_code
        )
        if status in TERMINAL:
            ctx.finished_at = self._clock()
            counters = self.counters
            if ctx.chain is not None:
                if status == "completed":
                    counters.completed += 1
                elif status == "failed":
                    counters.failed += 1
                else:
                    counters.cancelled += 1
        if self._log.enabled:
            self._log.move(ctx.id, ctx.role, entry, latency_ms=latency_ms, workflow=ctx.workflow)
        if self._observer is not None:
            try:
                self._observer(ctx, entry)
            except Exception as exc:
                self._log.problem("observer_failed", task_id=ctx.id, exception=type(exc).__name__)
        return entry

    def settle(self, ctx: TaskExecutionContext, result: Result) -> None:
        """Deliver a terminal context's Result (once) and forget the context."""
        resolve(ctx, result)
        live = self.live
        live.discard(ctx)
        if not live and self._idle is not None:
            self._idle.set()

    def finish_cancelled(self, ctx: TaskExecutionContext, message: str | None = None) -> None:
        """End a task (or workflow) as cancelled, whatever non-terminal state it is in."""
        if ctx.status in TERMINAL or ctx.result is not None:
            return
        ctx.error = ErrorInfo(
            code="cancelled",
            message=message
            or (
                "cancelled before it ran" if ctx.status == "pending" else "cancelled while running"
            ),
            provider=ctx.provider,
            retryable=False,
        )
        self.record(ctx, "cancelled", provider=ctx.provider, attempt=ctx.attempts or None)
        self.settle(ctx, result_of(ctx))

    def finish_crashed(self, ctx: TaskExecutionContext, exc: Exception) -> None:
        """End a task whose own code raised: ``failed`` with code ``unknown``.

        ``pending -> failed`` is not a legal move, so a task that crashed before
        its first attempt ends ``cancelled`` (still with code ``unknown``).
        """
        if ctx.status in TERMINAL or ctx.result is not None:
            return
        ctx.error = ErrorInfo(
            code="unknown",
            message=f"internal error: {type(exc).__name__}",
            provider=ctx.provider,
            retryable=False,
        )
        status: Status = "cancelled" if ctx.status == "pending" else "failed"
        self.record(ctx, status, provider=ctx.provider, attempt=ctx.attempts or None)
        self.settle(ctx, result_of(ctx))

    def request_cancel(self, ctx: TaskExecutionContext) -> None:
        """Cancel ``ctx`` in any state; a no-op once it is terminal.

        A queued task is settled at once; a running one (or a workflow) has its
        scope cancelled, and its own code settles it.
        """
        if ctx.result is not None:
            return
        if ctx.scope is not None:
            ctx.scope.cancel()
        else:
            # Not started (queued, or a workflow whose coroutine has not run
            # yet): settled now; whoever picks it up later sees the Result.
            self.finish_cancelled(ctx)

    # -- intake ---------------------------------------------------------------------

    def accept(self, ctx: TaskExecutionContext) -> None:
        """Count ``ctx`` as accepted: from now on it will get exactly one Result."""
        if self._closing:
            raise UsageError("the runner is shutting down; no new tasks are accepted")
        self.live.add(ctx)

    async def enqueue(self, ctx: TaskExecutionContext) -> None:
        """Accept a plain task and queue it, waiting while the queue is full."""
        self.accept(ctx)
        try:
            try:
                self._send.send_nowait(ctx)
            except anyio.WouldBlock:
                await self._send.send(ctx)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            # Shutdown closed the queue while we waited; it also cancelled ctx.
            self.finish_cancelled(ctx, "cancelled at shutdown")
        except BaseException:
            # The caller was cancelled while waiting for room: the task was
            # accepted, so it still ends with a Result.
            self.finish_cancelled(ctx)
            raise

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

    # -- shutdown -------------------------------------------------------------------

    def close(self) -> None:
        """Stop intake: later tasks are refused and every queued task is cancelled."""
        if self._closing:
            return
        self._closing = True
        self._send.close()
        for ctx in list(self.live):
            if ctx.scope is None:
                self.request_cancel(ctx)

    async def shutdown(self, grace: float) -> None:
        """Close, give running tasks ``grace`` seconds, then cancel what is left.

        Returns once every accepted task has its Result.
        """
        self.close()
        with anyio.move_on_after(grace):
            await self._wait_idle()
        for ctx in list(self.live):
            self.request_cancel(ctx)
        await self._wait_idle()

    def sweep(self) -> None:
        """Settle every context still without a Result as cancelled (synchronous).

        The last resort when the surrounding scope is cancelled: queued tasks
        that no worker will pick up get their Result here.
        """
        self.close()
        for ctx in list(self.live):
            self.finish_cancelled(ctx, "cancelled at shutdown")
            self.live.discard(ctx)

    async def _wait_idle(self) -> None:
        while self.live:
            self._idle = anyio.Event()
            await self._idle.wait()
