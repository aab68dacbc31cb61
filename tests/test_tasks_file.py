"""The tasks-file reader: every line a Task or a rejection with its line number."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import msgspec
import pytest

from runner import Result, Task, UsageError
from runner._tasks_file import TasksFile, _FileIds

WORKFLOWS = {"default", "quick"}


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return "asyncio"


def read(text: str) -> list[Task | Result]:
    stream = io.BytesIO(text.encode())
    with TasksFile(stream, name="<test>", known_workflows=WORKFLOWS, close=False) as tasks:
        return list(tasks)


def read_path(path: Path) -> list[Task | Result]:
    with TasksFile.open(str(path), known_workflows=WORKFLOWS) as tasks:
        return list(tasks)


def messages(items: list[Task | Result]) -> list[str]:
    return [i.error.message for i in items if isinstance(i, Result) and i.error is not None]


def test_valid_lines_become_tasks() -> None:
    """Each valid line is a Task with its fields as written."""
    items = read(
        '{"id": "t-1", "role": "coder", "prompt": "hi", "parameters": {"temperature": 0}}\n'
        '{"id": "t-2", "messages": [{"role": "user", "content": "yo"}]}\n'
        '{"id": "w-1", "workflow": "quick", "input": "a CLI"}\n'
    )
    assert [type(i) for i in items] == [Task, Task, Task]
    first = items[0]
    assert isinstance(first, Task)
    assert (first.id, first.role, first.prompt) == ("t-1", "coder", "hi")
    assert first.parameters is not None
    assert first.parameters.temperature == 0


def test_missing_id_defaults_to_line_number() -> None:
    """A task without an id is named line-<n> after its line."""
    items = read('\n{"prompt": "a"}\n\n{"prompt": "b"}')
    assert [i.id for i in items] == ["line-2", "line-4"]


def test_blank_lines_are_skipped_but_counted() -> None:
    """Blank lines get no result, and later lines keep their true numbers."""
    items = read('\n   \n{"prompt": 1}\n')
    assert messages(items) == ["line 3: 'prompt': expected str, got int"]


def test_not_json_is_rejected_with_its_line() -> None:
    """A line that is not JSON is rejected with its number; the others still come through."""
    items = read('{"id": "a", "prompt": "x"}\n{oops}\n{"id": "b", "prompt": "y"}\n')
    assert [i.id for i in items] == ["a", "line-2", "b"]
    rejected = items[1]
    assert isinstance(rejected, Result)
    assert rejected.status == "rejected"
    assert rejected.line == 2
    assert rejected.error is not None
    assert rejected.error.code == "invalid_task"
    assert rejected.error.message == (
        "line 2: not valid JSON: JSON is malformed: object keys must be strings (column 2)"
    )


def test_unknown_field_suggests_the_close_name() -> None:
    """A misspelt field is named, with the field it probably meant."""
    items = read('{"id": "a", "promt": "x"}\n')
    assert messages(items) == ["line 1: unknown field 'promt' (did you mean 'prompt'?)"]
    assert items[0].id == "a"


def test_a_far_name_gets_no_suggestion() -> None:
    """``stream`` is not a misspelt ``system``: no 'did you mean', the known fields instead."""
    items = read('{"prompt": "x", "stream": true}\n')
    [message] = messages(items)
    assert message.startswith("line 1: unknown field 'stream' (known: id, role, prompt, system,")
    assert "did you mean" not in message


def test_a_stop_string_is_a_list_of_one() -> None:
    """``"stop": "###"`` is accepted, as docs/configuration.md says, and read as ["###"]."""
    [task] = read('{"prompt": "x", "parameters": {"stop": "###"}}\n')
    assert isinstance(task, Task)
    assert task.parameters is not None
    assert task.parameters.stop == ("###",)


def test_invalid_line_with_a_taken_id_is_named_by_its_line() -> None:
    """An invalid line whose id is already taken gets line-<n>, keeping result ids unique."""
    items = read('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": 5}\n')
    assert [i.id for i in items] == ["a", "line-2"]
    assert messages(items) == ["line 2: 'prompt': expected str, got int"]


def test_unknown_nested_field_names_its_place() -> None:
    """An unknown parameter names where it was and the likely parameter."""
    items = read('{"prompt": "x", "parameters": {"tempreature": 1}}\n')
    assert messages(items) == [
        "line 1: unknown field 'tempreature' in 'parameters' (did you mean 'temperature'?)"
    ]


def test_unknown_field_without_close_match_lists_known() -> None:
    """With no close match, the known fields are listed."""
    items = read('{"prompt": "x", "zzz": 1}\n')
    assert messages(items) == [
        "line 1: unknown field 'zzz' (known: id, role, prompt, system, messages, "
        "parameters, workflow, input, metadata, tags)"
    ]


BOMB = '{"id": "bomb", "promt": "x", "junk": ' + "[" * 1000 + "]" * 1000 + "}"


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_a_line_nested_deep_beside_a_typo_is_one_rejection(depth: int) -> None:
    """A typo line nested thousands deep is rejected like any typo; the lines around it run."""
    bomb = '{"id": "bomb", "promt": "x", "junk": ' + "[" * depth + "]" * depth + "}"
    items = read(f'{{"id": "a", "prompt": "x"}}\n{bomb}\n{{"id": "b", "prompt": "y"}}\n')
    assert [i.id for i in items] == ["a", "line-2", "b"]
    assert messages(items) == ["line 2: unknown field 'promt' (did you mean 'prompt'?)"]


def test_a_deep_line_in_a_file_is_one_rejection(tmp_path: Path) -> None:
    """Read from a path (the compact id index re-reads lines), a deep line is one rejection."""
    path = tmp_path / "tasks.jsonl"
    lines = [f'{{"id": "t-{i}", "prompt": "p"}}' for i in range(500)]
    path.write_text("\n".join([*lines, BOMB, *lines[:1]]) + "\n")
    items = read_path(path)
    assert len(items) == 502
    assert messages(items) == [
        "line 501: unknown field 'promt' (did you mean 'prompt'?)",
        "line 502: id 't-0' repeats line 1",
    ]


def test_a_huge_or_unprintable_field_name_is_quoted_short() -> None:
    """An unknown field name is escaped and cut to one short line in the message."""
    items = read(msgspec.json.encode({"prompt": "x", "a\nb" + "z" * 5000: 1}).decode() + "\n")
    (message,) = messages(items)
    assert message.startswith("line 1: unknown field 'a\\nbzzz")
    assert "\n" not in message
    assert len(message) < 200


CONTROL = "'id' contains the control character {} at position {}; use printable characters only"


@pytest.mark.parametrize(
    ("task_id", "problem"),
    [
        ("a\nb", CONTROL.format("U+000A", 2)),
        ("tab\there", CONTROL.format("U+0009", 4)),
        ("nul\u0000", CONTROL.format("U+0000", 4)),
        ("del\u007f", CONTROL.format("U+007F", 4)),
        ("c1\u0085", CONTROL.format("U+0085", 3)),
        ("rlo\u202egnp.exe", CONTROL.format("U+202E", 4)),
        ("ls\u2028x", CONTROL.format("U+2028", 3)),
        ("x" * 10_000, "'id' is 10,000 characters long; the most is 256"),
        ("x" * 257, "'id' is 257 characters long; the most is 256"),
        (".", "'id' cannot be '.': a URL path would resolve it away"),
        ("..", "'id' cannot be '..': a URL path would resolve it away"),
        (" ", "'id' is empty"),
    ],
)
def test_a_bad_id_is_rejected_under_its_line_name(task_id: str, problem: str) -> None:
    """A bad id is rejected as line-<n> with a message that does not quote it."""
    line = msgspec.json.encode({"id": task_id, "prompt": "x"}).decode()
    items = read(f"{line}\n{line}\n")
    assert [i.id for i in items] == ["line-1", "line-2"]  # never kept, so never a repeat
    assert messages(items) == [f"line 1: {problem}", f"line 2: {problem}"]


def test_a_bad_id_on_an_invalid_line_is_not_used_either() -> None:
    """An invalid line's bad id does not name its result."""
    line = msgspec.json.encode({"id": "a\nb", "promt": "x"}).decode()
    items = read(f"{line}\n")
    assert [i.id for i in items] == ["line-1"]


