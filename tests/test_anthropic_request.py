"""The Anthropic wire format both ways: the upstream codec and the inbound protocol.

The rendering is checked end to end against the official ``anthropic`` SDK (over a mock
transport), and the upstream decoder against Anthropic's real SSE transcripts.
"""

from __future__ import annotations

import itertools
from typing import Any

import anthropic
import httpx2  # the installed anthropic SDK is built on httpx2, and rejects httpx objects
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import (
    NoBackendAvailable,
    RateLimited,
    RequestInvalid,
    RouterError,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from engine.messages import (
    ChatRequest,
    ChatResult,
    Event,
    Finish,
    ImagePart,
    Message,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
)
from engine.wire.anthropic.errors import error_type, render_error
from engine.wire.anthropic.request import parse_request
from engine.wire.anthropic.response import AnthropicStreamDecoder, StreamEncoder, render_result
from engine.wire.providers import AnthropicProvider
from engine.wire.sse import decode_events

PROVIDER = AnthropicProvider()


def user(*parts: Any) -> Message:
    return Message("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def assistant(*parts: Any) -> Message:
    return Message("assistant", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def payload(request: ChatRequest, **kwargs: Any) -> dict[str, Any]:
    options = {"model": "claude-x", "base_url": "https://api.example", "api_key": "k"}
    options.update(kwargs)
    options.setdefault("stream", False)
    return orjson.loads(PROVIDER.build_call(request, **options).body)


def body(**fields: Any) -> bytes:
    data: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    data.update(fields)
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


# ---- upstream: build_call ----------------------------------------------------------------------


def test_build_call_url_headers_and_defaults() -> None:
    call = PROVIDER.build_call(
        ChatRequest(messages=(user("hi"),)),
        model="claude-x",
        base_url="https://api.example/",
        api_key="secret",
        stream=False,
    )
    assert call.url == "https://api.example/v1/messages"
    assert call.headers == {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "secret",
    }
    assert orjson.loads(call.body) == {
        "model": "claude-x",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_build_call_without_key_sends_no_key_header() -> None:
    call = PROVIDER.build_call(
        ChatRequest(messages=(user("hi"),)),
        model="m",
        base_url="http://local",
        api_key=None,
        stream=True,
    )
    assert "x-api-key" not in call.headers
    assert orjson.loads(call.body)["stream"] is True


def test_build_call_sampling_options() -> None:
    request = ChatRequest(
        messages=(user("hi"),),
        system="be brief",
        temperature=1.7,
        top_p=0.9,
        top_k=40,
        max_tokens=77,
        stop=("END", "STOP"),
        seed=42,
        user="u-1",
    )
    data = payload(request)
    assert data["system"] == "be brief"
    assert data["temperature"] == 1.0  # Anthropic's range ends at 1
    assert data["top_p"] == 0.9
    assert data["top_k"] == 40
    assert data["max_tokens"] == 77
    assert data["stop_sequences"] == ["END", "STOP"]
    assert data["metadata"] == {"user_id": "u-1"}
    assert "seed" not in data
    assert "stream" not in data


def test_build_call_keeps_temperature_within_range() -> None:
    assert payload(ChatRequest(messages=(user("hi"),), temperature=0.3))["temperature"] == 0.3


def test_build_call_rejects_n() -> None:
    with pytest.raises(RequestInvalid) as info:
        payload(ChatRequest(messages=(user("hi"),), n=2))
    assert info.value.param == "n"
    assert "n > 1" in info.value.message


def test_build_call_json_mode_appends_instruction_and_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = ChatRequest(
        messages=(user("hi"),),
        system="sys",
        json_mode=True,
        json_schema={"name": "thing", "schema": schema, "strict": True},
    )
    system = payload(request)["system"]
    assert system.startswith("sys\n\n")
    assert "JSON object" in system
    assert orjson.dumps(schema).decode() in system
    assert '"strict"' not in system


def test_build_call_json_mode_without_system_or_schema() -> None:
    system = payload(ChatRequest(messages=(user("hi"),), json_mode=True))["system"]
    assert "only one valid JSON object" in system
    assert "Schema" not in system


def test_build_call_translates_parts() -> None:
    request = ChatRequest(
        messages=(
            user(
                "look",
                ImagePart(media_type="image/png", data="AAAA"),
                ImagePart(url="https://img.example/a.jpg"),
                ImagePart(url="data:image/webp;base64,QUJD"),
            ),
            assistant("calling", ToolCall("call_1", "lookup", '{"q": "x"}')),
            user(ToolResult("call_1", "42"), ToolResult("call_2", "boom", is_error=True)),
        )
    )
    messages = payload(request)["messages"]
    assert messages[0] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "look"},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
            },
            {"type": "image", "source": {"type": "url", "url": "https://img.example/a.jpg"}},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/webp", "data": "QUJD"},
            },
        ],
    }
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "x"}},
        ],
    }
    assert messages[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "42"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "boom", "is_error": True},
        ],
    }


