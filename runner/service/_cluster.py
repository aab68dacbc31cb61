"""The worker's core in cluster mode: tasks from the shared queue to the Runner and back.

:class:`ClusterWorker` answers the HTTP handlers exactly as
:class:`~runner.service._worker.Worker` does (same views, same errors), but
its queue and journal are the cluster's (:mod:`runner.cluster._queue`), so
every worker with the same config is equal: a task POSTed to one may run on
another, and GET, DELETE and ``?wait=`` work from any.  It promises:

* a task is committed to the database before :meth:`accept` returns;
* every accepted task ends with exactly one terminal result in the database
  (the write is conditional on holding the task's lease);
* a worker that stops gracefully gives its unfinished tasks back, and one
  that dies loses them to the others once their leases run out;
* a DELETE anywhere stops the task where it runs (``NOTIFY runner_cancel``).

It owns one task group (started by :meth:`run`): the feeder that claims
tasks when there is room, one runner per claimed task, the heartbeat that
renews leases and the sweep that reclaims other workers' expired ones.
Wake-ups come from LISTEN/NOTIFY (:meth:`channels`); timers only cover what
nobody announces (a dead worker's leases running out).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from runner._context import TaskExecutionContext
from runner._errors import ShuttingDown
from runner._results import not_run
from runner._states import TERMINAL
from runner._task import HistoryEntry, Status, Task
from runner.cluster._queue import (
    CANCEL_CHANNEL,
    DONE_CHANNEL,
    TASKS_CHANNEL,
    Claim,
    Finish,
    Queue,
)
from runner.service._journal import Page, Stored
from runner.service._worker import (
    Accepted,
    Handle,
    JournalUnavailable,
    Runs,
    TaskView,
    same_task,
)

T = TypeVar("T")

_ENCODER: Final = msgspec.json.Encoder()
_TASK_DECODER: Final = msgspec.json.Decoder(Task)

#: Most results written in one statement.
FINISH_BATCH: Final = 256
#: Seconds a request waits for the database before its answer is a 503.
REQUEST_PATIENCE: Final = 10.0
#: Results this worker wrote that it keeps to answer GETs from memory.
RECENT_RESULTS: Final = 4096


def new_worker_id() -> str:
    """A name for this process in the database: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def cancelled_result(task_id: str, body: bytes, why: str) -> bytes:
    """The ``cancelled`` result line of a task that never ran here."""
    try:
        task = _TASK_DECODER.decode(body)
    except msgspec.DecodeError:
        task = Task()
    return _ENCODER.encode(
        not_run(task_id, why, role=task.role, workflow=task.workflow, at=time.time())
    )


class _Held:
    """One claimed task in this process."""

    __slots__ = ("claim", "deleted", "handle", "lost", "status", "task")

    def __init__(self, claim: Claim, task: Task) -> None:
        self.claim = claim
        self.task = task
        self.status: Status = "pending"
        self.handle: Handle | None = None
        self.deleted = False
        self.lost = False


