"""``python -m runner submit FILE --url URL``: run a tasks file on a running worker.

The file is read by the same :class:`~runner._tasks_file.TasksFile` as a
local run (so lines get the same ids, ``line-<n>`` where none is given, and
the same rejections), sent in JSONL batches, and every result is written as
it completes by the same results writer, with the same progress bar, summary
and exit codes (the local :class:`~runner.cli._submit.Submission` does all of
that; this module only replaces the Runner with :class:`WorkerClient`).

What the client does with each answer of ``POST /v1/tasks``:

* 202: every id is polled with ``GET /v1/tasks/{id}?wait=`` until terminal.
  A duplicate (the id ran before) just yields the earlier result.
* 400: the listed lines get ``rejected`` results numbered by their line in
  the *file*, and the rest of the batch is sent again.
* 503: wait ``Retry-After`` seconds and send the batch again.
* 413: split the batch; one task alone too large is rejected.
* 401 or anything unexpected: stop with one clear message (exit 2).

Memory stays bounded: at most :data:`WINDOW` tasks are outstanding at once.
A worker that cannot be reached is retried for :data:`RECONNECT_FOR`
seconds (it may be restarting) before giving up.

Signals behave as in a local run: the first stops sending, waits up to the
grace period for the tasks already on the worker, then cancels those still
unfinished there with ``DELETE``; a second cancels them at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runner._errors import UsageError
from runner._task import ErrorInfo, Result, Task
from runner._tasks_file import TasksFile, rejection
from runner.cli._results_file import ResultsFile
from runner.cli._submit import Submission, cancelled

if TYPE_CHECKING:
    pass

#: Tasks per POST (fewer if the worker's queue is smaller).
BATCH: Final = 500
#: Most tasks sent and not yet finished; bounds the client's memory.
WINDOW: Final = 4 * BATCH
#: Concurrent long polls.
POLLERS: Final = 64
#: Seconds one long poll waits on the worker.
POLL_WAIT: Final = 30
#: Seconds to keep retrying a worker that does not answer (it may be restarting).
RECONNECT_FOR: Final = 60.0
#: Grace period when no --config says otherwise (the config's own default).
DEFAULT_GRACE: Final = 10.0

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


class RemoteSubmission(Submission):
    """A local :class:`Submission` whose tasks run on a worker."""

    async def main_remote(self, client: WorkerClient, progress: bool) -> None:
        async with anyio.create_task_group() as tg:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                tg.start_soon(self._watch, signals, client, tg)
                if progress:
                    tg.start_soon(self._show_progress)
                async with client:
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
    """Sends tasks to a worker and hands back each one's result as it completes."""

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
        self._outstanding: set[str] = set()
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> WorkerClient:
        connector = aiohttp.TCPConnector(limit=POLLERS + 8)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self._headers
        )
        status, raw, _ = await self._request("GET", "/healthz")
        if status == 200:
            health = _decode(raw, _Health)
            if health is not None and health.queue_size > 0:
                self._batch = min(self._batch, health.queue_size)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop sending; after ``grace`` seconds cancel what is unfinished on the worker."""
        self._stopping = True
        await self._sleep(DEFAULT_GRACE if grace is None else grace)
        async with anyio.create_task_group() as tg:
            limit = anyio.Semaphore(POLLERS)
            for task_id in list(self._outstanding):
                tg.start_soon(self._delete, task_id, limit)

    async def run_all(self, tasks: AsyncIterator[Task], record: Callable[[Result], None]) -> None:
        """Send every task of ``tasks`` and ``record`` each one's one result."""
        send, receive = anyio.create_memory_object_stream[str](max_buffer_size=float("inf"))
        async with anyio.create_task_group() as tg:
            with receive:
                for _ in range(POLLERS):
                    tg.start_soon(self._poll, receive.clone(), record)
            async with send:
                await self._send_all(tasks, send, record)

    # -- sending ----------------------------------------------------------

    async def _send_all(
        self,
        tasks: AsyncIterator[Task],
        send: MemoryObjectSendStream[str],
        record: Callable[[Result], None],
    ) -> None:
        batch: list[tuple[int, Task]] = []
        async for task in tasks:
            # The reader has just read this task's line: its number is the count so far.
            batch.append((self._line_of(), task))
            await self._window.acquire()
            if len(batch) >= self._batch:
                await self._post(batch, send, record)
                batch = []
        if batch:
            await self._post(batch, send, record)

    async def _post(
        self,
        batch: list[tuple[int, Task]],
        send: MemoryObjectSendStream[str],
        record: Callable[[Result], None],
    ) -> None:
        while batch:
            if self._stopping:
                for _, task in batch:
                    self._settle(record, cancelled(task))
                return
            body = b"\n".join(_ENCODER.encode(task) for _, task in batch)
            status, raw, headers = await self._request(
                "POST", "/v1/tasks", data=body, content_type="application/x-ndjson"
            )
            if status == 202:
                for _, task in batch:
                    task_id = task.id or ""
                    self._outstanding.add(task_id)
                    send.send_nowait(task_id)
                return
            refusal = _decode(raw, _Refusal) or _Refusal()
            if status == 400 and refusal.lines:
                bad = {e.line: e.message for e in refusal.lines}
                keep: list[tuple[int, Task]] = []
                for number, (line, task) in enumerate(batch, start=1):
                    if number in bad:
                        reason = bad[number].removeprefix(f"line {number}: ")
                        self._settle(record, rejection(line, reason, id=task.id))
                    else:
                        keep.append((line, task))
                batch = keep
            elif status == 503:
                await self._sleep(_retry_after(headers))
            elif status == 413 and len(batch) > 1:
                half = len(batch) // 2
                await self._post(batch[:half], send, record)
                batch = batch[half:]
            elif status == 413:
                line, task = batch[0]
                reason = "the task is larger than the worker's max_request_bytes"
                self._settle(record, rejection(line, reason, id=task.id))
                return
            else:
                raise UsageError(self._explain(status, refusal))

    # -- results ----------------------------------------------------------

    async def _poll(
        self, receive: MemoryObjectReceiveStream[str], record: Callable[[Result], None]
    ) -> None:
        async with receive:
            async for task_id in receive:
                while True:
                    status, raw, _ = await self._request(
                        "GET", f"/v1/tasks/{quote(task_id, safe='')}?wait={POLL_WAIT}"
                    )
                    if status == 404:
                        self._settle(record, _lost(task_id))
                        break
                    if status != 200:
                        refusal = _decode(raw, _Refusal) or _Refusal()
                        raise UsageError(self._explain(status, refusal))
                    view = _decode(raw, _View)
                    if view is None:
                        raise UsageError(f"the worker at {self._url} sent an unreadable answer")
                    if bytes(view.result) != b"null":
                        self._settle(record, _RESULT.decode(view.result))
                        break

    def _settle(self, record: Callable[[Result], None], result: Result) -> None:
        self._outstanding.discard(result.id)
        self._window.release()
        record(result)

    async def _delete(self, task_id: str, limit: anyio.Semaphore) -> None:
        async with limit:
            await self._request("DELETE", f"/v1/tasks/{quote(task_id, safe='')}")

    # -- HTTP -------------------------------------------------------------

    async def _request(
        self, method: str, path: str, *, data: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, bytes, Any]:
        """One request, retried while the worker cannot be reached; ``(status, body, headers)``."""
        assert self._session is not None
        headers = {"Content-Type": content_type} if content_type else None
        deadline = time.monotonic() + RECONNECT_FOR
        while True:
            try:
                async with self._session.request(
                    method, self._url + path, data=data, headers=headers
                ) as response:
                    return response.status, await response.read(), response.headers
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise UsageError(f"cannot reach the worker at {self._url}: {exc}") from None
                await self._sleep(0.5)

    def _explain(self, status: int, refusal: _Refusal) -> str:
        if status == 401:
            return (
                f"the worker at {self._url} refused the request: give its token with --token"
                " or $RUNNER_TOKEN"
            )
        return f"the worker at {self._url} answered {status}: {refusal.message or refusal.error}"


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
    return Result(
        id=task_id,
        status="failed",
        error=ErrorInfo(
            code="not_found",
            message="the worker no longer knows this task (another journal, or past its retention)",
        ),
    )