def test_build_call_merges_same_role_turns_and_puts_tool_results_first() -> None:
    request = ChatRequest(
        messages=(
            user("a"),
            user("b"),
            assistant(ToolCall("c1", "f", "")),
            user("then"),
            user(ToolResult("c1", "")),
            assistant(""),  # empty content is dropped, Anthropic rejects it
            assistant("done"),
        )
    )
    assert payload(request)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1"},
                {"type": "text", "text": "then"},
            ],
        },
        {"role": "assistant", "content": "done"},
    ]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"'])
def test_build_call_rejects_tool_call_arguments_that_are_not_an_object(arguments: str) -> None:
    request = ChatRequest(messages=(user("hi"), assistant(ToolCall("call_9", "calc", arguments))))
    with pytest.raises(RequestInvalid) as info:
        payload(request)
    assert "call_9" in info.value.message
    assert "calc" in info.value.message


def test_build_call_rejects_inline_image_without_media_type() -> None:
    with pytest.raises(RequestInvalid):
        payload(ChatRequest(messages=(user(ImagePart(data="AAAA")),)))


def test_build_call_tools() -> None:
    request = ChatRequest(
        messages=(user("hi"),),
        tools=(
            Tool("get_weather", "Weather now", {"type": "object", "properties": {"c": {}}}),
            Tool("ping"),
        ),
    )
    data = payload(request)
    assert data["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"c": {}}},
        },
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in data


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (ToolChoice("auto"), None, {"type": "auto"}),
        (ToolChoice("required"), None, {"type": "any"}),
        (ToolChoice("tool", "f"), None, {"type": "tool", "name": "f"}),
        (ToolChoice("none"), None, {"type": "none"}),
        (None, None, None),
        (None, True, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("required"), False, {"type": "any", "disable_parallel_tool_use": True}),
        (
            ToolChoice("tool", "f"),
            False,
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        ),
        (ToolChoice("none"), False, {"type": "none"}),
    ],
)
def test_build_call_tool_choice(
    choice: ToolChoice | None, parallel: bool | None, expected: dict[str, Any] | None
) -> None:
    request = ChatRequest(
        messages=(user("hi"),), tools=(Tool("f"),), tool_choice=choice, parallel_tool_calls=parallel
    )
    assert payload(request).get("tool_choice") == expected


def test_build_call_without_tools_sends_no_tool_choice() -> None:
    request = ChatRequest(messages=(user("hi"),), tool_choice=ToolChoice("none"))
    assert "tool_choice" not in payload(request)


# ---- upstream: parse_result --------------------------------------------------------------------


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
            TextPart("Let me check."),
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


def test_error_message() -> None:
    error = b'{"type":"error","error":{"type":"invalid_request_error","message":"bad tools"}}'
    assert PROVIDER.error_message(400, error) == "invalid_request_error: bad tools"
    assert PROVIDER.error_message(502, b"<html>gateway</html>") == "upstream answered HTTP 502"
    assert PROVIDER.error_message(500, b'{"error": "plain"}') == "upstream answered HTTP 500"
    # Whole: the transport scrubs, then shortens.
    long = orjson.dumps({"error": {"message": "x" * 1000}})
    assert PROVIDER.error_message(400, long) == "x" * 1000


# ---- upstream: stream decoding -----------------------------------------------------------------

