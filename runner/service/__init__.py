"""The long-running worker: its HTTP API, its durable journal, its /metrics page.

``_worker`` drives a Runner from the journal, ``_journal`` owns the journal's
database, ``_server`` is the aiohttp application, ``_prometheus`` renders the
metrics page.
"""
