"""Comparisons the router makes itself (``learned.compare``), over HTTP: a sampled routed
answer is asked of the other tier in the background, a judge model grades both, and the two
grades are filed as a comparison report on the request. Clients are the official SDKs; the
upstream is the fake, whose judge backend answers with a scripted verdict.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from router_harness import make_config
from support_routing import RouterClient, model_entry, open_router_client, wait_for

from engine.errors import ConfigInvalid
from engine.testing.fake_upstream import Behaviour, FakeUpstream

PROMPT = "Which prime number follows the number seventeen?"
VERDICT = '{"answer_1": 1, "answer_2": 0}'
COSTS = {"cost_per_1k_in": 1.0, "cost_per_1k_out": 1.0}


def models(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [model_entry(fake, "cheap", tier=1, **COSTS),
            model_entry(fake, "strong", tier=2, **COSTS),
            model_entry(fake, "judge", tier=3, provider="anthropic", **COSTS)]


def learned(**compare: Any) -> dict[str, Any]:
    return {"model": "builtin", "calibrate": False,
            "compare": {"share": 1.0, "judge": "judge"} | compare}


async def routing(client: RouterClient, headers: dict[str, str] | None = None
                  ) -> dict[str, Any]:
    answer = await client.request("GET", "/v1/routing", headers=headers)
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()
    return state


async def compared(client: RouterClient, key: str, n: int,
                   headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Wait until ``compare[key]`` reaches ``n``; the routing state then."""
    async def reached() -> bool:
        return int((await routing(client, headers))["compare"][key]) >= n

    await wait_for(reached)
    return await routing(client, headers)