# Anthropic's own transcript, byte for byte in its style: spaces after colons and commas, a
# ping, a thinking block, a tool call whose arguments arrive in pieces, non-ASCII text.
REAL_STREAM_LINES = [
    "event: message_start",
    'data: {"type": "message_start", "message": {"id": "msg_1", "type": "message", '
    '"role": "assistant", "content": [], "model": "claude-opus-4-1", "stop_reason": null, '
    '"stop_sequence": null, "usage": {"input_tokens": 472, "cache_creation_input_tokens": 3, '
    '"cache_read_input_tokens": 9, "output_tokens": 2}}}',
    "",
    "event: content_block_start",
    'data: {"type": "content_block_start", "index": 0, '
    '"content_block": {"type": "thinking", "thinking": "", "signature": ""}}',
    "",
    "event: content_block_delta",
    'data: {"type": "content_block_delta", "index": 0, '
    '"delta": {"type": "thinking_delta", "thinking": "Let me think"}}',
    "",
    "event: content_block_delta",
    'data: {"type": "content_block_delta", "index": 0, '
    '"delta": {"type": "signature_delta", "signature": "EqQB"}}',
    "",
    "event: content_block_stop",
    'data: {"type": "content_block_stop", "index": 0}',
    "",
    "event: ping",
    'data: {"type": "ping"}',
    "",
    "event: content_block_start",
    'data: {"type": "content_block_start", "index": 1, '
    '"content_block": {"type": "text", "text": ""}}',
    "",
    "event: content_block_delta",
    'data: {"type": "content_block_delta", "index": 1, '
    '"delta": {"type": "text_delta", "text": "Okay, let\'s check the weather \u00e0 Oslo"}}',
    "",
    "event: content_block_stop",
    'data: {"type": "content_block_stop", "index": 1}',
    "",
    "event: content_block_start",
    'data: {"type": "content_block_start", "index": 2, "content_block": '
    '{"type": "tool_use", "id": "toolu_01T1x", "name": "get_weather", "input": {}}}',
    "",
    "event: content_block_delta",
    'data: {"type": "content_block_delta", "index": 2, '
    '"delta": {"type": "input_json_delta", "partial_json": ""}}',
    "",
    "event: content_block_delta",
    'data: {"type": "content_block_delta", "index": 2, '
    '"delta": {"type": "input_json_delta", "partial_json": "{\\"location\\": \\"Os"}}',
    "",
    "event: content_block_delta",
    'data: {"type": "content_block_delta", "index": 2, '
    '"delta": {"type": "input_json_delta", "partial_json": "lo\\"}"}}',
    "",
    "event: content_block_stop",
    'data: {"type": "content_block_stop", "index": 2}',
    "",
    "event: message_delta",
    'data: {"type": "message_delta", "delta": {"stop_reason": "tool_use", '
    '"stop_sequence": null}, "usage": {"output_tokens": 89}}',
    "",
    "event: message_stop",
    'data: {"type": "message_stop"}',
    "",
    "",
]
REAL_STREAM = "\n".join(REAL_STREAM_LINES).encode()

REAL_EVENTS: list[Event] = [
    TextDelta("Okay, let's check the weather \u00e0 Oslo"),
    ToolCallStart(0, "toolu_01T1x", "get_weather"),
    ToolCallDelta(0, '{"location": "Os'),
    ToolCallDelta(0, 'lo"}'),
    Finish(
        stop_reason="tool_calls",
        usage=Usage(input_tokens=472, output_tokens=89, cache_read_tokens=9, cache_write_tokens=3),
        upstream_model="claude-opus-4-1",
    ),
]


def decode(chunks: list[bytes]) -> list[Event]:
    decoder = PROVIDER.stream_decoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def test_stream_decoder_on_a_real_transcript() -> None:
    assert isinstance(PROVIDER.stream_decoder(), AnthropicStreamDecoder)
    assert decode([REAL_STREAM]) == REAL_EVENTS


def test_stream_decoder_with_crlf_line_endings() -> None:
    assert decode([REAL_STREAM.replace(b"\n", b"\r\n")]) == REAL_EVENTS


