"""The worker's core: accepted tasks, from the journal to the Runner and back.

:class:`Worker` is what the HTTP handlers talk to.  It promises:

* a task is in the journal (committed) before :meth:`Worker.accept` returns;
* an id already journaled with the same task is not run again: the caller
  learns it is a duplicate and sees the first submission's result; with a
  different task it is an :class:`~runner.service._journal.IdConflict` (the 409), never the other
  task's result;
* every accepted task ends with exactly one terminal result in the journal,
  except the ones a shutdown interrupts: those stay unfinished there and run
  again on the next start;
* :meth:`Worker.cancel` returns only once the task's terminal result is in
  the journal (``cancelled``, or the result it reached first), so a
  cancellation that was answered survives any crash;
* before a terminal result is journaled, ``before_finish`` (the metrics
  writer's flush) has stored every metric event sent so far, so a journaled
  result never lacks the events of its attempts, crash or not;
* at most ``queue_size`` accepted tasks are unfinished at once; past that,
  :meth:`Worker.accept` raises :class:`~runner.QueueFull` (the 503);
* when the journal refuses a write (disk full, I/O error), nothing is
  accepted or cancelled (:class:`JournalUnavailable`, the 503); results
  that could not be written wait in memory, are served from there, and are
  written as soon as the journal takes writes again.  The failure and the
  recovery are reported once each.

Wiring, without a cycle to close later: make the Worker first, give the
Runner :meth:`Worker.observe` as its observer when making it, then run the
Worker with that Runner (``await tg.start(worker.run, runner)``).  The
observer recognises the worker's own tasks by identity (``ctx.task`` is the
very Task object the worker submitted), never by id: a workflow ``w``'s stage
``w/clarification`` and a user's task of that id are different tasks.

It owns two task groups (started by :meth:`Worker.run`): the outer one
retries results the journal refused; the inner one holds a feeder that hands
queued tasks to the Runner in order, and one waiter per submitted task.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, Final, Protocol

import anyio
import msgspec
from anyio.abc import TaskStatus

from runner._context import TaskExecutionContext
from runner._errors import QueueFull, ShuttingDown, StorageError
from runner._results import not_run
from runner._states import TERMINAL
from runner._task import HistoryEntry, Result, Status, Task
from runner.service._journal import JournalError, LocalJournal, Page, Stored

#: Seconds DELETE lets the Runner end a running task before it journals the cancellation itself.
CANCEL_WAIT: Final = 5.0
#: Seconds between two tries to write the results the journal refused.
JOURNAL_RETRY: Final = 1.0
#: What a 503 for a journal that refuses writes suggests (seconds).
JOURNAL_RETRY_AFTER: Final = 5

_ENCODER: Final = msgspec.json.Encoder()
_TASK_DECODER: Final = msgspec.json.Decoder(Task)
_RESULT_DECODER: Final = msgspec.json.Decoder(Result)


class Handle(Protocol):
    """What the worker needs of the Runner's ``TaskHandle``."""

    async def cancel(self) -> None: ...

    def __await__(self) -> Generator[Any, None, Result]: ...


class Runs(Protocol):
    """What the worker needs of the ``Runner``."""

    async def submit(self, task: Task) -> Handle: ...

    async def shutdown(self, grace: float | None = None) -> None: ...


class JournalUnavailable(StorageError):
    """The journal refused the write (or read) this call needs; nothing of the call stuck.

    ``retry_after`` suggests when to try again (seconds).
    """

    retry_after = JOURNAL_RETRY_AFTER


class TaskView(msgspec.Struct, frozen=True, kw_only=True):
    """What ``GET /v1/tasks/{id}`` answers: status, and the result line once terminal."""

    id: str
    status: str
    result: msgspec.Raw | None = None


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """One accepted task id; ``duplicate`` if the id was journaled before."""

    id: str
    duplicate: bool


class _Entry:
    """One unfinished task of this process."""

    __slots__ = ("claimed", "deleted", "done", "encoded", "handle", "status", "submitting", "task")

    def __init__(self, task: Task) -> None:
        self.task = task
        self.status: Status = "pending"
        self.handle: Handle | None = None
        self.submitting = False
        self.deleted = False
        #: The task's one terminal result, once someone has taken it for the journal.
        self.claimed: Result | None = None
        self.encoded = b""
        #: Set once the claimed result is in the journal.
        self.done = anyio.Event()


