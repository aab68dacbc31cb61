"""``python -m runner submit FILE --config cluster.yaml``: straight into the cluster's queue.

With a ``cluster.database`` in the config and no ``--url``, submit needs no
worker's HTTP API: it reads the file as a local run does (same ids, same
rejections), enqueues the tasks into the database in batches (one
transaction each), and writes every result as a worker of the cluster
finishes it.  Results are announced with ``NOTIFY runner_done``; the client
LISTENs before it sends anything, and after a lost connection it looks up
every outstanding task once, so no result is missed.

Signals behave as in a remote run: the first stops sending, waits up to the
grace period for tasks already queued, then cancels (durably, cluster-wide)
those still unfinished; a second cancels them at once.  Memory stays bounded:
at most :data:`WINDOW` tasks are outstanding at once.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Final

import anyio
import anyio.abc
import msgspec

from runner._errors import QueueFull
from runner._task import Result, Task
from runner._tasks_file import TasksFile, rejection
from runner.cli._results_file import ResultsFile
from runner.cli._submit import cancelled
from runner.cli._submit_remote import RemoteSubmission, _first, _quiet_retries
from runner.cluster._pool import Database, open_database
from runner.cluster._queue import DONE_CHANNEL, Queue
from runner.cluster._schema import migrate
from runner.config._model import Config
from runner.service._cluster import cancelled_result
from runner.service._journal import IdConflict
from runner.service._worker import same_task

#: Tasks per enqueue transaction.
BATCH: Final = 500
#: Most tasks sent and not yet finished.
WINDOW: Final = 4 * BATCH

_ENCODER: Final = msgspec.json.Encoder()
_RESULT: Final = msgspec.json.Decoder(Result)


def submit_direct(args: argparse.Namespace, config: Config) -> int:
    """Run ``args.file`` on the cluster of ``config``; exit codes as a local run."""
    from runner._errors import UsageError
    from runner._workflow import known_workflows

    if args.concurrency is not None:
        raise UsageError("--concurrency applies to local runs; each worker's config sets its own")
    started = time.perf_counter()
    with (
        TasksFile.open(args.file, known_workflows=known_workflows(config)) as tasks,
        ResultsFile.open(args.out, tasks=tasks.identity) as out,
        _quiet_retries(),
    ):
        run = RemoteSubmission(tasks, out, grace=config.grace_period)
        client = DatabaseClient(config, line_of=lambda: tasks.line)
        try:
            anyio.run(run.main_remote, client, not args.no_progress and sys.stderr.isatty())
        except BaseExceptionGroup as group:
            usage, _ = group.split(UsageError)
            if usage is None:
                raise
            raise _first(usage) from None
        out.commit()
    return run.finish(args.out, wall=time.perf_counter() - started)


class DatabaseClient:
    """Enqueues tasks into the cluster database and hands back each result as it is written."""

    def __init__(self, config: Config, *, line_of: Callable[[], int], batch: int = BATCH) -> None:
        self._line_of = line_of
        self._url = config.cluster.database or ""
        self._room = config.worker.queue_size
        self._lease = config.cluster.lease
        self._batch = min(batch, self._room)
        self._window = anyio.Semaphore(max(WINDOW, 2 * self._batch))
        self._outstanding: set[str] = set()
        self._done: set[str] = set()
        self._wake = anyio.Event()
        self._wake_settled = anyio.Event()
        self._stopping = False
        self._grace: anyio.CancelScope | None = None
        self._stack = AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None
        self._db: Database | None = None
        self._queue: Queue | None = None

    async def __aenter__(self) -> DatabaseClient:
        await self._stack.__aenter__()
        # Entered here, not in connect(): a task group must not outlive the
        # scope it was opened in, and connect() runs in a cancellable one.
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.__aexit__(None, None, None)

    async def connect(self) -> None:
        """Open the database (creating the tables if no worker did yet) and LISTEN for results.

        A database that cannot be reached is a :class:`UsageError` (exit 2).
        """
        stack = self._stack
        db = self._db = await stack.enter_async_context(
            open_database(self._url, min_size=1, max_size=4)
        )
        await migrate(db)
        name = f"submit:{socket.gethostname()}:{os.getpid()}"
        self._queue = Queue(db, worker_id=name, lease=self._lease, cancelled=cancelled_result)
        tg = self._tg
        assert tg is not None
        # Runs first on exit: the listener stops before the pool closes.
        stack.callback(tg.cancel_scope.cancel)
        await tg.start(db.listen, {DONE_CHANNEL: self._on_done}, self._on_reconnect)

    def _on_done(self, task_id: str) -> None:
        if task_id in self._outstanding:
            self._done.add(task_id)
            self._wake.set()

    def _on_reconnect(self) -> None:
        # Results written while the LISTEN connection was down were announced
        # to nobody: look every outstanding task up once.
        self._done |= self._outstanding
        self._wake.set()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop sending; after ``grace`` seconds cancel, cluster-wide, what is unfinished.

        A second call (a second signal) ends the wait at once.  The
        cancelled tasks' results arrive like any other (a task running on a
        worker stops within a second; one no worker holds is cancelled at once).
        """
        if self._stopping:
            if self._grace is not None:
                self._grace.cancel()
            return
        self._stopping = True
        with anyio.move_on_after(10.0 if grace is None else grace) as self._grace:
            while self._outstanding:
                await self._wake_settled.wait()
                self._wake_settled = anyio.Event()
        queue = self._queue
        if queue is None:
            return
        for task_id in list(self._outstanding):
            await queue.cancel(task_id)

    async def run_all(self, tasks: AsyncIterator[Task], record: Callable[[Result], None]) -> None:
        """Send every task of ``tasks`` and ``record`` each one's one result."""
        sent = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._collect, record, sent)
            try:
                await self._send_all(tasks, record)
            finally:
                sent.set()
                self._wake.set()

    async def _send_all(self, tasks: AsyncIterator[Task], record: Callable[[Result], None]) -> None:
        batch: list[tuple[int, Task]] = []
        async for task in tasks:
            # The reader has just read this task's line: its number is the count so far.
            line = self._line_of()
            await self._window.acquire()
            batch.append((line, task))
            if len(batch) >= self._batch:
                await self._enqueue(batch, record)
                batch = []
        if batch:
            await self._enqueue(batch, record)

    async def _enqueue(
        self, batch: list[tuple[int, Task]], record: Callable[[Result], None]
    ) -> None:
        assert self._queue is not None
        while True:
            if self._stopping:
                for _, task in batch:
                    self._settle(record, cancelled(task))
                return
            rows = [(t.id or "", _ENCODER.encode(t)) for _, t in batch]
            # Counted as outstanding first: a fast worker may finish before we return.
            self._outstanding.update(i for i, _ in rows)
            try:
                found = await self._queue.accept(rows, same=same_task, room=self._room)
            except QueueFull:
                self._outstanding.difference_update(i for i, _ in rows)
                # The cluster's queue is full: wait for results to make room.
                with anyio.move_on_after(1.0):
                    await self._wake.wait()
                continue
            except IdConflict as exc:
                self._outstanding.difference_update(i for i, _ in rows)
                taken = set(exc.positions)
                for n, (line, task) in enumerate(batch):
                    if n in taken:
                        reason = (
                            f"id '{task.id}' is taken by a different task in the cluster;"
                            " give this task another id"
                        )
                        self._settle(
                            record, rejection(line, reason, id=task.id, code="id_conflict")
                        )
                batch = [item for n, item in enumerate(batch) if n not in taken]
                if not batch:
                    return
                continue
            break
        for (task_id, _), stored in zip(rows, found, strict=True):
            if stored is not None and stored.result is not None:
                # A duplicate that has finished: its earlier result is the answer
                # (unless a notification already delivered it).
                if task_id in self._outstanding:
                    self._settle(record, _RESULT.decode(stored.result))
            elif stored is not None:
                self._done.add(task_id)  # a duplicate still running: look it up once
        self._wake.set()

    async def _collect(self, record: Callable[[Result], None], sent: anyio.Event) -> None:
        assert self._queue is not None
        while not (sent.is_set() and not self._outstanding):
            await self._wake.wait()
            self._wake = anyio.Event()
            ids, self._done = self._done & self._outstanding, set()
            if ids:
                for stored in await self._queue.results(list(ids)):
                    if stored.result is not None and stored.id in self._outstanding:
                        self._settle(record, _RESULT.decode(stored.result))

    def _settle(self, record: Callable[[Result], None], result: Result) -> None:
        self._outstanding.discard(result.id)
        self._wake_settled.set()
        self._window.release()
        record(result)
