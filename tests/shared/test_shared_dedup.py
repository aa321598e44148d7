"""In-flight dedup across routers sharing one Redis: a burst spread over two routers makes one
upstream call and every caller gets the whole answer (JSON, and streams event for event);
a follower that joins a flight under way gets the leader's exact answer; a flight nobody
follows leaves nothing in Redis; tenants never share a flight; a leader whose clients all
left hands the call over; Redis down leaves each router deduplicating on its own, with no
failed request.

Two in-process routers here (one trio loop, separate gateways, nothing shared but Redis);
``test_shared_dedup_processes.py`` does the same with real ``llm-router`` processes. The
routers reach the fake through a relay that holds its answers (``support_hold_relay``) until
every request is in a router and every router's flight is claimed in Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import openai
import orjson
import pytest
import trio
import trio.testing
from support_flights import (
    PROMPT,
    Answer,
    answer_text,
    ask,
    burst,
    claims,
    flight_keys,
    lead_ttl,
    said,
)
from support_hold_relay import HoldRelay, open_hold_relay, wait_all_in
from support_protocols import SDK_STREAM_LEAKS
from support_redis import RedisServer
from support_routing import RouterClient, model_entry, open_router_client, user, wait_for

from engine.runtime.shared_flights import BACKLOG_BYTES
from engine.testing.fake_upstream import Behaviour, FakeUpstream


@asynccontextmanager
async def routers(fake: FakeUpstream, redis: RedisServer, relay: HoldRelay, n: int = 2
                  ) -> AsyncIterator[list[RouterClient]]:
    models = [model_entry(fake, "m", tier=1, base_url=relay.base_url("m", "openai"))]
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(
            open_router_client(models, state={"redis_url": redis.url})) for _ in range(n)]


@pytest.fixture
async def relay(fake_upstream: FakeUpstream) -> AsyncIterator[HoldRelay]:
    async with open_hold_relay(fake_upstream) as relay:
        yield relay


async def held_bursts(clients: list[RouterClient], relay: HoldRelay, redis: RedisServer | None,
                      n: int, keys: tuple[str | None, ...] = (None,), **kwargs: object
                      ) -> list[Answer]:
    """A burst of ``n`` per key, the answers held until all of them are in the routers (the
    in-flight gauge, summed over the routers through Redis or each router's own with
    ``redis`` None) and, with ``redis``, every router's flight of every key is claimed (one
    wins, the others follow it); then they go through."""
    urls = [c.url for c in clients]
    before = 0 if redis is None else await claims(redis.url)
    relay.hold()
    out: list[Answer] = []

    async def one(key: str | None) -> None:
        extra = kwargs if key is None else kwargs | {"key": key}
        out.extend(await burst(clients[0].http, urls, n, **extra))  # type: ignore[arg-type]

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(one, key)
            if redis is None:
                for client in clients:
                    await wait_all_in(client.url, n * len(keys) // len(clients))
            else:
                await wait_all_in(clients[0].url, n * len(keys))
                while await claims(redis.url) - before < len(clients) * len(keys):
                    await trio.sleep(0.005)
            relay.release()
    return out


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_burst_across_routers_makes_one_upstream_call(
    fake_upstream: FakeUpstream, redis_server: RedisServer, relay: HoldRelay, stream: bool,
) -> None:
    async with routers(fake_upstream, redis_server, relay) as clients:
        answers = await held_bursts(clients, relay, redis_server, 20, stream=stream)
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
        await wait_for(counted, poll=0.05)


def sdk(client: RouterClient) -> openai.AsyncOpenAI:
    """The official OpenAI SDK, pointed at the router ``client`` serves."""
    return openai.AsyncOpenAI(base_url=client.router.v1, api_key="sk-client", max_retries=0,
                              http_client=openai.DefaultAsyncHttpxClient(verify=False))


def hold_mid_flight(relay: HoldRelay, stream: bool) -> None:
    """Hold the upstream's answer mid-way: a stream after its second word, an answer whole."""
    if stream:
        relay.hold_after(b"w2")
    else:
        relay.hold()


