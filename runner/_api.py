"""The async Python API: :class:`Runner`, :class:`TaskHandle`, :class:`RunnerStatistics`.

::

    async with Runner.from_config("runner.yaml") as runner:
        result = await runner.run(Task(role="coder", prompt="..."))
        handle = await runner.submit(Task(role="reviewer", prompt="..."))
        await handle.cancel()                  # or: result = await handle
        async for result in runner.run_many(tasks):
            ...
        result = await runner.run_workflow("default", input="...")

A Runner owns one task group: the dispatcher's worker pool and the running
workflows live in it, and leaving the ``async with`` block shuts it down
(gracefully on a normal exit; at once on an error or a cancelled scope).
Every task it accepts ends with exactly one Result, whatever happens.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Mapping,
)
from contextlib import AsyncExitStack
from types import MappingProxyType, TracebackType
from typing import Any, Final, TextIO

import anyio
import msgspec
from anyio.abc import TaskGroup
from msgspec import Struct

from runner._context import TaskExecutionContext, new_context, resolve
from runner._dispatcher import Dispatcher
from runner._errors import ErrorCode, InvalidValueError, ShuttingDown, UsageError
from runner._log import FLUSH_DELAY, ExecutionLog, LineWriter, configure_logging
from runner._policy import RetryPolicy
from runner._queue import Inbox
from runner._ratelimit import SharedLimits
from runner._registry import Notice, Registry, disabled_message
from runner._results import not_run, rejected
from runner._supervise import Observer
from runner._task import FinalStatus, Result, Status, Task, explain_validation
from runner._task_check import task_problem
from runner._workflow import known_workflows, run_workflow
from runner.config._model import Config, WorkflowConfig
from runner.metrics._writer import MetricsSink, open_metrics_writer
from workers._base import Provider

#: What the API takes as a task: a Task, or a mapping of its fields as in a tasks file.
TaskInput = Task | Mapping[str, Any]

#: Seconds closing the provider adapters may take when the runner exits.
CLOSE_DEADLINE = 5.0


class RunnerStatistics(Struct, frozen=True, kw_only=True):
    """A snapshot of a runner's tasks (plain tasks and workflow stages, not workflows).

    ``queued`` and ``running`` are now; the rest are totals since the start.
    """

    queued: int
    running: int
    completed: int
    failed: int
    cancelled: int
    rejected: int
    retries: int
    fallbacks: int


class TaskHandle:
    """A submitted task: await it (or :meth:`wait`) for its Result, or cancel it."""

    __slots__ = ("_ctx", "_dispatcher", "id")

    def __init__(self, ctx: TaskExecutionContext, dispatcher: Dispatcher) -> None:
        self._ctx = ctx
        self._dispatcher = dispatcher
        #: The task's id (generated when the Task had none).
        self.id = ctx.id

    def status(self) -> Status | FinalStatus:
        """The current status; once done, the Result's (which may be ``rejected``)."""
        result = self._ctx.result
        return result.status if result is not None else self._ctx.status

    def done(self) -> bool:
        """Whether the Result is there."""
        return self._ctx.result is not None

    async def wait(self) -> Result:
        """The task's Result, once it has one."""
        return await self._dispatcher.wait(self._ctx)

    async def cancel(self) -> None:
        """Cancel the task in whatever state it is, and wait until it has its Result.

        The Result is ``cancelled`` unless the task had already finished.
        """
        self._dispatcher.request_cancel(self._ctx)
        await self._dispatcher.wait(self._ctx)

    def __await__(self) -> Generator[Any, None, Result]:
        return self.wait().__await__()

    def __repr__(self) -> str:
        return f"<TaskHandle id={self.id!r} status={self.status()!r}>"


