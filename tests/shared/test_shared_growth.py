"""What a deployment that runs for months leaves in Redis: processes come and go (restarts,
rolling deploys, ``--workers``), periods end, and the keys named after them must go with
them, with real ``llm-router`` processes (or the real stores) on a real ``redis-server``."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from support_processes import fake_model, router_process, write_router_config
from support_redis import RedisServer
from support_routing import wait_for

from engine.core.keys import SPEND_KEPT_SEC, KeyRecord, KeySettings, period_end, period_key
from engine.core.redis_address import RedisAddress
from engine.runtime.shared import open_shared
from engine.runtime.shared_keys import SharedKeyGate
from engine.runtime.spend_window import SharedSpendWindow
from engine.stores.redis import RedisKeyStore, open_redis
from engine.testing.fake_upstream import FakeUpstream


def write_config(folder: Path, fake: FakeUpstream, redis_url: str) -> Path:
    return write_router_config(folder, redis_url, [fake_model(fake, "cheap", price=0.001)],
                               health={"probe_interval_sec": 300, "max_probe_interval_sec": 600})


async def redis_call(redis: RedisServer, *command: str) -> Any:
    async with open_redis(RedisAddress.from_url(redis.url), timeout=5.0) as client:
        return await client.call(*command, probe=True)


async def chat(http: httpx.AsyncClient, url: str) -> None:
    answer = await http.post(f"{url}/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text


async def stats(http: httpx.AsyncClient, url: str) -> Any:
    answer = await http.get(f"{url}/stats")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_restarts_keep_the_totals_but_leave_no_hash_behind(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    config_a = write_config(tmp_path / "a", fake_upstream, redis_server.url)
    config_b = write_config(tmp_path / "b", fake_upstream, redis_server.url)
    async with router_process(config_b) as (_, b), httpx.AsyncClient(timeout=10) as http:
        await chat(http, b)
        for restart in range(3):
            async with router_process(config_a) as (process, a):
                for _ in range(2):
                    await chat(http, a)
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(15):
                    await process.wait()
            want = 1 + 2 * (restart + 1)

            async def counted(want: int = want) -> bool:
                return bool((await stats(http, b))["total_requests"] == want)

            await wait_for(counted, poll=0.05)
        # three processes came and went: their totals stay, their hashes do not
        shown = await stats(http, b)
        assert shown["scope"] == "shared"
        assert shown["by_model"] == {"cheap": 7}
        hashes = await redis_call(redis_server, "KEYS", "llmr:stats:{totals}:proc:*")
        assert len(hashes) == 1, hashes
        assert len(await redis_call(redis_server, "SMEMBERS", "llmr:stats:{totals}:procs")) == 1
        assert await redis_call(redis_server, "KEYS", "llmr:stats:{totals}:gauges:*") != []


@asynccontextmanager
async def open_gate(redis: RedisServer, clock: Callable[[], float]
                    ) -> AsyncIterator[SharedKeyGate]:
    async with (open_shared(RedisAddress.from_url(redis.url), timeout=0.25) as shared,
                trio.open_nursery() as nursery):
        gate = SharedKeyGate(RedisKeyStore(shared.redis), shared, clock=clock)
        await nursery.start(gate.run)
        yield gate
        nursery.cancel_scope.cancel()


async def spend_and_wait(gate: SharedKeyGate, record: KeyRecord, redis: RedisServer,
                         spend_key: str, *, gone: bool) -> None:
    """One call of the key, charged, and the spend written to Redis (or already expired)."""
    period = period_key(record.settings.budget_period, gate._clock())
    gate.settle(record, await gate.admit(record, tokens=1, max_cost_usd=0.5), tokens=1,
                cost_usd=0.25)

    async def written() -> bool:
        if gate._unsaved_spend(record.id, period) != (0.0, 0, 0):
            return False
        return bool(await redis_call(redis, "EXISTS", spend_key) == (0 if gone else 1))

    await wait_for(written, poll=0.02)


@pytest.mark.parametrize("limited", [True, False])  # admitted by Redis's script, or not
async def test_a_budget_period_that_ended_leaves_no_spend_in_redis(
        redis_server: RedisServer, limited: bool) -> None:
    now = time.time()
    clock = [now]
    async with open_gate(redis_server, lambda: clock[0]) as gate:
        limits: dict[str, Any] = {"budget_usd": 100.0} if limited else {}
        daily, _ = await gate.create(KeySettings(name="d", budget_period="day", **limits))
        total, _ = await gate.create(KeySettings(name="t", budget_period="total", **limits))
        for record in (daily, total):
            ticket = await gate.admit(record, tokens=1, max_cost_usd=0.5)
            assert ticket.shared is limited
            gate.settle(record, ticket, tokens=1, cost_usd=0.25)
        today = f"llmr:key:{{{daily.id}}}:spend:{period_key('day', now)}"
        forever = f"llmr:key:{{{total.id}}}:spend:total"

        async def written() -> bool:
            return bool(await redis_call(redis_server, "EXISTS", today, forever) == 2)

        await wait_for(written, poll=0.02)
        # today's spend goes two days after today ends; the total stays
        ends = period_end(period_key("day", now))
        assert ends is not None
        assert await redis_call(redis_server, "PEXPIRETIME", today) == int(
            (ends + SPEND_KEPT_SEC) * 1000)
        assert await redis_call(redis_server, "PEXPIRETIME", forever) == -1
        assert (await gate.store.spend(daily.id, period_key("day", now)))[0] == 0.25

        # a spend counted in a day that ended more than that ago is not kept at all
        clock[0] = now - 3 * 86400 - SPEND_KEPT_SEC
        old = f"llmr:key:{{{daily.id}}}:spend:{period_key('day', clock[0])}"
        await spend_and_wait(gate, daily, redis_server, old, gone=True)
        assert await redis_call(redis_server, "EXISTS", today) == 1


async def test_a_key_used_for_months_holds_one_period_in_memory(
        redis_server: RedisServer) -> None:
    """What a process keeps of each key's spend, for when Redis is down, is its current
    period's only."""
    clock = [time.time()]
    async with open_gate(redis_server, lambda: clock[0]) as gate:
        record, _ = await gate.create(KeySettings(name="d", budget_usd=1.0,
                                                  budget_period="day"))
        for _ in range(40):
            clock[0] += 86400
            ticket = await gate.admit(record, tokens=1, max_cost_usd=0.5)
            assert ticket.shared
            gate.settle(record, ticket, tokens=1, cost_usd=0.5)
        assert len(gate._last_spent) == 1


