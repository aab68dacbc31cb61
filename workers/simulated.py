"""The simulated provider: no network, deterministic, scriptable.

It plays the part httpx's ``MockTransport`` plays for httpx: ``make run``, the
tests and the benchmarks use it.  Given the same ``seed``, task id and attempt
number it makes the same choices (latency, fault, text) whatever the
scheduling order.  Faults come from ``failure_rate`` over ``failure_codes``,
with ``retry_after`` as the hint on ``rate_limited``/``overloaded``; tests can
also pass a ``script`` that decides each attempt's outcome.

Waiting is the one thing a simulated call does, so its cost is the
provider's, not runner's: on asyncio (with the default ``sleep``) calls that
end within the same millisecond share one loop timer
(:class:`SharedWakeups`), instead of one timer each in the loop's heap,
whose ordering is done by Python-level comparisons; at 1,000 or 5,000 calls
in flight that heap was a large part of the benchmarks' per-task cost.
A call so ends at most a millisecond after its latency.  On trio, or with an
injected ``sleep``, each call sleeps on its own.
"""

from __future__ import annotations

import asyncio
import math
import random
import types
import zlib
from collections.abc import Awaitable, Callable, Generator
from typing import cast

import anyio
import anyio.lowlevel
from msgspec import Struct

from workers._base import CompletionRequest, CompletionResponse
from workers._errors import ERROR_CODES, ErrorCode, ProviderError
from workers._settings import ProviderConfig
from workers._types import FinishReason, Usage

_HINTED: frozenset[str] = frozenset({"rate_limited", "overloaded"})


class Fault(Struct, frozen=True, kw_only=True):
    """A scripted failure: the code, the provider's retry-after hint, a delay first."""

    code: ErrorCode
    retry_after: float | None = None
    latency_ms: float = 0.0


class Success(Struct, frozen=True, kw_only=True):
    """A scripted success after ``latency_ms``."""

    latency_ms: float = 0.0


#: Decides one attempt; ``None`` means "behave as configured".
Script = Callable[[CompletionRequest], Fault | Success | None]


class SharedWakeups:
    """Sleeps on asyncio that share one loop timer per millisecond they end in.

    Each sleeper waits on a plain future in its millisecond's list; one
    ``call_at`` per list wakes them all, in the order they began.  A
    cancelled sleeper's future is cancelled with it and skipped at the wake.
    Bound to one event loop at a time: a new loop (a later ``anyio.run``)
    takes over once the old one is closed; a second loop running while the
    first still has sleepers gets plain ``asyncio.sleep``.
    """

    __slots__ = ("_lists", "_loop")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Waiting futures by the millisecond (loop time) they end in.
        self._lists: dict[int, list[asyncio.Future[None]]] = {}

    def sleep(self, loop: asyncio.AbstractEventLoop, seconds: float) -> Awaitable[None]:
        """Sleep at least ``seconds`` (at most a millisecond more) on ``loop``, the running one.

        Returns the future to await, not a coroutine: with thousands of calls
        in flight every object alive per call is one more for the garbage
        collector to walk.
        """
        if loop is not self._loop:
            if self._lists and self._loop is not None and not self._loop.is_closed():
                return asyncio.sleep(seconds)
            self._loop = loop
            self._lists = {}
        tick = math.ceil((loop.time() + seconds) * 1000)
        waiting = self._lists.get(tick)
        if waiting is None:
            waiting = self._lists[tick] = []
            loop.call_at(tick / 1000, self._wake, tick)
        future: asyncio.Future[None] = loop.create_future()
        waiting.append(future)
        return future

    def _wake(self, tick: int) -> None:
        for future in self._lists.pop(tick, ()):
            if not future.done():
                future.set_result(None)


@types.coroutine
def _yield() -> Generator[None, None, None]:
    """One turn of the event loop: ``asyncio.sleep(0)`` without its outer coroutine."""
    yield


