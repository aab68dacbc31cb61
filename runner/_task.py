"""What users hand runner (:class:`Task`) and what they get back (:class:`Result`).

These Structs are the task-file and result-file line formats of docs/cli.md,
shared by ``submit``, the worker's HTTP API and the Python API.

All are ``gc=False``: they hold only strings, numbers, and lists or tuples of
each other, so they can never be part of a reference cycle, and a big run
makes millions of them that the garbage collector need not keep walking.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import msgspec
from msgspec import Struct, field

from runner._errors import InvalidValueError, TaskError
from runner._words import closest
from workers._parameters import Parameters
from workers._types import FinishReason, Message, Usage

__all__ = [
    "ErrorInfo",
    "FinalStatus",
    "FinishReason",
    "HistoryEntry",
    "Message",
    "Result",
    "StageResult",
    "Status",
    "Task",
    "Usage",
]

Status = Literal["pending", "running", "retrying", "completed", "failed", "cancelled"]
FinalStatus = Literal["completed", "failed", "cancelled", "rejected"]


class Task(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One unit of work: a prompt for a role, or a workflow over an input.

    Exactly one of ``prompt``/``messages`` (a plain task) or ``workflow`` (with
    ``input``) is given.  ``role`` defaults to the config's default provider.
    """

    id: str | None = None
    role: str | None = None
    prompt: str | None = None
    system: str | None = None
    messages: tuple[Message, ...] | None = None
    parameters: Parameters | None = None
    workflow: str | None = None
    input: str | None = None
    #: The caller's own JSON object, copied unchanged to the result line
    #: (at most ``runner._task_check.MAX_METADATA_BYTES`` once encoded).
    metadata: dict[str, Any] | None = None
    #: Short labels recorded on every metric event of the task, for
    #: ``metrics summary --tag`` and ``--group-by tag`` (checked by
    #: ``runner._task_check``: at most ``MAX_TAGS``, each ``MAX_TAG_LENGTH``).
    tags: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Decoded from JSON every field already has its type.  Built in Python,
        # plain data may stand for the nested Structs (messages as dicts,
        # parameters as a dict): it is converted and checked exactly as a
        # tasks file line is, and a wrong value raises TaskError naming it.
        if not _well_typed(self):
            _convert(self)


class ErrorInfo(Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Why a task did not complete."""

    code: str
    message: str
    provider: str | None = None
    retryable: bool | None = None


class HistoryEntry(Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One status move, timestamped, with the provider in use."""

    status: Status
    at: str
    provider: str | None = None
    attempt: int | None = None
    error_code: str | None = None


class StageResult(Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One stage of a workflow result."""

    stage: str
    role: str
    status: FinalStatus
    provider: str | None = None
    attempts: int = 0
    output: str | None = None
    error: ErrorInfo | None = None
    #: The stage's own status moves: which providers it tried, and when.
    history: list[HistoryEntry] = field(default_factory=list)


class Result(Struct, kw_only=True, omit_defaults=True, gc=False):
    """One result line: every task ends in exactly one of these."""

    id: str
    status: FinalStatus
    role: str | None = None
    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    fallback_used: bool = False
    output: str | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    queued_ms: float | None = None
    error: ErrorInfo | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    line: int | None = None
    workflow: str | None = None
    stages: list[StageResult] | None = None
    #: The task's ``metadata``, as given.
    metadata: dict[str, Any] | None = None


#: The types a text field of a Task may have.
_TEXT: Final = frozenset({str, type(None)})


def _well_typed(task: Task) -> bool:
    # The text fields, read directly and unrolled (every Task built comes
    # here): no getattr() call, no loop over a tuple made for the check.
    text = _TEXT
    if not (
        type(task.id) in text
        and type(task.role) in text
        and type(task.prompt) in text
        and type(task.system) in text
        and type(task.workflow) in text
        and type(task.input) in text
    ):
        return False
    messages = task.messages
    if messages is not None and (
        type(messages) is not tuple or not all(type(m) is Message for m in messages)
    ):
        return False
    if task.metadata is not None and type(task.metadata) is not dict:
        return False
    tags = task.tags
    if tags is not None and (type(tags) is not tuple or not all(type(t) is str for t in tags)):
        return False
    return task.parameters is None or type(task.parameters) is Parameters


def _convert(task: Task) -> None:
    """Replace plain data by the Structs it stands for, or raise TaskError naming the field."""
    raw: dict[str, object] = {}
    for name in task.__struct_fields__:
        value = getattr(task, name)
        if value is None:
            continue
        try:
            raw[name] = msgspec.to_builtins(value)
        except TypeError:
            raise TaskError(
                f"'{name}': a {type(value).__name__} cannot be used here", field=name
            ) from None
    try:
        checked = msgspec.convert(raw, Task)
    except msgspec.ValidationError as exc:
        message = explain_validation(str(exc))
        raise TaskError(message, field=_path_of(str(exc))) from None
    except InvalidValueError as exc:  # a nested Struct's own check
        raise TaskError(str(exc), field=exc.field) from None
    for name in task.__struct_fields__:
        msgspec.structs.force_setattr(task, name, getattr(checked, name))


# msgspec's validation messages end with "- at `$.path`" when not at the root.
_AT: Final = re.compile(r"^(?P<what>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN: Final = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")
_MISSING: Final = re.compile(r"^Object missing required field `(?P<name>[^`]*)`$")
_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "task": tuple(f.name for f in msgspec.structs.fields(Task)),
    "parameters": tuple(f.name for f in msgspec.structs.fields(Parameters)),
    "messages": tuple(f.name for f in msgspec.structs.fields(Message)),
}


def _path_of(message: str) -> str | None:
    at = _AT.match(message)
    return (at["path"] or None) if at else None


def _known_fields(path: str) -> tuple[str, ...]:
    if path.startswith("parameters"):
        return _FIELDS["parameters"]
    if path.startswith("messages"):
        return _FIELDS["messages"]
    return _FIELDS["task"]


#: The most characters of a user's field name quoted in a message.
SHOWN_NAME: Final = 60


def _shown(name: str) -> str:
    """A user's field name fit for one line of a message: escaped, and cut if long."""
    if not name.isprintable():
        name = name.encode("unicode_escape").decode("ascii")
    return name if len(name) <= SHOWN_NAME else name[: SHOWN_NAME - 1] + "…"


def explain_validation(message: str) -> str:
    """msgspec's validation message for a task, said the way a user needs it.

    The tasks file, the worker's HTTP API and :class:`Task` built in Python
    all say it this way: ``'parameters.temperature': expected float <= 2.0``.
    """
    at = _AT.match(message)
    what, path = (at["what"], at["path"] or "") if at else (message, "")
    where = f" in '{path}'" if path else ""
    if unknown := _UNKNOWN.match(what):
        name = unknown["name"]
        known = _known_fields(path)
        close = closest(name, known)
        hint = f"did you mean '{close}'?" if close else f"known: {', '.join(known)}"
        return f"unknown field '{_shown(name)}'{where} ({hint})"
    if missing := _MISSING.match(what):
        return f"missing field '{missing['name']}'{where}"
    if not path and what.startswith("Expected `object`"):
        return "a task must be a JSON object, " + what.split(", ", 1)[-1].replace("`", "")
    text = what.replace("`", "").replace(" | null", "")
    text = text[:1].lower() + text[1:]
    return f"'{path}': {text}" if path else text
