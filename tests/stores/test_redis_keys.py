"""What only the shared key store does (``RedisKeyStore``, on a real ``redis-server``):
admission and settlement in one script each, so two stores (two router processes) share one
key's rate limits and budget exactly; its keys (one hash tag per key id, the secret's digest
and never the secret); the news of each change on ``llmr:{bus}:keys``; and a Redis that
forgot its scripts. Times are explicit (``now=``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from support_key_store import open_redis_key_store
from support_redis import RedisServer
from test_key_stores import make_key

from engine.core.redis_address import RedisAddress
from engine.stores.redis import RedisKeyStore
from engine.stores.redis.keys import HOLD_SEC, NEWS, Admission, Settlement

NOW = 1_780_000_000.0


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisKeyStore,
                                                                     RedisKeyStore]]:
    address = RedisAddress.from_url(redis_server.url)
    async with open_redis_key_store(address) as one, open_redis_key_store(address) as two:
        yield one, two


async def admit(store: RedisKeyStore, *, now: float = NOW, tokens: int = 10,
                cost: float = 0.0, hold: str = "", **limits: Any) -> Admission:
    settings = {"rpm": None, "tpm": None, "budget": None} | limits
    return await store.admit("key_a", period="total", now=now, tokens=tokens,
                             count_request=True, max_cost_usd=cost, hold=hold, **settings)


def settlement(hold: str = "", held: float = 0.0, *, tokens: int = 10, reserved: int = 10,
               tpm: int = 0, cost: float = 0.0) -> Settlement:
    return Settlement(key_id="key_a", period="total", hold=hold, held_usd=held, tpm=tpm,
                      reserved_tokens=reserved, tokens=tokens, cost_usd=cost)


async def test_two_stores_share_one_budget_and_overspend_by_at_most_one(
        stores: tuple[RedisKeyStore, RedisKeyStore]) -> None:
    one, two = stores
    await one.create(make_key("key_a")[0])
    verdicts: list[str] = []

    async def call(store: RedisKeyStore, i: int) -> None:
        hold = f"t{i}:1.0"
        verdict = await admit(store, budget=3.0, cost=1.0, hold=hold)
        verdicts.append(verdict.verdict)
        if verdict.verdict == "ok":
            await trio.sleep(0.01)  # the upstream call
            await store.settle([settlement(hold, 1.0, cost=1.0)])

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(call, (one, two)[i % 2], i)
    assert verdicts.count("ok") == 3 and verdicts.count("budget") == 17
    assert await one.spend("key_a", "total") == (3.0, 3, 30)
    assert await one.redis.call("HGET", "llmr:key:{key_a}:gate", "reserved") == b"0"
    refused = await admit(two, budget=3.0, cost=1.0, hold="late:1.0")
    assert (refused.verdict, refused.spent, refused.reserved) == ("budget", 3.0, 0.0)


async def test_two_stores_share_one_rate_limit(stores: tuple[RedisKeyStore, RedisKeyStore]
                                               ) -> None:
    one, two = stores
    await one.create(make_key("key_a")[0])
    first = await admit(one, rpm=3)
    assert first.verdict == "ok" and first.requests == (2, 20.0)
    assert (await admit(two, rpm=3)).requests == (1, 40.0)
    assert (await admit(one, rpm=3)).requests == (0, 60.0)
    refused = await admit(two, rpm=3)
    assert refused.verdict == "requests" and refused.retry_after == pytest.approx(20.0)
    assert (await admit(one, rpm=3, now=NOW + 20)).verdict == "ok"


async def test_tokens_are_charged_at_their_real_count(
        stores: tuple[RedisKeyStore, RedisKeyStore]) -> None:
    one, two = stores
    await one.create(make_key("key_a")[0])
    assert (await admit(one, tpm=1000, tokens=900)).tokens == (100, 54.0)
    await one.settle([settlement(tokens=100, reserved=900, tpm=1000)])  # far less used
    assert (await admit(two, tpm=1000, tokens=800)).tokens == (100, 54.0)
    await two.settle([settlement(tokens=2000, reserved=800, tpm=1000)])  # far more: owed
    refused = await admit(one, tpm=1000, tokens=1)
    assert refused.verdict == "tokens" and refused.retry_after > 0


async def test_a_hold_never_settled_lapses(stores: tuple[RedisKeyStore, RedisKeyStore]
                                           ) -> None:
    one, _ = stores
    await one.create(make_key("key_a")[0])
    assert (await admit(one, budget=1.0, cost=1.0, hold="dead:1.0")).verdict == "ok"
    assert (await admit(one, budget=1.0, cost=1.0, hold="x:1.0")).verdict == "budget"
    later = await admit(one, now=NOW + HOLD_SEC + 1, budget=1.0, cost=1.0, hold="y:1.0")
    assert (later.verdict, later.reserved) == ("ok", 1.0)


async def test_a_revoked_or_unknown_key_is_refused(
        stores: tuple[RedisKeyStore, RedisKeyStore]) -> None:
    one, two = stores
    assert (await admit(one, rpm=10)).verdict == "gone"
    await one.create(make_key("key_a")[0])
    await two.revoke("key_a", at=NOW)
    assert (await admit(one, rpm=10)).verdict == "revoked"


async def test_keys_share_a_tag_per_key_and_each_change_is_news(
        stores: tuple[RedisKeyStore, RedisKeyStore]) -> None:
    one, _ = stores
    record, _ = make_key("key_a")
    await one.create(record)
    await one.update("key_a", record.settings.updated({"rpm": 5}))
    await admit(one, rpm=5)
    await one.settle([settlement(cost=0.5)])
    await one.revoke("key_a", at=NOW)
    await one.revoke("key_a", at=NOW + 1)  # no change: no news
    names = await one.redis.call("KEYS", "*")
    assert isinstance(names, list)
    assert sorted(n.decode() for n in names) == [  # type: ignore[union-attr]
        "llmr:key:{index}:all", "llmr:key:{index}:digests", "llmr:key:{key_a}:gate",
        "llmr:key:{key_a}:record", "llmr:key:{key_a}:spend:total", NEWS]
    news = await one.redis.call("XRANGE", NEWS, "-", "+")
    assert isinstance(news, list)
    assert [entry[1] for entry in news] == [[b"id", b"key_a"]] * 3  # type: ignore[index]
    index = await one.redis.call("HGETALL", "llmr:key:{index}:digests")
    assert index == [record.digest.encode(), b"key_a"]


async def test_settlements_survive_a_redis_that_forgot_its_scripts(
        stores: tuple[RedisKeyStore, RedisKeyStore]) -> None:
    one, _ = stores
    await one.create(make_key("key_a")[0])
    await one.settle([settlement(cost=0.25)])
    await one.redis.call("SCRIPT", "FLUSH")
    await one.settle([settlement(cost=0.25), settlement(cost=0.5)])
    assert await one.spend("key_a", "total") == (1.0, 3, 30)
