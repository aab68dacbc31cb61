"""The worker's HTTP API over a scriptable Runner: intake, limits, auth, results.

The Runner here is a stand-in whose tasks finish only when the test says so,
so queue-full, cancellation and shutdown can be driven exactly.  The real
Runner is exercised in test_worker_process.py.  asyncio only (aiohttp).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import anyio.lowlevel
import msgspec
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from runner import Task
from runner.metrics import MemorySink, MetricEvent
from runner.service._http import Reports
from runner.service._journal import open_journal
from runner.service._prometheus import PrometheusTee
from runner.service._server import make_app
from runner.service._worker import Worker
from tests.worker_support import FakeRunner, Lines
from workers import Secret

pytestmark = pytest.mark.anyio

NDJSON = {"Content-Type": "application/x-ndjson"}


class Setup:
    def __init__(
        self,
        client: TestClient[Any, Any],
        worker: Worker,
        runner: FakeRunner,
        tee: PrometheusTee,
        lines: Lines,
    ) -> None:
        self.client = client
        self.worker = worker
        self.runner = runner
        self.tee = tee
        #: What the server reported (the worker prints these on stderr).
        self.lines = lines


async def _open(
    tmp_path: Path,
    *,
    auto: bool = True,
    queue_size: int = 100,
    token: str | None = None,
    max_request_bytes: int = 1 << 20,
) -> AsyncIterator[Setup]:
    runner = FakeRunner(auto=auto)
    async with (
        open_journal(str(tmp_path / "journal.db")) as journal,
        anyio.create_task_group() as tg,
    ):
        worker = Worker(journal, queue_size=queue_size)
        await tg.start(worker.run, runner)
        tee = PrometheusTee(MemorySink())
        lines = Lines()
        app = make_app(
            worker,
            tee,
            known_workflows={"default"},
            auth_token=Secret(token) if token else None,
            max_request_bytes=max_request_bytes,
            reports=Reports(lines.append),
        )
        async with TestClient(TestServer(app)) as client:
            yield Setup(client, worker, runner, tee, lines)
        await runner.shutdown()
        worker.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Setup]:
    async for setup in _open(tmp_path):
        yield setup


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[Setup]:
    """Tasks run until the test finishes them; the queue holds 3."""
    async for setup in _open(tmp_path, auto=False, queue_size=3):
        yield setup


async def _json(response: ClientResponse) -> Any:
    return msgspec.json.decode(await response.read())


async def test_one_task_is_accepted_and_its_result_retrievable(api: Setup) -> None:
    """POST one JSON task: 202 with its id; GET ?wait returns the result line."""
    r = await api.client.post("/v1/tasks", json={"id": "t-1", "prompt": "hi"})
    assert r.status == 202
    assert await _json(r) == {"id": "t-1", "duplicate": False}
    r = await api.client.get("/v1/tasks/t-1", params={"wait": "5"})
    assert r.status == 200
    body = await _json(r)
    assert body["id"] == "t-1"
    assert body["status"] == "completed"
    assert body["result"] == {"id": "t-1", "status": "completed", "output": "ok"}


async def test_a_task_without_id_gets_one(api: Setup) -> None:
    """The 202 names the id the worker gave an id-less task."""
    r = await api.client.post("/v1/tasks", json={"prompt": "hi"})
    task_id = (await _json(r))["id"]
    assert len(task_id) == 32
    r = await api.client.get(f"/v1/tasks/{task_id}", params={"wait": "5"})
    assert (await _json(r))["status"] == "completed"


async def test_a_duplicate_id_runs_once_and_both_see_one_result(api: Setup) -> None:
    """The second POST of an id with the same task is a 202 duplicate; the task ran once."""
    first = await api.client.post("/v1/tasks", json={"id": "d", "prompt": "a"})
    await api.client.get("/v1/tasks/d", params={"wait": "5"})
    # The same task, written with other field order and spacing, is the same task.
    second = await api.client.post("/v1/tasks", data=b'{ "prompt" : "a", "id" : "d" }')
    assert await _json(first) == {"id": "d", "duplicate": False}
    assert second.status == 202
    assert await _json(second) == {"id": "d", "duplicate": True}
    assert api.runner.submitted == ["d"]
    r = await api.client.get("/v1/tasks/d")
    assert (await _json(r))["result"]["status"] == "completed"


async def test_an_id_reused_for_another_task_is_a_409_and_nothing_is_accepted(
    api: Setup,
) -> None:
    """Same id, other role or prompt: 409 id_conflict naming the line; the batch stays out."""
    await api.client.post("/v1/tasks", json={"id": "d", "role": "coder", "prompt": "a"})
    for other in ({"id": "d", "role": "reviewer", "prompt": "a"}, {"id": "d", "prompt": "b"}):
        r = await api.client.post("/v1/tasks", json=other)
        assert r.status == 409
        assert (await _json(r))["error"] == "id_conflict"
    body = b'{"id":"fresh","prompt":"x"}\n\n{"id":"d","role":"coder","prompt":"changed"}\n'
    r = await api.client.post("/v1/tasks", data=body, headers=NDJSON)
    assert r.status == 409
    assert await _json(r) == {
        "error": "id_conflict",
        "message": "1 of 2 tasks reuse an id this worker holds for a different task;"
        " nothing was accepted: give them other ids, or send the same task to fetch its result",
        "lines": [
            {
                "line": 3,
                "message": "line 3: id 'd' is taken by a different task on this worker;"
                " give this task another id",
            }
        ],
    }
    assert (await api.client.get("/v1/tasks/fresh")).status == 404
    assert api.runner.submitted == ["d"]
    r = await api.client.get("/v1/tasks/d", params={"wait": "5"})
    assert (await _json(r))["result"]["output"] == "ok"  # the first task's result, untouched


async def test_two_racing_submissions_of_one_id_cannot_both_be_accepted(api: Setup) -> None:
    """Concurrent POSTs of one id with different tasks: one 202, every other a 409."""
    statuses: list[int] = []

    async def post(prompt: str) -> None:
        r = await api.client.post("/v1/tasks", json={"id": "race", "prompt": prompt})
        statuses.append(r.status)

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(post, f"p{i}")
    assert sorted(statuses) == [202] + [409] * 7
    assert api.runner.submitted == ["race"]


async def test_a_duplicate_of_a_running_task_does_not_start_it_again(held: Setup) -> None:
    """A resubmitted id that is still running is not handed to the Runner twice."""
    await held.client.post("/v1/tasks", json={"id": "d", "prompt": "a"})
    r = await held.client.post("/v1/tasks", json={"id": "d", "prompt": "a"})
    assert await _json(r) == {"id": "d", "duplicate": True}
    await anyio.sleep(0.05)
    assert held.runner.submitted == ["d"]


async def test_jsonl_batch_is_accepted_whole(api: Setup) -> None:
    """A JSONL batch answers every id with counts; blank lines are skipped."""
    body = b'{"id":"a","prompt":"1"}\n\n{"id":"b","prompt":"2"}\n'
    r = await api.client.post("/v1/tasks", data=body, headers=NDJSON)
    assert r.status == 202
    assert await _json(r) == {
        "accepted": 2,
        "duplicates": 0,
        "tasks": [{"id": "a", "duplicate": False}, {"id": "b", "duplicate": False}],
    }


async def test_a_batch_with_bad_lines_is_refused_whole_with_line_numbers(api: Setup) -> None:
    """400 lists every bad line with its reason, and no line of the batch is accepted."""
    body = b"\n".join(
        [
            b'{"id":"ok","prompt":"1"}',
            b"{not json",
            b'{"id":"x","role":"coder"}',
            b'{"id":"ok","prompt":"again"}',
            b'{"id":"w","workflow":"nope","input":"i"}',
            b'{"id":"y","prompt":"1","temprature":0}',
        ]
    )
    r = await api.client.post("/v1/tasks", data=body, headers=NDJSON)
    assert r.status == 400
    got = await _json(r)
    assert got["error"] == "invalid_tasks"
    assert got["message"] == (
        "5 of 6 lines are not valid tasks; nothing was accepted:"
        " fix or remove them and send the batch again"
    )
    lines = {e["line"]: e["message"] for e in got["lines"]}
    assert sorted(lines) == [2, 3, 4, 5, 6]
    assert lines[2].startswith("line 2: not valid JSON")
    assert lines[3] == "line 3: missing 'prompt' or 'messages'"
    assert lines[4] == "line 4: id 'ok' repeats line 1"
    assert lines[5] == "line 5: unknown workflow 'nope'; known: default"
    assert lines[6].startswith("line 6: unknown field 'temprature'")
    r = await api.client.get("/v1/tasks/ok")
    assert r.status == 404
    assert api.runner.submitted == []


async def test_bad_ids_are_400_line_errors_never_accepted(api: Setup) -> None:
    """Ids with control characters, too long, '.' or '..' are refused per line, unquoted."""
    bad = ["a\nb", "x" * 10_000, "..", "nul\u0000"]
    body = b"\n".join(msgspec.json.encode({"id": i, "prompt": "p"}) for i in [*bad, bad[0]])
    r = await api.client.post("/v1/tasks", data=body, headers=NDJSON)
    assert r.status == 400
    lines = {e["line"]: e["message"] for e in (await _json(r))["lines"]}
    assert lines == {
        1: "line 1: 'id' contains the control character U+000A at position 2;"
        " use printable characters only",
        2: "line 2: 'id' is 10,000 characters long; the most is 256",
        3: "line 3: 'id' cannot be '..': a URL path would resolve it away",
        4: "line 4: 'id' contains the control character U+0000 at position 4;"
        " use printable characters only",
        5: "line 5: 'id' contains the control character U+000A at position 2;"
        " use printable characters only",
    }
    r = await api.client.post("/v1/tasks", json={"id": "a\rb", "prompt": "p"})
    assert r.status == 400
    assert (await _json(r))["lines"][0]["message"].startswith(
        "line 1: 'id' contains the control character U+000D"
    )
    assert api.runner.submitted == []


@pytest.mark.parametrize(
    "task_id",
    ["x" * 256, "é" * 256, "😀" * 256, "a/b", "a/../b", "../x", "sp ace", "?q=1#f", "100%", "..."],
)
async def test_every_accepted_id_can_be_fetched_as_submit_asks_for_it(
    api: Setup, task_id: str
) -> None:
    """An id the worker accepts answers GET and DELETE at the URL `submit --url` builds."""
    r = await api.client.post("/v1/tasks", json={"id": task_id, "prompt": "p"})
    assert r.status == 202, await r.text()
    base = str(api.client.make_url("/")).rstrip("/")
    path = f"/v1/tasks/{quote(task_id, safe='')}"  # what WorkerClient requests
    async with api.client.session.get(f"{base}{path}?wait=5") as got:
        assert got.status == 200, await got.text()
        assert (await _json(got))["result"]["id"] == task_id
    async with api.client.session.delete(base + path) as deleted:
        assert deleted.status == 200
        assert (await _json(deleted))["id"] == task_id


BOMB = b'{"id": "bomb", "promt": "x", "junk": ' + b"[" * 1000 + b"]" * 1000 + b"}"


async def test_a_deeply_nested_line_is_one_line_error(api: Setup) -> None:
    """A line nested a thousand deep is one 400 line error like any typo."""
    body = b'{"id":"a","prompt":"1"}\n' + BOMB + b'\n{"id":"b","prompt":"2"}'
    r = await api.client.post("/v1/tasks", data=body, headers=NDJSON)
    assert r.status == 400
    assert (await _json(r))["lines"] == [
        {"line": 2, "message": "line 2: unknown field 'promt' (did you mean 'prompt'?)"}
    ]


async def test_a_batch_of_many_bad_lines_lists_the_first_100_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    """However many lines are bad, the 400 lists 100 (messages cut short) and counts the rest."""
    async for api in _open(tmp_path, queue_size=1000):
        await _many_bad_lines(api)


async def _many_bad_lines(api: Setup) -> None:
    long_id = b'{"id":"%s","prompt":"p"}' % (b"i" * 250)
    body = b"\n".join(
        [long_id, long_id]  # the repeat's message quotes the 250-character id
        + [b"x" * 1000] * 997
        + [b'{"id":"ok2","prompt":"2"}']
    )
    r = await api.client.post("/v1/tasks", data=body, headers=NDJSON)
    assert r.status == 400
    raw = await r.read()
    assert len(raw) < 32_000
    got = msgspec.json.decode(raw)
    assert got["message"] == (
        "998 of 1000 lines are not valid tasks; nothing was accepted: fix or remove them and"
        " send the batch again ('lines' lists the first 100)"
    )
    assert [e["line"] for e in got["lines"]] == list(range(2, 102))
    assert got["unlisted"] == 898
    assert len(got["lines"][0]["message"]) == 200
    assert got["lines"][0]["message"].startswith("line 2: id 'iiii")
    assert got["lines"][0]["message"].endswith("…")
    assert got["lines"][1]["message"].startswith("line 3: not valid JSON")
    assert api.runner.submitted == []


async def test_a_batch_with_more_tasks_than_the_queue_holds_is_a_413(held: Setup) -> None:
    """More lines than worker.queue_size can never fit: 413 at once (not a 503 to retry)."""
    body = b"\n".join(b'{"id":"q%d","prompt":"p"}' % i for i in range(4))
    r = await held.client.post("/v1/tasks", data=body + b"\n\n\n", headers=NDJSON)
    assert r.status == 413
    assert await _json(r) == {
        "error": "too_many_tasks",
        "message": "the request holds more than 3 tasks (worker.queue_size, the most this"
        " worker holds); send them in smaller batches",
    }
    three = b"\n".join(b'{"id":"q%d","prompt":"p"}' % i for i in range(3))
    r = await held.client.post("/v1/tasks", data=b"\n\n" + three + b"\n\n", headers=NDJSON)
    assert r.status == 202


async def test_parsing_a_large_body_lets_other_requests_run(tmp_path: Path) -> None:
    """The parse yields to the event loop as it goes, so one big body cannot stall the rest."""
    from runner.service._intake import SLICE_LINES, parse_tasks

    ticks = 0

    async def other_requests() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    lines = 20 * SLICE_LINES
    body = b"\n".join(b'{"prompt":"p%d"}' % i for i in range(lines))
    async with anyio.create_task_group() as tg:
        tg.start_soon(other_requests)
        await anyio.lowlevel.checkpoint()
        before = ticks
        ids = iter(range(lines))
        parsed = await parse_tasks(
            body, jsonl=True, known_workflows=(), new_id=lambda: str(next(ids)), max_tasks=lines
        )
        during = ticks - before
        tg.cancel_scope.cancel()
    assert len(parsed.tasks) == lines
    assert during >= 19


async def test_line_numbers_count_blank_lines_however_many(tmp_path: Path) -> None:
    """Blank stretches longer than a parse slice still number the lines after them right."""
    from runner.service._intake import SLICE_BYTES, parse_tasks

    blank = 2 * SLICE_BYTES + 5
    body = b'{"prompt":"a"}\n' + b"\n" * blank + b'  {"prompt": 1}\r\n\n \t\n'
    parsed = await parse_tasks(
        body, jsonl=True, known_workflows=(), new_id=lambda: "id", max_tasks=2
    )
    assert (parsed.lines, parsed.bad) == (2, 1)
    assert parsed.problems[0].line == blank + 2
    assert parsed.problems[0].message.startswith(f"line {blank + 2}: ")


async def test_unknown_ids_get_404_with_a_clear_message(api: Setup) -> None:
    """GET and DELETE of an id never seen answer 404 saying why."""
    for method in ("GET", "DELETE"):
        r = await api.client.request(method, "/v1/tasks/ghost")
        assert r.status == 404
        assert await _json(r) == {
            "error": "not_found",
            "message": "no task with id 'ghost': never submitted here, or finished longer ago"
            " than worker.retention",
        }


async def test_bad_wait_is_a_400(api: Setup) -> None:
    """?wait must be a non-negative number."""
    for value in ("soon", "-1", "nan"):
        r = await api.client.get("/v1/tasks/x", params={"wait": value})
        assert r.status == 400
        assert (await _json(r))["error"] == "bad_request"


async def test_a_full_queue_answers_503_with_retry_after(held: Setup) -> None:
    """Past queue_size unfinished tasks, POST is 503 with Retry-After and accepts nothing."""
    body = b"\n".join(b'{"id":"q%d","prompt":"p"}' % i for i in range(3))
    assert (await held.client.post("/v1/tasks", data=body, headers=NDJSON)).status == 202
    r = await held.client.post("/v1/tasks", json={"id": "extra", "prompt": "p"})
    assert r.status == 503
    assert r.headers["Retry-After"] == "1"
    assert await _json(r) == {
        "error": "queue_full",
        "message": "the queue is full (0 free places); retry after 1 s",
    }
    assert (await held.client.get("/v1/tasks/extra")).status == 404
    await anyio.sleep(0.05)
    held.runner.handles["q0"].finish()
    await held.client.get("/v1/tasks/q0", params={"wait": "5"})
    r = await held.client.post("/v1/tasks", json={"id": "extra", "prompt": "p"})
    assert r.status == 202


async def test_a_too_large_request_is_a_413(tmp_path: Path) -> None:
    """A body past max_request_bytes is refused with a JSON 413 saying what to do."""
    async for setup in _open(tmp_path, max_request_bytes=1000):
        r = await setup.client.post("/v1/tasks", data=b"x" * 2000, headers=NDJSON)
        assert r.status == 413
        assert await _json(r) == {
            "error": "request_too_large",
            "message": "the request is larger than worker.max_request_bytes (1000 bytes);"
            " send the tasks in smaller batches",
        }


async def test_delete_cancels_queued_and_running_tasks_for_good(held: Setup) -> None:
    """DELETE ends a task as cancelled (final), whether it had started or not."""
    await held.client.post("/v1/tasks", json={"id": "c", "prompt": "p"})
    await anyio.sleep(0.05)
    r = await held.client.delete("/v1/tasks/c")
    assert r.status == 200
    body = await _json(r)
    assert body["status"] == "cancelled"
    assert body["result"]["error"]["code"] == "cancelled"
    r = await held.client.delete("/v1/tasks/c")
    assert (await _json(r))["status"] == "cancelled"


async def test_shutdown_leaves_cancelled_tasks_unfinished_in_the_journal(tmp_path: Path) -> None:
    """Tasks the shutdown cancels stay resumable; finished and DELETEd ones stay final."""
    path = str(tmp_path / "journal.db")
    runner = FakeRunner(auto=False)
    async with open_journal(path) as journal, anyio.create_task_group() as tg:
        worker = Worker(journal, queue_size=10)
        await tg.start(worker.run, runner)
        tasks = [Task(id=f"s{i}", prompt="p") for i in range(4)]
        await worker.accept(tasks)
        await anyio.sleep(0.05)
        runner.handles["s0"].finish()
        await worker.cancel("s1")
        await worker.lookup("s0", wait=5)
        worker.begin_drain()
        await runner.shutdown()
        worker.close()
    async with open_journal(path) as journal:
        assert [i for i, _ in await journal.unfinished()] == ["s2", "s3"]
        s1 = await journal.get("s1")
        assert s1 is not None
        assert s1.status == "cancelled"


async def test_unfinished_tasks_are_resumed_on_start(tmp_path: Path) -> None:
    """A new worker on the same journal runs what the last one left unfinished."""
    path = str(tmp_path / "journal.db")
    async with open_journal(path) as journal:
        await journal.accept([("r1", b'{"id":"r1","prompt":"p"}')])
    runner = FakeRunner()
    async with open_journal(path) as journal, anyio.create_task_group() as tg:
        worker = Worker(journal, queue_size=10)
        assert await tg.start(worker.run, runner) == 1
        view = await worker.lookup("r1", wait=5)
        assert view is not None
        assert view.status == "completed"
        worker.close()
    assert runner.submitted == ["r1"]


async def test_draining_worker_refuses_new_tasks_but_answers_queries(api: Setup) -> None:
    """After the first signal POST is 503 with Retry-After; GET and /healthz still work."""
    await api.client.post("/v1/tasks", json={"id": "t", "prompt": "p"})
    api.worker.begin_drain()
    r = await api.client.post("/v1/tasks", json={"id": "u", "prompt": "p"})
    assert r.status == 503
    assert r.headers["Retry-After"] == "5"
    assert (await _json(r))["error"] == "shutting_down"
    assert (await api.client.get("/v1/tasks/t", params={"wait": "5"})).status == 200
    health = await _json(await api.client.get("/healthz"))
    assert health["status"] == "draining"


async def test_the_token_guards_every_endpoint_but_healthz(tmp_path: Path) -> None:
    """With auth_token set: 401 without or with a wrong token, 2xx with it; /healthz open."""
    async for setup in _open(tmp_path, token="s3cret-token"):
        c = setup.client
        good = {"Authorization": "Bearer s3cret-token"}
        bad = {"Authorization": "Bearer nope"}
        for method, path in (
            ("POST", "/v1/tasks"),
            ("GET", "/v1/tasks/x"),
            ("DELETE", "/v1/tasks/x"),
            ("GET", "/metrics"),
        ):
            for headers in ({}, bad):
                r = await c.request(method, path, headers=headers, json={"prompt": "p"})
                assert r.status == 401, (method, path)
                assert r.headers["WWW-Authenticate"] == "Bearer"
                assert b"s3cret" not in await r.read()
        assert (await c.get("/healthz")).status == 200
        r = await c.post("/v1/tasks", json={"id": "a", "prompt": "p"}, headers=good)
        assert r.status == 202
        assert (await c.get("/metrics", headers=good)).status == 200


async def _raw(setup: Setup, request: bytes) -> tuple[int, str, Any]:
    """Send ``request`` byte for byte (no client library tidying it up); the answer."""
    server = setup.client.server
    async with await anyio.connect_tcp("127.0.0.1", server.port or 0) as stream:
        await stream.send(request)
        raw = b""
        with anyio.fail_after(10):
            while True:
                try:
                    raw += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers["content-type"], msgspec.json.decode(body)


async def test_a_token_that_is_not_utf8_is_a_401_like_any_wrong_token(tmp_path: Path) -> None:
    """Authorization bytes that are not UTF-8 (0xff): 401 JSON, not a 500 and a traceback."""
    async for setup in _open(tmp_path, token="s3cret-token"):
        for token in (b"\xff", b"s3cret-token\xff", b"\xc3"):
            status, content_type, body = await _raw(
                setup,
                b"GET /v1/tasks/x HTTP/1.1\r\nHost: w\r\nConnection: close\r\n"
                b"Authorization: Bearer " + token + b"\r\n\r\n",
            )
            assert status == 401
            assert content_type.startswith("application/json")
            assert body["error"] == "unauthorized"
        assert setup.lines == []


async def test_a_bug_behind_an_endpoint_is_a_json_500_and_one_line(
    api: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception escaping a handler: JSON 500 each time, one report line without its text."""

    async def broken(task_id: str, *, wait: float = 0.0) -> None:
        raise RuntimeError("secret-ish detail from deep inside")

    monkeypatch.setattr(api.worker, "lookup", broken)
    for _ in range(3):
        r = await api.client.get("/v1/tasks/x")
        assert r.status == 500
        assert r.headers["Content-Type"].startswith("application/json")
        assert await _json(r) == {
            "error": "internal_error",
            "message": "the worker failed to answer (a bug in runner; its log says where);"
            " retry later",
        }
    assert len(api.lines) == 1
    assert api.lines[0].startswith("answered 500 to GET /v1/tasks/x: RuntimeError at ")
    assert "secret-ish" not in api.lines[0]


