"""The OpenAI and Anthropic wire formats, both directions: the inbound protocols clients
speak, and the providers' codecs the upstream client drives."""

from .anthropic.count import parse_count_request, render_count
from .protocols import ANTHROPIC, OPENAI, Encoder, WireProtocol
from .providers import Provider, StreamDecoder, provider_for
from .schema import ROUTER_CACHE, Anything, Fields, Flag, Num, Text, to_schema
from .sse import SSEDecoder, decode_events

__all__ = [
    "ANTHROPIC",
    "OPENAI",
    "ROUTER_CACHE",
    "Anything",
    "Encoder",
    "Fields",
    "Flag",
    "Num",
    "Provider",
    "SSEDecoder",
    "StreamDecoder",
    "Text",
    "WireProtocol",
    "decode_events",
    "parse_count_request",
    "provider_for",
    "render_count",
    "to_schema",
]
