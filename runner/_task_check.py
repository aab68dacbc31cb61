"""The one check of whether a :class:`~runner._task.Task` can run.

``submit`` uses the message for its line errors (``line 17: missing 'prompt'
or 'messages'``); the Python API turns it into a ``rejected`` Result with code
``invalid_task``.  Nothing else decides what a valid task is.
"""

from __future__ import annotations

from collections.abc import Collection

from runner._task import Task


def task_problem(task: Task, known_workflows: Collection[str]) -> str | None:
    """What is wrong with ``task``, in one sentence; ``None`` when it can run."""
    if task.id is not None and not task.id.strip():
        return "'id' is empty"
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
