"""``python -m runner submit FILE --url URL``: run a tasks file on a running worker.

The file is read by the same :class:`~runner._tasks_file.TasksFile` as a
local run (so lines get the same ids, ``line-<n>`` where none is given, and
the same rejections), sent in JSONL batches, and every result is written as
it completes by the same results writer, with the same progress bar, summary
and exit codes (the local :class:`~runner.cli._submit.Submission` does all of
that; this module only replaces the Runner with :class:`WorkerClient`).

What the client does with each answer of ``POST /v1/tasks``:

* 202: every id is polled with ``GET /v1/tasks/{id}?wait=`` until terminal.
  A duplicate (the id ran before with the same task) just yields the earlier
  result.
* 400: the listed lines get ``rejected`` results numbered by their line in
  the *file*, and the rest of the batch is sent again.
* 409: the listed lines reuse an id the worker holds for another task; they
  get ``rejected`` results with code ``id_conflict``, and the rest is sent again.
* 503: wait ``Retry-After`` seconds and send the batch again.
* 413: split the batch; one task alone too large is rejected.
* 401 or anything unexpected: stop with one clear message (exit 2).

Memory stays bounded: at most :data:`WINDOW` tasks are outstanding at once.

Reaching the worker: the first contact (``GET /healthz``) is retried for
:data:`CONNECT_FOR` seconds (it may be starting), then the run stops with a
message naming the URL and what to check.  Later requests are retried for
:data:`RECONNECT_FOR` seconds (it may be restarting).  The retry loops are
stamina's, so ``stamina.set_testing(True)`` makes them one attempt in tests.

Signals behave as in a local run, at any moment: during the first contact
they stop it and every line is ``cancelled``; later the first one stops
sending, waits up to the grace period for the tasks already on the worker,
then cancels those still unfinished there with ``DELETE`` (for at most
:data:`CANCEL_FOR` seconds); a second one skips the wait.  A task whose end the
worker did not confirm (it is unreachable) is written ``cancelled``, saying it
may still run there, so every line has its result.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import anyio
import anyio.abc
import msgspec
import stamina
import stamina.instrumentation
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runner._errors import UsageError
from runner._results import not_run
from runner._task import Result, Task
from runner._tasks_file import TasksFile, rejection
from runner.cli._results_file import ResultsFile
from runner.cli._submit import Submission, cancelled

#: Tasks per POST (fewer if the worker's queue is smaller).
BATCH: Final = 500
#: Most tasks sent and not yet finished; bounds the client's memory.
WINDOW: Final = 4 * BATCH
#: Concurrent long polls.
POLLERS: Final = 64
#: Seconds one long poll waits on the worker.
POLL_WAIT: Final = 30
#: Seconds to reach the worker at first before giving up (it may be starting).
CONNECT_FOR: Final = 5.0
#: Seconds one connection attempt may take (a host that drops packets).
CONNECT_TIMEOUT: Final = 3.0
#: Seconds an answer may take to arrive: a long poll, and a margin.
READ_TIMEOUT: Final = POLL_WAIT + 30.0
#: Seconds to keep retrying a worker that stops answering mid-run (it may be restarting).
RECONNECT_FOR: Final = 60.0
#: Seconds an interrupted run spends cancelling its unfinished tasks on the worker.
CANCEL_FOR: Final = 5.0
#: Grace period when no --config says otherwise (the config's own default).
DEFAULT_GRACE: Final = 10.0

#: What "the worker cannot be reached" looks like; retried, then explained.
_UNREACHABLE: Final = (aiohttp.ClientConnectionError, TimeoutError)

_ENCODER: Final = msgspec.json.Encoder()
_RESULT: Final = msgspec.json.Decoder(Result)


class _LineError(msgspec.Struct):
    line: int
    message: str


class _Refusal(msgspec.Struct):
    error: str = "unknown"
    message: str = ""
    lines: list[_LineError] = []


class _View(msgspec.Struct):
    id: str
    status: str
    # msgspec cannot decode Raw inside an Optional; JSON null arrives as b"null".
    result: msgspec.Raw = msgspec.Raw(b"null")


class _Health(msgspec.Struct):
    queue_size: int = 0


S = TypeVar("S", _Refusal, _View, _Health)


class _AnyWorkflow(Collection[str]):
    """Every workflow name: the worker, which knows its config, checks them."""

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def submit_remote(args: argparse.Namespace) -> int:
    """Run ``args.file`` on the worker at ``args.url``; exit codes as a local run."""
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url must start with http:// or https:// (got {args.url!r})")
    if args.concurrency is not None:
        raise UsageError("--concurrency applies to local runs; the worker's config sets its own")
    token = args.token or os.environ.get("RUNNER_TOKEN") or None
    grace = DEFAULT_GRACE
    if args.config:
        from runner.config._load import discover_config

        grace = discover_config(args.config).grace_period
    started = time.perf_counter()
    with (
        TasksFile.open(args.file, known_workflows=_AnyWorkflow()) as tasks,
        ResultsFile.open(args.out, tasks=tasks.identity) as out,
        _quiet_retries(),
    ):
        run = RemoteSubmission(tasks, out, grace=grace)
        client = WorkerClient(url, token, line_of=lambda: tasks.line)
        try:
            anyio.run(run.main_remote, client, not args.no_progress and sys.stderr.isatty())
        except BaseExceptionGroup as group:
            # One clear message (exit 2) rather than the task group's traceback.
            usage, _ = group.split(UsageError)
            if usage is None:
                raise
            raise _first(usage) from None
        out.commit()
    return run.finish(args.out, wall=time.perf_counter() - started)


@contextlib.contextmanager
def _quiet_retries() -> Iterator[None]:
    """No stamina retry hooks while the command runs.

    stamina's default hooks log every retry through structlog, which prints
    to stdout, where the results may be going (``--out -``); this command
    says what the user needs to know itself.
    """
    hooks = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([])
    try:
        yield
    finally:
        stamina.instrumentation.set_on_retry_hooks(hooks)


class TaskClient(Protocol):
    """What a remote run needs: a worker's HTTP API, or the cluster database itself."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def connect(self) -> None: ...

    async def shutdown(self, grace: float | None = None) -> None: ...

    async def run_all(
        self, tasks: AsyncIterator[Task], record: Callable[[Result], None]
    ) -> None: ...


