"""Support for the shared-dedup tests: asking a router the same question many times at once,
reading what each caller was told, counting the flight claims Redis served, and listing the
flight keys it holds."""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import orjson
import trio
from support_routing import sse_payloads, user

from engine.core.redis_address import RedisAddress
from engine.stores.redis import Redis, open_redis

__all__ = ["PROMPT", "Answer", "answer_text", "ask", "burst", "claims", "flight_keys",
           "lead_ttl", "said"]

PROMPT = "Tell me a story about a lighthouse keeper and a very patient cat"

Answer = tuple[httpx.Response, str]


async def ask(http: httpx.AsyncClient, url: str, *, stream: bool = False,
              key: str | None = None) -> Answer:
    """One chat completion of :data:`PROMPT` at router ``url``, read to its end."""
    body: dict[str, Any] = {"model": "auto", "messages": user(PROMPT), "stream": stream}
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with http.stream("POST", url + "/v1/chat/completions", json=body,
                           headers=headers) as response:
        text = (await response.aread()).decode()
    return response, text


async def burst(http: httpx.AsyncClient, urls: Sequence[str], n: int, **kwargs: Any
                ) -> list[Answer]:
    """``n`` requests at once, dealt round-robin over the routers at ``urls``."""
    out: list[Answer] = []

    async def one(url: str) -> None:
        out.append(await ask(http, url, **kwargs))

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, urls[i % len(urls)])
    return out


def said(text: str) -> list[Any]:
    """What a streamed answer says, in order: its deltas, finish reasons, error codes and
    ``[DONE]`` (not its ids, which are each request's own)."""
    out: list[Any] = []
    for payload in sse_payloads(text):
        if payload == "[DONE]":
            out.append(payload)
        elif "error" in payload:
            out.append(("error", payload["error"].get("code")))
        else:
            for choice in payload["choices"]:
                out.append((choice["delta"].get("content"), choice.get("finish_reason")))
    return out


def answer_text(text: str) -> str:
    """A JSON chat completion's first choice's text."""
    content: str = orjson.loads(text)["choices"][0]["message"]["content"]
    return content


def _inspecting(redis_url: str) -> AbstractAsyncContextManager[Redis]:
    """A client for a test's look at the Redis at ``redis_url``, with time to connect and
    answer on a loaded machine (the product's client gives a Redis 0.5 s to connect and
    0.25 s to answer, then serves from local state: a test reading Redis cannot)."""
    return open_redis(RedisAddress.from_url(redis_url), timeout=10, connect_timeout=10)


async def claims(redis_url: str) -> int:
    """How many flight claims (``SET``, in the claim script) the Redis at ``redis_url`` has
    served so far (while a test runs no other ``SET`` happens: the dashboard's recent
    requests, published every second, and a follower's mark on the flight it follows go with
    ``PSETEX``)."""
    async with _inspecting(redis_url) as client:
        info = await client.call("INFO", "commandstats")
    assert isinstance(info, bytes)
    found = re.search(rb"cmdstat_set:calls=(\d+)", info)
    return int(found.group(1)) if found else 0


async def flight_keys(redis_url: str) -> list[str]:
    """Every in-flight dedup key in the Redis at ``redis_url`` (``llmr:flight:...``), by the
    part of its name after the flight's key: ``lead``, ``followed``, ``events:<token>``."""
    async with _inspecting(redis_url) as client:
        keys = await client.call("KEYS", "llmr:flight:*")
    assert isinstance(keys, list)
    return sorted(key.decode().split("}:", 1)[1] for key in keys)


async def lead_ttl(redis_url: str) -> int:
    """The milliseconds left on the one flight lead in the Redis at ``redis_url``."""
    async with _inspecting(redis_url) as client:
        (key,) = await client.call("KEYS", "llmr:flight:*:lead")  # type: ignore[misc]
        left = await client.call("PTTL", key)
    assert isinstance(left, int)
    return left
