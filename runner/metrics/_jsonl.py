"""The JSONL store: one event per line, appended; also the spill file and ``export``.

The line format is :class:`EventLine`: the fields of
:class:`~runner.metrics._events.MetricEvent` with the time as ``ts``, an ISO
8601 string (UTC, ``Z``; a time without a zone is read as UTC), because
people read these files::

    {"event_id":"0b6f…","task_id":"t-001",…,"ts":"2026-11-26T21:00:00.123Z",…}

Two promises hold however a run ended:

* **Appends start on a fresh line.**  A crash mid-write leaves a fragment
  without its newline; the next append writes a newline first, so the
  fragment stays a line of its own and the new events are whole lines.
* **Reading keeps every whole event.**  A line that is not JSON at all is a
  *torn* line (a fragment): it is skipped and reported by line number.  A
  file written before appends started on a fresh line can hold a fragment
  with a whole event glued to it; that event is read too.  A line that is
  JSON but not an event is an error naming the line, since that is not what
  a crash leaves.

Files are decoded in blocks of lines with msgspec (``decode_lines``); a
block with a bad line is decoded again line by line to find it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Final

import anyio
import anyio.to_thread
import msgspec
from msgspec import Meta, Struct

from runner._errors import StorageError, UsageError
from runner.metrics._events import EPOCH, ONE_US, MetricEvent, Row, ts_to_us, us_to_ts

#: Bytes read (and decoded) at a time.
BLOCK_SIZE: Final = 1 << 20
# Every event line starts with this key (EventLine's first field), so the
# whole event glued to a fragment is found by searching for it.
_LINE_START: Final = b'{"event_id"'


#: A tag as a line may hold it: not empty, no ``|`` (the stores join tags with it),
#: so a hand-edited line that breaks this is "not a metric event", naming the line.
Tag = Annotated[str, Meta(pattern=r"^[^|]+$")]


# gc=False as for MetricEvent: only strs, numbers, a datetime, None and a tuple of str.
class EventLine(Struct, frozen=True, kw_only=True, gc=False):
    """A metric event as one JSONL line: :class:`MetricEvent` with ``ts`` as ISO 8601."""

    event_id: str
    task_id: str
    provider: str
    role: str
    model: str
    attempt: int
    ts: datetime
    latency_ms: float
    success: bool
    error_code: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    #: Absent from lines written before tasks had tags: those read as none.
    tags: tuple[Tag, ...] = ()

    def event(self) -> MetricEvent:
        """The event this line holds."""
        return MetricEvent(
            event_id=self.event_id,
            task_id=self.task_id,
            provider=self.provider,
            role=self.role,
            model=self.model,
            attempt=self.attempt,
            ts_us=ts_to_us(self.ts),
            latency_ms=self.latency_ms,
            success=self.success,
            error_code=self.error_code,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
            tags=self.tags,
        )

    def row(self) -> Row:
        """The integer row of this line's event, without building the event (bulk import)."""
        try:
            us = (self.ts - EPOCH) // ONE_US  # ts_to_us inlined: this runs once per line
        except TypeError:  # a naive time, which is UTC
            us = ts_to_us(self.ts)
        return (
            self.event_id,
            self.task_id,
            self.provider,
            self.role,
            self.model,
            self.attempt,
            us,
            # The same conversions as runner.metrics._events.to_row; a test pins the two together.
            round(self.latency_ms * 1000),
            1 if self.success else 0,
            self.error_code,
            self.input_tokens,
            self.output_tokens,
            round(self.cost_usd * 1e9),
            "|" + "|".join(self.tags) + "|" if self.tags else "",  # join_tags
        )


#: Told about each torn line skipped: its 1-based number and what was wrong.
OnTorn = Callable[[int, str], None]

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(EventLine)


def reason(exc: BaseException) -> str:
    """Why a store could not be written, in a few words (an OSError's strerror)."""
    if isinstance(exc, FileExistsError) and exc.filename:
        # mkdir of a store's directory found a file in its place.
        return f"{exc.filename} is not a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def to_line(e: MetricEvent) -> EventLine:
    """The line form of an event."""
    return EventLine(
        event_id=e.event_id,
        task_id=e.task_id,
        provider=e.provider,
        role=e.role,
        model=e.model,
        attempt=e.attempt,
        ts=us_to_ts(e.ts_us),
        latency_ms=e.latency_ms,
        success=e.success,
        error_code=e.error_code,
        input_tokens=e.input_tokens,
        output_tokens=e.output_tokens,
        cost_usd=e.cost_usd,
        tags=e.tags,
    )