async def test_unknown_paths_and_methods_answer_json(api: Setup) -> None:
    """aiohttp's own 404/405 come back as JSON errors too."""
    r = await api.client.get("/nope")
    assert r.status == 404
    assert (await _json(r))["error"] == "not_found"
    r = await api.client.put("/v1/tasks/x")
    assert r.status == 405
    assert (await _json(r))["error"] == "method_not_allowed"


async def test_metrics_page_parses_and_counts_every_event(api: Setup) -> None:
    """/metrics is valid Prometheus text with the per provider and role series."""

    def event(n: int, success: bool, code: str | None = None) -> MetricEvent:
        return MetricEvent(
            event_id=f"e{n}",
            task_id="t",
            provider='p"1',
            role="coder",
            model="m",
            attempt=1,
            ts_us=1_764_190_800_000_000,
            latency_ms=120.0,
            success=success,
            error_code=code,
            input_tokens=10,
            output_tokens=5,
            cost_usd=0.25,
        )

    await api.tee.send(event(1, True))
    await api.tee.send(event(2, False, "rate_limited"))
    await api.tee.send(event(3, False, "rate_limited"))
    r = await api.client.get("/metrics")
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    labels = (("provider", 'p"1'), ("role", "coder"))
    assert samples[("runner_provider_requests_total", labels)] == 3
    assert samples[("runner_provider_failures_total", (("code", "rate_limited"), *labels))] == 2
    assert samples[("runner_provider_latency_seconds_count", labels)] == 3
    assert samples[("runner_provider_latency_seconds_bucket", (("le", "0.1"), *labels))] == 0
    assert samples[("runner_provider_latency_seconds_bucket", (("le", "0.25"), *labels))] == 3
    assert samples[("runner_provider_tokens_total", (("direction", "input"), *labels))] == 30
    assert samples[("runner_provider_cost_usd_total", labels)] == pytest.approx(0.75)
    assert samples[("runner_queue_depth", ())] == 0
    assert samples[("runner_tasks_in_flight", ())] == 0
    assert families["runner_provider_latency_seconds"].type == "histogram"