@pytest.mark.parametrize(
    "task_id", ["x" * 256, "a/b", "a/../b", "sp ace", "?q=1#f", "100%", "ünï-cödé-😀", "-", "..."]
)
def test_usable_ids_are_kept(task_id: str) -> None:
    """Ids up to 256 printable characters, slashes, spaces and non-ASCII included, are kept."""
    line = msgspec.json.encode({"id": task_id, "prompt": "x"}).decode()
    (item,) = read(f"{line}\n")
    assert isinstance(item, Task)
    assert item.id == task_id


def test_missing_prompt_is_rejected() -> None:
    """A task with neither prompt nor messages gets the checker's message and keeps its id."""
    items = read('{"id": "t-7", "role": "coder"}\n')
    assert messages(items) == ["line 1: missing 'prompt' or 'messages'"]
    assert items[0].id == "t-7"


def test_out_of_range_parameter_is_rejected() -> None:
    """A parameter outside its range is rejected with its path."""
    items = read('{"prompt": "x", "parameters": {"temperature": 5}}\n')
    assert messages(items) == ["line 1: 'parameters.temperature': expected float <= 2.0"]


def test_non_object_line_is_rejected() -> None:
    """A JSON value that is not an object says what it was."""
    items = read('{"prompt": "x"}\n[1, 2]\n')
    assert messages(items) == ["line 2: a task must be a JSON object, got array"]


