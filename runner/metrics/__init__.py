"""Metric events: one per provider attempt, their stores, writer and queries.

``_events`` is the event, ``_store`` the stores (SQLite, JSONL, none) and their
schema, ``_writer`` the single owner that writes events in batches, ``_query``
the summaries ``metrics summary`` prints.
"""
