"""Parallel tool calls through the router, with the official SDKs as clients, from either
upstream protocol: several calls in one answer (JSON, and streamed with their arguments in
fragments), what the SDKs' stream helpers accumulate, and the results sent back in the next
turn reaching the upstream as one turn. Strict tools stay strict across translation.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pydantic
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

from engine.testing.fake_upstream import Behaviour, FakeUpstream, ToolCall

pytestmark = SDK_STREAM_LEAKS

LONDON = ToolCall(name="get_weather", arguments={"city": "London", "unit": "celsius"})
BOTH = Behaviour(text="Checking both.", tool_calls=(WEATHER, LONDON))
MODELS = ["gpt-small", "claude-mid"]
BACKEND = {"gpt-small": OA_SMALL, "claude-mid": AN_MID}


@pytest.fixture
async def env(fake_upstream: FakeUpstream) -> AsyncIterator[ProtocolEnv]:
    fake_upstream.set_default(OA_SMALL, BOTH)
    fake_upstream.set_default(AN_MID, BOTH)
    async with open_protocol_env(fake_upstream) as env:
        yield env


def _arguments(calls: Any) -> list[dict[str, Any]]:
    return [json.loads(call.function.arguments) for call in calls]


@pytest.mark.parametrize("model", MODELS)
async def test_openai_client_gets_every_call(env: ProtocolEnv, model: str) -> None:
    completion = await env.openai.chat.completions.create(
        model=model, messages=user("weather in Paris and London?"), tools=OPENAI_TOOLS)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking both."
    calls = choice.message.tool_calls or []
    assert _arguments(calls) == [WEATHER.arguments, LONDON.arguments]
    assert len({call.id for call in calls}) == 2


@pytest.mark.parametrize("model", MODELS)
async def test_openai_stream_helper_accumulates_every_call(env: ProtocolEnv, model: str
                                                           ) -> None:
    indexes: set[int] = set()
    async with env.openai.chat.completions.stream(
            model=model, messages=user("weather in Paris and London?"),
            tools=OPENAI_TOOLS, stream_options={"include_usage": True}) as stream:
        async for event in stream:
            if event.type == "chunk" and event.chunk.choices:
                indexes.update(c.index for c in event.chunk.choices[0].delta.tool_calls or [])
        final = await stream.get_final_completion()

    assert indexes == {0, 1}
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking both."
    assert _arguments(choice.message.tool_calls or []) == [WEATHER.arguments, LONDON.arguments]
    assert final.usage is not None and final.usage.completion_tokens > 0


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_client_gets_every_call(env: ProtocolEnv, model: str, stream: bool
                                                ) -> None:
    kwargs: dict[str, Any] = {"model": model, "max_tokens": 100, "tools": ANTHROPIC_TOOLS,
                              "messages": user("weather in Paris and London?")}
    if stream:
        async with env.anthropic.messages.stream(**kwargs) as events:
            message = await events.get_final_message()
    else:
        message = await env.anthropic.messages.create(**kwargs)

    assert message.stop_reason == "tool_use"
    text, *calls = message.content
    assert text.type == "text" and text.text == "Checking both."
    assert [(c.type, c.name) for c in calls] == [("tool_use", "get_weather")] * 2
    assert [c.input for c in calls] == [WEATHER.arguments, LONDON.arguments]  # type: ignore[union-attr]
    assert len({c.id for c in calls}) == 2  # type: ignore[union-attr]


@pytest.mark.parametrize("model", MODELS)
async def test_openai_results_go_back_as_one_turn(env: ProtocolEnv, model: str) -> None:
    first = await env.openai.chat.completions.create(
        model=model, messages=user("weather in Paris and London?"), tools=OPENAI_TOOLS)
    message = first.choices[0].message
    calls = message.tool_calls or []
    env.fake.set_default(BACKEND[model], Behaviour(text="Both sunny."))
    messages: list[Any] = [
        *user("weather in Paris and London?"),
        message.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": call.id, "content": f"sunny in {i}"}
          for i, call in enumerate(calls)),
    ]
    second = await env.openai.chat.completions.create(model=model, messages=messages,
                                                      tools=OPENAI_TOOLS)
    assert second.choices[0].message.content == "Both sunny."
    _assert_results_turn(env.sent(BACKEND[model]), [call.id for call in calls],
                         anthropic=model == "claude-mid")


@pytest.mark.parametrize("model", MODELS)
async def test_anthropic_results_go_back_as_one_turn(env: ProtocolEnv, model: str) -> None:
    first = await env.anthropic.messages.create(
        model=model, max_tokens=100, messages=user("weather in Paris and London?"),
        tools=ANTHROPIC_TOOLS)
    ids = [block.id for block in first.content if block.type == "tool_use"]
    env.fake.set_default(BACKEND[model], Behaviour(text="Both sunny."))
    messages: list[Any] = [
        *user("weather in Paris and London?"),
        {"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                          for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tool_id, "content": f"sunny in {i}"}
            for i, tool_id in enumerate(ids)]},
    ]
    second = await env.anthropic.messages.create(model=model, max_tokens=100,
                                                 messages=messages, tools=ANTHROPIC_TOOLS)
    assert second.content[0].type == "text" and second.content[0].text == "Both sunny."
    _assert_results_turn(env.sent(BACKEND[model]), ids, anthropic=model == "claude-mid")


def _assert_results_turn(sent: dict[str, Any], ids: list[str], *, anthropic: bool) -> None:
    """The upstream got the assistant's calls, then every result, in its own shape."""
    messages = sent["messages"]
    if anthropic:  # one user turn of tool_result blocks
        assistant, results = messages[-2], messages[-1]
        assert [b["id"] for b in assistant["content"] if b["type"] == "tool_use"] == ids
        assert [b["tool_use_id"] for b in results["content"]] == ids
        assert [b["content"] for b in results["content"]] == ["sunny in 0", "sunny in 1"]
    else:  # OpenAI: one tool message a result
        assistant, *results = messages[-3:]
        assert [c["id"] for c in assistant["tool_calls"]] == ids
        assert [(r["role"], r["tool_call_id"], r["content"]) for r in results] == [
            ("tool", tool_id, f"sunny in {i}") for i, tool_id in enumerate(ids)]


# -- strict tools -------------------------------------------------------------------------------


class Weather(pydantic.BaseModel):
    city: str
    unit: str
    days: int


@pytest.mark.parametrize("model", MODELS)
async def test_strict_function_tools_stay_strict(env: ProtocolEnv, model: str) -> None:
    env.fake.set_default(BACKEND[model], Behaviour(tool_call=WEATHER))
    completion = await env.openai.chat.completions.parse(
        model=model, messages=user("weather in Paris?"),
        tools=[openai.pydantic_function_tool(Weather, name="get_weather")])
    [call] = completion.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments == Weather(city="Paris", unit="celsius", days=3)

    [tool] = env.sent(BACKEND[model])["tools"]
    strict = tool["function"].get("strict") if model == "gpt-small" else tool.get("strict")
    assert strict is True  # schema adherence asked of the upstream, as the client asked it


@pytest.mark.parametrize("model", MODELS)
async def test_strict_anthropic_tools_stay_strict(env: ProtocolEnv, model: str) -> None:
    await env.anthropic.messages.create(
        model=model, max_tokens=100, messages=user("weather in Paris?"),
        tools=[{**ANTHROPIC_TOOLS[0], "strict": True}, {**ANTHROPIC_TOOLS[0], "name": "other"}])
    first, second = env.sent(BACKEND[model])["tools"]
    if model == "gpt-small":
        first, second = first["function"], second["function"]
    assert first["strict"] is True and "strict" not in second
