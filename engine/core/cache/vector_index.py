"""Nearest cached prompts by vector: exact below a few thousand entries, HNSW above. Sans-IO.

The semantic cache asks "which cached prompts are closest to this one?" on every request, so a
lookup must not cost time in proportion to the cache. Two regimes:

* Up to ``exact_below`` entries (2,048 by default, so the default ``cache.max_size`` of 1,000
  stays here) vectors sit in one dense numpy matrix and a lookup is one matrix-vector product:
  exact, deterministic, ~30 us at 1,000 entries, and adds and removals are O(1) (removal moves
  the last row into the hole).
* Past it, the entries move into a usearch HNSW graph (``usearch``: maintained, wheels for
  CPython 3.11 on x86_64 and arm64, and it reuses the slots of removed entries, so TTL and LRU
  churn neither grows memory nor needs a rebuild; ``hnswlib``'s last release is from 2023 and
  ships no 3.11 wheel). Lookups are logarithmic: ~0.3 ms at 100,000 entries on 2 cores.
  Vectors are stored as float16: half the memory, the same recall, and scores good to ~1e-3,
  enough to choose candidates that the caller re-scores exactly.

A graph insert is not cheap: about 1 ms at 20,000 entries and 4 ms at 100,000 when removals
churn the graph. So an added vector first goes into a small exact *buffer* (the same numpy
store as below ``exact_below``), searched exactly beside the graph and merged by score: it is
found by the very next search, at O(1) cost to the add. The graph work (the buffered vectors,
the removals, and the first move into the graph) is handed out in batches of at most 128
vectors: :meth:`VectorIndex.take` (the buffer is frozen as it is, and its rows handed out a
slice at a time, searched exactly until their batch is committed), :meth:`VectorIndex.apply`
(the usearch calls, in steps, touching nothing but the batch and the graph: the owner may run
it in a worker thread, where usearch releases the GIL), then :meth:`VectorIndex.commit`. Taking
and committing a batch cost tens of microseconds whatever the size of the buffer or of the
move. With ``deferred=False`` (the default) the index does all three itself inside ``add``
and ``remove``: simple, and slow past 2,048.

Keys are any hashable the caller likes; the graph sees private integer labels, never reused, so
a key removed and added again cannot collide with its old self. Not thread-safe: the owner
serialises calls, and runs :meth:`VectorIndex.apply` of a batch made on a shared graph
(:attr:`Batch.shared`) only while no :meth:`VectorIndex.search` runs (the runtime's
``engine.runtime.cache_index`` holds a lock for that).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np

__all__ = ["Batch", "VectorIndex"]

_Found = list[tuple[Hashable, float]]


class _Exact:
    """Vectors in one dense matrix, searched exactly: rows ``0..len-1`` are live and
    ``keys[row]`` is a row's key. Removal moves the last row into the hole, unless the store
    is ``frozen`` (a worker thread reads it): then it only marks the row dead."""

    def __init__(self, dim: int) -> None:
        self.matrix = np.zeros((16, dim), np.float32)
        self.keys: list[Hashable] = []
        self.rows: dict[Hashable, int] = {}
        self.alive: np.ndarray | None = None  # frozen: which rows are live
        self.base = 0  # frozen: the graph label of row 0 (row r's label is base + r)
        self.cursor = 0  # frozen: rows before it have been handed out to the graph

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, key: Hashable, vector: np.ndarray) -> None:
        row = len(self.keys)
        if row == len(self.matrix):
            self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])
        self.matrix[row] = vector
        self.keys.append(key)
        self.rows[key] = row

    def remove(self, key: Hashable) -> bool:
        row = self.rows.pop(key, None)
        if row is None:
            return False
        if self.alive is not None:
            self.alive[row] = False
            return True
        last = len(self.keys) - 1
        if row != last:  # move the last row into the hole
            moved = self.keys[last]
            self.matrix[row] = self.matrix[last]
            self.keys[row] = moved
            self.rows[moved] = row
        self.keys.pop()
        return True

    def freeze(self, base: int) -> None:
        """Stop moving rows (their vectors go into the graph, a slice at a time, under
        labels from ``base``)."""
        self.alive = np.ones(len(self.keys), bool)
        self.base = base

    def search(self, vector: np.ndarray, k: int, floor: float) -> _Found:
        if not self.rows:
            return []
        scores = self.matrix[: len(self.keys)] @ vector
        if self.alive is not None:
            scores[~self.alive] = -math.inf
        if float(scores.max()) < floor:  # nothing near: most lookups of a new question
            return []
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        # stable: ties go to the earlier row, so equal inputs give equal answers
        top = top[np.lexsort((top, -scores[top]))]
        return [(self.keys[i], score) for i in top
                if not (score := float(scores[i])) < floor and score != -math.inf]


class Batch:
    """Graph work handed out by :meth:`VectorIndex.take`: labels to remove, then vectors to
    add (the first batch also makes the graph). ``shared``: the graph already serves
    searches, so no search may run while :meth:`VectorIndex.apply` runs on this batch."""

    __slots__ = ("added", "graph", "labels", "removed", "rows", "shared", "vectors")

    def __init__(self, graph: Any, rows: np.ndarray, labels: np.ndarray, vectors: np.ndarray,
                 removed: np.ndarray) -> None:
        self.graph = graph
        self.shared = graph is not None
        self.rows = rows  # of the frozen store the vectors come from
        self.labels = labels
        self.vectors = vectors  # a copy: the thread reads nothing the index changes
        self.removed = removed
        self.added = -1  # vectors added so far; -1: the removals are still to do

    def __len__(self) -> int:
        return len(self.labels) + len(self.removed)


class VectorIndex:
    """Approximate nearest neighbours over unit vectors, by inner product (= cosine).

    Args:
        dim: the vector dimension.
        exact_below: entries kept in the exact store; passing it moves them into the graph.
        deferred: leave the graph work to the owner (:meth:`take`, :meth:`apply`,
            :meth:`commit`); else ``add`` and ``remove`` do it at once.
        connectivity, expansion_add, expansion_search: HNSW parameters (usearch's ``M``,
            ``ef_construction`` and ``ef``); the defaults give ~0.96 recall@1 for paraphrase
            queries at 100,000 prompt vectors.

    Examples:
        >>> index = VectorIndex(2)
        >>> index.add("a", np.array([1.0, 0.0]))
        >>> index.add("b", np.array([0.0, 1.0]))
        >>> [(key, round(score, 2)) for key, score in index.search(np.array([0.8, 0.6]), k=2)]
        [('a', 0.8), ('b', 0.6)]
        >>> index.remove("a")
        True
        >>> [key for key, _ in index.search(np.array([0.8, 0.6]), k=2)]
        ['b']
    """

    def __init__(
        self,
        dim: int,
        *,
        exact_below: int = 2048,
        deferred: bool = False,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
    ) -> None:
        if dim < 1 or exact_below < 0:
            raise ValueError("dim must be positive and exact_below non-negative")
        self.dim = dim
        self.deferred = deferred
        self._exact_below = exact_below
        self._hnsw_params = (connectivity, expansion_add, expansion_search)
        # below exact_below, every entry; past it, those added since the graph work last
        # froze them into _moving
        self._fresh = _Exact(dim)
        # entries on their way into the graph, a slice of rows per batch; searched exactly
        # until the batch that carries them is committed (rows then marked dead here)
        self._moving: _Exact | None = None
        self._batch: Batch | None = None
        # the graph, once made: key <-> label of the entries it serves
        self._graph: Any = None
        self._labels: dict[Hashable, int] = {}
        self._label_keys: dict[int, Hashable] = {}
        self._next_label = 0
        self._doomed: list[int] = []  # labels removed here and maybe still in the graph

    def __len__(self) -> int:
        moving = len(self._moving) if self._moving is not None else 0
        return len(self._labels) + moving + len(self._fresh)

    def __contains__(self, key: Hashable) -> bool:
        return (key in self._fresh.rows or key in self._labels
                or (self._moving is not None and key in self._moving.rows))

    @property
    def approximate(self) -> bool:
        """True once the entries live in the HNSW graph."""
        return self._graph is not None

    @property
    def buffered(self) -> int:
        """Entries searched exactly beside the graph, or waiting to move into it (0 in the
        exact regime)."""
        if self._graph is None and self._moving is None:
            return 0
        return len(self) - len(self._labels)

    @property
    def pending(self) -> bool:
        """Whether :meth:`take` has work to hand out now."""
        if self._batch is not None:
            return False
        if self._moving is not None:
            return True
        if self._graph is None:
            return len(self._fresh) > self._exact_below
        return bool(self._fresh.rows or self._doomed)

    def add(self, key: Hashable, vector: np.ndarray) -> None:
        """Index ``vector`` (unit length, shape ``(dim,)``) under ``key``, replacing any
        vector the key had; the next search finds it."""
        vector = self._check(vector)
        self.remove(key)
        self._fresh.add(key, vector)
        if not self.deferred:
            self._flush()

    def remove(self, key: Hashable) -> bool:
        """Forget ``key``; False when it was not indexed."""
        if self._fresh.remove(key):
            return True
        moving = self._moving
        row = moving.rows.pop(key, -1) if moving is not None else -1
        if row >= 0:
            assert moving is not None and moving.alive is not None
            moving.alive[row] = False
            if row >= moving.cursor:  # not handed out: it never reaches the graph
                return True
            label = moving.base + row
        else:
            label = self._labels.pop(key, -1)
            if label < 0:
                return False
            del self._label_keys[label]
        self._doomed.append(label)
        if not self.deferred:
            self._flush()
        return True

    def search(self, vector: np.ndarray, k: int = 1, *,
               floor: float = -math.inf) -> _Found:
        """Up to ``k`` ``(key, score)`` pairs, highest inner product first, leaving out those
        scoring below ``floor``."""
        vector = self._check(vector)
        if k < 1 or not len(self):
            return []
        found = self._fresh.search(vector, k, floor)
        if self._graph is None and self._moving is None:
            return found
        if self._moving is not None:
            found += self._moving.search(vector, k, floor)
        if self._labels:
            hits = self._graph.search(vector, k)
            found += [
                (self._label_keys[int(label)], score)
                for label, distance in zip(hits.keys, hits.distances, strict=True)
                if int(label) in self._label_keys and not (score := 1.0 - float(distance)) < floor
            ]
        found.sort(key=lambda pair: -pair[1])  # stable: the buffer's first on equal scores
        return found[:k]

    # ---- the graph work -----------------------------------------------------------------

    def take(self, limit: int = 128) -> Batch | None:
        """The graph work to do now, if any: the removals so far and up to ``limit`` vectors
        (one batch at a time: ``None`` until the last one is committed). The work is cut in
        batches so that taking and committing one costs the owner little, whatever the
        number of entries waiting; those stay findable, exactly, meanwhile."""
        if not self.pending:
            return None
        moving = self._moving
        if moving is None:  # freeze the buffer: its rows go to the graph a slice at a time
            moving, self._fresh = self._fresh, _Exact(self.dim)
            moving.freeze(self._next_label)
            self._next_label += len(moving.keys)
            self._moving = moving
        assert moving.alive is not None
        stop = min(len(moving.keys), moving.cursor + limit)
        rows = np.flatnonzero(moving.alive[moving.cursor:stop]) + moving.cursor
        moving.cursor = stop
        removed = np.array(self._doomed, np.uint64)
        self._doomed = []
        self._batch = Batch(self._graph, rows, (rows + moving.base).astype(np.uint64),
                            moving.matrix[rows], removed)
        return self._batch

    def apply(self, batch: Batch, limit: int | None = None) -> bool:
        """Do ``batch``'s graph work: its removals, then up to ``limit`` of its vectors
        (``None``: all). True when nothing is left to do. Touches only the batch and its
        graph: it may run in a worker thread, the rest of the index in use meanwhile."""
        if batch.graph is None:
            batch.graph = self._new_graph()
        if batch.added < 0:
            if len(batch.removed):
                batch.graph.remove(batch.removed)
            batch.added = 0
        stop = len(batch.labels) if limit is None else min(len(batch.labels),
                                                            batch.added + limit)
        if stop > batch.added:
            batch.graph.add(batch.labels[batch.added:stop], batch.vectors[batch.added:stop],
                            threads=1)
            batch.added = stop
        return batch.added == len(batch.labels)

    def commit(self, batch: Batch) -> None:
        """Serve ``batch``'s entries from the graph (:meth:`apply` has done all of it)."""
        if batch is not self._batch or batch.added != len(batch.labels):
            raise ValueError("not the batch taken, or not applied in full")
        self._graph = batch.graph
        moving = self._moving
        assert moving is not None and moving.alive is not None
        keys, rows, labels = moving.keys, moving.rows, self._labels
        for row in batch.rows.tolist():
            key = keys[row]
            if rows.get(key) == row:  # not removed meanwhile (else its label is doomed)
                del rows[key]
                labels[key] = label = moving.base + row
                self._label_keys[label] = key
        moving.alive[batch.rows] = False
        if moving.cursor == len(keys):
            self._moving = None
        self._batch = None

    def _flush(self) -> None:
        while (batch := self.take(1 << 30)) is not None:
            self.apply(batch)
            self.commit(batch)

    def _check(self, vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector, np.float32)
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a vector of shape ({self.dim},), got {vector.shape}")
        return vector

    def _new_graph(self) -> Any:
        from usearch.index import Index  # imported on first use: small caches never need it

        connectivity, expansion_add, expansion_search = self._hnsw_params
        return Index(
            ndim=self.dim,
            metric="ip",
            dtype="f16",
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
