"""Cost accounting (``engine.core.stats``) and ``GET /stats`` / ``GET /health`` end to end.

Every backend reports a fixed usage (``Behaviour(usage=...)``) so spent and saved are exact:
spent is the upstream's usage at the serving model's prices; saved is the same usage at the
reference model (the priciest of the top tier) minus spent.
"""

from __future__ import annotations

from typing import Any

import pytest
from support_routing import model_entry, open_router_client

from engine.core.config import ModelConfig
from engine.core.stats import Stats, cost_usd
from engine.messages import Usage as CanonicalUsage
from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage, refused_url

PRICES = {  # name: (tier, provider, per 1k in, per 1k out)
    "small": (1, "openai", 0.001, 0.002),
    "mid": (2, "anthropic", 0.003, 0.015),
    "big": (3, "openai", 0.015, 0.075),
    "big-lite": (3, "anthropic", 0.010, 0.050),
}
USAGE = Usage(input_tokens=1000, output_tokens=500)


def cost(name: str, usage: Usage = USAGE) -> float:
    _, _, per_in, per_out = PRICES[name]
    return (usage.input_tokens * per_in + usage.output_tokens * per_out) / 1000


def priced_models(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [
        model_entry(fake, name, tier=tier, provider=provider, cost_per_1k_in=per_in,
                    cost_per_1k_out=per_out)
        for name, (tier, provider, per_in, per_out) in PRICES.items()
    ]


# ---- GET /stats end to end ---------------------------------------------------------------------


async def test_stats_after_routed_requests(fake_upstream: FakeUpstream) -> None:
    for name in PRICES:
        fake_upstream.set_default(name, Behaviour(usage=USAGE))
    async with open_router_client(priced_models(fake_upstream)) as client:
        empty = await client.stats()
        assert (empty["total_requests"], empty["total_spent_usd"], empty["total_saved_usd"],
                empty["by_model"]) == (0, 0, 0, {})

        for _ in range(3):
            response = await client.chat("hello")  # tier 1
            assert response.headers["x-llm-router-model"] == "small"
        assert (await client.chat("hi", model="big")).status_code == 200
        assert (await client.messages("hi", model="mid")).status_code == 200
        response, events = await client.stream_chat("streamed")  # tier 1, usage from the stream
        assert response.headers["x-llm-router-model"] == "small"
        assert events[-1] == "[DONE]"
        async with client.http.stream(
            "POST", client.url + "/v1/messages",
            json={"model": "mid", "max_tokens": 8, "stream": True,
                  "messages": [{"role": "user", "content": "streamed"}]},
        ) as streamed:
            assert streamed.status_code == 200
            await streamed.aread()

        stats = await client.stats()

    reference = cost("big")  # the priciest model of the top tier, not big-lite
    served = ["small"] * 4 + ["big"] + ["mid"] * 2
    assert stats["total_requests"] == 7
    assert stats["by_model"] == {"small": 4, "big": 1, "mid": 2}
    spent = sum(cost(name) for name in served)
    assert stats["total_spent_usd"] == pytest.approx(spent, abs=1e-6)
    assert stats["total_spent_usd"] == pytest.approx(4 * 0.002 + 0.0525 + 2 * 0.0105, abs=1e-6)
    assert stats["total_saved_usd"] == pytest.approx(len(served) * reference - spent, abs=1e-6)
    assert stats["tokens"] == {"input": 7 * 1000, "output": 7 * 500}
    assert all(type(stats[k]) is float for k in ("total_spent_usd", "total_saved_usd"))


async def test_a_failover_is_billed_to_the_backend_that_answered(fake_upstream: FakeUpstream
                                                                  ) -> None:
    models = [
        model_entry(fake_upstream, "a1", tier=1, cost_per_1k_in=0.001, cost_per_1k_out=0.001),
        model_entry(fake_upstream, "a2", tier=1, cost_per_1k_in=0.002, cost_per_1k_out=0.004),
        model_entry(fake_upstream, "top", tier=2, cost_per_1k_in=0.01, cost_per_1k_out=0.02),
    ]
    fake_upstream.script("a1", Behaviour(status=500))
    fake_upstream.set_default("a2", Behaviour(usage=Usage(2000, 1000)))
    async with open_router_client(models) as client:
        assert (await client.chat()).headers["x-llm-router-model"] == "a2"
        stats = await client.stats()
        fake_upstream.script("a1", Behaviour(status=500))
        fake_upstream.script("a2", Behaviour(status=500))
        fake_upstream.script("top", Behaviour(status=500))
        assert (await client.chat()).status_code == 503
        after_error = await client.stats()

    assert stats["by_model"] == {"a2": 1}
    assert stats["failovers"] == 1
    assert stats["total_spent_usd"] == pytest.approx(0.004 + 0.004, abs=1e-9)
    assert stats["total_saved_usd"] == pytest.approx((0.02 + 0.02) - 0.008, abs=1e-9)
    # A request nothing could answer costs nothing and is counted as an error.
    assert after_error["by_model"] == {"a2": 1}
    assert after_error["total_spent_usd"] == stats["total_spent_usd"]
    assert after_error["errors"] == {"no_backend_available": 1}


async def test_missing_usage_is_estimated_not_free(fake_upstream: FakeUpstream) -> None:
    models = [model_entry(fake_upstream, "local", tier=1, cost_per_1k_in=1, cost_per_1k_out=1)]
    fake_upstream.set_default("local", Behaviour(usage=Usage(0, 0), text="a reply of some words"))
    async with open_router_client(models) as client:
        assert (await client.chat("a question of some length")).status_code == 200
        stats = await client.stats()
    assert stats["tokens"]["input"] > 0
    assert stats["tokens"]["output"] > 0
    assert stats["total_spent_usd"] > 0
    assert stats["total_saved_usd"] == 0  # one model: it is its own reference


# ---- GET /health -------------------------------------------------------------------------------


async def test_health_answers_even_when_no_backend_can(fake_upstream: FakeUpstream) -> None:
    models = [model_entry(fake_upstream, "dead", tier=1, base_url=refused_url() + "/v1")]
    async with open_router_client(models) as client:
        assert (await client.chat()).status_code == 503
        health = await client.request("GET", "/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"


# ---- engine.core.stats -------------------------------------------------------------------------


def priced(name: str, per_in: float, per_out: float, tier: int = 1) -> ModelConfig:
    return ModelConfig(name=name, provider="openai", model=name, tier=tier,
                       cost_per_1k_in=per_in, cost_per_1k_out=per_out)


def test_cost_is_usage_times_prices() -> None:
    model = priced("m", 0.5, 2.0)
    assert cost_usd(model, CanonicalUsage(1000, 1000)) == pytest.approx(2.5)
    assert cost_usd(model, CanonicalUsage(0, 0)) == 0
    # Cached input is input: the config has one input price.
    cached = CanonicalUsage(input_tokens=100, output_tokens=0, cache_read_tokens=300,
                            cache_write_tokens=600)
    assert cost_usd(model, cached) == pytest.approx(0.5)


def test_record_returns_cost_and_saving_and_accumulates() -> None:
    cheap, reference = priced("cheap", 0.001, 0.002), priced("ref", 0.01, 0.03, tier=3)
    stats = Stats(reference=reference)

    assert stats.record(cheap, CanonicalUsage(1000, 1000)) == pytest.approx((0.003, 0.037))
    assert stats.record(reference, CanonicalUsage(1000, 0)) == pytest.approx((0.01, 0.0))
    stats.record_error("rate_limited")

    snapshot = stats.snapshot()
    assert list(snapshot)[:4] == ["total_requests", "total_saved_usd", "total_spent_usd",
                                  "by_model"]
    assert snapshot["total_requests"] == 3
    assert snapshot["total_spent_usd"] == pytest.approx(0.013)
    assert snapshot["total_saved_usd"] == pytest.approx(0.037)
    assert snapshot["by_model"] == {"cheap": 1, "ref": 1}
    assert snapshot["by_tier"] == {"1": 1, "3": 1}
    assert snapshot["errors"] == {"rate_limited": 1}
