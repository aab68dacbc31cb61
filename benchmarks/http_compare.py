"""Over real HTTP: runner against raw aiohttp, the openai SDK and LiteLLM, same local server.

runner's adapters use their own HTTP/1.1 transport (``workers._transport``),
not aiohttp, so "raw aiohttp" is a hand-written request loop on a popular
client, a baseline rather than runner's floor; the ``capacity`` side, a bare
asyncio-protocol client that decodes nothing, is the floor, and runner's
ratio to it is reported too.

A local server (:mod:`benchmarks.http_server`, its own process) speaks the
OpenAI, Anthropic and Gemini wire formats with canned answers.  Each client
side (:mod:`benchmarks.http_sides`) runs in a process of its own, built and
warmed up once; then the repetitions run the sides one at a time, in an
order that alternates (forward, then backward), so no side always runs on
a warmer or a cooler machine, and only one client ever runs at once.  Every
pass is ``count`` requests by 64 concurrent callers; the ratios are taken
per repetition.

Per pass the case also reads the server's own CPU time and request count:
the count must grow by exactly ``count`` (one HTTP request per task, no
retries), and the server's CPU per request, next to the bare client's
``capacity`` pass, shows the server is far from being the bottleneck.

What each side does is in :mod:`benchmarks.http_sides`; in short, runner
writes a metric event per attempt to SQLite and keeps a status history per
task (its execution log at ``warning``: no line per task), the raw client,
the SDK and LiteLLM write nothing.  The SDK and LiteLLM sides are left out
with a note when their packages are missing (``pip install -e '.[compare]'``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Sequence
from typing import Final

from benchmarks._child import Child
from benchmarks._harness import Case, Metric, Settings, Target
from benchmarks.http_server import open_server
from benchmarks.http_sides import CONCURRENCY, SIDES

#: Every side, in the order of even repetitions (odd ones run it backwards).
ORDER: Final = tuple(SIDES)
#: The sides that need only runner's own dependencies.
CORE_SIDES: Final = tuple(s for s in ORDER if s not in ("sdk-openai", "litellm-openai"))
#: Side -> the package it needs beyond runner's own.
NEEDS: Final = {"sdk-openai": "openai", "litellm-openai": "litellm"}

#: What runner does per task besides the request, which the other sides do not.
RUNNER_DOES: Final = "SQLite metric event per attempt, status history, Result; log at warning"

#: Seconds a side may take to start (LiteLLM's import is slow on a busy machine).
START_TIMEOUT: Final = 180.0


def available(sides: Sequence[str]) -> tuple[list[str], list[str]]:
    """The sides whose packages are installed, and a note for each that is not."""
    kept: list[str] = []
    notes: list[str] = []
    for side in sides:
        package = NEEDS.get(side)
        if package is not None and importlib.util.find_spec(package) is None:
            notes.append(f"{side} left out: {package} is not installed (the compare extra)")
        else:
            kept.append(side)
    return kept, notes


def pass_timeout(count: int) -> float:
    """A bound on one pass: 25 ms a request (LiteLLM needs about 8) plus a minute."""
    return 60.0 + count * 0.025


def measure(
    settings: Settings, *, count: int, sides: Sequence[str] = ORDER, warmup: int | None = None
) -> dict[str, dict[str, list[float]]]:
    """Per side, ``seconds``, ``cpu`` and ``server_cpu`` (per request, µs) for each repetition."""
    warmup = min(count, 500) if warmup is None else warmup
    samples: dict[str, dict[str, list[float]]] = {s: {} for s in sides}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(open_server(max_seconds=3600))
        children: dict[str, Child] = {}
        for side in sides:
            children[side] = stack.enter_context(
                Child(
                    "benchmarks.http_sides",
                    *("--side", side, "--port", str(server.port), "--scratch", settings.scratch),
                    name=f"side {side}",
                )
            )
        for side, child in children.items():
            if (line := child.receive(START_TIMEOUT)) != "ready":
                raise RuntimeError(f"side {side} said {line!r} instead of ready")
        for rep in range(-1, settings.repetitions):
            n = warmup if rep < 0 else count
            order = list(sides) if rep % 2 == 0 else list(reversed(sides))
            for side in order:
                before = server.stats()
                answer = json.loads(children[side].ask(f"run {n}", pass_timeout(n)))
                after = server.stats()
                if "error" in answer:
                    raise RuntimeError(f"side {side}: {answer['error']}")
                if after.served - before.served != n:
                    raise RuntimeError(
                        f"side {side} made {after.served - before.served} requests for {n} tasks"
                    )
                if rep < 0:
                    continue
                figures = samples[side]
                figures.setdefault("seconds", []).append(answer["seconds"] / n * 1e6)
                figures.setdefault("cpu", []).append(answer["cpu"] / n * 1e6)
                figures.setdefault("server_cpu", []).append((after.cpu - before.cpu) / n * 1e6)
    return samples


def ratios(top: list[float], bottom: list[float]) -> list[float]:
    return [t / b for t, b in zip(top, bottom, strict=True)]


def metrics_from(
    samples: dict[str, dict[str, list[float]]], *, count: int, notes: Sequence[str] = ()
) -> list[Metric]:
    """The case's metrics from :func:`measure`'s samples (sides missing there are left out)."""
    out: list[Metric] = []

    def add(side: str, figure: str, name: str, note: str | None = None) -> None:
        if side in samples:
            out.append(Metric(name=name, unit="µs", samples=samples[side][figure], note=note))

    def ratio(
        top: str, bottom: str, name: str, *, figure: str = "seconds", target: Target | None = None
    ) -> None:
        if top in samples and bottom in samples:
            values = ratios(samples[top][figure], samples[bottom][figure])
            note = "per repetition" + (", CPU time" if figure == "cpu" else "")
            out.append(Metric(name=name, unit="x", samples=values, target=target, note=note))

    setup = f"{count:,} requests a pass, concurrency {CONCURRENCY}, each side its own process"
    add("capacity", "seconds", "server capacity µs/request", "bare asyncio client, no decode")
    add("raw-openai", "server_cpu", "server CPU µs/request (raw aiohttp pass)", "its own process")
    add("raw-openai", "seconds", "openai: raw aiohttp µs/request", setup)
    add("runner-openai", "seconds", "openai: runner µs/request", RUNNER_DOES)
    add("sdk-openai", "seconds", "openai: openai SDK µs/request", "AsyncOpenAI; no metrics, no log")
    add("litellm-openai", "seconds", "openai: litellm Router µs/request", "no metrics, no log")
    ratio(
        "runner-openai",
        "raw-openai",
        "ratio runner/raw aiohttp",
        target=Target(op="<=", value=1.25, text="runner within 1.25x of raw aiohttp over HTTP"),
    )
    ratio(
        "sdk-openai",
        "runner-openai",
        "ratio openai SDK/runner",
        target=Target(op=">=", value=15, text="the openai SDK takes at least 15x runner's time"),
    )
    ratio(
        "litellm-openai",
        "runner-openai",
        "ratio litellm/runner",
        target=Target(op=">=", value=30, text="LiteLLM over HTTP takes at least 30x runner's time"),
    )
    add("raw-openai", "cpu", "openai: raw aiohttp CPU µs/request", "client process, all threads")
    add("runner-openai", "cpu", "openai: runner CPU µs/request", "client process, all threads")
    ratio("runner-openai", "raw-openai", "ratio runner/raw aiohttp, CPU", figure="cpu")
    # runner no longer uses aiohttp for provider calls, so raw aiohttp is a
    # hand-written baseline, not runner's floor; the bare protocol client is.
    add("capacity", "cpu", "bare client CPU µs/request", "no decode, nothing kept")
    ratio("runner-openai", "capacity", "ratio runner/bare client")
    ratio("runner-openai", "capacity", "ratio runner/bare client, CPU", figure="cpu")
    for wire in ("anthropic", "gemini"):
        add(f"raw-{wire}", "seconds", f"{wire}: raw aiohttp µs/request")
        add(f"runner-{wire}", "seconds", f"{wire}: runner µs/request")
        ratio(f"runner-{wire}", f"raw-{wire}", f"{wire}: ratio runner/raw aiohttp")
        ratio(
            f"runner-{wire}", f"raw-{wire}", f"{wire}: ratio runner/raw aiohttp, CPU", figure="cpu"
        )
    if notes and out:
        first = out[0]
        out[0] = Metric(
            name=first.name,
            unit=first.unit,
            samples=first.samples,
            note="; ".join([*([first.note] if first.note else []), *notes]),
        )
    return out


def run(settings: Settings) -> Sequence[Metric]:
    count = 4_000 if settings.full else 2_000
    sides, notes = available(ORDER)
    return metrics_from(measure(settings, count=count, sides=sides), count=count, notes=notes)


CASE = Case(
    name="http",
    title="over HTTP: runner vs raw aiohttp, openai SDK, LiteLLM (local server)",
    run=run,
)
