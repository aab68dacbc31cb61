"""The simulated provider: no network, deterministic, scriptable.

It plays the part httpx's ``MockTransport`` plays for httpx: ``make run``, the
tests and the benchmarks use it.  Given the same ``seed``, task id and attempt
number it makes the same choices (latency, fault, text) whatever the
scheduling order.  Faults come from ``failure_rate`` over ``failure_codes``,
with ``retry_after`` as the hint on ``rate_limited``/``overloaded``; tests can
also pass a ``script`` that decides each attempt's outcome.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Awaitable, Callable
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
                await self._sleep(self._mean / 1000)
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
            await self._sleep(latency / 1000)
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

    def _answer(self, request: CompletionRequest) -> CompletionResponse:
        prompt = request.messages[-1].content if request.messages else ""
        text = f"[simulated {self._config.model}] reply to: {prompt[:120]}"
        finish: FinishReason = "stop"
        output_tokens = estimate_tokens(text)
        cap = request.parameters.max_tokens
        if cap is not None and output_tokens > cap:
            text = text[: cap * 4]
            output_tokens = cap
            finish = "length"
        input_tokens = estimate_tokens(request.system or "") + sum(
            estimate_tokens(m.content) for m in request.messages
        )
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
