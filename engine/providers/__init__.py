"""Upstream provider wire formats (sans-IO codecs), by the config's ``provider`` name."""

from __future__ import annotations

from .anthropic import AnthropicProvider
from .base import Provider, StreamDecoder, UpstreamCall
from .openai import OpenAIProvider

__all__ = [
    "AnthropicProvider",
    "OllamaProvider",
    "OpenAIProvider",
    "Provider",
    "StreamDecoder",
    "UpstreamCall",
    "provider_for",
]


class OllamaProvider(OpenAIProvider):
    """Ollama through its OpenAI-compatible endpoint: ``base_url`` is the server root."""

    def build_call(self, request, *, model, base_url, api_key, stream):  # type: ignore[no-untyped-def]
        return super().build_call(
            request, model=model, base_url=base_url + "/v1", api_key=api_key, stream=stream
        )


def provider_for(name: str) -> Provider:
    """The codec for a config ``provider`` value (already validated by the config)."""
    return {"anthropic": AnthropicProvider, "openai": OpenAIProvider, "ollama": OllamaProvider}[
        name
    ]()
