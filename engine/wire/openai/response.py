"""The inbound OpenAI chat-completions protocol: what ``POST /v1/chat/completions`` speaks.

Sans-IO. Requests are parsed by ``engine.wire.openai.request`` (re-exported here as
:func:`parse_request`).

Responses are rendered byte-exact in OpenAI's shapes, so the official SDKs parse them; stream
chunks are assembled from a precomputed prefix because they are written once per token.
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import RouterError
from engine.messages import (
    ChatResult,
    Event,
    Finish,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)

from .request import parse_request

__all__ = ["StreamEncoder", "parse_request", "render_error", "render_result"]


# ---- responses -----------------------------------------------------------------------------


def render_result(result: ChatResult, *, id: str, model: str, created: int) -> bytes:
    """The ``chat.completion`` JSON for ``result``: one choice per canonical choice."""
    return orjson.dumps(
        {
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [_choice(choice, i) for i, choice in enumerate(result.choices)],
            "usage": _usage(result.usage),
            "system_fingerprint": None,
        }
    )


def _choice(result: ChatResult, index: int) -> dict[str, Any]:
    calls = result.tool_calls
    has_text = any(type(p) is TextPart for p in result.content)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.text if has_text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [_tool_call(c) for c in calls]
    return {
        "index": index,
        "message": message,
        "logprobs": _logprobs(result.logprobs),
        "finish_reason": result.stop_reason,
    }


def _logprobs(content: tuple[Any, ...] | None) -> dict[str, Any] | None:
    return None if content is None else {"content": list(content), "refusal": None}


def render_error(err: RouterError) -> bytes:
    """The OpenAI error object for ``err``."""
    return orjson.dumps({"error": _error(err)})


class StreamEncoder:
    """Renders canonical stream events as ``chat.completion.chunk`` SSE events.

    Every chunk of one stream shares its id, created time and model, so that prefix is
    serialized once and each event costs one small ``orjson.dumps`` and a join.
    """

    __slots__ = ("_choice", "_done", "_head", "_include_usage")

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
            return self._chunk(delta, logprobs=orjson.dumps(_logprobs(event.logprobs)))
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
        if type(event) is not Finish:
            raise TypeError(f"not a stream event: {event!r}")
        self._done = True
        out = self._chunk(b"{}", orjson.dumps(event.stop_reason))
        if self._include_usage:
            out += self._head + b'[],"usage":' + orjson.dumps(_usage(event.usage)) + b"}\n\n"
        return out + b"data: [DONE]\n\n"

    def encode_many(self, events: list[Event] | tuple[Event, ...]) -> bytes:
        """Several events in one buffer, for one socket write."""
        return b"".join([self.encode(e) for e in events])

    def error(self, err: RouterError) -> bytes:
        """A terminal error event. No ``[DONE]`` follows, so the stream never looks complete."""
        self._done = True
        return b"data: " + orjson.dumps({"error": _error(err)}) + b"\n\n"

    def _chunk(
        self, delta: bytes, finish_reason: bytes = b"null", *, logprobs: bytes = b"null"
    ) -> bytes:
        return b"".join(
            (self._choice, delta, b',"logprobs":', logprobs, b',"finish_reason":', finish_reason,
             b"}]}\n\n")
        )


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _usage(usage: Usage) -> dict[str, Any]:
    # OpenAI counts cached prompt tokens inside prompt_tokens; canonical input_tokens exclude them.
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    rendered: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
    }
    if usage.cache_read_tokens:
        rendered["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_tokens}
    return rendered


def _error_type(status: int) -> str:
    if status >= 500:
        return "server_error"  # what OpenAI itself sends for 5xx
    return {
        401: "authentication_error",
        403: "permission_error",
        429: "rate_limit_error",
    }.get(status, "invalid_request_error")


def _error(err: RouterError) -> dict[str, Any]:
    return {
        "message": err.message,
        "type": _error_type(err.status),
        "param": err.param,
        "code": err.code,
    }
