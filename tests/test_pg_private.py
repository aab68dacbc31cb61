"""The cluster tests' helpers clean up after a failure: no server or worker outlives a test.

A private PostgreSQL (tests/pg_private.py) or a worker process
(tests/cluster_support.py) left running, or a clean-up error hiding the
test's own failure, would outlive the run on a shared machine, so the
clean-up paths are tested on their own.
"""

from __future__ import annotations

import socket
from pathlib import Path

import asyncpg
import pytest

from tests import pg_private
from tests.cluster_support import CountingProvider, WorkerProcess, cluster_config
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


async def test_a_worker_that_does_not_start_in_time_is_killed(tmp_path: Path) -> None:
    """A worker whose database never answers fails start() and leaves no process behind."""
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://nobody@127.0.0.1:{silent.getsockname()[1]}/none"
        async with CountingProvider() as provider:
            worker = WorkerProcess(cluster_config(tmp_path, "w", provider), url, tmp_path / "w.log")
            with pytest.raises(AssertionError, match="worker did not start"):
                await worker.start(listen_within=1)
    assert worker.proc is not None
    assert worker.proc.returncode is not None
    assert await worker.stop() == worker.proc.returncode


async def test_a_port_taken_before_the_server_binds_it_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The free port picked is taken by someone else before start: another port is used."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = [taken.getsockname()[1]]
        free = pg_private._free_port

        def picked() -> int:
            return ports.pop() if ports else free()

        monkeypatch.setattr(pg_private, "_free_port", picked)
        async with private_server() as server:
            assert server.port != taken.getsockname()[1]
            conn = await asyncpg.connect(server.url)
            assert await conn.fetchval("SELECT 1") == 1
            await conn.close()
