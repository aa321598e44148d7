"""The cache's sentence vectors from an OpenAI-compatible ``/v1/embeddings`` endpoint
(``cache.embedder``): OpenAI, Ollama's ``nomic-embed-text``, vLLM, a local server.

A chat request that may use the cache waits for one vector before its lookup, so the call is
kept off the critical path where it can be:

* identical texts are embedded once: a bounded memo of recent vectors, and a text already on
  its way is waited for, not sent again;
* concurrent requests share a call: one task sends whatever texts are waiting as one batch
  (up to :data:`BATCH` texts), with no added delay: a lone request goes at once;
* every wait is bounded by ``cache.embedder.timeout_ms``, queueing included, and the queue
  itself by :data:`_MAX_WAITING` texts (an endpoint slower than the traffic sheds it).

On a timeout, an error or a malformed answer the caller gets ``None`` and skips the cache for
that request (a miss, never a failed request); failures are counted and shown in
``GET /stats``. The endpoint comes from the configuration only; its key is sent as a bearer
token and appears in no log line or snapshot (``engine.core.redact`` masks it as well).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import trio

from engine.core.config import EmbedderConfig
from engine.core.redact import without_userinfo
from engine.errors import UpstreamError

from .upstream import UpstreamClient

__all__ = ["BATCH", "RemoteEmbedder"]

#: Texts sent in one call at most.
BATCH = 64
_MEMO = 4096
# Texts waiting for a vector at most: past it (an endpoint slower than the traffic) a request
# skips the cache at once rather than queue work whose answer would come too late.
_MAX_WAITING = 16 * BATCH
_EWMA_ALPHA = 0.2
log = logging.getLogger("llm_router")


class _Pending:
    __slots__ = ("done", "text", "vector")

    def __init__(self, text: str) -> None:
        self.text = text
        self.vector: np.ndarray | None = None  # None once done: the call failed
        self.done = trio.Event()


class RemoteEmbedder:
    """Call :meth:`run` in a nursery (it sends the batches); then :meth:`vectors`."""

    def __init__(self, settings: EmbedderConfig, upstream: UpstreamClient) -> None:
        self.settings = settings
        self.timeout = settings.timeout_ms / 1000.0
        self._upstream = upstream
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._waiting: dict[str, _Pending] = {}
        self._send, self._receive = trio.open_memory_channel[_Pending](math.inf)
        self.dim: int | None = settings.dimensions
        self.calls = self.failures = self.texts = self.memo_hits = self.timeouts = 0
        #: Lookups that went without the cache because no vector came in time.
        self.skipped = 0
        self.latency_ms: float | None = None
        self.last_error: str | None = None

    async def vectors(self, texts: Sequence[str]) -> list[np.ndarray] | None:
        """Unit vectors of ``texts`` (normalised prompts), or ``None`` if any could not be
        had within the time budget."""
        out: list[np.ndarray | None] = []
        pending: list[tuple[int, _Pending]] = []
        for text in texts:
            vector = self._memo.get(text)
            if vector is not None:
                self._memo.move_to_end(text)
                self.memo_hits += 1
                out.append(vector)
                continue
            waiting = self._waiting.get(text)
            if waiting is None:
                if len(self._waiting) >= _MAX_WAITING:
                    self.skipped += 1
                    return None
                waiting = self._waiting[text] = _Pending(text)
                self._send.send_nowait(waiting)
            pending.append((len(out), waiting))
            out.append(None)
        with trio.move_on_after(self.timeout) as scope:
            for i, waiting in pending:
                await waiting.done.wait()
                out[i] = waiting.vector
        if scope.cancelled_caught:
            self.timeouts += 1
            self.skipped += 1
            return None
        if any(v is None for v in out):
            self.skipped += 1
            return None
        return [v for v in out if v is not None]

    async def run(self) -> None:
        """Send what is waiting, one batch at a time, for as long as the gateway runs."""
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._embed(batch)

    async def _embed(self, batch: list[_Pending]) -> None:
        self.calls += 1
        self.texts += len(batch)
        started = trio.current_time()
        body: dict[str, Any] = {"model": self.settings.model, "input": [p.text for p in batch]}
        if self.settings.dimensions is not None:
            body["dimensions"] = self.settings.dimensions
        try:
            answer = await self._upstream.post_json(
                self.settings.url, orjson.dumps(body), timeout=self.timeout,
                bearer=self.settings.api_key)
            vectors = self._parse(answer, len(batch))
        except UpstreamError as exc:
            self.failures += 1
            if self.last_error is None:
                log.warning("cache embedder: %s (the cache is skipped while it fails)",
                            exc.message)
            self.last_error = exc.message
            vectors = [None] * len(batch)
        else:
            ms = (trio.current_time() - started) * 1000
            self.latency_ms = ms if self.latency_ms is None else (
                self.latency_ms + _EWMA_ALPHA * (ms - self.latency_ms))
            if self.last_error is not None:
                log.warning("cache embedder: answering again")
            self.last_error = None
        for waiting, vector in zip(batch, vectors, strict=True):
            waiting.vector = vector
            if vector is not None:
                self._memo[waiting.text] = vector
            del self._waiting[waiting.text]
            waiting.done.set()
        while len(self._memo) > _MEMO:
            self._memo.popitem(last=False)

    def _parse(self, answer: Any, count: int) -> list[np.ndarray | None]:
        """The answer's vectors in input order, unit length; ``UpstreamError`` if it is not
        an embeddings answer for ``count`` texts of one dimension."""
        shown = without_userinfo(self.settings.url)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != count:
            raise UpstreamError(f"{shown} answered without {count} embeddings")
        rows: list[np.ndarray | None] = [None] * count
        for position, item in enumerate(data):
            index = item.get("index", position) if isinstance(item, dict) else None
            values = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < count or not isinstance(values,
                                                                                      list):
                raise UpstreamError(f"{shown} answered a malformed embedding")
            try:
                vector = np.asarray(values, np.float32)
            except (TypeError, ValueError):
                raise UpstreamError(f"{shown} answered a malformed embedding") from None
            if vector.ndim != 1 or not len(vector) or not np.isfinite(vector).all():
                raise UpstreamError(f"{shown} answered a malformed embedding")
            if self.dim is None:
                self.dim = len(vector)
            if len(vector) != self.dim:
                raise UpstreamError(f"{shown} answered {len(vector)} dimensions, not {self.dim}")
            norm = float(np.sqrt(vector @ vector))
            rows[index] = vector / norm if norm > 0 else vector
        return rows

    def snapshot(self) -> dict[str, object]:
        """For ``GET /stats``: where, how often, how fast, the last error."""
        return {
            "url": without_userinfo(self.settings.url), "model": self.settings.model,
            "dimensions": self.dim, "calls": self.calls, "texts": self.texts,
            "memo_hits": self.memo_hits, "failures": self.failures, "timeouts": self.timeouts,
            "skipped": self.skipped,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "last_error": self.last_error,
        }
