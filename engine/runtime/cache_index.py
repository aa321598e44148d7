"""The semantic cache's graph work, off the event loop.

Past 2,048 entries a partition's vector index (``engine.core.cache.vector_index``) keeps its
entries in a usearch HNSW graph, whose inserts cost about 1 ms at 20,000 entries and 4 ms at
100,000 when evictions churn it: on the event loop, every concurrent request and stream would
wait that long per cache miss. So the cache's indexes are made ``deferred``: a store only
puts the vector into the index's exact buffer (found by the very next lookup), and calls
:meth:`IndexWriter.notice`; the writer's task, in the gateway's background nursery, takes
each index's pending work as batches and applies them in a worker thread (usearch 2.26
releases the GIL while it inserts), about a millisecond of inserts per thread call, then
commits each on the loop (tens of microseconds).

The graph must not be searched while a thread writes to it: the C++ index is documented as
safe for concurrent search and insert, but the Python binding's add may first grow the
graph's storage (``try_reserve``), which a concurrent search must not see, and corruption
with multithreaded use has been reported against some of usearch's bindings. So the writer
holds :attr:`IndexWriter.lock` while a thread writes to a graph that serves lookups (not
while the first batch of a move builds a new one), and a cache lookup holds it too
(:meth:`IndexWriter.hold`): a lookup then waits, without holding the loop, for at most one
step (:data:`STEP_SECONDS`, or one insert when a single one takes longer).

Stopping cancels the task; a step under way finishes first (a thread is never abandoned). A
batch left uncommitted stays searchable from its exact buffer: nothing is lost that the
process still serves.
"""

from __future__ import annotations

import time
from typing import Any

import trio

__all__ = ["STEP_SECONDS", "IndexWriter"]

#: What one worker-thread call on a graph that serves lookups aims to take, and so what a
#: lookup waits at most: as many inserts as fit, at least one (an insert costs about 1 ms at
#: 20,000 entries and up to 4 ms at 100,000 on 2 cores; at 1,000 a step holds dozens).
STEP_SECONDS = 0.001
_MAX_STEP = 256


class IndexWriter:
    """Applies deferred vector indexes' graph work in a worker thread (run :meth:`run` in a
    nursery). One writer serves every partition's index of one cache."""

    def __init__(self, *, step_seconds: float = STEP_SECONDS) -> None:
        self.step_seconds = step_seconds
        self._step = 1  # inserts per thread call, fitted to step_seconds as they are timed
        #: Held while a thread writes to a graph that serves lookups, and by lookups.
        self.lock = trio.Lock()
        self._waiting: dict[Any, None] = {}  # indexes with pending work, first come first
        self._wake = trio.Event()
        self._busy = False
        #: Batches committed (for tests and benches: the work caught up when it stops
        #: growing and :attr:`idle`).
        self.batches = 0

    @property
    def idle(self) -> bool:
        """No index waits for the writer, and it is working on none."""
        return not self._waiting and not self._busy

    def notice(self, index: Any) -> None:
        """``index`` (a deferred ``VectorIndex``) may have work pending. Cheap and synchronous:
        the cache calls it after each add or remove."""
        if index.pending:
            self._waiting[index] = None
            self._wake.set()

    async def hold(self) -> None:
        """Hold the graphs still for a lookup, which then calls ``lock.release()`` (no
        checkpoint when no write is under way). A plain coroutine, not a context manager:
        every cache lookup passes here."""
        try:
            self.lock.acquire_nowait()
            return
        except trio.WouldBlock:  # waited for outside the handler: see engine.runtime.channels
            pass
        await self.lock.acquire()

    async def run(self) -> None:
        """Apply pending work as it is noticed, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self._busy = True
            try:
                while self._waiting:
                    index = next(iter(self._waiting))
                    del self._waiting[index]
                    while (batch := index.take()) is not None:
                        await self._apply(index, batch)
                        index.commit(batch)
                        self.batches += 1
            finally:
                self._busy = False

    async def _apply(self, index: Any, batch: Any) -> None:
        if not batch.shared:  # a new graph: nothing searches it yet
            await trio.to_thread.run_sync(index.apply, batch)
            return
        done = False
        while not done:
            async with self.lock:
                before = batch.added
                started = time.perf_counter()
                done = await trio.to_thread.run_sync(index.apply, batch, self._step)
                spent = time.perf_counter() - started
            inserts = batch.added - max(before, 0)
            if inserts:
                fits = int(self.step_seconds * inserts / max(spent, 1e-6))
                self._step = max(1, min(_MAX_STEP, fits))
