"""tests/pg_private.py cleans up after a failing test: the server stopped, its directory gone.

A private server left running (or a clean-up error hiding the test's own
failure) would outlive the run on a shared machine, so the clean-up path is
tested on its own: a body that fails, and one that stopped the server itself.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.pg_private import PrivateServer, private_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


class _Boom(Exception):
    """The test body's own failure."""


async def _refused(server: PrivateServer) -> bool:
    try:
        conn = await asyncpg.connect(server.url, timeout=5)
    except OSError:
        return True
    await conn.close()
    return False


async def _fail_inside(seen: list[PrivateServer], *, stop_first: bool) -> None:
    """A test body that fails with the server up (or after stopping it itself)."""
    async with private_server() as server:
        seen.append(server)
        conn = await asyncpg.connect(server.url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        if stop_first:
            await server.stop()
        raise _Boom


async def test_a_failing_test_leaves_no_server_and_no_directory() -> None:
    """The body's exception propagates; the server is stopped and its directory removed."""
    seen: list[PrivateServer] = []
    with pytest.raises(_Boom):
        await _fail_inside(seen, stop_first=False)
    [server] = seen
    assert await _refused(server)
    assert not server.root.exists()


async def test_a_server_the_test_stopped_does_not_hide_the_tests_failure() -> None:
    """Stopped by the body, the server's clean-up stop is a no-op, not a second error."""
    seen: list[PrivateServer] = []
    with pytest.raises(_Boom):
        await _fail_inside(seen, stop_first=True)
    [server] = seen
    assert not server.root.exists()
