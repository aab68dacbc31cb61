"""A private PostgreSQL 15 server for one test, which the test may restart.

The shared server at 127.0.0.1:5432 serves every other test (and other
people's work), so a test that restarts PostgreSQL gets a server of its own:
``initdb`` into a temporary directory, ``pg_ctl start`` on a free port of
127.0.0.1 only (its socket in that directory too), ``pg_ctl restart`` when
the test says, and ``pg_ctl stop`` and the directory removed at the end,
also when the test fails or the server did not start.

PostgreSQL refuses to run as root, so when the tests run as root the server
runs as the ``postgres`` OS user (``runuser -u postgres --``), which owns
the directory.  Without the binaries (``PG_BIN``, default
/usr/lib/postgresql/15/bin) the test is skipped with the reason, except
under ``CI=true``, where that fails the run, as for the shared server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true needs a private PostgreSQL: {reason}", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """One throwaway PostgreSQL cluster: its directory, port and pg_ctl."""

    def __init__(self, root: Path, as_user: list[str]) -> None:
        self.root = root
        self.data = root / "data"
        self._as_user = as_user
        self._new_port()

    def _new_port(self) -> None:
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def _run(self, *args: str) -> None:
        done = await anyio.run_process([*self._as_user, *args], check=False)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} exited {done.returncode}: {done.stderr.decode()}\n{tail}"
            )

    def _pg_ctl(self, *args: str) -> list[str]:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        return [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            *args,
        ]

    async def init(self) -> None:
        await self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )

    async def start(self) -> None:
        """``pg_ctl start``; on another free port when the one picked was taken meanwhile.

        The port is free when picked but bound only by the postmaster, so
        another process (another test, another engineer's) may take it first.
        """
        for attempt in range(3):
            try:
                await self._run(*self._pg_ctl("start"))
                return
            except RuntimeError as exc:
                if attempt == 2 or "Address already in use" not in str(exc):
                    raise
                self._new_port()

    async def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session ended, the server down, then up again."""
        await self._run(*self._pg_ctl("-m", "fast", "restart"))

    async def stop(self) -> None:
        """``pg_ctl stop -m immediate``; nothing to do when no server runs (no PID file)."""
        if not (self.data / "postmaster.pid").exists():
            return
        await self._run(*self._pg_ctl("-m", "immediate", "stop"))


@asynccontextmanager
async def private_server() -> AsyncIterator[PrivateServer]:
    """A fresh PostgreSQL 15 on 127.0.0.1:<free port>, stopped and removed afterwards."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            _missing(f"no {PG_BIN / tool} to run a private PostgreSQL (set PG_BIN)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="runner-pg-"))
    try:
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                user = None
            if runuser is None or user is None:
                _missing("running as root needs runuser and a 'postgres' OS user")
            assert user is not None
            assert runuser is not None
            os.chown(root, user.pw_uid, user.pw_gid)
            as_user = [runuser, "-u", "postgres", "--"]
        server = PrivateServer(root, as_user)
        await server.init()
        try:
            # Inside the try: a start that failed or timed out may still have
            # left a postmaster running, which the stop below ends.
            await server.start()
            yield server
        finally:
            with anyio.CancelScope(shield=True):
                await server.stop()
    finally:
        # The server's files belong to 'postgres'; root may remove them.
        shutil.rmtree(root, ignore_errors=True)
