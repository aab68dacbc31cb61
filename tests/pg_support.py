"""A real PostgreSQL for the cluster tests: one fresh database per test, dropped after.

``RUNNER_TEST_DATABASE_URL`` names the server (default: the local one,
``postgresql://postgres@127.0.0.1:5432/postgres``); the URL's database is
only used to create and drop the test databases.  When no server answers,
the tests that need one are skipped with the reason, except under
``CI=true``, where a missing server fails the run: CI must never pass by
testing nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("RUNNER_TEST_DATABASE_URL") or DEFAULT_SERVER


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _admin() -> asyncpg.Connection:
    url = server_url()
    try:
        return await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        reason = f"no PostgreSQL server answers at {url} ({exc}); set RUNNER_TEST_DATABASE_URL"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs PostgreSQL: {reason}", pytrace=False)
        pytest.skip(reason)


async def create_database() -> str:
    """A new empty database on the test server; returns its URL."""
    name = f"runner_test_{uuid.uuid4().hex[:12]}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return with_database(server_url(), name)


async def drop_database(url: str) -> None:
    """Drop a test database, ending any session still connected to it."""
    name = urlsplit(url).path.lstrip("/")
    admin = await _admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def admin_execute(sql: str) -> None:
    """One statement on the test server's admin database (roles, database settings)."""
    admin = await _admin()
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


async def terminate_backends(url: str) -> int:
    """End every session on the test database except ours: a database restart, for the clients.

    Restarting the machine's server would disrupt everyone using it, so the
    tests simulate a restart the way clients see one: every connection is
    cut by the server (``pg_terminate_backend``) and new ones are accepted.
    """
    name = urlsplit(url).path.lstrip("/")
    admin = await _admin()
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
        )
    finally:
        await admin.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """The URL of a fresh database, dropped when the test ends (asyncio only)."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """Retries without waiting (stamina's testing mode), for tests of retried operations."""
    import stamina

    stamina.set_testing(True, attempts=50)
    try:
        yield
    finally:
        stamina.set_testing(False)


@pytest.fixture
def pg_url_sync() -> Iterator[str]:
    """:func:`pg_url` for tests that are not async (the CLI runs its own event loop)."""
    import asyncio

    url = asyncio.run(create_database())
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))
