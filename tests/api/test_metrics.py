"""``GET /metrics`` after known traffic through the official SDKs against the fake upstream:
each counter moves by exactly what the traffic did (cache hits, a dedup join, a failover, a
budget rejection, a workflow run), parsed with prometheus_client's own text parser."""

from __future__ import annotations

import logging
from typing import Any

import anthropic
import openai
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from support_hold_relay import open_hold_relay, wait_all_in
from support_routing import RouterClient, model_entry, open_router_client

from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ADMIN = "admin-key-for-metrics-tests-1"


async def scrape(client: RouterClient, **headers: str) -> Samples:
    response = await client.request("GET", "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def priced(fake: FakeUpstream, name: str, tier: int, price: float) -> dict[str, Any]:
    """A backend whose every call is 10 tokens in, 10 out: ``20 * price / 1000`` USD."""
    fake.set_default(name, Behaviour(usage=Usage(input_tokens=10, output_tokens=10)))
    return model_entry(fake, name, tier=tier, cost_per_1k_in=price, cost_per_1k_out=price)


def chat(text: str, model: str = "auto", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def test_requests_cache_hits_spend_and_latency(fake_upstream: FakeUpstream) -> None:
    models = [priced(fake_upstream, "small", 1, 1.0), priced(fake_upstream, "big", 2, 10.0)]
    async with open_router_client(models, cache={"enabled": True}) as client:
        before = await scrape(client)
        async with (openai.AsyncOpenAI(base_url=client.router.v1, api_key="k") as oai,
                    anthropic.AsyncAnthropic(base_url=client.url, api_key="k") as claude):
            for _ in range(3):  # one miss, two hits
                await oai.chat.completions.create(**chat("What is two plus two?",
                                                         temperature=0))
            await claude.messages.create(model="small", max_tokens=64,
                                         messages=[{"role": "user", "content": "Hello there"}])
            with pytest.raises(openai.NotFoundError):
                await oai.chat.completions.create(**chat("hi", model="no-such-model"))
        after = await scrape(client)

    requests = "llm_router_requests_total"
    assert moved(before, after, requests, protocol="openai", model="small", tier="1",
                 cache="miss", status="200") == 1
    assert moved(before, after, requests, protocol="openai", model="small", tier="1",
                 cache="hit", status="200") == 2
    assert moved(before, after, requests, protocol="anthropic", model="small", tier="1",
                 cache="miss", status="200") == 1
    # An unknown model is not a label value (labels stay bounded): it counts as "other".
    assert moved(before, after, requests, protocol="openai", model="other", tier="",
                 cache="none", status="404") == 1
    assert moved(before, after, "llm_router_errors_total", code="model_not_found") == 1
    assert moved(before, after, "llm_router_cache_hits_total") == 2
    assert moved(before, after, "llm_router_upstream_attempts_total", backend="small",
                 outcome="ok") == 2
    # Two paid calls of 20 tokens at $1 per 1k on "small"; the reference model is "big".
    assert moved(before, after, "llm_router_spend_usd_total", model="small") == pytest.approx(
        0.04)
    assert moved(before, after, "llm_router_saved_usd_total",
                 source="routing") == pytest.approx(2 * 0.2 - 0.04)
    assert moved(before, after, "llm_router_saved_usd_total",
                 source="cache") == pytest.approx(2 * 0.2)
    assert moved(before, after, "llm_router_tokens_total", direction="input") == 20
    for histogram in ("llm_router_request_duration_seconds",
                      "llm_router_time_to_first_byte_seconds"):
        assert moved(before, after, histogram + "_count") == 5
        assert moved(before, after, histogram + "_bucket", le="+Inf") == 5
        assert moved(before, after, histogram + "_sum") > 0
    assert value(after, "llm_router_in_flight_requests") == 0
    assert value(after, "llm_router_backend_status", backend="small") == 1
    assert value(after, "llm_router_metrics_shared") == 0


async def test_a_dedup_join_and_a_stream(fake_upstream: FakeUpstream) -> None:
    async with open_hold_relay(fake_upstream) as relay, open_router_client(
            [model_entry(fake_upstream, "m", tier=1, base_url=relay.base_url("m", "openai"))]
    ) as client:
        before = await scrape(client)
        relay.hold()  # until both questions are in the router
        async with openai.AsyncOpenAI(base_url=client.router.v1, api_key="k") as oai:
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for _ in range(2):
                        nursery.start_soon(lambda: oai.chat.completions.create(
                            **chat("the same question")))
                    await wait_all_in(client.url, 2)
                    relay.release()
        fake_upstream.set_default("m", Behaviour(latency=0.3))
        joined = await scrape(client)
        response, _ = await client.stream_chat("streamed")
        assert response.status_code == 200
        after = await scrape(client)
    assert moved(before, after, "llm_router_dedup_joined_total") == 1
    assert moved(before, after, "llm_router_upstream_attempts_total", backend="m",
                 outcome="ok") == 2
    assert moved(before, after, "llm_router_requests_total", protocol="openai", model="m",
                 tier="1", cache="miss", status="200") == 3
    # The stream's first byte came before its end, which waited for the fake's 0.3 s.
    assert moved(joined, after, "llm_router_time_to_first_byte_seconds_bucket",
                 le="0.25") == 0


async def test_a_failover(fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
                          ) -> None:
    caplog.set_level(logging.INFO, logger="llm_router.access")
    models = [model_entry(fake_upstream, "first", tier=1, cost_per_1k_in=0.001),
              model_entry(fake_upstream, "second", tier=1, cost_per_1k_in=0.002)]
    fake_upstream.set_default("first", Behaviour(status=500))
    async with open_router_client(models) as client:
        before = await scrape(client)
        async with openai.AsyncOpenAI(base_url=client.router.v1, api_key="k") as oai:
            answer = await oai.chat.completions.with_raw_response.create(**chat("hi"))
        assert answer.headers["x-llm-router-model"] == "second"
        after = await scrape(client)
    attempts = "llm_router_upstream_attempts_total"
    assert moved(before, after, attempts, backend="first", outcome="server_error") == 1
    assert moved(before, after, attempts, backend="second", outcome="ok") == 1
    assert moved(before, after, "llm_router_failovers_total") == 1
    assert value(after, "llm_router_backend_status", backend="first") == 0.5
    assert value(after, "llm_router_backend_status", backend="second") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("backend first is degraded (was healthy)") for m in warnings)
    assert any(m.startswith("failed over to second after 1 failed attempt(s)")
               for m in warnings), warnings
    access = [r for r in caplog.records if r.name == "llm_router.access"
              and r.getMessage().startswith("POST")]
    assert "attempts=2" in access[-1].getMessage()


async def test_a_budget_rejection(fake_upstream: FakeUpstream,
                                  caplog: pytest.LogCaptureFixture) -> None:
    models = [priced(fake_upstream, "small", 1, 50.0)]  # one call: $1.00
    async with open_router_client(models, server={"admin_key": ADMIN}) as client:
        made = await client.request("POST", "/v1/admin/keys", json={"name": "t",
                                    "budget_usd": 1.0, "budget_period": "total"},
                                    headers={"authorization": f"Bearer {ADMIN}"})
        key_id, secret = made.json()["id"], made.json()["key"]
        as_admin = {"authorization": f"Bearer {ADMIN}"}
        before = await scrape(client, **as_admin)
        async with openai.AsyncOpenAI(base_url=client.router.v1, api_key=secret,
                                      max_retries=0) as oai:
            await oai.chat.completions.create(**chat("one", max_tokens=10))
            with pytest.raises(openai.RateLimitError) as caught:
                await oai.chat.completions.create(**chat("two", max_tokens=10))
        assert caught.value.code == "budget_exceeded"
        after = await scrape(client, **as_admin)
    assert moved(before, after, "llm_router_requests_total", protocol="openai", model="auto",
                 tier="", cache="none", status="429") == 1
    assert moved(before, after, "llm_router_errors_total", code="budget_exceeded") == 1
    assert moved(before, after, "llm_router_key_requests_total", key_id=key_id) == 1
    assert moved(before, after, "llm_router_key_spend_usd_total", key_id=key_id) == 1.0
    assert moved(before, after, "llm_router_key_tokens_total", key_id=key_id) == 20
    refused = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
               and "budget_exceeded" in r.getMessage()]
    assert len(refused) == 1 and f"client key {key_id}" in refused[0]
    for record in caplog.records:
        assert secret not in record.getMessage() and ADMIN not in record.getMessage()
        assert secret not in str(getattr(record, "fields", ""))


