"""Anthropic's extended thinking through the router, with the official SDKs as clients: the
setting reaches an Anthropic upstream, its thinking blocks (signature and redacted blocks
included) come back intact, as JSON and streamed (``signature_delta``), from the cache too,
and go back to the upstream as given in the next turn. Requests with it route to Anthropic
upstreams only; OpenAI clients get the answer without the thinking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from support_protocols import (
    AN_BIG,
    AN_MID,
    ANTHROPIC_TOOLS,
    OA_SMALL,
    SDK_STREAM_LEAKS,
    WEATHER,
    ProtocolEnv,
    open_protocol_env,
    user,
)

from engine.testing.fake_upstream import Behaviour, FakeUpstream

pytestmark = SDK_STREAM_LEAKS

THINKING = {"type": "enabled", "budget_tokens": 1024}
THOUGHT = Behaviour(text="It is 42.", thinking="The user wants the answer, so 42.",
                    redacted_thinking="EncryptedBlob==")
EXPECTED = [
    {"type": "thinking", "thinking": "The user wants the answer, so 42.",
     "signature": "sig-The user wants the answer, so 42."},
    {"type": "redacted_thinking", "data": "EncryptedBlob=="},
    {"type": "text", "text": "It is 42."},
]


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    for backend in (AN_MID, AN_BIG):
        fake_upstream.set_default(backend, THOUGHT)
    async with open_protocol_env(fake_upstream) as env:
        yield env


def _blocks(message: Any) -> list[dict[str, Any]]:
    return [block.model_dump(include={"type", "thinking", "signature", "data", "text"})
            for block in message.content]


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_blocks_come_back_intact(env: ProtocolEnv, stream: bool) -> None:
    kwargs: dict[str, Any] = {"model": "claude-mid", "max_tokens": 2048,
                              "messages": user("the answer?"), "thinking": THINKING}
    if stream:
        async with env.anthropic.messages.stream(**kwargs) as events:
            kinds = [event.type async for event in events]
            message = await events.get_final_message()
        assert "signature" in kinds and "thinking" in kinds
    else:
        message = await env.anthropic.messages.create(**kwargs)

    assert _blocks(message) == EXPECTED
    assert message.stop_reason == "end_turn"
    assert env.only_request(AN_MID).body["thinking"] == THINKING


async def test_thinking_and_tool_use_go_back_as_given(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(thinking="Need the weather.", tool_call=WEATHER))
    first = await env.anthropic.messages.create(
        model="claude-mid", max_tokens=2048, messages=user("weather?"), thinking=THINKING,
        tools=ANTHROPIC_TOOLS)
    assert [block.type for block in first.content] == ["thinking", "tool_use"]
    call = first.content[1]
    assert call.type == "tool_use"

    second = await env.anthropic.messages.create(
        model="claude-mid", max_tokens=2048, thinking=THINKING, tools=ANTHROPIC_TOOLS,
        messages=[*user("weather?"),
                  {"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                                    for b in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                "content": "sunny"}]}])
    assert _blocks(second) == EXPECTED
    assistant = env.sent(AN_MID)["messages"][1]
    assert assistant["content"][0] == {"type": "thinking", "thinking": "Need the weather.",
                                       "signature": "sig-Need the weather."}
    assert assistant["content"][1]["type"] == "tool_use"


async def test_thinking_routes_to_anthropic_upstreams_only(env: ProtocolEnv) -> None:
    routed = await env.anthropic.messages.create(
        model="auto", max_tokens=2048, messages=user("hi"), thinking=THINKING)
    assert _blocks(routed) == EXPECTED
    assert env.fake.requests(OA_SMALL) == []

    with pytest.raises(anthropic.BadRequestError) as caught:
        await env.anthropic.messages.create(
            model="gpt-small", max_tokens=2048, messages=user("hi"), thinking=THINKING)
    assert caught.value.body["error"]["message"].startswith("thinking")  # type: ignore[index]
    assert env.fake.requests(OA_SMALL) == []


async def test_thinking_sent_back_to_an_openai_upstream_is_left_out(env: ProtocolEnv) -> None:
    await env.anthropic.messages.create(
        model="gpt-small", max_tokens=100,
        messages=[*user("hi"), {"role": "assistant", "content": EXPECTED}, *user("and?")])
    assert env.sent(OA_SMALL)["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "It is 42."},
        {"role": "user", "content": "and?"},
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_clients_get_the_answer_without_the_thinking(env: ProtocolEnv,
                                                                  stream: bool) -> None:
    if stream:
        async with env.openai.chat.completions.stream(
                model="claude-mid", messages=user("the answer?")) as events:
            completion = await events.get_final_completion()
    else:
        completion = await env.openai.chat.completions.create(
            model="claude-mid", messages=user("the answer?"))
    assert completion.choices[0].message.content == "It is 42."
    assert completion.choices[0].finish_reason == "stop"


async def test_a_cached_answer_keeps_its_thinking(fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_default(AN_MID, THOUGHT)
    async with open_protocol_env(fake_upstream, cache=True) as env:
        kwargs: dict[str, Any] = {"model": "claude-mid", "max_tokens": 2048,
                                  "messages": user("the cached answer?"), "thinking": THINKING}
        first = await env.anthropic.messages.create(**kwargs)
        hit = await env.anthropic.messages.with_raw_response.create(**kwargs)
        replayed = await hit.parse()
        async with env.anthropic.messages.stream(**kwargs) as events:
            streamed = await events.get_final_message()
    assert hit.headers["x-llm-router-cache"] == "HIT"
    assert len(fake_upstream.requests(AN_MID)) == 1
    assert _blocks(first) == _blocks(replayed) == _blocks(streamed) == EXPECTED


async def test_a_streamed_answer_is_cached_with_its_thinking(fake_upstream: FakeUpstream
                                                            ) -> None:
    fake_upstream.set_default(AN_MID, THOUGHT)
    async with open_protocol_env(fake_upstream, cache=True) as env:
        kwargs: dict[str, Any] = {"model": "claude-mid", "max_tokens": 2048,
                                  "messages": user("the streamed answer?"),
                                  "thinking": THINKING}
        async with env.anthropic.messages.stream(**kwargs) as events:
            streamed = await events.get_final_message()
        hit = await env.anthropic.messages.with_raw_response.create(**kwargs)
        replayed = await hit.parse()
    assert hit.headers["x-llm-router-cache"] == "HIT"
    assert _blocks(streamed) == _blocks(replayed) == EXPECTED
