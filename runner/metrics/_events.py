"""The metric event: one per provider attempt, success or failure.

This Struct is also the line format of the JSONL store and of
``metrics export --format jsonl``.
"""

from __future__ import annotations

from datetime import datetime

from msgspec import Struct


class MetricEvent(Struct, frozen=True, kw_only=True):
    """One provider attempt, as recorded by the metrics writer."""

    event_id: str
    task_id: str
    provider: str
    role: str
    model: str
    attempt: int
    ts: datetime
    latency_ms: float
    success: bool
    error_code: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
