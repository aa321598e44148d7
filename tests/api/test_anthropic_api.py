"""POST /v1/messages over real sockets, with the official ``anthropic`` SDK as the client.

Requests are pinned to ``claude-mid`` (an Anthropic upstream) unless the test is about routing,
so what the fake recorded is the router's own translation of the same protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pytest
import trio
from support_protocols import (
    AN_MID,
    ANTHROPIC_TOOLS,
    OA_SMALL,
    SDK_STREAM_LEAKS,
    UPSTREAM_KEYS,
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


# -- messages.create --------------------------------------------------------------------------


async def test_create_text_with_system(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(usage=Usage(12, 5)))
    message = await env.anthropic.messages.create(
        model="claude-mid", max_tokens=64, system="Be brief.", messages=user("hello there")
    )

    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "claude-mid"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "[an-mid] hello there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 5)

    record = env.only_request(AN_MID)
    assert record.path == f"/{AN_MID}/v1/messages"
    assert record.body["model"] == "claude-mid-id"
    assert record.body["max_tokens"] == 64
    assert record.body["system"] == "Be brief."
    assert record.body["messages"] == [{"role": "user", "content": "hello there"}]
    assert record.headers["anthropic-version"]


async def test_system_as_text_blocks(env: ProtocolEnv) -> None:
    system: list[Any] = [
        {"type": "text", "text": "You are a poet."},
        {"type": "text", "text": "Answer in rhyme."},
    ]
    await env.anthropic.messages.create(
        model="claude-mid", max_tokens=64, system=system, messages=user("a verse please")
    )
    sent_system = env.sent(AN_MID)["system"]
    joined = _text_of(sent_system)
    assert "You are a poet." in joined and "Answer in rhyme." in joined


async def test_auto_is_routed_with_headers(env: ProtocolEnv) -> None:
    raw = await env.anthropic.messages.with_raw_response.create(
        model="auto", max_tokens=32, messages=user("hi there")
    )
    message = await raw.parse()

    # A short plain prompt goes to tier 1, which is an OpenAI upstream in this set-up.
    assert message.content[0].text == "[oa-small] hi there"  # type: ignore[union-attr]
    assert int(raw.headers["x-llm-router-score"]) <= 30
    assert raw.headers["x-llm-router-tier"] == "1"
    assert raw.headers["x-llm-router-model"] == "gpt-small"
    assert raw.headers["x-llm-router-cache"] == "MISS"
    assert raw.headers["x-llm-router-request-id"]
    assert env.sent(OA_SMALL)["model"] == "gpt-small-id"


async def test_omitted_model_is_routed_like_auto(env: ProtocolEnv) -> None:
    # SPEC: "A request whose `model` is omitted or "auto" is routed" (either endpoint).
    async with httpx.AsyncClient() as http:
        response = await http.post(
            env.router.v1 + "/messages",
            json={"max_tokens": 32, "messages": user("hi without a model")},
            headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "[oa-small] hi without a model"
    assert response.headers["x-llm-router-tier"] == "1"
    assert response.headers["x-llm-router-model"] == "gpt-small"
    assert response.headers["x-llm-router-router"] != "pinned"


async def test_configured_model_name_pins_it(env: ProtocolEnv) -> None:
    raw = await env.anthropic.messages.with_raw_response.create(
        model="claude-big", max_tokens=32, messages=user("tiny")
    )
    assert (await raw.parse()).model == "claude-big"
    assert raw.headers["x-llm-router-model"] == "claude-big"
    assert raw.headers["x-llm-router-tier"] == "3"
    assert env.fake.requests(AN_MID) == [] and env.fake.requests(OA_SMALL) == []


async def test_multi_turn_conversation_reaches_the_upstream(env: ProtocolEnv) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
    ]
    message = await env.anthropic.messages.create(
        model="claude-mid", max_tokens=64, messages=messages
    )

    assert message.content[0].text == "[an-mid] What is my name?"  # type: ignore[union-attr]
    sent = env.sent(AN_MID)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [_text_of(m["content"]) for m in sent] == [
        "My name is Ada.",
        "Hello Ada.",
        "What is my name?",
    ]


async def test_sampling_parameters_are_forwarded(env: ProtocolEnv) -> None:
    await env.anthropic.messages.create(
        model="claude-mid",
        max_tokens=77,
        messages=user("numbers"),
        stop_sequences=["END"],
        # Older SDKs have these as arguments; this one sends them as part of the body.
        extra_body={"temperature": 0.4, "top_p": 0.8, "top_k": 20},
    )
    sent = env.sent(AN_MID)
    assert sent["max_tokens"] == 77
    assert sent["temperature"] == 0.4
    assert sent["top_p"] == 0.8
    assert sent["top_k"] == 20
    assert sent["stop_sequences"] == ["END"]


async def test_tool_use_then_tool_result_turn(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(text="Let me check.", tool_call=WEATHER))
    question: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    message = await env.anthropic.messages.create(
        model="claude-mid",
        max_tokens=128,
        messages=question,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    )

    assert message.stop_reason == "tool_use"
    text, tool_use = message.content
    assert text.type == "text" and text.text == "Let me check."
    assert tool_use.type == "tool_use"
    assert tool_use.name == "get_weather" and tool_use.input == WEATHER.arguments
    assert tool_use.id
    first = env.sent(AN_MID)
    assert first["tools"] == ANTHROPIC_TOOLS
    assert first["tool_choice"] == {"type": "tool", "name": "get_weather"}

    assistant_turn = {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": tool_use.id, "name": "get_weather", "input": tool_use.input},
        ],
    }
    result_turn = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "18 C"}],
    }
    env.fake.script(AN_MID, Behaviour(text="It is 18 C in Paris."))
    follow_up = await env.anthropic.messages.create(
        model="claude-mid",
        max_tokens=128,
        messages=[*question, assistant_turn, result_turn],
        tools=ANTHROPIC_TOOLS,
    )

    assert follow_up.content[0].text == "It is 18 C in Paris."  # type: ignore[union-attr]
    assert follow_up.stop_reason == "end_turn"
    sent = env.sent(AN_MID)["messages"]
    assert sent[0] == {"role": "user", "content": "Weather in Paris?"}
    assert sent[1] == assistant_turn
    assert sent[2]["role"] == "user"
    [result] = sent[2]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == tool_use.id
    assert _text_of(result["content"]) == "18 C"
    assert not result.get("is_error")


async def test_tool_result_error_flag_is_forwarded(env: ProtocolEnv) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "is_error": True,
                    "content": [{"type": "text", "text": "service down"}],
                }
            ],
        },
    ]
    await env.anthropic.messages.create(
        model="claude-mid", max_tokens=64, messages=messages, tools=ANTHROPIC_TOOLS
    )
    [result] = env.sent(AN_MID)["messages"][2]["content"]
    assert result["is_error"] is True
    assert _text_of(result["content"]) == "service down"


@pytest.mark.parametrize("stop_reason", ["max_tokens", "end_turn"])
async def test_stop_reason_is_passed_through(env: ProtocolEnv, stop_reason: str) -> None:
    env.fake.script(AN_MID, Behaviour(stop_reason=stop_reason))
    message = await env.anthropic.messages.create(
        model="claude-mid", max_tokens=5, messages=user("a long story"), stop_sequences=["END"]
    )
    assert message.stop_reason == stop_reason


async def test_unknown_model_is_a_404_in_anthropic_shape(env: ProtocolEnv) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        await env.anthropic.messages.create(model="nope", max_tokens=5, messages=user("x"))
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error" and "nope" in body["error"]["message"]


async def test_response_shape_is_exactly_anthropic(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(text="Bonjour.", usage=Usage(9, 2)))
    async with httpx.AsyncClient() as http:
        response = await http.post(
            env.router.v1 + "/messages",
            json={"model": "claude-mid", "max_tokens": 16, "messages": user("French hello")},
            headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01"},
        )

    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("msg_")
    assert body == {
        "id": body["id"],
        "type": "message",
        "role": "assistant",
        "model": "claude-mid",
        "content": [{"type": "text", "text": "Bonjour."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 9,
            "output_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


# -- messages.stream --------------------------------------------------------------------------


async def test_stream_text_and_final_message(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(usage=Usage(7, 4)))
    async with env.anthropic.messages.stream(
        model="claude-mid", max_tokens=64, system="Be brief.", messages=user("one two three")
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()

    assert "".join(pieces) == "[an-mid] one two three"
    assert len(pieces) > 1  # relayed as deltas, not one block
    assert final.id.startswith("msg_") and final.model == "claude-mid"
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == "[an-mid] one two three"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 4)
    sent = env.sent(AN_MID)
    assert sent["stream"] is True and sent["system"] == "Be brief."


async def test_stream_tool_use(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(text="Checking.", tool_call=WEATHER))
    async with env.anthropic.messages.stream(
        model="claude-mid",
        max_tokens=64,
        messages=user("weather?"),
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "any"},
    ) as stream:
        final = await stream.get_final_message()

    assert final.stop_reason == "tool_use"
    text, tool_use = final.content
    assert text.type == "text" and text.text == "Checking."
    assert tool_use.type == "tool_use"
    assert tool_use.name == "get_weather" and tool_use.input == WEATHER.arguments
    assert env.sent(AN_MID)["tool_choice"] == {"type": "any"}


async def test_stream_max_tokens_stop_reason(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(stop_reason="max_tokens"))
    async with env.anthropic.messages.stream(
        model="claude-mid", max_tokens=3, messages=user("a long story")
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "max_tokens"


async def test_stream_event_sequence(env: ProtocolEnv) -> None:
    async with env.anthropic.messages.stream(
        model="claude-mid", max_tokens=64, messages=user("alpha beta")
    ) as stream:
        kinds = [event.type async for event in stream]

    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta"
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    assert kinds.index("content_block_start") < kinds.index("content_block_stop")


# -- keys -------------------------------------------------------------------------------------


async def test_key_via_x_api_key_and_bearer(fake_upstream: FakeUpstream) -> None:
    async with open_protocol_env(fake_upstream, api_keys=["router-key"]) as env:
        base = env.router.url
        by_header = await env.anthropic.messages.create(  # api_key= sends x-api-key
            model="claude-mid", max_tokens=16, messages=user("via x-api-key")
        )
        async with anthropic.AsyncAnthropic(
            base_url=base, auth_token="router-key", max_retries=0
        ) as bearer:
            by_bearer = await bearer.messages.create(
                model="claude-mid", max_tokens=16, messages=user("via bearer")
            )
        async with anthropic.AsyncAnthropic(
            base_url=base, api_key="wrong-key", max_retries=0
        ) as wrong:
            with pytest.raises(anthropic.AuthenticationError) as caught:
                await wrong.messages.create(
                    model="claude-mid", max_tokens=16, messages=user("via a wrong key")
                )

    assert by_header.content[0].text == "[an-mid] via x-api-key"  # type: ignore[union-attr]
    assert by_bearer.content[0].text == "[an-mid] via bearer"  # type: ignore[union-attr]
    assert caught.value.status_code == 401
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "authentication_error"
    records = env.fake.requests(AN_MID)
    assert len(records) == 2  # the refused request never reached the upstream
    for record in records:
        # The upstream sees the router's provider key, never the client's router key.
        assert record.headers["x-api-key"] == UPSTREAM_KEYS[AN_MID]
        assert "router-key" not in str(record.headers)


async def test_missing_key_is_refused_when_keys_are_configured(fake_upstream: FakeUpstream) -> None:
    async with (
        open_protocol_env(fake_upstream, api_keys=["router-key"]) as env,
        httpx.AsyncClient() as http,
    ):
        response = await http.post(
            env.router.v1 + "/messages",
            json={"model": "claude-mid", "max_tokens": 5, "messages": user("x")},
        )
    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"
    assert env.fake.requests(AN_MID) == []


# -- sync client ------------------------------------------------------------------------------


async def test_sync_client_create(env: ProtocolEnv) -> None:
    def call() -> Any:
        with env.sync_anthropic() as client:
            return client.messages.create(
                model="claude-mid", max_tokens=16, messages=user("from a thread")
            )

    message = await trio.to_thread.run_sync(call)
    assert message.content[0].text == "[an-mid] from a thread"
    assert message.stop_reason == "end_turn"


async def test_sync_client_stream(env: ProtocolEnv) -> None:
    env.fake.script(AN_MID, Behaviour(usage=Usage(5, 5)))

    def call() -> tuple[list[str], Any]:
        with (
            env.sync_anthropic() as client,
            client.messages.stream(
                model="claude-mid", max_tokens=16, messages=user("streamed from a thread")
            ) as stream,
        ):
            pieces = list(stream.text_stream)
            return pieces, stream.get_final_message()

    pieces, final = await trio.to_thread.run_sync(call)
    assert "".join(pieces) == "[an-mid] streamed from a thread"
    assert final.content[0].text == "[an-mid] streamed from a thread"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 5)


def _text_of(content: Any) -> str:
    """A message or tool-result content's text, whether a string or a list of text blocks."""
    if isinstance(content, str):
        return content
    return "\n".join(block["text"] for block in content if block.get("type") == "text")
