"""Two key gates (two router processes, in this one) sharing one Redis: news of a key
reaches the other within a bounded wait; while Redis is down the keys each one knows keep
working and limits fall back to each gate's own count (so two gates may each spend what was
left of a budget); when Redis returns (with its data, or empty, as a restart without
persistence leaves it: then the keys are written back) the spend made meanwhile is added to
what Redis still held. A gate that starts while Redis is down answers 503 for client keys
until Redis answers, then knows them all."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from support_redis import RedisServer
from support_routing import wait_for

from engine.core.keys import KeyRecord, KeySettings, period_key
from engine.core.redis_address import RedisAddress
from engine.errors import BudgetExceeded, StoreUnavailable, Unauthorized
from engine.runtime.shared import open_shared
from engine.runtime.shared_keys import SharedKeyGate
from engine.stores.redis import RedisKeyStore


@asynccontextmanager
async def open_gate(redis: RedisServer) -> AsyncIterator[SharedKeyGate]:
    async with (open_shared(RedisAddress.from_url(redis.url), timeout=0.25) as shared,
                trio.open_nursery() as nursery):
        gate = SharedKeyGate(RedisKeyStore(shared.redis), shared)
        await nursery.start(gate.run)
        yield gate
        nursery.cancel_scope.cancel()


async def refused(gate: SharedKeyGate, secret: str) -> bool:
    try:
        await gate.authenticate(secret)
    except Unauthorized:
        return True
    return False


async def test_news_of_a_key_reaches_the_other_gate(redis_server: RedisServer) -> None:
    async with open_gate(redis_server) as a, open_gate(redis_server) as b:
        record, secret = await a.create(KeySettings(name="t", models=("small",)))
        assert (await b.authenticate(secret)).id == record.id
        await a.update(record.id, record.settings.updated({"models": ["auto"]}))

        async def b_sees_the_update() -> bool:
            return (await b.authenticate(secret)).settings.models == ("auto",)

        await wait_for(b_sees_the_update)
        await a.revoke(record.id)
        await wait_for(lambda: refused(b, secret))


async def test_admission_refuses_a_key_revoked_before_its_news_arrives(
        redis_server: RedisServer) -> None:
    async with open_gate(redis_server) as a, open_gate(redis_server) as b:
        record, secret = await a.create(KeySettings(name="t", rpm=100))
        known = await b.authenticate(secret)
        await a.store.revoke(record.id, at=0.0)  # b's copy still says live
        with pytest.raises(Unauthorized, match="was revoked"):
            await b.admit(known, tokens=1, max_cost_usd=0.0)
        with pytest.raises(Unauthorized):
            await b.authenticate(secret)


async def test_a_key_redis_lost_is_written_back_by_its_next_call(
        redis_server: RedisServer) -> None:
    async with open_gate(redis_server) as gate:
        record, secret = await gate.create(KeySettings(name="t", rpm=100))
        await gate.shared_store.redis.call("FLUSHALL")  # as a restart without persistence
        known = await gate.authenticate(secret)
        assert not (await gate.admit(known, tokens=1, max_cost_usd=0.0)).shared
        assert await gate.shared_store.get(record.id) == record
        assert (await gate.admit(known, tokens=1, max_cost_usd=0.0)).shared


@asynccontextmanager
async def redis_away(redis: RedisServer, how: str) -> AsyncIterator[None]:
    """Redis does not answer for the block: ``killed`` (it comes back empty, as a restart
    without persistence leaves it) or ``paused`` (``SIGSTOP``: it comes back with its data)."""
    if how == "killed":
        redis.kill()
        yield
        redis.start()
        return
    assert redis.process is not None
    redis.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        redis.process.send_signal(signal.SIGCONT)


@pytest.mark.parametrize(("how", "spent_after"), [("paused", 4.0), ("killed", 2.0)])
async def test_redis_down_falls_back_and_is_reconciled_when_it_returns(
        redis_server: RedisServer, how: str, spent_after: float) -> None:
    async with open_gate(redis_server) as a, open_gate(redis_server) as b:
        record, secret = await a.create(KeySettings(name="t", budget_usd=3.0,
                                                    budget_period="total"))
        await b.authenticate(secret)
        for gate in (a, b):
            ticket = await gate.admit(record, tokens=1, max_cost_usd=1.0)
            assert ticket.shared
            gate.settle(record, ticket, tokens=1, cost_usd=1.0)
        await wait_for(lambda: spend_pair(a, b, record, 2.0))
        for gate in (a, b):  # each sees Redis's $2 as its calls are admitted
            gate.settle(record, await gate.admit(record, tokens=1, max_cost_usd=0.0),
                        tokens=1, cost_usd=0.0)

        async with redis_away(redis_server, how):
            for gate in (a, b):  # each knows the key, and counts the budget from $2 alone
                known = await gate.authenticate(secret)
                ticket = await gate.admit(known, tokens=1, max_cost_usd=1.0)
                assert not ticket.shared
                with pytest.raises(BudgetExceeded):
                    await gate.admit(known, tokens=1, max_cost_usd=1.0)
                gate.settle(known, ticket, tokens=1, cost_usd=1.0)
            assert a.fallbacks == b.fallbacks == 2

        # What each spent meanwhile is added (a Redis that came back empty lost the $2 before).
        await wait_for(lambda: spend_pair(a, b, record, spent_after))
        for gate in (a, b):
            assert (await gate.authenticate(secret)).id == record.id
        if how == "paused":
            with pytest.raises(BudgetExceeded):
                await b.admit(record, tokens=1, max_cost_usd=1.0)


async def spend_pair(a: SharedKeyGate, b: SharedKeyGate, record: KeyRecord,
                     expected: float) -> bool:
    """Both gates read ``expected`` from Redis (no spend of theirs waiting to be written)."""
    period = period_key(record.settings.budget_period, 0)
    try:
        stored = await a.store.spend(record.id, period)
    except StoreUnavailable:
        return False
    waiting = [g._unsaved_spend(record.id, period)[0] for g in (a, b)]
    return stored[0] == pytest.approx(expected) and not any(waiting)


async def test_a_gate_started_while_redis_is_down_knows_keys_once_it_answers(
        redis_server: RedisServer) -> None:
    async with open_gate(redis_server) as a:
        record, secret = await a.create(KeySettings(name="t"))
    redis_server.kill()
    async with open_gate(redis_server) as late:
        with pytest.raises(StoreUnavailable, match="not loaded yet"):
            await late.authenticate(secret)
        redis_server.start()  # empty: a held the key, but a is gone; nobody knows it now
        async with open_gate(redis_server) as a_again:
            await a_again.store.create(record)  # an operator restoring Redis from a backup

            async def late_knows() -> bool:
                try:
                    return (await late.authenticate(secret)).id == record.id
                except (StoreUnavailable, Unauthorized):
                    return False

            await wait_for(late_knows)
