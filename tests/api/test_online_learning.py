"""Online learning over HTTP: feedback naming a request teaches the trained router, which
then routes that kind of request elsewhere; what one credential can teach is capped; the
admin resets it; GET /v1/routing shows it. Chat calls go through the official SDKs.

Two prompts of the same heuristic score (5) stand for two kinds of traffic: comparison
reports say the cheap model fails one (quality 0) where the strong model serves it, and
serves the other (quality 1) better than the strong model does: the strong model gains on
the first only. A constant shift of the
shipped model cannot explain both, so the floor, which judges on comparisons, lets the
correction apply once it is surely ahead (``online_tolerance`` is tiny here; threshold
calibration is off so only beliefs move). Most
tests here watch the correction alone (``online_regions: false``); the last ones, the
per-region levels that are on by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic
import openai
from support_routing import RouterClient, model_entry, open_router_client

from engine.core.routing.floor import SURE
from engine.testing.fake_upstream import FakeUpstream

HARD = "Which prime number follows the number seventeen?"
EASY = "Please say a warm hello to my dear old friend Anna for me today."
ADMIN = "admin-key-for-online-learning-tests"
LEARNED = {"model": "builtin", "calibrate": False, "online_rate": 2.0, "online_max_step": 2.0,
           "online_tolerance": 0.001, "online_regions": False}


def models(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [model_entry(fake, "cheap", tier=1), model_entry(fake, "strong", tier=2)]


async def ask(client: RouterClient, prompt: str, *, key: str = "t") -> tuple[str, int, int]:
    """(request id, score, tier) of one chat through the OpenAI SDK."""
    async with openai.AsyncOpenAI(base_url=client.router.v1, api_key=key,
                                  max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": prompt}])
    return (raw.headers["x-llm-router-request-id"], int(raw.headers["x-llm-router-score"]),
            int(raw.headers["x-llm-router-tier"]))


async def report(client: RouterClient, request_id: str, quality: float, *,
                 other: float | None = None,
                 headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Feedback on one answer; with ``other``, a comparison report (the other tier's
    answer to the same request was rated too)."""
    body = {"request_id": request_id, "quality": quality}
    if other is not None:
        body["other_quality"] = other
    answer = await client.request("POST", "/v1/feedback", headers=dict(headers or {}),
                                  json=body)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def learning(client: RouterClient, **headers: str) -> dict[str, Any]:
    answer = await client.request("GET", "/v1/routing", headers=headers)
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()["learning"]
    return state


async def teach_until_hard_goes_up(client: RouterClient, *, key: str = "t",
                                   rounds: int = 60) -> int:
    """Compare honestly on both prompts until HARD leaves tier 1; the rounds it took."""
    auth = {"authorization": f"Bearer {key}"} if key != "t" else {}
    for n in range(1, rounds + 1):
        hard_id, _, hard_tier = await ask(client, HARD, key=key)
        if hard_tier == 2:
            return n
        easy_id, _, _ = await ask(client, EASY, key=key)
        assert (await report(client, hard_id, 0.0, other=1.0,
                             headers=auth))["learning"]["learned"]
        await report(client, easy_id, 1.0, other=0.0, headers=auth)
    raise AssertionError(f"HARD still on tier 1 after {rounds} rounds: "
                         f"{await learning(client)}")


async def test_feedback_teaches_the_router_and_routing_follows(
    fake_upstream: FakeUpstream,
) -> None:
    async with open_router_client(models(fake_upstream), learned=LEARNED) as client:
        fresh = await learning(client)
        assert fresh["reports"] == 0 and fresh["gate"] == 0.0 and fresh["floor"] is None
        _, hard_before, tier_before = await ask(client, HARD)
        _, easy_before, _ = await ask(client, EASY)
        assert tier_before == 1

        rounds = await teach_until_hard_goes_up(client)

        _, hard_after, _ = await ask(client, HARD)
        _, easy_after, easy_tier = await ask(client, EASY)
        assert hard_after > hard_before and easy_after <= easy_before and easy_tier == 1
        state = await learning(client)
        assert state["enabled"] is True and state["reports"] == 2 * (rounds - 1)
        assert state["gate"] > 0 and state["log_loss"]["online"] < state["log_loss"]["shipped"]
        assert state["reporters"] == 0  # reports came without a credential: none to cap
        # The Anthropic side is routed by the same learned belief.
        async with anthropic.AsyncAnthropic(base_url=client.url, api_key="t",
                                            max_retries=0) as claude:
            raw = await claude.messages.with_raw_response.create(
                model="auto", max_tokens=16, messages=[{"role": "user", "content": HARD}])
        assert raw.headers["x-llm-router-tier"] == "2"