def test_a_file_that_is_one_json_array_is_a_usage_error(tmp_path: Path) -> None:
    """A whole file written as one JSON array: one error suggesting JSONL, before anything runs."""
    path = tmp_path / "tasks.json"
    path.write_text('[\n  {"prompt": "a"},\n  {"prompt": "b"}\n]\n')
    with pytest.raises(UsageError) as info:
        TasksFile.open(str(path), known_workflows=WORKFLOWS)
    assert str(info.value) == (
        f"{path} is one JSON array, not JSONL: submit reads one JSON task per line"
        f" (convert it with: jq -c '.[]' {path} > tasks.jsonl)"
    )
    # The same from a stream (standard input), at its first line.
    with pytest.raises(UsageError):
        read('\n  [{"prompt": "a"}]\n')


def test_a_byte_order_mark_is_skipped() -> None:
    """A UTF-8 BOM before the first line (Windows editors write one) is not part of the task."""
    stream = io.BytesIO(b'\xef\xbb\xbf{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}')
    with TasksFile(stream, name="<test>", known_workflows=WORKFLOWS, close=False) as tasks:
        items = list(tasks)
    assert [(type(i).__name__, i.id) for i in items] == [("Task", "a"), ("Task", "b")]


def test_a_byte_order_mark_keeps_repeat_detection_exact(tmp_path: Path) -> None:
    """The first line's id is re-read at the right offset when a later line repeats it."""
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with TasksFile.open(str(path), known_workflows=WORKFLOWS) as tasks:
        items = list(tasks)
    assert messages(items) == ["line 2: id 'a' repeats line 1"]


def test_bad_message_role_is_rejected() -> None:
    """A message with a role outside system/user/assistant is rejected with its place."""
    items = read('{"messages": [{"role": "bob", "content": "x"}]}\n')
    assert messages(items) == ["line 1: 'messages[0].role': invalid enum value 'bob'"]


def test_unknown_workflow_is_rejected() -> None:
    """A workflow name the config does not define is rejected with the known names."""
    items = read('{"workflow": "nope", "input": "x"}\n')
    assert messages(items) == ["line 1: unknown workflow 'nope'; known: default, quick"]