class Runner:
    """Runs tasks and workflows for one config; use it as an async context manager."""

    def __init__(
        self,
        config: Config,
        *,
        concurrency: int | None = None,
        metrics: MetricsSink | None = None,
        providers: Mapping[str, Provider] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        observer: Observer | None = None,
        log_stream: TextIO | None = None,
        on_notice: Callable[[Notice], None] | None = None,
        limits: SharedLimits | None = None,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, not {concurrency}")
        self.config = config
        self._concurrency = concurrency if concurrency is not None else config.concurrency
        self._metrics = metrics
        self._given_providers = dict(providers or {})
        self._clock = clock if clock is not None else time.monotonic
        self._sleep = sleep if sleep is not None else anyio.sleep
        self._observer = observer
        self._log_stream = log_stream
        self._on_notice = on_notice
        self._limits = limits
        #: Said on the log when the runner opens (the bundled config is in use, say).
        self._notices: list[str] = []
        self._workflows: dict[str, WorkflowConfig] = known_workflows(config)
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:8]
        self._stack: AsyncExitStack | None = None
        self._dispatcher: Dispatcher | None = None
        self._registry: Registry | None = None
        self._tg: TaskGroup | None = None
        self._rejected = 0
        #: The sources of the run_many calls under way (see _Puller).
        self._pullers: set[_Puller] = set()

    @classmethod
    def from_config(
        cls,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        concurrency: int | None = None,
        metrics: MetricsSink | None = None,
        providers: Mapping[str, Provider] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        observer: Observer | None = None,
        log_stream: TextIO | None = None,
        on_notice: Callable[[Notice], None] | None = None,
        limits: SharedLimits | None = None,
    ) -> Runner:
        """A runner for ``config``: a Config, a path, or ``None`` to discover one.

        Discovery follows docs/configuration.md (``$RUNNER_CONFIG``, ``./runner.yaml``, then
        the bundled simulated config).  ``metrics`` and ``providers`` replace
        the configured metrics store and adapters (tests, embedding);
        ``clock``/``sleep`` replace monotonic time and waiting; ``observer`` is
        called on every status move; ``log_stream`` replaces stderr for the
        execution log; ``on_notice`` receives each :class:`Notice` (a provider
        disabled for a missing key, a role the config does not name, a
        cooldown starting or ending) instead of the execution log's warning;
        ``limits`` holds provider limits and cooldowns shared with other
        processes (cluster mode).
        """
        notices: list[str] = []
        if not isinstance(config, Config):
            from runner.config._load import discover_config, load_config

            if config is None:
                config = discover_config(None, notice=notices.append)
            else:
                config = load_config(config)
        runner = cls(
            config,
            concurrency=concurrency,
            metrics=metrics,
            providers=providers,
            clock=clock,
            sleep=sleep,
            observer=observer,
            log_stream=log_stream,
            on_notice=on_notice,
            limits=limits,
        )
        runner._notices = notices
        return runner

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> Runner:
        if self._stack is not None:
            raise UsageError("a Runner can be entered only once; make a new one")
        stack = self._stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._open(stack)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def _open(self, stack: AsyncExitStack) -> None:
        config = self.config
        log_config = config.logging
        logger, log_writer = configure_logging(log_config, stream=self._log_stream)
        # Registered first, so it runs last: every line logged until the end is written.
        stack.callback(log_writer.flush)
        log = ExecutionLog(logger, log_config.level, writer=log_writer)
        sink = self._metrics
        if sink is None:
            # The writer's spill and loss notices go to the execution log.
            writer = open_metrics_writer(config.metrics, notify=log.notice)
            sink = await stack.enter_async_context(writer)
        # Built before any provider is opened: a role left with no provider
        # (every key of its chain missing) is refused first.
        registry = self._registry = Registry.from_config(config, clock=self._clock)
        registry.notify = self._on_notice or _log_notice(log)
        if self._limits is not None:
            self._limits.bind(registry.cool)
        providers: dict[str, Provider] = {}
        for pc in config.providers:
            if pc.id in registry.disabled:
                continue
            given = self._given_providers.get(pc.id)
            if given is not None:
                providers[pc.id] = given
                continue
            from workers._factory import open_provider

            provider = providers[pc.id] = open_provider(pc)
            stack.push_async_callback(_close_quietly, provider)
        for text in self._notices:
            logger.warning("config", notice=text)
        for pid, variable in registry.disabled.items():
            registry.notify(
                Notice(
                    kind="provider_disabled",
                    provider=pid,
                    message=disabled_message(pid, variable),
                )
            )
        dispatcher = self._dispatcher = Dispatcher(
            registry,
            providers,
            {pc.id: pc for pc in config.providers if pc.id not in registry.disabled},
            sink=sink,
            policy=RetryPolicy(config.retry),
            log=log,
            concurrency=self._concurrency,
            queue_size=self._concurrency,
            clock=self._clock,
            wall=time.time,
            sleep=self._sleep,
            observer=self._observer,
            limits=self._limits,
        )
        # Registered before the task group, so it runs after the task group has
        # wound down: whatever no worker reached is settled as cancelled.
        stack.callback(dispatcher.sweep)
        tg = self._tg = await stack.enter_async_context(anyio.create_task_group())
        await tg.start(dispatcher.serve)
        flusher = anyio.CancelScope()
        # Pushed after the task group, so it runs before the group waits for its tasks.
        stack.callback(flusher.cancel)
        # Likewise: a run_many left unfinished must not keep its puller waiting.
        stack.callback(self._stop_pullers)
        tg.start_soon(_flush_periodically, log_writer, flusher)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack = self._stack
        dispatcher = self._dispatcher
        if stack is None or dispatcher is None:
            return None
        try:
            if exc_type is None:
                await self.shutdown()
            else:
                # An error or a cancelled scope: no grace period.
                dispatcher.cancel_all()
        except BaseException as inner:
            await stack.__aexit__(type(inner), inner, inner.__traceback__)
            raise
        if exc is not None and not isinstance(exc, anyio.get_cancelled_exc_class()):
            # The caller's own error: the task group is an implementation detail,
            # so it must not wrap the error in an exception group.
            await stack.__aexit__(None, None, None)
            return None
        return await stack.__aexit__(exc_type, exc, tb)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop intake, let running tasks finish within ``grace`` seconds, cancel the rest.

        ``grace`` defaults to the config's ``grace_period``.  Afterwards every
        task accepted has its Result, and ``submit``/``run`` raise
        :class:`~runner.ShuttingDown` (a ``UsageError``).
        """
        dispatcher = self._require_open()
        await dispatcher.shutdown(self.config.grace_period if grace is None else grace)

    @property
    def workflows(self) -> Mapping[str, WorkflowConfig]:
        """Every workflow a task may name: ``default`` and the config's, read-only."""
        return MappingProxyType(self._workflows)

    def statistics(self) -> RunnerStatistics:
        """An immutable snapshot of the counts (all zero before the runner is entered)."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return RunnerStatistics(
                queued=0, running=0, completed=0, failed=0, cancelled=0,
                rejected=self._rejected, retries=0, fallbacks=0,
            )  # fmt: skip
        queued = running = 0
        for ctx in dispatcher.live:
            if ctx.chain is None:
                continue
            if ctx.status == "pending":
                queued += 1
            else:
                running += 1
        c = dispatcher.supervisor.counters
        return RunnerStatistics(
            queued=queued,
            running=running,
            completed=c.completed,
            failed=c.failed,
            cancelled=c.cancelled,
            rejected=self._rejected,
            retries=c.retries,
            fallbacks=c.fallbacks,
        )

    # -- running tasks --------------------------------------------------------------

    async def submit(self, task: TaskInput) -> TaskHandle:
        """Queue ``task`` (waiting while the queue is full) and return its handle.

        ``task`` is a :class:`Task` or a mapping of its fields, as a tasks file
        line has them (``{"role": "coder", "prompt": "..."}``).  An invalid
        task is not raised: its handle is already done, with a ``rejected``
        Result (code ``invalid_task``, the message naming the field).
        """
        return TaskHandle(await self._submit(task, None), self._require_open())

    async def run(self, task: TaskInput) -> Result:
        """Run ``task`` (or a workflow task) to its one terminal Result.

        Cancelling the caller cancels the task (settled before run() returns).
        """
        handle = TaskHandle(await self._submit(task, None), self._require_open())
        try:
            return await handle.wait()
        except anyio.get_cancelled_exc_class():
            # The task is settled before the caller's cancellation goes on, so
            # its Result (cancelled) and metric event exist once run() is gone.
            handle._dispatcher.request_cancel(handle._ctx)
            with anyio.move_on_after(CLOSE_DEADLINE, shield=True):
                await handle.wait()
            raise

    async def run_workflow(
        self, name: str = "default", *, input: str, id: str | None = None
    ) -> Result:
        """Run workflow ``name`` over ``input``; the Result lists every stage."""
        return await self.run(Task(id=id, workflow=name, input=input))

    async def run_many(
        self, tasks: Iterable[TaskInput] | AsyncIterable[TaskInput]
    ) -> AsyncGenerator[Result, None]:
        """Run ``tasks`` (Tasks or mappings), yielding their Results in completion order.

        Tasks are pulled only as results come out (at most twice the
        concurrency in flight), so any length of input runs in bounded memory.
        A source that waits for its next task (standard input, a queue) does
        not hold back Results already there: they are yielded meanwhile.
        Every task pulled yields exactly one Result: after a shutdown the
        ones that could not be accepted come back ``cancelled``.  Closing the
        iterator early (``contextlib.aclosing``, or leaving the runner)
        cancels the tasks still in flight.
        """
        tg = self._tg
        self._require_open()
        if tg is None:
            raise UsageError("the runner is not open")
        window = 2 * self._concurrency
        # Pulled tasks and finished Results arrive in one inbox, so waiting
        # for either is one wait.  At most `window` of each are ever in it.
        inbox: Inbox[_Arrival] = Inbox()
        # A plain iterable is pulled here, between Results (it cannot wait
        # for input without blocking everything anyway); an async one in a
        # task of its own, so its waiting never holds back a Result.
        inline = iter(tasks) if not isinstance(tasks, AsyncIterable) else None
        puller = None
        if isinstance(tasks, AsyncIterable):
            puller = _Puller(tasks, inbox, window)
            self._pullers.add(puller)
            tg.start_soon(puller.run)

        # Each Result goes straight into the inbox (a bound method, no wrapper frame).
        finished: Callable[[Result], None] = inbox.put
        in_flight = 0
        exhausted = False
        try:
            while True:
                burst = 0
                while inline is not None and not exhausted and in_flight < window:
                    if burst == _BURST:
                        # Let the workers start the calls queued so far: a
                        # wave's first answers then come back a burst's
                        # intake after it began, not the whole window's.
                        burst = 0
                        await anyio.lowlevel.checkpoint()
                        continue
                    task = next(inline, _END)
                    if isinstance(task, _End):
                        exhausted = True
                        break
                    burst += 1
                    in_flight += 1
                    started = self._start(task, finished, inbox)
                    if not isinstance(started, bool):  # the queue is full: wait for room
                        started = await self._queue_one(started, task, inbox)
                    if not started:
                        exhausted = True  # shutting down: refused, and nothing more is pulled
                if exhausted and not in_flight:
                    return
                try:
                    arrival = inbox.get_nowait()
                except anyio.WouldBlock:
                    arrival = await inbox.get()
                if isinstance(arrival, Result):
                    in_flight -= 1
                    if puller is not None:
                        puller.room.release()
                    yield arrival
                elif isinstance(arrival, _Pulled):
                    in_flight += 1
                    refused = not await self._run_one(arrival.task, finished, inbox)
                    if refused and puller is not None:
                        puller.stop()
                elif isinstance(arrival, BaseException):
                    raise arrival  # the source's own error, as if raised here
                else:
                    exhausted = True
        finally:
            if puller is not None:
                await puller.aclose()
                self._pullers.discard(puller)
            dispatcher = self._dispatcher
            if dispatcher is not None:
                # This stream's tasks still in flight are the live ones that
                # report to it: no map of them is kept while it runs, so a
                # finished task is garbage as soon as its Result is read.
                mine = [ctx for ctx in dispatcher.live if ctx.notify is finished]
                for ctx in mine:
                    # Nobody reads the stream any more: the Result still goes
                    # to the handle, not to the closed stream.
                    ctx.notify = None
                    dispatcher.request_cancel(ctx)
            inbox.close()

    async def _run_one(
        self,
        task: TaskInput,
        finished: Callable[[Result], None],
        inbox: Inbox[_Arrival],
    ) -> bool:
        """Submit one task of a run_many; False when the runner refused it (shutting down)."""
        started = self._start(task, finished, inbox)
        if isinstance(started, bool):
            return started
        return await self._queue_one(started, task, inbox)

    async def _queue_one(
        self,
        ctx: TaskExecutionContext,
        task: TaskInput,
        inbox: Inbox[_Arrival],
    ) -> bool:
        """Queue a context :meth:`_start` found no room for, waiting for room."""
        try:
            await self._require_open().enqueue(ctx)
        except UsageError as exc:
            inbox.put(self._refused(task, str(exc)))
            return False
        return True

    def _start(
        self,
        task: TaskInput,
        finished: Callable[[Result], None],
        inbox: Inbox[_Arrival],
    ) -> bool | TaskExecutionContext:
        """:meth:`_run_one` without waiting: its answer, or the context when the queue is full.

        Nearly every task of a run_many finds room in the queue (a window of
        twice the concurrency is in flight); taking it in here spares the
        coroutines of ``_run_one``, ``_submit`` and ``enqueue`` per task.
        The returned context still has to be queued (``Dispatcher.enqueue``).
        """
        try:
            ctx = self._intake(task, finished)
            if ctx.result is None and ctx.workflow is None:
                dispatcher = self._require_open()
                if not dispatcher.enqueue_nowait(ctx):
                    return ctx
        except UsageError as exc:
            inbox.put(self._refused(task, str(exc)))
            return False
        return True

    async def _submit(
        self, data: TaskInput, notify: Callable[[Result], None] | None
    ) -> TaskExecutionContext:
        """Accept ``data`` (or reject it, settled at once); its context."""
        ctx = self._intake(data, notify)
        if ctx.result is None and ctx.workflow is None:
            await self._require_open().enqueue(ctx)
        return ctx

    def _intake(
        self, data: TaskInput, notify: Callable[[Result], None] | None
    ) -> TaskExecutionContext:
        """``data`` as a context: rejected and settled, a workflow started, or a task to queue.

        A plain task's context is returned not yet accepted: the caller queues it.
        """
        dispatcher = self._require_open()
        if dispatcher.closing:
            raise ShuttingDown("the runner is shutting down; no new tasks are accepted")
        task, problem = as_task(data)
        task_id = task.id if task.id is not None else f"{self._id_prefix}-{next(self._ids)}"
        now = self._clock()
        wall = time.time()
        problem = problem or task_problem(task, self._workflows)
        code: ErrorCode = "invalid_task"
        if problem is None and self.config.strict_roles:
            problem, code = _role_problem(task, self.config, self._workflows), "unknown_role"
        if problem is not None:
            ctx = new_context(task, task_id, None, now=now, wall=wall, notify=notify)
            self._rejected += 1
            resolve(
                ctx, rejected(task_id, problem, role=task.role, workflow=task.workflow, code=code)
            )
            return ctx
        registry = self._registry
        tg = self._tg
        if registry is None or tg is None:
            raise UsageError("the runner is not open")
        if task.workflow is not None:
            ctx = new_context(task, task_id, None, now=now, wall=wall, notify=notify)
            dispatcher.accept(ctx)
            tg.start_soon(run_workflow, dispatcher, registry, ctx, self._workflows[task.workflow])
        else:
            ctx = new_context(
                task, task_id, registry.chain(task.role), now=now, wall=wall, notify=notify
            )
        return ctx

    def _refused(self, data: TaskInput, why: str) -> Result:
        task = as_task(data)[0]
        task_id = task.id if task.id is not None else f"{self._id_prefix}-{next(self._ids)}"
        return not_run(task_id, why, role=task.role, workflow=task.workflow)

    def _stop_pullers(self) -> None:
        for puller in list(self._pullers):
            puller.stop()

    def _require_open(self) -> Dispatcher:
        if self._dispatcher is None:
            raise UsageError(
                "the runner is not open; use 'async with Runner.from_config(...) as runner:'"
            )
        return self._dispatcher


async def _pull(
    tasks: Iterable[TaskInput] | AsyncIterable[TaskInput],
) -> AsyncGenerator[TaskInput, None]:
    if isinstance(tasks, AsyncIterable):
        async for task in tasks:
            yield task
    else:
        for task in tasks:
            yield task


class _Pulled(Struct, frozen=True):
    task: TaskInput


class _End:
    """The source has no more tasks."""


_Arrival = Result | _Pulled | BaseException | _End
#: Tasks run_many takes in from a plain iterable between two turns of the event loop.
_BURST: Final = 16
_END: Final = _End()


class _Puller:
    """Pulls one run_many source in a task of its own, as room frees up.

    Its own task, so a source that waits (standard input, a queue) waits
    there, not in front of the Results.  ``room`` counts the tasks that may
    still be pulled; the source is closed in this task (an async generator
    cannot be closed from another task while it runs).
    """

    def __init__(
        self,
        tasks: Iterable[TaskInput] | AsyncIterable[TaskInput],
        inbox: Inbox[_Arrival],
        window: int,
    ) -> None:
        self._tasks = tasks
        self._inbox = inbox
        self.room = anyio.Semaphore(window)
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()

    async def run(self) -> None:
        source = _pull(self._tasks)
        try:
            with self._scope:
                while True:
                    # The non-blocking try first: acquire() always yields.
                    try:
                        self.room.acquire_nowait()
                    except anyio.WouldBlock:
                        await self.room.acquire()
                    task = await anext(source, _END)
                    if isinstance(task, _End):
                        break
                    self._inbox.put(_Pulled(task))
        except Exception as exc:  # the source raised: the consumer re-raises it
            self._tell(exc)
        finally:
            with anyio.CancelScope(shield=True):
                await source.aclose()
            self._tell(_END)
            self._done.set()

    def _tell(self, arrival: _Arrival) -> None:
        # The consumer may have gone already: then there is nobody to tell.
        with contextlib.suppress(anyio.ClosedResourceError):
            self._inbox.put(arrival)

    def stop(self) -> None:
        """Pull nothing more (the runner is shutting down)."""
        self._scope.cancel()

    async def aclose(self) -> None:
        """Stop and wait until the source is closed."""
        self._scope.cancel()
        with anyio.CancelScope(shield=True):
            await self._done.wait()


def as_task(data: TaskInput) -> tuple[Task, str | None]:
    """``data`` as a Task, and what is wrong with it (``None`` when nothing is).

    A mapping is read exactly as a tasks file line: the same checks, the same
    messages (``'parameters.temperature': expected float <= 2.0``).  An
    invalid one still gives a Task with its usable ``id`` and ``role``, so its
    rejected Result keeps them.
    """
    if isinstance(data, Task):
        return data, None
    if not isinstance(data, Mapping):
        return Task(), f"a task must be a Task or a mapping, not {type(data).__name__}"
    try:
        return msgspec.convert(msgspec.to_builtins(dict(data)), Task), None
    except TypeError as exc:  # to_builtins: a value no tasks file could hold
        problem = f"not a task: {exc}"
    except msgspec.ValidationError as exc:
        problem = explain_validation(str(exc))
    except InvalidValueError as exc:
        problem = str(exc)
    task_id, role = data.get("id"), data.get("role")
    return (
        Task(
            id=task_id if isinstance(task_id, str) and task_id.strip() else None,
            role=role if isinstance(role, str) else None,
        ),
        problem,
    )


def _role_problem(
    task: Task, config: Config, workflows: Mapping[str, WorkflowConfig]
) -> str | None:
    """With ``strict_roles``: the role (or a workflow stage's role) the config does not name."""
    known = ", ".join(config.roles) or "none"
    if task.workflow is not None:
        for stage in workflows[task.workflow].stages:
            if stage.role not in config.roles:
                return (
                    f"workflow {task.workflow!r} stage {stage.name!r} has role {stage.role!r},"
                    f" which the config does not name (strict_roles is on; known: {known})"
                )
        return None
    if task.role is not None and task.role not in config.roles:
        return f"unknown role {task.role!r} (strict_roles is on; known: {known})"
    return None


def _log_notice(log: ExecutionLog) -> Callable[[Notice], None]:
    """Notices as warning lines of the execution log (when nobody else takes them)."""

    def notice(n: Notice) -> None:
        fields = {"provider": n.provider, "role": n.role, "seconds": n.seconds}
        log.problem(n.kind, **{k: v for k, v in fields.items() if v is not None})

    return notice


async def _close_quietly(provider: Provider) -> None:
    # Shielded: closing connections must finish even when the runner exits
    # because its scope was cancelled.
    with anyio.move_on_after(CLOSE_DEADLINE, shield=True):
        await provider.aclose()


async def _flush_periodically(writer: LineWriter, scope: anyio.CancelScope) -> None:
    """Write waiting log lines at least every FLUSH_DELAY seconds until ``scope`` is cancelled."""
    with scope:
        while True:
            await anyio.sleep(FLUSH_DELAY)
            writer.flush()