async def test_the_learning_survives_a_restart(fake_upstream: FakeUpstream,
                                              tmp_path: Any) -> None:
    settings = LEARNED | {"feedback_db": str(tmp_path / "feedback.db")}
    async with open_router_client(models(fake_upstream), learned=settings) as client:
        await teach_until_hard_goes_up(client)
        taught = await learning(client)
    async with open_router_client(models(fake_upstream), learned=settings) as client:
        assert (await ask(client, HARD))[2] == 2
        assert (await learning(client))["reports"] == taught["reports"]


async def test_one_credential_cannot_teach_past_its_cap(fake_upstream: FakeUpstream) -> None:
    keys = ["k-mallory-0123456789", "k-alice-0123456789"]
    async with open_router_client(models(fake_upstream), server={"api_keys": keys},
                                  learned=LEARNED | {"online_key_cap": 5}) as client:
        mallory = {"authorization": f"Bearer {keys[0]}"}
        weights = []
        for _ in range(8):
            request_id, _, _ = await ask(client, HARD, key=keys[0])
            weights.append((await report(client, request_id, 0.0,
                                         headers=mallory))["learning"]["weight"])
        assert weights[:5] == [1.0] * 5
        assert all(w < 0.01 for w in weights[5:]), weights
        request_id, _, _ = await ask(client, EASY, key=keys[1])
        alice = await report(client, request_id, 1.0,
                             headers={"x-api-key": keys[1]})
        assert alice["learning"]["weight"] == 1.0
        state = await learning(client, authorization=f"Bearer {keys[1]}")
        assert state["reporters"] == 2
        assert keys[0] not in str(state) and keys[1] not in str(state)


async def test_the_admin_resets_what_was_learned(fake_upstream: FakeUpstream) -> None:
    async with open_router_client(models(fake_upstream), learned=LEARNED,
                                  server={"admin_key": ADMIN}) as client:
        made = await client.request("POST", "/v1/admin/keys", json={"name": "app"},
                                    headers={"authorization": f"Bearer {ADMIN}"})
        key = made.json()["key"]
        _, hard_before, _ = await ask(client, HARD, key=key)
        await teach_until_hard_goes_up(client, key=key)

        refused = await client.request("DELETE", "/v1/routing/learning",
                                       headers={"authorization": f"Bearer {key}"})
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert (await ask(client, HARD, key=key))[2] == 2

        done = await client.request("DELETE", "/v1/routing/learning",
                                    headers={"authorization": f"Bearer {ADMIN}"})
        assert done.status_code == 200, done.text
        assert done.json()["reset"] is True and done.json()["learning"]["reports"] == 0
        assert ADMIN not in done.text
        _, hard_after, tier = await ask(client, HARD, key=key)
        assert (hard_after, tier) == (hard_before, 1)


async def test_reset_without_an_admin_key_or_learning_is_a_clear_4xx(
    fake_upstream: FakeUpstream,
) -> None:
    async with open_router_client(models(fake_upstream), learned=LEARNED) as client:
        off = await client.request("DELETE", "/v1/routing/learning")
        assert off.status_code == 404 and "server.admin_key" in off.json()["error"]["message"]
    async with open_router_client(models(fake_upstream), server={"admin_key": ADMIN},
                                  learned=LEARNED | {"online": False}) as client:
        assert (await learning(client, authorization=f"Bearer {ADMIN}")) == {"enabled": False}
        off = await client.request("DELETE", "/v1/routing/learning",
                                   headers={"x-api-key": ADMIN})
        assert off.status_code == 400
        assert "online learning is not enabled" in off.json()["error"]["message"]


async def test_a_stated_report_calibrates_but_teaches_nothing(
    fake_upstream: FakeUpstream,
) -> None:
    async with open_router_client(models(fake_upstream), learned=LEARNED) as client:
        answer = await client.request("POST", "/v1/feedback",
                                      json={"score": 0.2, "tier": 1, "quality": 0.0})
        assert answer.status_code == 200 and "learning" not in answer.json()
        assert (await learning(client))["reports"] == 0


