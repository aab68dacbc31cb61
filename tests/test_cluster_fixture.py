"""The PostgreSQL fixture's rule: no server is a skip with the reason, but a failure under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """\
import pytest
from tests.pg_support import pg_url

__all__ = ["pg_url"]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_needs_a_server(pg_url: str) -> None:
    assert pg_url
"""


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    environ.update(env, RUNNER_TEST_DATABASE_URL="postgresql://nobody@127.0.0.1:1/postgres")
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run(  # noqa: S603 - our own interpreter on our own probe
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(probe)],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.slow
def test_no_server_skips_with_the_reason(tmp_path: Path) -> None:
    """Without a server (and not in CI) the test is skipped, saying where it looked."""
    done = _run(tmp_path)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout
    assert "no PostgreSQL server answers at postgresql://nobody@127.0.0.1:1/postgres" in done.stdout


@pytest.mark.slow
def test_no_server_fails_under_ci(tmp_path: Path) -> None:
    """Under CI=true a missing server fails the run instead of passing it untested."""
    done = _run(tmp_path, CI="true")
    assert done.returncode == 1, done.stdout
    assert "CI=true needs PostgreSQL" in done.stdout