async def test_months_of_comparisons_keep_an_hour_of_payments_in_memory(
        redis_server: RedisServer) -> None:
    """The shared spend window answers from Redis while it is up; what it keeps of its own
    payments (for when Redis is down) is the last hour's, not every payment since start."""
    clock = [time.time()]
    async with open_shared(RedisAddress.from_url(redis_server.url), timeout=0.25) as shared:
        window = SharedSpendWindow(shared.redis, clock=lambda: clock[0])
        for _ in range(24 * 30):  # a month, a payment every hour and a bit
            clock[0] += 3700
            await window.add(0.01)
            assert await window.total() == pytest.approx(0.01)
        assert len(window._spent) == 1
        assert window.own() == pytest.approx(0.01)


async def test_a_killed_process_totals_are_kept_and_its_hash_reaped(
    fake_upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path,
) -> None:
    """A process killed outright cannot fold its totals in; another on its host, which can
    tell it is gone, does."""
    config_a = write_config(tmp_path / "a", fake_upstream, redis_server.url)
    config_b = write_config(tmp_path / "b", fake_upstream, redis_server.url)
    async with router_process(config_a) as (_, a), httpx.AsyncClient(timeout=10) as http:
        await chat(http, a)
        async with router_process(config_b) as (process, b):
            for _ in range(3):
                await chat(http, b)

            async def counted() -> bool:  # B has written its totals
                return bool((await stats(http, a))["total_requests"] == 4)

            await wait_for(counted, poll=0.05)
            process.kill()
            with trio.fail_after(15):
                await process.wait()

        async def reaped() -> bool:
            hashes = await redis_call(redis_server, "KEYS", "llmr:stats:{totals}:proc:*")
            return len(hashes) == 1

        await wait_for(reaped, poll=0.1)
        shown = await stats(http, a)
        assert (shown["total_requests"], shown["by_model"]) == (4, {"cheap": 4})
        assert len(await redis_call(redis_server, "SMEMBERS", "llmr:stats:{totals}:procs")) == 1
        assert len(await redis_call(redis_server, "KEYS", "llmr:stats:{totals}:reaped:*")) == 1
        await chat(http, a)  # and A counts on as before
        await wait_for(lambda: _total(http, a, 5), poll=0.05)


async def _total(http: httpx.AsyncClient, url: str, want: int) -> bool:
    return bool((await stats(http, url))["total_requests"] == want)
