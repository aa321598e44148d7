"""The response cache shared by router processes through Redis (``state.redis_url``).

Each process keeps its own :class:`~engine.core.cache.responses.ResponseCache`, with its
own semantic (vector) index: lookups stay in memory and never wait for Redis. What is
shared is how that cache is filled and emptied:

* an answer stored here is stored in the local cache at once, and queued; a background task
  publishes the queue to Redis (``engine.stores.redis.cache``: the entry with its expiry,
  the shared byte budget, and a ``put`` record on the cache stream). The request never waits
  for it;
* every process follows the stream (from its beginning at start, to catch up) and files the
  entries other processes stored in its local cache, and drops those the budget evicted.

While Redis is down, the local cache serves and stores as without Redis; the queue keeps the
last :data:`BACKLOG` entries stored meanwhile and publishes them when Redis is back, and the
stream tail goes on from where it was.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import trio

from engine.core.cache.key import RequestKey
from engine.core.cache.record import CacheRecord, decode_record, encode_record, entry_id
from engine.core.cache.responses import CacheEntry, Matcher, PreparedText, ResponseCache
from engine.errors import StoreUnavailable
from engine.messages import ChatResult
from engine.stores.redis.cache import STREAM, Put, RedisCacheStore
from engine.stores.redis.resp import ReplyError
from engine.stores.redis.tail import StreamEntry

from .embeddings import BATCH, RemoteEmbedder
from .shared import Shared

__all__ = ["BACKLOG", "SharedCache"]

log = logging.getLogger("llm_router")

#: Entries stored while Redis is away that are kept to publish when it is back (the latest).
BACKLOG = 1_000
_BATCH = 64
_RETRY_SEC = 0.25
# Texts fingerprinted per worker-thread call while filing (normalised and embedded; the rest
# of a fingerprint waits for its first comparison): small enough that the event loop is never
# kept from the GIL for long during a catch-up.
_PREPARE_CHUNK = 16


class SharedCache(ResponseCache):
    """A :class:`ResponseCache` whose stores reach every process. Call :meth:`run` in a
    nursery: it publishes this process's entries and files the others'."""

    def __init__(self, shared: Shared, *, matcher: Matcher, max_entries: int, max_bytes: int,
                 max_entry_bytes: int, ttl: float, threshold: float,
                 index_work: Callable[[Any], None] | None = None) -> None:
        super().__init__(matcher=matcher, max_entries=max_entries, max_bytes=max_bytes,
                         max_entry_bytes=max_entry_bytes, ttl=ttl, threshold=threshold,
                         index_work=index_work)
        self.origin = uuid.uuid4().hex[:16]
        #: ``cache.embedder``: the other processes' entries get their vectors from it too.
        self.remote: RemoteEmbedder | None = None
        self.store_redis = RedisCacheStore(
            shared.redis, origin=self.origin, max_entries=max_entries, max_bytes=max_bytes,
            stream_len=2 * max_entries + 1_000)
        self._tail = shared.tail
        self._redis = shared.redis
        # Stream records whose entries could not be fetched (Redis went away meanwhile).
        self._unfiled: list[StreamEntry] = []
        self._pending: deque[tuple[str, CacheRecord]] = deque(maxlen=BACKLOG)
        self._wake = trio.Event()
        self._in_flight = 0
        # Shared id -> (exact, norm) of the entries filed here: what an evict record names.
        self._known: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        #: Entries published, filed from other processes, dropped on their eviction, and
        #: never published (the backlog was full).
        self.published = self.received = self.dropped = self.lost = 0

    # ---- this process's entries ---------------------------------------------------------

    def store(
        self, key: RequestKey, result: ChatResult, *, model: str, tier: int, cost_usd: float,
        reference_usd: float, now: float, prepared: PreparedText | None = None,
    ) -> bool:
        entry = self.store_entry(key, result, model=model, tier=tier, cost_usd=cost_usd,
                                 reference_usd=reference_usd, now=now, prepared=prepared)
        if entry is None:
            return False
        ident = entry_id(entry.exact, entry.norm)
        self._remember(ident, entry)
        record = CacheRecord(
            exact=entry.exact, text=key.text, result=result, model=model, tier=tier,
            cost_usd=cost_usd, reference_usd=reference_usd,
            expires=time.time() + (entry.expires - now), size=entry.size)
        if len(self._pending) == BACKLOG:
            self.lost += 1  # the oldest waiting entry makes room: it stays local
        self._pending.append((ident, record))
        self._wake.set()
        return True

    def _remember(self, ident: str, entry: CacheEntry) -> None:
        self._known[ident] = (entry.exact, entry.norm)
        self._known.move_to_end(ident)
        while len(self._known) > 2 * self.max_entries + 1_000:
            self._known.popitem(last=False)

    async def run(self) -> None:
        """Publish and follow until cancelled."""
        self._tail.follow(STREAM, self._on_records, since="0")
        self._redis.on_up(self._retry_unfiled)
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self._publish_pending()

    async def _publish_pending(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
            # Rounded up: Redis never drops an entry before it has expired in the processes.
            puts = [Put(ident, encode_record(record), record.size,
                        math.ceil(record.expires * 1000)) for ident, record in batch]
            self._in_flight = len(batch)
            try:
                await self.store_redis.publish(puts, int(time.time() * 1000))
            except StoreUnavailable:
                self._in_flight = 0
                # Keep them for when Redis answers; when the backlog is full, the newest win.
                for item in reversed(batch):
                    if len(self._pending) == BACKLOG:
                        break
                    self._pending.appendleft(item)
                await trio.sleep(_RETRY_SEC)
                continue
            except ReplyError as exc:
                log.error("publishing cache entries to Redis: %s", exc)
            else:
                self.published += len(batch)
            self._in_flight = 0

    def counters(self) -> dict[str, int]:
        """What ``GET /stats`` shows under ``cache.shared``."""
        return {"entries": len(self), "published": self.published,
                "received": self.received, "evicted": self.dropped,
                "backlog": len(self._pending) + self._in_flight, "unpublished": self.lost}

    # ---- the other processes' entries ---------------------------------------------------

    async def _on_records(self, records: list[StreamEntry]) -> None:
        records, self._unfiled = self._unfiled + records, []
        origin = self.origin.encode()
        wanted = [r.fields.get(b"id", b"").decode() for r in records
                  if r.fields.get(b"op") == b"put" and r.fields.get(b"from") != origin]
        try:
            fetched = await self.store_redis.fetch(wanted)
        except StoreUnavailable:
            # The tail has moved past them: keep them (the latest) for the next delivery or
            # for when Redis is back.
            self._unfiled = records[-BACKLOG:]
            raise
        payloads = dict(zip(wanted, fetched, strict=True))
        decoded = {i: decode_record(p) for i, p in payloads.items() if p is not None}
        texts = {i: r.text for i, r in decoded.items() if r is not None}
        prepared: dict[str, PreparedText] = {}
        items = list(texts.items())
        for start in range(0, len(items), _PREPARE_CHUNK):
            chunk = items[start:start + _PREPARE_CHUNK]
            prepared.update(await trio.to_thread.run_sync(self._prepare_all, chunk))
        if self.remote is not None:
            prepared = await self._with_remote_vectors(prepared)
        for record in records:
            op, ident = record.fields.get(b"op"), record.fields.get(b"id", b"").decode()
            if op == b"evict":
                self._drop(ident)
            elif op == b"put":
                found = decoded.get(ident)
                if found is not None and ident in prepared:
                    self._file(ident, found, prepared[ident])

    async def _retry_unfiled(self) -> None:
        if self._unfiled:
            try:
                await self._on_records([])
            except StoreUnavailable:
                pass

    async def _with_remote_vectors(self, prepared: dict[str, PreparedText]
                                   ) -> dict[str, PreparedText]:
        """``prepared`` with vectors from ``cache.embedder``; when it fails, the entries
        that need one are left out (not filed here: a miss, never a wrong vector)."""
        assert self.remote is not None
        semantic = {i: p for i, p in prepared.items() if p.fingerprint is not None}
        out = {i: p for i, p in prepared.items() if p.fingerprint is None}
        items = list(semantic.items())
        for start in range(0, len(items), BATCH):
            chunk = items[start:start + BATCH]
            vectors = await self.remote.vectors([p.norm for _, p in chunk])
            if vectors is None:
                continue
            for (ident, p), vector in zip(chunk, vectors, strict=True):
                out[ident] = PreparedText(p.norm, p.fingerprint.with_vector(vector))
        return out

    def _prepare_all(self, texts: list[tuple[str, str]]) -> dict[str, PreparedText]:
        return {ident: self.prepare(text) for ident, text in texts}

    def _file(self, ident: str, record: CacheRecord, prepared: PreparedText) -> None:
        remaining = record.expires - time.time()
        if remaining <= 0:
            return
        key = RequestKey(exact=record.exact, text=record.text, full=b"")
        entry = self.store_entry(
            key, record.result, model=record.model, tier=record.tier,
            cost_usd=record.cost_usd, reference_usd=record.reference_usd,
            now=trio.current_time(), prepared=prepared, ttl=min(remaining, self.ttl))
        if entry is not None:
            self._remember(ident, entry)
            self.received += 1

    def _drop(self, ident: str) -> None:
        known = self._known.pop(ident, None)
        if known is not None and self.discard(*known):
            self.dropped += 1
