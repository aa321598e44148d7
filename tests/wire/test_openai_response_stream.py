"""The OpenAI chat-completion stream both ways (``engine.wire.openai.response``): an
upstream's SSE stream decoded into canonical events, fed in OpenAI's real format split at
arbitrary points, and canonical events encoded for clients, checked by the official ``openai``
SDK reading them.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support_openai_wire import (
    LOGPROB,
    PROVIDER,
    QUESTION,
    SDK_MESSAGES,
    decode,
    exchange,
    sdk_client,
)

from engine.errors import UpstreamError
from engine.messages import (
    Event,
    Finish,
    ResultBuilder,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from engine.testing.fake_upstream import Behaviour, FakeUpstream
from engine.testing.fake_upstream import ToolCall as FakeToolCall
from engine.wire.openai.response import OpenAIStreamDecoder, StreamEncoder

# ---- reading an upstream's stream: OpenAIStreamDecoder -------------------------------------------


def sse_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    """One SSE event exactly as OpenAI sends it (usage null until the usage chunk)."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    chunk = {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_1",
        "choices": choices,
        "usage": None,
        **extra,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


USAGE_CHUNK = sse_chunk(
    None,
    usage={
        "prompt_tokens": 11,
        "completion_tokens": 6,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 1},
    },
)


OPENAI_STREAM = b"".join(
    [
        sse_chunk({"role": "assistant", "content": "", "refusal": None}),
        sse_chunk({"content": "Hel"}),
        sse_chunk({"content": "lo"}),
        sse_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        sse_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        sse_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Oslo"}'}}]}),
        sse_chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "function": {"name": "t", "arguments": "{}"}}
                ]
            }
        ),
        sse_chunk({}, "tool_calls"),
        USAGE_CHUNK,
        b"data: [DONE]\n\n",
    ]
)


OPENAI_EVENTS: list[Event] = [
    TextDelta("Hel"),
    TextDelta("lo"),
    ToolCallStart(0, "call_a", "get_weather"),
    ToolCallDelta(0, '{"ci'),
    ToolCallDelta(0, 'ty":"Oslo"}'),
    ToolCallStart(1, "call_b", "t"),
    ToolCallDelta(1, "{}"),
    Finish(
        stop_reason="tool_calls",
        usage=Usage(input_tokens=10, output_tokens=6, cache_read_tokens=1),
        upstream_model="gpt-4o-mini-2024-07-18",
    ),
]


def test_stream_decoding() -> None:
    assert decode(OPENAI_STREAM) == OPENAI_EVENTS


@given(st.lists(st.integers(0, len(OPENAI_STREAM)), max_size=30))
def test_stream_decoding_is_independent_of_read_boundaries(cuts: list[int]) -> None:
    assert decode(OPENAI_STREAM, cuts) == OPENAI_EVENTS


def test_stream_decoding_with_crlf_line_endings() -> None:
    assert decode(OPENAI_STREAM.replace(b"\n", b"\r\n"), [1, 77, 300]) == OPENAI_EVENTS


def test_finish_is_held_back_until_done() -> None:
    decoder = OpenAIStreamDecoder()
    assert decoder.feed(sse_chunk({"content": "x"})) == [TextDelta("x")]
    assert decoder.feed(sse_chunk({}, "length")) == []
    assert decoder.feed(USAGE_CHUNK) == []
    [finish] = decoder.feed(b"data: [DONE]\n\n")
    assert finish == Finish(
        "length", usage=Usage(10, 6, 1), upstream_model="gpt-4o-mini-2024-07-18"
    )
    assert decoder.feed(sse_chunk({"content": "late"}) + b"data: [DONE]\n\n") == []
    assert decoder.close() == []


def test_finish_at_close_when_the_server_sends_no_done() -> None:
    decoder = OpenAIStreamDecoder()
    assert decoder.feed(sse_chunk({"content": "x"}) + sse_chunk({}, "stop")) == [TextDelta("x")]
    assert decoder.close() == [Finish("stop", upstream_model="gpt-4o-mini-2024-07-18")]


def test_done_without_a_final_blank_line() -> None:
    decoder = OpenAIStreamDecoder()
    decoder.feed(sse_chunk({}, "stop") + USAGE_CHUNK + b"data: [DONE]\n")
    [finish] = decoder.close()
    assert finish.usage.output_tokens == 6


@pytest.mark.parametrize(
    "data",
    [
        b"",
        sse_chunk({"content": "partial answer"}),
        sse_chunk({"content": "x"}) + b'data: {"choices": [{"delta": {"cont',
    ],
)
def test_incomplete_stream_fails_on_close(data: bytes) -> None:
    decoder = OpenAIStreamDecoder()
    decoder.feed(data)
    with pytest.raises(UpstreamError):
        decoder.close()


