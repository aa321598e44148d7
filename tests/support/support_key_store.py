"""Support for the key store tests: a key store of each kind (the embedded one on a file, the
shared one on a real ``redis-server``), another store on the same data (a second router
process), and every byte a store keeps (to show a secret is not among them)."""

from __future__ import annotations

from pathlib import Path

from support_stores import KINDS, StoreKinds

from engine.stores.keys import KeyStore, SqliteKeyStore
from engine.stores.redis import RedisKeyStore

__all__ = ["KEY_STORE_KINDS", "kept_bytes", "open_another_key_store", "open_key_store_of",
           "open_redis_key_store"]

KEY_STORES = StoreKinds(SqliteKeyStore, RedisKeyStore, lambda store: Path(store.database.path))
KEY_STORE_KINDS = KINDS
open_redis_key_store = KEY_STORES.open_shared
open_key_store_of = KEY_STORES.open_of
open_another_key_store = KEY_STORES.open_another


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