def estimate_tokens(text: str) -> int:
    """Roughly four characters a token, as providers' own rules of thumb say."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


class SimulatedProvider:
    """A provider that answers from memory after a configured delay."""

    def __init__(
        self,
        config: ProviderConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        script: Script | None = None,
    ) -> None:
        for code in config.failure_codes:
            if code not in ERROR_CODES:
                raise ValueError(f"unknown failure code {code!r}")
        self._config = config
        self._sleep = sleep
        # Only the default sleep is replaced by shared timers: an injected one
        # (a test's fake clock) is called as given.
        self._wakeups = SharedWakeups() if sleep is anyio.sleep else None
        self._script = script
        self._mean = config.latency_ms.mean
        self._jitter = config.latency_ms.jitter
        self._codes = cast(tuple[ErrorCode, ...], config.failure_codes)
        # With no jitter, faults or script nothing random is needed: every
        # attempt just waits the fixed latency (none at all when it is 0).
        # The benchmarks measure runner's overhead through this path, so it
        # must not seed a Random per attempt.
        self._plain = script is None and self._jitter == 0 and config.failure_rate == 0

    @property
    def id(self) -> str:
        return self._config.id

    @property
    def type(self) -> str:
        return "simulated"

    @property
    def model(self) -> str:
        return self._config.model

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        if self._plain:
            if self._mean > 0:
                await self._wait(self._mean / 1000)
            elif asyncio.events._get_running_loop() is not None:
                # What asyncio.sleep(0) (anyio's checkpoint on asyncio, after a
                # backend lookup) comes down to: one bare yield to the loop.
                await _yield()
            else:
                await anyio.lowlevel.checkpoint()
            return self._answer(request)
        rng = random.Random(
            zlib.crc32(f"{request.task_id}\0{request.attempt}".encode()) ^ self._config.seed
        )
        outcome = self._script(request) if self._script is not None else None
        if outcome is None:
            latency = self._mean + (rng.uniform(-self._jitter, self._jitter) if self._jitter else 0)
            fault = None
            if self._config.failure_rate and rng.random() < self._config.failure_rate:
                code = rng.choice(self._codes)
                hint = self._config.retry_after if code in _HINTED else None
                fault = Fault(code=code, retry_after=hint)
        else:
            latency = outcome.latency_ms
            fault = outcome if isinstance(outcome, Fault) else None
        if latency > 0:
            await self._wait(latency / 1000)
        else:
            await anyio.lowlevel.checkpoint()
        if fault is not None:
            raise ProviderError(
                fault.code,
                f"simulated {fault.code}",
                provider=self.id,
                retry_after=fault.retry_after,
            )
        return self._answer(request)

    def _wait(self, seconds: float) -> Awaitable[None]:
        wakeups = self._wakeups
        if wakeups is not None:
            # None under trio (no asyncio loop runs in this thread).
            loop = asyncio.events._get_running_loop()
            if loop is not None:
                return wakeups.sleep(loop, seconds)
        return self._sleep(seconds)

    def _answer(self, request: CompletionRequest) -> CompletionResponse:
        # estimate_tokens inlined (once per call on the benchmarks' path):
        # (n + 3) // 4 is ceil(n / 4), 0 for an empty text and at least 1 otherwise.
        messages = request.messages
        prompt = messages[-1].content if messages else ""
        text = f"[simulated {self._config.model}] reply to: {prompt[:120]}"
        finish: FinishReason = "stop"
        output_tokens = (len(text) + 3) // 4
        cap = request.parameters.max_tokens
        if cap is not None and output_tokens > cap:
            text = text[: cap * 4]
            output_tokens = cap
            finish = "length"
        system = request.system
        input_tokens = (len(system) + 3) // 4 if system else 0
        for m in messages:
            input_tokens += (len(m.content) + 3) // 4
        return CompletionResponse(
            text=text,
            finish_reason=finish,
            usage=Usage(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                total_tokens=input_tokens + output_tokens,
            ),
            model=self._config.model,
            response_id=f"sim-{request.task_id}-{request.attempt}",
        )

    async def check_credentials(self) -> None:
        """Nothing to check: the simulated provider needs no key."""
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()
