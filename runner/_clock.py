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
    key = int(wall * 1000)
    text = _MILLIS.get(key)
    if text is None:
        text = _format_ms(key)
    return text


def _format_ms(key: int) -> str:
    if len(_MILLIS) >= _MILLIS_KEPT:
        _MILLIS.clear()
    seconds, millis = divmod(key, 1000)
    text = _MILLIS[key] = f"{_iso_second(seconds)}.{millis:03d}Z"
    return text


# Moves come in bursts (a wave of tasks submitted, a wave of answers), many
# within the same millisecond.  A Result formats its moves together (queued,
# running, completed: three different milliseconds, so a cache of one missed
# on nearly every call), hence a memo of the recent milliseconds, dropped
# whole once it holds a few thousand, and one cached second.  Both hold only
# immutable strings, so iso_ms behaves as a pure function.
_MILLIS: dict[int, str] = {}
_MILLIS_KEPT = 4096

#: ``recent_ms(int(wall * 1000))`` is ``iso_ms(wall)`` when that millisecond
#: was formatted lately, else ``None``: the memo's look-up alone, for a loop
#: that formats several times per task (``history_of``) and calls
#: :func:`iso_ms` only on a miss.
recent_ms = _MILLIS.get


@functools.lru_cache(maxsize=1)
def _iso_second(seconds: int) -> str:
    # time.strftime on a struct_time is several times cheaper than datetime.isoformat.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
