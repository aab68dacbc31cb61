"""The worker's HTTP API (aiohttp): handlers, auth, request limits, JSON errors.

Endpoints (docs/worker.md has the full reference):

* ``POST /v1/tasks``: one task as JSON, or many as JSONL
  (``Content-Type: application/x-ndjson``).  202 with the ids.  A batch is all
  or nothing: if any line is invalid the answer is 400 listing the bad lines
  (number and reason, the first 100, then a count) and *no* task of the
  batch is accepted, so a client can fix or drop those lines and send the
  batch again.  503 with ``Retry-After`` when the queue has no room for the
  whole batch or the worker is draining; 413 past ``worker.max_request_bytes``
  or ``worker.queue_size`` tasks (``_intake`` bounds the parse).  409
  ``id_conflict`` (nothing accepted, ``lines`` as for 400) when an id is
  journaled for a different task; the same task again is a 202 duplicate.
* ``GET /v1/tasks[?status=&since=&tag=&limit=&cursor=]``: a page of tasks,
  newest first, ``{"tasks": [...], "next_cursor"}`` (keyset pages, the
  journal's ``list``).
* ``GET /v1/tasks/{id}[?wait=S]``: ``{"id", "status", "result"}``.
* ``DELETE /v1/tasks/{id}``: cancel; answers the task's view.
* ``GET /healthz`` (never needs the token) and ``GET /metrics`` (Prometheus).

Every error is JSON: ``{"error": "<code>", "message": "<what to do>"}``.
Nothing here ever sees a provider key; the bearer token is compared in
constant time and never echoed.
"""

from __future__ import annotations

import hmac
import math
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Final

import anyio
import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from runner._errors import QueueFull, ShuttingDown
from runner._states import FINAL, STATUSES
from runner._task import Task
from runner.config._schema import parse_duration
from runner.service._cluster import ClusterWorker
from runner.service._http import Limits, Reports, error, shown_safely
from runner.service._intake import LineError, TooManyTasks, parse_tasks
from runner.service._journal import BadCursor, IdConflict, Listed
from runner.service._prometheus import CONTENT_TYPE, PrometheusTee
from runner.service._worker import JournalUnavailable, Worker
from workers._secrets import Secret

#: The longest ``?wait=`` honoured, in seconds; longer asks are cut to this.
MAX_WAIT: Final = 60.0
#: Content types read as JSONL (one task per line).
JSONL_TYPES: Final = frozenset(
    {"application/x-ndjson", "application/jsonl", "application/x-jsonlines"}
)
#: Seconds a draining worker suggests waiting before trying again.
DRAIN_RETRY_AFTER: Final = 5

#: Tasks one ``GET /v1/tasks`` page holds unless ``limit`` says otherwise, and at most.
LIST_LIMIT: Final = 100
MAX_LIST_LIMIT: Final = 1_000
#: The ``status`` values ``GET /v1/tasks`` filters on, in lifecycle order.
LIST_STATUSES: Final = (*STATUSES, *sorted(FINAL - set(STATUSES)))

_ENCODER: Final = msgspec.json.Encoder()


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_ENCODER.encode(body), content_type="application/json", headers=headers
    )


