"""Upstream provider wire formats (sans-IO codecs), by the config's ``provider`` name.

Each :class:`~engine.wire.base.Provider` here puts one format's pieces together: the request
it writes (``engine.wire.<format>.request``), the answer and stream it reads
(``engine.wire.<format>.response``) and the errors it reads (``engine.wire.<format>.errors``),
plus the HTTP call around them. ``engine.runtime.upstream`` does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from engine.errors import RequestInvalid
from engine.frozen import frozen_constructor
from engine.messages import ChatRequest, ChatResult
from engine.wire.anthropic import errors as anthropic_errors
from engine.wire.anthropic import request as anthropic_request
from engine.wire.anthropic import response as anthropic_response
from engine.wire.anthropic.response import AnthropicStreamDecoder
from engine.wire.openai import errors as openai_errors
from engine.wire.openai import request as openai_request
from engine.wire.openai import response as openai_response
from engine.wire.openai.response import OpenAIStreamDecoder

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

ANTHROPIC_VERSION = "2023-06-01"

_new_upstream_call = frozen_constructor(UpstreamCall)


class OpenAIProvider:
    """The :class:`~engine.wire.base.Provider` for OpenAI-compatible servers
    (``POST {base_url}/chat/completions``): OpenAI, vLLM and every other such server.

    ``top_k`` is not part of the chat-completions API (OpenAI rejects it, others ignore it),
    so a request with it is routed elsewhere.
    """

    __slots__ = ()
    supports: ClassVar[frozenset[str]] = frozenset(
        {"frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "reasoning_effort",
         "verbosity", "document", "file_id", "file_data", "web_search_options"}
    )
    native_n: ClassVar[bool] = True
    # The output limit's name, if the server knows one only (None: as the client named it).
    max_tokens_field: ClassVar[str | None] = None

    def build_call(
        self,
        request: ChatRequest,
        *,
        model: str,
        base_url: str,
        api_key: str | None,
        stream: bool,
    ) -> UpstreamCall:
        """The ``POST {base_url}/chat/completions`` for ``request``.

        Raises:
            RequestInvalid: the request uses a feature outside ``supports``.
        """
        refuse_unsupported(request, self.supports, "OpenAI-compatible")
        headers = {"content-type": "application/json"}
        if api_key is not None:
            headers["authorization"] = f"Bearer {api_key}"
        return _new_upstream_call(
            url=f"{base_url.rstrip('/')}/chat/completions",
            headers=headers,
            body=openai_request.render_request(request, model=model, stream=stream,
                                               max_tokens_field=self.max_tokens_field),
        )

    def parse_result(self, body: bytes) -> ChatResult:
        """A ``chat.completion`` object: every choice, in ``index`` order.

        Raises:
            UpstreamError: the body is not a chat completion.
        """
        return openai_response.parse_result(body)

    def stream_decoder(self) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()

    def error_message(self, status: int, body: bytes) -> str:
        return openai_errors.error_message(status, body)


class OllamaProvider(OpenAIProvider):
    """Ollama through its OpenAI-compatible endpoint: ``base_url`` is the server root.

    Ollama ignores ``n``, ``logit_bias`` and ``verbosity``, reads no files (PDFs, OpenAI file
    ids) and has no web search: ``n > 1`` is answered by ``n`` calls, and requests with the
    others go to other backends.
    """

    supports = OpenAIProvider.supports - {"logit_bias", "verbosity", "document", "file_id",
                                          "file_data", "web_search_options"}
    native_n = False
    max_tokens_field = "max_tokens"  # what Ollama's OpenAI-compatible endpoint reads

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


class AnthropicProvider:
    """The :class:`~engine.wire.base.Provider` for Anthropic's ``POST /v1/messages``.

    Anthropic has no ``n`` (the caller makes ``n`` calls), and no penalties, ``logit_bias``,
    ``logprobs`` or ``reasoning_effort`` (``supports`` says so, and routing sends requests with
    them elsewhere).
    """

    __slots__ = ()
    supports: ClassVar[frozenset[str]] = frozenset(
        {"top_k", "thinking", "effort", "tool_result_images", "document",
         "document_url"}
    )
    native_n: ClassVar[bool] = False

    def build_call(
        self,
        request: ChatRequest,
        *,
        model: str,
        base_url: str,
        api_key: str | None,
        stream: bool,
    ) -> UpstreamCall:
        """The HTTP call for ``request`` sent to Anthropic model id ``model``.

        Raises:
            RequestInvalid: the request asks for what Anthropic cannot do (``n > 1``, a feature
                outside ``supports``), or an assistant tool call's arguments are not a JSON
                object.
        """
        refuse_unsupported(request, self.supports, "Anthropic")
        if request.n > 1:
            raise RequestInvalid("n > 1 is not supported by Anthropic models", param="n")
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if api_key is not None:
            headers["x-api-key"] = api_key
        if request.anthropic_beta:
            headers["anthropic-beta"] = request.anthropic_beta  # the client's, as it sent it
        return UpstreamCall(
            url=f"{base_url.rstrip('/')}/v1/messages",
            headers=headers,
            body=anthropic_request.render_request(request, model=model, stream=stream),
        )

    def parse_result(self, body: bytes) -> ChatResult:
        """A complete Messages API response; ``UpstreamError`` if it cannot be decoded."""
        return anthropic_response.parse_result(body)

    def stream_decoder(self) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder()

    def error_message(self, status: int, body: bytes) -> str:
        return anthropic_errors.error_message(status, body)


def provider_for(name: str) -> Provider:
    """The codec for a config ``provider`` value (already validated by the config)."""
    codecs: dict[str, Callable[[], Provider]] = {
        "anthropic": AnthropicProvider,
        "openai": OpenAIProvider,
        "ollama": OllamaProvider,
    }
    return codecs[name]()
