"""What is particular to the shared run store (``RedisRunStore``, on a real ``redis-server``):
its keys (one hash tag per run, tenants and idempotency keys never in clear), memos that Redis
drops by itself, and what callers see while Redis is down and once it is back. The
``RunStore`` rules both stores keep are in test_run_stores.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from support_redis import RedisServer
from support_routing import wait_for
from support_run_store import make_record, open_redis_run_store

from engine.core.redis_address import RedisAddress
from engine.core.workflow.runs import RunChange
from engine.errors import StoreUnavailable
from engine.stores import Memo
from engine.stores.redis import RedisRunStore

LEASE = 15.0
MEMO = Memo(output="o", value=None, model="m", tier=1, input_tokens=1, output_tokens=1,
            cost_usd=0.0)


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisRunStore]:
    async with open_redis_run_store(RedisAddress.from_url(redis_server.url)) as opened:
        yield opened


async def keys(store: RedisRunStore) -> list[str]:
    found = await store.redis.call("KEYS", "*")
    assert isinstance(found, list)
    return sorted(k.decode() for k in found)  # type: ignore[union-attr]


async def test_a_runs_keys_share_its_hash_tag_and_hide_tenant_and_key(
        store: RedisRunStore) -> None:
    record = make_record("run_1", tenant="acme-tenant", key="client-idempotency-key")
    await store.create(record, owner="host:1:ab", lease_sec=LEASE, now=0.0)
    await store.commit("run_1", RunChange(status="running", event=("e", {})), now=1.0)
    names = await keys(store)
    assert "llmr:run:{run_1}:record" in names and "llmr:run:{run_1}:events" in names
    assert "llmr:run:{o:host:1:ab}:held" in names
    assert all(name.startswith("llmr:run:") for name in names)
    assert not any("acme" in name or "client-idempotency" in name for name in names)
    assert sum(":idem:" in name for name in names) == 1


async def test_a_memo_ahead_in_time_is_also_dropped_by_redis(store: RedisRunStore) -> None:
    await store.memo_put("k", MEMO, expires_at=time.time() + 3600)
    ttl = await store.redis.call("TTL", "llmr:memo:{k}:answer")
    assert isinstance(ttl, int) and 3500 < ttl <= 3600
    await store.memo_put("old", MEMO, expires_at=50.0)  # a time already past: the sweep's
    assert await store.redis.call("TTL", "llmr:memo:{old}:answer") == -1


async def test_while_redis_is_down_every_call_is_unavailable_and_health_says_so(
        store: RedisRunStore, redis_server: RedisServer) -> None:
    assert store.health() == {"status": "ok", "kind": "redis", "url": redis_server.url}
    await store.create(make_record("run_1"), owner="me", lease_sec=LEASE, now=0.0)
    redis_server.kill()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.create(make_record("run_2"), owner="me", lease_sec=LEASE, now=0.0),
        lambda: store.get("run_1", tenant=None),
        lambda: store.list(tenant=None, status=None, limit=10),
        lambda: store.commit("run_1", RunChange(event=("e", {})), now=1.0),
        lambda: store.events("run_1", after=0, limit=10),
        lambda: store.claim(owner="me", lease_sec=LEASE, now=0.0, alive=lambda o: True,
                            limit=9),
        lambda: store.renew(owner="me", lease_sec=LEASE, now=0.0),
        lambda: store.request_cancel("run_1", tenant=None, by={}),
        lambda: store.cancel_requests(owner="me"),
        lambda: store.memo_get("k", now=0.0),
        lambda: store.memo_put("k", MEMO, expires_at=1.0),
        lambda: store.expire(finished_before=0.0, now=0.0),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable) as caught:
            await call()
        assert caught.value.message.startswith(f"run store: Redis at {redis_server.url} ")
    health = store.health()
    assert health["status"] == "error" and health["error"].startswith("run store: Redis at")
    assert health["kind"] == "redis"

    redis_server.start()  # an empty Redis (the test server keeps nothing on disk)

    async def works() -> bool:
        try:
            # The router's heartbeat is what reconnects (a store call never waits to).
            await store.redis.call("PING", probe=True)
            await store.create(make_record("run_3"), owner="me", lease_sec=LEASE, now=0.0)
        except StoreUnavailable:
            return False
        return True

    await wait_for(works, poll=0.05)  # once the client's backoff is over
    assert store.health()["status"] == "ok"
    assert await store.commit("run_3", RunChange(event=("e", {})), now=1.0) == 1
