"""Upstream provider wire formats (sans-IO codecs), by the config's ``provider`` name."""

from __future__ import annotations

from collections.abc import Callable

from engine.messages import ChatRequest
from engine.wire.anthropic.upstream import AnthropicProvider
from engine.wire.openai.upstream import OpenAIProvider

from .base import Provider, StreamDecoder, UpstreamCall, refuse_unsupported

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
    """Ollama through its OpenAI-compatible endpoint: ``base_url`` is the server root.

    Ollama ignores ``n``, ``logit_bias`` and ``verbosity``: ``n > 1`` is answered by ``n``
    calls, and requests with the others go to other backends.
    """

    supports = OpenAIProvider.supports - {"logit_bias", "verbosity"}
    native_n = False

    def build_call(
        self,
        request: ChatRequest,
        *,
        model: str,
        base_url: str,
        api_key: str | None,
        stream: bool,
    ) -> UpstreamCall:
        refuse_unsupported(request, self.supports, "Ollama")
        return super().build_call(
            request, model=model, base_url=base_url.rstrip("/") + "/v1", api_key=api_key,
            stream=stream,
        )


def provider_for(name: str) -> Provider:
    """The codec for a config ``provider`` value (already validated by the config)."""
    codecs: dict[str, Callable[[], Provider]] = {
        "anthropic": AnthropicProvider,
        "openai": OpenAIProvider,
        "ollama": OllamaProvider,
    }
    return codecs[name]()
