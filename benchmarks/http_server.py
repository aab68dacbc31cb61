"""A minimal local server for the three wire formats, cheap enough never to be the bottleneck.

``python -m benchmarks.http_server [--port N] [--max-seconds S]`` listens on
127.0.0.1 only and prints ``listening PORT``.  It is a bare
:class:`asyncio.Protocol`: HTTP/1.1 with keep-alive, requests framed by
``Content-Length`` or chunked encoding, and each answer a pre-encoded byte
string (status line, ``Content-Type``, a correct ``Content-Length``, the
wire's request-id headers, the canned JSON body of :mod:`benchmarks.http_wire`).
No request body is parsed, so the server's own cost per request is a
header scan and one ``write``.

It runs in a process of its own (see :func:`open_server`), so the client
being measured never shares its event loop or its core.  Its stdin is a
control line: ``stats`` prints ``stats CPU_SECONDS SERVED CONNECTIONS READS``
(its own CPU time, the requests answered, the connections accepted and the
socket reads so far, which the case uses to check every client made exactly
one request per task and to report the server's CPU per request).  End
of input stops it, as do SIGTERM, SIGINT and ``--max-seconds``, so it
never outlives a benchmark that died.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from typing import Final, NamedTuple

from benchmarks._child import Child
from benchmarks.http_wire import CANNED, Wire, route

HOST: Final = "127.0.0.1"
#: A request head larger than this is refused (nothing the clients send comes close).
MAX_HEAD: Final = 64 * 1024

_NOT_FOUND: Final = b'{"error":{"message":"no such route","type":"invalid_request_error"}}'
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


def _response(status: bytes, body: bytes, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    head = [
        b"HTTP/1.1 " + status,
        b"Server: runner-bench",
        b"Content-Type: application/json",
        b"Content-Length: " + str(len(body)).encode(),
        *(f"{name}: {value}".encode() for name, value in extra),
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


#: Wire (or ``None``: no such route) -> the complete response bytes.
RESPONSES: Final[dict[Wire | None, bytes]] = {
    wire: _response(b"200 OK", body, extra) for wire, (body, extra) in CANNED.items()
}
RESPONSES[None] = _response(b"404 Not Found", _NOT_FOUND)
_BAD_REQUEST: Final = _response(b"400 Bad Request", b'{"error":{"message":"bad request"}}')


def chunked_end(buf: bytearray, start: int) -> int:
    """Where a chunked body starting at ``start`` ends (trailers included), or -1 if not yet."""
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return -1
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            if buf[pos : pos + 2] == b"\r\n":
                return pos + 2
            trailers = buf.find(b"\r\n\r\n", pos)
            return -1 if trailers < 0 else trailers + 4
        pos += size + 2
        if pos > len(buf):
            return -1


class Counter:
    """Requests answered by every connection of one server."""

    __slots__ = ("connections", "reads", "served")

    def __init__(self) -> None:
        self.served = 0
        self.connections = 0
        #: ``data_received`` calls: more than one per request means requests arrive in pieces.
        self.reads = 0


class HttpConnection(asyncio.Protocol):
    """One client connection: frame each request, answer it, keep the connection open."""

    __slots__ = ("_buffer", "_continued", "_counter", "_transport")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._continued = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._counter.connections += 1

    def data_received(self, data: bytes) -> None:
        self._counter.reads += 1
        buf = self._buffer
        buf += data
        transport = self._transport
        assert transport is not None
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    transport.write(_BAD_REQUEST)
                    transport.close()
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3:
                transport.write(_BAD_REQUEST)
                transport.close()
                return
            method, target, version = parts
            length = 0
            chunked = expect = False
            close = version == b"HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    close = b"close" in value.lower() or (
                        close and b"keep-alive" not in value.lower()
                    )
                elif name == b"expect":
                    expect = value.strip().lower() == b"100-continue"
            start = end + 4
            done = chunked_end(buf, start) if chunked else start + length
            if done < 0 or done > len(buf):
                if expect and not self._continued:
                    self._continued = True
                    transport.write(_CONTINUE)
                return
            del buf[:done]
            self._continued = False
            transport.write(RESPONSES[route(method, target)])
            self._counter.served += 1
            if close:
                transport.close()
                return


class Control(asyncio.Protocol):
    """The server's stdin: ``stats`` answers with CPU time and count; EOF stops the server."""

    def __init__(self, counter: Counter, stop: asyncio.Event) -> None:
        self._counter = counter
        self._stop = stop
        self._pending = b""

    def data_received(self, data: bytes) -> None:
        self._pending += data
        while b"\n" in self._pending:
            line, _, self._pending = self._pending.partition(b"\n")
            if line.strip() == b"stats":
                c = self._counter
                print(
                    f"stats {time.process_time():.6f} {c.served} {c.connections} {c.reads}",
                    flush=True,
                )

    def eof_received(self) -> bool | None:
        self._stop.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop.set()


async def serve(port: int, max_seconds: float) -> None:
    """Serve until stdin closes, a signal arrives or ``max_seconds`` pass."""
    loop = asyncio.get_running_loop()
    counter = Counter()
    stop = asyncio.Event()
    server = await loop.create_server(
        lambda: HttpConnection(counter), HOST, port, backlog=1024, reuse_address=True
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.call_later(max_seconds, stop.set)
    await loop.connect_read_pipe(lambda: Control(counter, stop), sys.stdin)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()
    print(f"served {counter.served}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_server")
    parser.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    parser.add_argument(
        "--max-seconds", type=float, default=3600.0, help="stop after this long at the latest"
    )
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.max_seconds))
    return 0


class ServerStats(NamedTuple):
    """What the server has done since it started."""

    #: Its own CPU seconds.
    cpu: float
    #: Requests answered.
    served: int
    #: Connections accepted.
    connections: int
    #: Reads from sockets (``data_received`` calls).
    reads: int


class ServerProcess:
    """The server running in a child process; use as a context manager (always ended)."""

    def __init__(self, *, max_seconds: float = 3600.0, start_timeout: float = 30.0) -> None:
        self._child = Child(
            "benchmarks.http_server", "--max-seconds", str(max_seconds), name="http server"
        )
        try:
            line = self._child.receive(start_timeout)
        except BaseException:
            self._child.close()
            raise
        if not line.startswith("listening "):
            self._child.close()
            raise RuntimeError(f"http server said {line!r} instead of its port")
        self.port = int(line.split()[1])

    @property
    def pid(self) -> int:
        return self._child.pid

    def stats(self, timeout: float = 10.0) -> ServerStats:
        """The server's CPU time and counts so far."""
        _, cpu, served, connections, reads = self._child.ask("stats", timeout).split()
        return ServerStats(
            cpu=float(cpu), served=int(served), connections=int(connections), reads=int(reads)
        )

    def close(self) -> None:
        self._child.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_server(*, max_seconds: float = 3600.0) -> ServerProcess:
    """Start the server in its own process; ``with open_server() as server: server.port``."""
    return ServerProcess(max_seconds=max_seconds)


if __name__ == "__main__":
    raise SystemExit(main())
