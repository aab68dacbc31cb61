"""Metric events: one per provider attempt, their stores, writer and queries.

``_events`` is the event and its integer row, ``_store`` the storage seam
(the :class:`EventStore` interface and the choice of store), ``_sqlite`` and
``_jsonl`` the two stores (``_sqlite`` holds the one write transaction),
``_runs`` the per-batch latency runs and their compaction, ``_writer`` the
single task that owns the store, ``_query`` the summaries ``metrics
summary`` prints.

The names below are the public surface; they load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from runner._lazy import lazy_exports

if TYPE_CHECKING:
    from runner.metrics._events import (
        MetricEvent,
    )
    from runner.metrics._store import (
        EventStore,
    )
    from runner.metrics._writer import (
        MemorySink,
        MetricsSink,
        NullSink,
        open_metrics_writer,
    )

#: Public name -> the module that defines it (loaded on first use).
_EXPORTS: Final = {
    "EventStore": "runner.metrics._store",
    "MemorySink": "runner.metrics._writer",
    "MetricEvent": "runner.metrics._events",
    "MetricsSink": "runner.metrics._writer",
    "NullSink": "runner.metrics._writer",
    "open_metrics_writer": "runner.metrics._writer",
}

__all__ = [
    "EventStore",
    "MemorySink",
    "MetricEvent",
    "MetricsSink",
    "NullSink",
    "open_metrics_writer",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
