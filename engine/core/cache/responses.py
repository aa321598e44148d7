"""The response cache: exact-part partitions, a semantic search inside each, and bounds.

Sans-IO and synchronous (callers pass the time in). A lookup first finds the partition of the
request's exact part (``engine.core.cache.key``): only entries whose tenant, target, system
prompt, history, tools and parameters are all identical are candidates. Inside it, an entry
with the same normalised final-message text is an exact hit; otherwise the nearest entries by
embedding are checked by the similarity function *and* its guards (numbers, negation, named
entities), best first, and the first that passes at ``threshold`` is a semantic hit.

A final message longer than :data:`MAX_SEMANTIC_CHARS` is matched exactly as sent (not
normalised, not fingerprinted): the similarity function is made for questions, not
documents, and the work is not bounded otherwise (a fingerprint costs about 2 ms per 1,000
characters, normalising 0.2 ms). :meth:`ResponseCache.prepare` does a text's CPU work apart
from the cache's state, so a caller can run it in a worker thread and pass it to ``lookup``
and ``store``.

Entries are kept as plain tuples of strings, numbers, bytes and arrays (the answer and the
fingerprint packed, :class:`CacheEntry` made when one is served): the cyclic garbage
collector stops tracking such tuples, so a full cache adds nothing to the pause of a full
collection, where entries kept as objects (an answer, its parts, a fingerprint's sets) would
add twenty tracked objects each, tens of milliseconds per 100,000 entries.

Bounds: ``max_entries``, a ``max_bytes`` budget (one huge answer cannot blow memory: an entry
over ``max_entry_bytes`` is never stored), ``ttl`` (expired entries are never served and are
purged as the cache is used), and least-recently-used eviction.

A partition's vector index (``engine.core.cache.vector_index``) is made ``deferred`` when the
cache is given ``index_work``: a store then only buffers the new vector (the next lookup
finds it), and the runtime does the graph work off the event loop
(``engine.runtime.cache_index``, whose lock a caller holds around a lookup).

This is each process's cache; with ``state.redis_url`` the runtime's shared cache
(``engine.runtime.shared_cache``) extends it: entries stored here are published, and those
other processes store are filed here (:meth:`ResponseCache.store_entry`,
:meth:`ResponseCache.discard`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from engine.messages import ChatResult, TextPart, ToolCall

from .key import RequestKey
from .record import pack_result, unpack_result

__all__ = ["MAX_SEMANTIC_CHARS", "SETTLED_ABOVE", "CacheEntry", "CacheHit", "Matcher",
           "PreparedText", "ResponseCache"]

#: Final messages up to this long are matched semantically; longer ones exactly as sent.
MAX_SEMANTIC_CHARS = 16_384
#: Texts longer than this are prepared whole (:meth:`ResponseCache.prepare`).
SETTLED_ABOVE = 2_000

_SEARCH_K = 4
_INDEX_SLACK = 0.01  # the HNSW graph's float16 scores are good to about 1e-3
_ENTRY_OVERHEAD = 512  # bookkeeping, key, dict slots: a conservative per-entry estimate


class Matcher(Protocol):
    """The similarity function (``engine.core.cache.similarity``) as the cache uses it.
    ``fingerprint``'s ``normalised`` is ``normalise(text)``, which the cache has made already
    (a text is normalised once)."""

    def fingerprint(self, text: str, *, normalised: str | None = None) -> Any: ...
    def normalise(self, text: str) -> str: ...
    def new_index(self, dim: int, *, deferred: bool = False) -> Any: ...
    def vector(self, fingerprint: Any) -> Any: ...
    def least_cosine(self, query: Any, threshold: float) -> float: ...
    def match(self, query: Any, cached: Any, *, threshold: float) -> tuple[bool, float]: ...
    def pack(self, fingerprint: Any) -> tuple[Any, ...]: ...
    def unpack(self, packed: tuple[Any, ...]) -> Any: ...
    def repack(self, packed: tuple[Any, ...], fingerprint: Any) -> tuple[Any, ...] | None: ...
    def settle(self, fingerprint: Any) -> None: ...


@dataclass(frozen=True, slots=True, eq=False)
class CacheEntry:
    """An entry as a lookup serves it or a store made it (the cache keeps a :data:`_Kept`)."""

    id: int
    exact: bytes
    norm: str
    semantic: bool  # fingerprinted, so matched by similarity (else only exactly)
    result: ChatResult
    model: str
    tier: int
    cost_usd: float
    reference_usd: float  # what the answer would have cost on the reference (strongest) model
    expires: float
    size: int


#: An entry as the cache keeps it: ``(id, exact, norm, packed fingerprint or None, packed
#: answer, model, tier, cost_usd, reference_usd, expires, size)``; see the module docstring.
_Kept = tuple[int, bytes, str, Any, bytes, str, int, float, float, float, int]
_ID: Final = 0
_EXACT: Final = 1
_NORM: Final = 2
_FINGERPRINT: Final = 3
_EXPIRES: Final = 9
_SIZE: Final = 10


def _with_fingerprint(kept: _Kept, packed: tuple[Any, ...]) -> _Kept:
    """``kept`` with another packing of its fingerprint."""
    entry_id, exact, norm, _, answer, model, tier, cost, reference, expires, size = kept
    return (entry_id, exact, norm, packed, answer, model, tier, cost, reference, expires, size)


def _entry(kept: _Kept, result: ChatResult | None = None) -> CacheEntry:
    """The :class:`CacheEntry` of a kept one (its answer unpacked unless given)."""
    entry_id, exact, norm, fingerprint, packed, model, tier, cost, reference, expires, size = kept
    return CacheEntry(entry_id, exact, norm, fingerprint is not None,
                      unpack_result(packed) if result is None else result, model, tier, cost,
                      reference, expires, size)


@dataclass(frozen=True, slots=True)
class CacheHit:
    entry: CacheEntry
    similarity: float

    @property
    def exact(self) -> bool:
        return self.similarity >= 1.0


@dataclass(frozen=True, slots=True, eq=False)
class PreparedText:
    """A final message's text as lookups and stores use it: ``norm`` (normalised) and its
    ``fingerprint`` (``None`` when it is not matched semantically)."""

    norm: str
    fingerprint: Any


def _semantic(text: str) -> bool:
    """Whether ``text`` is matched semantically (not empty or blank, not too long)."""
    return 0 < len(text) <= MAX_SEMANTIC_CHARS and not text.isspace()


@dataclass(slots=True, eq=False)
class _Partition:
    by_text: dict[str, int] = field(default_factory=dict)
    index: Any = None


def _result_size(result: ChatResult) -> int:
    size = 0
    for part in result.content:
        if isinstance(part, TextPart):
            size += len(part.text.encode())
        elif isinstance(part, ToolCall):
            size += len(part.id) + len(part.name) + len(part.arguments.encode())
        else:
            size += len(part.thinking.encode()) + len(part.signature)
    if result.logprobs:
        size += len(orjson.dumps(result.logprobs))
    return size


class ResponseCache:
    def __init__(
        self,
        *,
        matcher: Matcher,
        max_entries: int,
        max_bytes: int,
        max_entry_bytes: int,
        ttl: float,
        threshold: float,
        index_work: Callable[[Any], None] | None = None,
    ) -> None:
        self.matcher = matcher
        #: Given: the partitions' vector indexes are ``deferred``, and this is called with
        #: one after each of its adds and removals (the runtime's ``IndexWriter.notice``
        #: does the graph work off the event loop). None: the index does it inline.
        self.index_work = index_work
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.ttl = ttl
        self.threshold = threshold
        self._entries: OrderedDict[int, _Kept] = OrderedDict()  # LRU order
        # Store order, which is expiry order (one ttl, a monotonic clock): expired entries
        # are found at its head without a scan, whatever their place in the LRU order.
        self._by_age: dict[int, _Kept] = {}
        self._partitions: dict[bytes, _Partition] = {}
        self._next_id = 0
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterator[CacheEntry]:
        """Every entry held, least recently used first (each answer unpacked: for
        inspection, not for the request path)."""
        return (_entry(kept) for kept in list(self._entries.values()))

    def prepare(self, text: str) -> PreparedText:
        """The CPU work of a lookup and a store of ``text``, done once. It touches no cache
        state: it may run in a worker thread. A text longer than 2,000 characters is
        fingerprinted whole, its reading for the guards included: callers prepare such texts
        in a worker thread, so that milliseconds of reading never fall on the event loop
        when a lookup compares them."""
        norm = self._normalise(text)
        fingerprint = self.matcher.fingerprint(text, normalised=norm) if _semantic(text) else None
        if fingerprint is not None and len(text) > SETTLED_ABOVE:
            self.matcher.settle(fingerprint)
        return PreparedText(norm, fingerprint)

    def _normalise(self, text: str) -> str:
        return self.matcher.normalise(text) if len(text) <= MAX_SEMANTIC_CHARS else text

    # ---- lookup -------------------------------------------------------------------------

    def lookup(self, key: RequestKey, now: float, *, prepared: PreparedText | None = None,
               threshold: float | None = None) -> CacheHit | None:
        """The entry answering ``key``, if any; ``prepared`` is :meth:`prepare` of
        ``key.text`` (else the work is done here, as needed); ``threshold`` is the tenant's
        own, if feedback moved it (else the cache's)."""
        return self.lookup_prepared(key, now, prepared=prepared, threshold=threshold)[0]

    def lookup_prepared(
        self, key: RequestKey, now: float, *, prepared: PreparedText | None = None,
        threshold: float | None = None,
    ) -> tuple[CacheHit | None, PreparedText | None]:
        """:meth:`lookup`, and ``key.text`` prepared if the lookup had to fingerprint it
        (else ``prepared`` as given): a miss hands it to :meth:`store`, so a request's text
        is fingerprinted once (a fingerprint is most of a miss's cache work)."""
        partition = self._partitions.get(key.exact)
        if partition is None:
            return None, prepared
        norm = prepared.norm if prepared is not None else self._normalise(key.text)
        entry_id = partition.by_text.get(norm)
        if entry_id is not None:
            kept = self._live(entry_id, now)
            if kept is not None:
                self._entries.move_to_end(entry_id)
                return CacheHit(_entry(kept), 1.0), prepared
        if partition.index is None or not _semantic(key.text):
            return None, prepared
        if prepared is None:
            prepared = PreparedText(norm, self.matcher.fingerprint(key.text, normalised=norm))
        query = prepared.fingerprint
        vector = self.matcher.vector(query)
        if len(vector) != partition.index.dim:  # vectors of another model: never comparable
            return None, prepared
        threshold = self.threshold if threshold is None else threshold
        # Candidates come best first; below this cosine none can match (the index's own
        # scores are approximate past a few thousand entries: a margin for that).
        least = self.matcher.least_cosine(query, threshold) - _INDEX_SLACK
        for candidate_id, _ in partition.index.search(vector, _SEARCH_K, floor=least):
            kept = self._live(candidate_id, now)
            if kept is None:
                continue
            cached = self.matcher.unpack(kept[_FINGERPRINT])
            ok, similarity = self.matcher.match(query, cached, threshold=threshold)
            repacked = self.matcher.repack(kept[_FINGERPRINT], cached)
            if repacked is not None:  # the comparison worked out more of it: keep that
                kept = _with_fingerprint(kept, repacked)
                self._entries[candidate_id] = self._by_age[candidate_id] = kept
            if ok:
                self._entries.move_to_end(candidate_id)
                return CacheHit(_entry(kept), min(similarity, 0.9999)), prepared
        return None, prepared

    def _live(self, entry_id: int, now: float) -> _Kept | None:
        """The entry if it has not expired (an expired one is dropped). Only the entry a
        lookup serves counts as used: candidates it merely compared keep their LRU place."""
        kept = self._entries.get(entry_id)
        if kept is None:
            return None
        if kept[_EXPIRES] <= now:
            self._remove(kept)
            return None
        return kept

    # ---- store --------------------------------------------------------------------------

    def store(
        self, key: RequestKey, result: ChatResult, *, model: str, tier: int, cost_usd: float,
        reference_usd: float, now: float, prepared: PreparedText | None = None,
    ) -> bool:
        """Store an answer; ``False`` when it is too large to cache. ``prepared`` is as for
        :meth:`lookup`."""
        return self.store_entry(key, result, model=model, tier=tier, cost_usd=cost_usd,
                                reference_usd=reference_usd, now=now,
                                prepared=prepared) is not None

    def store_entry(
        self, key: RequestKey, result: ChatResult, *, model: str, tier: int, cost_usd: float,
        reference_usd: float, now: float, prepared: PreparedText | None = None,
        ttl: float | None = None,
    ) -> CacheEntry | None:
        """:meth:`store`, returning the entry stored (``None``: too large). ``ttl`` overrides
        the cache's for this entry: an entry another process stored expires when it does
        there (it arrives a little after; entries are still expected in expiry order, which
        holds to within that delay)."""
        size = _ENTRY_OVERHEAD + len(key.text.encode()) * 2 + _result_size(result)
        if size > self.max_entry_bytes or self.max_entries == 0:
            return None
        norm = prepared.norm if prepared is not None else self._normalise(key.text)
        partition = self._partitions.get(key.exact)
        if partition is None:
            partition = self._partitions[key.exact] = _Partition()
        old = partition.by_text.get(norm)
        if old is not None and old in self._entries:
            self._remove(self._entries[old])
            partition = self._partitions.setdefault(key.exact, partition)
        if prepared is not None:
            fingerprint = prepared.fingerprint
        else:
            fingerprint = (self.matcher.fingerprint(key.text, normalised=norm)
                           if _semantic(key.text) else None)
        entry_id = self._next_id
        self._next_id += 1
        kept: _Kept = (
            entry_id, key.exact, norm,
            self.matcher.pack(fingerprint) if fingerprint is not None else None,
            pack_result(result), model, tier, cost_usd, reference_usd,
            now + (self.ttl if ttl is None else ttl), size,
        )
        self._entries[entry_id] = kept
        self._by_age[entry_id] = kept
        partition.by_text[norm] = entry_id
        if fingerprint is not None:
            vector = self.matcher.vector(fingerprint)
            if partition.index is None:
                partition.index = self.matcher.new_index(
                    len(vector), deferred=self.index_work is not None)
            partition.index.add(entry_id, vector)
            if self.index_work is not None:
                self.index_work(partition.index)
        self.bytes += size
        self._evict(now)
        return _entry(kept, result)

    def discard(self, exact: bytes, norm: str) -> bool:
        """Drop the entry for this exact part and normalised text, if there is one (another
        process evicted it from the shared budget)."""
        partition = self._partitions.get(exact)
        entry_id = partition.by_text.get(norm) if partition is not None else None
        kept = self._entries.get(entry_id) if entry_id is not None else None
        if kept is None:
            return False
        self._remove(kept)
        self.evictions += 1
        return True

    def _evict(self, now: float) -> None:
        # Expired entries first, so that no live entry makes room while an expired one stays;
        # then the least recently used.
        while self._by_age:
            oldest = next(iter(self._by_age.values()))
            if oldest[_EXPIRES] > now:
                break
            self._remove(oldest)
        while self._entries and (
            len(self._entries) > self.max_entries or self.bytes > self.max_bytes
        ):
            self._remove(next(iter(self._entries.values())))
            self.evictions += 1

    def _remove(self, kept: _Kept) -> None:
        entry_id, exact, norm = kept[_ID], kept[_EXACT], kept[_NORM]
        self._entries.pop(entry_id, None)
        self._by_age.pop(entry_id, None)
        self.bytes -= kept[_SIZE]
        partition = self._partitions.get(exact)
        if partition is None:
            return
        if partition.by_text.get(norm) == entry_id:
            del partition.by_text[norm]
        if partition.index is not None and kept[_FINGERPRINT] is not None:
            partition.index.remove(entry_id)
            if self.index_work is not None:
                self.index_work(partition.index)
        if not partition.by_text:
            del self._partitions[exact]

    def purge_expired(self, now: float) -> int:
        """Drop every expired entry (they are also dropped lazily); return how many."""
        expired = [kept for kept in self._entries.values() if kept[_EXPIRES] <= now]
        for entry in expired:
            self._remove(entry)
        return len(expired)
