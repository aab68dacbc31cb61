"""``python -m runner worker`` as a real process: crash, restart, drain, refusals, leaks.

Each test starts the worker on 127.0.0.1 port 0 and reads the port from its
``listening on`` line.  Marked ``slow``: they spawn interpreters.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.worker_support import ROOT
from tests.worker_support import WorkerProcess as Worker
from tests.worker_support import worker_config as _config

pytestmark = pytest.mark.slow


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.discard()


def _journal_rows(tmp: Path) -> list[tuple[str, str, str | None]]:
    with closing(sqlite3.connect(tmp / "journal.db")) as db:
        return db.execute("SELECT id, status, result FROM tasks ORDER BY id").fetchall()


def test_sigkill_mid_run_then_restart_gives_every_task_one_result(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """1,000 tasks, SIGKILL mid-run, restart: every id has one retrievable terminal result."""
    config = _config(tmp_path)
    first = Worker(config, tmp_path)
    workers.append(first)
    ids = [f"t-{i:04d}" for i in range(1000)]
    for start in (0, 500):
        status, body = first.post_jsonl(
            [{"id": i, "prompt": f"task {i}"} for i in ids[start : start + 500]]
        )
        assert status == 202, body
        assert body["accepted"] == 500
    # Let some finish, then kill it without warning.
    while first.call("GET", f"/v1/tasks/{ids[100]}?wait=10")[1]["status"] != "completed":
        pass
    first.proc.kill()
    first.proc.wait()
    done_before = {i: r for i, s, r in _journal_rows(tmp_path) if r is not None}
    assert 0 < len(done_before) < 1000

    second = Worker(config, tmp_path)
    workers.append(second)
    resumed = re.search(rb"(\d+) tasks resumed", second.log.read_bytes())
    assert resumed is not None
    assert int(resumed[1]) == 1000 - len(done_before)
    for task_id in ids:
        status, view = second.call("GET", f"/v1/tasks/{task_id}?wait=30")
        assert status == 200
        assert view["status"] == "completed", view
        assert view["result"]["id"] == task_id
    # A resubmission after all that still runs nothing new; another task under the id is refused.
    status, body = second.post_jsonl([{"id": ids[0], "prompt": f"task {ids[0]}"}])
    assert body == {"accepted": 0, "duplicates": 1, "tasks": [{"id": ids[0], "duplicate": True}]}
    assert second.post_jsonl([{"id": ids[0], "prompt": "again"}])[0] == 409
    assert second.stop() == 0  # the journal is locked while a worker holds it
    rows = _journal_rows(tmp_path)
    assert [r[0] for r in rows] == ids
    assert all(s == "completed" and r is not None for _, s, r in rows)
    # Results written before the crash were kept, not run again.
    assert {i: r for i, _, r in rows if i in done_before} == done_before


def test_sigterm_drains_and_leaves_unstarted_tasks_for_the_next_start(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """SIGTERM: intake stops, the rest stays unfinished (not cancelled) and runs on restart."""
    config = _config(tmp_path, latency=2000, jitter=0, grace="100ms")
    first = Worker(config, tmp_path)
    workers.append(first)
    status, _ = first.post_jsonl([{"id": f"d{i}", "prompt": "p"} for i in range(80)])
    assert status == 202
    time.sleep(0.3)
    assert first.stop() == 0
    assert b"Traceback" not in first.log.read_bytes()
    rows = _journal_rows(tmp_path)
    assert len(rows) == 80
    assert all(r is None for _, _, r in rows), "no task may be marked finished by the shutdown"
    assert "cancelled" not in {s for _, s, _ in rows}

    fast = _config(tmp_path, latency=1, jitter=0)
    second = Worker(fast, tmp_path)
    workers.append(second)
    assert b"80 tasks resumed" in second.log.read_bytes()
    for i in range(80):
        assert second.call("GET", f"/v1/tasks/d{i}?wait=30")[1]["status"] == "completed"
    assert second.stop() == 0


def test_binding_beyond_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    """--host 0.0.0.0 with no worker.auth_token: exit 2 and one clear message."""
    config = _config(tmp_path)
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "runner", "worker", "--config", str(config), "--host", "0.0.0.0"],  # noqa: S104
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: refusing to listen on 0.0.0.0 without a token: anyone who can reach it could run"
        " tasks on your providers. Set worker.auth_token (for example auth_token: ${RUNNER_TOKEN})"
        " or bind 127.0.0.1\n"
    )


def test_no_response_or_log_carries_a_provider_key_or_the_token(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """A failing keyed provider: its key and the bearer token appear in no body or log line."""
    key = "sk-unique-worker-leak-check-0123456789"
    token = "tok-unique-worker-4242"
    extra = (
        "  - id: leaky\n    type: openai\n    model: gpt-x\n    api_key: ${LEAK_KEY}\n"
        "    base_url: http://127.0.0.1:9/v1\n    timeout: 2\n"
        "roles:\n  coder: {provider: leaky}\n"
    )
    config = _config(tmp_path, extra=extra)
    text = config.read_text().replace("port: 0}", 'port: 0, auth_token: "${RUNNER_TOKEN}"}')
    config.write_text(text.replace("level: warning", "level: debug"))
    w = Worker(config, tmp_path, env={"LEAK_KEY": key, "RUNNER_TOKEN": token})
    workers.append(w)
    auth = {"Authorization": f"Bearer {token}"}
    assert w.call("GET", "/metrics")[0] == 401
    body = json.dumps({"id": "k", "role": "coder", "prompt": "p"}).encode()
    assert w.call("POST", "/v1/tasks", body, headers=auth)[0] == 202
    _, view = w.call("GET", "/v1/tasks/k?wait=30", headers=auth)
    # The keyed provider failed (nothing listens there); the default provider took over.
    assert view["result"]["fallback_used"] is True
    assert "leaky" in {h.get("provider") for h in view["result"]["history"]}
    w.call("GET", "/metrics", headers=auth)
    w.call("GET", "/healthz")
    w.call("DELETE", "/v1/tasks/k", headers=auth)
    assert w.stop() == 0
    everything = b"".join(w.bodies) + w.log.read_bytes()
    assert key.encode() not in everything
    assert key[: len(key) // 2].encode() not in everything
    assert token.encode() not in everything


def test_metrics_page_agrees_with_metrics_summary(
    tmp_path: Path, workers: list[Worker], capsys: pytest.CaptureFixture[str]
) -> None:
    """On a fresh database, /metrics counts per provider and role what metrics summary shows."""
    from runner.cli._main import main

    extra = (
        "  - id: flaky\n    type: simulated\n    failure_rate: 0.4\n    seed: 3\n"
        "    failure_codes: [rate_limited, server_error]\n"
        "    pricing: {input_per_million: 3.0, output_per_million: 5.0}\n"
        "roles:\n  coder: {provider: flaky, fallbacks: [sim]}\n"
    )
    config = _config(tmp_path, latency=1, jitter=0, extra=extra)
    retry = "retry: {max_attempts: 2, initial_delay: 0, max_delay: 0, jitter: 0}\n"
    config.write_text(config.read_text() + retry)
    w = Worker(config, tmp_path)
    workers.append(w)
    tasks = [
        {"id": f"m{i}", "role": "coder" if i % 2 else "reviewer", "prompt": "x" * i}
        for i in range(200)
    ]
    assert w.post_jsonl(tasks)[0] == 202
    for t in tasks:
        assert w.call("GET", f"/v1/tasks/{t['id']}?wait=30")[1]["status"] == "completed"
    _, page = w.call("GET", "/metrics")
    assert w.stop() == 0  # flushes the metrics writer
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    capsys.readouterr()
    assert main(["metrics", "summary", "--config", str(config), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # flaky/coder, sim/coder (the fallback) and sim/reviewer
    assert {(r["provider"], r["role"]) for r in rows} == {
        ("flaky", "coder"),
        ("sim", "coder"),
        ("sim", "reviewer"),
    }
    for row in rows:
        labels = (("provider", row["provider"]), ("role", row["role"]))
        assert samples[("runner_provider_requests_total", labels)] == row["requests"]
        assert samples[("runner_provider_latency_seconds_count", labels)] == row["requests"]
        tokens_in = ("runner_provider_tokens_total", (("direction", "input"), *labels))
        tokens_out = ("runner_provider_tokens_total", (("direction", "output"), *labels))
        assert samples[tokens_in] == row["input_tokens"]
        assert samples[tokens_out] == row["output_tokens"]
        cost = samples[("runner_provider_cost_usd_total", labels)]
        assert cost == pytest.approx(row["cost_usd"], abs=1e-9)
        failures = {
            dict(lab)["code"]: v
            for (name, lab), v in samples.items()
            if name == "runner_provider_failures_total" and (lab[1], lab[2]) == labels
        }
        assert failures == row["errors"]
        assert sum(failures.values()) == row["failures"]
    assert any(r["errors"] for r in rows), "the flaky provider should have failed some attempts"
    assert samples[("runner_tasks_finished_total", (("status", "completed"),))] == 200


TASKS_FILE = [
    *(json.dumps({"id": f"s-{i}", "prompt": f"say {i}"}) for i in range(12)),
    '{"prompt": "no id: becomes line-13"}',
    "{not json",
    "",
    '{"id": "no-prompt", "role": "coder"}',
    '{"id": "wf", "workflow": "default", "input": "a tool"}',
    '{"id": "wf-bad", "workflow": "nope", "input": "x"}',
    *(json.dumps({"id": f"u-{i}", "prompt": f"more {i}"}) for i in range(12)),
    # Lines 31-33: a typo nested 1,000 deep, an id with a newline, a 10,000-character id.
    '{"id": "bomb", "promt": "x", "junk": ' + "[" * 1000 + "]" * 1000 + "}",
    json.dumps({"id": "a\nb", "prompt": "p"}),
    json.dumps({"id": "x" * 10_000, "prompt": "p"}),
]


def _results(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_id = {r["id"]: r for r in lines}
    assert len(by_id) == len(lines), "one result per id"
    return by_id


def test_submit_url_gives_the_same_results_as_a_local_submit(
    tmp_path: Path, workers: list[Worker], capsys: pytest.CaptureFixture[str]
) -> None:
    """Same ids, statuses and rejection messages, same exit code; a small queue forces 503s."""
    from runner.cli._main import main

    config = _config(tmp_path, latency=20, jitter=0)
    text = config.read_text().replace("port: 0}", "port: 0, queue_size: 8}")
    config.write_text(text.replace("store: sqlite", "store: none"))
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(TASKS_FILE) + "\n")
    w = Worker(config, tmp_path)
    workers.append(w)
    local_out, remote_out = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    local = main(["submit", str(tasks), "--config", str(config), "--out", str(local_out)])
    remote = main(["submit", str(tasks), "--url", w.url, "--out", str(remote_out), "--no-progress"])
    assert local == remote == 1  # rejected lines make it 1 in both
    mine, theirs = _results(local_out), _results(remote_out)
    assert {i: r["status"] for i, r in theirs.items()} == {i: r["status"] for i, r in mine.items()}
    rejected = {i for i, r in mine.items() if r["status"] == "rejected"}
    assert rejected == {"line-14", "no-prompt", "wf-bad", "line-31", "line-32", "line-33"}
    for task_id in rejected:
        assert theirs[task_id]["error"] == mine[task_id]["error"]
        assert theirs[task_id]["line"] == mine[task_id]["line"]
    assert theirs["wf-bad"]["error"]["message"] == (
        "line 18: unknown workflow 'nope'; known: default"
    )
    assert "line-13" in theirs
    assert w.stop() == 0
    out = capsys.readouterr().out
    assert out.count("32 tasks in") == 2  # both runs end with the same summary


def test_submit_url_without_the_token_stops_with_one_clear_message(
    tmp_path: Path, workers: list[Worker], capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker that wants a token, none given: exit 2 and what to do."""
    from runner.cli._main import main

    config = _config(tmp_path)
    text = config.read_text().replace("port: 0}", 'port: 0, auth_token: "${RUNNER_TOKEN}"}')
    config.write_text(text)
    w = Worker(config, tmp_path, env={"RUNNER_TOKEN": "right-token"})
    workers.append(w)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "prompt": "p"}\n')
    code = main(["submit", str(tasks), "--url", w.url, "--token", "wrong", "--out", "-"])
    assert code == 2
    assert capsys.readouterr().err.endswith(
        f"error: the worker at {w.url} refused the request: give its token with --token"
        " or $RUNNER_TOKEN\n"
    )
    os.environ["RUNNER_TOKEN"] = "right-token"
    try:
        code = main(["submit", str(tasks), "--url", w.url, "--out", str(tmp_path / "r.jsonl")])
    finally:
        del os.environ["RUNNER_TOKEN"]
    assert code == 0
    assert _results(tmp_path / "r.jsonl")["a"]["status"] == "completed"