async def test_a_comparison_report_teaches_whether_the_strong_model_was_better(
    fake_upstream: FakeUpstream,
) -> None:
    """``other_quality``: the deployment rated the other tier's answer to the same request
    too. HARD: the strong model did better (target 1); EASY: both did as well (target 0.5).
    The shipped router believes EASY the harder of the two; the comparisons reorder them."""
    async with open_router_client(models(fake_upstream), learned=LEARNED) as client:
        _, hard_before, _ = await ask(client, HARD)
        _, easy_before, _ = await ask(client, EASY)
        assert hard_before < easy_before
        for _ in range(40):
            hard_id, _, _ = await ask(client, HARD)
            easy_id, _, _ = await ask(client, EASY)
            taught = await client.request("POST", "/v1/feedback", json={
                "request_id": hard_id, "quality": 0.0, "other_quality": 1.0})
            assert taught.status_code == 200, taught.text
            assert taught.json()["learning"]["target"] == 1.0
            await client.request("POST", "/v1/feedback", json={
                "request_id": easy_id, "quality": 1.0, "other_quality": 1.0})
        _, hard_after, _ = await ask(client, HARD)
        _, easy_after, _ = await ask(client, EASY)
        assert hard_after > easy_after
        state = await learning(client)
        assert state["compared"] == state["reports"] == 80
        assert state["mix"]["comparisons"] == 80 and state["mix"]["gate"] > 0
        assert state["concordance"] is not None
        assert set(state["mix"]) == {"comparisons", "gate", "weights", "concordance", "floor"}
        # How far each floor is from opening, on the comparisons it judged.
        assert state["floor"]["comparisons"] == state["mix"]["floor"]["comparisons"] == 80
        floor = state["mix"]["floor"]
        assert floor["lead"] - SURE * floor["error"] > 0 and state["mix"]["gate"] > 0


async def test_a_bad_comparison_is_a_clear_400(fake_upstream: FakeUpstream) -> None:
    async with open_router_client(models(fake_upstream), learned=LEARNED) as client:
        request_id, _, _ = await ask(client, HARD)
        for body, says in [
            ({"request_id": request_id, "quality": 1.0, "other_quality": 1.5},
             "other_quality must be a number from 0 to 1"),
            ({"request_id": request_id, "quality": 1.0, "other_quality": "good"},
             "other_quality must be a number from 0 to 1"),
            ({"score": 0.2, "tier": 1, "quality": 1.0, "other_quality": 0.0},
             "name it with request_id"),
        ]:
            answer = await client.request("POST", "/v1/feedback", json=body)
            assert answer.status_code == 400, answer.text
            error = answer.json()["error"]
            assert says in error["message"] and error["param"] == "other_quality"
        assert (await learning(client))["reports"] == 0


GREETING = "hi there {n}"
TASK = ("Implement a thread-safe LRU cache in C++ with O(1) operations, capacity {n}, and "
        "explain the invariants step by step. Prove that the amortized cost is constant and "
        "analyze the memory model under the C++ standard with detailed reasoning.")


async def test_regions_move_a_kind_of_request_and_survive_a_restart_until_reset(
    fake_upstream: FakeUpstream, tmp_path: Any,
) -> None:
    """Regions on (the default), the correction held to a negligible bound so that only the
    regions can move anything: reports say the cheap model fails greetings, which the shipped
    router believes far easier than a C++ task that the strong model does no better on (both
    answers poor). Greetings go up a tier; the regions show in GET /v1/routing, outlive a
    restart, and the admin reset forgets them."""
    settings = {"model": "builtin", "calibrate": False, "online_max_shift": 0.01,
                "feedback_db": str(tmp_path / "feedback.db")}
    async with open_router_client(models(fake_upstream), learned=settings) as client:
        assert (await ask(client, GREETING.format(n=0)))[2] == 1
        for n in range(1, 61):
            greeting_id, _, tier = await ask(client, GREETING.format(n=n))
            if tier == 2:
                break
            task_id, _, _ = await ask(client, TASK.format(n=n))
            await report(client, greeting_id, 0.0, other=1.0)
            await report(client, task_id, 0.0, other=0.0)
        else:
            raise AssertionError(f"greetings still on tier 1: {await learning(client)}")
        state = await learning(client)
        assert state["settings"]["regions"] is True
        assert state["regions"]["count"] == 2 and state["regions"]["shift"]["max"] > 0
    async with open_router_client(models(fake_upstream), learned=settings,
                                  server={"admin_key": ADMIN}) as client:
        admin = {"authorization": f"Bearer {ADMIN}"}
        made = await client.request("POST", "/v1/admin/keys", json={"name": "app"},
                                    headers=admin)
        key = made.json()["key"]
        assert (await ask(client, GREETING.format(n=99), key=key))[2] == 2
        assert (await learning(client, **admin))["regions"] == state["regions"]
        done = await client.request("DELETE", "/v1/routing/learning", headers=admin)
        assert done.status_code == 200, done.text
        assert done.json()["learning"]["regions"] is None
        assert (await ask(client, GREETING.format(n=99), key=key))[2] == 1
