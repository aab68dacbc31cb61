"""Cluster mode: several workers on one PostgreSQL database.

``_pool`` owns the connections (a pool, retries on lost connections, the
LISTEN connection), ``_schema`` the versioned tables, ``_queue`` the task
queue and journal (enqueue, claim with ``FOR UPDATE SKIP LOCKED``, leases,
the one terminal write, cancellation), ``_limits`` the provider limits shared
by every worker (token buckets, concurrency slots, cooldowns) and
``_metrics`` the metric events and their summary.  docs/cluster.md describes
the guarantees.  asyncpg is asyncio-only, and so is cluster mode.
"""
