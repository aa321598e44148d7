"""Online learning shared through Redis by two routers (in this process): what feedback on
one teaches, the other routes with; an admin reset on one resets both; reports made while
Redis is down are taught once it is back, and no request fails meanwhile."""

from __future__ import annotations

from typing import Any

from support_redis import RedisServer
from support_routing import RouterClient, model_entry, open_router_client, wait_for

from engine.testing.fake_upstream import FakeUpstream

HARD = "Which prime number follows the number seventeen?"
EASY = "Please say a warm hello to my dear old friend Anna for me today."
ADMIN = "admin-key-for-shared-learning-tests"


def models(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [model_entry(fake, "cheap", tier=1), model_entry(fake, "strong", tier=2)]


def sections(redis: RedisServer) -> dict[str, Any]:
    return {"state": {"redis_url": redis.url}, "server": {"api_keys": ["t"]},
            "learned": {"model": "builtin", "calibrate": False, "online_rate": 2.0,
                        "online_max_step": 2.0, "online_tolerance": 0.001}}


async def tier_of(client: RouterClient, prompt: str) -> tuple[str, int]:
    answer = await client.request("POST", "/v1/chat/completions",
                                  headers={"authorization": "Bearer t"},
                                  json={"model": "auto",
                                        "messages": [{"role": "user", "content": prompt}]})
    assert answer.status_code == 200, answer.text
    return answer.headers["x-llm-router-request-id"], int(answer.headers["x-llm-router-tier"])


async def report(client: RouterClient, request_id: str, quality: float,
                 other: float | None = None) -> dict[str, Any]:
    """Feedback on one answer; with ``other``, a comparison report."""
    body = {"request_id": request_id, "quality": quality}
    if other is not None:
        body["other_quality"] = other
    answer = await client.request("POST", "/v1/feedback",
                                  headers={"authorization": "Bearer t"}, json=body)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def learning(client: RouterClient) -> dict[str, Any]:
    answer = await client.request("GET", "/v1/routing", headers={"authorization": "Bearer t"})
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()["learning"]
    return state


async def teach(client: RouterClient, rounds: int) -> None:
    for _ in range(rounds):
        hard_id, _ = await tier_of(client, HARD)
        easy_id, _ = await tier_of(client, EASY)
        await report(client, hard_id, 0.0, other=1.0)
        await report(client, easy_id, 1.0, other=0.0)


async def test_what_one_router_learns_the_other_routes_with(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    settings = sections(redis_server)
    settings["server"]["admin_key"] = ADMIN
    async with (open_router_client(models(fake_upstream), **settings) as a,
                open_router_client(models(fake_upstream), **settings) as b):
        assert (await tier_of(b, HARD))[1] == 1
        rounds = 0
        while (await tier_of(a, HARD))[1] == 1:
            assert rounds < 60, await learning(a)
            await teach(a, 1)
            rounds += 1

        async def b_learned() -> bool:
            return (await learning(b))["reports"] == 2 * rounds

        await wait_for(b_learned, poll=0.05)
        assert (await tier_of(b, HARD))[1] == 2
        assert (await tier_of(b, EASY))[1] == 1

        reset = await b.request("DELETE", "/v1/routing/learning",
                                headers={"authorization": f"Bearer {ADMIN}"})
        assert reset.status_code == 200, reset.text

        async def a_reset() -> bool:
            return (await learning(a))["reports"] == 0

        await wait_for(a_reset, poll=0.05)
        assert (await tier_of(a, HARD))[1] == 1


async def test_reports_made_while_redis_is_down_are_taught_when_it_is_back(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    async with (open_router_client(models(fake_upstream), **sections(redis_server)) as a,
                open_router_client(models(fake_upstream), **sections(redis_server)) as b):
        redis_server.kill()
        hard_id, _ = await tier_of(a, HARD)
        answer = await report(a, hard_id, 0.0)
        assert answer["learning"]["queued"] is True and answer["learning"]["learned"] is False
        assert (await learning(a))["queued"] == 1
        redis_server.start()  # empty

        async def both_learned() -> bool:
            return [(await learning(c))["reports"] for c in (a, b)] == [1, 1]

        await wait_for(both_learned, poll=0.05)
        assert all(seen.status == 200 for seen in a.seen + b.seen)
