"""The one check of whether a :class:`~runner._task.Task` can run.

``submit`` uses the message for its line errors (``line 17: missing 'prompt'
or 'messages'``), the worker for its 400 line errors, and the Python API turns
it into a ``rejected`` Result with code ``invalid_task``.  Nothing else decides
what a valid task is, and in particular what a valid id is: :func:`id_problem`
is the one rule for ids at every entry point.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from typing import Final

import msgspec

from runner._task import Task

#: The longest id accepted, in characters.  An id travels in a URL path
#: (``GET /v1/tasks/{id}``): 256 characters of up to 4 UTF-8 bytes each,
#: percent-encoded, stay well inside aiohttp's 8,190-byte request line.
MAX_ID_LENGTH: Final = 256

#: The largest ``metadata`` accepted, in bytes of compact JSON.  It is copied
#: to the result line and kept in the worker's journal, so it stays small.
MAX_METADATA_BYTES: Final = 4096

#: The most ``tags`` a task may carry, and the longest tag, in characters.
#: Every metric event of the task stores them, so they stay few and short.
MAX_TAGS: Final = 16
MAX_TAG_LENGTH: Final = 64

#: Unicode categories an id may not contain: control characters (newline, tab,
#: NUL, DEL, C1), invisible format marks (bidi overrides, zero-width joiners)
#: and line/paragraph separators.  They break URLs and logs, or make an id read
#: as another.
_BAD_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})


def id_problem(task_id: str) -> str | None:
    """What is wrong with ``task_id``, in one sentence; ``None`` when it is usable.

    An id is usable when it is not blank, has at most :data:`MAX_ID_LENGTH`
    characters, contains no control or format character and is not ``.`` or
    ``..`` (which a URL path would resolve away).  The message never quotes
    the id itself: it may be huge or hold a newline.
    """
    if len(task_id) > MAX_ID_LENGTH:
        return f"'id' is {len(task_id):,} characters long; the most is {MAX_ID_LENGTH}"
    # Printable ASCII (nearly every id) needs no _control_character() call.
    bad = None if task_id.isascii() and task_id.isprintable() else _control_character(task_id)
    if bad is not None:
        position, char = bad
        return (
            f"'id' contains the control character U+{ord(char):04X} at position"
            f" {position}; use printable characters only"
        )
    if not task_id.strip():
        return "'id' is empty"
    if task_id in (".", ".."):
        return f"'id' cannot be {task_id!r}: a URL path would resolve it away"
    return None


def _control_character(text: str) -> tuple[int, str] | None:
    """The first control or format character of ``text`` and its 1-based position."""
    # The common case costs two C-level scans: printable ASCII needs no table.
    if text.isascii() and text.isprintable():
        return None
    for position, char in enumerate(text, start=1):
        if unicodedata.category(char) in _BAD_CATEGORIES:
            return position, char
    return None


def tag_problem(tag: str, where: str) -> str | None:
    """What is wrong with one tag, in one sentence naming it as ``where``; ``None`` when usable.

    The one rule for a tag, wherever one comes from (a task's ``tags``,
    ``metrics summary --tag``).  The message never quotes the tag: it may
    hold a newline.
    """
    if len(tag) > MAX_TAG_LENGTH:
        return f"{where} is {len(tag):,} characters long; the most is {MAX_TAG_LENGTH}"
    bad = _control_character(tag)
    if bad is not None:
        position, char = bad
        return (
            f"{where} contains the control character U+{ord(char):04X} at position"
            f" {position}; use printable characters only"
        )
    if not tag.strip():
        return f"{where} is empty"
    if "|" in tag:
        # CSV export joins an event's tags with "|" in one column, and the
        # stores keep them joined the same way.
        return f"{where} contains '|', which separates tags in CSV export; use another character"
    return None


def tags_problem(tags: tuple[str, ...]) -> str | None:
    """What is wrong with a task's ``tags``, in one sentence; ``None`` when usable.

    The rule is the id's in spirit: no blank tag, no control or format
    character, and short (:func:`tag_problem`).
    """
    if len(tags) > MAX_TAGS:
        return f"'tags' has {len(tags)} tags; the most is {MAX_TAGS}"
    for index, tag in enumerate(tags):
        problem = tag_problem(tag, f"'tags[{index}]'")
        if problem is not None:
            return problem
    return None


def task_problem(task: Task, known_workflows: Collection[str]) -> str | None:
    """What is wrong with ``task``, in one sentence; ``None`` when it can run."""
    if task.id is not None:
        problem = id_problem(task.id)
        if problem is not None:
            return problem
    return shape_problem(task, known_workflows)


def shape_problem(task: Task, known_workflows: Collection[str]) -> str | None:
    """What is wrong with ``task`` apart from its id (checked by :func:`id_problem`)."""
    if task.tags is not None:
        problem = tags_problem(task.tags)
        if problem is not None:
            return problem
    if task.metadata is not None:
        size = len(msgspec.json.encode(task.metadata))
        if size > MAX_METADATA_BYTES:
            return (
                f"'metadata' is {size:,} bytes of JSON; the most is {MAX_METADATA_BYTES:,}"
                " (keep large data elsewhere and put a reference here)"
            )
    if task.workflow is not None:
        if task.prompt is not None or task.messages is not None:
            return "a workflow task takes 'input', not 'prompt' or 'messages'"
        if task.input is None:
            return f"workflow {task.workflow!r} needs 'input'"
        if task.workflow not in known_workflows:
            known = ", ".join(sorted(known_workflows)) or "none"
            return f"unknown workflow {task.workflow!r}; known: {known}"
        return None
    if task.input is not None:
        return "'input' belongs to a workflow task; give 'workflow' or use 'prompt'"
    if task.prompt is None and task.messages is None:
        return "missing 'prompt' or 'messages'"
    if task.prompt is not None and task.messages is not None:
        return "give 'prompt' or 'messages', not both"
    if task.messages is not None and not any(m.role != "system" for m in task.messages):
        return "'messages' has no user or assistant message"
    return None
