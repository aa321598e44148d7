"""Two routers (in this process) sharing a Redis that is down when things happen: what each
found meanwhile - a backend rate-limited, feedback - reaches the other once Redis is back,
and no request fails in between."""

from __future__ import annotations

from typing import Any

from support_redis import RedisServer
from support_routing import RouterClient, model_entry, open_router_client, wait_for

from engine.testing.fake_upstream import Behaviour, FakeUpstream


def models(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [model_entry(fake, "cheap", tier=1, cost_per_1k_in=0.001),
            model_entry(fake, "dear", tier=1, cost_per_1k_in=0.01)]


async def routing(client: RouterClient) -> dict[str, Any]:
    answer = await client.request("GET", "/v1/routing")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


async def test_what_one_router_found_while_redis_was_down_reaches_the_other(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    fake = fake_upstream
    sections: dict[str, Any] = {"state": {"redis_url": redis_server.url},
                                "learned": {"min_samples": 3}}
    async with (open_router_client(models(fake), **sections) as a,
                open_router_client(models(fake), **sections) as b):
        redis_server.kill()
        fake.script("cheap", Behaviour(status=429, retry_after=300))
        assert (await a.chat()).headers["x-llm-router-model"] == "dear"
        for _ in range(3):
            answer = await a.request("POST", "/v1/feedback",
                                     json={"score": 0.28, "tier": 1, "quality": 0.95})
            assert answer.status_code == 200
            assert answer.json()["thresholds"]["tier1_max"] == 30  # nobody calibrates alone
        assert (await routing(a))["scope"] == "process"
        assert (await a.stats())["scope"] == "process"
        redis_server.start()  # empty

        async def b_caught_up() -> bool:
            cheap = (await b.backends())["cheap"]
            return bool(cheap["detail"] and cheap["detail"].startswith("rate limited"))

        await wait_for(b_caught_up, poll=0.05)
        for _ in range(3):
            assert (await b.chat()).headers["x-llm-router-model"] == "dear"
        assert len(fake.requests("cheap")) == 1

        async def calibrated_on_both() -> bool:
            states = [await routing(a), await routing(b)]
            return all(s["scope"] == "shared" and s["thresholds"]["tier1_max"] == 35
                       and s["feedback"]["total"] == 3 for s in states)

        await wait_for(calibrated_on_both, poll=0.05)

        async def totals_back() -> bool:
            stats = await b.stats()
            return bool(stats["scope"] == "shared" and stats["total_requests"] == 4)

        await wait_for(totals_back, poll=0.05)
        assert all(seen.status == 200 for seen in a.seen + b.seen)
