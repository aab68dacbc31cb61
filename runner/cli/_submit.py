"""``python -m runner submit FILE``: run a tasks file and write one result per line.

Local mode streams the file into :meth:`Runner.run_many` (which pulls a task
only when it has room, so memory stays bounded), writes rejected lines'
results as they are read, and every other result as it completes.

SIGINT/SIGTERM stop the reading, let running tasks finish within the config's
``grace_period`` and cancel the rest; a second signal cancels at once.  Either
way the lines never read get a ``cancelled`` result (or ``rejected``, if they
are not valid), so every input line has exactly one result line.  A third
signal gives up on those unread lines.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final, Protocol, TextIO

import anyio
import anyio.abc
import msgspec

from runner._errors import UsageError
from runner._results import not_run
from runner._task import HistoryEntry, Result, Task
from runner._tasks_file import TasksFile
from runner.cli._main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, notice
from runner.cli._notices import notice_line, refuse_stranded
from runner.cli._results_file import FLUSH_EVERY, ResultsFile
from runner.cli._screen import Screen
from runner.cli._summary import Summary

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from runner._api import Runner
    from runner._registry import Notice
    from runner.config._model import Config

#: How often the progress bar is redrawn from the counters.
PROGRESS_EVERY: Final = 0.1


def cmd_submit(args: argparse.Namespace) -> int:
    """Run ``args.file``; the exit code says whether every task completed."""
    if args.url:
        from runner.cli._submit_remote import submit_remote

        code: int = submit_remote(args)
        return code
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1 (got {args.concurrency})")
    from runner._api import Runner
    from runner._workflow import known_workflows
    from runner.config._load import discover_config
    from runner.metrics._store import check_store

    config = discover_config(args.config, notice=notice)
    if config.cluster.enabled:
        # The cluster's workers make the calls: this process needs no keys.
        from runner.cli._submit_cluster import submit_direct

        direct: int = submit_direct(args, config)
        return direct
    refuse_stranded(config)
    check_store(config.metrics)  # a bad metrics.path is one message, before any file is opened
    screen = Screen(sys.stderr)
    progress = not args.no_progress and sys.stderr.isatty()
    workflows = known_workflows(config)
    started = time.perf_counter()
    with (
        TasksFile.open(args.file, known_workflows=workflows) as tasks,
        _open_log(args.log) as log_file,
        ResultsFile.open(args.out, tasks=tasks.identity) as out,
    ):
        run = Submission(tasks, out, grace=config.grace_period, screen=screen)
        # Per-attempt lines only where asked for: --log FILE, or -v on stderr
        # (above the bar).  Otherwise stderr shows warnings only.
        detailed = log_file is not None or args.verbose
        runner = Runner.from_config(
            with_log_level(config, "info" if detailed else "warning"),
            concurrency=args.concurrency,
            log_stream=log_file if log_file is not None else screen.lines(),
            on_notice=run.notice,
            observer=run.observe if progress else None,
        )
        try:
            anyio.run(run.main, runner, progress)
        except BaseExceptionGroup as group:
            # A usage error found while reading (standard input that is one
            # JSON array): one message and exit 2, not the task group's traceback.
            usage, _ = group.split(UsageError)
            if usage is None:
                raise
            raise _first_usage(usage) from None
        out.commit()
    return run.finish(args.out, wall=time.perf_counter() - started)


def _first_usage(group: BaseExceptionGroup[UsageError]) -> UsageError:
    first = group.exceptions[0]
    return _first_usage(first) if isinstance(first, BaseExceptionGroup) else first


def with_log_level(config: Config, level: str) -> Config:
    """``config`` logging at ``level`` (``info``: at least; ``warning``: at most).

    ``info`` lowers a quieter config level to show the per-attempt lines
    (``debug`` stays); ``warning`` raises a chattier one to warnings only.
    """
    order = ("debug", "info", "warning", "error")
    current = config.logging.level
    if level == "info":
        chosen = current if order.index(current) <= 1 else "info"
    else:
        chosen = current if order.index(current) >= 2 else "warning"
    if chosen == current:
        return config
    logging = msgspec.structs.replace(config.logging, level=chosen)
    return msgspec.structs.replace(config, logging=logging)


@contextmanager
def _open_log(path: str | None) -> Iterator[TextIO | None]:
    """The ``--log`` file (truncated), or ``None`` without one."""
    if path is None:
        yield None
        return
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        stream = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise UsageError(f"cannot write the log to {path}: {exc.strerror}") from None
    with stream:
        yield stream


class Drainable(Protocol):
    """What a signal needs of whatever runs the tasks: a Runner, or a worker client."""

    async def shutdown(self, grace: float | None = None) -> None: ...


def cancelled(task: Task) -> Result:
    """The result of a line that was never started because the run was interrupted."""
    return not_run(
        task.id or "",
        "not started: the run was interrupted",
        role=task.role,
        workflow=task.workflow,
    )


class Submission:
    """One local run of a tasks file: feeding, recording, signals and progress."""

    def __init__(
        self,
        tasks: TasksFile,
        out: ResultsFile,
        *,
        grace: float,
        screen: Screen | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tasks = tasks
        self._clock = clock
        self.out = out
        self.summary = Summary()
        self.grace = grace
        self.screen = screen if screen is not None else Screen(sys.stderr)
        self.interrupted = False
        #: True when a third signal left lines without a result.
        self.unread = False
        self._signals = 0
        self._runner_open = False
        #: The scope that opens the runner (reaching a worker can take seconds):
        #: a first signal before the runner is open cancels it.
        self._opening: anyio.CancelScope | None = None
        self._drained = anyio.Event()
        self._drain_scope: anyio.CancelScope | None = None
        self._feed_scope: anyio.CancelScope | None = None
        #: Tasks handed to the runner whose result has not come back yet.
        self._in_flight = 0
        #: Contexts with an attempt under way (only counted with a progress bar).
        self._attempting: set[object] = set()
        #: Provider id -> the monotonic time its cooldown ends, from the notices.
        self._cooling: dict[str, float] = {}

    def notice(self, notice: Notice) -> None:
        """Show a runner notice once, above the bar; keep cooldowns for the bar's status."""
        if notice.kind == "cooldown_started" and notice.provider is not None:
            self._cooling[notice.provider] = self._clock() + (notice.seconds or 0.0)
        elif notice.kind == "cooldown_ended" and notice.provider is not None:
            self._cooling.pop(notice.provider, None)
        self.screen.say(notice_line(notice))

    def observe(self, ctx: object, entry: HistoryEntry) -> None:
        """Count attempts under way: the bar says why when none can run."""
        if entry.status == "running":
            self._attempting.add(ctx)
        else:
            self._attempting.discard(ctx)

    def finish(self, out: str, *, wall: float) -> int:
        """Print the closing summary and return the run's exit code.

        The summary goes to stdout, or to stderr when the results do.
        """
        if self.summary.total == 0 and not self.interrupted:
            self.screen.say(
                f"warning: {self.tasks.name} has no tasks (it is empty or only blank lines)"
            )
        results = f"{out} (replaced the previous file)" if self.out.replaces else out
        self.summary.render(
            sys.stderr if out == "-" else sys.stdout,
            wall=wall,
            results=None if out == "-" else results,
        )
        if self.interrupted:
            if self.unread:
                print(
                    f"interrupted again: lines after {self.tasks.line} have no result line",
                    file=sys.stderr,
                )
            return EXIT_INTERRUPTED
        completed = self.summary.by_status["completed"] == self.summary.total
        return EXIT_OK if completed else EXIT_FAILED

    def record(self, result: Result) -> None:
        self.out.write(result)
        self.summary.add(result)

    async def main(self, runner: Runner, progress: bool) -> None:
        async with anyio.create_task_group() as tg:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                tg.start_soon(self._watch, signals, runner, tg)
                tg.start_soon(self._flush_periodically)
                if progress:
                    tg.start_soon(self._show_progress)
                async with runner:
                    self._runner_open = True
                    feed = self._feed()
                    try:
                        async for result in runner.run_many(feed):
                            self._in_flight -= 1
                            self.record(result)
                    finally:
                        await feed.aclose()
                    self._runner_open = False
                await self._drain()
                tg.cancel_scope.cancel()

    async def _flush_periodically(self) -> None:
        """Flush results even while nothing new is written (a long task, a slow stdin)."""
        while True:
            await anyio.sleep(FLUSH_EVERY)
            self.out.flush()

    async def _feed(self) -> AsyncGenerator[Task, None]:
        """The file's tasks until a signal; rejected lines are recorded on the way.

        A signal also ends a read that is waiting for input (standard input
        that never ends): what that read brings is not lost, the drain reads it.
        """
        while not self.interrupted:
            scope = self._feed_scope = anyio.CancelScope()
            with scope:
                item = await self.tasks.next()
            self._feed_scope = None
            if scope.cancelled_caught or item is None:
                return
            if isinstance(item, Result):
                self.record(item)
            elif self.interrupted:  # the signal came while this line was being read
                self.record(cancelled(item))
            else:
                self._in_flight += 1
                yield item

    async def _drain(self) -> None:
        """After an interruption, give every line not yet read its result."""
        self._drain_scope = anyio.CancelScope()
        with self._drain_scope:
            while True:
                item = await self.tasks.next()
                if item is None:
                    break
                self.record(item if isinstance(item, Result) else cancelled(item))
        self.out.flush()
        self._drained.set()

    async def _watch(
        self,
        signals: AsyncIterator[int],
        runner: Drainable,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        async for _ in signals:
            self._signals += 1
            self.interrupted = True
            if self._signals == 1 and self._opening is not None:
                self.screen.say("interrupted before any task started: none will run")
                self._opening.cancel()
            elif self._signals == 1:
                self.screen.say(
                    f"interrupted: finishing running tasks (up to {self.grace:g} s), "
                    "cancelling the rest; again to cancel at once"
                )
                if self._feed_scope is not None:
                    self._feed_scope.cancel()
                if self._runner_open:
                    tg.start_soon(runner.shutdown, self.grace)
            elif self._signals == 2:
                self.screen.say("interrupted again: cancelling at once")
                if self._runner_open:
                    tg.start_soon(runner.shutdown, 0.0)
            elif not self._drained.is_set():
                self.unread = True
                if self._drain_scope is not None:
                    self._drain_scope.cancel()

    async def _show_progress(self) -> None:
        with self.screen.bar() as progress:
            bar = progress.add_task("submit", total=None, status="")
            async with anyio.create_task_group() as tg:
                if self.tasks.rereadable:
                    tg.start_soon(self._count_tasks, progress, bar)
                while True:
                    progress.update(bar, completed=self.out.written, status=self.status())
                    await anyio.sleep(PROGRESS_EVERY)

    def status(self) -> str:
        """The bar's last column: why nothing runs, else how many did not complete."""
        now = self._clock()
        cooling = {p: until - now for p, until in self._cooling.items() if until > now}
        if cooling and self._in_flight > 0 and not self._attempting:
            # Rounded up: "0 s" would read as "now" while it still waits.
            waits = ", ".join(
                f"{p} cooling down, {math.ceil(left)} s" for p, left in cooling.items()
            )
            return f"waiting: {waits}"
        bad = self.summary.total - self.summary.by_status["completed"]
        return f"{bad} not completed" if bad else ""

    async def _count_tasks(self, progress: Progress, bar: TaskID) -> None:
        """Count the file's tasks in a thread, so the bar gets a total (regular files only)."""
        total = await anyio.to_thread.run_sync(count_tasks, self.tasks.name, abandon_on_cancel=True)
        progress.update(bar, total=total)


def count_tasks(path: str) -> int:
    """Non-blank lines of ``path``: the tasks the bar counts to (each gets one result)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
