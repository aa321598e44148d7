"""The Anthropic message both ways (``engine.wire.anthropic.response``): Anthropic's answer
read into the canonical result, and the canonical result written for clients, checked end to
end by the official ``anthropic`` SDK over a mock transport.
"""

from __future__ import annotations

from typing import Any

import httpx2  # the installed anthropic SDK is built on httpx2, and rejects httpx objects
import orjson
import pytest
from support_anthropic_wire import PROVIDER, TOOLS, sdk_client

from engine.errors import UpstreamError
from engine.messages import ChatResult, TextPart, ThinkingPart, ToolCall, ToolResult, Usage
from engine.wire.anthropic.request import parse_request
from engine.wire.anthropic.response import render_result

# ---- reading an upstream's message: parse_result -------------------------------------------------


def message_body(**fields: Any) -> bytes:
    data: dict[str, Any] = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 5},
    }
    data.update(fields)
    return orjson.dumps(data)


def test_parse_result_text_tools_and_usage() -> None:
    result = PROVIDER.parse_result(
        message_body(
            content=[
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me "},
                {"type": "text", "text": "check."},
                {"type": "redacted_thinking", "data": "xx"},
                {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "Oslo"}},
            ],
            stop_reason="tool_use",
            usage={
                "input_tokens": 100,
                "output_tokens": 20,
                "cache_read_input_tokens": 50,
                "cache_creation_input_tokens": 7,
            },
        )
    )
    assert result == ChatResult(
        content=(
            ThinkingPart("hmm", "sig"),
            TextPart("Let me check."),
            ThinkingPart("xx", redacted=True),
            ToolCall("toolu_1", "get", '{"city":"Oslo"}'),
        ),
        stop_reason="tool_calls",
        usage=Usage(100, 20, 50, 7),
        upstream_model="claude-sonnet-4-5-20250929",
    )


@pytest.mark.parametrize(
    ("upstream", "canonical"),
    [
        ("end_turn", "stop"),
        ("pause_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_parse_result_stop_reasons(upstream: str | None, canonical: str) -> None:
    assert PROVIDER.parse_result(message_body(stop_reason=upstream)).stop_reason == canonical


def test_parse_result_stop_sequence() -> None:
    result = PROVIDER.parse_result(message_body(stop_reason="stop_sequence", stop_sequence="END"))
    assert (result.stop_reason, result.stop_sequence) == ("stop", "END")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"type": "message"}',
        b'{"content": [{"type": "text"}]}',
        b'{"content": [{"type": "tool_use", "name": "f"}]}',
        b'{"content": [{"type": "text", "text": 3}]}',
        b'{"type": "error", "error": {"type": "api_error", "message": "boom"}}',
    ],
)
def test_parse_result_rejects_malformed_bodies(raw: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        PROVIDER.parse_result(raw)
    assert "upstream sent" in info.value.message


# ---- writing a client's message: render_result ---------------------------------------------------


def test_render_result_shape() -> None:
    result = ChatResult(
        content=(TextPart("Hi"), ToolCall("toolu_1", "f", '{"a": 1}'), ToolCall("t2", "g", "{bad")),
        stop_reason="tool_calls",
        usage=Usage(10, 5, 2, 1),
    )
    assert orjson.loads(render_result(result, id="msg_9", model="router")) == {
        "id": "msg_9",
        "type": "message",
        "role": "assistant",
        "model": "router",
        "content": [
            {"type": "text", "text": "Hi"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
            {"type": "tool_use", "id": "t2", "name": "g", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 1,
            "cache_read_input_tokens": 2,
        },
    }


@pytest.mark.parametrize(
    ("reason", "sequence", "wire"),
    [
        ("stop", None, "end_turn"),
        ("stop", "END", "stop_sequence"),
        ("length", None, "max_tokens"),
        ("tool_calls", None, "tool_use"),
        ("content_filter", None, "refusal"),
    ],
)
def test_render_result_stop_reasons(reason: Any, sequence: str | None, wire: str) -> None:
    data = orjson.loads(render_result(ChatResult((), reason, sequence), id="m", model="x"))
    assert (data["stop_reason"], data["stop_sequence"]) == (wire, sequence)


def test_render_result_empty_answer_has_no_blocks() -> None:
    data = orjson.loads(render_result(ChatResult((TextPart(""),)), id="m", model="x"))
    assert data["content"] == []


def test_result_roundtrip_through_the_provider() -> None:
    result = ChatResult(
        content=(TextPart("a"), ToolCall("t", "f", '{"k":[1]}')),
        stop_reason="stop",
        stop_sequence="S",
        usage=Usage(1, 2, 3, 4),
        upstream_model="x",
    )
    assert PROVIDER.parse_result(render_result(result, id="m", model="x")) == result


# ---- the official anthropic SDK reading rendered messages ----------------------------------------


TOOL_RESULT = ChatResult(
    content=(TextPart("Let me look."), ToolCall("toolu_7", "get_weather", '{"city": "Oslo"}')),
    stop_reason="tool_calls",
    usage=Usage(input_tokens=30, output_tokens=12, cache_read_tokens=4, cache_write_tokens=2),
)


def test_sdk_create_parses_the_rendered_result() -> None:
    seen: list[httpx2.Request] = []
    client = sdk_client(
        lambda _: httpx2.Response(200, content=render_result(TOOL_RESULT, id="msg_1", model="m1")),
        seen,
    )
    call = {"name": "get_weather", "input": {}}
    answer = {"content": "sunny"}
    message = client.messages.create(
        model="auto",
        max_tokens=64,
        system=[{"type": "text", "text": "sys"}],
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t0", **call}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t0", **answer}]},
        ],
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        metadata={"user_id": "u1"},
    )
    # what the SDK sent is a request the router accepts
    request = parse_request(seen[0].content)
    assert seen[0].url.path == "/v1/messages"
    assert request.model is None and request.system == "sys" and request.user == "u1"
    assert request.messages[1].parts == (ToolCall("t0", "get_weather", "{}"),)
    assert request.messages[2].parts == (ToolResult("t0", "sunny"),)
    assert request.parallel_tool_calls is False
    # and what the router answered is a message the SDK understands
    assert message.id == "msg_1" and message.model == "m1"
    assert message.content[0].type == "text" and message.content[0].text == "Let me look."
    block = message.content[1]
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == ("toolu_7", "get_weather", {"city": "Oslo"})
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 30
    assert message.usage.output_tokens == 12
    assert message.usage.cache_read_input_tokens == 4
    assert message.usage.cache_creation_input_tokens == 2


def test_sdk_create_parses_an_empty_answer() -> None:
    empty = render_result(ChatResult((), "stop", "END"), id="msg_2", model="m")
    client = sdk_client(lambda _: httpx2.Response(200, content=empty))
    message = client.messages.create(
        model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content == []
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")
