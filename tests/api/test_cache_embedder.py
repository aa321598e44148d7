"""``cache.embedder``: the cache's vectors from an OpenAI-compatible ``/v1/embeddings``
endpoint (here the fake upstream's deterministic one), over real sockets with the official
SDKs as clients.

The fake's vector is a bag of words (``engine.testing.fake_embeddings``): the two phrasings
below differ in one word of eleven, a cosine of about 0.92, and are not word-for-word
paraphrases, so the packaged table's score stays under the threshold; the remote model's
cosine clears the bar ``cache.embedder.unaligned_cosine`` 0.9 sets (at the default
threshold 0.85), and misses without it (the default: only aligned pairs hit) or at 0.95. The
guards still apply: a negation or a number vetoes whatever the cosine.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import openai
import pytest
import trio
from router_harness import make_config
from support_routing import RouterClient, model_entry, open_router_client

from engine.core.config import EmbedderConfig
from engine.core.redact import Redactor
from engine.errors import ConfigInvalid
from engine.runtime.embeddings import RemoteEmbedder
from engine.runtime.transport import PooledTransport
from engine.runtime.upstream import UpstreamClient
from engine.testing.fake_upstream import Behaviour, FakeUpstream

ASKED = "How can I learn the Python programming language quickly at home?"
REWORDED = "How can I learn the Python programming language fast at home?"
NEGATED = "How can I not learn the Python programming language quickly at home?"
COUNTED = "How can I learn the Python programming language quickly at home in 2 weeks?"
EMBEDDER_KEY = "sk-embed-test-0123456789abcdef"


@asynccontextmanager
async def router(fake: FakeUpstream, *, remote: bool = True, threshold: float = 0.85,
                 **embedder: Any) -> AsyncIterator[RouterClient]:
    cache: dict[str, Any] = {"enabled": True, "similarity_thresh": threshold}
    if remote:
        cache["embedder"] = {"url": fake.base_url("emb", "openai"), "model": "fake-embed",
                             "api_key_env": "EMBED_KEY", "unaligned_cosine": 0.9, **embedder}
    async with open_router_client([model_entry(fake, "m", tier=1)], cache=cache,
                                  environ={"EMBED_KEY": EMBEDDER_KEY}) as client:
        yield client


async def ask(client: RouterClient, text: str) -> str:
    """Ask with the OpenAI SDK; the ``X-LLM-Router-Cache`` header of the answer."""
    async with openai.AsyncOpenAI(base_url=client.router.v1, api_key="client-key",
                                  max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}])
    return raw.headers["x-llm-router-cache"]


async def test_remote_vectors_find_a_rewording_the_table_misses(
        fake_upstream: FakeUpstream) -> None:
    async with router(fake_upstream) as client:
        assert await ask(client, ASKED) == "MISS"
        async with anthropic.AsyncAnthropic(base_url=client.url, api_key="client-key",
                                            max_retries=0) as anthropic_client:
            raw = await anthropic_client.messages.with_raw_response.create(
                model="auto", max_tokens=64, messages=[{"role": "user", "content": REWORDED}])
        # The Anthropic request carries max_tokens: another exact part, another partition.
        assert raw.headers["x-llm-router-cache"] == "MISS"
        assert await ask(client, REWORDED) == "HIT"
        calls = fake_upstream.requests("emb")
        assert calls and all(c.path == "/emb/v1/embeddings" for c in calls)
        assert all(c.headers["authorization"] == f"Bearer {EMBEDDER_KEY}" for c in calls)
        assert all(c.body["model"] == "fake-embed" for c in calls)
        assert len(fake_upstream.requests("m")) == 2  # the reworded OpenAI ask was not sent
        stats = await client.stats()
        shown = stats["cache"]["embedder"]
        assert shown["failures"] == 0 and shown["dimensions"] == 64
        assert EMBEDDER_KEY not in str(stats)
    async with router(fake_upstream, remote=False) as client:
        assert await ask(client, ASKED) == "MISS"
        assert await ask(client, REWORDED) == "MISS"  # the packaged table: not aligned
    async with router(fake_upstream, unaligned_cosine=0.95) as client:
        assert await ask(client, ASKED) == "MISS"
        assert await ask(client, REWORDED) == "MISS"  # 0.92 is under the bar
    async with router(fake_upstream, unaligned_cosine=None) as client:
        assert await ask(client, ASKED) == "MISS"
        assert await ask(client, REWORDED) == "MISS"  # unset: aligned pairs only
    async with router(fake_upstream, threshold=0.88) as client:
        assert await ask(client, ASKED) == "MISS"
        assert await ask(client, REWORDED) == "MISS"  # 0.03 above 0.85: the bar is 0.93


@pytest.mark.parametrize("variant", [NEGATED, COUNTED])
async def test_guards_still_veto(fake_upstream: FakeUpstream, variant: str) -> None:
    async with router(fake_upstream) as client:
        assert await ask(client, ASKED) == "MISS"
        assert await ask(client, variant) == "MISS"


async def test_identical_texts_are_embedded_once(fake_upstream: FakeUpstream) -> None:
    async with router(fake_upstream) as client:
        assert await ask(client, ASKED) == "MISS"
        assert await ask(client, ASKED) == "HIT"
        assert await ask(client, "  " + ASKED) == "HIT"  # the same normalised text
        assert len(fake_upstream.requests("emb")) == 1
        assert (await client.stats())["cache"]["embedder"]["memo_hits"] == 2


@pytest.mark.parametrize("fault", [Behaviour(status=500), Behaviour(hang=True)])
async def test_a_failing_endpoint_skips_the_cache_and_fails_nothing(
        fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture,
        fault: Behaviour) -> None:
    fake_upstream.set_default("emb", fault)
    caplog.set_level(logging.DEBUG)
    async with router(fake_upstream, timeout_ms=200) as client:
        for _ in range(2):
            assert await ask(client, ASKED) == "MISS"  # answered, without the cache
        assert len(fake_upstream.requests("m")) == 2
        shown = (await client.stats())["cache"]["embedder"]
        assert shown["skipped"] == 2
        assert shown["failures"] + shown["timeouts"] >= 1
        fake_upstream.clear_default("emb")
        assert await ask(client, ASKED) == "MISS"  # embedded now: stored
        assert await ask(client, ASKED) == "HIT"
    assert EMBEDDER_KEY not in caplog.text


async def test_one_call_embeds_many_texts(fake_upstream: FakeUpstream) -> None:
    settings = EmbedderConfig(url=fake_upstream.base_url("emb", "openai"), model="fake-embed",
                              dimensions=16)
    texts = [f"question number {n}" for n in range(10)]
    async with PooledTransport() as transport, trio.open_nursery() as nursery:
        embedder = RemoteEmbedder(settings, UpstreamClient(transport, redactor=Redactor([])))
        nursery.start_soon(embedder.run)
        vectors = await embedder.vectors(texts)
        assert vectors is not None and [v.shape for v in vectors] == [(16,)] * 10
        assert await embedder.vectors(texts[:3]) is not None
        nursery.cancel_scope.cancel()
    calls = fake_upstream.requests("emb")
    assert len(calls) == 1 and calls[0].body["input"] == texts
    assert calls[0].body["dimensions"] == 16


def test_bad_embedder_config_is_refused() -> None:
    models = [{"name": "m", "provider": "openai", "model": "m"}]
    with pytest.raises(ConfigInvalid) as caught:
        make_config({"models": models, "cache": {"embedder": {
            "url": "ftp://x", "model": "m", "api_key_env": "NOT_SET_ANYWHERE"}}})
    assert "cache.embedder.url" in str(caught.value)
    with pytest.raises(ConfigInvalid) as caught:
        make_config({"models": models, "cache": {"embedder": {
            "url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "NOT_SET"}}})
    assert "cache.embedder.api_key_env: $NOT_SET is not set" in str(caught.value)
    with pytest.raises(ConfigInvalid) as caught:
        make_config({"models": models, "cache": {"embedder": {
            "url": "http://127.0.0.1:9/v1", "model": "m", "unaligned_cosine": 1.5}}})
    assert "cache.embedder.unaligned_cosine" in str(caught.value)
