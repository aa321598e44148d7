"""The semantic cache's graph work off the event loop: ``engine.runtime.cache_index`` with a
real ``ResponseCache``, the real similarity function and real usearch graphs.

The graph takes over past ``exact_below`` entries (2,048 in the product, not a setting); the
matcher here makes its indexes with a small one, so a few dozen entries reach the graph."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from engine.core.cache.key import RequestKey
from engine.core.cache.responses import ResponseCache
from engine.core.cache.semantic import SemanticMatcher
from engine.core.cache.similarity import DEFAULT_THRESHOLD
from engine.core.cache.vector_index import VectorIndex
from engine.messages import ChatResult, TextPart, Usage
from engine.runtime.cache_index import IndexWriter

PLACES = ["France", "Spain", "Italy", "Germany", "Poland", "Norway", "Sweden", "Finland",
          "Greece", "Portugal", "Austria", "Hungary", "Ireland", "Denmark", "Belgium", "Peru",
          "Chile", "Brazil", "Canada", "Mexico", "Japan", "Kenya", "Egypt", "Morocco"]


class SmallGraphMatcher(SemanticMatcher):
    """The real matcher, its indexes moving into the graph past 8 entries."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[VectorIndex] = []

    def new_index(self, dim: int, *, deferred: bool = False) -> VectorIndex:
        self.made.append(VectorIndex(dim, exact_below=8, deferred=deferred))
        return self.made[-1]


@pytest.fixture(scope="module")
def matcher() -> SmallGraphMatcher:
    return SmallGraphMatcher()


def rkey(text: str) -> RequestKey:
    return RequestKey(exact=b"p" * 20, text=text, full=b"p" * 20 + text.encode())


def question(place: str) -> str:
    return f"What is the capital of {place}?"


def paraphrase(place: str) -> str:
    return f"What's {place}'s capital?"


def make_cache(matcher: SemanticMatcher, writer: IndexWriter, max_entries: int) -> ResponseCache:
    return ResponseCache(matcher=matcher, max_entries=max_entries, max_bytes=1 << 20,
                         max_entry_bytes=1 << 16, ttl=100.0, threshold=DEFAULT_THRESHOLD,
                         index_work=writer.notice)


def put(cache: ResponseCache, place: str) -> None:
    assert cache.store(rkey(question(place)), ChatResult(content=(TextPart(place),),
                                                         usage=Usage(10, 5)),
                       model="m", tier=1, cost_usd=0.01, reference_usd=0.03, now=0.0)


async def served(cache: ResponseCache, writer: IndexWriter, text: str) -> Any:
    await writer.hold()
    try:
        hit = cache.lookup(rkey(text), 1.0)
    finally:
        writer.lock.release()
    return None if hit is None else hit.entry.result.text


async def caught_up(writer: IndexWriter, index: VectorIndex) -> None:
    with trio.fail_after(60):  # a guard against a hang, not a measurement
        while not writer.idle or index.pending or index.buffered:
            await trio.sleep(0.01)


async def test_hits_are_served_past_the_graph_and_while_the_writer_works(
        matcher: SmallGraphMatcher) -> None:
    """Each stored question is a semantic hit at once, while the writer moves the entries into
    the graph and keeps adding to it in a worker thread; evictions churn the graph; once the
    writer has caught up, every live entry is served from the graph."""
    writer = IndexWriter()
    cache = make_cache(matcher, writer, max_entries=20)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for place in PLACES:
            put(cache, place)
            assert await served(cache, writer, paraphrase(place)) == place  # at once
            await trio.sleep(0)  # the writer's turn
        index = matcher.made[-1]
        await caught_up(writer, index)
        assert index.approximate and writer.batches > 1 and len(index) == 20
        assert [await served(cache, writer, paraphrase(p)) for p in PLACES[-20:]] == PLACES[-20:]
        assert [await served(cache, writer, paraphrase(p)) for p in PLACES[:4]] == [None] * 4
        nursery.cancel_scope.cancel()


async def test_stopping_leaves_no_task_and_loses_no_entry(matcher: SmallGraphMatcher) -> None:
    """Cancelled with a batch taken (the move into the graph under way in a thread), the writer
    stops at once after that thread call; every entry is still found, from the buffer."""
    writer = IndexWriter()
    cache = make_cache(matcher, writer, max_entries=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for place in PLACES:
            put(cache, place)
        await trio.sleep(0)  # the writer takes the batch and starts its thread
        nursery.cancel_scope.cancel()
    assert [await served(cache, writer, paraphrase(p)) for p in PLACES] == PLACES
