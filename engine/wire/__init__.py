"""The OpenAI and Anthropic wire formats, both directions: the inbound protocols clients
speak, and the providers' codecs the upstream client drives."""

from .protocols import ANTHROPIC, OPENAI, Encoder, WireProtocol
from .providers import Provider, StreamDecoder, provider_for
from .sse import SSEDecoder, decode_events

__all__ = [
    "ANTHROPIC",
    "OPENAI",
    "Encoder",
    "Provider",
    "SSEDecoder",
    "StreamDecoder",
    "WireProtocol",
    "decode_events",
    "provider_for",
]
