"""The Anthropic Messages answer, both ways: written to clients, read from upstreams. Sans-IO.

Clients get a ``message`` (:func:`render_result`) or its SSE stream (:class:`StreamEncoder`),
rendered exactly as the official ``anthropic`` SDK parses them, including its
``messages.stream`` accumulator. Anthropic's own answers are read back by
:func:`parse_result` and :class:`AnthropicStreamDecoder`. Streams number content blocks across
text and tool use, while the canonical stream numbers tool calls alone: the encoder and the
decoder keep that bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from engine.errors import RouterError, UpstreamError
from engine.messages import (
    ChatResult,
    Event,
    Finish,
    StopReason,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    new_text_delta,
)
from engine.wire.sse import SSEDecoder

from .errors import describe_error, error_message, render_error
from .request import render_thinking, tool_arguments, tool_input

__all__ = ["AnthropicStreamDecoder", "StreamEncoder", "parse_result", "render_result"]

# Anthropic's stop reasons as canonical ones, and back.
_STOP_REASONS: dict[str | None, StopReason] = {
    None: "stop",
    "end_turn": "stop",
    "pause_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_RENDERED_STOP_REASONS = {
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}  # and "stop": "end_turn", or "stop_sequence" when one matched


# ---- results ---------------------------------------------------------------------------------


def render_result(result: ChatResult, *, id: str, model: str) -> bytes:
    """The Messages API response body for ``result``.

    Like the real API, an answer with no text and no tool call has ``content: []``.
    """
    content: list[dict[str, Any]] = []
    for part in result.content:
        if isinstance(part, TextPart):
            if part.text:
                content.append({"type": "text", "text": part.text})
        elif isinstance(part, ThinkingPart):
            content.append(render_thinking(part))
        else:
            content.append(
                {
                    "type": "tool_use",
                    "id": part.id,
                    "name": part.name,
                    "input": tool_input(part.arguments) or {},
                }
            )
    return orjson.dumps(
        {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": _render_stop_reason(result.stop_reason, result.stop_sequence),
            "stop_sequence": result.stop_sequence,
            "usage": _render_usage(result.usage),
        }
    )


def parse_result(body: bytes) -> ChatResult:
    """A complete Messages API response; ``UpstreamError`` if it cannot be decoded."""
    try:
        data = orjson.loads(body)
        if isinstance(data, dict) and data.get("type") == "error":
            raise UpstreamError(f"upstream sent an error: {error_message(200, body)}")
        content: list[TextPart | ToolCall | ThinkingPart] = []
        for block in data["content"]:
            kind = block["type"]
            if kind == "text":
                text = block["text"]
                if not isinstance(text, str):
                    raise TypeError("text block without text")
                if content and isinstance(content[-1], TextPart):
                    content[-1] = TextPart(content[-1].text + text)
                else:
                    content.append(TextPart(text))
            elif kind == "tool_use":
                content.append(
                    ToolCall(
                        id=str(block["id"]),
                        name=str(block["name"]),
                        arguments=tool_arguments(block.get("input")),
                    )
                )
            elif kind == "thinking":
                content.append(ThinkingPart(str(block["thinking"]),
                                            str(block.get("signature") or "")))
            elif kind == "redacted_thinking":
                content.append(ThinkingPart(str(block["data"]), redacted=True))
            # server-tool blocks carry nothing canonical
        stop_reason = data.get("stop_reason")
        return ChatResult(
            content=tuple(content),
            stop_reason=_STOP_REASONS.get(stop_reason, "stop"),
            stop_sequence=data.get("stop_sequence"),
            usage=_parse_usage(data.get("usage") or {}),
            upstream_model=data.get("model"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise UpstreamError(f"upstream sent an invalid message: {exc!r}") from exc


# ---- streams ---------------------------------------------------------------------------------

_TEXT_START = (
    b"event: content_block_start\ndata: "
    b'{"type":"content_block_start","index":%d,"content_block":{"type":"text","text":""}}\n\n'
)
_TEXT_DELTA = (
    b"event: content_block_delta\ndata: "
    b'{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":%b}}\n\n'
)
_JSON_DELTA = (
    b"event: content_block_delta\ndata: {"
    b'"type":"content_block_delta","index":%d,"delta":{"type":"input_json_delta","partial_json":%b}}'
    b"\n\n"
)
_TEXT_DELTA_HEAD = _TEXT_DELTA[: _TEXT_DELTA.index(b"%b")]  # and the text, and b"}}\n\n"
_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'

_NONE, _TEXT, _TOOL, _THINKING, _SIGNED = 0, 1, 2, 3, 4


def _sse(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (name.encode(), orjson.dumps(payload))


class StreamEncoder:
    """Canonical stream events as the Messages API's SSE events, in order.

    Anthropic numbers content blocks (text and tool use alike) and opens and closes each one;
    the canonical stream numbers only tool calls, so the encoder keeps the block bookkeeping.
    Events after the stream has finished or failed encode to nothing.
    """

    __slots__ = ("_block", "_done", "_id", "_input_tokens", "_model", "_open", "_text_head",
                 "_tools")

    def __init__(self, *, id: str, model: str, input_tokens: int) -> None:
        self._id = id
        self._model = model
        self._input_tokens = input_tokens  # an estimate; the real count arrives in Finish
        self._block = -1  # index of the latest content block
        self._open = _NONE
        self._tools: dict[int, int] = {}  # canonical tool call index -> content block index
        self._done = False
        self._text_head = b""  # the open text block's delta event up to its text

    def start(self) -> bytes:
        """The ``message_start`` event that opens the stream."""
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _render_usage(Usage(input_tokens=self._input_tokens)),
        }
        return _sse("message_start", {"type": "message_start", "message": message})

    def ping(self) -> bytes:
        """A keep-alive event the SDK skips, for slow upstreams."""
        return _PING

    def encode(self, event: Event) -> bytes:
        """The SSE bytes for one canonical event (possibly several SSE events, or none)."""
        if self._done:
            return b""
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            head = b""
            if self._open != _TEXT:
                head = self._close() + self._open_block(_TEXT)
            return head + _TEXT_DELTA % (self._block, orjson.dumps(event.text))
        if isinstance(event, ThinkingDelta):
            return self._thinking(event)
        if isinstance(event, ToolCallDelta):
            block = self._tools.get(event.index)
            if block is None or not event.arguments:
                return b""  # a fragment of a call that never started has nowhere to go
            return _JSON_DELTA % (block, orjson.dumps(event.arguments))
        if isinstance(event, ToolCallStart):
            head = self._close() + self._open_block(_TOOL)
            self._tools[event.index] = self._block
            tool = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
            return head + _sse(
                "content_block_start",
                {"type": "content_block_start", "index": self._block, "content_block": tool},
            )
        if isinstance(event, Finish):
            return self._finish(event)
        raise TypeError(f"not a stream event: {event!r}")

    def encode_many(self, events: Iterable[Event]) -> bytes:
        """Several events in one buffer, for one socket write: the bytes of :meth:`encode`
        for each, joined. A text delta in the open text block (almost every event of a
        stream) is its block's delta head, its text and a fixed end, written straight into
        the batch."""
        pieces: list[bytes] = []
        add, dumps = pieces.append, orjson.dumps
        for event in events:
            if (type(event) is TextDelta and self._open == _TEXT and event.text
                    and not self._done):
                add(self._text_head)
                add(dumps(event.text))
                add(b"}}\n\n")
            else:
                add(self.encode(event))
        return b"".join(pieces)

    def error(self, err: RouterError) -> bytes:
        """A terminal ``error`` event: without ``message_stop`` the stream never looks complete."""
        self._done = True
        return b"event: error\ndata: %b\n\n" % render_error(err)

    def _thinking(self, event: ThinkingDelta) -> bytes:
        """A thinking block opened (once, unless the last one was signed), its deltas, and
        its signature; a redacted block whole."""
        if event.redacted:
            head = self._close() + self._open_block(_NONE)
            block = {"type": "redacted_thinking", "data": event.thinking}
            return head + _sse("content_block_start", {
                "type": "content_block_start", "index": self._block, "content_block": block,
            }) + _BLOCK_STOP % self._block
        out = b""
        if self._open != _THINKING:
            out = self._close() + self._open_block(_THINKING)
            block = {"type": "thinking", "thinking": "", "signature": ""}
            out += _sse("content_block_start", {
                "type": "content_block_start", "index": self._block, "content_block": block,
            })
        for kind, value in (("thinking", event.thinking), ("signature", event.signature)):
            if value:
                delta = {"type": f"{kind}_delta", kind: value}
                out += _sse("content_block_delta", {
                    "type": "content_block_delta", "index": self._block, "delta": delta,
                })
        if event.signature:
            self._open = _SIGNED  # closed by whatever comes next, even more thinking
        return out

    def _open_block(self, kind: int) -> bytes:
        self._block += 1
        self._open = kind
        if kind != _TEXT:
            return b""
        self._text_head = _TEXT_DELTA_HEAD % self._block
        return _TEXT_START % self._block

    def _close(self) -> bytes:
        if self._open == _NONE:
            return b""
        self._open = _NONE
        return _BLOCK_STOP % self._block

    def _finish(self, event: Finish) -> bytes:
        self._done = True
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": _render_stop_reason(event.stop_reason, event.stop_sequence),
                "stop_sequence": event.stop_sequence,
            },
            "usage": _render_usage(event.usage),
        }
        return self._close() + _sse("message_delta", delta) + _MESSAGE_STOP


class AnthropicStreamDecoder:
    """Anthropic's SSE stream as canonical events (see ``StreamDecoder``)."""

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
                        events.append(new_text_delta(delta["text"]))
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
                message = describe_error(data.get("error")) or "unknown error"
                raise UpstreamError(f"upstream stream failed: {message}")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"upstream sent an invalid stream event: {exc!r}") from exc

    def _take_usage(self, usage: dict[str, Any]) -> None:
        # Counts are cumulative: a later event's value replaces an earlier one when present.
        self._usage.update((key, value) for key, value in usage.items() if value is not None)

    def _finish(self) -> Finish:
        return Finish(
            stop_reason=_STOP_REASONS.get(self._stop_reason, "stop"),
            stop_sequence=self._stop_sequence,
            usage=_parse_usage(self._usage),
            upstream_model=self._model,
        )


# ---- what results and streams share ----------------------------------------------------------


def _render_stop_reason(reason: StopReason, stop_sequence: str | None) -> str:
    if reason == "stop":
        return "stop_sequence" if stop_sequence is not None else "end_turn"
    return _RENDERED_STOP_REASONS[reason]


def _render_usage(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }


def _parse_usage(usage: dict[str, Any]) -> Usage:
    return Usage(
        input_tokens=usage.get("input_tokens") or 0,
        output_tokens=usage.get("output_tokens") or 0,
        cache_read_tokens=usage.get("cache_read_input_tokens") or 0,
        cache_write_tokens=usage.get("cache_creation_input_tokens") or 0,
    )