@given(st.lists(st.integers(min_value=0, max_value=len(REAL_STREAM)), max_size=40))
def test_stream_decoder_is_indifferent_to_chunk_boundaries(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(REAL_STREAM)]
    chunks = [REAL_STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    assert decode(chunks) == REAL_EVENTS


def block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {
        "type": "content_block_start",
        "index": index,
        "content_block": block,
    }


def json_delta(index: int, partial: str) -> tuple[str, dict[str, Any]]:
    delta = {"type": "input_json_delta", "partial_json": partial}
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def test_stream_decoder_several_tools_and_stop_sequence() -> None:
    message = {"model": "m", "usage": {"input_tokens": 4}}
    stop = {"stop_reason": "stop_sequence", "stop_sequence": "##"}
    stream = sse_stream(
        ("message_start", {"type": "message_start", "message": message}),
        block_start(0, {"type": "text", "text": "Hi "}),
        block_start(1, {"type": "tool_use", "id": "a", "name": "f"}),
        json_delta(1, "{}"),
        block_start(2, {"type": "server_tool_use", "id": "s", "name": "web_search"}),
        json_delta(2, '{"q":1}'),  # a server tool's input is not the client's business
        block_start(3, {"type": "tool_use", "id": "b", "name": "g"}),
        json_delta(3, '{"x":2}'),
        # some servers send the input count only here; it wins over message_start's
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": stop,
                "usage": {"input_tokens": 10, "output_tokens": 3},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    )
    assert decode([stream]) == [
        TextDelta("Hi "),
        ToolCallStart(0, "a", "f"),
        ToolCallDelta(0, "{}"),
        ToolCallStart(1, "b", "g"),
        ToolCallDelta(1, '{"x":2}'),
        Finish("stop", "##", Usage(10, 3), "m"),
    ]


def sse_stream(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(b"event: %b\ndata: %b\n\n" % (n.encode(), orjson.dumps(d)) for n, d in events)


START = ("message_start", {"type": "message_start", "message": {"model": "m", "usage": {}}})


def test_stream_decoder_error_event_raises() -> None:
    decoder = PROVIDER.stream_decoder()
    decoder.feed(sse_stream(START))
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(UpstreamError, match="Overloaded"):
        decoder.feed(sse_stream(("error", error)))


def test_stream_decoder_close_before_message_stop_raises() -> None:
    decoder = PROVIDER.stream_decoder()
    decoder.feed(REAL_STREAM[: REAL_STREAM.index(b"event: message_stop")])
    with pytest.raises(UpstreamError, match="ended before it was complete"):
        decoder.close()


def test_stream_decoder_empty_stream_is_incomplete() -> None:
    with pytest.raises(UpstreamError):
        PROVIDER.stream_decoder().close()


def test_stream_decoder_takes_a_final_event_without_its_blank_line() -> None:
    decoder = PROVIDER.stream_decoder()
    assert decoder.feed(REAL_STREAM.rstrip(b"\n")) == REAL_EVENTS[:-1]
    assert decoder.close() == REAL_EVENTS[-1:]


def test_stream_decoder_ignores_anything_after_message_stop() -> None:
    assert (
        decode([REAL_STREAM, sse_stream(("error", {"type": "error", "error": {}}))]) == REAL_EVENTS
    )


@pytest.mark.parametrize("data", [b"{nope", b"[1]", b'{"type": "content_block_delta"}'])
def test_stream_decoder_rejects_undecodable_events(data: bytes) -> None:
    with pytest.raises(UpstreamError, match="invalid stream event"):
        PROVIDER.stream_decoder().feed(b"event: content_block_delta\ndata: " + data + b"\n\n")


# ---- inbound: parse_request --------------------------------------------------------------------


def test_parse_request_minimal() -> None:
    assert parse_request(body()) == ChatRequest(
        messages=(user("hi"),), model="claude-x", max_tokens=100
    )


def test_parse_request_auto_model_and_options() -> None:
    request = parse_request(
        body(
            model="auto",
            system=[
                {"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "two"},
            ],
            temperature=0.5,
            top_p=1,
            top_k=5,
            stop_sequences=["\n\nHuman:"],
            metadata={"user_id": "u-7"},
            stream=True,
            thinking={"type": "disabled"},
            service_tier="auto",  # does not change the answer: ignored
        )
    )
    assert request.model is None
    assert request.system == "one\n\ntwo"
    assert (request.temperature, request.top_p, request.top_k) == (0.5, 1.0, 5)
    assert request.stop == ("\n\nHuman:",)
    assert request.user == "u-7"
    assert request.stream is True


def test_parse_request_content_blocks() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?", "cache_control": {"type": "ephemeral"}},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                },
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "...", "signature": "s"},
                {"type": "redacted_thinking", "data": "d"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": [1, 2]}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "plain"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    "is_error": True,
                },
                {"type": "tool_result", "tool_use_id": "toolu_3"},
            ],
        },
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "x", "signature": "s"}]},
        {"role": "user", "content": "go on"},
        {"role": "assistant", "content": ""},  # an empty final prefill
    ]
    assert parse_request(body(messages=messages)).messages == (
        user(
            "what is this?",
            ImagePart(media_type="image/png", data="AAAA"),
            ImagePart(url="https://x/y.png"),
        ),
        assistant("Checking.", ToolCall("toolu_1", "look", '{"q":[1,2]}')),
        user(
            ToolResult("toolu_1", "plain"),
            ToolResult("toolu_2", "a\nb", is_error=True),
            ToolResult("toolu_3", ""),
        ),
        user("go on"),
    )


