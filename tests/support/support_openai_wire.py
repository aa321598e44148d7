"""What the OpenAI wire tests share: the provider codec, an SDK client over a mock transport,
the stream decoder driven at chosen read boundaries, and a call to the fake upstream.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import httpx
import openai

from engine.messages import ChatRequest, Event, Message, TextPart, Tool
from engine.testing.fake_upstream import FakeUpstream
from engine.wire.providers import OpenAIProvider

__all__ = [
    "LOGPROB",
    "PROVIDER",
    "QUESTION",
    "SDK_MESSAGES",
    "WEATHER",
    "decode",
    "exchange",
    "json_response",
    "sdk_client",
]


PROVIDER = OpenAIProvider()


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


LOGPROB = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}


def decode(data: bytes, cuts: list[int] | None = None) -> list[Event]:
    decoder = PROVIDER.stream_decoder()
    bounds = [0, *sorted(cuts or []), len(data)]
    events: list[Event] = []
    for start, end in pairwise(bounds):
        events += decoder.feed(data[start:end])
    return events + decoder.close()


def sdk_client(handler: Callable[[httpx.Request], httpx.Response]) -> openai.OpenAI:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return openai.OpenAI(http_client=http, base_url="http://router/v1", api_key="x", max_retries=0)


def json_response(body: bytes, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"content-type": "application/json"})


SDK_MESSAGES: Any = [
    {"role": "system", "content": "be nice"},
    {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
]


async def exchange(fake: FakeUpstream, request: ChatRequest, *, stream: bool) -> httpx.Response:
    call = PROVIDER.build_call(
        request, model="m", base_url=fake.base_url("b", "openai"), api_key="k", stream=stream
    )
    async with httpx.AsyncClient() as client:
        response = await client.post(call.url, headers=call.headers, content=call.body)
    return response


QUESTION = ChatRequest(messages=(Message("user", (TextPart("how are you"),)),), tools=(Tool("f"),))
