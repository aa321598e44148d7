"""A cache entry as processes share it (``engine.core.cache.record``), and the two cache
operations the shared cache adds: storing with another process's remaining lifetime, and
dropping an entry another process's budget evicted."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from engine.core.cache.key import RequestKey
from engine.core.cache.record import (
    CacheRecord,
    decode_record,
    encode_record,
    entry_id,
)
from engine.core.cache.responses import ResponseCache
from engine.core.cache.semantic import SemanticMatcher
from engine.messages import ChatResult, TextPart, ThinkingPart, ToolCall, Usage

RESULT = ChatResult(
    content=(TextPart("Paris."), ToolCall("call_1", "lookup", '{"city": "Paris"}')),
    stop_reason="tool_calls", usage=Usage(12, 3, 4, 5), upstream_model="up-m",
    logprobs=({"token": "Paris", "logprob": -0.01, "top_logprobs": []},),
)


def record(**changes: object) -> CacheRecord:
    fields: dict[str, object] = dict(
        exact=b"\x01" * 20, text="What is the capital of France?", result=RESULT, model="m",
        tier=2, cost_usd=0.0012, reference_usd=0.03, expires=1_800_000_000.25, size=900)
    fields.update(changes)
    return CacheRecord(**fields)  # type: ignore[arg-type]


def test_a_record_round_trips() -> None:
    assert decode_record(encode_record(record())) == record()


@given(st.text(), st.lists(st.one_of(
    st.builds(TextPart, st.text()), st.builds(ToolCall, st.text(), st.text(), st.text()),
    st.builds(ThinkingPart, st.text(), st.text(), st.booleans()))))
def test_any_text_and_content_round_trip(text: str,
                                         parts: list[TextPart | ToolCall | ThinkingPart]) -> None:
    shared = record(text=text, result=ChatResult(content=tuple(parts)))
    assert decode_record(encode_record(shared)) == shared


def test_an_unreadable_record_is_a_miss_not_an_error() -> None:
    newer = orjson.loads(encode_record(record()))
    newer["v"] = 2
    assert decode_record(orjson.dumps(newer)) is None
    assert decode_record(b"not json") is None
    assert decode_record(b'{"v": 1}') is None


def test_the_entry_id_is_the_exact_part_and_the_normalised_text() -> None:
    assert entry_id(b"a" * 20, "hi") == entry_id(b"a" * 20, "hi")
    assert entry_id(b"a" * 20, "hi") != entry_id(b"b" * 20, "hi")  # another tenant
    assert entry_id(b"a" * 20, "hi") != entry_id(b"a" * 20, "ho")


def test_store_entry_with_a_ttl_and_discard() -> None:
    cache = ResponseCache(matcher=SemanticMatcher(), max_entries=10, max_bytes=1 << 20,
                          max_entry_bytes=1 << 16, ttl=300, threshold=0.85)
    key = RequestKey(exact=b"p" * 20, text="Who wrote Hamlet?", full=b"")
    entry = cache.store_entry(key, RESULT, model="m", tier=1, cost_usd=0, reference_usd=0,
                              now=0.0, ttl=5.0)
    assert entry is not None and entry.expires == 5.0
    assert cache.lookup(key, 4.9) is not None
    assert cache.lookup(key, 5.0) is None
    entry = cache.store_entry(key, RESULT, model="m", tier=1, cost_usd=0, reference_usd=0,
                              now=10.0)
    assert entry is not None
    assert cache.discard(b"q" * 20, entry.norm) is False
    assert cache.discard(entry.exact, entry.norm) is True
    assert cache.lookup(key, 10.0) is None and len(cache) == 0 and cache.bytes == 0
