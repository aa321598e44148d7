"""Opening a store of either kind for the store tests: the embedded one on a SQLite file, or
the shared one on a real ``redis-server``, and a second store on the same data (what another
router process opens). One :class:`StoreKinds` per store protocol (runs, keys)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from support_redis import running_redis

from engine.core.redis_address import RedisAddress
from engine.stores.redis import Redis, open_redis

__all__ = ["KINDS", "StoreKinds"]

KINDS = ("sqlite", "redis")


class _Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...


Embedded = TypeVar("Embedded", bound=_Store)
Shared = TypeVar("Shared", bound=_Store)


@dataclass(frozen=True)
class StoreKinds(Generic[Embedded, Shared]):
    """How to make each kind of one store: ``embedded(path)``, ``shared(redis)``, and where
    an embedded store keeps its file."""

    embedded: Callable[[Path], Embedded]
    shared: Callable[[Redis], Shared]
    path_of: Callable[[Embedded], Path]

    @asynccontextmanager
    async def open_embedded(self, path: Path) -> AsyncIterator[Embedded]:
        store = self.embedded(path)
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    @asynccontextmanager
    async def open_shared(self, address: RedisAddress) -> AsyncIterator[Shared]:
        """A shared store with a Redis client of its own (as a router process has)."""
        async with open_redis(address) as redis:
            store = self.shared(redis)
            await store.open()
            yield store

    @asynccontextmanager
    async def open_of(self, kind: str, folder: Path) -> AsyncIterator[Any]:
        """A fresh store: ``sqlite`` on ``folder / "state.db"``, or ``redis`` on a
        ``redis-server`` started in ``folder`` (stopped after the block)."""
        if kind == "sqlite":
            async with self.open_embedded(folder / "state.db") as store:
                yield store
            return
        with running_redis(folder) as server:
            async with self.open_shared(RedisAddress.from_url(server.url)) as shared:
                yield shared

    @asynccontextmanager
    async def open_another(self, store: Any) -> AsyncIterator[Any]:
        """A second store on ``store``'s data: what another router process opens."""
        redis = getattr(store, "redis", None)
        if redis is None:
            async with self.open_embedded(self.path_of(store)) as other:
                yield other
            return
        async with self.open_shared(redis.address) as other:
            yield other
