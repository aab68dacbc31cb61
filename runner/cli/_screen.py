"""What ``submit`` shows on stderr: notable events, above a progress bar on a terminal.

Per-attempt log lines are not part of it unless asked for (``-v``); they go
to ``--log FILE``.  What is shown is what a person watching needs: a
provider disabled for a missing key, a role the config does not name, a
provider starting or ending a cooldown, and the bar itself (tasks done out of
the file's tasks, percentage, time left, and why nothing moves when nothing
can run).  While the bar is live every line goes through its console, so it
is printed above the bar instead of through it.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, TextIO, cast

if TYPE_CHECKING:
    from rich.progress import Progress


class Screen:
    """stderr during one run: :meth:`say` a line; :meth:`bar` shows the progress bar."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._progress: Progress | None = None

    def say(self, text: str) -> None:
        """One line: above the bar while it is shown, else straight to the stream."""
        progress = self._progress
        if progress is not None:
            from rich.text import Text

            # from_ansi: the execution log colours its lines on a terminal.
            progress.console.print(Text.from_ansi(text), soft_wrap=True)
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr loses lines, not tasks
            pass

    @property
    def live(self) -> bool:
        """Whether the progress bar is on the screen now."""
        return self._progress is not None

    def write(self, text: str) -> None:
        """Text as it is, straight to the stream (only while no bar is shown)."""
        # A closed or broken stderr loses lines, not tasks.
        with suppress(OSError, ValueError):
            self.stream.write(text)

    def flush(self) -> None:
        with suppress(OSError, ValueError):
            self.stream.flush()

    def lines(self) -> TextIO:
        """A text stream whose every line is :meth:`say`-ed (for the execution log)."""
        return cast(TextIO, _Lines(self))

    @contextmanager
    def bar(self) -> Iterator[Progress]:
        """The progress bar, live (and catching every line said) until the block ends."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (
            SpinnerColumn(),
            TextColumn("tasks"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(compact=True),
            TextColumn("{task.fields[status]}"),
        )
        console = Console(file=self.stream, highlight=False)
        with Progress(*columns, console=console, transient=True) as progress:
            self._progress = progress
            try:
                yield progress
            finally:
                self._progress = None


class _Lines(io.TextIOBase):
    """Complete lines written here are said on the screen; a partial one waits."""

    def __init__(self, screen: Screen) -> None:
        self._screen = screen
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        screen = self._screen
        if screen.live:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                screen.say(line)
        else:
            # No bar to keep clear: the log's batch goes out as one write.
            screen.write(self._partial + text)
            self._partial = ""
        return len(text)

    def flush(self) -> None:
        if not self._screen.live:
            self._screen.flush()

    def isatty(self) -> bool:
        try:
            return self._screen.stream.isatty()
        except (AttributeError, ValueError):
            return False