def test_repeated_id_is_rejected_with_the_first_line() -> None:
    """A repeated id is rejected, naming the line that used it first."""
    items = read(
        '{"id": "t-001", "prompt": "a"}\n{"id": "t-002", "prompt": "b"}\n'
        '{"id": "t-001", "prompt": "c"}\n'
    )
    assert messages(items) == ["line 3: id 't-001' repeats line 1"]
    assert [i.id for i in items] == ["t-001", "t-002", "line-3"]


def test_default_id_counts_as_an_id() -> None:
    """An explicit id equal to another line's default id is a repeat."""
    items = read('{"prompt": "a"}\n{"id": "line-1", "prompt": "b"}\n')
    assert messages(items) == ["line 2: id 'line-1' repeats line 1"]


def test_repeats_in_a_file_are_found(tmp_path: Path) -> None:
    """In a regular file (compact id index) repeats are found exactly, with the first line."""
    path = tmp_path / "tasks.jsonl"
    lines = [msgspec.json.encode({"id": f"t-{i}", "prompt": "p"}).decode() for i in range(5000)]
    lines += ['{"prompt": "p"}', '{"id": "t-4321", "prompt": "again"}', '{"id": "line-5001"}']
    path.write_text("\n".join(lines) + "\n")
    items = read_path(path)
    assert len(items) == 5003
    assert messages(items) == [
        "line 5002: id 't-4321' repeats line 4322",
        "line 5003: id 'line-5001' repeats line 5001",
    ]
    assert len({i.id for i in items}) == 5003


def test_hash_collisions_are_not_repeats() -> None:
    """Two ids with equal hashes are told apart by re-reading the earlier line."""
    ids = _FileIds(lambda line, offset: {1: "a", 2: "b"}[line], size=4, hash_id=lambda _: 7)
    assert ids.add("a", 1, 0) is None
    assert ids.add("b", 2, 10) is None
    assert ids.add("b", 3, 20) == 2
    assert ids.add("a", 4, 30) == 1


def test_id_table_grows_at_three_quarters_and_keeps_every_id() -> None:
    """The id table doubles once three quarters full, and every id is still found after."""
    lines = {n: f"id-{n}" for n in range(1, 101)}
    ids = _FileIds(lambda line, offset: lines[line], size=8)
    for n in range(1, 7):
        assert ids.add(lines[n], n, 0) is None
    assert len(ids._lines) == 8  # 6 of 8: three quarters, not more
    assert ids.add(lines[7], 7, 0) is None
    assert len(ids._lines) == 16
    for n in range(8, 101):
        assert ids.add(lines[n], n, 0) is None
    assert len(ids._lines) == 256  # 100 ids: 128 slots would be over three quarters
    assert [ids.add(lines[n], 1000 + n, 0) for n in range(1, 101)] == list(range(1, 101))


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    """A tasks file that does not exist is a usage error naming it."""
    with pytest.raises(UsageError, match=r"tasks file not found: .*nope\.jsonl"):
        TasksFile.open(str(tmp_path / "nope.jsonl"), known_workflows=WORKFLOWS)


def test_stdin_is_read_with_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """'-' reads standard input, repeats included."""
    fake = io.TextIOWrapper(io.BytesIO(b'{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n'))
    monkeypatch.setattr(sys, "stdin", fake)
    with TasksFile.open("-", known_workflows=WORKFLOWS) as tasks:
        items = list(tasks)
    assert messages(items) == ["line 2: id 'a' repeats line 1"]


@pytest.mark.anyio
async def test_async_reading_matches_sync(tmp_path: Path) -> None:
    """Reading with next() gives the same items as iterating, across block boundaries."""
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(f'{{"id": "t-{i}", "prompt": "{"x" * 100}"}}\n' for i in range(3000)))
    got = []
    with TasksFile.open(str(path), known_workflows=WORKFLOWS) as tasks:
        while (item := await tasks.next()) is not None:
            got.append(item.id)
    assert got == [f"t-{i}" for i in range(3000)]