def test_parse_request_tools_and_choices() -> None:
    tools = [
        {"name": "f", "description": "does f", "input_schema": {"type": "object"}},
        {"type": "custom", "name": "g", "input_schema": {"type": "object", "properties": {}}},
    ]
    request = parse_request(
        body(
            tools=tools,
            tool_choice={"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        )
    )
    assert request.tools == (
        Tool("f", "does f", {"type": "object"}),
        Tool("g", "", {"type": "object", "properties": {}}),
    )
    assert request.tool_choice == ToolChoice("tool", "f")
    assert request.parallel_tool_calls is False
    for wire, mode in [("auto", "auto"), ("any", "required"), ("none", "none")]:
        request = parse_request(body(tools=tools, tool_choice={"type": wire}))
        assert request.tool_choice == ToolChoice(mode)
        assert request.parallel_tool_calls is None


def one_block(role: str = "user", **block: Any) -> bytes:
    """A request whose one message holds one content block."""
    return body(messages=[{"role": role, "content": [block]}])


def image(**source: Any) -> bytes:
    return one_block(type="image", source=source)


def tool_use(**fields: Any) -> bytes:
    return one_block("assistant", type="tool_use", **fields)


def tool_result(**fields: Any) -> bytes:
    return one_block(type="tool_result", **fields)


B = "messages.0.content.0"  # the path of one_block's block

INVALID: list[tuple[bytes, str | None]] = [
    (b"{", None),
    (b"[]", None),
    (body(model=...), "model"),
    (body(model=3), "model"),
    (body(model=""), "model"),
    (body(max_tokens=...), "max_tokens"),
    (body(max_tokens=0), "max_tokens"),
    (body(max_tokens=1.5), "max_tokens"),
    (body(max_tokens=True), "max_tokens"),
    (body(messages=...), "messages"),
    (body(messages=[]), "messages"),
    (body(messages="hi"), "messages"),
    (body(messages=["hi"]), "messages.0"),
    (body(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
    (body(messages=[{"role": "tool", "content": "x"}]), "messages.0.role"),
    (body(messages=[{"content": "x"}]), "messages.0.role"),
    (body(messages=[{"role": "user"}]), "messages.0.content"),
    (body(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
    (body(messages=[{"role": "user", "content": ""}]), "messages.0.content"),
    (body(messages=[{"role": "user", "content": []}]), "messages.0.content"),
    (
        body(messages=[{"role": "assistant", "content": []}, {"role": "user", "content": "x"}]),
        "messages.0.content",
    ),
    (body(messages=[{"role": "user", "content": ["text"]}]), B),
    (one_block(text="x"), f"{B}.type"),
    (one_block(type=1), f"{B}.type"),
    (one_block(type="text"), f"{B}.text"),
    (one_block(type="text", text=1), f"{B}.text"),
    (one_block(type="document", source={}), f"{B}.type"),
    (one_block(type="mystery"), f"{B}.type"),
    (one_block(type="tool_use", id="a", name="f", input={}), f"{B}.type"),
    (one_block(type="thinking", thinking="x"), f"{B}.type"),
    (one_block("assistant", type="image", source={}), f"{B}.type"),
    (one_block("assistant", type="tool_result", tool_use_id="a"), f"{B}.type"),
    (one_block(type="image"), f"{B}.source"),
    (one_block(type="image", source="https://x"), f"{B}.source"),
    (image(type="file", file_id="f"), f"{B}.source.type"),
    (image(type="base64", media_type="image/tiff", data="A"), f"{B}.source.media_type"),
    (image(type="base64", media_type="image/png"), f"{B}.source.data"),
    (image(type="url"), f"{B}.source.url"),
    (tool_use(name="f", input={}), f"{B}.id"),
    (tool_use(id="a", input={}), f"{B}.name"),
    (tool_use(id="a", name="f"), f"{B}.input"),
    (tool_use(id="a", name="f", input="{}"), f"{B}.input"),
    (tool_result(), f"{B}.tool_use_id"),
    (tool_result(tool_use_id="a", content=3), f"{B}.content"),
    (tool_result(tool_use_id="a", content=[{"type": "image"}]), f"{B}.content.0"),
    (tool_result(tool_use_id="a", is_error="yes"), f"{B}.is_error"),
    (body(system=3), "system"),
    (body(system=[{"type": "image"}]), "system.0"),
    (body(system=[{"type": "text"}]), "system.0.text"),
    (body(temperature=1.5), "temperature"),
    (body(temperature=-0.1), "temperature"),
    (body(temperature="hot"), "temperature"),
    (body(top_p=2), "top_p"),
    (body(top_k=-1), "top_k"),
    (body(top_k=2.5), "top_k"),
    (body(stop_sequences="END"), "stop_sequences"),
    (body(stop_sequences=[1]), "stop_sequences"),
    (body(metadata="u"), "metadata"),
    (body(metadata={"user_id": 5}), "metadata.user_id"),
    (body(stream="yes"), "stream"),
    (body(tools={"name": "f"}), "tools"),
    (body(tools=["f"]), "tools.0"),
    (body(tools=[{"input_schema": {}}]), "tools.0.name"),
    (body(tools=[{"name": "f"}]), "tools.0.input_schema"),
    (body(tools=[{"name": "f", "input_schema": {}, "description": 1}]), "tools.0.description"),
    (body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools.0.type"),
    (body(tool_choice="auto"), "tool_choice"),
    (body(tool_choice={"type": "required"}), "tool_choice.type"),
    # Changes the answer and cannot be honoured: refused, never dropped.
    (body(thinking={"type": "enabled", "budget_tokens": 1024}), "thinking"),
    (body(thinking="on"), "thinking"),
    (body(mcp_servers=[{"type": "url", "url": "https://x", "name": "x"}]), "mcp_servers"),
    (body(container="c-1"), "container"),
    (body(tool_choice={"type": "tool"}), "tool_choice.name"),
    (
        body(tool_choice={"type": "auto", "disable_parallel_tool_use": 1}),
        "tool_choice.disable_parallel_tool_use",
    ),
]


@pytest.mark.parametrize(("raw", "param"), INVALID)
def test_parse_request_rejects(raw: bytes, param: str | None) -> None:
    with pytest.raises(RequestInvalid) as info:
        parse_request(raw)
    assert info.value.param == param
    assert info.value.status == 400


def test_parse_request_roundtrips_what_the_provider_sends() -> None:
    request = ChatRequest(
        messages=(
            user("hi", ImagePart(url="https://x/i.png")),
            assistant("ok", ToolCall("c1", "f", '{"a":1}')),
            user(ToolResult("c1", "done", is_error=True)),
        ),
        model="claude-x",
        system="sys",
        tools=(Tool("f", "F", {"type": "object"}),),
        tool_choice=ToolChoice("tool", "f"),
        parallel_tool_calls=False,
        temperature=0.2,
        top_p=0.5,
        top_k=3,
        max_tokens=50,
        stop=("X",),
        user="u",
        stream=True,
    )
    call = PROVIDER.build_call(request, model="claude-x", base_url="", api_key=None, stream=True)
    assert parse_request(call.body) == request


# ---- inbound: render_result --------------------------------------------------------------------


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


# ---- inbound: errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_type(status: int, kind: str) -> None:
    assert error_type(status) == kind


def test_render_error_names_the_param() -> None:
    err = RequestInvalid("must be a number", param="temperature")
    assert orjson.loads(render_error(err)) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "temperature: must be a number"},
    }
    with pytest.raises(RequestInvalid) as info:
        parse_request(body(temperature="x"))
    assert orjson.loads(render_error(info.value))["error"]["message"] == (
        "temperature: must be a number"
    )


# ---- inbound: StreamEncoder --------------------------------------------------------------------


def sse_events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The events of ``data``, each exactly an ``event:`` line, a ``data:`` line whose JSON
    ``type`` is the event's name, and a blank line."""
    events = decode_events(data)
    assert data.endswith(b"\n\n") and data.count(b"\n") == 3 * len(events)
    out = []
    for name, payload in events:
        parsed = orjson.loads(payload)
        assert parsed["type"] == name
        out.append((name, parsed))
    return out


def test_stream_encoder_blocks() -> None:
    encoder = StreamEncoder(id="msg_1", model="router", input_tokens=3)
    start = sse_events(encoder.start())
    assert start[0][1]["message"]["usage"]["input_tokens"] == 3
    events = sse_events(
        encoder.encode_many(
            [
                TextDelta("a"),
                TextDelta(""),
                TextDelta("b"),
                ToolCallStart(0, "t0", "f"),
                ToolCallDelta(0, ""),
                ToolCallDelta(0, "{}"),
                ToolCallStart(1, "t1", "g"),
                ToolCallDelta(1, '{"x":'),
                ToolCallDelta(0, " "),  # a late fragment still reaches its own block
                ToolCallDelta(7, "lost"),  # never started: dropped
                TextDelta("c"),
                Finish("stop", usage=Usage(9, 8, 7, 6)),
                TextDelta("after the end"),
            ]
        )
    )
    shape = [
        (n, d.get("index"), (d.get("delta") or d.get("content_block") or {}).get("type"))
        for n, d in events
    ]
    assert shape == [
        ("content_block_start", 0, "text"),
        ("content_block_delta", 0, "text_delta"),
        ("content_block_delta", 0, "text_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "tool_use"),
        ("content_block_delta", 1, "input_json_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_delta", 1, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("content_block_start", 3, "text"),
        ("content_block_delta", 3, "text_delta"),
        ("content_block_stop", 3, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]  # fmt: skip
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 9,
            "output_tokens": 8,
            "cache_creation_input_tokens": 6,
            "cache_read_input_tokens": 7,
        },
    }


def test_stream_encoder_error_is_terminal() -> None:
    encoder = StreamEncoder(id="m", model="x", input_tokens=0)
    encoder.start()
    encoder.encode(TextDelta("partial"))
    events = sse_events(encoder.error(UpstreamTimeout("upstream took too long")))
    error = {"type": "timeout_error", "message": "upstream took too long"}
    assert events == [("error", {"type": "error", "error": error})]
    assert encoder.encode(Finish()) == b""


def test_stream_encoder_ping_is_ignored_by_clients() -> None:
    assert sse_events(StreamEncoder(id="m", model="x", input_tokens=0).ping()) == [
        ("ping", {"type": "ping"})
    ]


canonical_streams = st.lists(
    st.one_of(
        st.text(min_size=1).map(TextDelta),
        st.tuples(st.text(min_size=1, max_size=5), st.text(min_size=1, max_size=5)),
        st.text(min_size=1, max_size=10),
    ),
    max_size=12,
)


def as_events(items: list[Any]) -> list[Event]:
    """Random stream items as a well-formed canonical stream: tool calls start in order."""
    events: list[Event] = []
    tools = 0
    for item in items:
        if isinstance(item, TextDelta):
            events.append(item)
        elif isinstance(item, tuple):
            events.append(ToolCallStart(tools, *item))
            tools += 1
        elif tools:
            events.append(ToolCallDelta(tools - 1, item))
    return events


@given(canonical_streams, st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
def test_stream_roundtrip_through_the_provider(items: list[Any], reason: Any) -> None:
    events = as_events(items)
    finish = Finish(reason, None, Usage(5, 6, 7, 8), "router")
    encoder = StreamEncoder(id="m", model="router", input_tokens=5)
    wire = encoder.start() + encoder.encode_many([*events, finish])
    assert decode([wire]) == [*events, finish]


# ---- end to end with the official anthropic SDK ------------------------------------------------


def sdk_client(respond: Any, seen: list[httpx2.Request] | None = None) -> anthropic.Anthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if seen is not None:
            seen.append(request)
        return respond(request)

    return anthropic.Anthropic(
        api_key="x",
        base_url="http://router.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


TOOL_RESULT = ChatResult(
    content=(TextPart("Let me look."), ToolCall("toolu_7", "get_weather", '{"city": "Oslo"}')),
    stop_reason="tool_calls",
    usage=Usage(input_tokens=30, output_tokens=12, cache_read_tokens=4, cache_write_tokens=2),
)

TOOLS = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]


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


def stream_response(events: list[Event], *, error: RouterError | None = None) -> httpx2.Response:
    encoder = StreamEncoder(id="msg_s", model="m2", input_tokens=1)
    wire = encoder.start() + encoder.ping() + encoder.encode_many(events)
    if error is not None:
        wire += encoder.error(error)
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=wire)


STREAMED: list[Event] = [
    TextDelta("Hel"),
    TextDelta("lo"),
    ToolCallStart(0, "toolu_a", "get_weather"),
    ToolCallDelta(0, '{"ci'),
    ToolCallDelta(0, 'ty": "Oslo"}'),
    ToolCallStart(1, "toolu_b", "get_weather"),
    Finish("tool_calls", usage=Usage(input_tokens=40, output_tokens=9, cache_read_tokens=3)),
]


def test_sdk_stream_helper_accumulates_the_encoded_stream() -> None:
    client = sdk_client(lambda _: stream_response(STREAMED))
    with client.messages.stream(
        model="auto",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        tools=TOOLS,  # type: ignore[arg-type]
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "Hello"
    assert message.id == "msg_s" and message.model == "m2"
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text == "Hello"  # type: ignore[union-attr]
    assert message.content[1].input == {"city": "Oslo"}  # type: ignore[union-attr]
    assert message.content[2].input == {}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 40
    assert message.usage.output_tokens == 9
    assert message.usage.cache_read_input_tokens == 3
    assert message.usage.cache_creation_input_tokens == 0


def test_sdk_raw_stream_events() -> None:
    client = sdk_client(
        lambda _: stream_response([*STREAMED[:2], Finish("length", usage=Usage(1, 2))])
    )
    events = list(
        client.messages.create(
            model="m", max_tokens=2, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[-2].delta.stop_reason == "max_tokens"  # type: ignore[union-attr]


def test_sdk_raises_on_an_error_event() -> None:
    client = sdk_client(
        lambda _: stream_response(STREAMED[:2], error=NoBackendAvailable("all backends are down"))
    )
    stream = client.messages.stream(
        model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    with stream as events, pytest.raises(anthropic.APIStatusError) as info:
        events.get_final_message()
    assert "all backends are down" in str(info.value)
    assert info.value.body == {  # type: ignore[comparison-overlap]
        "type": "error",
        "error": {"type": "overloaded_error", "message": "all backends are down"},
    }


@pytest.mark.parametrize(
    ("err", "exception"),
    [
        (
            RequestInvalid("max_tokens: field required", param="max_tokens"),
            anthropic.BadRequestError,
        ),
        (Unauthorized("bad key"), anthropic.AuthenticationError),
        (RateLimited("slow down"), anthropic.RateLimitError),
        (UpstreamError("upstream broke"), anthropic.InternalServerError),
    ],
)
def test_sdk_raises_on_rendered_errors(err: RouterError, exception: type[Exception]) -> None:
    client = sdk_client(lambda _: httpx2.Response(err.status, content=render_error(err)))
    with pytest.raises(exception) as info:
        client.messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.message in str(info.value)
