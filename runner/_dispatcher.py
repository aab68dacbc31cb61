"""The dispatcher: runs each task along its role's chain to one terminal state.

Tasks arrive as :class:`~runner._context.TaskExecutionContext` through a
bounded :class:`~runner._queue.TaskQueue` (``enqueue`` waits while it is
full: that is the backpressure).  A fixed pool of ``concurrency`` workers
(bare asyncio tasks, :class:`~runner._pool.WorkerPool`; anyio's task group on
trio) reads the queue, so the global limit costs nothing per task; each provider has a
``CapacityLimiter`` of its ``max_concurrency`` and, when configured, a
:class:`~runner._ratelimit.RateLimiter`; given
:class:`~runner._ratelimit.SharedLimits` (cluster mode), each provider's
shared :class:`~runner._ratelimit.Admission` replaces that rate limiter, is
entered inside the attempt's scope just before the call and left however the
call ends, and each call's success or counted failure goes to the shared
consecutive-failure count, which decides on cooldowns for every process.

Per task a worker: selects the first provider of the chain that is not
cooling down (waiting for the earliest recovery when all are), makes an
attempt under the provider's timeout, records exactly one metric event for
it, and asks :class:`~runner._policy.RetryPolicy` whether to retry the same
provider (after a wait) or fall back to the next.  Status moves, Results and
the crash and cancellation paths belong to :class:`~runner._supervise.Supervisor`;
a worker runs each task as its ``supervise`` would, inlined in the worker's
frame (a coroutine fewer per task in flight).  A metric event goes through the
sink's ``send_nowait`` when it has one and room, else through ``await send()``.

An attempt owns exactly one cancel scope (:mod:`runner._scope`: anyio's on
trio, a lighter one with the same behaviour on asyncio).  It covers the wait before the
attempt (the retry delay, a chain cooling down, the provider's rate and
concurrency limits) and the call; its deadline is the call's start plus the
provider's ``timeout`` (set on the scope by :class:`~runner._deadline.Deadlines`
once the call outlives a tick), so only the call is timed and one timeout
(``no response within N s``) is all a user ever sees, whatever the adapter.
``handle.cancel()`` cancels the scope of the attempt in progress, or marks
the task so that it stops before its next one.

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

import anyio
from anyio.abc import TaskStatus

from runner._context import TaskExecutionContext, cost_of
from runner._deadline import Deadlines
from runner._errors import ProviderError, ShuttingDown
from runner._log import ExecutionLog
from runner._policy import RetryPolicy, counts_toward_cooldown
from runner._pool import WorkerPool
from runner._queue import TaskQueue
from runner._ratelimit import Admission, RateLimiter, SharedLimits, rate_limiter_for
from runner._registry import Chain, Registry
from runner._scope import AsyncioScope, AttemptScope, scope_factory
from runner._supervise import Observer, Supervisor
from runner._task import ErrorInfo, Result
from runner.config._model import ProviderConfig
from runner.metrics._events import MetricEvent
from runner.metrics._writer import MetricsSink
from workers._base import CompletionRequest, CompletionResponse, Provider

#: Seconds a cancelled attempt may take to hand over its metric event.
EMIT_DEADLINE = 5.0

#: What one attempt came to: the provider's answer or error, or ``None`` when
#: the task was cancelled before or during it.
Outcome = CompletionResponse | ProviderError | None


class _Lane:
    """Everything the hot path needs about one provider, looked up once.

    ``limiter`` is ``None`` when the provider admits at least ``concurrency``
    calls: only the ``concurrency`` workers ever make attempts (workflow
    stages go through the same queue), so such a limit can never bind, and
    skipping it saves two task lookups per attempt.
    """

    __slots__ = ("config", "limiter", "provider", "rate", "shared")

    def __init__(
        self,
        config: ProviderConfig,
        provider: Provider,
        rate: RateLimiter | None,
        *,
        concurrency: int,
        shared: Admission | None = None,
    ) -> None:
        self.config = config
        self.provider = provider
        #: Limits shared with other processes; they replace the in-memory rate limiter.
        self.shared = shared
        self.limiter = (
            anyio.CapacityLimiter(config.max_concurrency)
            if config.max_concurrency < concurrency
            else None
        )
        self.rate = rate


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
        limits: SharedLimits | None = None,
    ) -> None:
        self._registry = registry
        self._limits = limits
        self._sink = sink
        # A sink that can take an event without waiting (see _offer).
        self._send_nowait: Callable[[MetricEvent], bool] | None = getattr(sink, "send_nowait", None)
        self._policy = policy
        self._log = log
        self._concurrency = concurrency
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self.supervisor = Supervisor(log=log, clock=clock, wall=wall, observer=observer)
        self._lanes = {
            pid: _Lane(
                cfg,
                providers[pid],
                None
                if limits is not None
                else rate_limiter_for(cfg.rate_limit, clock=clock, sleep=sleep),
                concurrency=concurrency,
                shared=None if limits is None else limits.admission(cfg),
            )
            for pid, cfg in provider_configs.items()
        }
        self._queue: TaskQueue[TaskExecutionContext] = TaskQueue(queue_size)
        # The running backend's attempt scope class, looked up once in serve():
        # anyio.CancelScope() asks sniffio for the backend on every call.
        self._scope_class: Callable[[], AttemptScope] = anyio.CancelScope
        self._deadlines = Deadlines(cfg.timeout for cfg in provider_configs.values())
        self._closing = False
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
        self._scope_class = scope_factory()
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._deadlines.watch)
                if self._scope_class is AsyncioScope:
                    pool = WorkerPool(self._worker, self._concurrency)
                    task_status.started()
                    await pool.join(self.cancel_all, EMIT_DEADLINE)
                else:
                    async with anyio.create_task_group() as group:
                        for _ in range(self._concurrency):
                            group.start_soon(self._worker)
                        task_status.started()
                outer.cancel_scope.cancel()  # the pool is done: no call needs a deadline
        finally:
            # No sender may wait on a queue nobody reads any more.
            self._queue.close()

    async def _worker(self) -> None:
        """Run queued tasks one after the other, each to one terminal state.

        A task runs in this frame: what ``Supervisor.supervise(ctx, body)``
        does (settle once, a crash ``failed``, a cancellation settled and
        propagated) and the retry/fallback loop are inlined here, so a task in
        flight costs one coroutine (its attempt) besides the provider's call
        instead of three: fewer objects for the garbage collector to walk and
        fewer frames to pass through on every wake-up.
        """
        # No bound methods held in locals: each would be one more object per
        # worker for the garbage collector to walk as long as the worker lives.
        queue, supervisor = self._queue, self.supervisor
        cancelled = anyio.get_cancelled_exc_class()
        while True:
            # A queued task is taken without the get() coroutine; none waits.
            ctx = queue.get_nowait()
            if ctx is None:
                ctx = await queue.get()
                if ctx is None:
                    return  # closed and drained
            if ctx.result is not None:
                continue  # cancelled while queued: settled then
            chain = ctx.chain
            if chain is None:
                supervisor.finish_crashed(ctx, RuntimeError(f"task {ctx.id!r} has no chain"))
                continue
            try:
                index = tries = 0  # the chain position, attempts on its provider
                delay = 0.0
                while True:
                    if ctx.cancel_requested:
                        # Asked while this task was between two attempts' scopes.
                        supervisor.end_cancelled(ctx)
                        break
                    chosen, outcome = await self._attempt(ctx, chain, index, delay)
                    if outcome is None:
                        supervisor.end_cancelled(ctx)
                        break
                    if chosen != index:
                        index, tries = chosen, 0
                    step = self._after(ctx, chain, outcome, index, tries + 1)
                    if step is None:
                        break  # terminal
                    index, tries, delay = step
            except cancelled:
                supervisor.finish_cancelled(ctx)
                raise
            except Exception as exc:
                supervisor.finish_crashed(ctx, exc)
                continue
            supervisor.conclude(ctx)

    # -- one task -------------------------------------------------------------------

    def _after(
        self,
        ctx: TaskExecutionContext,
        chain: Chain,
        outcome: CompletionResponse | ProviderError,
        index: int,
        tries: int,
    ) -> tuple[int, int, float] | None:
        """Record an attempt's outcome; the next (position, tries, delay), or None once terminal.

        ``tries`` counts the attempts on the provider at ``index``, this one included.
        """
        supervisor = self.supervisor
        pid = ctx.provider
        if isinstance(outcome, CompletionResponse):
            ctx.response = outcome
            if self._limits is not None:
                self._limits.record_success(pid or "")
            else:
                self._registry.record_success(pid or "")
            supervisor.record(
                ctx, "completed", provider=pid, attempt=ctx.attempts, latency_ms=ctx.latency_ms
            )
            return None
        error = outcome
        if counts_toward_cooldown(error.code):
            # Shared limits count failures across the cluster, which then
            # decides on the cooldown and announces it to every worker.
            if self._limits is not None:
                self._limits.record_failure(pid or "")
            else:
                self._registry.record_failure(pid or "")
        ctx.error = ErrorInfo(
            code=error.code, message=error.message, provider=pid, retryable=error.retryable
        )
        wait = self._policy.retry_delay(error, tries)
        if wait is None:
            index, tries = index + 1, 0
            if index >= len(chain.routes):
                supervisor.record(
                    ctx, "failed", provider=pid, attempt=ctx.attempts, error_code=error.code
                )
                return None
            supervisor.counters.fallbacks += 1
            wait = 0.0
        else:
            supervisor.counters.retries += 1
        supervisor.record(
            ctx, "retrying", provider=pid, attempt=ctx.attempts, error_code=error.code
        )
        return index, tries, wait

    async def _attempt(
        self, ctx: TaskExecutionContext, chain: Chain, index: int, delay: float
    ) -> tuple[int, Outcome]:
        """One attempt from the chain position ``index`` on, after waiting ``delay`` seconds.

        Returns the chain position of the provider used and the outcome.  The
        task moves to ``running`` only once the provider's rate limit and
        concurrency limit let the call start, so waiting for capacity counts
        as queued time, not as attempt latency.  Every call made gets exactly
        one metric event, also when it is cut short.
        """
        scope = ctx.scope = self._scope_class()
        outcome: Outcome = None
        calling = False
        start = wall = 0.0
        config: ProviderConfig | None = None
        try:
            # `with scope:` spelled out: a with block keeps its bound __exit__
            # alive until it ends, one more object per call in flight for the
            # garbage collector to walk (thousands of them in a big run).
            scope.__enter__()
            try:
                if delay:
                    await self._sleep(delay)
                selection = self._registry.select(chain, index)
                while selection.route is None:
                    # Every remaining provider is cooling down: wait for the
                    # first to recover rather than fail the task.
                    wait_until = selection.wait_until or 0.0
                    await self._sleep(max(0.0, wait_until - self._clock()))
                    selection = self._registry.select(chain, index)
                index = selection.index
                route = selection.route
                config = route.provider
                pid = config.id
                lane = self._lanes[pid]
                if lane.rate is not None:
                    await lane.rate.acquire()
                limiter = lane.limiter
                if limiter is not None:
                    # The non-blocking try first: anyio's acquire() always
                    # yields to the event loop, a round trip per attempt.
                    try:
                        limiter.acquire_nowait()
                    except anyio.WouldBlock:
                        await limiter.acquire()
                shared = lane.shared
                entered = False
                tokens = 0
                try:
                    if shared is not None:
                        await shared.enter()
                        entered = True
                    attempt = ctx.attempts + 1
                    # The move first: if it fails (a raising observer) no call
                    # was made, so there is no attempt to count or record.
                    self.supervisor.record(ctx, "running", provider=pid, attempt=attempt)
                    ctx.attempts = attempt
                    ctx.provider = pid
                    ctx.model = config.model
                    if index:
                        ctx.fallback_used = True
                    if ctx.started_at is None:
                        ctx.started_at = self._clock()
                    params = ctx.task.parameters
                    request = CompletionRequest(
                        messages=ctx.messages,
                        system=ctx.system,
                        parameters=route.parameters
                        if params is None
                        else params.over(route.parameters),
                        task_id=ctx.id,
                        attempt=attempt,
                    )
                    wall = self._wall()
                    start = self._clock()
                    # The deadline, in the event loop's time (not the injected
                    # clock's), is set on this scope if the call outlives a tick.
                    self._deadlines.start(scope, config.timeout)
                    calling = True
                    try:
                        outcome = await lane.provider.complete(request)
                    except ProviderError as exc:
                        outcome = exc
                    except TimeoutError:
                        pass  # the adapter's own timeout: reported like ours, below
                    except Exception as exc:
                        outcome = self._adapter_bug(ctx, pid, exc)
                    if isinstance(outcome, CompletionResponse):
                        tokens = outcome.usage.total_tokens
                finally:
                    if calling:
                        self._deadlines.end(scope)
                    if entered and shared is not None:
                        shared.leave(tokens)
                    if limiter is not None:
                        limiter.release()
            except BaseException as exc:
                if not scope.__exit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                scope.__exit__(None, None, None)
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside (shutdown, a cancelled caller): the call
            # in flight still gets its event before the task ends cancelled.
            ctx.scope = None
            if calling and outcome is None and config is not None:
                latency = (self._clock() - start) * 1000
                with anyio.move_on_after(EMIT_DEADLINE, shield=True):
                    await self._emit_quietly(ctx, config, wall, latency, "cancelled")
            raise
        finally:
            # Whatever ended the attempt, nothing may cancel its spent scope.
            ctx.scope = None
        if config is None or not calling:
            return index, None  # cancelled while waiting for its turn: no call was made
        latency = (self._clock() - start) * 1000
        if isinstance(outcome, CompletionResponse):
            ctx.latency_ms = latency
            cost = ctx.cost_usd = cost_of(outcome.usage, config)
            lane = self._lanes[config.id]
            if lane.rate is not None:
                lane.rate.charge(outcome.usage.total_tokens)
            event = self._event(ctx, config, wall, latency, outcome, None, cost)
            send_nowait = self._send_nowait  # _offer, inlined on the success path
            if send_nowait is None or not send_nowait(event):
                await self._sink.send(event)
            return index, outcome
        if outcome is None:
            if ctx.cancel_requested:
                await self._sink.send(
                    self._event(ctx, config, wall, latency, None, "cancelled", 0.0)
                )
                return index, None
            outcome = ProviderError(
                "timeout", f"no response within {config.timeout:g} s", provider=config.id
            )
        event = self._event(ctx, config, wall, latency, None, outcome.code, 0.0)
        if not self._offer(event):
            await self._sink.send(event)
        return index, outcome

    def _adapter_bug(self, ctx: TaskExecutionContext, pid: str, exc: Exception) -> ProviderError:
        # Only the exception type is kept: its message could carry anything.
        self.supervisor.problem("provider_crashed", ctx, exc)
        return ProviderError(
            "unknown",
            f"provider adapter raised {type(exc).__name__}",
            provider=pid,
            retryable=False,
        )

    def _offer(self, event: MetricEvent) -> bool:
        """Hand ``event`` to the sink without waiting, if it can take it now; False if not.

        Most events fit in the writer's stream at once: sending them through
        ``send_nowait`` spares two coroutines per attempt.  A sink without
        that method, or a full one (backpressure), gets ``await send()``.
        """
        send_nowait = self._send_nowait
        return send_nowait is not None and send_nowait(event)

    def _event(
        self,
        ctx: TaskExecutionContext,
        config: ProviderConfig,
        wall: float,
        latency_ms: float,
        response: CompletionResponse | None,
        error_code: str | None,
        cost_usd: float,
    ) -> MetricEvent:
        usage = response.usage if response is not None else None
        return MetricEvent(
            event_id=f"{self._event_prefix}{next(self._event_seq):x}",
            task_id=ctx.id,
            provider=config.id,
            role=ctx.role or "default",
            model=response.model if response is not None else config.model,
            attempt=ctx.attempts,
            ts_us=round(wall * 1_000_000),
            latency_ms=latency_ms,
            success=response is not None,
            error_code=error_code,
            input_tokens=usage.input_tokens if usage is not None else 0,
            output_tokens=usage.output_tokens if usage is not None else 0,
            cost_usd=cost_usd,
            tags=ctx.task.tags or (),
        )

    async def _emit_quietly(
        self,
        ctx: TaskExecutionContext,
        config: ProviderConfig,
        wall: float,
        latency_ms: float,
        error_code: str,
    ) -> None:
        """An attempt's event on the way out of a cancellation: a failing sink is logged.

        Raising here would replace the cancellation with the sink's error.
        """
        try:
            await self._sink.send(self._event(ctx, config, wall, latency_ms, None, error_code, 0.0))
        except Exception as exc:
            self.supervisor.problem("metrics_failed", ctx, exc)

    # -- cancellation and waiting ---------------------------------------------------

    @property
    def live(self) -> set[TaskExecutionContext]:
        """Every accepted context without its Result yet."""
        return self.supervisor.live

    def request_cancel(self, ctx: TaskExecutionContext) -> None:
        """Cancel ``ctx`` in any state (see :meth:`Supervisor.request_cancel`)."""
        self.supervisor.request_cancel(ctx)

    async def wait(self, ctx: TaskExecutionContext) -> Result:
        """The Result of ``ctx``, once it has one."""
        return await self.supervisor.wait(ctx)

    # -- intake ---------------------------------------------------------------------

    def accept(self, ctx: TaskExecutionContext) -> None:
        """Count ``ctx`` as accepted: from now on it will get exactly one Result."""
        if self._closing:
            raise ShuttingDown("the runner is shutting down; no new tasks are accepted")
        self.supervisor.live.add(ctx)

    def enqueue_nowait(self, ctx: TaskExecutionContext) -> bool:
        """Accept a plain task and queue it if there is room now; False (not accepted) if not.

        Raises :class:`ShuttingDown` once closing, as :meth:`accept` does.
        """
        if self._closing:
            raise ShuttingDown("the runner is shutting down; no new tasks are accepted")
        try:
            if not self._queue.put_nowait(ctx):
                return False
        except anyio.ClosedResourceError:
            # The pool is gone (it ended without a shutdown): cancelled, as enqueue does.
            self.supervisor.live.add(ctx)
            self.supervisor.finish_cancelled(ctx, "cancelled at shutdown")
            return True
        # Handed to a worker at most: none runs before this returns.
        self.supervisor.live.add(ctx)
        return True

    async def enqueue(self, ctx: TaskExecutionContext) -> None:
        """Accept a plain task and queue it, waiting while the queue is full."""
        self.accept(ctx)
        try:
            if not self._queue.put_nowait(ctx):
                await self._queue.put(ctx)
        except anyio.ClosedResourceError:
            # Shutdown closed the queue while we waited; it also cancelled ctx.
            self.supervisor.finish_cancelled(ctx, "cancelled at shutdown")
        except BaseException:
            # The caller was cancelled while waiting for room: the task was
            # accepted, so it still ends with a Result.
            self.supervisor.finish_cancelled(ctx)
            raise

    # -- shutdown -------------------------------------------------------------------

    def close(self) -> None:
        """Stop intake: later tasks are refused and every queued task is cancelled."""
        if self._closing:
            return
        self._closing = True
        self._queue.close()
        for ctx in list(self.supervisor.live):
            # Not started: a queued task, or a workflow whose coroutine has not run.
            if ctx.scope is None and ctx.status == "pending":
                self.supervisor.request_cancel(ctx)

    async def shutdown(self, grace: float) -> None:
        """Close, give running tasks ``grace`` seconds, then cancel what is left.

        Returns once every accepted task has its Result.
        """
        self.close()
        with anyio.move_on_after(grace):
            await self.supervisor.wait_idle()
        self.cancel_all()
        await self.supervisor.wait_idle()

    def cancel_all(self) -> None:
        """Close intake and cancel every task, at once (no grace).

        How a runner leaving on an error stops, and how the asyncio worker
        pool stops its workers: each ends its task the ordinary way.
        """
        self.close()
        for ctx in list(self.supervisor.live):
            self.supervisor.request_cancel(ctx)

    def sweep(self) -> None:
        """Settle every context still without a Result as cancelled (synchronous).

        The last resort when the surrounding scope is cancelled: queued tasks
        that no worker will pick up get their Result here.
        """
        self.close()
        live = self.supervisor.live
        for ctx in list(live):
            self.supervisor.finish_cancelled(ctx, "cancelled at shutdown")
            live.discard(ctx)