def test_stream_error_payload() -> None:
    decoder = OpenAIStreamDecoder()
    assert decoder.feed(sse_chunk({"content": "x"})) == [TextDelta("x")]
    error = b'data: {"error": {"message": "The server had an error", "type": "server_error"}}\n\n'
    with pytest.raises(UpstreamError, match="The server had an error"):
        decoder.feed(error)


def test_stream_vllm_error_object() -> None:
    with pytest.raises(UpstreamError, match="context too long"):
        OpenAIStreamDecoder().feed(b'data: {"object":"error","message":"context too long"}\n\n')


@pytest.mark.parametrize(
    "payload",
    [
        b"data: {oops\n\n",
        b"data: [1]\n\n",
        b"data: \n\n",
        b'data: {"choices": ["x"]}\n\n',
        b'data: {"choices": [{"delta": {"tool_calls": [3]}}]}\n\n',
    ],
)
def test_stream_undecodable_data(payload: bytes) -> None:
    with pytest.raises(UpstreamError):
        OpenAIStreamDecoder().feed(payload)


def test_stream_tool_calls_without_index_go_by_id() -> None:
    data = b"".join(
        [
            sse_chunk({"tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{"}}]}),
            sse_chunk({"tool_calls": [{"function": {"arguments": "}"}}]}),
            sse_chunk({"tool_calls": [{"id": "y", "function": {"name": "g", "arguments": ""}}]}),
            sse_chunk({}, "stop"),  # some servers say "stop" after tool calls
            b"data: [DONE]\n\n",
        ]
    )
    assert decode(data) == [
        ToolCallStart(0, "x", "f"),
        ToolCallDelta(0, "{"),
        ToolCallDelta(0, "}"),
        ToolCallStart(1, "y", "g"),
        Finish("tool_calls", upstream_model="gpt-4o-mini-2024-07-18"),
    ]


# ---- writing a client's stream (StreamEncoder), checked by the official SDK ----------------------


