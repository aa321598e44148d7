"""The stream decoders (``OpenAIStreamDecoder``, ``AnthropicStreamDecoder``) against the ones
they replaced, which parsed every event whole and built each text delta with the dataclass's
own constructor: the same events and the same errors, feed by feed, for random streams of
valid and malformed events (chunks of a learnt shape with other values in their string,
other ids and indexes, duplicate keys, errors, logprobs, tool calls, pings, undecodable JSON)
in the JSON styles servers write, cut at random places. The old decoders are kept below as
they were; the helpers they call are unchanged and imported.
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import UpstreamError
from engine.messages import (
    Event,
    Finish,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallStart,
    new_finish,
    new_text_delta,
    new_usage,
)
from engine.wire.anthropic.errors import describe_error as anthropic_error
from engine.wire.anthropic.response import _STOP_REASONS as ANTHROPIC_STOP_REASONS
from engine.wire.anthropic.response import AnthropicStreamDecoder
from engine.wire.anthropic.response import _parse_usage as anthropic_usage
from engine.wire.openai.errors import describe_error, is_error
from engine.wire.openai.response import (
    OpenAIStreamDecoder,
    _arguments_text,
    _parse_logprobs,
    _parse_usage,
    _stop_reason,
)
from engine.wire.sse import SSEDecoder

# ---- the streams -----------------------------------------------------------------------------

texts = st.text(alphabet=st.sampled_from(["a", " ", '"', "\\", "/", "}", "]", ",", ":", "\n",
                                          "\x00", "é", "😀", "{", "\u2028"]), max_size=8)
styles = st.integers(0, 2)
SLOT = "\x07slot\x07"  # a string put where a mutated chunk has something else
middles = st.sampled_from([
    "", '"', '"a', '"a","content":"b"', '"a","text":"b"', '"a"}', "null", "1", "[]", '"\\ud800"',
    '"a" "b"', ' "a" ', '"}]}', '\ufeff"a"', '"a","partial_json":"b"', '"\\u0000"',
])


def dumped(value: Any, style: int) -> str:
    """JSON text as different servers write it: compact, spaced and escaped, compact
    unescaped."""
    if style == 0:
        return orjson.dumps(value).decode()
    if style == 1:
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def mutated(value: Any, style: int, middle: str) -> str:
    """``value``'s JSON text with ``middle`` in place of the string ``SLOT``."""
    return dumped(value, style).replace(dumped(SLOT, style), middle)


HEADS = [
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
     "system_fingerprint": "fp"},
    {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x"},
    {"model": 5},
    {},
]