class Worker:
    """Intake, queue and results of the long-running worker (see the module docstring)."""

    def __init__(
        self,
        journal: LocalJournal,
        *,
        queue_size: int,
        wall: Callable[[], float] = time.time,
        before_finish: Callable[[], Awaitable[None]] | None = None,
        report: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        cancel_wait: float = CANCEL_WAIT,
    ) -> None:
        self._journal = journal
        self._queue_size = queue_size
        self._wall = wall
        self._before_finish = before_finish
        self._report = report or (lambda text: None)
        self._sleep = sleep
        self._cancel_wait = cancel_wait
        self._active: dict[str, _Entry] = {}
        self._reserved = 0
        self._send, self._receive = anyio.create_memory_object_stream[str](math.inf)
        self._draining = False
        self._journal_failing = False
        self._journal_error = ""
        #: Entries whose claimed result the journal refused, retried in order.
        self._unwritten: dict[str, _Entry] = {}
        self._retry = anyio.Event()
        #: Terminal results journaled by this process, by status (for /metrics).
        self.finished: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------

    async def run(
        self, runner: Runs, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Resume the journal's unfinished tasks, then feed ``runner`` until closed.

        Reports the number of resumed tasks through ``task_status`` once they
        are queued (use ``await tg.start(worker.run, runner)``).
        """
        resumed = 0
        for task_id, body in await self._journal.unfinished():
            task = _TASK_DECODER.decode(body)
            self._active[task_id] = _Entry(task)
            self._send.send_nowait(task_id)
            resumed += 1
        with self._receive:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._retry_unwritten)
                async with anyio.create_task_group() as tg:
                    task_status.started(resumed)
                    async for task_id in self._receive:
                        await self._feed(runner, task_id, tg)
                # Every waiter is done: one last try for what the journal refused.
                for task_id, entry in list(self._unwritten.items()):
                    if not await self._write(task_id, entry):
                        break
                outer.cancel_scope.cancel()

    def begin_drain(self) -> None:
        """Take no new tasks and stop handing queued ones to the Runner."""
        self._draining = True

    def close(self) -> None:
        """After the Runner's shutdown: let :meth:`run` return once every waiter is done."""
        self._draining = True
        self._send.close()

    @property
    def draining(self) -> bool:
        """Whether :meth:`begin_drain` was called."""
        return self._draining

    @property
    def queue_size(self) -> int:
        """The most unfinished tasks this worker holds."""
        return self._queue_size

    @property
    def unfinished(self) -> int:
        """Accepted tasks of this process without a terminal result in the journal yet."""
        return len(self._active)

    @property
    def unwritten(self) -> int:
        """Terminal results the journal refused and that wait in memory."""
        return len(self._unwritten)

    @property
    def journal_failing(self) -> bool:
        """Whether the journal's last write failed."""
        return self._journal_failing

    def gauges(self) -> dict[str, float]:
        """``runner_queue_depth`` and ``runner_tasks_in_flight`` right now."""
        waiting = in_flight = 0
        for e in self._active.values():
            if e.claimed is not None:
                continue  # finished; only its journal write is pending
            if e.status in ("running", "retrying"):
                in_flight += 1
            else:
                waiting += 1
        return {
            "runner_queue_depth": float(waiting),
            "runner_tasks_in_flight": float(in_flight),
        }

    # -- intake -----------------------------------------------------------

    async def accept(self, tasks: Sequence[Task]) -> list[Accepted]:
        """Journal ``tasks`` (each with an id) and queue the new ones; all or none.

        Raises :class:`ShuttingDown` while draining, :class:`QueueFull`
        when the batch does not fit, and :class:`~runner.service._journal.IdConflict` when an id is
        journaled for a different task (no task of the batch is then accepted).
        """
        if self._draining:
            raise ShuttingDown("the worker is shutting down and takes no new tasks")
        room = self._queue_size - len(self._active) - self._reserved
        if len(tasks) > room:
            raise QueueFull(max(room, 0), retry_after=1)
        # Reserved while the journal commits, so concurrent requests cannot overfill.
        self._reserved += len(tasks)
        try:
            rows = [(_id(t), _ENCODER.encode(t)) for t in tasks]
            existing = await self._journal.accept(rows, same=same_task)
        except JournalError as exc:
            self._journal_failed(exc)
            raise JournalUnavailable(str(exc)) from None
        finally:
            self._reserved -= len(tasks)
        self._journal_works()
        out: list[Accepted] = []
        for task, found in zip(tasks, existing, strict=True):
            task_id = _id(task)
            out.append(Accepted(id=task_id, duplicate=found is not None))
            if found is None:
                self._active[task_id] = _Entry(task)
                self._send.send_nowait(task_id)
        return out

    def observe(self, ctx: TaskExecutionContext, move: HistoryEntry) -> None:
        """The Runner's observer: journal a non-terminal move of one of our tasks.

        A terminal move is journaled with its result instead.  The move is ours
        only if ``ctx.task`` is the very Task object this worker submitted: a
        workflow's stage, whatever its id, has a Task object of its own.
        """
        status = move.status
        if status in TERMINAL:
            return
        entry = self._active.get(ctx.id)
        if entry is None or entry.task is not ctx.task:
            return
        entry.status = status
        self._journal.record_status(ctx.id, status)

    # -- queries ----------------------------------------------------------

    async def lookup(self, task_id: str, *, wait: float = 0.0) -> TaskView | None:
        """The task's view, waiting up to ``wait`` seconds for it to be terminal."""
        entry = self._active.get(task_id)
        if entry is not None and wait > 0:
            with anyio.move_on_after(wait):
                await entry.done.wait()
        entry = self._active.get(task_id)
        if entry is not None:
            if entry.claimed is not None:  # finished, its journal write still pending
                return TaskView(
                    id=task_id, status=entry.claimed.status, result=msgspec.Raw(entry.encoded)
                )
            return TaskView(id=task_id, status=entry.status)
        return _view(await self._get(task_id))

    def wall(self) -> float:
        """Unix seconds now, by the clock this worker stamps results with."""
        return self._wall()

    async def list_tasks(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        status: str | None = None,
        since: float | None = None,
        tag: str | None = None,
    ) -> Page:
        """A page of the journal's tasks, newest first (``Journal.list``).

        Statuses are the journal's: a status move is queued ahead of the
        listing, so it is shown, but a result the journal refused (it waits
        here, see :meth:`lookup`) shows the last status journaled.  Raises
        :class:`~runner.service._journal.BadCursor` for a cursor the journal
        did not hand out, :class:`JournalUnavailable` if it refuses the read.
        """
        try:
            return await self._journal.list(
                limit=limit, cursor=cursor, status=status, since=since, tag=tag
            )
        except JournalError as exc:
            self._journal_failed(exc)
            raise JournalUnavailable(str(exc)) from None

    async def cancel(self, task_id: str) -> TaskView | None:
        """Cancel the task for good; return once its terminal result is journaled.

        That result is ``cancelled``, or the one the task reached before the
        cancellation took effect (a finished task is left as it is).  Raises
        :class:`JournalUnavailable` if the journal refuses it: no answer
        then claims a cancellation that a crash could undo.
        """
        entry = self._active.get(task_id)
        if entry is None:
            return _view(await self._get(task_id))
        entry.deleted = True
        if entry.claimed is None and entry.handle is not None:
            # Running: let the Runner end it, so the result keeps its attempts and usage.
            await entry.handle.cancel()
            with anyio.move_on_after(self._cancel_wait):
                await entry.done.wait()
        if entry.claimed is None:
            # Queued here, being handed to a full Runner queue, or a Runner that
            # did not stop it in time: the cancellation is ours to journal now.
            await self._finish(task_id, entry, self._cancelled_by_delete(task_id, entry))
        if not entry.done.is_set():
            with anyio.move_on_after(self._cancel_wait):
                await entry.done.wait()
        if not entry.done.is_set():
            raise JournalUnavailable(
                self._journal_error or "the journal did not take the cancellation in time"
            )
        return await self.lookup(task_id)

    # -- running ----------------------------------------------------------

    async def _feed(self, runner: Runs, task_id: str, tg: anyio.abc.TaskGroup) -> None:
        entry = self._active.get(task_id)
        if entry is None or entry.deleted or self._draining:
            return  # cancelled while queued, or left for the next start
        entry.submitting = True
        try:
            handle = await runner.submit(entry.task)
        except ShuttingDown:
            # The Runner began its shutdown first: the task stays for the next start.
            return
        finally:
            entry.submitting = False
        entry.handle = handle
        if entry.deleted:
            await handle.cancel()
        tg.start_soon(self._wait_result, task_id, entry, handle)

    async def _wait_result(self, task_id: str, entry: _Entry, handle: Handle) -> None:
        result = await handle
        if result.status == "cancelled" and self._draining and not entry.deleted:
            # Cancelled by the shutdown, not by a user: it stays unfinished in
            # the journal and runs again on the next start.
            entry.status = "pending"
            self._journal.record_status(task_id, "pending")
            return
        await self._finish(task_id, entry, result)

    async def _finish(self, task_id: str, entry: _Entry, result: Result) -> None:
        """Journal ``result`` as the task's one result, unless another is claimed already."""
        if entry.claimed is not None:
            return
        entry.claimed = result
        entry.encoded = _ENCODER.encode(result)
        if self._before_finish is not None:
            # The metric events of this task's attempts are stored before its
            # result: after a crash, no journaled result lacks them.
            await self._before_finish()
        await self._write(task_id, entry)

    async def _write(self, task_id: str, entry: _Entry) -> bool:
        """Journal the entry's claimed result; on failure keep it for :meth:`_retry_unwritten`."""
        result = entry.claimed
        assert result is not None  # only claimed entries are written
        try:
            await self._journal.finish(task_id, result.status, entry.encoded)
        except JournalError as exc:
            self._journal_failed(exc)
            self._unwritten[task_id] = entry
            self._retry.set()
            return False
        self._journal_works()
        self._unwritten.pop(task_id, None)
        self.finished[result.status] = self.finished.get(result.status, 0) + 1
        self._active.pop(task_id, None)
        entry.done.set()
        return True

    async def _retry_unwritten(self) -> None:
        """Write the results the journal refused, in order, once it takes writes again."""
        while True:
            await self._retry.wait()
            self._retry = anyio.Event()
            while self._unwritten:
                await self._sleep(JOURNAL_RETRY)
                for task_id, entry in list(self._unwritten.items()):
                    if not await self._write(task_id, entry):
                        break

    async def _get(self, task_id: str) -> Stored | None:
        try:
            return await self._journal.get(task_id)
        except JournalError as exc:
            self._journal_failed(exc)
            raise JournalUnavailable(str(exc)) from None

    def _journal_failed(self, exc: JournalError) -> None:
        self._journal_error = str(exc)
        if not self._journal_failing:
            self._journal_failing = True
            self._report(
                f"{exc}. New tasks and DELETE get 503 until it takes writes again; finished"
                f" results wait in memory (retried every {JOURNAL_RETRY:g} s)"
            )

    def _journal_works(self) -> None:
        self._journal_error = ""
        if self._journal_failing:
            self._journal_failing = False
            self._report("the journal takes writes again")

    def _cancelled_by_delete(self, task_id: str, entry: _Entry) -> Result:
        moves: list[Status] = ["pending"]
        if entry.status != "pending":
            moves.append(entry.status)
        message = (
            "cancelled by DELETE before it started"
            if entry.status == "pending"
            else "cancelled by DELETE"
        )
        return not_run(
            task_id,
            message,
            role=entry.task.role,
            workflow=entry.task.workflow,
            at=self._wall(),
            before=moves,
        )


def same_task(journaled: bytes, given: bytes) -> bool:
    """Whether two task lines are one task: equal once decoded (field order, spacing aside)."""
    if journaled == given:
        return True
    try:
        return _TASK_DECODER.decode(journaled) == _TASK_DECODER.decode(given)
    except msgspec.DecodeError:  # a row this version cannot read is not the same task
        return False


def _id(task: Task) -> str:
    if task.id is None:
        raise ValueError("the worker gives every task an id before accepting it")
    return task.id


def _view(stored: Stored | None) -> TaskView | None:
    if stored is None:
        return None
    raw = msgspec.Raw(stored.result) if stored.result is not None else None
    return TaskView(id=stored.id, status=stored.status, result=raw)
