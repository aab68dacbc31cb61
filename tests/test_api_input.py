"""Input people actually write to the Python API: dicts and lists, checked like a tasks file.

``Task(messages=[{...}])`` and ``Task(parameters={...})`` are converted to the
Structs they stand for; a wrong value raises a ValueError subclass naming the
field (never an AttributeError, never a task failed with code ``unknown``);
``run_many`` takes mappings as a tasks file line would be written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from runner import InvalidValueError, Message, Parameters, Runner, Task, TaskError
from runner._tasks_file import TasksFile
from runner.config import load_config_text

pytestmark = pytest.mark.anyio

CONFIG = """\
providers:
  - {id: sim, type: simulated, model: s-1}
roles:
  coder: {provider: sim}
default_provider: sim
metrics: {store: none}
logging: {level: warning}
"""


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_messages_as_dicts_become_messages() -> None:
    """A list of dicts is the tuple of Messages it stands for."""
    task = Task(messages=[{"role": "user", "content": "hi"}])  # type: ignore[arg-type]
    assert task.messages == (Message(role="user", content="hi"),)


def test_parameters_as_a_dict_become_parameters() -> None:
    """A dict of parameters is a Parameters; a stop string is a list of one."""
    task = Task(prompt="x", parameters={"temperature": 0.5, "stop": "###"})  # type: ignore[arg-type]
    assert task.parameters == Parameters(temperature=0.5, stop=("###",))


@pytest.mark.parametrize(
    ("fields", "message", "field"),
    [
        (
            {"prompt": "x", "parameters": {"temperature": 9}},
            "'parameters.temperature': expected float <= 2.0",
            "parameters.temperature",
        ),
        (
            {"messages": [{"role": "robot", "content": "x"}]},
            "'messages[0].role': invalid enum value 'robot'",
            "messages[0].role",
        ),
        (
            {"messages": [{"role": "user"}]},
            "missing field 'content' in 'messages[0]'",
            "messages[0]",
        ),
        (
            {"prompt": "x", "parameters": {"tempreature": 1}},
            "unknown field 'tempreature' in 'parameters' (did you mean 'temperature'?)",
            "parameters",
        ),
        ({"prompt": 5}, "'prompt': expected str, got int", "prompt"),
        ({"messages": "hi"}, "'messages': expected array, got str", "messages"),
    ],
)
def test_a_wrong_value_raises_a_value_error_naming_the_field(
    fields: dict[str, object], message: str, field: str
) -> None:
    """The same words as the tasks file, as TaskError (a ValueError), never AttributeError."""
    with pytest.raises(ValueError) as info:
        Task(**fields)  # type: ignore[arg-type]
    assert isinstance(info.value, TaskError)
    assert str(info.value) == message
    assert info.value.field == field


def test_the_tasks_file_says_the_same_words(tmp_path: Path) -> None:
    """A tasks file line with the same mistake gets the same message, after its line number."""
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "x", "parameters": {"temperature": 9}}\n')
    with TasksFile.open(str(path), known_workflows=()) as tasks:
        [item] = list(tasks)
    assert item.error is not None  # type: ignore[union-attr]
    assert item.error.message == "line 1: 'parameters.temperature': expected float <= 2.0"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"temperature": 9}, "'temperature': expected float <= 2.0"),
        ({"top_p": 1.5}, "'top_p': expected float <= 1.0"),
        ({"max_tokens": 0}, "'max_tokens': expected int >= 1"),
        ({"max_tokens": True}, "'max_tokens': expected int, got bool"),
        ({"stop": [1]}, "'stop[0]': expected str, got int"),
    ],
)
def test_parameters_out_of_range_are_refused(fields: dict[str, object], message: str) -> None:
    """``Parameters(temperature=9)`` is refused as the CLI refuses the same value."""
    with pytest.raises(InvalidValueError) as info:
        Parameters(**fields)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert str(info.value) == message


def test_a_whole_number_is_a_float_parameter() -> None:
    """``temperature=1`` is 1.0, as in a JSON line."""
    assert Parameters(temperature=1).temperature == 1.0
    assert type(Parameters(temperature=1).temperature) is float


async def test_run_many_takes_dicts_and_checks_them_like_a_tasks_file() -> None:
    """Dicts run; a bad one is rejected with the tasks file's message; nothing fails as unknown."""
    config = load_config_text(CONFIG)
    tasks: list[object] = [
        {"id": "a", "role": "coder", "prompt": "x"},
        {"id": "b", "messages": [{"role": "user", "content": "hi"}], "parameters": {"seed": 1}},
        {"id": "c", "prompt": "x", "parameters": {"temperature": 9}},
        {"id": "d", "promt": "x"},
        Task(id="e", prompt="x", parameters={"stop": "###"}),  # type: ignore[arg-type]
    ]
    async with Runner(config) as runner:
        results = {r.id: r async for r in runner.run_many(tasks)}  # type: ignore[arg-type]
    assert {k: r.status for k, r in results.items()} == {
        "a": "completed",
        "b": "completed",
        "c": "rejected",
        "d": "rejected",
        "e": "completed",
    }
    assert results["c"].error is not None
    assert results["c"].error.code == "invalid_task"
    assert results["c"].error.message == "'parameters.temperature': expected float <= 2.0"
    assert results["d"].error is not None
    assert results["d"].error.message == "unknown field 'promt' (did you mean 'prompt'?)"


async def test_run_takes_a_dict() -> None:
    """``runner.run({...})`` runs a mapping as it would a Task."""
    async with Runner(load_config_text(CONFIG)) as runner:
        result = await runner.run({"role": "coder", "messages": [{"role": "user", "content": "x"}]})
    assert result.status == "completed"


async def test_run_many_yields_results_while_an_async_source_waits() -> None:
    """A source waiting for its next task (stdin, a queue) does not hold back a finished Result."""
    gate = anyio.Event()
    closed = False

    async def source() -> AsyncIterator[Task]:
        nonlocal closed
        try:
            yield Task(id="a", prompt="x")
            await gate.wait()  # nothing more until the first result is out
            yield Task(id="b", prompt="y")
        finally:
            closed = True

    async with Runner(load_config_text(CONFIG)) as runner:
        results = runner.run_many(source())
        # Before, run_many waited on the source here and never yielded "a".
        with anyio.fail_after(10):
            first = await anext(results)
        assert first.id == "a"
        gate.set()
        rest = [r.id async for r in results]
    assert rest == ["b"]
    assert closed


async def test_an_async_source_error_comes_out_of_run_many() -> None:
    """The source's own exception is raised by run_many, as a plain loop would raise it."""

    async def source() -> AsyncIterator[Task]:
        yield Task(id="a", prompt="x")
        raise LookupError("the queue went away")

    async with Runner(load_config_text(CONFIG)) as runner:
        with pytest.raises(LookupError, match="the queue went away"):
            async for _ in runner.run_many(source()):
                pass


async def test_leaving_run_many_early_closes_a_waiting_source() -> None:
    """Closing the iterator while the source waits ends the source too; the runner closes."""
    closed = anyio.Event()

    async def source() -> AsyncIterator[Task]:
        try:
            yield Task(id="a", prompt="x")
            await anyio.sleep_forever()
        finally:
            closed.set()
        yield Task(id="never", prompt="x")  # pragma: no cover

    async with Runner(load_config_text(CONFIG)) as runner:
        results = runner.run_many(source())
        with anyio.fail_after(10):
            assert (await anext(results)).id == "a"
            await results.aclose()
            await closed.wait()
