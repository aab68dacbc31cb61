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
import signal
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Final, Protocol

import anyio
import anyio.abc

from runner._errors import UsageError
from runner._task import ErrorInfo, Result, Task
from runner._tasks_file import TasksFile
from runner.cli._main import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, notice
from runner.cli._results_file import FLUSH_EVERY, ResultsFile
from runner.cli._summary import Summary

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from runner._api import Runner

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

    config = discover_config(args.config, notice=notice)
    runner = Runner.from_config(config, concurrency=args.concurrency)
    workflows = known_workflows(config)
    started = time.perf_counter()
    with (
        TasksFile.open(args.file, known_workflows=workflows) as tasks,
        ResultsFile.open(args.out, tasks=tasks.identity) as out,
    ):
        run = Submission(tasks, out, grace=config.grace_period)
        anyio.run(run.main, runner, not args.no_progress and sys.stderr.isatty())
        out.commit()
    return run.finish(args.out, wall=time.perf_counter() - started)


class Drainable(Protocol):
    """What a signal needs of whatever runs the tasks: a Runner, or a worker client."""

    async def shutdown(self, grace: float | None = None) -> None: ...


def cancelled(task: Task) -> Result:
    """The result of a line that was never started because the run was interrupted."""
    return Result(
        id=task.id or "",
        status="cancelled",
        role=task.role,
        workflow=task.workflow,
        error=ErrorInfo(code="cancelled", message="not started: the run was interrupted"),
    )


class Submission:
    """One local run of a tasks file: feeding, recording, signals and progress."""

    def __init__(self, tasks: TasksFile, out: ResultsFile, *, grace: float) -> None:
        self.tasks = tasks
        self.out = out
        self.summary = Summary()
        self.grace = grace
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

    def finish(self, out: str, *, wall: float) -> int:
        """Print the closing summary and return the run's exit code.

        The summary goes to stdout, or to stderr when the results do.
        """
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
        """The file's tasks until a signal; rejected lines are recorded on the way."""
        while not self.interrupted:
            item = await self.tasks.next()
            if item is None:
                return
            if isinstance(item, Result):
                self.record(item)
            elif self.interrupted:  # the signal came while this line was being read
                self.record(cancelled(item))
            else:
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
                print("interrupted before any task started: none will run", file=sys.stderr)
                self._opening.cancel()
            elif self._signals == 1:
                print(
                    f"interrupted: finishing running tasks (up to {self.grace:g} s), "
                    "cancelling the rest; again to cancel at once",
                    file=sys.stderr,
                )
                if self._runner_open:
                    tg.start_soon(runner.shutdown, self.grace)
            elif self._signals == 2:
                print("interrupted again: cancelling at once", file=sys.stderr)
                if self._runner_open:
                    tg.start_soon(runner.shutdown, 0.0)
            elif not self._drained.is_set():
                self.unread = True
                if self._drain_scope is not None:
                    self._drain_scope.cancel()

    async def _show_progress(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} lines/s"),
            TextColumn("{task.fields[bad]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, transient=True) as progress:
            bar = progress.add_task("submit", total=None, rate="0", bad="")
            async with anyio.create_task_group() as tg:
                if self.tasks.rereadable:
                    tg.start_soon(self._count_lines, progress, bar)
                started = time.perf_counter()
                while True:
                    self._update(progress, bar, time.perf_counter() - started)
                    await anyio.sleep(PROGRESS_EVERY)

    def _update(self, progress: Progress, bar: TaskID, elapsed: float) -> None:
        done = self.out.written + self.tasks.blank
        bad = self.summary.total - self.summary.by_status["completed"]
        progress.update(
            bar,
            completed=done,
            rate=f"{done / elapsed:,.0f}" if elapsed > 0 else "0",
            bad=f"{bad} not completed" if bad else "",
        )

    async def _count_lines(self, progress: Progress, bar: TaskID) -> None:
        """Count the file's lines in a thread, so the bar gets a total (regular files only)."""
        lines = await anyio.to_thread.run_sync(
            _count_lines, self.tasks.name, abandon_on_cancel=True
        )
        progress.update(bar, total=lines)


def _count_lines(path: str) -> int:
    lines = 0
    last = b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines if last == b"\n" else lines + 1
