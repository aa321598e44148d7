"""Either inbound protocol reaching the other provider: an OpenAI client answered by an
Anthropic upstream (``claude-mid``), an Anthropic client answered by an OpenAI upstream
(``gpt-small``). Text, tools, stop reasons and usage must survive both translations, as JSON
and as streams.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support_protocols import (
    AN_MID,
    ANTHROPIC_TOOLS,
    OA_SMALL,
    OPENAI_TOOLS,
    SDK_STREAM_LEAKS,
    WEATHER,
    ProtocolEnv,
    open_protocol_env,
    user,
)

from engine.testing.fake_upstream import Behaviour, FakeUpstream, Usage

pytestmark = SDK_STREAM_LEAKS


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    async with open_protocol_env(fake_upstream) as env:
        yield env


async def _openai_stream(env: ProtocolEnv, **kwargs: Any) -> dict[str, Any]:
    """Stream a chat completion; return its text, tool call pieces, finish reason and usage."""
    stream = await env.openai.chat.completions.create(stream=True, **kwargs)
    out: dict[str, Any] = {
        "text": "",
        "ids": [],
        "names": [],
        "arguments": "",
        "finish": None,
        "usage": None,
        "chunks": 0,
    }
    async for chunk in stream:
        out["chunks"] += 1
        out["usage"] = chunk.usage or out["usage"]
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        out["text"] += delta.content or ""
        for call in delta.tool_calls or []:
            assert call.index == 0
            out["ids"] += [call.id] if call.id else []
            out["names"] += [call.function.name] if call.function and call.function.name else []
            out["arguments"] += (call.function.arguments or "") if call.function else ""
        out["finish"] = chunk.choices[0].finish_reason or out["finish"]
    return out


# -- OpenAI client -> Anthropic upstream ------------------------------------------------------


async def test_openai_client_anthropic_upstream_json(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(usage=Usage(21, 3)))
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "hello claude"},
    ]
    completion = await env.openai.chat.completions.create(
        model="claude-mid", messages=messages, max_tokens=50, temperature=0.5, stop=["END"]
    )

    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == "[an-mid] hello claude"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (21, 3)
    assert completion.usage.total_tokens == 24
    sent = env.sent(AN_MID)
    assert sent["model"] == "claude-mid-id"
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "hello claude"},
    ]
    assert sent["max_tokens"] == 50
    assert sent["temperature"] == 0.5
    assert sent["stop_sequences"] == ["END"]


async def test_openai_client_anthropic_upstream_without_max_tokens(env: ProtocolEnv) -> None:
    await env.openai.chat.completions.create(model="claude-mid", messages=user("no limit"))
    max_tokens = env.sent(AN_MID)["max_tokens"]
    assert isinstance(max_tokens, int) and max_tokens > 0  # Anthropic requires it


async def test_openai_client_anthropic_upstream_stream_with_usage(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(usage=Usage(8, 4)))
    out = await _openai_stream(
        env,
        model="claude-mid",
        messages=user("one two three"),
        stream_options={"include_usage": True},
    )

    assert out["text"] == "[an-mid] one two three"
    assert out["finish"] == "stop"
    assert out["usage"] is not None
    assert (out["usage"].prompt_tokens, out["usage"].completion_tokens) == (8, 4)
    assert env.sent(AN_MID)["stream"] is True


async def test_openai_client_anthropic_upstream_tool_call_and_result(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(tool_call=WEATHER))
    question: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    completion = await env.openai.chat.completions.create(
        model="claude-mid", messages=question, tools=OPENAI_TOOLS, tool_choice="required"
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER.arguments
    first = env.sent(AN_MID)
    assert first["tools"] == ANTHROPIC_TOOLS
    assert first["tool_choice"] == {"type": "any"}

    follow_up: list[Any] = [
        *question,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "18 C"},
    ]
    env.fake.script(AN_MID, Behaviour(text="It is 18 C."))
    answer = await env.openai.chat.completions.create(
        model="claude-mid", messages=follow_up, tools=OPENAI_TOOLS
    )

    assert answer.choices[0].message.content == "It is 18 C."
    sent = env.sent(AN_MID)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    [tool_use] = sent[1]["content"]
    assert tool_use == {
        "type": "tool_use",
        "id": call.id,
        "name": "get_weather",
        "input": WEATHER.arguments,
    }
    [result] = sent[2]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call.id
    assert result["content"] in ("18 C", [{"type": "text", "text": "18 C"}])


async def test_openai_client_anthropic_upstream_streamed_tool_call(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(text="Checking.", tool_call=WEATHER))
    out = await _openai_stream(
        env, model="claude-mid", messages=user("weather?"), tools=OPENAI_TOOLS
    )

    assert out["text"] == "Checking."
    assert len(out["ids"]) == 1 and out["names"] == ["get_weather"]
    assert json.loads(out["arguments"]) == WEATHER.arguments
    assert out["finish"] == "tool_calls"


@pytest.mark.parametrize(("upstream", "expected"), [("max_tokens", "length"), ("end_turn", "stop")])
async def test_openai_client_anthropic_stop_reason_mapping(
    env: ProtocolEnv, upstream: str, expected: str
) -> None:
    env.fake.script(AN_MID, Behaviour(stop_reason=upstream), Behaviour(stop_reason=upstream))
    completion = await env.openai.chat.completions.create(
        model="claude-mid", messages=user("tell a long story"), max_tokens=3
    )
    out = await _openai_stream(
        env, model="claude-mid", messages=user("tell a long story"), max_tokens=3
    )
    assert completion.choices[0].finish_reason == expected
    assert out["finish"] == expected


async def test_a_matched_stop_sequence_reaches_both_clients(env: ProtocolEnv) -> None:
    env.fake.set_default(AN_MID, Behaviour(text="one two", stop_reason="stop_sequence",
                                           stop_sequence="END"))
    completion = await env.openai.chat.completions.create(
        model="claude-mid", messages=user("count"), stop=["END", "STOP"])
    out = await _openai_stream(env, model="claude-mid", messages=user("count"), stop="END")
    assert completion.choices[0].finish_reason == out["finish"] == "stop"
    assert env.sent(AN_MID)["stop_sequences"] == ["END"]

    message = await env.anthropic.messages.create(
        model="claude-mid", max_tokens=20, messages=user("count"), stop_sequences=["END"])
    async with env.anthropic.messages.stream(
            model="claude-mid", max_tokens=20, messages=user("count"),
            stop_sequences=["END"]) as stream:
        final = await stream.get_final_message()
    for answer in (message, final):
        assert (answer.stop_reason, answer.stop_sequence) == ("stop_sequence", "END")


# -- Anthropic client -> OpenAI upstream ------------------------------------------------------


async def test_anthropic_client_openai_upstream_json(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(usage=Usage(13, 4)))
    message = await env.anthropic.messages.create(
        model="gpt-small",
        max_tokens=40,
        system="Be brief.",
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hello gpt"},
        ],
        stop_sequences=["END"],
    )

    assert message.type == "message" and message.id.startswith("msg_")
    assert message.model == "gpt-small"
    assert message.content[0].text == "[oa-small] hello gpt"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (13, 4)
    sent = env.sent(OA_SMALL)
    assert sent["model"] == "gpt-small-id"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "hello gpt"},
    ]
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 40
    assert sent["stop"] == ["END"]


async def test_anthropic_client_openai_upstream_stream(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(usage=Usage(6, 4)))
    async with env.anthropic.messages.stream(
        model="gpt-small", max_tokens=40, messages=user("one two three")
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()

    assert "".join(pieces) == "[oa-small] one two three"
    assert final.content[0].text == "[oa-small] one two three"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (6, 4)
    assert env.sent(OA_SMALL)["stream"] is True


async def test_anthropic_client_openai_upstream_tool_use_and_result(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(tool_call=WEATHER))
    question: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    message = await env.anthropic.messages.create(
        model="gpt-small",
        max_tokens=64,
        messages=question,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    )

    assert message.stop_reason == "tool_use"
    [tool_use] = message.content
    assert tool_use.type == "tool_use" and tool_use.name == "get_weather"
    assert tool_use.input == WEATHER.arguments and tool_use.id
    first = env.sent(OA_SMALL)
    assert first["tools"] == OPENAI_TOOLS
    assert first["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}

    env.fake.script(OA_SMALL, Behaviour(text="It is 18 C."))
    answer = await env.anthropic.messages.create(
        model="gpt-small",
        max_tokens=64,
        tools=ANTHROPIC_TOOLS,
        messages=[
            *question,
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": tool_use.id,
                        "name": "get_weather",
                        "input": tool_use.input,
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_use.id, "content": "18 C"},
                ],
            },
        ],
    )

    assert answer.content[0].text == "It is 18 C."  # type: ignore[union-attr]
    sent = env.sent(OA_SMALL)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    [sent_call] = sent[1]["tool_calls"]
    assert sent_call["id"] == tool_use.id and sent_call["type"] == "function"
    assert sent_call["function"]["name"] == "get_weather"
    assert json.loads(sent_call["function"]["arguments"]) == WEATHER.arguments
    assert sent[2] == {"role": "tool", "tool_call_id": tool_use.id, "content": "18 C"}


async def test_anthropic_client_openai_upstream_streamed_tool_use(env: ProtocolEnv) -> None:
    env.fake.script(OA_SMALL, Behaviour(text="Checking.", tool_call=WEATHER))
    async with env.anthropic.messages.stream(
        model="gpt-small", max_tokens=64, messages=user("weather?"), tools=ANTHROPIC_TOOLS
    ) as stream:
        final = await stream.get_final_message()

    assert final.stop_reason == "tool_use"
    text, tool_use = final.content
    assert text.type == "text" and text.text == "Checking."
    assert tool_use.type == "tool_use" and tool_use.name == "get_weather"
    assert tool_use.input == WEATHER.arguments


@pytest.mark.parametrize(("upstream", "expected"), [("length", "max_tokens"), ("stop", "end_turn")])
async def test_anthropic_client_openai_stop_reason_mapping(
    env: ProtocolEnv, upstream: str, expected: str
) -> None:
    env.fake.script(OA_SMALL, Behaviour(stop_reason=upstream), Behaviour(stop_reason=upstream))
    message = await env.anthropic.messages.create(
        model="gpt-small", max_tokens=3, messages=user("tell a long story")
    )
    async with env.anthropic.messages.stream(
        model="gpt-small", max_tokens=3, messages=user("tell a long story")
    ) as stream:
        final = await stream.get_final_message()
    assert message.stop_reason == expected
    assert final.stop_reason == expected
