"""In-flight dedup across real ``llm-router`` processes sharing one Redis: a burst of 20
identical requests spread over three processes makes one upstream call; a leader process
killed (SIGKILL) mid-flight is replaced by a follower, whose callers each get one complete
answer; a streaming follower that had already relayed part of the answer ends its stream with
an error instead of a second answer spliced on. The fake upstream runs in the test and
outlives the routers, so it counts every upstream call. The routers reach it through a relay
that holds its answers (``support_hold_relay``) until the requests are in the routers (the
in-flight gauge, summed over the processes through Redis) and the flights are claimed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from support_flights import PROMPT, Answer, answer_text, ask, burst, claims, said
from support_hold_relay import HoldRelay, open_hold_relay, wait_all_in
from support_processes import fake_model, router_process, write_router_config
from support_redis import RedisServer
from support_routing import user, wait_for

from engine.testing.fake_upstream import Behaviour, FakeUpstream


def write_config(folder: Path, fake: FakeUpstream, redis: RedisServer,
                 relay: HoldRelay | None) -> Path:
    fields = {} if relay is None else {"base_url": relay.base_url("m", "openai")}
    return write_router_config(folder, redis.url,
                               [fake_model(fake, "m", model="up-m", **fields)])


@asynccontextmanager
async def processes(tmp_path: Path, fake: FakeUpstream, redis: RedisServer, n: int = 3,
                    relay: HoldRelay | None = None,
                    ) -> AsyncIterator[list[tuple[trio.Process, str]]]:
    """``n`` router processes on the same Redis, started side by side (reaching the fake
    through ``relay``, when given)."""
    started: dict[int, tuple[trio.Process, str]] = {}
    stop = trio.Event()

    async def keep(i: int) -> None:
        config = write_config(tmp_path / f"router{i}", fake, redis, relay)
        async with router_process(config) as running:
            started[i] = running
            await stop.wait()

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(keep, i)
        with trio.fail_after(60):
            while len(started) < n:
                await trio.sleep(0.05)
        try:
            yield [started[i] for i in range(n)]
        finally:
            stop.set()


async def test_a_burst_across_three_processes_makes_one_upstream_call(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    async with (open_hold_relay(fake_upstream) as relay,
                processes(tmp_path, fake_upstream, redis_server, relay=relay) as routers,
                httpx.AsyncClient(timeout=60) as http):
        urls = [url for _, url in routers]
        for stream in (False, True):
            fake_upstream.reset()
            answers: list[Answer] = []

            async def run(stream: bool = stream, answers: list[Answer] = answers) -> None:
                answers.extend(await burst(http, urls, 20, stream=stream))

            before = await claims(redis_server.url)
            relay.hold()
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run)
                    await wait_all_in(urls[0], 20)  # every request is in a router
                    while await claims(redis_server.url) - before < 3:  # one per process
                        await trio.sleep(0.005)
                    relay.release()
            assert len(fake_upstream.requests("m")) == 1
            assert all(response.status_code == 200 for response, _ in answers)
            roles = [r.headers["x-llm-router-dedup"] for r, _ in answers]
            assert roles.count("LEADER") == 1 and roles.count("FOLLOWER") == 19
            if stream:
                told = [said(text) for _, text in answers]
                assert told[0][-1] == "[DONE]"
                assert all(t == told[0] for t in told)
                assert "".join(c for c, _ in told[0][:-1] if c) == f"[m] {PROMPT}"
            else:
                first = orjson.loads(answers[0][1])["choices"]
                assert all(orjson.loads(t)["choices"] == first for _, t in answers)
                assert answer_text(answers[0][1]) == f"[m] {PROMPT}"


async def test_a_killed_leader_process_is_replaced_by_a_follower(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    # The leader's call never answers. The answer of the call that replaces it is held until
    # both followers have claimed the flight again (one leads, the other follows it): one
    # answered sooner would leave a late follower to start a call of its own.
    fake_upstream.script("m", Behaviour(hang=True))
    async with (open_hold_relay(fake_upstream) as relay,
                processes(tmp_path, fake_upstream, redis_server, relay=relay) as routers,
                httpx.AsyncClient(timeout=60) as http):
        (leader, leader_url), *others = routers
        answers: list[Answer] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_and_drop_errors, http, leader_url)

            async def called() -> bool:
                return len(fake_upstream.requests("m")) == 1

            await wait_for(called)

            async def follow(url: str) -> None:
                answers.append(await ask(http, url))

            for _, url in others:
                for _ in range(3):
                    nursery.start_soon(follow, url)

            async def all_claimed() -> bool:
                return await claims(redis_server.url) == 3  # one per process

            await wait_for(all_claimed, poll=0.005)
            relay.hold()
            leader.kill()
            with trio.fail_after(60):
                await relay.wait_held(1)  # the call that replaces the leader's
                while await claims(redis_server.url) < 5:  # both followers claimed again
                    await trio.sleep(0.005)
                relay.release()
    assert len(answers) == 6
    assert all(r.status_code == 200 for r, _ in answers)
    assert all(answer_text(t) == f"[m] {PROMPT}" for _, t in answers)
    requests = fake_upstream.requests("m")
    assert len(requests) == 2 and requests[1].completed  # one follower took over


async def test_streaming_followers_of_a_killed_leader_end_with_an_error(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    fake_upstream.script("m", Behaviour(stall_after=3))  # three words, then silence
    async with (processes(tmp_path, fake_upstream, redis_server, 2) as routers,
                httpx.AsyncClient(timeout=30) as http):
        (leader, leader_url), *others = routers
        told: list[list[Any]] = []
        async with trio.open_nursery() as nursery:
            first = trio.Event()
            nursery.start_soon(read_stream, http, leader_url, first, None)
            await first.wait()
            relayed = []
            for _, url in others:
                for _ in range(3):
                    got = trio.Event()
                    relayed.append(got)
                    nursery.start_soon(read_stream, http, url, got, told)
            for got in relayed:
                await got.wait()  # each follower's client has received part of the answer
            leader.kill()
    assert len(told) == 3
    for answer in told:
        assert answer[-1] == ("error", "upstream_error")
        text = "".join(c for c, _ in answer[:-1] if c)
        assert text.startswith("[m] Tell") and f"[m] {PROMPT}".startswith(text)
        assert len(text) < len(f"[m] {PROMPT}")  # the part relayed before the kill, alone
    assert len(fake_upstream.requests("m")) == 1  # no second answer


async def ask_and_drop_errors(http: httpx.AsyncClient, url: str) -> None:
    try:
        await ask(http, url)
    except httpx.HTTPError:
        pass  # its router was killed


async def read_stream(http: httpx.AsyncClient, url: str, got_text: trio.Event,
                      out: list[list[Any]] | None) -> None:
    """Stream :data:`PROMPT`; set ``got_text`` once some text arrived; append what was said."""
    body = {"model": "auto", "messages": user(PROMPT), "stream": True}
    raw = ""
    try:
        async with http.stream("POST", url + "/v1/chat/completions", json=body) as response:
            async for chunk in response.aiter_text():
                raw += chunk
                if '"content":"' in raw.replace(" ", ""):
                    got_text.set()
    except httpx.HTTPError:
        assert out is None  # only the killed leader's own client loses its connection
    if out is not None:
        out.append(said(raw))