async def test_a_workflow_run(fake_upstream: FakeUpstream) -> None:
    workflow = ("name: two\nops:\n  a: {prompt: 'Step a.'}\n"
                "  b: {prompt: 'Step b.', input_ops: [a]}\n")
    async with open_router_client([model_entry(fake_upstream, "m", tier=1)]) as client:
        before = await scrape(client)
        done = await client.request("POST", "/v1/workflows",
                                    json={"input": "x", "workflow": workflow})
        assert done.status_code == 200, done.text
        after = await scrape(client)
    assert moved(before, after, "llm_router_workflow_runs_total", workflow="submitted",
                 status="succeeded") == 1
    assert value(after, "llm_router_workflow_runs_queued") == 0
    assert value(after, "llm_router_workflow_runs_running") == 0
    # Workflow ops are upstream calls, not HTTP chat requests.
    assert moved(before, after, "llm_router_upstream_attempts_total", backend="m",
                 outcome="ok") == 2
    assert not any(name == "llm_router_requests_total" for name, _ in after)


async def test_metrics_asks_for_a_credential_and_counts_a_refused_chat(fake_upstream: FakeUpstream
                                                              ) -> None:
    async with open_router_client([model_entry(fake_upstream, "m", tier=1)],
                                  server={"api_keys": ["client-key-123456"]}) as client:
        refused = await client.request("GET", "/metrics")
        assert refused.status_code == 401
        no_key = await client.chat()
        assert no_key.status_code == 401
        seen = await scrape(client, authorization="Bearer client-key-123456")
    # A chat request refused before its body was read counts too, with what is known of it.
    assert value(seen, "llm_router_requests_total", protocol="openai", model="", tier="",
                 cache="none", status="401") == 1


@pytest.mark.parametrize("latency", [0.0, 0.5], ids=["mid-stream", "before-first-byte"])
async def test_streams_the_client_left_are_no_longer_in_flight(
    fake_upstream: FakeUpstream, latency: float
) -> None:
    fake_upstream.set_default("m", Behaviour(latency=latency, text="word " * 40,
                                             chunk_delay=0.05))
    async with open_router_client([model_entry(fake_upstream, "m", tier=1)]) as client:
        for _ in range(3):
            with trio.move_on_after(0.2):  # the client leaves
                await client.stream_chat("left")
        with trio.fail_after(10):  # the router sees the disconnect, then the gauge drops
            while value(await scrape(client), "llm_router_in_flight_requests") != 0:
                await trio.sleep(0.05)
        after = await scrape(client)
    # counted once each, whatever their labels (a 200 left mid-stream, or a 499)
    assert sum(n for (name, _), n in after.items() if name == "llm_router_requests_total") == 3