@st.composite
def openai_payload(draw: st.DrawFn, stream_head: int, stream_style: int) -> str:
    """A chunk, mostly with the stream's head and style (as a server writes them), now and
    then another's."""
    other = draw(st.integers(0, 7)) == 0
    head = dict(HEADS[draw(st.integers(0, len(HEADS) - 1)) if other else stream_head])
    style = draw(styles) if other else stream_style
    kind = draw(st.sampled_from([
        "text", "text", "text", "args", "args", "start", "role", "finish", "usage",
        "logprobs", "second", "refusal", "error", "mutated", "odd", "done", "extra", "dup",
        "nameless",
    ]))
    choice: dict[str, Any] = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}
    if kind in ("text", "mutated", "extra", "logprobs", "second"):
        choice["delta"] = {"content": draw(texts)}
    if kind == "args" or (kind == "mutated" and draw(st.booleans())):
        call: dict[str, Any] = {"function": {"arguments": draw(texts)}}
        index = draw(st.sampled_from([0, 1, None]))
        if index is not None:
            call["index"] = index
        if draw(st.booleans()):
            call["id"] = draw(st.sampled_from(["call_a", "call_b"]))
        choice["delta"] = {"tool_calls": [call]}
    if kind == "start":
        index = draw(st.sampled_from([0, 1]))
        choice["delta"] = {"tool_calls": [{"index": index, "id": f"call_{index}",
                                           "type": "function",
                                           "function": {"name": "f", "arguments": ""}}]}
    if kind == "role":
        choice["delta"] = {"role": "assistant", "content": "", "refusal": None}
    if kind == "refusal":
        choice["delta"] = {"refusal": draw(texts)}
    if kind == "finish":
        choice["finish_reason"] = draw(st.sampled_from(["stop", "tool_calls", "length"]))
    if kind == "logprobs":
        choice["logprobs"] = {"content": [{"token": "a", "logprob": -0.5}]}
    if kind == "second":
        choice["index"] = 1
    chunk = {**head, "choices": [choice], "usage": None}
    if kind == "usage":
        chunk.update(choices=[], usage={"prompt_tokens": 5, "completion_tokens": 2})
    if kind == "extra":
        chunk[draw(st.sampled_from(["error", "object", "usage"]))] = draw(
            st.sampled_from([{"message": "boom"}, "error", {"prompt_tokens": 1}, None]))
    if kind == "error":
        return dumped(draw(st.sampled_from([
            {"error": {"message": "boom", "type": "server_error"}}, {"error": "boom"},
            {"object": "error", "message": "boom"}])), style)
    if kind == "mutated":
        delta = choice["delta"]
        if "content" in delta:
            delta["content"] = SLOT
        else:
            delta["tool_calls"][0]["function"]["arguments"] = SLOT
        return mutated(chunk, style, draw(middles))
    if kind == "odd":
        return draw(st.sampled_from([
            "[1]", '"s"', "1", "{", "null", '{"choices":{}}', '{"choices":[1]}',
            '{"choices":[{"delta":[1]}]}', '{"choices":[{"index":0,"delta":{"content":1}}]}',
            '{"choices":[{"delta":{"tool_calls":[{"index":[1]}]}}]}',
            '{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":{"a":1}}}]}}]}',
        ]))
    if kind == "done":
        return draw(st.sampled_from(["[DONE]", "[DONE] and more"]))
    if kind == "dup":  # a key twice: the last one counts
        choice["delta"] = {"content": SLOT}
        key = dumped("content", style) + (": " if style == 1 else ":")
        return mutated(chunk, style, dumped(draw(texts), style) + ", "[: 1 + (style == 1)]
                       + key + dumped(draw(st.sampled_from(["b", ""])), style))
    if kind == "nameless":  # a call without an index, and maybe without an id
        call = {"function": {"arguments": draw(texts)}}
        if draw(st.booleans()):
            call["id"] = "call_c"
        choice["delta"] = {"tool_calls": [call]}
    return dumped(chunk, style)


@st.composite
def openai_stream(draw: st.DrawFn) -> list[str]:
    head, style = draw(st.integers(0, len(HEADS) - 1)), draw(styles)
    return draw(st.lists(openai_payload(head, style), max_size=30))


@st.composite
def anthropic_event(draw: st.DrawFn, stream_style: int) -> tuple[str | None, str]:
    style = draw(styles) if draw(st.integers(0, 7)) == 0 else stream_style
    kind = draw(st.sampled_from([
        "text", "text", "text", "args", "args", "start", "tool", "thinking", "signature",
        "stop", "message_start", "message_delta", "message_stop", "ping", "error", "mutated",
        "odd", "nameless",
    ]))
    index = draw(st.sampled_from([0, 1, 2]))
    name: str | None = "content_block_delta"
    if kind in ("text", "ping", "nameless") or (kind == "mutated" and draw(st.booleans())):
        value: Any = {"type": "content_block_delta", "index": index,
                      "delta": {"type": "text_delta", "text": draw(texts)}}
        if kind == "mutated":
            value["delta"]["text"] = SLOT
    elif kind in ("args", "mutated"):
        value = {"type": "content_block_delta", "index": index,
                 "delta": {"type": "input_json_delta", "partial_json": draw(texts)}}
        if kind == "mutated":
            value["delta"]["partial_json"] = SLOT
    elif kind == "thinking":
        value = {"type": "content_block_delta", "index": index,
                 "delta": {"type": "thinking_delta", "thinking": draw(texts)}}
    elif kind == "signature":
        value = {"type": "content_block_delta", "index": index,
                 "delta": {"type": "signature_delta", "signature": "sig"}}
    elif kind == "start":
        name = "content_block_start"
        value = {"type": "content_block_start", "index": index,
                 "content_block": {"type": "text", "text": draw(texts)}}
    elif kind == "tool":
        name = "content_block_start"
        value = {"type": "content_block_start", "index": index, "content_block": {
            "type": "tool_use", "id": f"toolu_{index}", "name": "f", "input": {}}}
    elif kind == "stop":
        name, value = "content_block_stop", {"type": "content_block_stop", "index": index}
    elif kind == "message_start":
        name, value = kind, {"type": kind, "message": {
            "model": "claude", "usage": {"input_tokens": 3, "output_tokens": 1}}}
    elif kind == "message_delta":
        name, value = kind, {"type": kind, "delta": {"stop_reason": "end_turn"},
                             "usage": {"output_tokens": 9}}
    elif kind == "message_stop":
        name, value = kind, {"type": kind}
    elif kind == "error":
        name, value = kind, {"type": "error", "error": {"type": "overloaded", "message": "x"}}
    else:
        return draw(st.sampled_from(["content_block_delta", None])), draw(st.sampled_from([
            "[1]", "{", "null", "", '{"type":"content_block_delta"}',
            '{"type":"content_block_delta","delta":{"type":"text_delta"}}',
            '{"type":"content_block_delta","delta":{"type":"input_json_delta",'
            '"partial_json":"x"}}',
        ]))
    if kind == "ping":
        name = "ping"
    if kind == "nameless":
        name = None
    if kind == "mutated":
        return name, mutated(value, style, draw(middles))
    return name, dumped(value, style)


