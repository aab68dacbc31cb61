"""The metric event: one per provider attempt, success or failure.

:class:`MetricEvent` is what producers build and stores take.  Its time is
``ts_us``, integer microseconds since the Unix epoch (UTC): the dispatcher
has the wall clock as a number and the stores keep integers, so no datetime
is built on the hot path.  Times become ISO 8601 strings only where a person
reads them: the JSONL line format (:mod:`runner.metrics._jsonl`) and export.

:data:`Row` is the event in integers only (latency in µs, cost in nano-USD),
the form every exact figure is computed from; :func:`to_row` is the one place
an event is rounded to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from msgspec import Struct

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US: Final = timedelta(microseconds=1)


# gc=False: every field is a str, number, None or a tuple of str, so no
# reference cycle can run through an event, and the collector need not track one per attempt.
class MetricEvent(Struct, frozen=True, kw_only=True, gc=False):
    """One provider attempt, as recorded by the metrics writer."""

    event_id: str
    task_id: str
    provider: str
    role: str
    model: str
    attempt: int
    #: When the attempt started: microseconds since the epoch, UTC.
    ts_us: int
    latency_ms: float
    success: bool
    error_code: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    #: The task's ``tags`` (empty when it has none), in the task's order.
    tags: tuple[str, ...] = ()

    @property
    def ts(self) -> datetime:
        """``ts_us`` as an aware UTC datetime (for people and filters, not the hot path)."""
        return us_to_ts(self.ts_us)


#: An event as integers, in ``events`` column order (:data:`EVENT_COLUMNS`); the
#: last field is the tags as stored (:func:`join_tags`).
Row = tuple[str, str, str, str, str, int, int, int, int, str | None, int, int, int, str]

EVENT_COLUMNS: Final = (
    "event_id, task_id, provider, role, model, attempt, ts_us, latency_us, success,"
    " error_code, input_tokens, output_tokens, cost_nusd, tags"
)


def join_tags(tags: tuple[str, ...]) -> str:
    """The stored form of an event's tags: ``|a|b|``, or ``''`` for none.

    A tag never contains ``|`` (:func:`runner._task_check.tag_problem`), so
    the event carries tag ``t`` exactly when the text contains ``|t|``: one
    substring search (``instr``, ``strpos``) filters by tag in SQL.  No tags
    is ``''`` rather than NULL because sqlite3 runs its adapter look-up for
    every ``None`` it binds: a NULL here cost the writer about 6% per event.
    """
    return "|" + "|".join(tags) + "|" if tags else ""


def split_tags(stored: str | None) -> tuple[str, ...]:
    """The tags :func:`join_tags` stored, in their order (``()`` for ``''`` or NULL)."""
    return tuple(stored[1:-1].split("|")) if stored else ()


def ts_to_us(ts: datetime) -> int:
    """Microseconds since the epoch; a naive time is taken as UTC."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - EPOCH) // ONE_US


def us_to_ts(us: int) -> datetime:
    """The UTC time ``us`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=us)


def to_row(e: MetricEvent, no_code: str | None = None) -> Row:
    """The integer form of an event (latency to the µs, cost to the nano-USD).

    ``no_code`` stands for a missing error code (the SQLite writer binds a
    value its INSERT stores as NULL).
    """
    code = e.error_code
    return (
        e.event_id,
        e.task_id,
        e.provider,
        e.role,
        e.model,
        e.attempt,
        e.ts_us,
        round(e.latency_ms * 1000),
        1 if e.success else 0,
        no_code if code is None else code,
        e.input_tokens,
        e.output_tokens,
        round(e.cost_usd * 1e9),
        "|" + "|".join(e.tags) + "|" if e.tags else "",  # join_tags, inlined: once per event
    )


def from_row(r: Sequence[object]) -> MetricEvent:
    """The event a row (in :data:`EVENT_COLUMNS` order) stands for."""
    (eid, tid, provider, role, model, attempt, ts_us, lat, ok, code, tin, tout, cost, tags) = r
    return MetricEvent(
        event_id=str(eid),
        task_id=str(tid),
        provider=str(provider),
        role=str(role),
        model=str(model),
        attempt=int(attempt),  # type: ignore[call-overload]
        ts_us=int(ts_us),  # type: ignore[call-overload]
        latency_ms=int(lat) / 1000,  # type: ignore[call-overload]
        success=bool(ok),
        error_code=None if code is None else str(code),
        input_tokens=int(tin),  # type: ignore[call-overload]
        output_tokens=int(tout),  # type: ignore[call-overload]
        cost_usd=int(cost) / 1e9,  # type: ignore[call-overload]
        tags=split_tags(None if tags is None else str(tags)),
    )
