"""Writing result lines (JSONL) as tasks finish, so a crash loses little."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import BinaryIO, Final

import msgspec

from runner._errors import UsageError
from runner._task import Result

#: Longest time a written line may sit in the buffer before it reaches the file.
FLUSH_EVERY: Final = 0.1


class ResultsFile:
    """One JSON line per result, in the order written, flushed at least every 0.1 s.

    Flushing on a timer rather than per line keeps a million-line run from
    paying a system call per line while a crash still loses at most a tenth
    of a second of results.  :meth:`close` flushes the rest.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        name: str,
        close: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.written = 0
        self._stream = stream
        self._close = close
        self._clock = clock
        self._encoder = msgspec.json.Encoder()
        self._last_flush = clock()

    @classmethod
    def open(cls, path: str) -> ResultsFile:
        """Create (or truncate) ``path``, making its directory; ``-`` is standard output."""
        if path == "-":
            return cls(sys.stdout.buffer, name="<stdout>", close=False)
        try:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            stream = open(path, "wb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise UsageError(f"cannot write results to {path}: {exc.strerror}") from None
        return cls(stream, name=path, close=True)

    def write(self, result: Result) -> None:
        self._stream.write(self._encoder.encode(result) + b"\n")
        self.written += 1
        now = self._clock()
        if now - self._last_flush >= FLUSH_EVERY:
            self._stream.flush()
            self._last_flush = now

    def flush(self) -> None:
        self._stream.flush()
        self._last_flush = self._clock()

    def close(self) -> None:
        """Flush everything written; close the file unless it is standard output."""
        try:
            self._stream.flush()
        finally:
            if self._close:
                self._stream.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
