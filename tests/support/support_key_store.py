"""Support for the key store tests: a key store of each kind (the embedded one on a file, the
shared one on a real ``redis-server``), another store on the same data (a second router
process), and every byte a store keeps (to show a secret is not among them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from support_redis import running_redis

from engine.core.redis_address import RedisAddress
from engine.stores.keys import KeyStore, SqliteKeyStore
from engine.stores.redis import RedisKeyStore, open_redis

__all__ = ["KEY_STORE_KINDS", "kept_bytes", "open_another_key_store", "open_key_store_of",
           "open_redis_key_store"]

KEY_STORE_KINDS = ("sqlite", "redis")


@asynccontextmanager
async def open_redis_key_store(address: RedisAddress) -> AsyncIterator[RedisKeyStore]:
    """A shared key store with a Redis client of its own (as a router process has)."""
    async with open_redis(address) as redis:
        store = RedisKeyStore(redis)
        await store.open()
        yield store


@asynccontextmanager
async def _open_sqlite(path: Path) -> AsyncIterator[SqliteKeyStore]:
    store = SqliteKeyStore(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def open_key_store_of(kind: str, folder: Path) -> AsyncIterator[KeyStore]:
    """A fresh store: ``sqlite`` on ``folder / "state.db"``, or ``redis`` on a
    ``redis-server`` started in ``folder`` (stopped after the block)."""
    if kind == "sqlite":
        async with _open_sqlite(folder / "state.db") as store:
            yield store
        return
    with running_redis(folder) as server:
        async with open_redis_key_store(RedisAddress.from_url(server.url)) as shared:
            yield shared


@asynccontextmanager
async def open_another_key_store(store: KeyStore) -> AsyncIterator[KeyStore]:
    """A second store on ``store``'s data: what another router process opens."""
    if isinstance(store, SqliteKeyStore):
        async with _open_sqlite(store.database.path) as other:
            yield other
        return
    assert isinstance(store, RedisKeyStore)
    async with open_redis_key_store(store.redis.address) as other:
        yield other


async def kept_bytes(store: KeyStore) -> bytes:
    """Everything the store keeps: the SQLite file (and its journal), or every Redis key's
    name and value."""
    if isinstance(store, SqliteKeyStore):
        path = Path(store.database.path)
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert isinstance(store, RedisKeyStore)
    read = {b"hash": ["HGETALL"], b"zset": ["ZRANGE", 0, -1], b"stream": ["XRANGE", "-", "+"],
            b"string": ["GET"]}
    out = []
    names = await store.redis.call("KEYS", "*")
    assert isinstance(names, list)
    for name in names:
        assert isinstance(name, bytes)
        command = read[await store.redis.call("TYPE", name)]  # type: ignore[index]
        out.append(name + repr(await store.redis.call(command[0], name, *command[1:])).encode())
    return b"".join(out)
