"""The one formatter of time strings: ISO 8601 UTC with milliseconds and ``Z``.

Every time a user reads (a history entry's ``at``, a result the worker writes
itself) is made by :func:`iso_ms`, so they all look alike:
``2026-11-26T21:00:00.123Z``.  Inside runner times stay floats (seconds since
the epoch) and are formatted only when a Result or a line is built.
"""

from __future__ import annotations

import functools
import time


def iso_ms(wall: float) -> str:
    """``wall`` (seconds since the epoch) as ISO 8601 UTC with milliseconds and ``Z``."""
    seconds = int(wall)
    return _iso_milli(seconds, int((wall - seconds) * 1000))


# Moves come in bursts (a wave of tasks submitted, a wave of answers), many
# within the same millisecond and nearly all within the same second as the
# one before: one cached millisecond and one cached second turn most of the
# formatting into lookups.  Each cache holds one immutable string, so both
# behave as pure functions.
@functools.lru_cache(maxsize=1)
def _iso_milli(seconds: int, millis: int) -> str:
    return f"{_iso_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=1)
def _iso_second(seconds: int) -> str:
    # time.strftime on a struct_time is several times cheaper than datetime.isoformat.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
