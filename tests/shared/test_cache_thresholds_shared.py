"""Per-tenant cache thresholds shared through Redis: two routers on one redis-server; a bad
report on a cache hit in one moves the tenant's threshold in both; while Redis is down a
report still answers 200 and moves the local copy; when Redis is back (restarted empty) the
local values are written back, so a router started then sees them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from support_redis import RedisServer
from support_routing import RouterClient, model_entry, open_router_client, wait_for

from engine.testing.fake_upstream import FakeUpstream

QUESTION = "What is the capital of France?"
PARAPHRASE = "What's France's capital?"


@asynccontextmanager
async def router(fake: FakeUpstream, redis: RedisServer) -> AsyncIterator[RouterClient]:
    async with open_router_client(
            [model_entry(fake, "m", tier=1)],
            cache={"enabled": True, "tenant_threshold": {"step": 0.05}},
            state={"redis_url": redis.url}) as client:
        yield client


async def hit_id(client: RouterClient) -> str:
    await client.chat(QUESTION)
    answer = await client.chat(PARAPHRASE)
    assert answer.headers["x-llm-router-cache"] == "HIT", answer.text
    return answer.headers["x-request-id"]


async def rate(client: RouterClient, request_id: str) -> Any:
    response = await client.request("POST", "/v1/feedback",
                                    json={"request_id": request_id, "quality": 0})
    assert response.status_code == 200, response.text
    return response.json()["cache_threshold"]


async def threshold(client: RouterClient) -> float:
    response = await client.request("GET", "/v1/routing")
    assert response.status_code == 200, response.text
    value: float = response.json()["cache"]["yours"]["threshold"]
    return value


async def until(client: RouterClient, value: float) -> None:
    async def there() -> bool:
        return await threshold(client) == pytest.approx(value)
    await wait_for(there, poll=0.01)


async def test_a_report_in_one_router_moves_the_threshold_in_both(
        fake_upstream: FakeUpstream, redis_server: RedisServer) -> None:
    async with router(fake_upstream, redis_server) as a, \
            router(fake_upstream, redis_server) as b:
        request_id = await hit_id(a)
        assert (await rate(a, request_id))["new"] == pytest.approx(0.9)
        await until(b, 0.9)
        # b's own report steps from the shared value, not from its configured one
        assert (await rate(b, await hit_id(b)))["new"] == pytest.approx(0.95)
        await until(a, 0.95)


async def test_redis_down_moves_the_local_copy_and_resync_writes_it_back(
        fake_upstream: FakeUpstream, redis_server: RedisServer) -> None:
    async with router(fake_upstream, redis_server) as a:
        request_id = await hit_id(a)
        await rate(a, request_id)
        await until(a, 0.9)
        redis_server.kill()
        assert (await rate(a, request_id))["new"] == pytest.approx(0.95)
        assert await threshold(a) == pytest.approx(0.95)
        redis_server.start()  # empty: no persistence

        async def written_back() -> bool:
            async with router(fake_upstream, redis_server) as b:
                return await threshold(b) == pytest.approx(0.95)

        await wait_for(written_back, poll=0.2)
        assert await threshold(a) == pytest.approx(0.95)
