"""Comparisons the router makes itself (``learned.compare``) with two routers on one
redis-server: their hourly budget is both routers' together, either router's
``GET /v1/routing`` and ``GET /metrics`` count both routers' comparisons, and with Redis down
each router holds its own spend to the budget, and writes what it paid once Redis is back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
from prometheus_client.parser import text_string_to_metric_families
from support_redis import RedisServer
from support_routing import RouterClient, model_entry, open_router_client, wait_for

from engine.testing.fake_upstream import Behaviour, FakeUpstream

VERDICT = '{"answer_1": 1, "answer_2": 0}'
COSTS = {"cost_per_1k_in": 1.0, "cost_per_1k_out": 1.0}


@asynccontextmanager
async def router(fake: FakeUpstream, redis: RedisServer, *,
                 budget: float) -> AsyncIterator[RouterClient]:
    models = [model_entry(fake, "cheap", tier=1, **COSTS),
              model_entry(fake, "strong", tier=2, **COSTS),
              model_entry(fake, "judge", tier=3, **COSTS)]
    async with open_router_client(
            models, state={"redis_url": redis.url},
            learned={"model": "builtin", "calibrate": False,
                     "compare": {"share": 1.0, "judge": "judge",
                                 "max_usd_per_hour": budget}}) as client:
        yield client


async def ask(client: RouterClient, prompt: str) -> None:
    async with openai.AsyncOpenAI(base_url=client.router.v1, api_key="t",
                                  max_retries=0) as sdk:
        await sdk.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": prompt}])


async def compare(client: RouterClient) -> dict[str, Any]:
    answer = await client.request("GET", "/v1/routing")
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()["compare"]
    return state


async def shows(client: RouterClient, **want: Any) -> dict[str, Any]:
    """``compare`` once it shows ``want`` (other processes' totals arrive within 0.25 s)."""
    seen: dict[str, Any] = {}

    async def there() -> bool:
        seen.update(await compare(client))
        return all(seen[k] == v for k, v in want.items())

    await wait_for(there, poll=0.02, timeout=20)
    return seen


async def test_the_budget_and_the_counts_are_both_routers(
        fake_upstream: FakeUpstream, redis_server: RedisServer) -> None:
    fake_upstream.set_default("judge", Behaviour(text=VERDICT))
    async with router(fake_upstream, redis_server, budget=1e-9) as a, \
            router(fake_upstream, redis_server, budget=1e-9) as b:
        await ask(a, "Which prime number follows the number seventeen?")
        paid = await shows(a, reported=1, running=0)
        assert paid["spent_usd_last_hour"] == paid["spent_usd"] > 0
        # B has paid nothing itself, but A's comparison spent the budget of both.
        await ask(b, "Which river flows through the city of Vienna?")
        for client in (a, b):
            state = await shows(client, skipped_budget=1, scope="shared")
            assert state["sampled"] == state["reported"] == 1
            assert state["spent_usd"] == paid["spent_usd"]
            assert state["spent_usd_last_hour"] == paid["spent_usd"]
        assert len(fake_upstream.requests("strong")) == 1
        metrics = await b.request("GET", "/metrics")
        samples = {(s.name, tuple(s.labels.items())): s.value
                   for family in text_string_to_metric_families(metrics.text)
                   for s in family.samples}
        assert samples[("llm_router_comparisons_total", (("outcome", "reported"),))] == 1
        assert samples[("llm_router_comparisons_total", (("outcome", "skipped_budget"),))] == 1


async def test_with_redis_down_each_router_holds_its_own_spend_to_the_budget(
        fake_upstream: FakeUpstream, redis_server: RedisServer) -> None:
    fake_upstream.set_default("judge", Behaviour(text=VERDICT))
    async with router(fake_upstream, redis_server, budget=1e-9) as a:
        redis_server.kill()
        await ask(a, "Which prime number follows the number seventeen?")
        state = await shows(a, reported=1, running=0, scope="process")
        paid = state["spent_usd"]
        assert state["spent_usd_last_hour"] == paid > 0
        # A's own hour is spent: its next sampled answer is skipped, Redis or not.
        await ask(a, "Which river flows through the city of Vienna?")
        await shows(a, skipped_budget=1)
        redis_server.start()  # empty: what A paid while it was down is written back

        async def written_back() -> bool:
            async with router(fake_upstream, redis_server, budget=1e-9) as b:
                return bool((await compare(b))["spent_usd_last_hour"] == paid)

        await wait_for(written_back, poll=0.2, timeout=20)
