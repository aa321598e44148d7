"""In-flight dedup across routers sharing one Redis: a burst spread over two routers makes one
upstream call and every caller gets the whole answer (JSON, and streams event for event);
tenants never share a flight; a leader whose clients all left hands the call over; Redis down
leaves each router deduplicating on its own, with no failed request.

Two in-process routers here (one trio loop, separate gateways, nothing shared but Redis);
``test_shared_dedup_processes.py`` does the same with real ``llm-router`` processes. The
fake upstream's latency keeps the first call in flight while the others arrive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import orjson
import pytest
import trio
from support_flights import PROMPT, Answer, answer_text, ask, burst, claims, said
from support_redis import RedisServer
from support_routing import RouterClient, model_entry, open_router_client, wait_for

from engine.testing.fake_upstream import Behaviour, FakeUpstream


@asynccontextmanager
async def routers(fake: FakeUpstream, redis: RedisServer, n: int = 2
                  ) -> AsyncIterator[list[RouterClient]]:
    models = [model_entry(fake, "m", tier=1)]
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(
            open_router_client(models, state={"redis_url": redis.url})) for _ in range(n)]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_burst_across_routers_makes_one_upstream_call(
    fake_upstream: FakeUpstream, redis_server: RedisServer, stream: bool,
) -> None:
    fake_upstream.set_default("m", Behaviour(latency=0.5, chunk_delay=0.02))
    async with routers(fake_upstream, redis_server) as clients:
        answers = await burst(clients[0].http, [c.url for c in clients], 20, stream=stream)
        assert len(fake_upstream.requests("m")) == 1
        assert all(response.status_code == 200 for response, _ in answers)
        roles = sorted(response.headers["x-llm-router-dedup"] for response, _ in answers)
        assert roles == ["FOLLOWER"] * 19 + ["LEADER"]
        if stream:
            told = [said(text) for _, text in answers]
            assert told[0][-1] == "[DONE]" and len(told[0]) > 5
            assert all(t == told[0] for t in told)
            assert "".join(c for c, _ in told[0][:-1] if c) == f"[m] {PROMPT}"
        else:
            bodies = [orjson.loads(text)["choices"] for _, text in answers]
            assert all(b == bodies[0] for b in bodies)
            assert answer_text(answers[0][1]) == f"[m] {PROMPT}"
        # Totals are shared too: once every process has written its counts (each does so
        # every 0.25 s), any of them shows the burst's.
        async def counted() -> bool:
            stats = [await client.stats() for client in clients]
            return all(s["dedup"]["joined"] == 19 and s["total_requests"] == 20
                       for s in stats)
        await wait_for(counted, timeout=5, poll=0.05)


async def test_tenants_never_share_a_flight(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    fake_upstream.set_default("m", Behaviour(latency=0.5))
    async with routers(fake_upstream, redis_server) as clients:
        urls = [c.url for c in clients]
        async with trio.open_nursery() as nursery:
            for key in ("tenant-a", "tenant-b"):
                nursery.start_soon(lambda k=key: burst(clients[0].http, urls, 6, key=k))
        assert len(fake_upstream.requests("m")) == 2


async def test_a_leader_whose_clients_left_hands_the_call_over(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    # The first call never answers; the second takes a second, so that b's three requests
    # are all in hand (one claims, two join it) before it ends, however slow the machine.
    fake_upstream.script("m", Behaviour(hang=True), Behaviour(latency=1.0))
    async with routers(fake_upstream, redis_server) as (a, b):
        answers: list[Answer] = []
        async with trio.open_nursery() as nursery:
            leader = trio.CancelScope()

            async def lead() -> None:
                with leader:
                    await ask(a.http, a.url)

            async def follow() -> None:
                answers.append(await ask(b.http, b.url))

            async def called() -> bool:
                return len(fake_upstream.requests("m")) == 1

            async def b_claimed() -> bool:
                return await claims(redis_server.url) == 2  # a's, then b's (its 3 share one)

            nursery.start_soon(lead)
            await wait_for(called, timeout=5)
            for _ in range(3):
                nursery.start_soon(follow)
            await wait_for(b_claimed, timeout=5, poll=0.02)
            leader.cancel()  # the leader's only client leaves: its call is cancelled
        assert all(r.status_code == 200 for r, _ in answers) and len(answers) == 3
        assert all(answer_text(t) == f"[m] {PROMPT}" for _, t in answers)
        assert sorted(r.headers["x-llm-router-dedup"] for r, _ in answers) == [
            "FOLLOWER", "FOLLOWER", "LEADER"]  # b took the call over
        requests = fake_upstream.requests("m")
        assert len(requests) == 2 and requests[0].cancelled and requests[1].completed


async def test_redis_down_each_router_dedups_on_its_own(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    fake_upstream.set_default("m", Behaviour(latency=0.5, chunk_delay=0.02))
    async with routers(fake_upstream, redis_server) as clients:
        redis_server.kill()
        for stream in (False, True):
            fake_upstream.reset()
            answers = await burst(clients[0].http, [c.url for c in clients], 10, stream=stream)
            assert all(response.status_code == 200 for response, _ in answers)
            assert len(fake_upstream.requests("m")) == 2  # one per router


async def test_redis_dying_mid_flight_fails_no_request(
    fake_upstream: FakeUpstream, redis_server: RedisServer,
) -> None:
    fake_upstream.script("m", Behaviour(latency=2))  # the leader's call; then at once
    async with routers(fake_upstream, redis_server) as (a, b):
        answers: list[Answer] = []

        async def one(client: RouterClient) -> None:
            answers.append(await ask(client.http, client.url))

        async def called() -> bool:
            return len(fake_upstream.requests("m")) == 1

        async def b_claimed() -> bool:
            return await claims(redis_server.url) == 2

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, a)
            await wait_for(called, timeout=5)
            for _ in range(3):
                nursery.start_soon(one, b)
            await wait_for(b_claimed, timeout=5, poll=0.02)
            redis_server.kill()  # b's followers can no longer hear a: b calls on its own
        assert len(answers) == 4
        assert all(r.status_code == 200 for r, _ in answers)
        assert all(answer_text(t) == f"[m] {PROMPT}" for _, t in answers)
        assert len(fake_upstream.requests("m")) == 2
