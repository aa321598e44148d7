"""Both key stores, the embedded one (``SqliteKeyStore``) and the shared one
(``RedisKeyStore``, on a real ``redis-server``), keep the ``KeyStore`` rules: a record comes
back whole by id and by digest, listings are oldest first, an update and a revocation (once)
are kept, spend adds up per key and period, a second store on the same data (another router
process) sees it all, and the secret is kept nowhere. Every test here runs on both (the
``key_store`` fixture). What only the shared store does (admission) is in
test_redis_keys.py."""

from __future__ import annotations

import time

from support_key_store import kept_bytes, open_another_key_store

from engine.core.keys import (
    SPEND_KEPT_SEC,
    KeyRecord,
    KeySettings,
    digest,
    new_secret,
    period_key,
    public_prefix,
)
from engine.stores.keys import KeyStore


def make_key(key_id: str, *, created_at: float = 1.0, **settings: object) -> tuple[KeyRecord,
                                                                                    str]:
    secret = new_secret()
    record = KeyRecord(id=key_id, digest=digest(secret), prefix=public_prefix(secret),
                       settings=KeySettings.model_validate({"name": key_id, **settings}),
                       created_at=created_at)
    return record, secret


async def test_a_key_comes_back_whole_by_id_and_by_digest(key_store: KeyStore) -> None:
    record, secret = make_key("key_a", models=["auto", "small"], max_tier=2, rpm=60,
                              tpm=10_000, budget_usd=2.5, budget_period="day",
                              expires_at="2030-01-01T00:00:00Z", metadata={"team": "a"})
    await key_store.create(record)
    assert await key_store.get("key_a") == record
    assert await key_store.by_digest(digest(secret)) == record
    assert await key_store.get("key_b") is None
    assert await key_store.by_digest(digest(new_secret())) is None


async def test_keys_are_listed_oldest_first_revoked_ones_too(key_store: KeyStore) -> None:
    for key_id, at in (("key_c", 3.0), ("key_b", 1.0), ("key_a", 3.0)):
        await key_store.create(make_key(key_id, created_at=at)[0])
    await key_store.revoke("key_a", at=9.0)
    assert [r.id for r in await key_store.list()] == ["key_b", "key_a", "key_c"]


async def test_an_update_and_a_revocation_are_kept(key_store: KeyStore) -> None:
    record, _ = make_key("key_a", rpm=10)
    await key_store.create(record)
    changed = record.settings.updated({"rpm": None, "budget_usd": 1.0})
    updated = await key_store.update("key_a", changed)
    assert updated is not None and updated.settings == changed
    first = await key_store.revoke("key_a", at=5.0)
    again = await key_store.revoke("key_a", at=7.0)
    assert first is not None and again is not None
    assert first.revoked_at == again.revoked_at == 5.0
    found = await key_store.get("key_a")
    assert found is not None and found.revoked_at == 5.0 and found.settings == changed
    assert await key_store.update("key_x", changed) is None
    assert await key_store.revoke("key_x", at=1.0) is None


async def test_spend_adds_up_per_key_and_period(key_store: KeyStore) -> None:
    await key_store.add_spend({("key_a", "2099-12"): (0.25, 1, 100),
                               ("key_a", "2099-11"): (9.0, 9, 9)})
    await key_store.add_spend({("key_a", "2099-12"): (0.5, 2, 50),
                               ("key_b", "2099-12"): (1.0, 1, 1)})
    assert await key_store.spend("key_a", "2099-12") == (0.75, 3, 150)
    assert await key_store.spend("key_a", "2099-11") == (9.0, 9, 9)
    assert await key_store.spend("key_c", "2099-12") == (0.0, 0, 0)
    await key_store.add_spend({})


async def test_another_process_sees_the_same_keys(key_store: KeyStore) -> None:
    record, secret = make_key("key_a")
    await key_store.create(record)
    async with open_another_key_store(key_store) as other:
        assert await other.by_digest(digest(secret)) == record
        await other.revoke("key_a", at=3.0)
        await other.add_spend({("key_a", "total"): (1.5, 1, 10)})
    found = await key_store.get("key_a")
    assert found is not None and found.revoked_at == 3.0
    assert await key_store.spend("key_a", "total") == (1.5, 1, 10)


async def test_the_secret_is_kept_nowhere(key_store: KeyStore) -> None:
    record, secret = make_key("key_a")
    await key_store.create(record)
    kept = await kept_bytes(key_store)
    assert record.digest.encode() in kept  # what is kept is found: the check can see
    assert secret.encode() not in kept and secret[len("llmr-"):].encode() not in kept


async def test_a_period_that_ended_over_two_days_ago_is_not_kept(key_store: KeyStore) -> None:
    """Only the spend of periods still running (or ended a moment ago) is kept: a key used
    every day leaves no row or hash a day behind. ``total`` is kept for ever."""
    now = time.time()
    ended = period_key("day", now - 2 * 86400 - SPEND_KEPT_SEC)
    today, month = period_key("day", now), period_key("month", now)
    await key_store.add_spend({("key_a", ended): (1.0, 1, 1), ("key_a", "total"): (2.0, 2, 2),
                               ("key_a", today): (3.0, 3, 3), ("key_b", month): (4.0, 4, 4)})
    await key_store.add_spend({("key_a", today): (1.0, 1, 1)})
    assert await key_store.spend("key_a", ended) == (0.0, 0, 0)
    assert await key_store.spend("key_a", "total") == (2.0, 2, 2)
    assert await key_store.spend("key_a", today) == (4.0, 4, 4)
    assert await key_store.spend("key_b", month) == (4.0, 4, 4)
