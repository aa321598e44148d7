"""Failover end to end: the real router over real sockets in front of the fake upstream.

Layout of every test here: ``a1`` and ``a2`` share tier 1 (``a1`` is cheaper, so it is tried
first while both are equally healthy and idle), ``b1`` is tier 2. Each model is its own
backend label on the fake, so ``fake.script("a1", ...)`` scripts ``a1``'s provider.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
import trio
from support_hold_relay import open_hold_relay
from support_routing import (
    RouterClient,
    model_entry,
    open_router_client,
    provider_key,
    skip_ahead,
    user,
    wait_for,
)
from trio.testing import MockClock

from engine.testing.fake_upstream import Behaviour, FakeUpstream, refused_url

SPEC_FIELDS = {"name": str, "status": str, "in_flight": int, "latency_ms": int,
               "total_requests": int}


def layout(fake: FakeUpstream, **overrides: dict[str, Any]) -> list[dict[str, Any]]:
    models = [
        model_entry(fake, "a1", tier=1, cost_per_1k_in=0.001, cost_per_1k_out=0.002),
        model_entry(fake, "a2", tier=1, provider="anthropic", cost_per_1k_in=0.002,
                    cost_per_1k_out=0.004),
        model_entry(fake, "b1", tier=2, cost_per_1k_in=0.01, cost_per_1k_out=0.02),
    ]
    for entry in models:
        entry.update(overrides.get(entry["name"], {}))
    return models


@pytest.fixture
async def client(fake_upstream: FakeUpstream) -> AsyncIterator[RouterClient]:
    async with open_router_client(layout(fake_upstream)) as running:
        yield running


def answered_by(response: Any, name: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-router-model"] == name


def count(fake: FakeUpstream, backend: str) -> int:
    return len(fake.requests(backend))


# ---- same-tier failover -----------------------------------------------------------------------


async def test_500_fails_over_within_the_tier(fake_upstream: FakeUpstream, client: RouterClient
                                               ) -> None:
    fake_upstream.script("a1", Behaviour(status=500))
    async with openai.AsyncOpenAI(base_url=client.router.v1, api_key="t", max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="auto", messages=user("hello there")
        )
    assert raw.headers["x-llm-router-model"] == "a2"
    assert raw.headers["x-llm-router-tier"] == "1"
    assert raw.parse().choices[0].message.content == "[a2] hello there"
    assert count(fake_upstream, "a1") == 1
    assert count(fake_upstream, "b1") == 0

    backends = await client.backends()
    assert backends["a1"]["status"] == "degraded"
    assert backends["a2"]["status"] == "healthy"
    assert (await client.stats())["failovers"] == 1

    # Degraded is deprioritised: the next request goes to a2 first though a1 is cheaper.
    answered_by(await client.chat(), "a2")
    assert count(fake_upstream, "a1") == 1


async def test_429_with_retry_after_keeps_the_backend_out_for_that_long(
    fake_upstream: FakeUpstream, jumpable_clock: MockClock, client: RouterClient
) -> None:
    """The provider asks for a minute: a1 is skipped until the test moves the clock past it."""
    fake_upstream.script("a1", Behaviour(status=429, retry_after=60))
    answered_by(await client.chat(), "a2")

    backends = await client.backends()
    assert backends["a1"]["status"] == "healthy"  # rate-limited is not unhealthy
    assert "rate limited" in backends["a1"]["detail"]
    for _ in range(3):
        answered_by(await client.chat(), "a2")
    assert count(fake_upstream, "a1") == 1  # skipped, not asked again
    assert "rate limited" in (await client.backends())["a1"]["detail"]  # still waiting

    await skip_ahead(jumpable_clock, 60)
    assert "rate limited" not in str((await client.backends())["a1"]["detail"])
    answered_by(await client.chat(), "a1")
    assert count(fake_upstream, "a1") == 2


async def test_connection_refused_marks_the_backend_down(fake_upstream: FakeUpstream) -> None:
    models = layout(fake_upstream, a1={"base_url": refused_url() + "/v1"})
    async with open_router_client(models) as client:
        answered_by(await client.chat(), "a2")
        backends = await client.backends()
        assert backends["a1"]["status"] == "down"
        assert "unreachable" in backends["a1"]["detail"]
        assert backends["a1"]["total_requests"] == 1

        answered_by(await client.chat(), "a2")
        assert (await client.backends())["a1"]["total_requests"] == 1  # skipped while down


async def test_an_oversized_answer_fails_over(fake_upstream: FakeUpstream,
                                             client: RouterClient) -> None:
    # More than 64 MiB of JSON (valid: spaces after the object) is not read to its end.
    fake_upstream.script("a1", Behaviour(padding=65 * 1024 * 1024))
    answered_by(await client.chat(), "a2")
    a1 = (await client.backends())["a1"]
    assert a1["status"] == "degraded"
    assert "oversized" in a1["last_error"]


async def test_a_stream_whose_first_event_never_ends_fails_over(
        fake_upstream: FakeUpstream, client: RouterClient) -> None:
    # The upstream's first event grows without end: past 16 MiB the router gives it up.
    fake_upstream.script("a1", Behaviour(endless_event_after=0))
    response, events = await client.stream_chat("hello stream")

    answered_by(response, "a2")
    text = "".join(e["choices"][0]["delta"].get("content") or ""
                   for e in events if isinstance(e, dict) and e["choices"])
    assert text == "[a2] hello stream"
    a1 = (await client.backends())["a1"]
    assert a1["status"] == "degraded"
    assert "16 MiB of its stream without a complete event" in a1["last_error"]


@pytest.mark.parametrize("fault", [Behaviour(hang=True), Behaviour(latency=10.0)])
async def test_timeout_before_the_first_byte_fails_over(fake_upstream: FakeUpstream,
                                                        fault: Behaviour) -> None:
    models = layout(fake_upstream, a1={"timeouts": {"first_byte_sec": 0.2}})
    async with open_router_client(models) as client:
        fake_upstream.script("a1", fault)
        response = await client.chat("are you there")

        # a2 answered: the router gave up on a1 at its deadline rather than waiting for an
        # answer that never comes (the hang) or comes too late (the latency), and hung up on
        # it before the fake had answered.
        answered_by(response, "a2")
        assert response.json()["choices"][0]["message"]["content"] == "[a2] are you there"
        backends = await client.backends()
        assert backends["a1"]["status"] == "degraded"
        assert "in time" in backends["a1"]["detail"]
        with trio.fail_after(60):
            await fake_upstream.wait_until_idle()  # the router hung up on the stalled call
        assert fake_upstream.requests("a1")[0].cancelled


async def test_a_call_past_its_total_deadline_fails_over(fake_upstream: FakeUpstream) -> None:
    models = layout(fake_upstream, a1={"timeouts": {"first_byte_sec": 5, "total_sec": 0.2}})
    async with open_router_client(models) as client:
        fake_upstream.script("a1", Behaviour(latency=1.0))  # within first_byte_sec, not total
        response = await client.chat("are you there")

        answered_by(response, "a2")
        backends = await client.backends()
        assert backends["a1"]["status"] == "degraded"
        assert "exceeded its total deadline" in backends["a1"]["detail"]
        with trio.fail_after(2):
            await fake_upstream.wait_until_idle()  # the router hung up on the slow call
        assert fake_upstream.requests("a1")[0].cancelled


async def test_a_failing_tier_escalates_to_the_next_tier_up(fake_upstream: FakeUpstream,
                                                            client: RouterClient) -> None:
    fake_upstream.script("a1", Behaviour(status=500))
    fake_upstream.script("a2", Behaviour(status=503))
    response = await client.chat("climb")

    answered_by(response, "b1")
    assert response.headers["x-llm-router-tier"] == "2"
    assert response.json()["choices"][0]["message"]["content"] == "[b1] climb"
    assert (count(fake_upstream, "a1"), count(fake_upstream, "a2"), count(fake_upstream, "b1")
            ) == (1, 1, 1)
    assert (await client.stats())["by_model"] == {"b1": 1}


async def test_a_higher_tier_never_falls_back_to_a_lower_one(fake_upstream: FakeUpstream,
                                                             client: RouterClient) -> None:
    fake_upstream.script("b1", Behaviour(status=500))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    response = await client.chat("use the tool", tools=tools)  # tools: tier 2 at least
    assert response.status_code == 503
    assert "b1" in response.json()["error"]["message"]
    assert count(fake_upstream, "a1") == count(fake_upstream, "a2") == 0


# ---- streaming --------------------------------------------------------------------------------


async def test_streaming_fails_over_before_the_first_byte(fake_upstream: FakeUpstream,
                                                          client: RouterClient) -> None:
    fake_upstream.script("a1", Behaviour(status=500))
    response, events = await client.stream_chat("hello stream")

    answered_by(response, "a2")
    assert response.headers["content-type"].startswith("text/event-stream")
    text = "".join(e["choices"][0]["delta"].get("content") or ""
                   for e in events if isinstance(e, dict) and e["choices"])
    assert text == "[a2] hello stream"
    assert events[-1] == "[DONE]"
    assert count(fake_upstream, "a1") == 1


@pytest.mark.parametrize("fault", [Behaviour(hang=True), Behaviour(latency=10.0)])
async def test_stream_fails_over_on_first_byte_timeout(fake_upstream: FakeUpstream,
                                                       fault: Behaviour) -> None:
    models = layout(fake_upstream, a1={"timeouts": {"first_byte_sec": 0.2}})
    async with open_router_client(models) as client:
        fake_upstream.script("a1", fault)
        response, events = await client.stream_chat("hello stream")

        # As for a plain request: a2 streamed the answer, a1 was hung up on unanswered.
        answered_by(response, "a2")
        assert events[-1] == "[DONE]"
        assert (await client.backends())["a1"]["status"] == "degraded"
        assert (await client.backends())["a1"]["in_flight"] == 0
        with trio.fail_after(60):
            await fake_upstream.wait_until_idle()
        assert fake_upstream.requests("a1")[0].cancelled


async def test_anthropic_stream_fails_over_on_first_byte_timeout(fake_upstream: FakeUpstream
                                                                 ) -> None:
    models = layout(fake_upstream, a1={"timeouts": {"first_byte_sec": 0.2}})
    async with open_router_client(models) as client, anthropic.AsyncAnthropic(
        base_url=client.url, api_key="t", max_retries=0
    ) as sdk:
        fake_upstream.script("a1", Behaviour(hang=True))
        async with sdk.messages.stream(model="auto", max_tokens=64,
                                       messages=user("hello claude")) as stream:
            final = await stream.get_final_message()
        assert final.content[0].text == "[a2] hello claude"  # type: ignore[union-attr]
        assert (await client.backends())["a1"]["status"] == "degraded"


async def test_stream_with_no_backend_is_a_plain_error_status(fake_upstream: FakeUpstream,
                                                              client: RouterClient) -> None:
    for name in ("a1", "a2", "b1"):
        fake_upstream.script(name, Behaviour(status=500))
    response, _ = await client.stream_chat()
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "no_backend_available"
    assert "all backends failed" in error["message"]


async def test_504_when_every_backend_tried_timed_out(fake_upstream: FakeUpstream) -> None:
    fast = {"timeouts": {"first_byte_sec": 0.2}}
    models = layout(fake_upstream, a1=fast, a2=fast, b1=fast)
    async with open_router_client(models) as client:
        for name in ("a1", "a2", "b1"):
            fake_upstream.script(name, Behaviour(hang=True))
        response = await client.chat()
        assert response.status_code == 504
        error = response.json()["error"]
        assert error["code"] == "upstream_timeout"
        assert all(name in error["message"] for name in ("a1", "a2", "b1"))

        # One backend failing otherwise makes it a 503: no single cause to name.
        for name, fault in (("a1", Behaviour(hang=True)), ("a2", Behaviour(status=500)),
                            ("b1", Behaviour(hang=True))):
            fake_upstream.script(name, fault)
        assert (await client.chat()).status_code == 503


# ---- nothing can serve ------------------------------------------------------------------------


async def test_503_with_a_clear_message_when_no_backend_can_serve(fake_upstream: FakeUpstream
                                                                  ) -> None:
    dead = {"base_url": refused_url() + "/v1"}
    dead_anthropic = {"base_url": refused_url()}
    models = layout(fake_upstream, a1=dead, a2=dead_anthropic, b1=dead)
    async with open_router_client(models) as client:
        first = await client.chat()
        assert first.status_code == 503
        error = first.json()["error"]
        assert error["code"] == "no_backend_available"
        assert error["type"] == "server_error"
        for name in ("a1", "a2", "b1"):
            assert name in error["message"]

        # Now every backend is down and cooling off: the router says so without trying.
        second = await client.messages()
        assert second.status_code == 503
        body = second.json()
        assert body["type"] == "error"
        assert "no backend available" in body["error"]["message"]
        for name in ("a1", "a2", "b1"):
            assert f"{name}: down" in body["error"]["message"]
        assert all(b["total_requests"] == 1 for b in (await client.backends()).values())


async def test_429_with_retry_after_when_every_backend_is_rate_limited(
    fake_upstream: FakeUpstream, client: RouterClient
) -> None:
    for name in ("a1", "a2", "b1"):
        fake_upstream.script(name, Behaviour(status=429, retry_after=3))
    first = await client.chat()
    assert first.status_code == 429
    assert first.headers["retry-after"] == "3"
    assert first.json()["error"]["type"] == "rate_limit_error"

    async with anthropic.AsyncAnthropic(base_url=client.url, api_key="t", max_retries=0) as sdk:
        with pytest.raises(anthropic.RateLimitError) as caught:
            await sdk.messages.create(model="auto", max_tokens=8, messages=user("again"))
    assert caught.value.response.headers["retry-after"] in {"2", "3"}
    assert "rate-limited" in caught.value.message
    assert [count(fake_upstream, n) for n in ("a1", "a2", "b1")] == [1, 1, 1]  # not re-asked


async def test_retry_after_is_sent_even_when_the_providers_sent_none(
    fake_upstream: FakeUpstream, client: RouterClient
) -> None:
    for name in ("a1", "a2", "b1"):
        fake_upstream.script(name, Behaviour(status=429))
    first = await client.chat()
    assert first.status_code == 429
    assert first.headers["retry-after"] == "1"  # the pool's default wait
    second = await client.messages()
    assert second.status_code == 429
    assert second.headers["retry-after"] == "1"


# ---- pinned models ----------------------------------------------------------------------------


async def test_a_pinned_model_does_not_fail_over(fake_upstream: FakeUpstream,
                                                 client: RouterClient) -> None:
    fake_upstream.script("a1", Behaviour(status=500))
    response = await client.chat(model="a1")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert "a1" in error["message"] and "500" in error["message"]
    assert count(fake_upstream, "a2") == count(fake_upstream, "b1") == 0

    answered_by(await client.chat(model="a1"), "a1")  # still usable: degraded, not down
    answered_by(await client.chat(model="b1"), "b1")
    assert (await client.chat(model="b1")).headers["x-llm-router-router"] == "pinned"


async def test_an_unknown_pinned_model_is_404_naming_the_choices(client: RouterClient) -> None:
    response = await client.chat(model="gpt-17")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "gpt-17" in error["message"]
    assert all(name in error["message"] for name in ("a1", "a2", "b1"))

    anthropic_style = await client.messages(model="gpt-17")
    assert anthropic_style.status_code == 404
    assert anthropic_style.json()["error"]["type"] == "not_found_error"


async def test_a_rate_limited_pinned_model(fake_upstream: FakeUpstream, client: RouterClient
                                           ) -> None:
    fake_upstream.script("a1", Behaviour(status=429, retry_after=5))
    first = await client.chat(model="a1")
    assert first.status_code == 429
    assert first.headers["retry-after"] == "5"

    second = await client.chat(model="a1")
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) in {4, 5}
    assert count(fake_upstream, "a1") == 1
    answered_by(await client.chat(), "a2")  # routed traffic goes around it

    fake_upstream.script("b1", Behaviour(status=429))  # no Retry-After from the provider
    third = await client.chat(model="b1")
    assert third.status_code == 429
    assert third.headers["retry-after"] == "1"


async def test_a_pinned_model_that_is_down(fake_upstream: FakeUpstream) -> None:
    models = layout(fake_upstream, a1={"base_url": refused_url() + "/v1"})
    async with open_router_client(models) as client:
        first = await client.chat(model="a1")
        assert first.status_code == 502
        assert first.json()["error"]["code"] == "upstream_unreachable"
        assert (await client.backends())["a1"]["status"] == "down"
        # Pinned traffic has nowhere else to go; whether it is refused at once or tried again,
        # the error names the backend.
        second = await client.chat(model="a1")
        assert second.status_code in {502, 503}
        assert "a1" in second.json()["error"]["message"]
        # Routed traffic goes around it.
        answered_by(await client.chat(), "a2")


# ---- /v1/backends -----------------------------------------------------------------------------


async def test_backends_has_spec_fields_and_no_secrets(fake_upstream: FakeUpstream,
                                                       client: RouterClient) -> None:
    fake_upstream.script("a1", Behaviour(status=500))
    started = time.perf_counter()
    await client.chat()
    elapsed_ms = (time.perf_counter() - started) * 1000
    response = await client.request("GET", "/v1/backends")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    entries = response.json()
    assert [e["name"] for e in entries] == ["a1", "a2", "b1"]
    for entry in entries:
        for field, kind in SPEC_FIELDS.items():
            assert type(entry[field]) is kind, (field, entry)
        assert entry["status"] in {"healthy", "degraded", "down"}
        assert entry["in_flight"] == 0
    # Latency is that of the answered calls: a2's one call took part of the request's time;
    # b1 was never called.
    latency = {e["name"]: e["latency_ms"] for e in entries}
    assert 0 <= latency["a2"] <= elapsed_ms and latency["b1"] == 0
    assert [e["total_requests"] for e in entries] == [1, 1, 0]
    assert [e["status"] for e in entries] == ["degraded", "healthy", "healthy"]

    # The keys are real (the providers received them) and never come back out.
    a1_key = provider_key("a1")
    assert fake_upstream.requests("a1")[0].headers["authorization"] == f"Bearer {a1_key}"
    assert fake_upstream.requests("a2")[0].headers["x-api-key"] == provider_key("a2")
    for seen in client.seen:
        for name in ("a1", "a2", "b1"):
            assert provider_key(name) not in seen.text
            assert provider_key(name) not in str(seen.headers)


async def test_in_flight_is_visible_during_a_slow_request_and_load_is_balanced(
    fake_upstream: FakeUpstream,
) -> None:
    """a1's answer is held at a relay while the next request is routed: a1 is busy for as
    long as the test looks, so least-in-flight has to send that request to a2."""
    async with open_hold_relay(fake_upstream) as relay, open_router_client(
        layout(fake_upstream, a1={"base_url": relay.base_url("a1", "openai")})
    ) as client:
        fake_upstream.script("a1", Behaviour(latency=0.25))
        relay.hold()
        slow: dict[str, Any] = {}

        async def slow_request() -> None:
            slow["response"] = await client.chat("slow")

        async def a1_busy() -> bool:
            return (await client.backends())["a1"]["in_flight"] == 1

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_request)
                await wait_for(a1_busy)
                # Least in flight wins: a1 (cheaper) is busy, so a2 takes the next request.
                answered_by(await client.chat("fast"), "a2")
                assert (await client.backends())["a2"]["in_flight"] == 0
                assert "response" not in slow  # a1's answer is still held
                relay.release()
        answered_by(slow["response"], "a1")
        backends = await client.backends()
        assert backends["a1"]["in_flight"] == 0
        assert backends["a1"]["total_requests"] == 1
        # The fake waited 0.25 s before answering, so the call cannot have taken less.
        assert backends["a1"]["latency_ms"] >= 250
