"""The cache's similarity function: ``engine.core.cache.similarity`` and
``engine.core.cache.vector_index`` joined into the
:class:`~engine.core.cache.responses.Matcher` the cache uses."""

from __future__ import annotations

import math
from typing import Any

from .similarity import Embedder, Fingerprint, match, normalize_text
from .vector_index import VectorIndex

__all__ = ["SemanticMatcher"]


class SemanticMatcher:
    """Loads the embedding table on construction (call it off the event loop).
    ``unaligned_cosine`` is ``cache.embedder.unaligned_cosine`` (see ``similarity.compare``)."""

    def __init__(self, unaligned_cosine: float | None = None) -> None:
        self.unaligned_cosine = unaligned_cosine
        self.embedder = Embedder()
        self.dim = self.embedder.dim  # forces the load now, not on the first request

    def fingerprint(self, text: str, *, normalised: str | None = None) -> Fingerprint:
        return self.embedder.fingerprint(text, normalised=normalised)

    def normalise(self, text: str) -> str:
        return normalize_text(text)

    def new_index(self, dim: int, *, deferred: bool = False) -> VectorIndex:
        """An index for vectors of ``dim``: the table's, or those of ``cache.embedder``;
        ``deferred``: its graph work is left to the owner (``VectorIndex``)."""
        return VectorIndex(dim, deferred=deferred)

    def vector(self, fingerprint: Fingerprint) -> Any:
        return fingerprint.vector

    def pack(self, fingerprint: Fingerprint) -> tuple[Any, ...]:
        return fingerprint.pack()

    def unpack(self, packed: tuple[Any, ...]) -> Fingerprint:
        return Fingerprint.unpack(packed, self.embedder.table)

    def settle(self, fingerprint: Fingerprint) -> None:
        """Work out ``fingerprint``'s reading for the guards now (in a worker thread, for a
        long text), not when a comparison first needs it."""
        fingerprint.settle()

    def repack(self, packed: tuple[Any, ...], fingerprint: Fingerprint) -> tuple[Any, ...] | None:
        """What to keep instead of ``packed`` now that ``fingerprint`` (its unpacking) has
        been compared: its lexical part, or its guards' key, worked out once (``None``: keep
        ``packed``, which has as much). The third place of a packing says how far it goes:
        None, the key, or the packed features (``Fingerprint.pack``)."""
        known = packed[2]
        if isinstance(known, bytes) or not (fingerprint.settled or known is None):
            return None
        return fingerprint.pack()

    def least_cosine(self, query: Fingerprint, threshold: float) -> float:
        """The lowest cosine between ``query``'s vector and a cached one at which the two can
        still match at ``threshold`` (the cache compares no candidate below it). An allowed
        pair scores ``0.5 + 0.5 * (cosine - penalty)`` with a penalty never below 0, so
        above 0.5 a hit needs a cosine of ``2 * threshold - 1``; at or below 0.5, or with
        ``unaligned_cosine`` on vectors from ``cache.embedder`` (whose penalty may be
        negative), any cosine may."""
        if threshold <= 0.5 or (self.unaligned_cosine is not None and query.external):
            return -math.inf
        return 2.0 * threshold - 1.0

    def match(
        self, query: Fingerprint, cached: Fingerprint, *, threshold: float
    ) -> tuple[bool, float]:
        return match(query, cached, threshold=threshold,
                     unaligned_cosine=self.unaligned_cosine)