class _Api:
    """The request handlers, bound to one worker."""

    def __init__(
        self,
        worker: Worker | ClusterWorker,
        tee: PrometheusTee,
        known_workflows: Collection[str],
        body_timeout: float,
    ) -> None:
        self._worker = worker
        self._tee = tee
        self._workflows = known_workflows
        self._body_timeout = body_timeout

    async def post_tasks(self, request: web.Request) -> web.Response:
        if self._worker.draining:
            return _draining()
        jsonl = request.content_type in JSONL_TYPES
        try:
            with anyio.fail_after(self._body_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(request)
        except TimeoutError:
            response = error(
                408,
                "request_timeout",
                f"the request body did not arrive within {self._body_timeout:g} s"
                " (worker.body_timeout); send it faster or in smaller batches",
            )
            # Close once answered.  Ending the body here also stops aiohttp from
            # lingering (reading the rest for up to 10 s) on a client this slow.
            response.force_close()
            request.content.feed_eof()
            return response
        try:
            parsed = await parse_tasks(
                body,
                jsonl=jsonl,
                known_workflows=self._workflows,
                new_id=lambda: uuid.uuid4().hex,
                max_tasks=self._worker.queue_size,
            )
        except TooManyTasks as exc:
            return error(
                413,
                "too_many_tasks",
                f"{exc} (worker.queue_size, the most this worker holds); send them in"
                " smaller batches",
            )
        if parsed.bad:
            listed = len(parsed.problems)
            return error(
                400,
                "invalid_tasks",
                f"{parsed.bad} of {parsed.lines} lines are not valid tasks; nothing was"
                " accepted: fix or remove them and send the batch again"
                + (f" ('lines' lists the first {listed})" if listed < parsed.bad else ""),
                lines=parsed.problems,
                unlisted=parsed.bad - listed,
            )
        if not parsed.tasks:
            return error(400, "invalid_tasks", "the request holds no task")
        try:
            accepted = await self._worker.accept(parsed.tasks)
        except ShuttingDown:
            return _draining()
        except QueueFull as exc:
            return web.Response(
                status=503,
                body=_ENCODER.encode({"error": "queue_full", "message": str(exc)}),
                content_type="application/json",
                headers={"Retry-After": str(exc.retry_after)},
            )
        except IdConflict as exc:
            return _conflict(parsed.tasks, exc.positions, parsed.numbers)
        if not jsonl:
            return _json(202, accepted[0])
        duplicates = sum(1 for a in accepted if a.duplicate)
        return _json(
            202,
            {"accepted": len(accepted) - duplicates, "duplicates": duplicates, "tasks": accepted},
        )

    async def list_tasks(self, request: web.Request) -> web.Response:
        query = request.query
        unknown = sorted(set(query) - {"status", "since", "tag", "limit", "cursor"})
        if unknown:
            return _bad(
                f"unknown query parameter {unknown[0]!r}; GET /v1/tasks takes status, since,"
                " tag, limit and cursor"
            )
        limit_text = query.get("limit", str(LIST_LIMIT))
        if not (limit_text.isascii() and limit_text.isdigit()) or not (
            1 <= int(limit_text) <= MAX_LIST_LIMIT
        ):
            return _bad(
                f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}, not"
                f" {shown_safely(limit_text)!r}"
            )
        status = query.get("status")
        if status is not None and status not in LIST_STATUSES:
            return _bad(
                f"status must be one of {', '.join(LIST_STATUSES)}, not {shown_safely(status)!r}"
            )
        since: float | None = None
        if "since" in query:
            since = _since(query["since"], now=self._worker.wall())
            if since is None:
                return _bad(
                    f"since must be a duration back from now (30s, 15m, 2h, 7d) or an ISO 8601"
                    f" time (2026-12-04T21:00:00Z; UTC if it has no offset), not"
                    f" {shown_safely(query['since'])!r}"
                )
        tag = query.get("tag")
        try:
            page = await self._worker.list_tasks(
                limit=int(limit_text),
                cursor=query.get("cursor"),
                status=status,
                since=since,
                tag=tag,
            )
        except BadCursor:
            return _bad(
                "cursor is not one this worker gave out; pass the next_cursor of the previous"
                " page unchanged, or leave it out to start from the newest task"
            )
        return _json(
            200, {"tasks": [_listed(t) for t in page.tasks], "next_cursor": page.next_cursor}
        )

    async def get_task(self, request: web.Request) -> web.Response:
        task_id = request.match_info["id"]
        wait_text = request.query.get("wait", "0")
        try:
            wait = float(wait_text)
        except ValueError:
            wait = math.nan
        if not wait >= 0:  # also refuses NaN
            return error(
                400, "bad_request", f"wait must be a number of seconds >= 0, not {wait_text!r}"
            )
        view = await self._worker.lookup(task_id, wait=min(wait, MAX_WAIT))
        if view is None:
            return _unknown(task_id)
        return _json(200, view)

    async def delete_task(self, request: web.Request) -> web.Response:
        task_id = request.match_info["id"]
        view = await self._worker.cancel(task_id)
        if view is None:
            return _unknown(task_id)
        return _json(200, view)

    async def healthz(self, request: web.Request) -> web.Response:
        gauges = self._worker.gauges()
        return _json(
            200,
            {
                "status": "draining" if self._worker.draining else "ok",
                "journal": "failing" if self._worker.journal_failing else "ok",
                "queue_size": self._worker.queue_size,
                "queue_depth": int(gauges["runner_queue_depth"]),
                "in_flight": int(gauges["runner_tasks_in_flight"]),
            },
        )

    async def metrics(self, request: web.Request) -> web.Response:
        text = self._tee.render(self._worker.gauges(), self._worker.finished)
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


def _bad(message: str) -> web.Response:
    return error(400, "bad_request", message)