class ClusterWorker:
    """Intake, queue and results of one worker of a cluster (see the module docstring)."""

    def __init__(
        self,
        queue: Queue,
        *,
        queue_size: int,
        concurrency: int,
        prefetch: int,
        before_finish: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._runner: Runs | None = None
        self._before_finish = before_finish
        self._queue = queue
        self._queue_size = queue_size
        self._concurrency = concurrency
        #: Tasks this worker holds at most: its concurrency and a few waiting.
        self._capacity = concurrency + max(1, prefetch)
        self._held: dict[str, _Held] = {}
        self._statuses: dict[str, str] = {}
        self._waiters: dict[str, anyio.Event] = {}
        #: How many lookups wait for each id (its event goes when none does).
        self._watching: dict[str, int] = {}
        #: Results this worker wrote lately, oldest first (answers GETs without a read).
        self._recent: dict[str, Stored] = {}
        self._wake = anyio.Event()
        self._finishes: list[tuple[Finish, anyio.Event, list[bool]]] = []
        self._finish_wake = anyio.Event()
        self._draining = False
        self._closed = anyio.Event()
        self._tg: TaskGroup | None = None
        #: Tasks handed to the Runner whose outcome is not handled yet.
        self._waiting = 0
        #: Claimed tasks without a Result from the Runner yet (queued or running);
        #: what decides when to claim, since a result being written needs no slot.
        self._unresolved = 0
        self._settled = anyio.Event()
        #: Terminal results written by this process, by status (for /metrics).
        self.finished: dict[str, int] = {}
        #: Tasks whose lease this worker lost before finishing (another worker ran them).
        self.lost = 0

    # -- notifications ------------------------------------------------------

    def channels(self) -> dict[str, Callable[[str], None]]:
        """The LISTEN channels this component needs, with their callbacks."""
        return {
            TASKS_CHANNEL: lambda _: self._poke(),
            DONE_CHANNEL: self._on_done,
            CANCEL_CHANNEL: self._on_cancel,
        }

    def on_reconnect(self) -> None:
        """Notifications may have been missed: look for work, results and cancellations."""
        self._poke()
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()
        if self._tg is not None:
            self._tg.start_soon(self._heartbeat_once)

    def _poke(self) -> None:
        self._wake.set()

    def _on_done(self, task_id: str) -> None:
        event = self._waiters.pop(task_id, None)
        if event is not None:
            event.set()

    def _on_cancel(self, task_id: str) -> None:
        held = self._held.get(task_id)
        if held is not None and not held.deleted:
            held.deleted = True
            if held.handle is not None and self._tg is not None:
                self._tg.start_soon(held.handle.cancel)

    # -- lifecycle ------------------------------------------------------------

    async def run(
        self, runner: Runs, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Claim tasks and run them on ``runner`` until :meth:`close`; reports 0 resumed tasks.

        (A cluster worker resumes nothing of its own: the queue is shared, and
        tasks of a stopped worker are the cluster's again.)  Wired like
        :class:`~runner.service._worker.Worker`: the Runner was made with
        :meth:`observe` as its observer, then is given here
        (``await tg.start(worker.run, runner)``).
        """
        self._runner = runner
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._finisher)
            tg.start_soon(self._heartbeat)
            tg.start_soon(self._sweep)
            task_status.started(0)
            await self._feed(tg)
            await self._closed.wait()
            # Every result the Runner gave back is written before the owner
            # tasks go (the finisher among them).
            while self._waiting:
                self._settled = anyio.Event()
                await self._settled.wait()
            tg.cancel_scope.cancel()

    def begin_drain(self) -> None:
        """Take no new tasks and claim no more."""
        self._draining = True
        self._poke()

    def close(self) -> None:
        """After the Runner's shutdown: let :meth:`run` return once every result is written."""
        self._draining = True
        self._poke()
        self._closed.set()

    async def release_unfinished(self) -> int:
        """Give the tasks still held back to the cluster (a graceful stop)."""
        ids = [i for i, h in self._held.items() if not h.deleted]
        released = await self._queue.release(ids)
        for task_id in ids:
            self._held.pop(task_id, None)
        return released

    @property
    def draining(self) -> bool:
        """Whether :meth:`begin_drain` was called."""
        return self._draining

    @property
    def queue_size(self) -> int:
        """The most unfinished tasks the cluster holds."""
        return self._queue_size

    @property
    def journal_failing(self) -> bool:
        """Whether the cluster database is not answering right now (``/healthz``)."""
        return self._queue.db.failing

    async def _answer(self, call: Awaitable[T]) -> T:
        """``call`` for a request: a 503 (:class:`JournalUnavailable`) if the database
        does not answer within :data:`REQUEST_PATIENCE`, rather than a hanging client."""
        with anyio.move_on_after(REQUEST_PATIENCE):
            return await call
        raise JournalUnavailable("the cluster database does not answer")

    @property
    def unfinished(self) -> int:
        """Tasks this worker holds without a terminal result yet."""
        return len(self._held)

    def gauges(self) -> dict[str, float]:
        """``runner_queue_depth`` and ``runner_tasks_in_flight`` of this worker."""
        in_flight = sum(1 for h in self._held.values() if h.status in ("running", "retrying"))
        return {
            "runner_queue_depth": float(len(self._held) - in_flight),
            "runner_tasks_in_flight": float(in_flight),
        }

    # -- intake ---------------------------------------------------------------

    async def accept(self, tasks: Sequence[Task]) -> list[Accepted]:
        """Commit ``tasks`` to the shared queue, all or none (see ``Worker.accept``).

        Raises :class:`ShuttingDown`, :class:`~runner.QueueFull` (the cluster's
        unfinished tasks would pass ``queue_size``) or
        :class:`~runner.service._journal.IdConflict`.
        """
        if self._draining:
            raise ShuttingDown("the worker is shutting down and takes no new tasks")
        rows = [(_id(t), _ENCODER.encode(t)) for t in tasks]
        found = await self._answer(self._queue.accept(rows, same=same_task, room=self._queue_size))
        return [
            Accepted(id=i, duplicate=f is not None) for (i, _), f in zip(rows, found, strict=True)
        ]

    def observe(self, ctx: TaskExecutionContext, move: HistoryEntry) -> None:
        """The Runner's observer: remember a non-terminal move, sent with the next heartbeat.

        The move is ours only if ``ctx.task`` is the very Task object this
        worker submitted (a workflow's stage has a Task object of its own,
        whatever its id); a terminal move is written with its result instead.
        """
        status = move.status
        if status in TERMINAL:
            return
        held = self._held.get(ctx.id)
        if held is None or held.task is not ctx.task:
            return
        held.status = status
        self._statuses[ctx.id] = status

    # -- queries --------------------------------------------------------------

    def wall(self) -> float:
        """Unix seconds now (``since`` in GET /v1/tasks counts back from it)."""
        return time.time()

    async def list_tasks(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        status: str | None = None,
        since: float | None = None,
        tag: str | None = None,
    ) -> Page:
        """A page of the cluster's tasks, newest first: ``Journal.list``, as ``Worker.list_tasks``.

        Statuses are the database's (moves reach it with the next heartbeat).
        Raises :class:`~runner.service._journal.BadCursor` for a cursor no page
        handed out, :class:`JournalUnavailable` if the database does not answer.
        """
        return await self._answer(
            self._queue.list(limit=limit, cursor=cursor, status=status, since=since, tag=tag)
        )

    async def lookup(self, task_id: str, *, wait: float = 0.0) -> TaskView | None:
        """The task's view, waiting up to ``wait`` seconds for its result (from any worker)."""
        if wait <= 0:
            return self._view(await self._read(task_id))
        # Subscribed before the first read, so a result written in between is
        # announced to us: two reads per waited task, not three.
        self._watching[task_id] = self._watching.get(task_id, 0) + 1
        try:
            with anyio.move_on_after(wait):
                while True:
                    event = self._waiters.get(task_id)
                    if event is None:
                        event = self._waiters[task_id] = anyio.Event()
                    held = self._held.get(task_id)
                    if held is None or held.lost:
                        stored = await self._read(task_id)
                        if stored is None or stored.finished:
                            return self._view(stored)
                    # else: running here; its result is announced to us directly.
                    await event.wait()
            return self._view(await self._read(task_id))
        finally:
            left = self._watching[task_id] - 1
            if left:
                self._watching[task_id] = left
            else:
                # Nobody waits for this id any more: an id that never finishes
                # leaves nothing behind.
                del self._watching[task_id]
                self._waiters.pop(task_id, None)

    async def cancel(self, task_id: str) -> TaskView | None:
        """Cancel the task wherever it runs (final); a finished task is left as it is."""
        stored = await self._answer(self._queue.cancel(task_id))
        if stored is None:
            return None
        if not stored.finished:
            self._on_cancel(task_id)  # ours: stop it now, without waiting for the notification
            return await self.lookup(task_id, wait=5.0)
        return self._view(stored)

    async def _read(self, task_id: str) -> Stored | None:
        """The task as stored: from this worker's recent results, else the database."""
        recent = self._recent.get(task_id)
        if recent is not None:
            return recent
        return await self._answer(self._queue.get(task_id))

    def _view(self, stored: Stored | None) -> TaskView | None:
        if stored is None:
            return None
        held = self._held.get(stored.id)
        status = held.status if held is not None and not stored.finished else stored.status
        raw = msgspec.Raw(stored.result) if stored.result is not None else None
        return TaskView(id=stored.id, status=status, result=raw)

    # -- running ----------------------------------------------------------------

    async def _feed(self, tg: TaskGroup) -> None:
        while not self._draining:
            self._wake = anyio.Event()
            room = self._capacity - self._unresolved
            claims: list[Claim] = []
            # Claim only once every running slot is spoken for by a claimed task:
            # the prefetched ones keep the Runner busy meanwhile, and each
            # claim then takes several tasks instead of one per finished task.
            if self._unresolved <= self._concurrency:
                claims = await self._queue.claim(room)
            for claim in claims:
                if not await self._start(claim, tg):
                    return
            if claims and len(claims) == room:
                continue  # there may be more: claim again at once
            await self._wake.wait()

    async def _start(self, claim: Claim, tg: TaskGroup) -> bool:
        runner = self._runner
        if runner is None:
            raise RuntimeError("ClusterWorker._start before run()")
        task = _TASK_DECODER.decode(claim.task)
        held = self._held[claim.id] = _Held(claim, task)
        self._unresolved += 1
        try:
            handle = await runner.submit(task)
        except ShuttingDown:
            self._unresolved -= 1
            # The Runner began its shutdown first: the task goes back to the cluster.
            return False
        held.handle = handle
        self._waiting += 1
        tg.start_soon(self._wait_result, held, handle)
        if held.deleted:
            await handle.cancel()
        return True

    async def _wait_result(self, held: _Held, handle: Handle) -> None:
        try:
            await self._handle_result(held, handle)
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._settled.set()

    async def _handle_result(self, held: _Held, handle: Handle) -> None:
        try:
            result = await handle
        finally:
            self._unresolved -= 1
            self._poke()
        task_id = held.claim.id
        if held.lost:
            self._forget(task_id)
            return
        if result.status == "cancelled" and self._draining and not held.deleted:
            # Cancelled by the shutdown, not by a user: released to the cluster
            # by the service (release_unfinished) once the Runner has stopped.
            return
        encoded = _ENCODER.encode(result)
        written = await self._write(
            Finish(id=task_id, claims=held.claim.claims, status=result.status, result=encoded)
        )
        if written:
            self.finished[result.status] = self.finished.get(result.status, 0) + 1
            # Written by us, so this is the id's one result: GETs here need no read.
            self._recent[task_id] = Stored(id=task_id, status=result.status, result=encoded)
            if len(self._recent) > RECENT_RESULTS:
                del self._recent[next(iter(self._recent))]
        else:
            self.lost += 1
        self._forget(task_id)
        self._on_done(task_id)

    def _forget(self, task_id: str) -> None:
        self._held.pop(task_id, None)
        self._statuses.pop(task_id, None)
        self._poke()

    async def _write(self, finish: Finish) -> bool:
        done = anyio.Event()
        outcome: list[bool] = []
        self._finishes.append((finish, done, outcome))
        self._finish_wake.set()
        # Shielded: a result computed must be written even while the scope winds down.
        with anyio.CancelScope(shield=True):
            await done.wait()
        return bool(outcome and outcome[0])

    async def _finisher(self) -> None:
        """The one writer of results: everything waiting goes in one statement."""
        while True:
            await self._finish_wake.wait()
            self._finish_wake = anyio.Event()
            while self._finishes:
                batch, self._finishes = self._finishes[:FINISH_BATCH], self._finishes[FINISH_BATCH:]
                with anyio.CancelScope(shield=True):
                    if self._before_finish is not None:
                        # The metric events of these tasks' attempts are stored
                        # before their results: no result lacks them after a crash.
                        await self._before_finish()
                    written = await self._queue.finish([f for f, _, _ in batch])
                for finish, done, outcome in batch:
                    outcome.append(finish.id in written)
                    done.set()

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self._queue.lease / 3)
            await self._heartbeat_once()

    async def _heartbeat_once(self) -> None:
        ids = [i for i, h in self._held.items() if not h.lost]
        statuses, self._statuses = self._statuses, {}
        if not ids and not statuses:
            return
        renewal = await self._queue.renew(ids, statuses)
        for task_id in renewal.lost:
            held = self._held.get(task_id)
            if held is not None and not held.lost:
                # Another worker has it now (this one stalled past its lease):
                # stop our copy and write nothing.
                held.lost = True
                if held.handle is not None and self._tg is not None:
                    self._tg.start_soon(held.handle.cancel)
        for task_id in renewal.cancel:
            self._on_cancel(task_id)

    async def _sweep(self) -> None:
        """Reclaim other workers' expired leases; nobody announces a death."""
        while True:
            await anyio.sleep(self._queue.lease / 3)
            await self._queue.reclaim()


def _id(task: Task) -> str:
    if task.id is None:
        raise ValueError("the worker gives every task an id before accepting it")
    return task.id
