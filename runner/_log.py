"""The execution log: runner's one logging path (structlog), one line per status move.

Each move line carries the task id, role, provider, attempt, status, latency
and error code: enough to follow a task through retries and fallbacks, and
never a prompt, an output or a secret (those are not even handed to the
logger).  Other events (an adapter that crashed, an observer that raised) are
warnings on the same logger; causes that could carry user data are kept out,
and the exception type is kept at debug level.

The logger is built per runner with ``structlog.wrap_logger``, not through
``structlog.configure``, so a runner never changes the logging of the program
that embeds it (and holds no module-level state).  Its level filter is
structlog's ``make_filtering_bound_logger``; on top of that
:class:`ExecutionLog` checks the level once, so a filtered-out move costs one
attribute test on the dispatcher's hot path, not a dict of keyword arguments.

Cost per line is kept small on purpose (two lines per task at ``info``): the
timestamp comes from the cached once-a-second formatter, JSON is rendered by
msgspec, plain console lines by a short f-string renderer (structlog's
coloured ConsoleRenderer only on a terminal), and lines reach the stream
through :class:`LineWriter`, which writes them in batches instead of taking a
lock and flushing for every line as structlog's PrintLogger does.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Final, TextIO

import msgspec
import structlog
from structlog.typing import FilteringBoundLogger, Processor, WrappedLogger

from runner._clock import iso_ms
from runner._states import Move
from runner._task import HistoryEntry
from runner.config._model import LoggingConfig

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: Lines waiting in a LineWriter are written at the latest this long after the first.
FLUSH_DELAY: Final = 0.1
_MAX_PENDING: Final = 512


class LineWriter:
    """A structlog logger that writes rendered lines to a stream in batches.

    A line is appended to a list; the list is written with one ``write`` and
    one ``flush`` when it holds 512 lines, when a warning or error arrives,
    when a line comes :data:`FLUSH_DELAY` seconds or more after the first one
    waiting, or when the owner calls :meth:`flush` (the Runner does, at least
    every :data:`FLUSH_DELAY` seconds while it is open, and on close).  A
    stream that cannot be written (closed, a broken pipe) loses the lines, not
    the tasks: logging never fails a task.
    """

    __slots__ = ("_clock", "_first", "_pending", "_stream", "render")

    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._pending: list[str] = []
        self._first = 0.0
        #: The renderer at the end of the logger's processor chain when the
        #: chain is the plain one (JSON, or console off a terminal), for
        #: :class:`ExecutionLog`'s direct path; ``None`` otherwise.
        self.render: Callable[[MutableMapping[str, Any]], str] | None = None

    def msg(self, message: str) -> None:
        pending = self._pending
        pending.append(message)
        if len(pending) == 1:
            self._first = self._clock()
        elif len(pending) >= _MAX_PENDING or self._clock() - self._first >= FLUSH_DELAY:
            self.flush()

    debug = info = log = msg

    def warning(self, message: str) -> None:
        self.msg(message)
        self.flush()

    warn = error = err = critical = exception = fatal = failure = warning

    @property
    def pending(self) -> int:
        """Lines not yet written."""
        return len(self._pending)

    def flush(self) -> None:
        """Write every waiting line now."""
        pending = self._pending
        if not pending:
            return
        text = "\n".join(pending) + "\n"
        pending.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass


def _timestamp(_logger: WrappedLogger, _name: str, event: MutableMapping[str, Any]) -> Any:
    event["timestamp"] = iso_ms(time.time())
    return event


_encoder: Final = msgspec.json.Encoder(enc_hook=str)


def _render_json(_logger: WrappedLogger, _name: str, event: MutableMapping[str, Any]) -> str:
    return _encoder.encode(event).decode()


def _render_plain(_logger: WrappedLogger, _name: str, event: MutableMapping[str, Any]) -> str:
    # The layout of structlog's ConsoleRenderer without colours, for a
    # fraction of its cost: "<time> [<level>] <event>  key=value ...".
    ts = event.pop("timestamp", "")
    level = event.pop("level", "")
    name = event.pop("event", "")
    exc = event.pop("exception", None)
    line = f"{ts} [{level:<9}] {name:<20} " + " ".join([f"{k}={v}" for k, v in event.items()])
    return f"{line}\n{exc}" if exc else line


_format_exc_info: Final = structlog.processors.format_exc_info


def _exc_info(logger: WrappedLogger, name: str, event: MutableMapping[str, Any]) -> Any:
    # Nearly no line carries an exception: test for it before calling structlog's formatter.
    return _format_exc_info(logger, name, event) if "exc_info" in event else event


def configure_logging(
    config: LoggingConfig, *, stream: TextIO | None = None
) -> tuple[FilteringBoundLogger, LineWriter]:
    """A logger for ``config`` writing to ``stream``, and the writer its owner flushes.

    ``stream`` defaults to ``sys.stderr`` (results may go to stdout).  Console
    lines are coloured only on a terminal; tracebacks are rendered plainly,
    never with local variables, which could hold a key.
    """
    out = stream if stream is not None else sys.stderr
    processors: list[Processor] = [structlog.processors.add_log_level, _timestamp]
    writer = LineWriter(out)
    if config.format == "json":
        processors += [_exc_info, _render_json]
        writer.render = _direct(_render_json)
    elif _isatty(out):
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=True,
                sort_keys=False,
                exception_formatter=structlog.dev.plain_traceback,
            )
        )
    else:
        processors += [_exc_info, _render_plain]
        writer.render = _direct(_render_plain)
    # bind() now, so each call is a plain method call on the bound logger rather
    # than a trip through wrap_logger's lazy proxy.
    logger: FilteringBoundLogger = structlog.wrap_logger(
        writer,
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[config.level]),
    ).bind()
    return logger, writer


def _direct(
    render: Callable[[WrappedLogger, str, MutableMapping[str, Any]], str],
) -> Callable[[MutableMapping[str, Any]], str]:
    def rendered(event: MutableMapping[str, Any]) -> str:
        return render(None, "info", event)

    return rendered


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ExecutionLog:
    """Writes the one line per status move; silent when the level filters ``info`` out.

    Given the :class:`LineWriter` behind ``logger`` (as the Runner does), a
    move line skips structlog when the writer knows the chain's renderer:
    the same dict the processors would build (the fields, then ``event``,
    ``level`` and ``timestamp``, in that order) goes straight to the renderer
    and the writer, so the line is identical, for half the cost (issue 13:
    two lines per task at ``info``).
    """

    __slots__ = ("_logger", "_render", "_writer", "enabled")

    def __init__(
        self, logger: FilteringBoundLogger, level: str = "info", *, writer: LineWriter | None = None
    ) -> None:
        self._logger = logger
        self.enabled = _LEVELS.get(level, logging.INFO) <= logging.INFO
        self._writer = writer
        self._render = writer.render if writer is not None else None

    def move(
        self,
        task_id: str,
        role: str | None,
        entry: HistoryEntry | Move,
        *,
        latency_ms: float | None = None,
        workflow: str | None = None,
    ) -> None:
        """Log one move; the caller checks :attr:`enabled` first on the hot path.

        Fields that do not apply (no provider yet, a workflow's role) are left out.
        The line's time is when it is logged, so an in-flight :class:`Move`
        needs no formatting of its own.
        """
        fields: dict[str, Any] = {"task_id": task_id}
        if workflow is not None:
            fields["workflow"] = workflow
        if role is not None:
            fields["role"] = role
        if entry.provider is not None:
            fields["provider"] = entry.provider
        if entry.attempt is not None:
            fields["attempt"] = entry.attempt
        fields["status"] = entry.status
        if latency_ms is not None:
            fields["latency_ms"] = round(latency_ms, 1)
        if entry.error_code is not None:
            fields["error"] = entry.error_code
        render = self._render
        if render is None or self._writer is None:
            self._logger.info("task", **fields)
            return
        fields["event"] = "task"
        fields["level"] = "info"
        fields["timestamp"] = iso_ms(time.time())
        self._writer.msg(render(fields))

    def notice(self, level: str, message: str) -> None:
        """A message from a component below the dispatcher (the metrics writer's spill notices).

        Logged whatever ``enabled`` says: ``error`` as an error, anything else as a warning.
        """
        if level == "error":
            self._logger.error(message)
        else:
            self._logger.warning(message)

    def problem(self, event: str, **fields: Any) -> None:
        """A warning that is not a status move (an adapter bug turned into ``unknown``)."""
        self._logger.warning(event, **fields)

    def detail(self, event: str, **fields: Any) -> None:
        """A debug line: the cause behind an error the user already sees by its code."""
        self._logger.debug(event, **fields)

    def cause(self, event: str, exc: BaseException) -> None:
        """At debug level, where ``exc`` was raised and what it was caused by.

        Each exception in the chain is named by its type and the innermost
        frame that raised it (``file:line in function``), never by its
        message, which could carry a prompt or a key.
        """
        chain: list[str] = []
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            chain.append(f"{type(current).__name__} at {_raised_at(current)}")
            current = current.__cause__ or current.__context__
        self.detail(event, cause=" <- ".join(chain))


def _raised_at(exc: BaseException) -> str:
    tb = exc.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}"
