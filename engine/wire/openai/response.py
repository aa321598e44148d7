"""The OpenAI chat-completions answer, both ways: written to clients, read from upstreams.

Sans-IO. Clients get a ``chat.completion`` (:func:`render_result`) or a stream of
``chat.completion.chunk`` SSE events (:class:`StreamEncoder`), byte-exact in OpenAI's shapes so
the official SDKs parse them; stream chunks are assembled from a precomputed prefix because
they are written once per token.

Upstreams (OpenAI, vLLM, Ollama's ``/v1`` and every other OpenAI-compatible server) are read
back by :func:`parse_result` and :class:`OpenAIStreamDecoder`. Servers differ in small ways (a
missing ``[DONE]``, a missing tool-call ``index``, usage on every chunk); the decoder accepts
those variations rather than failing a stream that is otherwise fine.
"""

from __future__ import annotations

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
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    new_chat_result,
    new_finish,
    new_text_delta,
    new_text_part,
    new_usage,
)
from engine.wire.json_slot import StringSlot
from engine.wire.sse import SSEDecoder

from .errors import describe_error, error_message, is_error, render_error
from .request import render_tool_call

__all__ = ["OpenAIStreamDecoder", "StreamEncoder", "parse_result", "render_result"]

# The canonical stop reasons are OpenAI's finish reasons, so rendering needs no map.
_STOP_REASONS: dict[Any, StopReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


#: Where a plain chunk's text and a tool call's arguments are (:meth:`OpenAIStreamDecoder._learn`),
#: and how many chunks a stream tries to learn from (each try costs about two chunks' parsing).
_TEXT_PATH = ("choices", 0, "delta", "content")
_ARGS_PATH = ("choices", 0, "delta", "tool_calls", 0, "function", "arguments")
_LEARNING = 4


# ---- results ---------------------------------------------------------------------------------


def render_result(result: ChatResult, *, id: str, model: str, created: int) -> bytes:
    """The ``chat.completion`` JSON for ``result``: one choice per canonical choice."""
    return orjson.dumps(
        {
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [_render_choice(choice, i) for i, choice in enumerate(result.choices)],
            "usage": _render_usage(result.usage),
            "system_fingerprint": None,
        }
    )


def _render_choice(result: ChatResult, index: int) -> dict[str, Any]:
    calls = result.tool_calls
    has_text = any(type(p) is TextPart for p in result.content)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.text if has_text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [render_tool_call(c) for c in calls]
    return {
        "index": index,
        "message": message,
        "logprobs": _render_logprobs(result.logprobs),
        "finish_reason": result.stop_reason,
    }


def parse_result(body: bytes) -> ChatResult:
    """Decode a ``chat.completion`` object: every choice, in ``index`` order.

    Raises:
        UpstreamError: the body is not a chat completion.
    """
    try:
        data = orjson.loads(body)
        if isinstance(data, dict) and "choices" not in data and is_error(data):
            raise UpstreamError(f"upstream sent an error: {error_message(200, body)}")
        choices = sorted(data["choices"], key=lambda c: c.get("index") or 0)
        parsed = [_parse_choice(choice) for choice in choices]
        content, stop_reason, logprobs = parsed[0]  # IndexError for no choice at all
        usage = _parse_usage(data.get("usage"))
        model = data.get("model")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
        raise UpstreamError(f"upstream sent an invalid chat completion: {detail}") from None
    return new_chat_result(
        content=content,
        stop_reason=stop_reason,
        usage=usage,
        upstream_model=model if isinstance(model, str) else None,
        logprobs=logprobs,
        extra_choices=tuple(ChatResult(content=content, stop_reason=stop_reason,
                                       logprobs=logprobs)
                            for content, stop_reason, logprobs in parsed[1:]),
    )


def _parse_choice(choice: dict[str, Any]
                  ) -> tuple[tuple[TextPart | ToolCall, ...], StopReason, tuple[Any, ...] | None]:
    """One ``choices[i]`` of a chat completion: its content, stop reason and logprobs (the
    first becomes the result itself, the others its ``extra_choices``: no result is built
    twice)."""
    message = choice["message"]
    content: list[TextPart | ToolCall] = []
    text = _text_of(message.get("content")) or _text_of(message.get("refusal"))
    if text:
        content.append(new_text_part(text))
    calls = [
        ToolCall(
            id=call.get("id") or f"call_{i}",
            name=call["function"]["name"],
            arguments=_arguments_text(call["function"].get("arguments")),
        )
        for i, call in enumerate(message.get("tool_calls") or ())
    ]
    content.extend(calls)
    return (tuple(content), _stop_reason(choice.get("finish_reason"), bool(calls)),
            _parse_logprobs(choice.get("logprobs")))


# ---- streams ---------------------------------------------------------------------------------


#: What follows a plain text delta's text in its chunk (no logprobs, not finished).
_TEXT_END = b'},"logprobs":null,"finish_reason":null}]}\n\n'


class StreamEncoder:
    """Renders canonical stream events as ``chat.completion.chunk`` SSE events.

    Every chunk of one stream shares its id, created time and model, so that prefix is
    serialized once and each event costs one small ``orjson.dumps`` and a join. A plain text
    delta (no logprobs), which is almost every event of a stream, is its prefix, its text and
    a fixed end: :meth:`encode_many` writes those three pieces straight into the batch.
    """

    __slots__ = ("_choice", "_content", "_done", "_head", "_include_usage")

    def __init__(self, *, id: str, model: str, created: int, include_usage: bool) -> None:
        self._head = b"".join(
            (
                b'data: {"id":',
                orjson.dumps(id),
                b',"object":"chat.completion.chunk","created":',
                orjson.dumps(created),
                b',"model":',
                orjson.dumps(model),
                b',"system_fingerprint":null,"choices":',
            )
        )
        self._choice = self._head + b'[{"index":0,"delta":'
        self._content = self._choice + b'{"content":'
        self._include_usage = include_usage
        self._done = False

    def start(self) -> bytes:
        """The first chunk, announcing the assistant role."""
        return self._chunk(b'{"role":"assistant","content":""}')

    def encode(self, event: Event) -> bytes:
        """The SSE bytes for ``event``; after a :class:`Finish`, the usage chunk and ``[DONE]``.

        Events after the stream ended (a finish or an error) render as nothing.
        """
        if self._done:
            return b""
        if type(event) is TextDelta:
            delta = b'{"content":' + orjson.dumps(event.text) + b"}"
            if event.logprobs is None:
                return self._chunk(delta)
            return self._chunk(delta, logprobs=orjson.dumps(_render_logprobs(event.logprobs)))
        if type(event) is ToolCallDelta:
            call: dict[str, Any] = {
                "index": event.index,
                "function": {"arguments": event.arguments},
            }
            return self._chunk(orjson.dumps({"tool_calls": [call]}))
        if type(event) is ToolCallStart:
            call = {
                "index": event.index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._chunk(orjson.dumps({"tool_calls": [call]}))
        if type(event) is ThinkingDelta:
            return b""  # chat completions have no place for Anthropic's signed thinking
        if type(event) is not Finish:
            raise TypeError(f"not a stream event: {event!r}")
        self._done = True
        out = self._chunk(b"{}", orjson.dumps(event.stop_reason))
        if self._include_usage:
            usage = orjson.dumps(_render_usage(event.usage))
            out += self._head + b'[],"usage":' + usage + b"}\n\n"
        return out + b"data: [DONE]\n\n"

    def encode_many(self, events: list[Event] | tuple[Event, ...]) -> bytes:
        """Several events in one buffer, for one socket write: the bytes of :meth:`encode`
        for each, joined."""
        pieces: list[bytes] = []
        add = pieces.append
        content, dumps = self._content, orjson.dumps
        for event in events:
            if type(event) is TextDelta and event.logprobs is None and not self._done:
                add(content)
                add(dumps(event.text))
                add(_TEXT_END)
            else:
                add(self.encode(event))
        return b"".join(pieces)

    def error(self, err: RouterError) -> bytes:
        """A terminal error event. No ``[DONE]`` follows, so the stream never looks complete."""
        self._done = True
        return b"data: " + render_error(err) + b"\n\n"

    def _chunk(
        self, delta: bytes, finish_reason: bytes = b"null", *, logprobs: bytes = b"null"
    ) -> bytes:
        return b"".join(
            (self._choice, delta, b',"logprobs":', logprobs, b',"finish_reason":', finish_reason,
             b"}]}\n\n")
        )


class OpenAIStreamDecoder:
    """Decodes a ``chat.completion.chunk`` SSE stream into canonical events.

    The finish is held back until ``data: [DONE]``: with ``include_usage`` the usage arrives in
    a chunk *after* the one with ``finish_reason``, and the single :class:`Finish` must carry it.

    Almost every chunk of a stream is the one before with another text (or tool-call argument
    fragment) in it. The shapes of the first plain text chunk and of the first plain argument
    chunk are learnt (:class:`~engine.wire.json_slot.StringSlot`), and a chunk of either
    shape is read by its string alone (see that module for why that is exact); any other
    chunk is parsed whole.
    """

    __slots__ = ("_args", "_args_index", "_args_key", "_done", "_finish_reason", "_last_key",
                 "_learning", "_model", "_sse", "_text", "_tools", "_usage")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._finish_reason: str | None = None
        self._usage = new_usage()
        self._model: str | None = None
        self._tools: dict[Any, int] = {}  # upstream index (or call id) -> canonical index
        self._last_key: Any = None
        self._done = False
        self._text: StringSlot | None = None  # a plain text chunk's shape
        self._args: StringSlot | None = None  # a plain argument chunk's shape, of one call:
        self._args_key: Any = None  # its upstream index
        self._args_index = 0  # and its canonical one
        self._learning = _LEARNING  # tries left at learning a shape

    def feed(self, data: bytes) -> list[Event]:
        """Events completed by ``data``; nothing once the stream has finished.

        Raises:
            UpstreamError: the upstream sent an error payload or undecodable data.
        """
        if self._done:
            return []
        events: list[Event] = []
        for _, payload in self._sse.feed(data):
            if self._text is not None:
                text = self._text.read(payload)
                if text is not None:
                    if text:
                        events.append(new_text_delta(text))
                    continue
            if self._args is not None:
                arguments = self._args.read(payload)
                if arguments is not None:
                    self._last_key = self._args_key
                    if arguments:
                        events.append(ToolCallDelta(self._args_index, arguments))
                    continue
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
        if self._learning:
            self._learn(payload, chunk)

    def _learn(self, payload: str, chunk: dict[str, Any]) -> None:
        """Learn ``payload``'s shape if it is a plain text or argument chunk: one choice,
        no logprobs, no finish, no usage, a delta of the text or of one call's arguments
        alone, the call already started (handled as a whole, such a chunk changes nothing
        but the events it adds, so a later one of the same shape is its string alone).

        Such a chunk parsed whole did not fit the shape learnt before (if any): it replaces
        it, a few times a stream at most (a new call's arguments, a new id).
        """
        choices = chunk.get("choices")
        if type(choices) is not list or len(choices) != 1 or chunk.get("usage"):
            return
        choice = choices[0]
        if (type(choice) is not dict or choice.get("index", 0) != 0
                or choice.get("logprobs") is not None or choice.get("finish_reason")):
            return
        delta = choice.get("delta")
        if type(delta) is not dict or len(delta) != 1:
            return
        if type(delta.get("content")) is str:
            self._learning -= 1
            self._text = StringSlot.learn(payload, chunk, _TEXT_PATH, '"content":')
            return
        calls = delta.get("tool_calls")
        if type(calls) is not list or len(calls) != 1:
            return
        call = calls[0]
        function = call.get("function") if type(call) is dict else None
        key = call.get("index") if type(call) is dict else None
        if (key is None or type(function) is not dict or "id" in call or "name" in function
                or type(function.get("arguments")) is not str):
            return  # a call's first chunk (an id, a name) is not the shape of the rest
        index = self._tools.get(key)  # the chunk was handled: a hashable key, started
        if index is not None:
            self._learning -= 1
            self._args = StringSlot.learn(payload, chunk, _ARGS_PATH, '"arguments":')
            self._args_key, self._args_index = key, index

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


# ---- what results and streams share ----------------------------------------------------------


def _stop_reason(finish_reason: Any, has_tool_calls: bool) -> StopReason:
    reason = _STOP_REASONS.get(finish_reason, "stop")
    # Some servers (older vLLM, some Ollama models) say "stop" after calling tools; callers
    # decide whether to run tools from the stop reason, so trust the calls.
    if reason == "stop" and has_tool_calls:
        return "tool_calls"
    return reason


# OpenAI's prompt_tokens include the cached ones; the canonical input_tokens do not
# (Anthropic's convention, which engine.core.stats prices by).


def _render_usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    rendered: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
    }
    if usage.cache_read_tokens:
        rendered["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_tokens}
    return rendered


def _parse_usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") if isinstance(details, dict) else None) or 0
    prompt = usage.get("prompt_tokens") or 0
    return new_usage(
        input_tokens=max(prompt - cached, 0),
        output_tokens=usage.get("completion_tokens") or 0,
        cache_read_tokens=cached,
    )


def _render_logprobs(content: tuple[Any, ...] | None) -> dict[str, Any] | None:
    return None if content is None else {"content": list(content), "refusal": None}


def _parse_logprobs(logprobs: Any) -> tuple[Any, ...] | None:
    """The ``content`` entries of a choice's (or a chunk's) ``logprobs`` object, if any."""
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    return tuple(content) if isinstance(content, list) else None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # a few servers answer with text parts
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return ""


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return ""
    return orjson.dumps(arguments).decode()  # some servers send the object itself
