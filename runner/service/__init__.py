"""The long-running worker: its HTTP API, its durable journal, its /metrics page.

``_worker`` drives a Runner from the journal, ``_journal`` owns the journal's
database, ``_server`` is the aiohttp application (its handlers), ``_intake``
turns a request body into tasks within bounds, ``_http`` is the listening
side (timeouts, the connection cap, JSON for aiohttp's own errors, rate-limited
reports), ``_prometheus`` renders the metrics page.
"""
