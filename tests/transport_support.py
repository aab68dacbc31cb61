"""A loopback HTTP/1.1 server that answers with scripted raw bytes, for the transport tests.

The fake provider servers (``tests.fakes``) speak each API correctly through
aiohttp; this one lets a test send exactly the bytes it wants (chunked,
gzip, read-to-close, HTTP/1.0, a response cut short, garbage), close a
connection when it wants, and see every connection and request the client
made.  It also makes a throw-away CA and a server certificate with the
``openssl`` CLI for the TLS tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

JSON_OK = b'{"ok": true}'


def response(
    body: bytes = JSON_OK,
    *,
    status: str = "200 OK",
    headers: tuple[str, ...] = ("Content-Type: application/json",),
    version: str = "HTTP/1.1",
    length: bool = True,
) -> bytes:
    """A whole response; ``length=False`` leaves out Content-Length."""
    lines = [f"{version} {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*pieces: bytes, headers: tuple[str, ...] = ()) -> bytes:
    """A 200 whose body is sent in ``pieces`` with chunked encoding."""
    head = "\r\n".join(["HTTP/1.1 200 OK", "Transfer-Encoding: chunked", *headers])
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return head.encode() + b"\r\n\r\n" + body


@dataclass(frozen=True)
class Answer:
    """What the server does with one request: wait, write ``data``, maybe close."""

    data: bytes = field(default_factory=response)
    delay: float = 0.0
    close: bool = False


@dataclass(frozen=True)
class Seen:
    """One request as the server read it."""

    connection: int
    method: str
    target: str
    #: Header names lower case; the raw lines keep the client's spelling.
    headers: dict[str, str]
    lines: tuple[str, ...]
    body: bytes


class RawServer:
    """Answers each request with the next scripted :class:`Answer` (a plain 200 when none)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._script: deque[Answer] = deque()
        self._handlers: set[asyncio.Task[None]] = set()
        self.seen: list[Seen] = []
        self.connections = 0
        self.closed = 0  # connections that ended (either side)
        self.open_now = 0
        self.most_open = 0
        self.port = 0
        self._ended = asyncio.Event()
        self._arrived = asyncio.Event()

    def script(self, *answers: Answer | bytes) -> None:
        self._script.extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/v1/things", *, host: str = "127.0.0.1") -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def wait_closed(self, count: int, limit: float = 5.0) -> None:
        """Wait until ``count`` connections have ended (bounded: fails after ``limit`` s)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while self.closed < count:
                    self._ended.clear()
                    await self._ended.wait()
        assert self.closed >= count, f"{self.closed} of {count} connections ended"

    async def wait_seen(self, count: int, limit: float = 5.0) -> None:
        """Wait until ``count`` requests have arrived (bounded: fails after ``limit`` s)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                while len(self.seen) < count:
                    self._arrived.clear()
                    await self._arrived.wait()
        assert len(self.seen) >= count, f"{len(self.seen)} of {count} requests arrived"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = tuple(head.decode("latin-1").split("\r\n")[:-2])
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(Seen(number, method, target, headers, lines[1:], body))
                self._arrived.set()
                answer = self._script.popleft() if self._script else Answer()
                if answer.delay:
                    await asyncio.sleep(answer.delay)
                writer.write(answer.data)
                await writer.drain()
                if answer.close:
                    return
        except ConnectionError:
            return
        finally:
            self.open_now -= 1
            self.closed += 1
            self._ended.set()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._handlers.discard(task)


@dataclass(frozen=True)
class Certificates:
    """A test CA and a server certificate it signed for ``localhost`` only."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_certificates(folder: Path) -> Certificates:
    """A CA and a ``localhost`` server certificate, made with the openssl CLI."""
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ext = folder / "server.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectKeyIdentifier=hash\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        [
            "openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
            "-subj", "/CN=runner test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash",
        ],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        [
            "openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
            "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext,
        ],
    ]  # fmt: skip
    for command in commands:
        # Fixed arguments and paths of our own: nothing comes from outside.
        subprocess.run(  # noqa: S603
            [str(c) for c in command], check=True, capture_output=True, timeout=30
        )
    return Certificates(ca=ca, cert=cert, key=key)