async def ask(client: RouterClient, prompt: str = PROMPT, *,
              model: str = "auto") -> tuple[str, str]:
    """(request id, answer) of one chat through the OpenAI SDK."""
    async with openai.AsyncOpenAI(base_url=client.router.v1, api_key="t",
                                  max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": prompt}])
    return raw.headers["x-llm-router-request-id"], raw.parse().choices[0].message.content or ""


def served_first(fake: FakeUpstream) -> bool:
    """Whether the judge read the served (tier 1) answer first in its one prompt."""
    (judged,) = fake.requests("judge")
    prompt = judged.body["messages"][0]["content"]
    prompt = prompt if isinstance(prompt, str) else prompt[0]["text"]
    first = prompt.split("<answer_1>")[1].split("</answer_1>")[0]
    assert PROMPT in prompt and "[strong]" in prompt and "[cheap]" in prompt
    return "[cheap]" in first


async def test_a_sampled_answer_is_compared_and_reported(fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_default("judge", Behaviour(text=VERDICT))
    async with open_router_client(models(fake_upstream), learned=learned()) as client:
        request_id, answer = await ask(client)
        assert answer == f"[cheap] {PROMPT}"  # the client's answer is the routed one
        state = await compared(client, "reported", 1)

        # The other tier got the same question, uncached; the judge graded both answers.
        (other,) = fake_upstream.requests("strong")
        assert other.body["messages"] == [{"role": "user", "content": PROMPT}]
        assert other.body.get("stream") is not True
        served_won = served_first(fake_upstream)
        # The report is on the request, in the served answer's grade: 1 where the judge's
        # first answer was the served one, 0 where it was the other tier's.
        assert state["feedback"]["by_tier"] == {
            "1": {"reports": 1, "mean_quality": 1.0 if served_won else 0.0}}
        assert state["learning"]["compared"] == 1 and state["learning"]["reports"] == 1
        compare = state["compare"]
        assert compare["sampled"] == compare["reported"] == 1 and compare["running"] == 0
        assert compare["failed"] == compare["unreadable"] == 0
        assert compare["spent_usd"] > 0 and compare["spent_usd_last_hour"] == compare["spent_usd"]
        assert compare["scope"] == "process"
        # GET /metrics counts them too.
        metrics = await scrape(client)
        assert metrics[("llm_router_comparisons_total", (("outcome", "reported"),))] == 1
        assert metrics[("llm_router_comparisons_total", (("outcome", "sampled"),))] == 1
        assert metrics[("llm_router_comparisons_running", ())] == 0
        assert metrics[("llm_router_comparison_spend_usd_total", ())] == pytest.approx(
            compare["spent_usd"], abs=1e-6)
        # Both calls are paid like any other and show in /stats under their models.
        by_model = (await client.stats())["by_model"]
        assert by_model == {"cheap": 1, "strong": 1, "judge": 1}
        # Feedback on the same request by a client later is still accepted (it is remembered).
        again = await client.request("POST", "/v1/feedback",
                                     json={"request_id": request_id, "quality": 1.0})
        assert again.status_code == 200, again.text


async def scrape(client: RouterClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = await client.request("GET", "/metrics")
    assert answer.status_code == 200, answer.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


async def test_a_streamed_answer_is_compared_once_it_has_streamed(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.set_default("judge", Behaviour(text=VERDICT))
    async with open_router_client(models(fake_upstream), learned=learned()) as client:
        async with anthropic.AsyncAnthropic(base_url=client.url, api_key="t",
                                            max_retries=0) as claude, claude.messages.stream(
            model="auto", max_tokens=64,
            messages=[{"role": "user", "content": PROMPT}]) as stream:
            text = await stream.get_final_text()
        assert text == f"[cheap] {PROMPT}"
        state = await compared(client, "reported", 1)
        assert served_first(fake_upstream) == (
            state["feedback"]["by_tier"]["1"]["mean_quality"] == 1.0)


async def test_an_unreadable_verdict_or_a_failed_call_is_dropped_and_serving_goes_on(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.script("judge", Behaviour(text="Both answers look fine to me."))
    async with open_router_client(models(fake_upstream), learned=learned()) as client:
        await ask(client)
        state = await compared(client, "unreadable", 1)
        assert "feedback" not in state or state["feedback"]["total"] == 0

        # Tier 2 fails: its call fails over to tier 3, which is not the other tier, so the
        # comparison is dropped before the judge is asked.
        fake_upstream.script("strong", Behaviour(status=500))
        await ask(client)
        state = await compared(client, "failed", 1)
        assert state["compare"]["reported"] == 0 and state["compare"]["running"] == 0
        assert len(fake_upstream.requests("judge")) == 2  # the failover's call, no grading
        _, answer = await ask(client, "Say hello.")
        assert answer == "[cheap] Say hello."


async def test_pinned_requests_cache_hits_and_unsampled_answers_are_not_compared(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.set_default("judge", Behaviour(text=VERDICT))
    async with open_router_client(models(fake_upstream), learned=learned(),
                                  cache={"enabled": True}) as client:
        await ask(client, model="cheap")  # pinned: not routed, nothing to compare
        await ask(client)
        await compared(client, "reported", 1)
        async with openai.AsyncOpenAI(base_url=client.router.v1, api_key="t",
                                      max_retries=0) as sdk:  # the same question: a cache hit
            raw = await sdk.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": PROMPT}])
        assert raw.headers["x-llm-router-cache"] == "HIT"
        # A request that asks not to be stored is not sent to any other model either.
        async with openai.AsyncOpenAI(base_url=client.router.v1, api_key="t",
                                      max_retries=0) as sdk:
            await sdk.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "Private, please."}],
                extra_headers={"cache-control": "no-store"})
        state = await routing(client)
        assert state["compare"]["sampled"] == 1 and len(fake_upstream.requests("strong")) == 1
    fake_upstream.reset()
    async with open_router_client(models(fake_upstream),
                                  learned=learned(share=0.0)) as client:
        await ask(client)
        assert "compare" not in await routing(client)
    assert fake_upstream.requests("strong") == []


async def test_comparisons_stay_within_their_concurrency_and_their_budget(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.set_default("judge", Behaviour(text=VERDICT))
    fake_upstream.script("strong", Behaviour(hang=True))
    async with open_router_client(models(fake_upstream),
                                  learned=learned(max_running=1)) as client:
        await ask(client)
        await wait_for(lambda: _strong_called(fake_upstream))
        await ask(client, "Another question entirely, about rivers?")
        state = await routing(client)
        assert state["compare"]["running"] == 1 and state["compare"]["skipped_busy"] == 1
    fake_upstream.reset()
    fake_upstream.set_default("judge", Behaviour(text=VERDICT))
    async with open_router_client(models(fake_upstream),
                                  learned=learned(max_usd_per_hour=1e-9)) as client:
        await ask(client)
        await compared(client, "reported", 1)
        await ask(client, "Another question entirely, about rivers?")
        state = await compared(client, "skipped_budget", 1)
        assert state["compare"]["sampled"] == 1 and state["compare"]["running"] == 0
        assert len(fake_upstream.requests("strong")) == 1


async def _strong_called(fake: FakeUpstream) -> bool:
    return bool(fake.requests("strong"))


@pytest.mark.parametrize(("compare", "message"), [
    ({"share": 0.1}, "judge must name"),
    ({"share": 0.1, "judge": "nobody"}, "no model is named 'nobody'"),
])
def test_a_comparison_needs_a_configured_judge(compare: dict[str, Any], message: str) -> None:
    entries = [{"name": name, "provider": "openai", "model": name, "tier": tier,
                "base_url": "http://127.0.0.1:9/v1"} for name, tier in (("a", 1), ("b", 2))]
    with pytest.raises(ConfigInvalid, match=message):
        make_config({"models": entries, "learned": {"compare": compare}})


ADMIN = "admin-key-for-comparison-tests"
AS_ADMIN = {"authorization": f"Bearer {ADMIN}"}


async def test_a_key_capped_below_the_other_tier_or_the_judge_is_not_compared(
    fake_upstream: FakeUpstream,
) -> None:
    """A client key's ``max_tier`` bounds where its text may go: a comparison would send it
    to the other tier and the judge, so a key capped below either is never compared. A
    comparison's calls are the router's own: the key pays only for its answer."""
    fake_upstream.set_default("judge", Behaviour(text=VERDICT))
    async with open_router_client(models(fake_upstream), learned=learned(),
                                  server={"admin_key": ADMIN}) as client:
        keys = {}
        for cap in (1, 2, 3):
            made = await client.request("POST", "/v1/admin/keys",
                                        headers=AS_ADMIN,
                                        json={"name": f"cap-{cap}", "max_tier": cap})
            assert made.status_code == 201, made.text
            keys[cap] = (made.json()["id"], made.json()["key"])
        for cap, (_, secret) in keys.items():
            async with openai.AsyncOpenAI(base_url=client.router.v1, api_key=secret,
                                          max_retries=0) as sdk:
                answer = await sdk.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": f"{PROMPT} ({cap})"}])
            assert answer.choices[0].message.content == f"[cheap] {PROMPT} ({cap})"
        state = await compared(client, "reported", 1, AS_ADMIN)
        assert state["compare"]["sampled"] == 1
        # Only the key allowed tier 3 (the judge's) was compared.
        (other,) = fake_upstream.requests("strong")
        assert other.body["messages"][0]["content"].endswith("(3)")
        stats = (await client.request("GET", "/stats", headers=AS_ADMIN)).json()["by_key"]
        key_id = keys[3][0]
        assert stats[key_id]["requests"] == 1
        assert stats[key_id]["spent_usd"] == stats[keys[1][0]]["spent_usd"] > 0
