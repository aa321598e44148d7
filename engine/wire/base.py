"""What an upstream provider codec is: sans-IO translation between the canonical types and one
provider's wire format. The transport (``engine.runtime.upstream``) does the I/O around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from engine.errors import RequestInvalid
from engine.messages import ChatRequest, ChatResult, Event

__all__ = ["Provider", "StreamDecoder", "UpstreamCall", "refuse_unsupported"]


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One HTTP POST to send upstream."""

    url: str
    headers: dict[str, str]
    body: bytes


class StreamDecoder(Protocol):
    """Turns a provider's SSE bytes into canonical events, statefully.

    ``feed`` returns the events completed by a chunk of bytes; the last of a whole stream is a
    single :class:`~engine.messages.Finish` carrying the final usage. It raises
    :class:`~engine.errors.UpstreamError` when the provider sends an error event or
    undecodable data. ``close`` is called at end of input: it returns any events still held
    back and raises ``UpstreamError`` if the stream ended before it was complete. Error
    messages quote the upstream whole; the transport scrubs and shortens them.
    """

    def feed(self, data: bytes) -> list[Event]: ...

    def close(self) -> list[Event]: ...


class Provider(Protocol):
    """A provider wire format (``openai``, ``anthropic``, ...).

    ``supports`` names the optional request features (:meth:`ChatRequest.features`) it can
    serve; a request using any other is never routed to it. ``native_n`` says whether one call
    answers ``n > 1``; otherwise the caller makes ``n`` calls and merges their choices.
    """

    supports: ClassVar[frozenset[str]]
    native_n: ClassVar[bool]

    def build_call(
        self,
        request: ChatRequest,
        *,
        model: str,
        base_url: str,
        api_key: str | None,
        stream: bool,
    ) -> UpstreamCall:
        """The HTTP call for ``request`` sent to provider model id ``model``."""
        ...

    def parse_result(self, body: bytes) -> ChatResult:
        """A complete non-streaming response; ``UpstreamError`` if it cannot be decoded."""
        ...

    def stream_decoder(self) -> StreamDecoder: ...

    def error_message(self, status: int, body: bytes) -> str:
        """The provider's own description of an error response: its error type and message,
        whole. It is upstream text, so it may hold anything, a key included: the transport
        (``engine.runtime.upstream``) scrubs and shortens it before it goes anywhere."""
        ...


def refuse_unsupported(request: ChatRequest, supports: frozenset[str], provider: str) -> None:
    """Raise if ``request`` uses a feature outside ``supports``: routing never sends such a
    request to this provider, so this guards the codec against a caller that did.

    Raises:
        RequestInvalid: naming the first such parameter.
    """
    missing = sorted(request.features() - supports)
    if missing:
        raise RequestInvalid(
            f"{missing[0]} is not supported by {provider} models", param=missing[0]
        )
