"""The client key gate on the embedded key store (a real SQLite file): keys created, found by
their secret, revoked and expired; models, rate limits and budgets enforced; spend kept
across a restart. Time is a variable the tests move."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from engine.core.keys import KeySettings
from engine.errors import BudgetExceeded, Forbidden, NotFound, RateLimited, Unauthorized
from engine.runtime.keys import KeyGate
from engine.stores.keys import SqliteKeyStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_780_000_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def open_gate(path: Path, clock: Clock) -> AsyncIterator[KeyGate]:
    store = SqliteKeyStore(path, clock=clock)
    await store.open()
    try:
        yield KeyGate(store, clock=clock)
    finally:
        await store.close()


async def test_a_key_is_found_by_its_secret_until_revoked_or_expired(tmp_path: Path) -> None:
    clock = Clock()
    async with open_gate(tmp_path / "keys.db", clock) as gate:
        record, secret = await gate.create(KeySettings(name="team-a"))
        assert (await gate.authenticate(secret)).id == record.id
        assert secret not in (tmp_path / "keys.db").read_bytes().decode("latin-1")
        with pytest.raises(Unauthorized, match="unknown client key"):
            await gate.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
        await gate.update(record.id, record.settings.updated(
            {"expires_at": "2026-01-01T00:00:00Z"}))
        with pytest.raises(Unauthorized, match="has expired"):
            await gate.authenticate(secret)
        await gate.update(record.id, record.settings.updated({"expires_at": None}))
        await gate.authenticate(secret)
        await gate.revoke(record.id)
        with pytest.raises(Unauthorized, match="was revoked"):
            await gate.authenticate(secret)
        with pytest.raises(NotFound):
            await gate.revoke("key_0000000000000000")


async def test_a_revocation_by_another_process_holds_within_a_second(tmp_path: Path) -> None:
    clock = Clock()
    async with open_gate(tmp_path / "k.db", clock) as one, open_gate(tmp_path / "k.db",
                                                                      clock) as other:
        record, secret = await one.create(KeySettings(name="t"))
        await other.authenticate(secret)
        await one.revoke(record.id)
        clock.now += 1.0
        with pytest.raises(Unauthorized):
            await other.authenticate(secret)


async def test_models_are_checked(tmp_path: Path) -> None:
    async with open_gate(tmp_path / "k.db", Clock()) as gate:
        record, _ = await gate.create(KeySettings(name="t", models=("auto", "haiku")))
        gate.check_model(record, "haiku")
        with pytest.raises(Forbidden, match="may not use model 'opus'"):
            gate.check_model(record, "opus")


async def test_requests_per_minute(tmp_path: Path) -> None:
    clock = Clock()
    async with open_gate(tmp_path / "k.db", clock) as gate:
        record, _ = await gate.create(KeySettings(name="t", rpm=3))
        tickets = [await gate.admit(record, tokens=10, max_cost_usd=0) for _ in range(3)]
        assert [t.headers["x-ratelimit-remaining-requests"] for t in tickets] == ["2", "1", "0"]
        with pytest.raises(RateLimited) as caught:
            await gate.admit(record, tokens=10, max_cost_usd=0)
        assert caught.value.retry_after == pytest.approx(20.0)
        clock.now += 20
        await gate.admit(record, tokens=10, max_cost_usd=0)


async def test_tokens_per_minute_charge_the_real_count(tmp_path: Path) -> None:
    clock = Clock()
    async with open_gate(tmp_path / "k.db", clock) as gate:
        record, _ = await gate.create(KeySettings(name="t", tpm=1000))
        ticket = await gate.admit(record, tokens=900, max_cost_usd=0)
        gate.settle(record, ticket, tokens=100, cost_usd=0)  # it used far less
        ticket = await gate.admit(record, tokens=800, max_cost_usd=0)
        gate.settle(record, ticket, tokens=2000, cost_usd=0)  # far more: the debt is owed
        with pytest.raises(RateLimited):
            await gate.admit(record, tokens=1, max_cost_usd=0)


async def test_concurrent_calls_overspend_a_budget_by_at_most_one(tmp_path: Path) -> None:
    clock = Clock()
    async with open_gate(tmp_path / "k.db", clock) as gate:
        record, _ = await gate.create(KeySettings(name="t", budget_usd=3.0,
                                                  budget_period="day"))
        admitted, refused = [], []

        async def call() -> None:
            try:
                ticket = await gate.admit(record, tokens=1, max_cost_usd=1.0)
            except BudgetExceeded as exc:
                refused.append(exc)
                return
            await trio.sleep(0.01)  # the upstream call
            gate.settle(record, ticket, tokens=1, cost_usd=1.0)
            admitted.append(ticket)

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(call)
        assert len(admitted) == 3 and len(refused) == 17
        assert refused[0].code == "budget_exceeded" and refused[0].retry_after is not None
        await gate.save_spend()
    async with open_gate(tmp_path / "k.db", clock) as gate:  # a restart: spend is kept
        with pytest.raises(BudgetExceeded):
            await gate.admit(record, tokens=1, max_cost_usd=0.01)
        clock.now += 86_400  # the next day: a new budget
        await gate.admit(record, tokens=1, max_cost_usd=0.01)


async def test_a_key_used_for_months_holds_one_period_in_memory(tmp_path: Path) -> None:
    """A long-running process keeps each key's count of its current period only: the
    periods that ended are in the store, not in memory."""
    clock = Clock()
    async with open_gate(tmp_path / "keys.db", clock) as gate:
        record, _ = await gate.create(KeySettings(name="daily", budget_usd=1.0,
                                                  budget_period="day"))
        for _ in range(40):
            clock.now += 86400
            ticket = await gate.admit(record, tokens=1, max_cost_usd=0.5)
            gate.settle(record, ticket, tokens=1, cost_usd=0.5)
            ticket = await gate.admit(record, tokens=1, max_cost_usd=0.5)
            gate.settle(record, ticket, tokens=1, cost_usd=0.5)
            with pytest.raises(BudgetExceeded):  # each day's budget still holds
                await gate.admit(record, tokens=1, max_cost_usd=0.5)
        assert len(gate._ledgers) == 1
