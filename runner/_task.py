"""What users hand runner (:class:`Task`) and what they get back (:class:`Result`).

These Structs are the task-file and result-file line formats of docs/cli.md,
shared by ``submit``, the worker's HTTP API and the Python API.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct, field

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


class Task(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
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


class ErrorInfo(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Why a task did not complete."""

    code: str
    message: str
    provider: str | None = None
    retryable: bool | None = None


class HistoryEntry(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One status move, timestamped, with the provider in use."""

    status: Status
    at: str
    provider: str | None = None
    attempt: int | None = None
    error_code: str | None = None


class StageResult(Struct, frozen=True, kw_only=True, omit_defaults=True):
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


class Result(Struct, kw_only=True, omit_defaults=True):
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
