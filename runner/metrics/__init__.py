"""Metric events: one per provider attempt, their stores, writer and queries.

``_events`` is the event and its integer row, ``_store`` the storage seam
(the :class:`EventStore` interface and the choice of store), ``_sqlite`` and
``_jsonl`` the two stores (``_sqlite`` holds the one write transaction),
``_runs`` the per-batch latency runs and their compaction, ``_writer`` the
single task that owns the store, ``_query`` the summaries ``metrics
summary`` prints.
"""
