"""The Anthropic Messages stream both ways (``engine.wire.anthropic.response``): Anthropic's
SSE stream decoded into canonical events (checked against its real transcripts), and canonical
events encoded for clients, checked by the official ``anthropic`` SDK reading them.
"""

from __future__ import annotations

import itertools
from typing import Any

import anthropic
import httpx2  # the installed anthropic SDK is built on httpx2, and rejects httpx objects
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support_anthropic_wire import PROVIDER, TOOLS, sdk_client

from engine.errors import NoBackendAvailable, RouterError, UpstreamError, UpstreamTimeout
from engine.messages import (
    Event,
    Finish,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from engine.wire.anthropic.response import AnthropicStreamDecoder, StreamEncoder
from engine.wire.sse import decode_events

# ---- reading an upstream's stream: AnthropicStreamDecoder ----------------------------------------


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
    ThinkingDelta("Let me think"),
    ThinkingDelta(signature="EqQB"),
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


# ---- writing a client's stream: StreamEncoder ----------------------------------------------------


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
    error = {"type": "timeout_error", "message": "upstream took too long",
             "code": "upstream_timeout"}
    assert events == [("error", {"type": "error", "error": error})]
    assert encoder.encode(Finish()) == b""


any_event = st.one_of(
    st.builds(TextDelta, st.text(max_size=5)),
    st.builds(TextDelta, st.text(max_size=5)),
    st.builds(ToolCallStart, st.integers(0, 2), st.text(max_size=3), st.text(max_size=3)),
    st.builds(ToolCallDelta, st.integers(0, 2), st.text(max_size=5)),
    st.builds(ThinkingDelta, st.text(max_size=3), st.sampled_from(["", "sig"]), st.booleans()),
    st.builds(Finish, st.sampled_from(["stop", "length"]),
              usage=st.builds(Usage, st.integers(0, 99), st.integers(0, 99))),
)


@settings(max_examples=300)
@given(st.lists(st.lists(any_event, max_size=6), max_size=5), st.integers(-1, 5))
@example([[TextDelta("a")], [TextDelta("b")]], 1)
def test_a_batch_encodes_as_its_events_one_at_a_time(batches: list[list[Event]],
                                                     failed: int) -> None:
    """``encode_many``'s fast path for text deltas writes what ``encode`` writes for each
    event: in a text block or not, after other blocks, after a finish or an error."""
    many = StreamEncoder(id="msg_1", model="m", input_tokens=3)
    one = StreamEncoder(id="msg_1", model="m", input_tokens=3)
    for i, batch in enumerate(batches):
        if i == failed:
            assert many.error(UpstreamError("boom")) == one.error(UpstreamError("boom"))
        assert many.encode_many(batch) == b"".join([one.encode(e) for e in batch])


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


# ---- the official anthropic SDK reading rendered streams -----------------------------------------


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
        "error": {"type": "overloaded_error", "message": "all backends are down",
                  "code": "no_backend_available"},
    }
