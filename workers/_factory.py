"""Build a provider adapter from its config entry."""

from __future__ import annotations

from workers._base import Provider
from workers._settings import ProviderConfig


def open_provider(config: ProviderConfig) -> Provider:
    """The adapter for ``config.type``; HTTP adapters open their session lazily."""
    if config.type == "simulated":
        from workers.simulated import SimulatedProvider

        return SimulatedProvider(config)
    if config.type == "openai":
        from workers.openai import OpenAIProvider

        return OpenAIProvider(config)
    if config.type == "anthropic":
        from workers.anthropic import AnthropicProvider

        return AnthropicProvider(config)
    from workers.google import GoogleProvider

    return GoogleProvider(config)