async def test_user_task_named_like_a_stage_gets_only_its_own_moves(tmp_path: Path) -> None:
    """A user's task `w/clarification` beside workflow `w`: each shows only its own moves.

    The user's task waits for provider a's only slot (pending) while `w`'s stage
    of the same id runs on c.  Moves are matched by identity, so GET and the
    journal keep the user's task pending, not the stage's running.
    """
    from runner import Runner
    from runner._task import HistoryEntry
    from runner.config._model import RoleConfig
    from tests.dispatch_support import Gate, make_config, sim, simulated

    config = make_config(
        providers=(sim("a", max_concurrency=1), sim("b"), sim("c"), sim("d")),
        roles={
            "coder": RoleConfig(provider="a"),
            "clarifier": RoleConfig(provider="c"),
            "planner": RoleConfig(provider="d"),
            "reviewer": RoleConfig(provider="b"),
        },
        default_provider="a",
    )
    providers = simulated(config)
    gate = Gate(providers["a"], Counter(), Counter())
    gate.hold = anyio.Event()
    providers["a"] = gate
    blocking = anyio.Event()
    stage_done = anyio.Event()
    async with (
        open_journal(str(tmp_path / "journal.db")) as journal,
        anyio.create_task_group() as tg,
    ):
        worker = Worker(journal, queue_size=10)

        def observe(ctx: Any, entry: HistoryEntry) -> None:
            if (ctx.id, entry.status) == ("blocker", "running"):
                blocking.set()
            if (ctx.id, ctx.workflow, entry.status) == ("w/clarification", None, "completed"):
                stage_done.set()
            worker.observe(ctx, entry)

        runner = Runner.from_config(
            config,
            metrics=MemorySink(),
            providers=providers,
            observer=observe,
            log_stream=io.StringIO(),
        )
        async with runner:
            await tg.start(worker.run, runner)
            app = make_app(
                worker,
                PrometheusTee(MemorySink()),
                known_workflows={"default"},
                auth_token=None,
                max_request_bytes=1 << 20,
                reports=Reports(Lines().append),
            )
            async with TestClient(TestServer(app)) as client:
                blocker = {"id": "blocker", "role": "coder", "prompt": "p"}
                await client.post("/v1/tasks", json=blocker)
                await blocking.wait()
                mine = {"id": "w/clarification", "role": "coder", "prompt": "p"}
                await client.post("/v1/tasks", json=mine)
                await client.post(
                    "/v1/tasks", json={"id": "w", "workflow": "default", "input": "i"}
                )
                # w's own clarification stage runs and completes on c meanwhile.
                await stage_done.wait()
                view = await _json(await client.get("/v1/tasks/w/clarification"))
                stored = await journal.get("w/clarification")
                gate.hold.set()
                done = await _json(await client.get("/v1/tasks/w/clarification?wait=5"))
                workflow = await _json(await client.get("/v1/tasks/w?wait=5"))
            await runner.shutdown()
            worker.close()
    assert view["status"] == "pending"
    assert stored is not None
    assert stored.status == "pending"
    assert done["status"] == "completed"
    assert done["result"]["role"] == "coder"
    assert [h["provider"] for h in done["result"]["history"] if h["status"] == "running"] == ["a"]
    assert workflow["status"] == "completed"
    clarification = workflow["result"]["stages"][0]
    assert (clarification["stage"], clarification["provider"]) == ("clarification", "c")
