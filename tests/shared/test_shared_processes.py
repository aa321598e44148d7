"""Two real ``llm-router`` processes sharing one Redis: backend health found by one is obeyed
by the other, ``/stats``, ``/v1/backends`` and ``/v1/routing`` answer the totals of both from
either, feedback sent to both is calibrated once, and Redis killed mid-traffic fails no
request and loses no count.

Each process has its own feedback database and run store: what they share, they share
through Redis alone. Upstream calls are counted at the fake upstream, which outlives them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio
from support_processes import fake_model, two_routers, write_router_config
from support_redis import RedisServer
from support_routing import wait_for

from engine.core.redis_address import RedisAddress
from engine.stores.redis import open_redis
from engine.testing.fake_upstream import Behaviour, FakeUpstream

MIN_SAMPLES = 8


def write_config(folder: Path, fake: FakeUpstream, redis_url: str) -> Path:
    """``cheap`` and ``dear`` serve tier 1; healthy, ``cheap`` goes first (its price)."""
    return write_router_config(
        folder, redis_url,
        [fake_model(fake, name, price=price) for name, price in (("cheap", 0.001), ("dear", 0.01))],
        health={"probe_interval_sec": 300, "max_probe_interval_sec": 600},
        learned={"min_samples": MIN_SAMPLES})


async def chat(http: httpx.AsyncClient, url: str, model: str = "auto") -> httpx.Response:
    return await http.post(f"{url}/v1/chat/completions",
                           json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


async def get(http: httpx.AsyncClient, url: str, path: str) -> Any:
    response = await http.get(url + path)
    assert response.status_code == 200, response.text
    return response.json()


async def same_on_both(http: httpx.AsyncClient, a: str, b: str, path: str,
                       view: Callable[[Any], Any] = lambda answer: answer) -> Any:
    """``view`` of ``path``'s answer once A and B agree on it (each writes its totals a moment
    after it counts)."""
    seen: list[Any] = []

    async def agree() -> bool:
        seen[:] = [view(await get(http, a, path)), view(await get(http, b, path))]
        return bool(seen[0] == seen[1])

    await wait_for(agree, poll=0.05)
    return seen[0]


def totals(backends: list[dict[str, Any]]) -> dict[str, Any]:
    """What two processes must agree on in ``/v1/backends`` (in-flight counts and latency
    averages stay per process)."""
    return {e["name"]: (e["status"], e["total_requests"], e["ejections"], e["scope"])
            for e in backends}


async def test_health_found_by_one_process_is_obeyed_by_the_other(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    fake = fake_upstream
    async with two_routers(tmp_path, write_config, fake, redis_server.url) as (a, b, http):
        # A is told to wait by cheap: B sends it nothing until then.
        fake.script("cheap", Behaviour(status=429, retry_after=120))
        assert (await chat(http, a)).headers["x-llm-router-model"] == "dear"

        async def b_knows(name: str, status: str) -> bool:
            entry = {e["name"]: e for e in await get(http, b, "/v1/backends")}[name]
            return bool(entry["status"] == status and entry["detail"])

        await wait_for(lambda: b_knows("cheap", "healthy"))
        for _ in range(5):
            response = await chat(http, b)
            assert response.status_code == 200
            assert response.headers["x-llm-router-model"] == "dear"
        assert len(fake.requests("cheap")) == 1

        # A finds dear down (three failures of calls pinned to it): B calls it no more.
        fake.set_default("dear", Behaviour(status=500))
        for _ in range(3):
            assert (await chat(http, a, model="dear")).status_code == 502
        called = len(fake.requests("dear"))
        await wait_for(lambda: b_knows("dear", "down"))
        assert (await chat(http, b, model="dear")).status_code == 503
        assert len(fake.requests("dear")) == called

        # Totals are the same from either process, and are the sum of the traffic.
        stats = await same_on_both(http, a, b, "/stats")
        assert stats["scope"] == "shared"
        assert stats["total_requests"] == 1 + 5 + 3 + 1
        assert stats["by_model"] == {"dear": 6}
        assert stats["errors"] == {"upstream_error": 3, "no_backend_available": 1}
        assert stats["failovers"] == 1
        backends = await same_on_both(http, a, b, "/v1/backends", totals)
        assert backends == {"cheap": ("healthy", 1, 0, "shared"),
                            "dear": ("down", len(fake.requests("dear")), 1, "shared")}


async def test_a_request_answered_by_one_process_is_in_the_others_stats_at_once(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    """A client that asks B for ``/stats`` just after A answered it finds its request counted:
    A writes its totals when it counts, a few milliseconds later at most, where it used to
    wait for its next round (0.25 s apart, so most reads 50 ms after an answer missed it)."""
    async with two_routers(tmp_path, write_config, fake_upstream, redis_server.url) as (a, b, http):
        await same_on_both(http, a, b, "/stats", lambda stats: stats["scope"])
        for n in range(1, 9):
            response = await http.post(f"{a}/v1/chat/completions", json={
                "messages": [{"role": "user", "content": f"question number {n}"}]})
            assert response.status_code == 200, response.text
            await trio.sleep(0.05)
            stats = await get(http, b, "/stats")
            assert (stats["scope"], stats["total_requests"]) == ("shared", n)


async def test_a_redis_emptied_under_running_processes_gets_their_whole_totals_back(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    """A write carries only the values that changed since the last one; a Redis emptied
    without the processes noticing (a restart without persistence, an eviction) must still
    get everything back, not just what the next request changed."""
    async with two_routers(tmp_path, write_config, fake_upstream, redis_server.url) as (a, b, http):
        async def ask(model: str, n: int) -> int:  # a new question each time: no cache hit
            response = await http.post(f"{a}/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": f"question {n}"}]})
            return response.status_code

        for n, model in enumerate(("cheap", "dear", "dear")):
            assert await ask(model, n) == 200
        assert await ask("nowhere", 3) == 404
        before = await same_on_both(http, a, b, "/stats")
        assert before["by_model"] == {"cheap": 1, "dear": 2}, before
        async with open_redis(RedisAddress.from_url(redis_server.url), timeout=5.0) as redis:
            await redis.call("FLUSHALL", probe=True)
        assert await ask("cheap", 4) == 200

        async def whole() -> bool:
            stats = await get(http, b, "/stats")
            return bool(stats["scope"] == "shared" and stats["total_requests"] == 5)

        await wait_for(whole, poll=0.05)
        after = await get(http, b, "/stats")
        assert after["by_model"] == {"cheap": 2, "dear": 2}, after
        assert after["errors"] == before["errors"], (before, after)
        assert after["total_spent_usd"] > before["total_spent_usd"]
        assert after["by_tier"] == {"1": 4}, after


async def test_feedback_from_both_processes_is_calibrated_once(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    async with two_routers(tmp_path, write_config, fake_upstream, redis_server.url) as (a, b, http):
        report = {"score": 0.28, "tier": 1, "quality": 0.95}

        async def post(url: str) -> None:
            response = await http.post(f"{url}/v1/feedback", json=report)
            assert response.status_code == 200, response.text

        async with trio.open_nursery() as nursery:
            # Enough for one step whatever the order they are calibrated in, never two.
            for i in range(2 * MIN_SAMPLES - 1):
                nursery.start_soon(post, (a, b)[i % 2])
        routing = await same_on_both(http, a, b, "/v1/routing",
                                     lambda r: {**r, "changes": [
                                         {k: v for k, v in c.items() if k != "at"}
                                         for c in r["changes"]]})
        assert routing["thresholds"] == {"tier1_max": 35, "tier2_max": 70}
        assert routing["feedback"]["total"] == 2 * MIN_SAMPLES - 1
        assert [(c["name"], c["old"], c["new"]) for c in routing["changes"]] == [
            ("tier1_max", 30, 35)]
        assert routing["scope"] == "shared"


async def test_redis_killed_mid_traffic_fails_nothing_and_loses_no_count(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    async with two_routers(tmp_path, write_config, fake_upstream, redis_server.url) as (a, b, http):
        sent = 0

        async def traffic(rounds: int) -> None:
            nonlocal sent
            for _ in range(rounds):
                for url in (a, b):
                    assert (await chat(http, url)).status_code == 200
                    sent += 1

        await traffic(5)
        redis_server.kill()
        await traffic(10)

        async def both_alone() -> bool:
            await traffic(1)
            scopes = [(await get(http, url, "/stats"))["scope"] for url in (a, b)]
            return scopes == ["process", "process"]

        await wait_for(both_alone, poll=0.05)
        redis_server.start()  # empty: what was written before is gone
        await traffic(5)

        async def caught_up() -> bool:
            stats = [await get(http, url, "/stats") for url in (a, b)]
            return all(s["scope"] == "shared" and s["total_requests"] == sent for s in stats)

        await wait_for(caught_up, poll=0.1)
        stats = await same_on_both(http, a, b, "/stats")
        # One process may answer a request from the other's flight of the same one (its
        # lead is released in the background, just after its answer): joined, not called.
        assert sum(stats["by_model"].values()) + stats["dedup"]["joined"] == sent, stats
        assert stats["by_model"] == {name: len(fake_upstream.requests(name))
                                     for name in ("cheap", "dear")}
