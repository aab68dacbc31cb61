"""Where a client's CPU goes per request over HTTP: cProfile of one side of the ``http`` case.

``python -m benchmarks.http_profile [--side runner|raw|capacity] [--wire openai] [--requests 4000]``
starts the local server in its own process, runs the side once to warm up,
once unprofiled (its CPU per request, for scale: cProfile roughly doubles the
cost of every Python call) and once under cProfile, then prints per request:
the functions with the most own time, the own time by area (runner's modules
one by one, the adapters, aiohttp, anyio, asyncio, logging, C builtins), and
the cumulative time of the steps a task goes through.  Only the event loop's
thread is profiled: the SQLite writer's thread (aiosqlite) is not, and shows
up only in the unprofiled CPU figure.  Not a benchmark case: a tool for the
hand-made profiles in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import tempfile
import time
from collections import defaultdict
from typing import Final

from benchmarks.http_server import open_server
from benchmarks.http_sides import Capacity, RawAiohttp, RunnerSide, Side
from benchmarks.http_wire import WIRES, Wire

#: (label, path fragment) in the order they are tried: the first match names the area.
AREAS: Final = (
    ("runner/", "/runner/"),
    ("workers/_transport.py (HTTP)", "/workers/_transport.py"),
    ("workers/ (adapters)", "/workers/"),
    ("aiohttp", "/aiohttp/"),
    ("anyio", "/anyio/"),
    ("sniffio", "/sniffio/"),
    ("asyncio", "/asyncio/"),
    ("structlog", "/structlog/"),
    ("logging", "/logging/"),
    ("yarl, multidict", "/yarl/"),
    ("yarl, multidict", "/multidict/"),
    ("benchmark harness", "/benchmarks/"),
)

#: (label, function name, file fragment): the steps whose cumulative time is shown.
STEPS: Final = (
    ("provider call (adapter + transport)", "complete", "/workers/"),
    ("transport request (Transport.request)", "request", "/workers/_transport.py"),
    ("aiohttp request (session._request)", "_request", "/aiohttp/client.py"),
    ("one attempt (_attempt)", "_attempt", "/runner/"),
    ("status moves (record)", "record", "/runner/"),
    ("metric event (_emit)", "_emit", "/runner/"),
    ("history timestamps (iso_ms)", "iso_ms", "/runner/"),
    ("anyio CancelScope.__enter__", "__enter__", "/anyio/_backends/_asyncio.py"),
    ("anyio CancelScope.__exit__", "__exit__", "/anyio/_backends/_asyncio.py"),
    ("sniffio current_async_library", "current_async_library", "/sniffio/"),
    ("anyio.current_time", "current_time", "/anyio/_core/_eventloop.py"),
)


def area_of(filename: str) -> str:
    if filename == "~" or filename.startswith("<"):
        return "C builtins (msgspec, sockets, ...)"
    for label, fragment in AREAS:
        if fragment in filename:
            if label == "runner/":
                return "runner/" + filename.rsplit("/runner/", 1)[1]
            return label
    return "other Python"


def short(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python3."):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3." else tail
    for fragment in ("/runner/", "/workers/", "/benchmarks/"):
        if fragment in filename:
            return fragment.strip("/") + "/" + filename.rsplit(fragment, 1)[1]
    return filename


async def passes(side: Side, count: int) -> tuple[float, float, pstats.Stats]:
    """Warm up, one unprofiled pass (wall and CPU seconds), one profiled pass."""
    for profiled in (None, False, True):
        await side.prepare(count)
        gc.collect()
        profile = cProfile.Profile() if profiled else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        await side.run(count)
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await side.settle()
        if profiled is False:
            plain = (wall, cpu)
    assert profile is not None
    return plain[0], plain[1], pstats.Stats(profile)


def report(stats: pstats.Stats, count: int, wall: float, cpu: float, top: int) -> None:
    per = 1e6 / count
    print(f"unprofiled: {wall * per:.1f} µs/request wall, {cpu * per:.1f} µs/request CPU")
    entries = stats.stats  # type: ignore[attr-defined]
    profiled_total = sum(tt for (_, _, tt, _, _) in entries.values())
    print(f"profiled (event loop thread): {profiled_total * per:.1f} µs/request own time in all\n")
    print(f"top {top} by own time, per request:")
    print(f"{'calls':>7} {'own µs':>8} {'cum µs':>8}  function")
    rows = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)
    for (filename, line, name), (_, calls, tt, ct, _) in rows[:top]:
        where = f"{short(filename)}:{line}({name})" if filename != "~" else name
        print(f"{calls / count:7.2f} {tt * per:8.2f} {ct * per:8.2f}  {where}")
    areas: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, tt, _, _) in entries.items():
        areas[area_of(filename)] += tt
    print("\nown time by area, per request:")
    for label, tt in sorted(areas.items(), key=lambda item: item[1], reverse=True):
        print(f"{tt * per:8.2f} µs  {tt / profiled_total:5.1%}  {label}")
    print("\nrunner's, the adapters' and anyio's functions (own >= 0.3 µs), per request:")
    print(f"{'calls':>7} {'own µs':>8} {'cum µs':>8}  function")
    for (filename, line, name), (_, calls, tt, ct, _) in rows:
        if tt * per >= 0.3 and any(f in filename for f in ("/runner/", "/workers/", "/anyio/")):
            where = f"{short(filename)}:{line}({name})"
            print(f"{calls / count:7.2f} {tt * per:8.2f} {ct * per:8.2f}  {where}")
    print("\ncumulative time of the steps, per request (nested steps overlap):")
    for label, name, fragment in STEPS:
        found = [
            (calls, ct)
            for (filename, _, func), (_, calls, _, ct, _) in entries.items()
            if func == name and fragment in filename
        ]
        if found:
            calls = sum(c for c, _ in found)
            ct = sum(t for _, t in found)
            print(f"{ct * per:8.2f} µs  {calls / count:5.2f} calls  {label}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_profile")
    parser.add_argument("--side", choices=("runner", "raw", "capacity"), default="runner")
    parser.add_argument("--wire", choices=WIRES, default="openai")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    wire: Wire = args.wire
    with (
        tempfile.TemporaryDirectory(prefix="runner-http-profile-") as scratch,
        open_server(max_seconds=600) as server,
    ):
        side: Side
        if args.side == "runner":
            side = RunnerSide(wire, server.port, scratch)
        elif args.side == "raw":
            side = RawAiohttp(wire, server.port)
        else:
            side = Capacity(server.port)
        wall, cpu, stats = asyncio.run(passes(side, args.requests))
    print(f"{args.side} over {wire}, {args.requests:,} requests, concurrency 64\n")
    report(stats, args.requests, wall, cpu, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
