"""The one logging path: batched lines, immediate warnings, nothing lost at close."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Literal

import anyio
import pytest

from runner import Runner, Task
from runner._log import FLUSH_DELAY, ExecutionLog, LineWriter, configure_logging
from runner._states import Move
from runner.config import BUNDLED_NOTICE, LoggingConfig
from runner.metrics import MemorySink
from tests.dispatch_support import make_config, open_runner


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def test_info_lines_wait_and_go_out_in_one_write() -> None:
    """Info lines are gathered, then written with a single write when flushed."""
    stream, clock = CountingStream(), Clock()
    writer = LineWriter(stream, clock=clock)
    for i in range(10):
        writer.info(f"line {i}")
    assert stream.getvalue() == ""
    assert writer.pending == 10
    writer.flush()
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(10)]
    assert stream.writes == 1


def test_a_line_after_the_delay_writes_everything_waiting() -> None:
    """A line that comes FLUSH_DELAY after the first waiting one flushes them all."""
    stream, clock = CountingStream(), Clock()
    writer = LineWriter(stream, clock=clock)
    writer.info("first")
    clock.now = FLUSH_DELAY / 2
    writer.info("second")
    assert stream.getvalue() == ""
    clock.now = FLUSH_DELAY
    writer.info("third")
    assert stream.getvalue().splitlines() == ["first", "second", "third"]


def test_warnings_are_written_at_once() -> None:
    """A warning is written immediately, with the info lines before it, in order."""
    stream = CountingStream()
    writer = LineWriter(stream, clock=Clock())
    writer.info("a move")
    writer.warning("provider crashed")
    assert stream.getvalue().splitlines() == ["a move", "provider crashed"]


def test_a_closed_stream_loses_lines_not_the_program() -> None:
    """Writing to a closed stream does not raise: logging never fails a task."""
    stream = io.StringIO()
    writer = LineWriter(stream, clock=Clock())
    stream.close()
    writer.info("x")
    writer.warning("y")
    writer.flush()
    assert writer.pending == 0


def test_json_lines_are_rendered_by_msgspec_with_level_and_time() -> None:
    """JSON format: one object per line with event, level, an ISO UTC timestamp and fields."""
    stream = io.StringIO()
    logger, writer = configure_logging(LoggingConfig(format="json"), stream=stream)
    logger.info("task", task_id="t1", attempt=2, status="running")
    writer.flush()
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "task"
    assert record["level"] == "info"
    assert record["task_id"] == "t1"
    assert record["attempt"] == 2
    assert record["timestamp"].endswith("Z")
    assert len(record["timestamp"]) == len("2026-01-01T00:00:00.000Z")


def test_plain_console_lines_read_like_structlog_console() -> None:
    """Console format off a terminal: '<time> [info     ] task  key=value ...', no colour codes."""
    stream = io.StringIO()
    logger, writer = configure_logging(LoggingConfig(format="console"), stream=stream)
    logger.info("task", task_id="t1", status="completed")
    writer.flush()
    line = stream.getvalue().rstrip("\n")
    assert "[info     ] task" in line
    assert line.endswith("task_id=t1 status=completed")
    assert "\x1b[" not in line


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_every_line_is_written_by_the_time_the_runner_closes() -> None:
    """Lines logged up to the end of the `async with` are all in the stream after it."""
    log = io.StringIO()
    async with open_runner(make_config(), log=log) as r:
        for i in range(20):
            await r.run(Task(id=f"t{i}", role="coder", prompt="x"))
    lines = [json.loads(x) for x in log.getvalue().splitlines()]
    assert len(lines) == 40
    assert {ln["task_id"] for ln in lines} == {f"t{i}" for i in range(20)}


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_lines_reach_the_stream_while_the_runner_stays_open() -> None:
    """An idle runner still writes waiting lines within about FLUSH_DELAY (no close needed)."""
    log = io.StringIO()
    async with open_runner(make_config(), log=log) as r:
        await r.run(Task(id="t", role="coder", prompt="x"))
        # Polling on purpose: the point is that nothing but time moves the line out.
        with anyio.fail_after(5):
            while "completed" not in log.getvalue():  # noqa: ASYNC110
                await anyio.sleep(FLUSH_DELAY / 4)


@pytest.mark.anyio
async def test_the_bundled_config_is_named_on_the_log_not_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runner.from_config(None) with nothing to find says so as a warning on its log."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNER_CONFIG", raising=False)
    log = io.StringIO()
    async with Runner.from_config(None, metrics=MemorySink(), log_stream=log):
        pass
    # The bundled config logs in the console format at level warning.
    (line,) = log.getvalue().splitlines()
    assert "[warning  ] config" in line
    assert line.endswith(f"notice={BUNDLED_NOTICE}")
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_move_line_reads_the_same_with_or_without_the_direct_path(
    fmt: Literal["json", "console"],
) -> None:
    """The direct path (no structlog) writes the line structlog's chain writes, keys in order."""
    lines = []
    for direct in (True, False):
        stream = io.StringIO()
        logger, writer = configure_logging(LoggingConfig(format=fmt), stream=stream)
        assert writer.render is not None  # a StringIO is no terminal: the plain chain
        log = ExecutionLog(logger, "info", writer=writer if direct else None)
        move = Move("retrying", 1.0, provider="p", attempt=2, error_code="timeout")
        log.move("t1", "coder", move, latency_ms=12.345, workflow="w")
        writer.flush()
        (line,) = stream.getvalue().splitlines()
        lines.append(line)
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        assert list(records[0]) == list(records[1])
        for r in records:
            del r["timestamp"]
        assert (
            records[0]
            == records[1]
            == {
                "task_id": "t1",
                "workflow": "w",
                "role": "coder",
                "provider": "p",
                "attempt": 2,
                "status": "retrying",
                "latency_ms": 12.3,
                "error": "timeout",
                "event": "task",
                "level": "info",
            }
        )
    else:
        direct_line, chain_line = (line.split(" ", 1)[1] for line in lines)
        assert direct_line == chain_line
        assert direct_line.startswith("[info     ] task")


def test_a_terminal_keeps_structlogs_coloured_renderer() -> None:
    """On a terminal the console chain is structlog's own, so the direct path is off."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    _, writer = configure_logging(LoggingConfig(format="console"), stream=Tty())
    assert writer.render is None
