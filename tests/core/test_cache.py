"""The response cache: ``engine.cache.ResponseCache`` with the real similarity function, and the
cache end to end over real sockets with the official SDKs.

End to end, every request is pinned to ``gpt-small`` (the fake's ``oa-small``, an OpenAI
upstream) unless a test is about the routing target, and every answer reports the same usage,
so "the upstream was called" is a count of ``fake.requests(OA_SMALL)`` and the money is exact.
The fake's reply quotes the prompt it answered ("[oa-small] <prompt>"), which shows whose
answer a hit served.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from router_harness import make_config, open_router
from support_protocols import (
    AN_MID,
    ANTHROPIC_TOOLS,
    OA_SMALL,
    OPENAI_TOOLS,
    SDK_STREAM_LEAKS,
    UPSTREAM_KEYS,
    WEATHER,
    ProtocolEnv,
    sse_events,
    user,
    wait_until_cancelled,
)

from engine.core.cache.key import RequestKey
from engine.core.cache.responses import MAX_SEMANTIC_CHARS, ResponseCache
from engine.core.cache.semantic import SemanticMatcher
from engine.core.cache.similarity import DEFAULT_THRESHOLD
from engine.messages import ChatResult, TextPart
from engine.messages import Usage as CanonicalUsage
from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage

pytestmark = SDK_STREAM_LEAKS

FRANCE = "What is the capital of France?"
FRANCE_PARAPHRASE = "What's France's capital?"
GO = "How do I write Go code?"

USAGE = Usage(input_tokens=1000, output_tokens=500)
# gpt-small's prices below: 1000 in at 0.001 / 1k and 500 out at 0.002 / 1k.
ANSWER_COST = 0.002
_TIMEOUTS = {"connect_sec": 2, "first_byte_sec": 5, "idle_sec": 5, "total_sec": 10}


# == ResponseCache, with the real similarity function ==========================================


@pytest.fixture(scope="module")
def matcher() -> SemanticMatcher:
    return SemanticMatcher()


def make_cache(matcher: SemanticMatcher, **bounds: Any) -> ResponseCache:
    settings = {"max_entries": 100, "max_bytes": 1 << 20, "max_entry_bytes": 1 << 16,
                "ttl": 10.0, "threshold": DEFAULT_THRESHOLD} | bounds
    return ResponseCache(matcher=matcher, **settings)


def rkey(text: str, partition: bytes = b"p" * 20) -> RequestKey:
    """A key in ``partition`` (an exact-part digest) for final message ``text``."""
    return RequestKey(exact=partition, text=text, full=partition + text.encode())


def answer(text: str) -> ChatResult:
    return ChatResult(content=(TextPart(text),), usage=CanonicalUsage(10, 5))


def put(cache: ResponseCache, text: str, now: float = 0.0, *, reply: str | None = None,
        partition: bytes = b"p" * 20) -> bool:
    return cache.store(rkey(text, partition), answer(reply or f"re: {text}"), model="m", tier=1,
                       cost_usd=0.01, reference_usd=0.03, now=now)


def served(cache: ResponseCache, text: str, now: float = 0.0,
           partition: bytes = b"p" * 20) -> str | None:
    """The text of the answer a lookup serves, or None on a miss."""
    hit = cache.lookup(rkey(text, partition), now)
    return None if hit is None else hit.entry.result.text


def test_exact_hit(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher)
    assert put(cache, FRANCE)
    hit = cache.lookup(rkey(FRANCE), 1.0)
    assert hit is not None and hit.exact and hit.similarity == 1.0
    assert hit.entry.result.text == f"re: {FRANCE}"
    assert (hit.entry.model, hit.entry.tier, hit.entry.cost_usd) == ("m", 1, 0.01)


def test_spelling_variants_are_exact_hits(matcher: SemanticMatcher) -> None:
    # Contractions, curly quotes and spacing are normalised away before comparing.
    cache = make_cache(matcher)
    put(cache, "What is the capital of France?")
    hit = cache.lookup(rkey("What\u2019s  the capital of France? "), 0.0)
    assert hit is not None and hit.exact


def test_paraphrase_is_a_semantic_hit(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher)
    put(cache, FRANCE)
    hit = cache.lookup(rkey(FRANCE_PARAPHRASE), 0.0)
    assert hit is not None and not hit.exact
    assert DEFAULT_THRESHOLD <= hit.similarity < 1.0
    assert hit.entry.result.text == f"re: {FRANCE}"


@pytest.mark.parametrize("text", [GO, "What is the capital of Germany?", ""])
def test_unrelated_prompts_miss(matcher: SemanticMatcher, text: str) -> None:
    cache = make_cache(matcher)
    put(cache, FRANCE)
    assert served(cache, text) is None


def test_semantic_search_picks_the_matching_entry(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher)
    for text in ("What is the capital of Germany?", GO, FRANCE, "How tall is Mount Everest?"):
        put(cache, text)
    assert served(cache, FRANCE_PARAPHRASE) == f"re: {FRANCE}"


def test_partitions_are_isolated(matcher: SemanticMatcher) -> None:
    # Another exact part (tenant, target, history, parameters...) never sees the entry, not
    # even for the very same text.
    cache = make_cache(matcher)
    put(cache, FRANCE, partition=b"a" * 20)
    assert served(cache, FRANCE, partition=b"b" * 20) is None
    assert served(cache, FRANCE_PARAPHRASE, partition=b"b" * 20) is None
    put(cache, FRANCE, partition=b"b" * 20, reply="b's answer")
    assert served(cache, FRANCE, partition=b"a" * 20) == f"re: {FRANCE}"
    assert served(cache, FRANCE, partition=b"b" * 20) == "b's answer"


def test_empty_final_text_is_an_exact_only_entry(matcher: SemanticMatcher) -> None:
    # A final turn with no text (a tool result): the whole request is in the exact part.
    cache = make_cache(matcher)
    put(cache, "")
    assert served(cache, "") == "re: "
    assert served(cache, FRANCE) is None


def test_storing_the_same_text_again_replaces_the_entry(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher)
    put(cache, FRANCE, reply="old")
    size = cache.bytes
    put(cache, FRANCE, 1.0, reply="new")
    assert len(cache) == 1 and cache.bytes == size
    assert served(cache, FRANCE, 1.0) == "new"
    assert served(cache, FRANCE_PARAPHRASE, 1.0) == "new"


# -- bounds -----------------------------------------------------------------------------------


def test_ttl(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher, ttl=10.0)
    put(cache, FRANCE, 100.0)
    assert served(cache, FRANCE, 109.9) == f"re: {FRANCE}"
    assert served(cache, FRANCE_PARAPHRASE, 109.9) == f"re: {FRANCE}"
    # Expired: never served, by either path, and dropped.
    assert served(cache, FRANCE_PARAPHRASE, 110.0) is None
    assert served(cache, FRANCE, 110.0) is None
    assert len(cache) == 0 and cache.bytes == 0


def test_ttl_counts_from_the_store_not_the_last_hit(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher, ttl=10.0)
    put(cache, FRANCE, 0.0)
    for now in (3.0, 6.0, 9.0):
        assert served(cache, FRANCE, now) is not None
    assert served(cache, FRANCE, 10.5) is None


def test_purge_expired(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher, ttl=10.0)
    put(cache, FRANCE, 0.0)
    put(cache, GO, 5.0)
    assert cache.purge_expired(12.0) == 1
    assert len(cache) == 1 and served(cache, GO, 12.0) is not None


def test_least_recently_used_is_evicted(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher, max_entries=2)
    put(cache, "alpha question")
    put(cache, "beta question")
    assert served(cache, "alpha question") is not None  # alpha is now the most recent
    put(cache, "gamma question")
    assert len(cache) == 2 and cache.evictions == 1
    assert served(cache, "beta question") is None
    assert served(cache, "alpha question") is not None
    assert served(cache, "gamma question") is not None


def test_a_miss_uses_nothing(matcher: SemanticMatcher) -> None:
    # A lookup compares the nearest entries; only the one it serves counts as used.
    cache = make_cache(matcher, max_entries=2)
    put(cache, "alpha question")
    put(cache, "beta question")
    assert served(cache, "alpha question") is not None  # LRU order: beta, alpha
    assert served(cache, "gamma question") is None  # compared with both, served neither
    put(cache, "gamma question")
    assert served(cache, "beta question") is None
    assert served(cache, "alpha question") is not None


def test_semantic_hit_counts_as_a_use(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher, max_entries=2)
    put(cache, FRANCE)
    put(cache, GO)
    assert served(cache, FRANCE_PARAPHRASE) is not None
    put(cache, "How tall is Mount Everest?")
    assert served(cache, FRANCE) is not None
    assert served(cache, GO) is None


def test_expired_entries_go_before_live_ones(matcher: SemanticMatcher) -> None:
    # Full, with an expired entry that was used recently and a live one that was not: making
    # room must drop the expired entry, not the live one.
    cache = make_cache(matcher, max_entries=2, ttl=10.0)
    put(cache, "alpha question", 0.0)
    put(cache, "beta question", 5.0)
    assert served(cache, "alpha question", 8.0) is not None  # LRU order: beta, alpha
    put(cache, "gamma question", 11.0)  # alpha expired at 10
    assert served(cache, "beta question", 11.0) is not None
    assert served(cache, "gamma question", 11.0) is not None
    assert cache.evictions == 0


def test_byte_budget(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher)
    put(cache, "alpha question", reply="x" * 1000)
    one = cache.bytes
    assert one > 1000
    cache = make_cache(matcher, max_bytes=2 * one + one // 2)  # room for two, not three
    for name in ("alpha", "beta", "gamma"):
        assert put(cache, f"{name} question", reply=name[0] * 1000)
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 2 and cache.evictions == 1
    assert served(cache, "alpha question") is None
    assert served(cache, "gamma question") == "g" * 1000


def test_a_prepared_text_gives_the_answers_of_the_inline_path(matcher: SemanticMatcher) -> None:
    """``prepare`` (run in a worker thread for long texts) is the same work as the inline
    path: every lookup answers alike, and an entry stored from it is found alike."""
    queries = [FRANCE, FRANCE_PARAPHRASE, "What\u2019s  the capital of France? ", GO, "", "  "]
    inline, prepared = make_cache(matcher), make_cache(matcher)
    put(inline, FRANCE)
    prepared.store(rkey(FRANCE), answer(f"re: {FRANCE}"), model="m", tier=1, cost_usd=0.01,
                   reference_usd=0.03, now=0.0, prepared=prepared.prepare(FRANCE))
    for text in queries:
        a = inline.lookup(rkey(text), 0.0)
        b = prepared.lookup(rkey(text), 0.0, prepared=prepared.prepare(text))
        assert (a is None) == (b is None), text
        if a is not None and b is not None:
            assert (a.similarity, a.entry.result.text) == (b.similarity, b.entry.result.text)


def test_a_long_final_message_is_matched_exactly_as_sent(matcher: SemanticMatcher) -> None:
    """Past MAX_SEMANTIC_CHARS a text is neither normalised nor fingerprinted (bounded work
    for a document-sized prompt): the same text hits, a respaced one does not."""
    cache = make_cache(matcher, max_entry_bytes=1 << 20)
    document = ("Summarise the report. It isn't long. " * 1000)[:MAX_SEMANTIC_CHARS + 1]
    entry = cache.store_entry(rkey(document), answer(f"re: {document}"), model="m", tier=1,
                              cost_usd=0.01, reference_usd=0.03, now=0.0)
    assert entry is not None and not entry.semantic and entry.norm == document
    assert served(cache, document) == f"re: {document}"
    assert served(cache, document.replace("isn't", "is not")) is None
    assert served(cache, document + " ") is None
    short = document[:MAX_SEMANTIC_CHARS]  # at the limit: normalised, so respacing still hits
    assert put(cache, short)
    assert served(cache, short.replace("isn't", "is not")) == f"re: {short}"


def test_entry_over_max_entry_bytes_is_not_stored(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher, max_entry_bytes=4096)
    put(cache, "small question")
    before = cache.bytes
    assert not put(cache, "huge question", reply="x" * 5000)
    assert served(cache, "huge question") is None
    assert len(cache) == 1 and cache.bytes == before
    assert served(cache, "small question") is not None  # nothing was evicted for it


def test_max_entries_zero_stores_nothing(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher, max_entries=0)
    assert not put(cache, FRANCE)
    assert len(cache) == 0 and served(cache, FRANCE) is None


PROMPTS = ["alpha question", "beta question", "gamma question", FRANCE, FRANCE_PARAPHRASE, GO, ""]
operations = st.lists(
    st.tuples(
        st.sampled_from(["store", "lookup"]),
        st.sampled_from(PROMPTS),
        st.sampled_from([b"a" * 20, b"b" * 20]),
        st.integers(0, 3000),  # reply size
        st.floats(0, 4),  # time step
    ),
    max_size=30,
)


@settings(max_examples=50, deadline=None)
@given(operations, st.integers(0, 4), st.integers(0, 6000))
def test_bounds_hold_under_any_sequence(
    matcher: SemanticMatcher, ops: list[tuple[str, str, bytes, int, float]], max_entries: int,
    max_bytes: int,
) -> None:
    cache = make_cache(matcher, max_entries=max_entries, max_bytes=max_bytes,
                       max_entry_bytes=3000, ttl=5.0)
    now = 0.0
    for op, text, partition, size, step in ops:
        now += step
        if op == "store":
            put(cache, text, now, reply="x" * size, partition=partition)
        else:
            hit = cache.lookup(rkey(text, partition), now)
            if hit is not None:
                assert hit.entry.exact == partition and hit.entry.expires > now
        assert len(cache) <= max_entries
        assert cache.bytes <= max(max_bytes, 0)
        assert cache.bytes == sum(e.size for e in cache.entries())


# == end to end ==================================================================================


def _model(name: str, provider: str, backend: str, tier: int, fake: FakeUpstream,
           ) -> dict[str, Any]:
    return {
        "name": name, "provider": provider, "model": f"{name}-id",
        "base_url": fake.base_url(backend, provider), "api_key": UPSTREAM_KEYS[backend],
        "cost_per_1k_in": 0.001 * tier, "cost_per_1k_out": 0.002 * tier, "tier": tier,
        "timeouts": _TIMEOUTS,
    }


@asynccontextmanager
async def open_cache_env(fake: FakeUpstream, **cache: Any) -> AsyncIterator[ProtocolEnv]:
    """The router with the cache on (``cache`` overrides its settings) and both SDKs."""
    config = make_config({
        "models": [
            _model("gpt-small", "openai", OA_SMALL, 1, fake),
            _model("claude-mid", "anthropic", AN_MID, 2, fake),
        ],
        "cache": {"enabled": True, **cache},
    })
    for backend in (OA_SMALL, AN_MID):
        fake.set_default(backend, Behaviour(usage=USAGE))
    async with (
        open_router(config) as router,
        openai.AsyncOpenAI(base_url=router.v1, api_key="tenant-a", max_retries=0,
                           http_client=openai.DefaultAsyncHttpxClient(verify=False)) as oai,
        anthropic.AsyncAnthropic(base_url=router.url, api_key="tenant-a", max_retries=0,
                                 http_client=anthropic.DefaultAsyncHttpxClient(verify=False))
        as claude,
    ):
        yield ProtocolEnv(fake=fake, router=router, openai=oai, anthropic=claude)


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_cache_env(fake_upstream) as env:
        yield env


@dataclass
class Reply:
    text: str
    cache: str
    similarity: str | None
    headers: httpx.Headers


async def chat(env: ProtocolEnv, text: str = FRANCE, *, client: openai.AsyncOpenAI | None = None,
               **params: Any) -> Reply:
    """A chat completion through the OpenAI SDK (pinned to gpt-small unless ``model``)."""
    params = {"model": "gpt-small", "messages": user(text), "max_tokens": 64} | params
    raw = await (client or env.openai).chat.completions.with_raw_response.create(**params)
    completion = raw.parse()
    return Reply(completion.choices[0].message.content or "", raw.headers["x-llm-router-cache"],
                 raw.headers.get("x-llm-router-similarity"), raw.headers)


async def message(env: ProtocolEnv, text: str = FRANCE, **params: Any) -> Reply:
    """A message through the Anthropic SDK (pinned to gpt-small unless ``model``)."""
    params = {"model": "gpt-small", "messages": user(text), "max_tokens": 64} | params
    raw = await env.anthropic.messages.with_raw_response.create(**params)
    reply = await raw.parse()
    text_out = "".join(b.text for b in reply.content if b.type == "text")
    return Reply(text_out, raw.headers["x-llm-router-cache"],
                 raw.headers.get("x-llm-router-similarity"), raw.headers)


def calls(env: ProtocolEnv, backend: str = OA_SMALL) -> int:
    return len(env.fake.requests(backend))


async def stats(env: ProtocolEnv) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        data: dict[str, Any] = (await http.get(env.router.url + "/stats")).json()
    return data


# -- hits and misses --------------------------------------------------------------------------


async def test_exact_repeat_is_a_hit_and_counted_apart(env: ProtocolEnv) -> None:
    first = await chat(env)
    before = await stats(env)
    second = await chat(env)

    assert (first.cache, first.similarity) == ("MISS", None)
    assert (second.cache, second.similarity) == ("HIT", "1.0000")
    assert second.text == first.text == f"[oa-small] {FRANCE}"
    assert second.headers["x-llm-router-model"] == "gpt-small"
    assert calls(env) == 1

    after = await stats(env)
    assert after["cache"]["hits"] == 1 and after["cache"]["misses"] == 1
    assert after["cache"]["saved_usd"] == pytest.approx(ANSWER_COST)
    assert after["total_requests"] == 2
    # A hit costs nothing: against the reference model (claude-mid, twice gpt-small's prices)
    # it saved the answer's whole reference price, and the total says so.
    assert before["total_saved_usd"] == pytest.approx(2 * ANSWER_COST - ANSWER_COST)
    assert after["total_saved_usd"] == pytest.approx(before["total_saved_usd"] + 2 * ANSWER_COST)
    assert after["total_spent_usd"] == before["total_spent_usd"] == pytest.approx(ANSWER_COST)


async def test_paraphrase_hits_over_the_wire(env: ProtocolEnv) -> None:
    await chat(env, FRANCE)
    hit = await chat(env, FRANCE_PARAPHRASE)

    assert hit.cache == "HIT"
    assert hit.similarity is not None
    assert DEFAULT_THRESHOLD <= float(hit.similarity) < 1.0
    assert hit.text == f"[oa-small] {FRANCE}"  # the cached answer, written for FRANCE
    assert calls(env) == 1


async def test_unrelated_prompt_misses(env: ProtocolEnv) -> None:
    await chat(env, FRANCE)
    miss = await chat(env, GO)

    assert (miss.cache, miss.similarity) == ("MISS", None)
    assert miss.text == f"[oa-small] {GO}"
    assert calls(env) == 2


_SYSTEM, _HELLO, _HI = (
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi! How can I help?"},
)
_ASK = {"role": "user", "content": FRANCE}
OPENAI_BASE: dict[str, Any] = {
    "model": "gpt-small",
    "messages": [_SYSTEM, _HELLO, _HI, _ASK],
    "tools": OPENAI_TOOLS,
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "response_format": {"type": "text"},
    "temperature": 0.2,
    "top_p": 0.9,
    "max_tokens": 50,
    "stop": ["END"],
    "seed": 7,
    "user": "end-user-1",
}
_OTHER_TOOLS = [{"type": "function", "function": {**OPENAI_TOOLS[0]["function"],
                                                  "description": "Weather, in Kelvin."}}]
OPENAI_VARIANTS: dict[str, dict[str, Any]] = {
    "pinned model": {"model": "claude-mid"},
    "routed tier": {"model": "auto"},
    "system prompt": {"messages": [{"role": "system", "content": "Be verbose."}, _HELLO, _HI,
                                   _ASK]},
    "no system prompt": {"messages": [_HELLO, _HI, _ASK]},
    "earlier user turn": {"messages": [_SYSTEM, {"role": "user", "content": "Hey"}, _HI, _ASK]},
    "earlier assistant turn": {"messages": [_SYSTEM, _HELLO,
                                            {"role": "assistant", "content": "Hi."}, _ASK]},
    "no history": {"messages": [_SYSTEM, _ASK]},
    "tools": {"tools": _OTHER_TOOLS},
    "tool_choice": {"tool_choice": "required"},
    "parallel_tool_calls": {"parallel_tool_calls": False},
    "response_format": {"response_format": {"type": "json_object"}},
    "temperature": {"temperature": 0.3},
    "top_p": {"top_p": 0.8},
    "max_tokens": {"max_tokens": 51},
    "stop": {"stop": ["END", "STOP"]},
    "seed": {"seed": 8},
    "user": {"user": "end-user-2"},
    "frequency_penalty": {"frequency_penalty": 0.5},
    "presence_penalty": {"presence_penalty": -0.5},
    "logit_bias": {"logit_bias": {"50256": -100}},
    "logprobs": {"logprobs": True},
    "top_logprobs": {"logprobs": True, "top_logprobs": 2},
    "reasoning_effort": {"reasoning_effort": "low"},
    "verbosity": {"verbosity": "low"},
}
# The anthropic SDK takes sampling parameters only through extra_body.
_SAMPLING = {"temperature": 0.5, "top_p": 0.9, "top_k": 20}
ANTHROPIC_BASE: dict[str, Any] = {
    "model": "claude-mid",  # top_k: an Anthropic upstream (OpenAI's API has no top_k)
    "system": "Be brief.",
    "messages": [_HELLO, _HI, _ASK],
    "max_tokens": 64,
    "extra_body": _SAMPLING,
    "stop_sequences": ["END"],
    "metadata": {"user_id": "end-user-1"},
}
ANTHROPIC_VARIANTS: dict[str, dict[str, Any]] = {
    "system prompt": {"system": "Be verbose."},
    "top_k": {"extra_body": _SAMPLING | {"top_k": 21}},
    "temperature": {"extra_body": _SAMPLING | {"temperature": 0.6}},
    "top_p": {"extra_body": _SAMPLING | {"top_p": 0.8}},
    "max_tokens": {"max_tokens": 65},
    "stop_sequences": {"stop_sequences": ["STOP"]},
    "metadata.user_id": {"metadata": {"user_id": "end-user-2"}},
    "tools": {"tools": ANTHROPIC_TOOLS},
}


def _upstream_calls(env: ProtocolEnv) -> int:
    return calls(env, OA_SMALL) + calls(env, AN_MID)


async def test_every_exact_field_separates(env: ProtocolEnv) -> None:
    # The final user message is the same every time: only the exact part differs.
    assert (await chat(env, **OPENAI_BASE)).cache == "MISS"
    for name, change in OPENAI_VARIANTS.items():
        reply = await chat(env, **(OPENAI_BASE | change))
        assert reply.cache == "MISS", f"openai {name}: served another request's answer"
    assert _upstream_calls(env) == 1 + len(OPENAI_VARIANTS)
    assert (await chat(env, **OPENAI_BASE)).cache == "HIT"  # the base itself was cached

    before = _upstream_calls(env)
    assert (await message(env, **ANTHROPIC_BASE)).cache == "MISS"
    for name, change in ANTHROPIC_VARIANTS.items():
        reply = await message(env, **(ANTHROPIC_BASE | change))
        assert reply.cache == "MISS", f"anthropic {name}: served another request's answer"
    assert _upstream_calls(env) == before + 1 + len(ANTHROPIC_VARIANTS)
    assert (await message(env, **ANTHROPIC_BASE)).cache == "HIT"


async def test_tenants_are_isolated(env: ProtocolEnv) -> None:
    async with openai.AsyncOpenAI(
        base_url=env.router.v1, api_key="tenant-b", max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(verify=False),
    ) as other:
        assert (await chat(env)).cache == "MISS"
        assert (await chat(env, client=other)).cache == "MISS"
        assert (await chat(env, FRANCE_PARAPHRASE, client=other)).cache == "HIT"
        assert (await chat(env, client=other)).cache == "HIT"
    assert (await chat(env)).cache == "HIT"
    assert calls(env) == 2


async def test_one_protocol_serves_the_other(env: ProtocolEnv) -> None:
    # Same canonical request from both SDKs: the answer cached from one serves the other.
    first = await chat(env, FRANCE)
    hit = await message(env, FRANCE)
    assert (first.cache, hit.cache) == ("MISS", "HIT")
    assert hit.text == first.text

    first = await message(env, GO)
    hit = await chat(env, GO)
    assert (first.cache, hit.cache) == ("MISS", "HIT")
    assert hit.text == first.text
    assert calls(env) == 2


async def test_n_above_one_is_not_cached(env: ProtocolEnv) -> None:
    assert (await chat(env, n=2)).cache == "MISS"
    assert (await chat(env, n=2)).cache == "MISS"
    assert calls(env) == 2
    assert (await chat(env)).cache == "MISS"  # n=2's answer was not stored for n=1 either


async def test_an_n_1_entry_never_answers_n_2(env: ProtocolEnv) -> None:
    assert (await chat(env)).cache == "MISS"
    assert (await chat(env)).cache == "HIT"
    raw = await env.openai.chat.completions.with_raw_response.create(
        model="gpt-small", messages=user(FRANCE), max_tokens=64, n=2
    )
    assert raw.headers["x-llm-router-cache"] == "MISS"
    assert [c.index for c in raw.parse().choices] == [0, 1]
    assert calls(env) == 2


async def test_incomplete_answers_are_not_cached(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(stop_reason="length", usage=USAGE))
    assert (await chat(env)).cache == "MISS"
    assert (await chat(env)).cache == "MISS"  # the truncated answer was not stored
    assert (await chat(env)).cache == "HIT"  # the complete one was
    assert calls(env) == 2


# -- bounds, end to end -----------------------------------------------------------------------


async def test_ttl_expires_entries(fake_upstream: FakeUpstream) -> None:
    async with open_cache_env(fake_upstream, ttl_sec=0.3) as env:
        assert (await chat(env)).cache == "MISS"
        assert (await chat(env)).cache == "HIT"
        await trio.sleep(0.35)
        assert (await chat(env)).cache == "MISS"
        assert (await chat(env)).cache == "HIT"
        assert calls(env) == 2


async def test_eviction_and_entry_size_limit(fake_upstream: FakeUpstream) -> None:
    async with open_cache_env(fake_upstream, max_size=2, max_entry_bytes=4096) as env:
        for text in ("alpha question", "beta question"):
            assert (await chat(env, text)).cache == "MISS"
        assert (await chat(env, "alpha question")).cache == "HIT"
        assert (await chat(env, "gamma question")).cache == "MISS"  # evicts beta, the LRU
        assert (await chat(env, "alpha question")).cache == "HIT"
        assert (await chat(env, "beta question")).cache == "MISS"
        assert calls(env) == 4

        env.fake.set_default(OA_SMALL, Behaviour(text="word " * 1000, usage=USAGE))
        assert (await chat(env, "huge question")).cache == "MISS"
        assert (await chat(env, "huge question")).cache == "MISS"  # too big to keep
        assert calls(env) == 6


# -- per-request control ----------------------------------------------------------------------


async def test_cache_control_header(env: ProtocolEnv) -> None:
    no_cache = {"extra_headers": {"Cache-Control": "no-cache"}}
    no_store = {"extra_headers": {"Cache-Control": "no-store"}}

    assert (await chat(env, "alpha question")).cache == "MISS"
    # no-cache: skips the lookup, but stores what it gets.
    env.fake.script(OA_SMALL, Behaviour(text="fresh alpha", usage=USAGE))
    assert (await chat(env, "alpha question", **no_cache)).cache == "MISS"
    fresh = await chat(env, "alpha question")
    assert (fresh.cache, fresh.text) == ("HIT", "fresh alpha")
    assert (await chat(env, "beta question", **no_cache)).cache == "MISS"
    assert (await chat(env, "beta question")).cache == "HIT"
    # no-store: neither looks up nor stores.
    assert (await chat(env, "alpha question", **no_store)).cache == "MISS"
    assert (await chat(env, "gamma question", **no_store)).cache == "MISS"
    assert (await chat(env, "gamma question")).cache == "MISS"
    assert calls(env) == 6


async def test_router_cache_body_field(env: ProtocolEnv) -> None:
    # For clients that cannot set headers: the same controls as a JSON field, both protocols.
    assert (await message(env, "alpha question")).cache == "MISS"
    no_cache = await message(env, "alpha question", extra_body={"router_cache": "no-cache"})
    assert no_cache.cache == "MISS"
    assert (await message(env, "alpha question")).cache == "HIT"
    no_store = await chat(env, "beta question", extra_body={"router_cache": "no-store"})
    assert no_store.cache == "MISS"
    assert (await chat(env, "beta question", extra_body={"router_cache": "default"})).cache == (
        "MISS"
    )
    assert (await chat(env, "beta question")).cache == "HIT"
    assert calls(env) == 4

    with pytest.raises(openai.BadRequestError) as caught:
        await chat(env, "beta question", extra_body={"router_cache": "sometimes"})
    assert "router_cache" in str(caught.value)


async def test_deterministic_only(fake_upstream: FakeUpstream) -> None:
    async with open_cache_env(fake_upstream, deterministic_only=True) as env:
        for params in ({}, {"temperature": 0.7}):
            assert (await chat(env, "alpha question", **params)).cache == "MISS"
            assert (await chat(env, "alpha question", **params)).cache == "MISS"
        for params in ({"temperature": 0}, {"seed": 42}, {"temperature": 0.7, "seed": 42}):
            assert (await chat(env, "beta question", **params)).cache == "MISS"
            assert (await chat(env, "beta question", **params)).cache == "HIT"
        assert calls(env) == 7


# -- streams ----------------------------------------------------------------------------------


async def _openai_stream(env: ProtocolEnv, text: str, **params: Any) -> tuple[str, dict[str, Any]]:
    """Stream through the OpenAI SDK: the cache header and what the stream carried."""
    params = {"model": "gpt-small", "messages": user(text), "max_tokens": 64,
              "stream_options": {"include_usage": True}} | params
    raw = await env.openai.chat.completions.with_raw_response.create(stream=True, **params)
    out: dict[str, Any] = {"text": "", "finish": None, "usage": None, "calls": []}
    async for chunk in raw.parse():
        out["usage"] = chunk.usage or out["usage"]
        if chunk.choices:
            delta = chunk.choices[0].delta
            out["text"] += delta.content or ""
            for call in delta.tool_calls or []:
                if call.id:
                    out["calls"].append([call.id, call.function.name, ""])  # type: ignore[union-attr]
                out["calls"][-1][2] += call.function.arguments or ""  # type: ignore[union-attr]
            out["finish"] = chunk.choices[0].finish_reason or out["finish"]
    return raw.headers["x-llm-router-cache"], out


async def _raw_stream(env: ProtocolEnv, endpoint: str, text: str) -> tuple[str, list[Any]]:
    """A raw streaming request: the cache header and every SSE event."""
    path = "/chat/completions" if endpoint == "openai" else "/messages"
    body = {"model": "gpt-small", "max_tokens": 64, "messages": user(text), "stream": True}
    async with httpx.AsyncClient() as http:
        response = await http.post(env.router.v1 + path, json=body,
                                   headers={"authorization": "Bearer tenant-a"})
    assert response.status_code == 200
    return response.headers["x-llm-router-cache"], sse_events(response.content)


async def test_streamed_hits_replay_in_both_protocols(env: ProtocolEnv) -> None:
    header, first = await _openai_stream(env, FRANCE)
    assert header == "MISS" and first["text"] == f"[oa-small] {FRANCE}"

    header, replay = await _openai_stream(env, FRANCE_PARAPHRASE)
    assert header == "HIT"
    assert (replay["text"], replay["finish"]) == (first["text"], "stop")
    assert (replay["usage"].prompt_tokens, replay["usage"].completion_tokens) == (1000, 500)

    async with env.anthropic.messages.stream(
        model="gpt-small", max_tokens=64, messages=user(FRANCE)
    ) as stream:
        header = stream.response.headers["x-llm-router-cache"]
        final = await stream.get_final_message()
    assert header == "HIT"
    assert final.content[0].text == first["text"]  # type: ignore[union-attr]
    assert (final.stop_reason, final.usage.output_tokens) == ("end_turn", 500)

    # Well-formed on the wire, event by event.
    header, events = await _raw_stream(env, "anthropic", FRANCE)
    assert header == "HIT"
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1] == "content_block_start" and names[-3] == "content_block_stop"
    assert set(names[2:-3]) <= {"content_block_delta", "ping"}
    header, events = await _raw_stream(env, "openai", FRANCE)
    assert header == "HIT"
    assert events[-1] == ("", "[DONE]")
    chunks = [data for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == first["text"]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"

    assert calls(env) == 1


async def test_streamed_miss_is_stored_and_a_json_answer_serves_a_stream(
    env: ProtocolEnv,
) -> None:
    # A streamed miss serves a later JSON request...
    assert (await _openai_stream(env, "alpha question"))[0] == "MISS"
    reply = await chat(env, "alpha question", stream_options=None)
    assert (reply.cache, reply.text) == ("HIT", "[oa-small] alpha question")
    # ...and a JSON answer with a tool call replays as a stream, in both protocols.
    env.fake.script(OA_SMALL, Behaviour(tool_call=WEATHER, usage=USAGE))
    tools = {"tools": OPENAI_TOOLS}
    assert (await chat(env, "weather in Paris?", **tools)).cache == "MISS"
    header, replay = await _openai_stream(env, "weather in Paris?", **tools)
    assert header == "HIT" and replay["finish"] == "tool_calls"
    [(call_id, name, arguments)] = replay["calls"]
    assert call_id.startswith("call_") and name == "get_weather"
    assert arguments == '{"city":"Paris","unit":"celsius","days":3}'

    async with env.anthropic.messages.stream(
        model="gpt-small", max_tokens=64, messages=user("weather in Paris?"), tools=ANTHROPIC_TOOLS
    ) as stream:
        header = stream.response.headers["x-llm-router-cache"]
        final = await stream.get_final_message()
    assert header == "HIT" and final.stop_reason == "tool_use"
    [block] = final.content
    assert block.type == "tool_use" and block.input == WEATHER.arguments
    assert calls(env) == 2


FAULTS = pytest.mark.parametrize(
    "fault", [Behaviour(cut_after=2, usage=USAGE), Behaviour(error_event_after=2, usage=USAGE)],
    ids=["cut", "error_event"],
)


@FAULTS
async def test_failed_stream_is_not_stored(env: ProtocolEnv, fault: Behaviour) -> None:
    # Routed, not pinned: a cut connection takes gpt-small out of rotation for a second, and
    # the retry is then served by claude-mid, the next tier up (the key keeps the routed tier).
    prompt = {"model": "auto", "messages": user("one two three four five")}
    env.fake.script(OA_SMALL, fault)
    with pytest.raises(openai.APIError):
        await _openai_stream(env, "", **prompt)
    assert calls(env, OA_SMALL) == 1
    header, out = await _openai_stream(env, "", **prompt)
    assert header == "MISS" and out["text"].endswith("] one two three four five")
    assert (await _openai_stream(env, "", **prompt))[0] == "HIT"
    assert _upstream_calls(env) == 2


async def test_abandoned_stream_is_not_stored(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(text="word " * 40, chunk_delay=0.05, usage=USAGE))
    stream = await env.openai.chat.completions.create(
        model="gpt-small", max_tokens=64, messages=user("alpha question"), stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    await wait_until_cancelled(env.fake, OA_SMALL)

    assert (await chat(env, "alpha question")).cache == "MISS"
    assert calls(env) == 2

