"""Writing result lines (JSONL) as tasks finish, so a crash loses little.

A results file given by path is written to a hidden ``.NAME.<pid>-<random>.partial``
file beside it and renamed over it by :meth:`ResultsFile.commit` once the run
has ended, so a results file from an earlier run is never emptied before this
run has read its input (an error on the way, exit 2, leaves it as it was).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
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
    of a second of results.  :meth:`commit` puts the results in place;
    :meth:`close` without it leaves any existing results file untouched.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        name: str,
        close: bool,
        clock: Callable[[], float] = time.monotonic,
        partial: str | None = None,
        target: str | None = None,
        replaces: bool = False,
    ) -> None:
        self.name = name
        self.written = 0
        #: Whether committing replaced a results file that was there before.
        self.replaces = replaces
        #: Where the results are while the run goes (``None``: straight to ``name``).
        self.partial = partial
        self._target = target
        self._stream = stream
        self._close = close
        self._clock = clock
        self._encoder = msgspec.json.Encoder()
        self._last_flush = clock()
        self._committed = False

    @classmethod
    def open(cls, path: str, *, tasks: tuple[int, int] | None = None) -> ResultsFile:
        """Prepare ``path`` (making its directory); ``-`` is standard output.

        ``tasks`` is the tasks file's ``(st_dev, st_ino)``: a ``path`` that is
        the same file is refused, since the results would replace the tasks.
        Nothing at ``path`` changes until :meth:`commit`; a path that exists
        and is not a regular file (a FIFO, ``/dev/null``) is written directly.
        """
        if path == "-":
            return cls(sys.stdout.buffer, name="<stdout>", close=False)
        try:
            existing: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            existing = None
        except OSError as exc:
            raise UsageError(f"cannot write results to {path}: {exc.strerror}") from None
        if existing is not None and tasks == (existing.st_dev, existing.st_ino):
            raise UsageError(
                f"--out {path} is the tasks file itself: the results would replace the tasks;"
                " give another --out"
            )
        try:
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                stream = open(path, "wb")  # noqa: SIM115 (closed by close())
                return cls(stream, name=path, close=True)
            # Through a symlink, the file it points at is the one replaced.
            target = os.path.realpath(path)
            parent = os.path.dirname(target)
            os.makedirs(parent, exist_ok=True)
            partial, fd = _create_partial(target)
            if existing is not None:
                os.fchmod(fd, stat.S_IMODE(existing.st_mode))
        except OSError as exc:
            raise UsageError(f"cannot write results to {path}: {exc.strerror}") from None
        stream = os.fdopen(fd, "wb")
        return cls(
            stream,
            name=path,
            close=True,
            partial=partial,
            target=target,
            replaces=existing is not None,
        )

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

    def commit(self) -> None:
        """The run has ended: put the results at their path, replacing what was there."""
        self._stream.flush()
        if self.partial is None or self._target is None:
            return
        try:
            os.fsync(self._stream.fileno())
            self._stream.close()
            os.replace(self.partial, self._target)
        except OSError as exc:
            raise UsageError(
                f"cannot move the results from {self.partial} to {self.name}: {exc.strerror}"
            ) from None
        self._committed = True

    def close(self) -> None:
        """Flush everything written and close the file unless it is standard output.

        Without :meth:`commit` (the run stopped on an error) the results file
        at the path is left as it was; the partial file is removed if empty,
        else kept and :attr:`partial` names it.
        """
        try:
            if not self._stream.closed:
                self._stream.flush()
        finally:
            if self._close and not self._stream.closed:
                self._stream.close()
        if self.partial is not None and not self._committed and self.written == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.partial)
            self.partial = None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        if self.partial is not None and not self._committed:
            print(
                f"note: the run stopped; the results written so far ({self.written} line"
                f"{'' if self.written == 1 else 's'})"
                f" are in {self.partial}, and {self.name} was left as it was",
                file=sys.stderr,
            )


def _create_partial(target: str) -> tuple[str, int]:
    """A new hidden file beside ``target``, created with the usual mode (umask applies)."""
    parent, base = os.path.split(target)
    while True:
        partial = os.path.join(parent, f".{base}.{os.getpid()}-{secrets.token_hex(4)}.partial")
        try:
            return partial, os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
