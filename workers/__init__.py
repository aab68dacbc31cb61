"""Provider adapters: how runner talks to LLM providers.

Layout: ``_base`` (the normalised request/response and the ``Provider``
protocol), ``_http`` (the shared aiohttp session and the one place where HTTP
and aiohttp failures become ``ProviderError``), then one module per provider:
``openai`` (also any OpenAI-compatible server), ``anthropic``, ``google`` and
``simulated`` (no network; scriptable latency and faults).
"""

from __future__ import annotations

from workers._base import CompletionRequest, CompletionResponse, Provider
from workers._factory import open_provider

__all__ = ["CompletionRequest", "CompletionResponse", "Provider", "open_provider"]
