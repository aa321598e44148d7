"""The Anthropic Messages protocol as the router speaks it to clients (``POST /v1/messages``).

Sans-IO: bytes in, canonical types out, and back. Requests are validated here, once, with
errors naming the field path the way Anthropic's own API does (``messages.0.content.1.type``);
the engine never sees the wire format. Responses and streams are rendered exactly as the
official ``anthropic`` SDK parses them, including its ``messages.stream`` accumulator.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import orjson

from engine.errors import RequestInvalid, RouterError, echo
from engine.messages import (
    ChatRequest,
    ChatResult,
    Event,
    Finish,
    ImagePart,
    Message,
    Part,
    StopReason,
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

__all__ = ["StreamEncoder", "error_type", "parse_request", "render_error", "render_result"]

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_BLOCK_ROLES = {  # the content blocks the router takes, and the turns they may appear in
    "text": ("user", "assistant"),
    "image": ("user",),
    "tool_result": ("user",),
    "tool_use": ("assistant",),
    "thinking": ("assistant",),
    "redacted_thinking": ("assistant",),
}
_TOOL_CHOICES: dict[Any, Literal["auto", "none", "required", "tool"]] = {
    "auto": "auto",
    "any": "required",
    "tool": "tool",
    "none": "none",
}
# Parameters that change the answer and that the router cannot honour: refused, never dropped.
# Extended thinking would need its signed thinking blocks relayed and sent back verbatim.
_UNSUPPORTED = {
    "mcp_servers": "MCP servers are not supported by this router",
    "container": "containers (code execution) are not supported by this router",
    "context_management": "context management is not supported by this router",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# ---- requests --------------------------------------------------------------------------------


def parse_request(body: bytes) -> ChatRequest:
    """A Messages API request body as a :class:`ChatRequest`.

    Fields that do not change the answer (``service_tier``, ...) are ignored; those that do
    and that the router cannot honour (extended ``thinking``, MCP servers, ...) are refused.
    ``model: "auto"`` leaves the choice to the router.

    Raises:
        RequestInvalid: the body is not a valid Messages request; ``param`` is the field path.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestInvalid(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestInvalid("the request body must be a JSON object")
    model = _string(data, "model", "model", required=True)
    max_tokens = _integer(data, "max_tokens", minimum=1, required=True)
    metadata = _optional(data, "metadata", dict, "an object") or {}
    tool_choice, parallel = _parse_tool_choice(data.get("tool_choice"))
    stop = _optional(data, "stop_sequences", list, "a list of strings") or []
    if not all(isinstance(s, str) for s in stop):
        raise _invalid("stop_sequences", "must be a list of strings")
    _check_thinking(data.get("thinking"))
    for name, problem in _UNSUPPORTED.items():
        if data.get(name) is not None:
            raise _invalid(name, problem)
    return ChatRequest(
        messages=_parse_messages(data.get("messages")),
        model=None if model == "auto" else model,
        system=_parse_system(data.get("system")),
        tools=_parse_tools(data.get("tools")),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        temperature=_number(data, "temperature", 0.0, 1.0),
        top_p=_number(data, "top_p", 0.0, 1.0),
        top_k=_integer(data, "top_k", minimum=0),
        max_tokens=max_tokens,
        stop=tuple(stop),
        user=_string(metadata, "user_id", "metadata.user_id"),
        stream=bool(_optional(data, "stream", bool, "a boolean")),
    )


def _check_thinking(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _invalid("thinking", "must be an object")
    if value.get("type") != "disabled":
        raise _invalid(
            "thinking",
            "extended thinking is not supported by this router (its thinking blocks cannot "
            "be relayed); omit it or send {\"type\": \"disabled\"}",
        )


def _invalid(param: str, problem: str) -> RequestInvalid:
    return RequestInvalid(f"{param}: {problem}", param=param)


def _optional(obj: dict[str, Any], key: str, kind: type, what: str, path: str = "") -> Any:
    value = obj.get(key)
    if value is not None and not isinstance(value, kind):
        raise _invalid(path or key, f"must be {what}")
    return value


def _string(obj: dict[str, Any], key: str, path: str, *, required: bool = False) -> Any:
    value = _optional(obj, key, str, "a string", path)
    if required and not value:
        raise _invalid(path, "field required" if value is None else "must not be empty")
    return value


def _integer(obj: dict[str, Any], key: str, *, minimum: int, required: bool = False) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise _invalid(key, "field required")
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(key, "must be an integer")
    if value < minimum:
        raise _invalid(key, f"must be at least {minimum}")
    return value


def _number(obj: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _invalid(key, "must be a number")
    if not low <= value <= high:
        raise _invalid(key, f"must be between {low:g} and {high:g}")
    return float(value)


def _parse_system(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    if not isinstance(value, list):
        raise _invalid("system", "must be a string or a list of text blocks")
    texts = []
    for i, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid(f"system.{i}", "must be a text block")
        texts.append(_string(block, "text", f"system.{i}.text", required=True))
    return "\n\n".join(texts) or None


def _parse_messages(value: Any) -> tuple[Message, ...]:
    if value is None:
        raise _invalid("messages", "field required")
    if not isinstance(value, list) or not value:
        raise _invalid("messages", "must be a non-empty list of messages")
    messages = []
    for i, item in enumerate(value):
        path = f"messages.{i}"
        if not isinstance(item, dict):
            raise _invalid(path, "must be an object")
        role = item.get("role")
        if role not in ("user", "assistant"):
            hint = " (put the system prompt in the top-level `system` field)"
            raise _invalid(
                f"{path}.role", "must be 'user' or 'assistant'" + hint * (role == "system")
            )
        content = item.get("content")
        if isinstance(content, str):
            parts: tuple[Part, ...] = (TextPart(content),) if content else ()
        elif isinstance(content, list):
            parts = tuple(
                part
                for j, block in enumerate(content)
                if (part := _parse_block(block, role, f"{path}.content.{j}")) is not None
            )
        else:
            raise _invalid(f"{path}.content", "must be a string or a list of content blocks")
        if not content and not (role == "assistant" and i == len(value) - 1):
            raise _invalid(f"{path}.content", "must not be empty")
        if parts:  # a turn of thinking blocks alone, or an empty final prefill, drops out
            messages.append(Message(role=role, parts=parts))
    if not messages:
        raise _invalid("messages", "must hold at least one message with content")
    return tuple(messages)


def _parse_block(block: Any, role: str, path: str) -> Part | None:
    if not isinstance(block, dict):
        raise _invalid(path, "must be a content block object")
    kind = block.get("type")
    allowed = _BLOCK_ROLES.get(kind) if isinstance(kind, str) else None
    if allowed is None:
        if not isinstance(kind, str):
            raise _invalid(f"{path}.type", "field required" if kind is None else "must be a string")
        raise _invalid(f"{path}.type", f"content blocks of type {echo(kind)} are not supported")
    if role not in allowed:
        raise _invalid(f"{path}.type", f"{kind} blocks are not allowed in {role} messages")
    if kind == "text":
        text = _string(block, "text", f"{path}.text")
        if text is None:
            raise _invalid(f"{path}.text", "field required")
        return TextPart(text) if text else None
    if kind == "tool_use":
        arguments = _optional(block, "input", dict, "an object", f"{path}.input")
        if arguments is None:
            raise _invalid(f"{path}.input", "field required")
        return ToolCall(
            id=_string(block, "id", f"{path}.id", required=True),
            name=_string(block, "name", f"{path}.name", required=True),
            arguments=orjson.dumps(arguments).decode(),
        )
    if kind == "tool_result":
        return ToolResult(
            tool_call_id=_string(block, "tool_use_id", f"{path}.tool_use_id", required=True),
            content=_tool_result_text(block.get("content"), f"{path}.content"),
            is_error=bool(_optional(block, "is_error", bool, "a boolean", f"{path}.is_error")),
        )
    if kind == "image":
        return _parse_image(block.get("source"), f"{path}.source")
    return None  # thinking: the upstream cannot verify another model's signed reasoning


def _tool_result_text(content: Any, path: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise _invalid(path, "must be a string or a list of text blocks")
    texts = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid(f"{path}.{i}", "only text blocks are supported in tool results")
        texts.append(_string(block, "text", f"{path}.{i}.text") or "")
    return "\n".join(texts)


def _parse_image(source: Any, path: str) -> ImagePart:
    if not isinstance(source, dict):
        raise _invalid(path, "field required" if source is None else "must be an object")
    kind = source.get("type")
    if kind == "base64":
        media_type = _string(source, "media_type", f"{path}.media_type", required=True)
        if media_type not in _IMAGE_TYPES:
            raise _invalid(
                f"{path}.media_type", f"must be one of {', '.join(sorted(_IMAGE_TYPES))}"
            )
        data = _string(source, "data", f"{path}.data", required=True)
        return ImagePart(media_type=media_type, data=data)
    if kind == "url":
        return ImagePart(url=_string(source, "url", f"{path}.url", required=True))
    raise _invalid(f"{path}.type", "must be 'base64' or 'url'")


def _parse_tools(value: Any) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _invalid("tools", "must be a list of tools")
    tools = []
    for i, tool in enumerate(value):
        path = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _invalid(path, "must be an object")
        if tool.get("type") not in (None, "custom"):
            raise _invalid(f"{path}.type", f"server tools ({echo(tool['type'])}) are not supported")
        schema = _optional(tool, "input_schema", dict, "an object", f"{path}.input_schema")
        if schema is None:
            raise _invalid(f"{path}.input_schema", "field required")
        tools.append(
            Tool(
                name=_string(tool, "name", f"{path}.name", required=True),
                description=_string(tool, "description", f"{path}.description") or "",
                parameters=schema,
            )
        )
    return tuple(tools)


def _parse_tool_choice(value: Any) -> tuple[ToolChoice | None, bool | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise _invalid("tool_choice", "must be an object")
    mode = _TOOL_CHOICES.get(value.get("type"))
    if mode is None:
        raise _invalid("tool_choice.type", "must be one of 'auto', 'any', 'tool', 'none'")
    name = None
    if mode == "tool":
        name = _string(value, "name", "tool_choice.name", required=True)
    disable = _optional(
        value,
        "disable_parallel_tool_use",
        bool,
        "a boolean",
        "tool_choice.disable_parallel_tool_use",
    )
    return ToolChoice(mode=mode, name=name), (False if disable else None)


# ---- responses -------------------------------------------------------------------------------


def _stop_reason(reason: StopReason, stop_sequence: str | None) -> str:
    if reason == "stop":
        return "stop_sequence" if stop_sequence is not None else "end_turn"
    return {"length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}[reason]


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }


def _tool_input(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def render_result(result: ChatResult, *, id: str, model: str) -> bytes:
    """The Messages API response body for ``result``.

    Like the real API, an answer with no text and no tool call has ``content: []``.
    """
    content: list[dict[str, Any]] = []
    for part in result.content:
        if isinstance(part, TextPart):
            if part.text:
                content.append({"type": "text", "text": part.text})
        else:
            content.append(
                {
                    "type": "tool_use",
                    "id": part.id,
                    "name": part.name,
                    "input": _tool_input(part.arguments),
                }
            )
    return orjson.dumps(
        {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": _stop_reason(result.stop_reason, result.stop_sequence),
            "stop_sequence": result.stop_sequence,
            "usage": _usage(result.usage),
        }
    )


def error_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status (per its errors documentation)."""
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def _error_payload(err: RouterError) -> bytes:
    message = err.message
    if err.param and not message.startswith(err.param):
        message = f"{err.param}: {message}"
    return orjson.dumps(
        {"type": "error", "error": {"type": error_type(err.status), "message": message}}
    )


def render_error(err: RouterError) -> bytes:
    """The error response body for ``err``; send it with status ``err.status``."""
    return _error_payload(err)


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
_BLOCK_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'

_NONE, _TEXT, _TOOL = 0, 1, 2


def _sse(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (name.encode(), orjson.dumps(payload))


class StreamEncoder:
    """Canonical stream events as the Messages API's SSE events, in order.

    Anthropic numbers content blocks (text and tool use alike) and opens and closes each one;
    the canonical stream numbers only tool calls, so the encoder keeps the block bookkeeping.
    Events after the stream has finished or failed encode to nothing.
    """

    __slots__ = ("_block", "_done", "_id", "_input_tokens", "_model", "_open", "_tools")

    def __init__(self, *, id: str, model: str, input_tokens: int) -> None:
        self._id = id
        self._model = model
        self._input_tokens = input_tokens  # an estimate; the real count arrives in Finish
        self._block = -1  # index of the latest content block
        self._open = _NONE
        self._tools: dict[int, int] = {}  # canonical tool call index -> content block index
        self._done = False

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
            "usage": {
                "input_tokens": self._input_tokens,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
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
        return b"".join([self.encode(event) for event in events])

    def error(self, err: RouterError) -> bytes:
        """A terminal ``error`` event: without ``message_stop`` the stream never looks complete."""
        self._done = True
        return b"event: error\ndata: %b\n\n" % _error_payload(err)

    def _open_block(self, kind: int) -> bytes:
        self._block += 1
        self._open = kind
        return _TEXT_START % self._block if kind == _TEXT else b""

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
                "stop_reason": _stop_reason(event.stop_reason, event.stop_sequence),
                "stop_sequence": event.stop_sequence,
            },
            "usage": _usage(event.usage),
        }
        return self._close() + _sse("message_delta", delta) + _MESSAGE_STOP