@st.composite
def anthropic_stream(draw: st.DrawFn) -> list[tuple[str | None, str]]:
    return draw(st.lists(anthropic_event(draw(styles)), max_size=30))


def sse(events: list[tuple[str | None, str]]) -> bytes:
    return b"".join(
        ((f"event: {name}\n" if name is not None else "") + f"data: {data}\n\n").encode()
        for name, data in events
    )


def run(decoder: Any, body: bytes, cuts: list[int]) -> list[Any]:
    """What each feed of ``body`` cut at ``cuts``, and the close, returned or raised."""
    bounds = [0, *sorted(c for c in cuts if c <= len(body)), len(body)]
    out: list[Any] = []
    for start, end in pairwise(bounds):
        try:
            out.append(decoder.feed(body[start:end]))
        except UpstreamError as exc:
            return [*out, ("error", str(exc))]
    try:
        out.append(decoder.close())
    except UpstreamError as exc:
        out.append(("error", str(exc)))
    return out


cuts = st.lists(st.integers(0, 3000), max_size=8)


@settings(max_examples=1000)
@given(openai_stream(), cuts)
def test_openai_the_same_as_parsing_every_chunk(payloads: list[str], at: list[int]) -> None:
    body = sse([(None, p) for p in payloads])
    assert run(OpenAIStreamDecoder(), body, at) == run(OldOpenAI(), body, at)


@settings(max_examples=1000)
@given(anthropic_stream(), cuts)
def test_anthropic_the_same_as_parsing_every_event(events: list[tuple[str | None, str]],
                                                   at: list[int]) -> None:
    body = sse(events)
    assert run(AnthropicStreamDecoder(), body, at) == run(OldAnthropic(), body, at)


def test_a_stream_of_one_shape_is_read_by_its_strings() -> None:
    # The streams above do learn shapes and read by them: here, every text chunk after the
    # first is read without being parsed whole.
    chunks = [{"id": "c", "choices": [{"index": 0, "delta": {"content": f"w{i}"},
                                       "finish_reason": None}]} for i in range(5)]
    decoder = OpenAIStreamDecoder()
    events = decoder.feed(sse([(None, orjson.dumps(c).decode()) for c in chunks]))
    assert events == [TextDelta(f"w{i}") for i in range(5)]
    assert decoder._text is not None and decoder._learning == 3


def test_another_value_where_a_string_was_learnt_is_parsed_whole() -> None:
    # A number or an object where the arguments' string was is no string: the whole chunk
    # is parsed, and the arguments are its JSON text, as before.
    def chunk(arguments: str) -> str:
        return ('{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
                '"function":{"arguments":' + arguments + '}}]},"finish_reason":null}]}')
    start = ('{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1",'
             '"function":{"name":"f","arguments":""}}]},"finish_reason":null}]}')
    payloads = [start, chunk('"{"'), chunk("1"), chunk('{"a":1}'), chunk('"}"')]
    body = sse([(None, p) for p in payloads])
    new = run(OpenAIStreamDecoder(), body, [])
    assert new == run(OldOpenAI(), body, [])
    assert new[0] == [ToolCallStart(0, "call_1", "f"), ToolCallDelta(0, "{"),
                      ToolCallDelta(0, "1"), ToolCallDelta(0, '{"a":1}'), ToolCallDelta(0, "}")]