@SDK_STREAM_LEAKS
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_flight_nobody_follows_leaves_nothing_in_redis(
    fake_upstream: FakeUpstream, redis_server: RedisServer, relay: HoldRelay, stream: bool,
) -> None:
    """Held past a renewal of its lease (a stream with three words out), then answered: all
    the flight ever had in Redis is its lead, which it released (no events stream, no final
    record, no follower's mark)."""
    words = " ".join(f"w{i}" for i in range(8))
    fake_upstream.script("m", Behaviour(text=words))
    async with routers(fake_upstream, redis_server, relay, 1) as (a,), sdk(a) as client:

        async def call() -> None:
            answer = await client.chat.completions.create(
                model="auto", messages=user(PROMPT), stream=stream)
            if stream:
                async for _ in answer:  # type: ignore[union-attr]
                    pass

        hold_mid_flight(relay, stream)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await relay.wait_held(1)
                first = await lead_ttl(redis_server.url)
                while await lead_ttl(redis_server.url) <= first:  # renewed by a's writer
                    await trio.sleep(0.02)
                assert await flight_keys(redis_server.url) == ["lead"]
                relay.release()
            while "lead" in await flight_keys(redis_server.url):  # released in the background
                await trio.sleep(0.005)
        assert await flight_keys(redis_server.url) == []
        assert len(fake_upstream.requests("m")) == 1


@SDK_STREAM_LEAKS
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_follower_joining_a_flight_under_way_gets_the_leaders_exact_answer(
    fake_upstream: FakeUpstream, redis_server: RedisServer, relay: HoldRelay, stream: bool,
) -> None:
    """b's request joins a's flight after a's lease was renewed (JSON: the answer held) or
    with three words of a's stream already out (the rest held); b announces itself in its
    claim, so a writes b its final record, and b's caller gets what a's got."""
    words = " ".join(f"w{i}" for i in range(8))
    fake_upstream.script("m", Behaviour(text=words))
    async with (routers(fake_upstream, redis_server, relay) as (a, b),
                sdk(a) as leader, sdk(b) as follower):
        got: dict[str, tuple[str | None, Any]] = {}
        began = trio.Event()

        async def one(name: str, client: openai.AsyncOpenAI) -> None:
            if not stream:
                raw = await client.chat.completions.with_raw_response.create(
                    model="auto", messages=user(PROMPT))
                done = raw.parse()
                got[name] = raw.headers.get("x-llm-router-dedup"), (
                    done.choices[0].message.content, done.choices[0].finish_reason, done.usage,
                    done.model)
                return
            chunks = await client.chat.completions.create(
                model="auto", messages=user(PROMPT), stream=True)
            told: list[tuple[str | None, str | None]] = []
            async for chunk in chunks:
                for choice in chunk.choices:
                    told.append((choice.delta.content, choice.finish_reason))
                    if choice.delta.content:
                        began.set()
            got[name] = chunks.response.headers.get("x-llm-router-dedup"), told

        hold_mid_flight(relay, stream)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, "a", leader)
                await relay.wait_held(1)
                if stream:
                    await began.wait()  # a's client has part of the answer
                else:
                    first = await lead_ttl(redis_server.url)
                    while await lead_ttl(redis_server.url) <= first:  # renewed by a's writer
                        await trio.sleep(0.02)
                nursery.start_soon(one, "b", follower)
                while await claims(redis_server.url) < 2:  # b's claim: it follows a
                    await trio.sleep(0.005)
                relay.release()
        assert got["a"][0] == "LEADER" and got["b"][0] == "FOLLOWER"
        assert got["b"][1] == got["a"][1]
        if stream:
            assert "".join(c for c, _ in got["a"][1] if c) == words
        else:
            assert got["a"][1][0] == words
        assert len(fake_upstream.requests("m")) == 1