def test_a_second_signal_stops_at_once_and_loses_nothing(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """SIGTERM twice: exit 130 without waiting out the grace; every task stays resumable."""
    config = _config(tmp_path, latency=20_000, jitter=0, grace="60s")
    w = Worker(config, tmp_path)
    workers.append(w)
    assert w.post_jsonl([{"id": f"h{i}", "prompt": "p"} for i in range(20)])[0] == 202
    w.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while b"draining" not in w.log.read_bytes():
        assert time.monotonic() < deadline, w.log.read_text()
        time.sleep(0.05)
    assert w.stop(signal.SIGTERM) == 130
    assert b"stopping at once" in w.log.read_bytes()
    assert b"Traceback" not in w.log.read_bytes()
    rows = _journal_rows(tmp_path)
    assert len(rows) == 20
    assert all(r is None for _, _, r in rows)


def test_a_busy_port_or_journal_is_refused_with_one_message(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """A second worker on a used port, or on a journal in use, exits 2 with what to do."""
    first = Worker(_config(tmp_path), tmp_path)
    workers.append(first)
    port = first.url.rsplit(":", 1)[1]
    other = tmp_path / "other"
    other.mkdir()
    for config, args, message in (
        (_config(other), ["--port", port], f"cannot listen on 127.0.0.1:{port}: "),
        (tmp_path / "worker.yaml", [], "is in use by another worker"),
    ):
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "runner", "worker", "--config", str(config), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ")
        assert message in done.stderr
        assert "Traceback" not in done.stderr


def test_ctrl_c_after_the_worker_died_accounts_for_every_line(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """Worker SIGKILLed mid-run, then SIGINT to submit --url: exit 130, every line cancelled.

    The tasks the worker held are written ``cancelled`` saying the worker did
    not confirm their end; no traceback, no aiohttp "Unclosed" warning.
    """
    config = _config(tmp_path, latency=20_000, jitter=0, grace="1s")
    w = Worker(config, tmp_path)
    workers.append(w)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(f'{{"id": "k-{i}", "prompt": "p"}}\n' for i in range(40)))
    out = tmp_path / "results.jsonl"
    command = ["-X", "dev", "-m", "runner", "submit", str(tasks), "--url", w.url]
    submit = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, *command, "--config", str(config), "--out", str(out), "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while w.call("GET", "/v1/tasks/k-39")[0] != 200:  # every task is on the worker
        assert time.monotonic() < deadline
        time.sleep(0.05)
    w.proc.kill()
    w.proc.wait()
    submit.send_signal(signal.SIGINT)
    _, stderr = submit.communicate(timeout=45)
    text = stderr.decode()
    assert submit.returncode == 130, text
    assert "Traceback" not in text
    assert "Unclosed" not in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(f"k-{i}" for i in range(40))
    assert {r["status"] for r in rows} == {"cancelled"}
    assert rows[0]["error"]["message"] == (
        f"the run was interrupted and the worker at {w.url} did not confirm this task's end;"
        f" it may still run there (GET /v1/tasks/{rows[0]['id']})"
    )


def test_submit_url_rejects_an_id_reused_for_another_task(
    tmp_path: Path, workers: list[Worker], capsys: pytest.CaptureFixture[str]
) -> None:
    """The same file again fetches the results; a changed line with an old id is id_conflict."""
    from runner.cli._main import main

    config = _config(tmp_path, latency=1, jitter=0)
    w = Worker(config, tmp_path)
    workers.append(w)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text('{"id": "a", "prompt": "p"}\n{"id": "b", "role": "coder", "prompt": "q"}\n')
    second.write_text(
        '{"id": "a", "prompt": "p"}\n{"id": "b", "role": "reviewer", "prompt": "q"}\n'
        '{"id": "c", "prompt": "r"}\n'
    )
    out = tmp_path / "r.jsonl"
    assert main(["submit", str(first), "--url", w.url, "--out", str(out)]) == 0
    before = _results(out)
    assert main(["submit", str(first), "--url", w.url, "--out", str(out)]) == 0
    assert _results(out) == before  # idempotent: the journaled results, not new runs
    assert main(["submit", str(second), "--url", w.url, "--out", str(out)]) == 1
    got = _results(out)
    assert {i: r["status"] for i, r in got.items()} == {
        "a": "completed",
        "b": "rejected",
        "c": "completed",
    }
    assert got["a"] == before["a"]
    assert got["b"]["line"] == 2
    assert got["b"]["error"] == {
        "code": "id_conflict",
        "message": "line 2: id 'b' is taken by a different task on this worker;"
        " give this task another id",
    }
    assert w.stop() == 0


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_out_of_range_is_refused_with_one_line(tmp_path: Path, port: str) -> None:
    """--port outside 0-65535: exit 2 and one line saying what to give, no traceback."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "runner",
            "worker",
            "--config",
            str(_config(tmp_path)),
            "--port",
            port,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"error: --port {port} is not a TCP port: give 0-65535 (0 picks a free one)\n"
    )
