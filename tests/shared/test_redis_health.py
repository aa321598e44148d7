"""A router with ``state.redis_url``: ``/health`` says whether Redis answers, and a Redis that
is down at start, or dies and comes back mid-traffic, fails no request."""

from __future__ import annotations

import trio
from support_redis import RedisServer
from support_routing import RouterClient, model_entry, open_router_client, wait_for

from engine.testing.fake_upstream import FakeUpstream


async def health(client: RouterClient) -> dict[str, object]:
    answer = await client.request("GET", "/health")
    assert answer.status_code == 200
    body: dict[str, object] = answer.json()
    return body


async def test_health_follows_redis_and_requests_never_fail(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    models = [model_entry(fake_upstream, "m", tier=1)]
    async with open_router_client(models, state={"redis_url": redis_server.url}) as client:
        assert (await health(client))["redis"] == {"status": "ok", "url": redis_server.url}
        assert (await client.chat()).status_code == 200
        redis_server.kill()

        async def down() -> bool:
            assert (await client.chat()).status_code == 200
            body = await health(client)
            return body["status"] == "degraded" and body["redis"]["status"] == "down"  # type: ignore[index]

        await wait_for(down, poll=0.05)
        redis_server.start()

        async def up() -> bool:
            assert (await client.chat()).status_code == 200
            return (await health(client))["status"] == "ok"

        await wait_for(up, poll=0.1)


async def test_a_redis_down_at_start_is_not_an_outage(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    redis_server.kill()
    models = [model_entry(fake_upstream, "m", tier=1)]
    async with open_router_client(models, state={"redis_url": redis_server.url}) as client:
        body = await health(client)
        assert body["status"] == "degraded" and body["redis"]["status"] == "down"  # type: ignore[index]
        assert "error" in body["redis"]  # type: ignore[operator]
        for _ in range(5):
            assert (await client.chat()).status_code == 200
        redis_server.start()
        with trio.fail_after(10):
            while (await health(client))["status"] != "ok":
                await trio.sleep(0.1)