@SDK_STREAM_LEAKS
async def test_a_follower_of_a_stream_past_its_backlog_bound_gets_it_all(
    fake_upstream: FakeUpstream, redis_server: RedisServer, relay: HoldRelay,
) -> None:
    """A stream that held more than ``BACKLOG_BYTES`` for nobody writes it all and goes on
    writing; b's request, joining once 1.2 MiB are out, still gets every word from the
    first, as a's caller does."""
    words = ("y" * 8191 + " ") * 160 + "mark " + "z" * 100 + " end"
    assert len(words) > 1.2 * BACKLOG_BYTES
    fake_upstream.script("m", Behaviour(text=words))
    async with (routers(fake_upstream, redis_server, relay) as (a, b),
                sdk(a) as leader, sdk(b) as follower):
        got: dict[str, tuple[str | None, str]] = {}

        async def one(name: str, client: openai.AsyncOpenAI) -> None:
            chunks = await client.chat.completions.create(
                model="auto", messages=user(PROMPT), stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in chunks
                            if c.choices])
            got[name] = chunks.response.headers.get("x-llm-router-dedup"), text

        relay.hold_after(b"mark")
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, "a", leader)
                await relay.wait_held(1)
                nursery.start_soon(one, "b", follower)
                while await claims(redis_server.url) < 2:  # b's claim: it follows a
                    await trio.sleep(0.005)
                relay.release()
        assert got["a"] == ("LEADER", words) and got["b"] == ("FOLLOWER", words)
        assert len(fake_upstream.requests("m")) == 1


async def test_tenants_never_share_a_flight(
    fake_upstream: FakeUpstream, redis_server: RedisServer, relay: HoldRelay,
) -> None:
    async with routers(fake_upstream, redis_server, relay) as clients:
        await held_bursts(clients, relay, redis_server, 6, keys=("tenant-a", "tenant-b"))
        assert len(fake_upstream.requests("m")) == 2


async def test_a_leader_whose_clients_left_hands_the_call_over(
    fake_upstream: FakeUpstream, redis_server: RedisServer, relay: HoldRelay,
) -> None:
    # The first call never answers. b's three requests are all in hand (one claims, two join
    # it: in flight in b, b's claim made) before the leader's client leaves.
    fake_upstream.script("m", Behaviour(hang=True))
    async with routers(fake_upstream, redis_server, relay) as (a, b):
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
            await wait_for(called)
            for _ in range(3):
                nursery.start_soon(follow)
            with trio.fail_after(60):
                await wait_for(b_claimed, poll=0.005)
                await wait_all_in(b.url, 4)  # a's one and b's three (summed through Redis)
            leader.cancel()  # the leader's only client leaves: its call is cancelled
        assert all(r.status_code == 200 for r, _ in answers) and len(answers) == 3
        assert all(answer_text(t) == f"[m] {PROMPT}" for _, t in answers)
        assert sorted(r.headers["x-llm-router-dedup"] for r, _ in answers) == [
            "FOLLOWER", "FOLLOWER", "LEADER"]  # b took the call over
        requests = fake_upstream.requests("m")
        assert len(requests) == 2 and requests[0].cancelled and requests[1].completed


async def test_redis_down_each_router_dedups_on_its_own(
    fake_upstream: FakeUpstream, redis_server: RedisServer, relay: HoldRelay,
) -> None:
    async with routers(fake_upstream, redis_server, relay) as clients:
        redis_server.kill()
        for stream in (False, True):
            fake_upstream.reset()
            answers = await held_bursts(clients, relay, None, 10, stream=stream)
            assert all(response.status_code == 200 for response, _ in answers)
            assert len(fake_upstream.requests("m")) == 2  # one per router


async def test_redis_dying_mid_flight_fails_no_request(
    fake_upstream: FakeUpstream, redis_server: RedisServer, relay: HoldRelay,
) -> None:
    """a's answer is held while b's three requests follow it and Redis dies; b then calls on
    its own, and both answers go through."""
    async with routers(fake_upstream, redis_server, relay) as (a, b):
        answers: list[Answer] = []

        async def one(client: RouterClient) -> None:
            answers.append(await ask(client.http, client.url))

        async def called() -> bool:
            return len(fake_upstream.requests("m")) == 1

        async def b_claimed() -> bool:
            return await claims(redis_server.url) == 2

        relay.hold()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, a)
                await wait_for(called)
                for _ in range(3):
                    nursery.start_soon(one, b)
                await wait_for(b_claimed, poll=0.005)
                await wait_all_in(b.url, 4)  # a's one and b's three (summed through Redis)
                redis_server.kill()  # b's followers can no longer hear a: b calls on its own
                await relay.wait_held(2)
                relay.release()
        assert len(answers) == 4
        assert all(r.status_code == 200 for r, _ in answers)
        assert all(answer_text(t) == f"[m] {PROMPT}" for _, t in answers)
        assert len(fake_upstream.requests("m")) == 2