def sse_response(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


STREAM_EVENTS: list[Event] = [
    TextDelta("Let me "),
    TextDelta("check."),
    ToolCallStart(0, "call_1", "get_weather"),
    ToolCallDelta(0, '{"city": '),
    ToolCallDelta(0, '"Oslo"}'),
    ToolCallStart(1, "call_2", "get_time"),
    ToolCallDelta(1, "{}"),
    Finish("tool_calls", usage=Usage(input_tokens=9, output_tokens=21)),
]


def encoded_stream(events: list[Event], *, include_usage: bool = True) -> bytes:
    encoder = StreamEncoder(id="chatcmpl-s", model="m", created=7, include_usage=include_usage)
    return (
        encoder.start()
        + encoder.encode_many(events[:3])
        + b"".join(encoder.encode(e) for e in events[3:])
    )


def test_sdk_accumulates_a_rendered_stream() -> None:
    body = encoded_stream(STREAM_EVENTS)
    client = sdk_client(lambda request: sse_response(body))
    with client.chat.completions.stream(
        model="m", messages=SDK_MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    assert final.id == "chatcmpl-s"
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    assert calls == [
        ("call_1", "get_weather", '{"city": "Oslo"}'),
        ("call_2", "get_time", "{}"),
    ]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (9, 21)


def test_sdk_iterates_raw_chunks_of_a_rendered_stream() -> None:
    body = encoded_stream([TextDelta("a"), TextDelta("b"), Finish("length")], include_usage=False)
    client = sdk_client(lambda request: sse_response(body))
    chunks = list(client.chat.completions.create(model="m", messages=SDK_MESSAGES, stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["", "a", "b", None]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None and c.object == "chat.completion.chunk" for c in chunks)


def test_sdk_raises_on_a_rendered_stream_error() -> None:
    encoder = StreamEncoder(id="i", model="m", created=1, include_usage=True)
    body = (
        encoder.start()
        + encoder.encode(TextDelta("par"))
        + encoder.error(UpstreamError("the backend broke off"))
    )
    assert not body.endswith(b"data: [DONE]\n\n")
    assert encoder.encode(TextDelta("after")) == b""
    client = sdk_client(lambda request: sse_response(body))
    stream = client.chat.completions.create(model="m", messages=SDK_MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="the backend broke off") as info:
        for _ in stream:
            pass
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "upstream_error"


def test_stream_round_trips_through_the_upstream_decoder() -> None:
    finish = STREAM_EVENTS[-1]
    assert isinstance(finish, Finish)
    expected = [*STREAM_EVENTS[:-1], Finish("tool_calls", usage=finish.usage, upstream_model="m")]
    assert decode(encoded_stream(STREAM_EVENTS)) == expected


def test_stream_logprobs_round_trip() -> None:
    events: list[Event] = [TextDelta("Hi", (LOGPROB,)), TextDelta("!"), Finish()]
    body = encoded_stream(events)
    assert b'"logprobs":{"content":[{"token":"Hi"' in body
    decoded = decode(body)
    assert decoded[:2] == events[:2]
    builder = ResultBuilder()
    builder.add(decoded)
    assert builder.result().logprobs == (LOGPROB,)


events_strategy = st.lists(
    st.one_of(
        st.builds(TextDelta, st.text(min_size=1)),
        st.builds(ToolCallDelta, st.just(0), st.text(min_size=1)),
    ),
    max_size=8,
)


@given(events_strategy, st.sampled_from(["stop", "length", "content_filter"]), st.data())
def test_any_stream_round_trips_at_any_read_boundaries(
    events: list[Event], reason: Any, data: st.DataObject
) -> None:
    events = (
        [ToolCallStart(0, "c", "f"), *events]
        if any(isinstance(e, ToolCallDelta) for e in events)
        else events
    )
    usage = Usage(input_tokens=3, output_tokens=4, cache_read_tokens=1)
    rendered = encoded_stream([*events, Finish(reason, usage=usage)])
    cuts = data.draw(st.lists(st.integers(0, len(rendered)), max_size=10))
    decoded = decode(rendered, cuts)
    expected_reason = (
        "tool_calls"
        if events and reason == "stop" and any(isinstance(e, ToolCallStart) for e in events)
        else reason
    )
    assert decoded == [*events, Finish(expected_reason, usage=usage, upstream_model="m")]


def test_stream_chunk_bytes() -> None:
    encoder = StreamEncoder(id="i", model="m", created=1, include_usage=False)
    prefix = b'data: {"id":"i","object":"chat.completion.chunk","created":1,"model":"m",'
    prefix += b'"system_fingerprint":null,"choices":[{"index":0,"delta":'
    assert encoder.encode(TextDelta('say "hi"')) == (
        prefix + b'{"content":"say \\"hi\\""},"logprobs":null,"finish_reason":null}]}\n\n'
    )
    assert encoder.encode(Finish("stop")) == (
        prefix + b'{},"logprobs":null,"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    assert encoder.encode(Finish("stop")) == b""


any_event = st.one_of(
    st.builds(TextDelta, st.text()),
    st.builds(TextDelta, st.text(), st.just((LOGPROB,))),
    st.builds(ToolCallStart, st.integers(0, 2), st.text(), st.text()),
    st.builds(ToolCallDelta, st.integers(0, 2), st.text()),
    st.builds(ThinkingDelta, st.text()),
    st.builds(Finish, st.sampled_from(["stop", "length"]),
              usage=st.builds(Usage, st.integers(0, 99), st.integers(0, 99))),
)


@given(st.lists(st.lists(any_event, max_size=6), max_size=4), st.booleans(), st.text())
def test_a_batch_encodes_as_its_events_one_at_a_time(
    batches: list[list[Event]], include_usage: bool, model: str
) -> None:
    """``encode_many``'s fast path for plain text deltas writes what ``encode`` writes for
    each event, also around finishes (after which nothing is written) and other events."""
    many = StreamEncoder(id="chatcmpl-1", model=model, created=7, include_usage=include_usage)
    one = StreamEncoder(id="chatcmpl-1", model=model, created=7, include_usage=include_usage)
    for batch in batches:
        assert many.encode_many(batch) == b"".join([one.encode(e) for e in batch])


# ---- the codec against the fake upstream, over real sockets --------------------------------------


async def test_codec_against_the_fake_upstream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(
        "b",
        Behaviour(text="fine thanks", tool_call=FakeToolCall("f", {"city": "Oslo"}, id="call_7")),
        Behaviour(text="fine thanks", tool_call=FakeToolCall("f", {"city": "Oslo"}, id="call_7")),
    )
    result = PROVIDER.parse_result((await exchange(fake_upstream, QUESTION, stream=False)).content)
    assert result.text == "fine thanks"
    assert result.tool_calls == (ToolCall("call_7", "f", '{"city":"Oslo"}'),)
    events = decode((await exchange(fake_upstream, QUESTION, stream=True)).content)
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.stop_reason == result.stop_reason == "tool_calls"
    assert finish.usage == result.usage != Usage()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "fine thanks"
    assert [e for e in events if isinstance(e, ToolCallStart)] == [ToolCallStart(0, "call_7", "f")]
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert orjson.loads(arguments) == {"city": "Oslo"}
    [recorded, recorded_stream] = fake_upstream.requests("b")
    assert recorded.headers["authorization"] == "Bearer k"
    assert recorded_stream.body["stream_options"] == {"include_usage": True}
