"""Support for the routing-side integration tests: configs over the fake upstream, a running
router, and a small HTTP client for it that keeps every response it saw.

Every backend in these configs is one label on the shared fake upstream, named after the
model, so ``fake.script("a1", ...)`` scripts the backend of the model named ``a1``. Provider
keys are long and unique (:func:`provider_key`) so a leak is found by a plain substring scan of
:attr:`RouterClient.seen`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import trio
import trio.testing
from router_harness import RunningRouter, make_config, open_router

from engine.core.routing.scoring import score_request
from engine.messages import ChatRequest, Message, TextPart
from engine.testing.fake_upstream import FakeUpstream
from engine.wire.sse import decode_events

__all__ = [
    "RouterClient",
    "Seen",
    "model_entry",
    "open_router_client",
    "provider_key",
    "skip_ahead",
    "sse_payloads",
    "user",
    "wait_for",
]


def provider_key(name: str) -> str:
    """The provider API key configured for model ``name``: unique, so a leak is greppable."""
    return f"sk-prov-{name}-7f3a9c1e5b2d"


def model_entry(
    fake: FakeUpstream, name: str, *, tier: int, provider: str = "openai", **extra: Any
) -> dict[str, Any]:
    """A ``models:`` entry served by the fake's backend ``name``; ``extra`` overrides fields."""
    entry: dict[str, Any] = {
        "name": name,
        "provider": provider,
        "model": f"up-{name}",
        "base_url": fake.base_url(name, provider),
        "api_key": provider_key(name),
        "tier": tier,
    }
    entry.update(extra)
    return entry


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@dataclass
class Seen:
    """One response the client received (body as text; streams once fully read)."""

    status: int
    headers: httpx.Headers
    text: str


@dataclass
class RouterClient:
    """An ``httpx`` client for a running router that records every response."""

    router: RunningRouter
    http: httpx.AsyncClient
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.router.url

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, self.url + path, **kwargs)
        self.seen.append(Seen(response.status_code, response.headers, response.text))
        return response

    async def chat(
        self, text: str = "hello", *, model: str = "auto", **fields: Any
    ) -> httpx.Response:
        """``POST /v1/chat/completions`` with one user message (OpenAI protocol)."""
        body = {"model": model, "messages": user(text), **fields}
        return await self.request("POST", "/v1/chat/completions", json=body)

    async def messages(
        self, text: str = "hello", *, model: str = "auto", **fields: Any
    ) -> httpx.Response:
        """``POST /v1/messages`` with one user message (Anthropic protocol)."""
        body = {"model": model, "max_tokens": 64, "messages": user(text), **fields}
        return await self.request("POST", "/v1/messages", json=body)

    async def stream_chat(
        self, text: str = "hello", *, model: str = "auto"
    ) -> tuple[httpx.Response, list[Any]]:
        """A streamed chat completion read to its end: the response and its SSE payloads.

        Raw httpx rather than the ``openai`` SDK: the SDK leaves its inner async generators to
        the garbage collector after ``[DONE]``, which trio reports as a ResourceWarning.
        """
        body = {
            "model": model,
            "messages": user(text),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with self.http.stream(
            "POST", self.url + "/v1/chat/completions", json=body
        ) as response:
            raw = (await response.aread()).decode()
        self.seen.append(Seen(response.status_code, response.headers, raw))
        return response, sse_payloads(raw)

    async def backends(self) -> dict[str, dict[str, Any]]:
        """``GET /v1/backends`` keyed by backend name."""
        response = await self.request("GET", "/v1/backends")
        assert response.status_code == 200
        return {entry["name"]: entry for entry in response.json()}

    async def stats(self) -> dict[str, Any]:
        response = await self.request("GET", "/stats")
        assert response.status_code == 200
        data: dict[str, Any] = response.json()
        return data


def sse_payloads(raw: str) -> list[Any]:
    """The JSON ``data:`` payloads of an SSE body, in order; ``[DONE]`` is kept as a string."""
    return [
        data if data == "[DONE]" else orjson.loads(data)
        for _, data in decode_events(raw.encode())
        if data
    ]


@asynccontextmanager
async def open_router_client(
    models: list[dict[str, Any]],
    *,
    environ: Mapping[str, str] | None = None,
    **sections: Any,
) -> AsyncIterator[RouterClient]:
    """Serve a router configured with ``models`` (and any other ``sections``) and a client."""
    # Routing tests repeat prompts and count upstream calls: no cache unless a test asks.
    sections = {"cache": {"enabled": False}} | sections
    config = make_config({"models": models, **sections}, environ=environ)
    async with open_router(config) as router, httpx.AsyncClient(timeout=10) as http:
        yield RouterClient(router, http)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 60.0, poll: float = 0.005
) -> None:
    """Poll an async ``predicate`` until it is true (the caller's bounded wait)."""
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(poll)


async def skip_ahead(clock: trio.testing.MockClock, seconds: float) -> None:
    """Move the test's clock (``jumpable_clock``) ``seconds`` forward and let everything that
    was waiting for that time run. Only while no call is under way: every deadline within the
    jump passes at once (an idle keep-alive connection's too, which its client then drops)."""
    clock.jump(seconds)
    await trio.testing.wait_all_tasks_blocked()


def prompt_scoring(score: int) -> str:
    """A one-message prompt the heuristic scores exactly ``score`` (20-50)."""
    for n in range(4000):
        text = "Please analyze this: " + "word " * n
        ask = ChatRequest(messages=(Message("user", (TextPart(text),)),))
        if score_request(ask).total == score:
            return text
    raise AssertionError(f"no prompt scores {score}")
