"""A Python child process spoken to in lines: commands on its stdin, answers on its stdout.

The ``http`` case runs its server and each client side in a process of its
own (:mod:`benchmarks.http_server`, :mod:`benchmarks.http_sides`).  Every
read has a deadline, so a child that hangs fails the case instead of the
run, and :meth:`Child.close` always ends the child: it closes stdin (the
child's signal to stop), then terminates, then kills, each step bounded.
Used as a context manager, the child is ended on any way out, an error or
``KeyboardInterrupt`` included.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

ROOT = Path(__file__).resolve().parent.parent


class ChildError(RuntimeError):
    """A child exited, or did not answer in time."""


class Child:
    """``python -m MODULE ARGS...`` with line-based stdin and stdout."""

    def __init__(self, module: str, *args: str, name: str | None = None) -> None:
        self.name = name or module
        # stderr is inherited so a child's traceback reaches the terminal.
        self._proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            bufsize=0,
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self._proc.pid

    def send(self, line: str) -> None:
        """Write one command line."""
        stdin = self._stdin()
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except BrokenPipeError:
            raise ChildError(f"{self.name} exited ({self._proc.poll()})") from None

    def receive(self, timeout: float) -> str:
        """The next line the child prints, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        fd = self._stdout().fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"{self.name} gave no answer within {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise ChildError(f"{self.name} closed its output ({self._proc.poll()})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def ask(self, line: str, timeout: float) -> str:
        """Send a command and return the answer line."""
        self.send(line)
        return self.receive(timeout)

    def close(self, timeout: float = 5.0) -> list[str]:
        """End the child (EOF on stdin, then SIGTERM, then SIGKILL); its last lines."""
        proc = self._proc
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        lines: list[str] = []
        try:
            while True:
                lines.append(self.receive(timeout))
        except ChildError:
            pass
        for stop in (proc.terminate, proc.kill):
            if proc.poll() is not None:
                break
            stop()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
        if proc.stdout is not None:
            proc.stdout.close()
        return lines

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _stdin(self) -> IO[bytes]:
        if self._proc.stdin is None:
            raise ChildError(f"{self.name} has no stdin")
        return self._proc.stdin

    def _stdout(self) -> IO[bytes]:
        if self._proc.stdout is None:
            raise ChildError(f"{self.name} has no stdout")
        return self._proc.stdout
