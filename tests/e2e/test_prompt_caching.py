"""Prompt caching through the router, with the official SDKs as clients: Anthropic's
``cache_control`` breakpoints and ``anthropic-beta`` header reach an Anthropic upstream as
sent, and the cache token counts an upstream reports reach the client in its own protocol,
as JSON and as streams, whichever protocol the upstream speaks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from support_protocols import (
    AN_MID,
    ANTHROPIC_TOOLS,
    OA_SMALL,
    SDK_STREAM_LEAKS,
    ProtocolEnv,
    open_protocol_env,
)

from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage

pytestmark = SDK_STREAM_LEAKS

EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_protocol_env(fake_upstream) as env:
        yield env


def _cached_conversation() -> list[Any]:
    return [
        {"role": "user", "content": [
            {"type": "text", "text": "Here is a long document.", "cache_control": EPHEMERAL},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}, "cache_control": EPHEMERAL},
        ]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}, "cache_control": EPHEMERAL},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny",
             "cache_control": EPHEMERAL},
            {"type": "text", "text": "And tomorrow?"},
        ]},
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_cache_control_and_betas_reach_an_anthropic_upstream(env: ProtocolEnv,
                                                                   stream: bool) -> None:
    system: Any = [
        {"type": "text", "text": "You are a weather bot.", "cache_control": HOUR},
        {"type": "text", "text": "Today is Monday."},  # after the breakpoint: not cached
    ]
    tools: Any = [{**ANTHROPIC_TOOLS[0], "cache_control": EPHEMERAL}]
    betas = "prompt-caching-2024-07-31,token-efficient-tools-2025-02-19"
    kwargs: dict[str, Any] = {
        "model": "claude-mid", "max_tokens": 50, "system": system, "tools": tools,
        "messages": _cached_conversation(), "extra_headers": {"anthropic-beta": betas},
    }
    if stream:
        async with env.anthropic.messages.stream(**kwargs) as events:
            await events.get_final_message()
    else:
        await env.anthropic.messages.create(**kwargs)

    record = env.only_request(AN_MID)
    assert record.headers["anthropic-beta"] == betas
    sent = record.body
    assert sent["system"] == system
    assert sent["tools"][0]["cache_control"] == EPHEMERAL
    first, assistant, last = sent["messages"]
    assert [block.get("cache_control") for block in first["content"]] == [EPHEMERAL] * 2
    assert assistant["content"][0]["cache_control"] == EPHEMERAL
    assert last["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_1",
                                  "content": "sunny", "cache_control": EPHEMERAL}


async def test_a_breakpoint_on_a_lone_text_keeps_its_block(env: ProtocolEnv) -> None:
    messages: Any = [{"role": "user", "content": [
        {"type": "text", "text": "A long prefix.", "cache_control": EPHEMERAL}]}]
    await env.anthropic.messages.create(model="claude-mid", max_tokens=20, messages=messages,
                                        system="Be brief.")
    sent = env.only_request(AN_MID).body
    assert sent["messages"] == messages
    assert sent["system"] == "Be brief."  # no breakpoint: the plain string, as before
    assert "anthropic-beta" not in env.only_request(AN_MID).headers


async def test_breakpoints_are_not_sent_to_an_openai_upstream(env: ProtocolEnv) -> None:
    await env.anthropic.messages.create(
        model="gpt-small", max_tokens=20, messages=_cached_conversation()[:1],
        system=[{"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    record = env.only_request(OA_SMALL)
    assert "cache_control" not in str(record.body)
    assert "anthropic-beta" not in record.headers
    assert record.body["messages"][0] == {"role": "system", "content": "Be brief."}


# -- cache token counts -----------------------------------------------------------------------

# 10 uncached input tokens, 300 read from the cache, 40 written to it (Anthropic's counts).
CACHED = Usage(10, 5, cache_read_tokens=300, cache_write_tokens=40)


@pytest.mark.parametrize("model", ["claude-mid", "gpt-small"])
async def test_anthropic_client_sees_cache_counts(env: ProtocolEnv, model: str) -> None:
    env.fake.set_default(AN_MID, Behaviour(usage=CACHED))
    # OpenAI reports no cache writes: what it wrote counts as plain input.
    env.fake.set_default(OA_SMALL, Behaviour(usage=Usage(50, 5, cache_read_tokens=300)))
    expected = (10, 300, 40) if model == "claude-mid" else (50, 300, 0)

    message = await env.anthropic.messages.create(
        model=model, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    async with env.anthropic.messages.stream(
            model=model, max_tokens=20, messages=[{"role": "user", "content": "hi"}]) as events:
        streamed = await events.get_final_message()

    for usage in (message.usage, streamed.usage):
        got = (usage.input_tokens, usage.cache_read_input_tokens,
               usage.cache_creation_input_tokens)
        assert got == expected
        assert usage.output_tokens == 5


@pytest.mark.parametrize("model", ["claude-mid", "gpt-small"])
async def test_openai_client_sees_cache_counts(env: ProtocolEnv, model: str) -> None:
    env.fake.set_default(AN_MID, Behaviour(usage=CACHED))
    env.fake.set_default(OA_SMALL, Behaviour(usage=Usage(50, 5, cache_read_tokens=300)))

    completion = await env.openai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}])
    chunks = [chunk async for chunk in await env.openai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})]

    assert chunks[-1].choices == [] and all(c.usage is None for c in chunks[:-1])
    for usage in (completion.usage, chunks[-1].usage):
        assert usage is not None
        assert usage.prompt_tokens == 350  # the whole prompt, cached or not
        assert usage.completion_tokens == 5 and usage.total_tokens == 355
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 300
