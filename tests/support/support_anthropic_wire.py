"""What the Anthropic wire tests share: the provider codec, canonical messages in brief, and
an ``anthropic`` SDK client over a mock transport.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2  # the installed anthropic SDK is built on httpx2, and rejects httpx objects
import orjson

from engine.messages import ChatRequest
from engine.wire.providers import AnthropicProvider

__all__ = [
    "PROVIDER",
    "TOOLS",
    "body",
    "payload",
    "sdk_client",
]


PROVIDER = AnthropicProvider()


def payload(request: ChatRequest, **kwargs: Any) -> dict[str, Any]:
    options = {"model": "claude-x", "base_url": "https://api.example", "api_key": "k"}
    options.update(kwargs)
    options.setdefault("stream", False)
    return orjson.loads(PROVIDER.build_call(request, **options).body)


def body(**fields: Any) -> bytes:
    data: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    data.update(fields)
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


def sdk_client(respond: Any, seen: list[httpx2.Request] | None = None) -> anthropic.Anthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if seen is not None:
            seen.append(request)
        return respond(request)

    return anthropic.Anthropic(
        api_key="x",
        base_url="http://router.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


TOOLS = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]
