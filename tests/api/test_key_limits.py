"""What a client key may spend, enforced before any upstream call, in the caller's protocol:
models (403), max_tier (routing capped), rpm and tpm (429 with Retry-After and X-RateLimit-*),
budgets (429 budget_exceeded; concurrent calls overspend by at most one), workflows op by
op; a cached answer costs the key nothing."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
import trio
import yaml
from support_hold_relay import open_hold_relay
from support_routing import RouterClient, model_entry, open_router_client, prompt_scoring

from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage

ADMIN = "admin-key-for-limit-tests-01"
AS_ADMIN = {"authorization": f"Bearer {ADMIN}"}
HARD = prompt_scoring(33)  # tier 2 by the heuristic


def models(fake: FakeUpstream) -> list[dict[str, Any]]:
    # One call of 10 input and 10 output tokens on "small" costs exactly $1.00.
    for name in ("small", "big"):
        fake.set_default(name, Behaviour(usage=Usage(input_tokens=10, output_tokens=10)))
    return [model_entry(fake, "small", tier=1, cost_per_1k_in=50.0, cost_per_1k_out=50.0),
            model_entry(fake, "big", tier=2, cost_per_1k_in=500.0, cost_per_1k_out=500.0)]


async def new_key(client: RouterClient, **settings: Any) -> tuple[str, str]:
    made = await client.request("POST", "/v1/admin/keys", headers=AS_ADMIN,
                                json={"name": "t", **settings})
    assert made.status_code == 201, made.text
    return made.json()["id"], made.json()["key"]


def chat_body(model: str = "small", text: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def as_key(client: RouterClient, secret: str, body: dict[str, Any],
                 path: str = "/v1/chat/completions") -> Any:
    return await client.request("POST", path, json=body,
                                headers={"authorization": f"Bearer {secret}"})


async def test_models_and_max_tier(fake_upstream: FakeUpstream) -> None:
    async with open_router_client(models(fake_upstream), server={"admin_key": ADMIN},
                                  cache={"enabled": False}) as client:
        _, secret = await new_key(client, models=["auto", "small"], max_tier=1)
        async with openai.AsyncOpenAI(base_url=client.router.v1, api_key=secret,
                                      max_retries=0) as sdk:
            with pytest.raises(openai.PermissionDeniedError) as caught:
                await sdk.chat.completions.create(**chat_body("big"))
            assert "may not use model 'big'" in caught.value.message
            answer = await sdk.chat.completions.with_raw_response.create(
                **chat_body("auto", HARD))
            assert answer.headers["x-llm-router-tier"] == "1"  # capped, not refused
            assert "capped" in answer.headers["x-llm-router-router"]
        _, free = await new_key(client, max_tier=1)
        pinned_high = await as_key(client, free, chat_body("big"))
        assert pinned_high.status_code == 403
        assert pinned_high.json()["error"]["code"] == "permission_denied"
        assert fake_upstream.requests("big") == []


async def test_failover_never_goes_above_max_tier(fake_upstream: FakeUpstream) -> None:
    # SPEC: "routing never goes above max_tier": not when the key's tier fails either.
    entries = models(fake_upstream)
    fake_upstream.set_default("small", Behaviour(status=503))
    async with open_router_client(entries, server={"admin_key": ADMIN},
                                  cache={"enabled": False}) as client:
        _, capped = await new_key(client, max_tier=1, rpm=5)
        refused = await as_key(client, capped, chat_body("auto", "hello"))
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "no_backend_available"
        assert fake_upstream.requests("big") == []
        # Its error says where it was routed, and what the key has left, as an answer would.
        assert refused.headers["x-llm-router-tier"] == "1"
        assert refused.headers["x-llm-router-model"] == "small"
        assert refused.headers["x-ratelimit-limit-requests"] == "5"
        assert refused.headers["x-ratelimit-remaining-requests"] == "4"
        _, free = await new_key(client)  # without a cap, failover does reach tier 2
        answered = await as_key(client, free, chat_body("auto", "hello again"))
        assert answered.status_code == 200, answered.text
        assert answered.headers["x-llm-router-model"] == "big"


async def test_requests_per_minute_in_both_protocols(fake_upstream: FakeUpstream) -> None:
    async with open_router_client(models(fake_upstream), server={"admin_key": ADMIN}) as client:
        _, secret = await new_key(client, rpm=2)
        first = await as_key(client, secret, chat_body(text="one"))
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert (await as_key(client, secret, chat_body(text="two"))).status_code == 200
        async with anthropic.AsyncAnthropic(base_url=client.url, api_key=secret,
                                            max_retries=0) as claude:
            with pytest.raises(anthropic.RateLimitError) as caught:
                await claude.messages.create(model="small", max_tokens=10,
                                             messages=[{"role": "user", "content": "three"}])
        assert caught.value.body["type"] == "error"  # Anthropic's shape on /v1/messages
        assert 1 <= int(caught.value.response.headers["retry-after"]) <= 30
        assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert len(fake_upstream.requests("small")) == 2


async def test_concurrent_calls_overspend_a_budget_by_at_most_one(
    fake_upstream: FakeUpstream,
) -> None:
    # A call reports 1 input and 10 output tokens: $0.55 on "small". The most one may cost
    # (reserved at admission) is its estimated input plus max_tokens 10: $0.55-0.60. The
    # answers are held until each of the 20 calls is refused or waiting upstream.
    small, big = models(fake_upstream)
    fake_upstream.set_default("small", Behaviour(usage=Usage(input_tokens=1, output_tokens=10)))
    most = 0.60
    async with open_hold_relay(fake_upstream) as relay, open_router_client(
            [small | {"base_url": relay.base_url("small", "openai")}, big],
            server={"admin_key": ADMIN}) as client:
        key_id, secret = await new_key(client, budget_usd=1.65, budget_period="day")
        statuses: list[int] = []
        codes: list[str] = []

        async def call(i: int) -> None:
            answer = await as_key(client, secret, chat_body(text=f"Hi{i}", max_tokens=10))
            statuses.append(answer.status_code)
            if answer.status_code != 200:
                codes.append(answer.json()["error"]["code"])

        relay.hold()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(call, i)
                while relay.held + len(codes) < 20:  # none answered, none undecided
                    await trio.sleep(0.005)
                relay.release()
        spent = (await client.request("GET", f"/v1/admin/keys/{key_id}", headers=AS_ADMIN)
                 ).json()["usage"]["spent_usd"]
    paid = statuses.count(200)
    assert set(codes) == {"budget_exceeded"} and len(codes) == 20 - paid
    assert spent == pytest.approx(paid * 0.55)
    assert spent + 0.55 >= 1.65 and spent <= 1.65 + most  # used up, overspent by at most one
    assert len(fake_upstream.requests("small")) == paid


async def test_a_spent_budget_is_429_budget_exceeded_in_both_protocols(
    fake_upstream: FakeUpstream,
) -> None:
    # SPEC: "Past the budget: 429 with code budget_exceeded (OpenAI error shape on
    # /v1/chat/completions, Anthropic's on /v1/messages)".
    async with open_router_client(models(fake_upstream), server={"admin_key": ADMIN},
                                  cache={"enabled": False}) as client:
        _, secret = await new_key(client, budget_usd=1.0, budget_period="month")
        assert (await as_key(client, secret, chat_body(text="one"))).status_code == 200
        async with openai.AsyncOpenAI(base_url=client.router.v1, api_key=secret,
                                      max_retries=0) as sdk:
            with pytest.raises(openai.RateLimitError) as refused:
                await sdk.chat.completions.create(**chat_body(text="two"))
        assert refused.value.code == "budget_exceeded"
        assert int(refused.value.response.headers["retry-after"]) >= 1
        async with anthropic.AsyncAnthropic(base_url=client.url, api_key=secret,
                                            max_retries=0) as claude:
            with pytest.raises(anthropic.RateLimitError) as caught:
                await claude.messages.create(model="small", max_tokens=10,
                                             messages=[{"role": "user", "content": "three"}])
        body = caught.value.body
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        assert body["error"]["code"] == "budget_exceeded"
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert len(fake_upstream.requests("small")) == 1


async def test_a_workflow_counts_against_the_budget_op_by_op(fake_upstream: FakeUpstream) -> None:
    chain = yaml.safe_dump({"ops": {
        "a": {"prompt": "A.", "model": "small", "max_tokens": 10},
        "b": {"prompt": "B.", "model": "small", "max_tokens": 10, "input_ops": ["a"]},
        "c": {"prompt": "C.", "model": "small", "max_tokens": 10, "input_ops": ["b"]},
    }})
    async with open_router_client(models(fake_upstream), server={"admin_key": ADMIN}) as client:
        _, secret = await new_key(client, budget_usd=1.5, budget_period="total")
        answer = await as_key(client, secret, {"workflow": chain, "input": "x"},
                              path="/v1/workflows")
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "budget_exceeded"
        assert len(fake_upstream.requests("small")) == 2  # a and b ran; c was refused


async def test_a_cached_answer_costs_the_key_nothing(fake_upstream: FakeUpstream) -> None:
    async with open_router_client(models(fake_upstream), server={"admin_key": ADMIN},
                                  cache={"enabled": True}) as client:
        key_id, secret = await new_key(client, budget_usd=100.0)
        for _ in range(3):
            answer = await as_key(client, secret, chat_body(text="What is 2+2?",
                                                            temperature=0))
            assert answer.status_code == 200
        usage = (await client.request("GET", f"/v1/admin/keys/{key_id}", headers=AS_ADMIN)
                 ).json()["usage"]
        stats = (await client.request("GET", "/stats", headers=AS_ADMIN)).json()
    assert usage["spent_usd"] == pytest.approx(1.0) and usage["requests"] == 3
    assert stats["by_key"] == {key_id: {"requests": 3, "spent_usd": 1.0, "tokens": 60}}