def _iso(seconds: float) -> str:
    """Unix seconds as ISO 8601 UTC with microseconds (``2026-12-04T21:45:21.123456Z``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _listed(task: Listed) -> dict[str, object]:
    return {
        "id": task.id,
        "status": task.status,
        "accepted_at": _iso(task.accepted_at),
        "finished_at": None if task.finished_at is None else _iso(task.finished_at),
    }


def _since(text: str, *, now: float) -> float | None:
    """Unix seconds for ``since``: a duration back from ``now`` or an ISO time; else None."""
    back = parse_duration(text)
    if back is not None:
        return now - back
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _draining() -> web.Response:
    return web.Response(
        status=503,
        body=_ENCODER.encode(
            {
                "error": "shutting_down",
                "message": "the worker is shutting down and takes no new tasks; retry later",
            }
        ),
        content_type="application/json",
        headers={"Retry-After": str(DRAIN_RETRY_AFTER)},
    )


def _conflict(tasks: list[Task], positions: list[int], lines: list[int]) -> web.Response:
    """409: ids this worker holds for a different task; nothing of the request was accepted."""
    problems = [
        LineError(
            line=lines[i],
            message=f"line {lines[i]}: id '{tasks[i].id}' is taken by a different task on this"
            " worker; give this task another id",
        )
        for i in positions
    ]
    return error(
        409,
        "id_conflict",
        f"{len(problems)} of {len(tasks)} tasks reuse an id this worker holds for a different"
        " task; nothing was accepted: give them other ids, or send the same task to fetch"
        " its result",
        lines=problems,
    )


#: What a 503 journal_unavailable says was (not) done, by method.
_NOT_DONE: Final = {
    "POST": "nothing of this request was accepted; send it again",
    "DELETE": "the cancellation may not hold; send the DELETE again",
}


def _journal_unavailable(request: web.Request, exc: JournalUnavailable) -> web.Response:
    outcome = _NOT_DONE.get(request.method, "retry")
    response = error(503, "journal_unavailable", f"{exc}; {outcome} after {exc.retry_after} s")
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _unknown(task_id: str) -> web.Response:
    return error(
        404,
        "not_found",
        f"no task with id '{task_id}': never submitted here, or finished longer ago"
        " than worker.retention",
    )


def _too_large(request: web.Request) -> web.Response:
    return error(
        413,
        "request_too_large",
        f"the request is larger than worker.max_request_bytes ({request.app[_LIMIT]} bytes);"
        " send the tasks in smaller batches",
    )


_LIMIT: Final = web.AppKey("max_request_bytes", int)


def _auth_middleware(token: Secret) -> Middleware:
    expected = f"Bearer {token.reveal()}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/healthz":
            # aiohttp decodes header bytes as UTF-8 with surrogateescape: this
            # gives back the exact bytes sent, whatever they are.
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                response = error(
                    401,
                    "unauthorized",
                    "this worker needs 'Authorization: Bearer <token>' (the worker.auth_token"
                    " it was started with; submit reads it from --token or $RUNNER_TOKEN)",
                )
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        return await handler(request)

    return auth


def _json_errors(reports: Reports) -> Middleware:
    """aiohttp's own errors (unknown path, wrong method, too large) and our bugs as JSON too."""

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _too_large(request)
        except web.HTTPException as exc:
            if exc.status_code < 400:
                raise
            return error(
                exc.status_code,
                exc.reason.lower().replace(" ", "_"),
                f"{exc.reason}: {request.method} {request.path}",
            )
        except JournalUnavailable as exc:
            return _journal_unavailable(request, exc)
        except ConnectionError:
            raise  # the client went away: aiohttp closes the connection quietly
        except Exception as exc:
            # A bug in runner.  One line per interval, without the exception's
            # text (it could quote a request), rather than a traceback per request.
            frame = exc.__traceback__
            while frame is not None and frame.tb_next is not None:
                frame = frame.tb_next
            where = f" at {frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}" if frame else ""
            reports.report(
                "internal",
                f"answered 500 to {request.method} {shown_safely(request.path)}:"
                f" {type(exc).__name__}{where} (a bug in runner; please report it)",
            )
            return error(
                500,
                "internal_error",
                "the worker failed to answer (a bug in runner; its log says where); retry later",
            )

    return json_errors


def make_app(
    worker: Worker | ClusterWorker,
    tee: PrometheusTee,
    *,
    known_workflows: Collection[str],
    auth_token: Secret | None,
    max_request_bytes: int,
    reports: Reports,
    body_timeout: float = Limits().body_timeout,
) -> web.Application:
    """The aiohttp application serving ``worker``; trouble goes to ``reports``."""
    middlewares: list[Middleware] = [_json_errors(reports)]
    if auth_token:
        middlewares.append(_auth_middleware(auth_token))
    app = web.Application(client_max_size=max_request_bytes, middlewares=middlewares)
    app[_LIMIT] = max_request_bytes
    api = _Api(worker, tee, known_workflows, body_timeout)
    app.router.add_post("/v1/tasks", api.post_tasks)
    app.router.add_get("/v1/tasks", api.list_tasks)
    app.router.add_get("/v1/tasks/{id:.+}", api.get_task)
    app.router.add_delete("/v1/tasks/{id:.+}", api.delete_task)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/metrics", api.metrics)
    return app