class RemoteSubmission(Submission):
    """A local :class:`Submission` whose tasks run elsewhere (a worker, or a cluster)."""

    async def main_remote(self, client: TaskClient, progress: bool) -> None:
        async with anyio.create_task_group() as tg:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                tg.start_soon(self._watch, signals, client, tg)
                tg.start_soon(self._flush_periodically)
                if progress:
                    tg.start_soon(self._show_progress)
                async with client:
                    with anyio.CancelScope() as self._opening:
                        await client.connect()
                    self._opening = None
                    if not self.interrupted:  # else a signal stopped the first contact
                        self._runner_open = True
                        feed = self._feed()
                        try:
                            await client.run_all(feed, self.record)
                        finally:
                            await feed.aclose()
                        self._runner_open = False
                await self._drain()
                tg.cancel_scope.cancel()


class WorkerClient:
    """Sends tasks to a worker and hands back each one's result as it completes.

    Every task taken from the feed is *unsettled* until its one result has
    been recorded; :meth:`shutdown` settles whatever the worker could not.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        line_of: Callable[[], int],
        batch: int = BATCH,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._line_of = line_of
        self._batch = batch
        self._sleep = sleep
        self._window = anyio.Semaphore(max(WINDOW, 2 * batch))
        #: Task id -> task, from the feed until its result is recorded.
        self._unsettled: dict[str, Task] = {}
        #: Ids that may be on the worker (posted, answered 202 or not yet answered).
        self._sent: set[str] = set()
        self._record: Callable[[Result], None] = _unset_record
        self._stopping = False
        self._grace: anyio.CancelScope | None = None
        self._run_scope: anyio.CancelScope | None = None
        self._outage_noted = False
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> WorkerClient:
        connector = aiohttp.TCPConnector(limit=POLLERS + 8)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self._headers
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def connect(self) -> None:
        """Reach the worker within :data:`CONNECT_FOR` seconds, or say what to check."""
        status, raw, _ = await self._request("GET", "/healthz", patience=CONNECT_FOR)
        if status != 200:
            raise UsageError(
                f"{self._url} does not answer as a runner worker (GET /healthz gave {status}):"
                " check --url"
            )
        health = _decode(raw, _Health)
        if health is not None and health.queue_size > 0:
            self._batch = min(self._batch, health.queue_size)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop sending; after ``grace`` seconds cancel what is unfinished on the worker.

        A second call (a second signal) ends the wait at once.  When this
        returns, every task taken from the feed has its result and
        :meth:`run_all` is ending.
        """
        if self._stopping:
            if self._grace is not None:
                self._grace.cancel()
            return
        self._stopping = True
        with anyio.move_on_after(DEFAULT_GRACE if grace is None else grace) as self._grace:
            if self._unsettled:
                await anyio.sleep_forever()  # _settle cancels this once nothing is left
        with anyio.move_on_after(CANCEL_FOR):
            async with anyio.create_task_group() as tg:
                limit = anyio.Semaphore(POLLERS)
                for task_id in [i for i in self._unsettled if i in self._sent]:
                    tg.start_soon(self._delete, task_id, limit)
        for task_id, task in list(self._unsettled.items()):
            self._settle(task_id, self._abandoned(task) if task_id in self._sent else None)
        if self._run_scope is not None:
            self._run_scope.cancel()

    async def run_all(self, tasks: AsyncIterator[Task], record: Callable[[Result], None]) -> None:
        """Send every task of ``tasks`` and ``record`` each one's one result."""
        self._record = record
        send, receive = anyio.create_memory_object_stream[str](max_buffer_size=float("inf"))
        with anyio.CancelScope() as self._run_scope:
            async with anyio.create_task_group() as tg:
                with receive:
                    for _ in range(POLLERS):
                        tg.start_soon(self._poll, receive.clone())
                async with send:
                    await self._send_all(tasks, send)

    # -- sending ----------------------------------------------------------

    async def _send_all(
        self, tasks: AsyncIterator[Task], send: MemoryObjectSendStream[str]
    ) -> None:
        batch: list[tuple[int, Task]] = []
        async for task in tasks:
            # The reader has just read this task's line: its number is the count so far.
            batch.append((self._line_of(), task))
            self._unsettled[task.id or ""] = task
            await self._window.acquire()
            if len(batch) >= self._batch:
                await self._post(batch, send)
                batch = []
        if batch:
            await self._post(batch, send)

    async def _post(self, batch: list[tuple[int, Task]], send: MemoryObjectSendStream[str]) -> None:
        while batch:
            if self._stopping:
                for _, task in batch:
                    self._settle(task.id or "", None)
                return
            ids = [task.id or "" for _, task in batch]
            self._sent.update(ids)
            body = b"\n".join(_ENCODER.encode(task) for _, task in batch)
            status, raw, headers = await self._request(
                "POST", "/v1/tasks", data=body, content_type="application/x-ndjson"
            )
            if status == 202:
                for task_id in ids:
                    send.send_nowait(task_id)
                return
            self._sent.difference_update(ids)  # a refused batch is not on the worker
            refusal = _decode(raw, _Refusal) or _Refusal()
            if status in (400, 409) and refusal.lines:
                code = "id_conflict" if status == 409 else "invalid_task"
                bad = {e.line: e.message for e in refusal.lines}
                keep: list[tuple[int, Task]] = []
                for number, (line, task) in enumerate(batch, start=1):
                    if number in bad:
                        reason = bad[number].removeprefix(f"line {number}: ")
                        self._settle(task.id or "", rejection(line, reason, id=task.id, code=code))
                    else:
                        keep.append((line, task))
                batch = keep
            elif status == 503:
                await self._sleep(_retry_after(headers))
            elif status == 413 and len(batch) > 1:
                half = len(batch) // 2
                await self._post(batch[:half], send)
                batch = batch[half:]
            elif status == 413:
                line, task = batch[0]
                reason = "the task is larger than the worker's max_request_bytes"
                self._settle(task.id or "", rejection(line, reason, id=task.id))
                return
            else:
                raise UsageError(self._explain(status, refusal))

    # -- results ----------------------------------------------------------

    async def _poll(self, receive: MemoryObjectReceiveStream[str]) -> None:
        async with receive:
            async for task_id in receive:
                while task_id in self._unsettled:
                    status, raw, _ = await self._request(
                        "GET", f"/v1/tasks/{quote(task_id, safe='')}?wait={POLL_WAIT}"
                    )
                    if status == 404:
                        self._settle(task_id, _lost(task_id))
                        break
                    if status != 200:
                        refusal = _decode(raw, _Refusal) or _Refusal()
                        raise UsageError(self._explain(status, refusal))
                    view = _decode(raw, _View)
                    if view is None:
                        raise UsageError(f"the worker at {self._url} sent an unreadable answer")
                    if bytes(view.result) != b"null":
                        self._settle(task_id, _RESULT.decode(view.result))

    def _settle(self, task_id: str, result: Result | None) -> None:
        """Record ``task_id``'s one result (``None``: cancelled before it was sent)."""
        task = self._unsettled.pop(task_id, None)
        if task is None:
            return  # already settled (by its poller, its DELETE or the shutdown)
        self._sent.discard(task_id)
        self._window.release()
        self._record(cancelled(task) if result is None else result)
        if self._stopping and not self._unsettled and self._grace is not None:
            self._grace.cancel()

    async def _delete(self, task_id: str, limit: anyio.Semaphore) -> None:
        """Cancel one task on the worker; its answer, if any, is the task's result."""
        async with limit:
            try:
                status, raw, _ = await self._request(
                    "DELETE", f"/v1/tasks/{quote(task_id, safe='')}", patience=CANCEL_FOR
                )
            except UsageError:
                return  # unreachable: the shutdown settles it
        view = _decode(raw, _View) if status == 200 else None
        if view is not None and bytes(view.result) != b"null":
            self._settle(task_id, _RESULT.decode(view.result))
        elif status == 404:
            self._settle(task_id, None)  # never reached the worker: not started

    def _abandoned(self, task: Task) -> Result:
        """The result of a task whose end the worker did not confirm before the run stopped."""
        path = f"/v1/tasks/{quote(task.id or '', safe='')}"
        return not_run(
            task.id or "",
            f"the run was interrupted and the worker at {self._url} did not confirm"
            f" this task's end; it may still run there (GET {path})",
            role=task.role,
            workflow=task.workflow,
        )

    # -- HTTP -------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        patience: float = RECONNECT_FOR,
    ) -> tuple[int, bytes, Any]:
        """One request, retried while the worker cannot be reached; ``(status, body, headers)``.

        Gives up after ``patience`` seconds with a :class:`UsageError` that
        names the URL and what to check.
        """
        assert self._session is not None
        session = self._session
        headers = {"Content-Type": content_type} if content_type else None
        failure: BaseException | None = None
        with anyio.move_on_after(patience):
            try:
                async for attempt in stamina.retry_context(
                    on=_UNREACHABLE,
                    attempts=None,
                    timeout=patience,
                    wait_initial=0.2,
                    wait_max=2.0,
                    wait_jitter=0.2,
                ):
                    with attempt:
                        try:
                            async with session.request(
                                method, self._url + path, data=data, headers=headers
                            ) as response:
                                answer = response.status, await response.read(), response.headers
                        except _UNREACHABLE as exc:
                            failure = exc
                            self._note_outage(exc, patience)
                            raise
                self._outage_noted = False
                return answer
            except _UNREACHABLE as exc:
                failure = exc
        raise UsageError(
            f"cannot reach the worker at {self._url} ({_reason(failure, patience)}): check that"
            " 'python -m runner worker' is running there and that --url names its host and port"
        )

    def _note_outage(self, exc: BaseException, patience: float) -> None:
        """Say once that a worker which answered before has gone quiet (mid-run only)."""
        if patience < RECONNECT_FOR or self._outage_noted:
            return
        self._outage_noted = True
        print(
            f"note: the worker at {self._url} does not answer ({_reason(exc, patience)});"
            f" retrying for up to {patience:g} s",
            file=sys.stderr,
        )

    def _explain(self, status: int, refusal: _Refusal) -> str:
        if status == 401:
            return (
                f"the worker at {self._url} refused the request: give its token with --token"
                " or $RUNNER_TOKEN"
            )
        return f"the worker at {self._url} answered {status}: {refusal.message or refusal.error}"


def _unset_record(result: Result) -> None:
    raise RuntimeError("run_all() sets where results go before any is settled")


def _reason(exc: BaseException | None, patience: float) -> str:
    """Why a request got no answer, in a few words."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"unknown host {exc.host}"
        if isinstance(cause, TimeoutError):
            return f"no connection within {CONNECT_TIMEOUT:g} s"
        return cause.strerror or str(cause) or type(cause).__name__
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "it closed the connection without answering"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if exc is None:
        return f"no answer within {patience:g} s"
    return f"{type(exc).__name__}: {exc}"


def _first(group: BaseExceptionGroup[UsageError]) -> UsageError:
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error


def _decode(raw: bytes, kind: type[S]) -> S | None:
    """The answer as ``kind``, or ``None`` if it is not such JSON."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.DecodeError:
        return None


def _retry_after(headers: Any) -> float:
    try:
        return max(float(headers.get("Retry-After", "1")), 0.1)
    except ValueError:
        return 1.0


def _lost(task_id: str) -> Result:
    return not_run(
        task_id,
        "the worker no longer knows this task (another journal, or past its retention)",
        status="failed",
        code="not_found",
    )