def test_a_fragment_read_by_its_shape_is_the_last_call_for_one_without_index() -> None:
    # A call without index or id continues the last call named; a fragment read through the
    # learnt shape names its call as one parsed whole does.
    def call(**fields: Any) -> str:
        return orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {
            "tool_calls": [fields]}, "finish_reason": None}]}).decode()
    payloads = [
        call(index=0, id="call_0", function={"name": "f", "arguments": ""}),
        call(index=0, function={"arguments": "{"}),
        call(index=1, id="call_1", function={"name": "g", "arguments": ""}),
        call(index=0, function={"arguments": '"a"'}),  # read through the learnt shape
        call(function={"arguments": ":1}"}),
    ]
    body = sse([(None, p) for p in payloads])
    new = run(OpenAIStreamDecoder(), body, [])
    assert new == run(OldOpenAI(), body, [])
    assert new[0][-1] == ToolCallDelta(0, ":1}")


# ---- the decoders as they were -----------------------------------------------------------------


class OldOpenAI:
    """``OpenAIStreamDecoder`` as it was: every chunk parsed whole.

    The finish is held back until ``data: [DONE]``: with ``include_usage`` the usage arrives in
    a chunk *after* the one with ``finish_reason``, and the single :class:`Finish` must carry it.
    """

    __slots__ = ("_done", "_finish_reason", "_last_key", "_model", "_sse", "_tools", "_usage")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._finish_reason: str | None = None
        self._usage = new_usage()
        self._model: str | None = None
        self._tools: dict[Any, int] = {}  # upstream index (or call id) -> canonical index
        self._last_key: Any = None
        self._done = False

    def feed(self, data: bytes) -> list[Event]:
        """Events completed by ``data``; nothing once the stream has finished.

        Raises:
            UpstreamError: the upstream sent an error payload or undecodable data.
        """
        if self._done:
            return []
        events: list[Event] = []
        for _, payload in self._sse.feed(data):
            try:
                self._handle(payload, events)
            except (AttributeError, TypeError) as exc:  # JSON, but not a chunk's shape
                raise UpstreamError(f"upstream sent a malformed stream chunk ({exc})") from None
            if self._done:
                break
        return events

    def close(self) -> list[Event]:
        """The held-back :class:`Finish` if the stream ended without ``[DONE]``.

        Raises:
            UpstreamError: the stream ended before a ``finish_reason`` was seen.
        """
        if self._done:
            return []
        events: list[Event] = []
        if self._sse.pending:  # a last event not followed by a blank line
            events = self.feed(b"\n\n")
            if self._done:
                return events
        if self._finish_reason is None:
            raise UpstreamError("upstream stream ended before it was complete")
        events.append(self._finish())
        return events

    def _finish(self) -> Finish:
        self._done = True
        return new_finish(
            stop_reason=_stop_reason(self._finish_reason, bool(self._tools)),
            usage=self._usage,
            upstream_model=self._model,
        )

    def _handle(self, payload: str, events: list[Event]) -> None:
        if payload[:6] == "[DONE]":
            events.append(self._finish())
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamError("upstream sent an undecodable stream chunk") from None
        if type(chunk) is not dict:
            raise UpstreamError("upstream sent an undecodable stream chunk")
        if is_error(chunk):
            message = describe_error(chunk) or "an error event without a message"
            raise UpstreamError(f"upstream stream failed: {message}")
        get = chunk.get
        if self._model is None:
            model = get("model")
            if isinstance(model, str):
                self._model = model
        usage = get("usage")
        if usage:
            self._usage = _parse_usage(usage)
        for choice in get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # the canonical stream has one choice
            delta = choice.get("delta")
            if delta:
                text = delta.get("content") or delta.get("refusal")
                logprobs = choice.get("logprobs")
                if logprobs is not None:
                    logprobs = _parse_logprobs(logprobs)
                if text or logprobs:
                    events.append(new_text_delta(text or "", logprobs))
                calls = delta.get("tool_calls")
                if calls:
                    self._tool_deltas(calls, events)
            reason = choice.get("finish_reason")
            if reason:
                self._finish_reason = reason

    def _tool_deltas(self, calls: list[Any], events: list[Event]) -> None:
        tools = self._tools
        for call in calls:
            function = call.get("function") or {}
            call_id = call.get("id")
            key = call.get("index")
            if key is None:  # some servers (e.g. Gemini's) omit the index: go by id
                key = call_id if call_id and call_id not in tools else self._last_key
            index = tools.get(key)
            if index is None:
                index = tools[key] = len(tools)
                name = function.get("name") or ""
                events.append(ToolCallStart(index, call_id or f"call_{index}", name))
            self._last_key = key
            arguments = function.get("arguments")
            if arguments:
                events.append(ToolCallDelta(index, _arguments_text(arguments)))


