"""The response cache shared through Redis: two routers on one redis-server and one fake
upstream; what one stores is a hit on the other (counted at the fake upstream), tenants stay
apart, expiry and the byte budget hold across both, a router started later catches up, and a
Redis that dies and comes back fails no request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from support_redis import RedisServer
from support_routing import RouterClient, model_entry, open_router_client, wait_for

from engine.stores.redis import open_redis
from engine.testing.fake_upstream import FakeUpstream

QUESTION = "What is the capital of France?"
PARAPHRASE = "What's France's capital?"


@asynccontextmanager
async def router(fake: FakeUpstream, redis: RedisServer, **cache: Any
                 ) -> AsyncIterator[RouterClient]:
    models = [model_entry(fake, "m", tier=1)]
    async with open_router_client(models, cache={"enabled": True, **cache},
                                  state={"redis_url": redis.url}) as client:
        yield client


async def shared(client: RouterClient) -> dict[str, int]:
    counters: dict[str, int] = (await client.stats())["cache"]["shared"]
    return counters


async def until_received(client: RouterClient, count: int) -> None:
    """Wait (bounded) until ``client`` has filed ``count`` entries from other routers."""
    async def done() -> bool:
        return (await shared(client))["received"] >= count
    await wait_for(done, poll=0.01)


def content(answer: httpx.Response) -> str:
    text: str = answer.json()["choices"][0]["message"]["content"]
    return text


async def chat_as(client: RouterClient, tenant: str, text: str) -> httpx.Response:
    """A chat completion with another credential: another tenant."""
    return await client.request(
        "POST", "/v1/chat/completions", headers={"Authorization": f"Bearer {tenant}"},
        json={"model": "auto", "messages": [{"role": "user", "content": text}]})


def cache_header(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    return answer.headers["x-llm-router-cache"]


async def test_an_answer_on_one_router_is_a_hit_on_the_other(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    async with router(fake_upstream, redis_server) as a, \
            router(fake_upstream, redis_server) as b:
        assert cache_header(await a.chat(QUESTION)) == "MISS"
        await until_received(b, 1)
        hit = await b.chat(QUESTION)
        assert cache_header(hit) == "HIT"
        assert content(hit) == content(await a.chat(QUESTION))
        near = await b.chat(PARAPHRASE)
        assert cache_header(near) == "HIT"
        assert float(near.headers["x-llm-router-similarity"]) < 1
        # Another tenant (another credential) never sees the entry.
        other = await chat_as(b, "other-tenant", QUESTION)
        assert cache_header(other) == "MISS"
        assert len(fake_upstream.requests("m")) == 2
        # The stream shows B's entry to A as well: A answers the other tenant from cache.
        await until_received(a, 1)
        again = await chat_as(a, "other-tenant", QUESTION)
        assert cache_header(again) == "HIT"
        assert len(fake_upstream.requests("m")) == 2


async def test_a_streamed_answer_is_shared_and_replayed_as_a_stream(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    async with router(fake_upstream, redis_server) as a, \
            router(fake_upstream, redis_server) as b:
        response, first = await a.stream_chat(QUESTION)
        assert response.headers["x-llm-router-cache"] == "MISS"
        await until_received(b, 1)
        response, replay = await b.stream_chat(QUESTION)
        assert response.headers["x-llm-router-cache"] == "HIT"
        text = "".join(p["choices"][0]["delta"].get("content") or ""
                       for p in replay if isinstance(p, dict) and p["choices"])
        assert text == "".join(p["choices"][0]["delta"].get("content") or ""
                               for p in first if isinstance(p, dict) and p["choices"])
        assert len(fake_upstream.requests("m")) == 1


async def test_expiry_is_shared(fake_upstream: FakeUpstream, redis_server: RedisServer) -> None:
    async with router(fake_upstream, redis_server, ttl_sec=1.5) as a, \
            router(fake_upstream, redis_server, ttl_sec=1.5) as b:
        assert cache_header(await a.chat(QUESTION)) == "MISS"
        await until_received(b, 1)

        async def expired_on_b() -> bool:
            return await redis_keys(b, "llmr:cache:{*") == 0

        await wait_for(expired_on_b, poll=0.05)
        # Expired in Redis means expired in both processes (one wall clock, one expiry).
        assert cache_header(await b.chat(QUESTION)) == "MISS"
        assert len(fake_upstream.requests("m")) == 2


async def redis_keys(client: RouterClient, pattern: str) -> int:
    """How many keys match ``pattern`` in the router's Redis (through a fresh client)."""
    address = client.router.config.state.redis
    assert address is not None
    async with open_redis(address, timeout=10, connect_timeout=10) as redis:  # a test's look
        found = await redis.call("KEYS", pattern)
    assert isinstance(found, list)
    return len(found)


async def test_the_entry_budget_evicts_in_every_router(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    async with router(fake_upstream, redis_server, max_size=2) as a, \
            router(fake_upstream, redis_server, max_size=2) as b:
        assert cache_header(await a.chat("Who wrote Hamlet?")) == "MISS"
        assert cache_header(await a.chat("How tall is Mount Everest?")) == "MISS"
        await until_received(b, 2)
        # A served Hamlet last, so A's own LRU would keep it: the shared budget decides.
        assert cache_header(await a.chat("Who wrote Hamlet?")) == "HIT"
        assert cache_header(await b.chat("Why is the sky blue?")) == "MISS"

        async def evicted_on_a() -> bool:
            return (await shared(a))["evicted"] >= 1
        await wait_for(evicted_on_a, poll=0.01)
        assert cache_header(await b.chat("How tall is Mount Everest?")) == "HIT"
        assert cache_header(await a.chat("Who wrote Hamlet?")) == "MISS"
