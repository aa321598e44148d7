"""The shared response cache across real ``llm-router`` processes: a process started later
catches up from the cache stream, and Redis killed mid-traffic fails no request, the local
caches go on serving and storing, and sharing resumes (with what was stored meanwhile) when
Redis is back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from support_processes import fake_model, write_router_config
from support_processes import router_process as started_router
from support_redis import RedisServer
from support_routing import wait_for

from engine.testing.fake_upstream import FakeUpstream


def write_config(folder: Path, fake: FakeUpstream, redis: RedisServer) -> Path:
    return write_router_config(folder, redis.url, [fake_model(fake, "m")],
                               cache={"enabled": True})


@asynccontextmanager
async def router_process(config: Path) -> AsyncIterator[str]:
    """An ``llm-router`` process on a free port: its URL."""
    async with started_router(config) as (_, url):
        yield url


async def ask(http: httpx.AsyncClient, url: str, text: str) -> str:
    """A chat completion that must succeed; its ``X-LLM-Router-Cache``."""
    answer = await http.post(f"{url}/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": text}]})
    assert answer.status_code == 200, answer.text
    return answer.headers["x-llm-router-cache"]


async def counters(http: httpx.AsyncClient, url: str) -> dict[str, int]:
    """The router's ``cache.shared`` counters (``GET /stats``)."""
    found: dict[str, int] = (await http.get(f"{url}/stats")).json()["cache"]["shared"]
    return found


async def received(http: httpx.AsyncClient, url: str) -> int:
    return (await counters(http, url))["received"]


async def until_received(http: httpx.AsyncClient, url: str, count: int) -> None:
    async def done() -> bool:
        return await received(http, url) >= count
    await wait_for(done, poll=0.02)


async def test_a_router_started_later_catches_up_and_redis_dying_fails_nothing(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    config_a = write_config(tmp_path / "a", fake_upstream, redis_server)
    config_b = write_config(tmp_path / "b", fake_upstream, redis_server)
    async with httpx.AsyncClient(timeout=10) as http, router_process(config_a) as a:
        assert await ask(http, a, "Who wrote Hamlet?") == "MISS"
        assert await ask(http, a, "How tall is Mount Everest?") == "MISS"
        async with router_process(config_b) as b:
            await until_received(http, b, 2)  # caught up from the stream at start
            assert await ask(http, b, "Who wrote Hamlet?") == "HIT"
            assert await ask(http, b, "How tall is Mount Everest?") == "HIT"
            assert len(fake_upstream.requests("m")) == 2

            failures: list[int] = []

            async def traffic(url: str, texts: list[str]) -> None:
                for text in texts:
                    answer = await http.post(f"{url}/v1/chat/completions", json={
                        "model": "auto", "messages": [{"role": "user", "content": text}]})
                    if answer.status_code != 200:
                        failures.append(answer.status_code)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(traffic, a, [f"Question number {i}?" for i in range(40)])
                nursery.start_soon(traffic, b, [f"Other question {i}?" for i in range(40)])
                async def started() -> bool:
                    return len(fake_upstream.requests("m")) >= 12
                await wait_for(started)
                redis_server.kill()
            assert failures == []

            # Down: the local caches serve and store.
            assert await ask(http, a, "Who wrote Hamlet?") == "HIT"
            assert await ask(http, a, "Why is the sky blue?") == "MISS"
            assert await ask(http, a, "Why is the sky blue?") == "HIT"
            before = await received(http, b)
            published = (await counters(http, a))["published"]

            redis_server.start()  # empty: nothing was saved
            # What A stored while Redis was down is published from its backlog, and B files it.
            async def flushed() -> bool:
                return (await counters(http, a))["backlog"] == 0
            await wait_for(flushed, poll=0.02)
            published = (await counters(http, a))["published"] - published
            assert published >= 1
            await until_received(http, b, before + published)
            assert await ask(http, b, "Why is the sky blue?") == "HIT"
            # And sharing goes on: B's new answer reaches A (once what both stored while
            # Redis was down has been published and filed, so A's next entry is B's answer).
            async def settled() -> bool:
                backlogs = [(await counters(http, url))["backlog"] for url in (a, b)]
                first = await received(http, a)
                await trio.sleep(0.3)
                return backlogs == [0, 0] and await received(http, a) == first
            await wait_for(settled, poll=0.05)
            before_a = await received(http, a)
            assert await ask(http, b, "What is the boiling point of water?") == "MISS"
            await until_received(http, a, before_a + 1)
            assert await ask(http, a, "What is the boiling point of water?") == "HIT"