class OldAnthropic:
    """``AnthropicStreamDecoder`` as it was: every event parsed whole."""

    __slots__ = ("_done", "_model", "_sse", "_stop_reason", "_stop_sequence", "_tools", "_usage")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._tools: dict[int, int] = {}  # content block index -> canonical tool call index
        self._usage: dict[str, Any] = {}  # the latest value of each count
        self._model: str | None = None
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._done = False

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for name, payload in self._sse.feed(data):
            if not self._done:
                self._handle(name, payload, events)
        return events

    def close(self) -> list[Event]:
        # A final event without its blank line is still whole once the input has ended.
        events = self.feed(b"\n\n") if self._sse.pending else []
        if not self._done:
            raise UpstreamError("upstream stream ended before it was complete")
        return events

    def _handle(self, name: str, payload: str, events: list[Event]) -> None:
        if name == "ping" or not payload:
            return
        try:
            data = orjson.loads(payload)
            kind = data.get("type", name)
            if kind == "content_block_delta":
                delta = data["delta"]
                dtype = delta["type"]
                if dtype == "text_delta":
                    if delta["text"]:
                        events.append(TextDelta(delta["text"]))
                elif dtype == "input_json_delta":
                    tool = self._tools.get(data["index"])
                    if tool is not None and delta["partial_json"]:
                        events.append(ToolCallDelta(tool, delta["partial_json"]))
                elif dtype == "thinking_delta":
                    if delta["thinking"]:
                        events.append(ThinkingDelta(delta["thinking"]))
                elif dtype == "signature_delta":
                    events.append(ThinkingDelta(signature=str(delta["signature"])))
                # citation deltas carry nothing canonical
            elif kind == "content_block_start":
                block = data["content_block"]
                if block["type"] == "text":
                    if block.get("text"):
                        events.append(TextDelta(block["text"]))
                elif block["type"] == "redacted_thinking":
                    events.append(ThinkingDelta(str(block["data"]), redacted=True))
                elif block["type"] == "thinking" and (block.get("thinking")
                                                      or block.get("signature")):
                    events.append(ThinkingDelta(str(block.get("thinking") or ""),
                                                str(block.get("signature") or "")))
                elif block["type"] == "tool_use":
                    tool = len(self._tools)
                    self._tools[data["index"]] = tool
                    events.append(ToolCallStart(tool, str(block["id"]), str(block["name"])))
            elif kind == "message_start":
                message = data["message"]
                self._model = message.get("model")
                self._take_usage(message.get("usage") or {})
            elif kind == "message_delta":
                delta = data.get("delta") or {}
                self._stop_reason = delta.get("stop_reason")
                self._stop_sequence = delta.get("stop_sequence")
                self._take_usage(data.get("usage") or {})
            elif kind == "message_stop":
                self._done = True
                events.append(self._finish())
            elif kind == "error":
                message = anthropic_error(data.get("error")) or "unknown error"
                raise UpstreamError(f"upstream stream failed: {message}")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"upstream sent an invalid stream event: {exc!r}") from exc

    def _take_usage(self, usage: dict[str, Any]) -> None:
        # Counts are cumulative: a later event's value replaces an earlier one when present.
        self._usage.update((key, value) for key, value in usage.items() if value is not None)

    def _finish(self) -> Finish:
        return Finish(
            stop_reason=ANTHROPIC_STOP_REASONS.get(self._stop_reason, "stop"),
            stop_sequence=self._stop_sequence,
            usage=anthropic_usage(self._usage),
            upstream_model=self._model,
        )