def encode_line(e: MetricEvent) -> bytes:
    """One event as JSON, without the newline."""
    return _encoder.encode(to_line(e))


def encode_lines(events: Iterable[MetricEvent]) -> bytes:
    """Events as JSONL, one line each."""
    return _encoder.encode_lines([to_line(e) for e in events])


def append_jsonl(path: str | Path, events: Sequence[MetricEvent]) -> None:
    """Append events to a JSONL file (creating it and its directory), on a fresh line."""
    data = encode_lines(events)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # "a+b": every write goes to the end, and the last byte can be read first.
    with target.open("a+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                data = b"\n" + data  # a torn line from a crash: keep it on its own line
        f.write(data)


def _open(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """The file's lines in blocks: (number of lines before the block, whole lines).

    The last block may lack its final newline (a torn or unterminated line).
    """
    try:
        f = Path(path).open("rb")  # noqa: SIM115 - closed by the with below; the generator owns it
    except OSError as exc:
        raise StorageError(f"cannot read metrics file {path}: {exc.strerror}") from exc
    with f:
        before = 0
        tail = b""
        while chunk := f.read(BLOCK_SIZE):
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            body, tail = data[:cut], data[cut:]
            if body:
                yield before, body
                before += body.count(b"\n")
        if tail.strip():
            yield before, tail


def _decode_slowly(
    path: str | Path, block: bytes, before: int, on_torn: OnTorn | None
) -> list[EventLine]:
    """A block with a bad line, line by line: keep the events, skip torn lines, name bad ones."""
    lines: list[EventLine] = []
    for number, line in enumerate(block.split(b"\n"), start=before + 1):
        if not line.strip():
            continue
        try:
            lines.append(_decoder.decode(line))
        except msgspec.ValidationError as exc:
            raise UsageError(f"{path}:{number}: not a metric event: {exc}") from None
        except msgspec.DecodeError as exc:
            glued = line.rfind(_LINE_START, 1)
            if glued > 0:
                with contextlib.suppress(msgspec.DecodeError):
                    lines.append(_decoder.decode(line[glued:]))
            if on_torn is not None:
                on_torn(number, str(exc))
    return lines


def read_lines(path: str | Path, *, on_torn: OnTorn | None = None) -> Iterator[list[EventLine]]:
    """Every event line of a JSONL file, streamed in blocks (see the module docstring).

    A missing or unreadable file, or a line that is JSON but not an event,
    is a :class:`UsageError` naming it.
    """
    for before, block in _open(path):
        try:
            yield _decoder.decode_lines(block)
        except msgspec.DecodeError:
            yield _decode_slowly(path, block, before, on_torn)


def read_rows(
    path: str | Path, *, size: int, on_torn: OnTorn | None = None
) -> Generator[list[Row], None, None]:
    """Every event of a JSONL file as integer rows, in batches of about ``size`` (bulk import)."""
    batch: list[Row] = []
    for lines in read_lines(path, on_torn=on_torn):
        batch += [line.row() for line in lines]
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_jsonl(path: str | Path, *, on_torn: OnTorn | None = None) -> Iterator[MetricEvent]:
    """Every event of a JSONL file, streamed."""
    for lines in read_lines(path, on_torn=on_torn):
        for line in lines:
            yield line.event()


class JsonlStore:
    """A JSONL file that events are appended to (``metrics.store: jsonl`` and the spill file).

    An append log, so not idempotent itself: a re-sent batch is appended
    again, and importing the file (``metrics migrate``) drops the duplicates.
    """

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)
        self._path = Path(path)

    def check_writable(self) -> None:
        """Create the file (and its directory) now, so a bad path fails before any work."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("ab"):
            pass

    def write_now(self, events: Sequence[MetricEvent]) -> None:
        """Append in the calling thread (the writer's last resort, when it may not wait)."""
        try:
            append_jsonl(self._path, events)
        except OSError as exc:
            raise StorageError(reason(exc)) from exc

    async def write(self, events: Sequence[MetricEvent]) -> int:
        await anyio.to_thread.run_sync(self.write_now, events)
        return len(events)

    async def aclose(self) -> None:
        return None
