"""Client keys across two real ``llm-router`` processes sharing one Redis, called through the
official OpenAI and Anthropic SDKs: a key made through A works on B; revoked on A, it is
refused (401) on B within a bounded wait; ``rpm`` counts the calls of both; a budget worth 3
calls, with 20 calls at once split over both, is overspent by at most one call; and Redis
killed mid-traffic fails no request.

Upstream calls are counted at the fake upstream, which outlives the processes. One call
reports 1 input and 10 output tokens on ``small`` ($50 per 1k tokens): $0.55, and the most it
may cost (what admission holds) is its estimated input plus ``max_tokens`` 10: $0.55-0.60.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import trio
from support_processes import fake_model, two_routers, write_router_config
from support_redis import RedisServer
from support_routing import wait_for

from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage

ADMIN = "admin-key-for-shared-key-tests"
AS_ADMIN = {"authorization": f"Bearer {ADMIN}"}
CALL_USD = 0.55


def write_config(folder: Path, fake: FakeUpstream, redis_url: str) -> Path:
    """One ``small`` model whose every answer costs the same (``CALL_USD``)."""
    fake.set_default("small", Behaviour(usage=Usage(input_tokens=1, output_tokens=10)))
    return write_router_config(folder, redis_url, [fake_model(fake, "small", price=50.0)],
                               server={"admin_key": ADMIN})


async def new_key(http: httpx.AsyncClient, url: str, **settings: Any) -> tuple[str, str]:
    made = await http.post(f"{url}/v1/admin/keys", headers=AS_ADMIN,
                           json={"name": "t", **settings})
    assert made.status_code == 201, made.text
    return made.json()["id"], made.json()["key"]


@asynccontextmanager
async def sdks(url: str, secret: str) -> AsyncIterator[tuple[openai.AsyncOpenAI,
                                                             anthropic.AsyncAnthropic]]:
    async with (openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0) as gpt,
                anthropic.AsyncAnthropic(base_url=url, api_key=secret, max_retries=0) as claude):
        yield gpt, claude


async def ask_openai(gpt: openai.AsyncOpenAI, text: str = "Hi") -> Any:
    return await gpt.chat.completions.create(
        model="small", max_tokens=10, messages=[{"role": "user", "content": text}])


async def ask_anthropic(claude: anthropic.AsyncAnthropic, text: str = "Hi") -> Any:
    return await claude.messages.create(
        model="small", max_tokens=10, messages=[{"role": "user", "content": text}])


async def test_a_key_made_on_one_process_works_on_the_other_until_revoked(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    async with two_routers(tmp_path, write_config, fake_upstream, redis_server.url) as (a, b, http):
        key_id, secret = await new_key(http, a)
        async with sdks(b, secret) as (gpt, claude):
            assert (await ask_openai(gpt)).choices[0].message.content
            assert (await ask_anthropic(claude)).content[0].text
            revoked = await http.delete(f"{a}/v1/admin/keys/{key_id}", headers=AS_ADMIN)
            assert revoked.status_code == 200 and revoked.json()["revoked_at"]

            async def b_refuses() -> bool:
                try:
                    await ask_openai(gpt)
                except openai.AuthenticationError as exc:
                    return "revoked" in exc.message
                return False

            await wait_for(b_refuses, poll=0.01)
            try:
                await ask_anthropic(claude)
                raise AssertionError("a revoked key was served")
            except anthropic.AuthenticationError as exc:
                assert exc.status_code == 401 and exc.body["type"] == "error"
        shown = await http.get(f"{b}/v1/admin/keys/{key_id}", headers=AS_ADMIN)
        assert shown.json()["revoked_at"] == revoked.json()["revoked_at"]
        assert secret not in shown.text


async def test_requests_per_minute_count_both_processes(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    async with two_routers(tmp_path, write_config, fake_upstream, redis_server.url) as (a, b, http):
        _, secret = await new_key(http, b, rpm=4)
        async with sdks(a, secret) as (gpt_a, _), sdks(b, secret) as (_, claude_b):
            for i in range(2):
                answer = await gpt_a.chat.completions.with_raw_response.create(
                    model="small", max_tokens=10, messages=[{"role": "user", "content": "x"}])
                assert answer.headers["x-ratelimit-remaining-requests"] == str(3 - 2 * i)
                await ask_anthropic(claude_b)
            try:
                await ask_anthropic(claude_b)
                raise AssertionError("a fifth call within the minute was served")
            except anthropic.RateLimitError as exc:
                assert 1 <= int(exc.response.headers["retry-after"]) <= 15
            try:
                await ask_openai(gpt_a)
                raise AssertionError("a fifth call within the minute was served")
            except openai.RateLimitError as exc:
                assert exc.body is not None and "4 requests per minute" in exc.message
    assert len(fake_upstream.requests("small")) == 4


async def test_a_budget_split_over_both_processes_is_overspent_by_at_most_one_call(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    async with two_routers(tmp_path, write_config, fake_upstream, redis_server.url) as (a, b, http):
        fake_upstream.set_default("small", Behaviour(
            latency=0.2, usage=Usage(input_tokens=1, output_tokens=10)))
        key_id, secret = await new_key(http, a, budget_usd=3 * CALL_USD, budget_period="day")
        outcomes: list[str] = []
        async with sdks(a, secret) as (gpt, _), sdks(b, secret) as (_, claude):

            async def via_a(i: int) -> None:
                try:
                    await ask_openai(gpt, f"Hi {i}")
                    outcomes.append("paid")
                except openai.RateLimitError as exc:
                    assert exc.code == "budget_exceeded"
                    outcomes.append("refused")

            async def via_b(i: int) -> None:
                try:
                    # not via_a's question: two identical requests in flight at once would be
                    # one upstream call (dedup joins them across processes), two answers
                    await ask_anthropic(claude, f"Hello {i}")
                    outcomes.append("paid")
                except anthropic.RateLimitError as exc:
                    assert "budget" in exc.message
                    outcomes.append("refused")

            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(via_a, i)
                    nursery.start_soon(via_b, i)
        calls = len(fake_upstream.requests("small"))
        assert outcomes.count("paid") == calls and len(outcomes) == 20
        assert 3 <= calls <= 4  # the budget, and at most one call over it

        async def spend_seen_by_both() -> bool:
            seen = [(await http.get(f"{url}/v1/admin/keys/{key_id}", headers=AS_ADMIN)
                     ).json()["usage"] for url in (a, b)]
            return all(u["spent_usd"] == round(calls * CALL_USD, 8) and u["requests"] == calls
                       for u in seen)

        await wait_for(spend_seen_by_both, poll=0.05)


async def test_redis_killed_mid_traffic_fails_no_request(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    async with two_routers(tmp_path, write_config, fake_upstream, redis_server.url) as (a, b, http):
        _, limited = await new_key(http, a, rpm=1000, budget_usd=100.0)
        _, free = await new_key(http, b)
        sent = 0
        async with (sdks(a, limited) as (gpt_a, _), sdks(b, limited) as (_, claude_b),
                    sdks(a, free) as (_, claude_a), sdks(b, free) as (gpt_b, _)):

            async def traffic(rounds: int) -> None:
                nonlocal sent
                for i in range(rounds):
                    await ask_openai(gpt_a, f"a{i}")
                    await ask_anthropic(claude_b, f"b{i}")
                    await ask_anthropic(claude_a, f"c{i}")
                    await ask_openai(gpt_b, f"d{i}")
                    sent += 4

            async with trio.open_nursery() as nursery:
                nursery.start_soon(traffic, 20)
                await wait_for(lambda: _at_least(lambda: sent, 20))
                redis_server.kill()
            await traffic(5)  # with Redis gone for good
            health = (await http.get(f"{b}/health")).json()
            assert health["redis"]["status"] != "ok"
            redis_server.start()  # empty
            await traffic(5)
    assert len(fake_upstream.requests("small")) == sent == 120


async def _at_least(value: Any, n: int) -> bool:
    return bool(value() >= n)
