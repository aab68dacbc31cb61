"""Shared fixtures.

Tests run on asyncio by default (aiohttp needs it).  Modules that
test the pure core override ``anyio_backend`` to run on trio as well.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
