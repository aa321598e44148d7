"""The Anthropic Messages API as an upstream: canonical requests out, canonical results back.

Anthropic differs from the canonical shape in ways this codec hides from the engine: roles must
alternate, ``max_tokens`` is required, ``temperature`` stops at 1, there is no JSON mode (it
becomes a system-prompt instruction) and no ``n`` (the caller makes ``n`` calls). It has no
penalties, ``logit_bias``, ``logprobs`` or ``reasoning_effort`` (``supports`` says so, and
routing sends requests with them elsewhere). Streams number content blocks across text and
tool use, while the canonical stream numbers tool calls alone.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from engine.errors import RequestInvalid, UpstreamError, echo
from engine.messages import (
    ChatRequest,
    ChatResult,
    Event,
    Finish,
    ImagePart,
    Message,
    StopReason,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
)
from engine.wire.base import UpstreamCall, refuse_unsupported
from engine.wire.sse import SSEDecoder

__all__ = ["AnthropicProvider", "AnthropicStreamDecoder"]

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; this fits every current model.
JSON_INSTRUCTION = (
    "Answer with only one valid JSON object: no prose, no code fences, nothing before or after it."
)

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


class AnthropicProvider:
    """The :class:`~engine.providers.base.Provider` for ``POST /v1/messages``."""

    __slots__ = ()
    supports: ClassVar[frozenset[str]] = frozenset({"top_k"})
    native_n: ClassVar[bool] = False

    def build_call(
        self,
        request: ChatRequest,
        *,
        model: str,
        base_url: str,
        api_key: str | None,
        stream: bool,
    ) -> UpstreamCall:
        """The HTTP call for ``request`` sent to Anthropic model id ``model``.

        Raises:
            RequestInvalid: the request asks for what Anthropic cannot do (``n > 1``, a feature
                outside ``supports``), or an assistant tool call's arguments are not a JSON
                object.
        """
        refuse_unsupported(request, self.supports, "Anthropic")
        if request.n > 1:
            raise RequestInvalid("n > 1 is not supported by Anthropic models", param="n")
        payload: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": _render_messages(request.messages),
        }
        system = _render_system(request)
        if system:
            payload["system"] = system
        if request.tools:
            payload["tools"] = [
                {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "input_schema": t.parameters
                    if t.parameters is not None
                    else {"type": "object", "properties": {}},
                }
                for t in request.tools
            ]
            tool_choice = _render_tool_choice(request)
            if tool_choice is not None:
                payload["tool_choice"] = tool_choice
        if request.temperature is not None:
            payload["temperature"] = min(request.temperature, 1.0)
        if request.top_p is not None:
            payload["top_p"] = request.top_p
        if request.top_k is not None:
            payload["top_k"] = request.top_k
        if request.stop:
            payload["stop_sequences"] = list(request.stop)
        if request.user:
            payload["metadata"] = {"user_id": request.user}
        if stream:
            payload["stream"] = True
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if api_key is not None:
            headers["x-api-key"] = api_key
        return UpstreamCall(
            url=f"{base_url.rstrip('/')}/v1/messages", headers=headers, body=orjson.dumps(payload)
        )

    def parse_result(self, body: bytes) -> ChatResult:
        """A complete Messages API response; ``UpstreamError`` if it cannot be decoded."""
        try:
            data = orjson.loads(body)
            if isinstance(data, dict) and data.get("type") == "error":
                raise UpstreamError(f"upstream sent an error: {self.error_message(200, body)}")
            content: list[TextPart | ToolCall] = []
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
                            arguments=orjson.dumps(block.get("input") or {}).decode(),
                        )
                    )
                # thinking, redacted_thinking and server-tool blocks carry nothing canonical
            stop_reason = data.get("stop_reason")
            usage = data.get("usage") or {}
            return ChatResult(
                content=tuple(content),
                stop_reason=_STOP_REASONS.get(stop_reason, "stop"),
                stop_sequence=data.get("stop_sequence"),
                usage=Usage(
                    input_tokens=usage.get("input_tokens") or 0,
                    output_tokens=usage.get("output_tokens") or 0,
                    cache_read_tokens=usage.get("cache_read_input_tokens") or 0,
                    cache_write_tokens=usage.get("cache_creation_input_tokens") or 0,
                ),
                upstream_model=data.get("model"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"upstream sent an invalid message: {exc!r}") from exc

    def stream_decoder(self) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder()

    def error_message(self, status: int, body: bytes) -> str:
        """Anthropic's ``error.type: error.message``, else a generic line naming the status
        (raw: the transport scrubs and shortens it)."""
        try:
            error = orjson.loads(body)["error"]
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
            error = None
        return _describe(error) or f"upstream answered HTTP {status}"


class AnthropicStreamDecoder:
    """Anthropic's SSE stream as canonical events (see ``StreamDecoder``)."""

    __slots__ = (
        "_cache_read",
        "_cache_write",
        "_done",
        "_input_tokens",
        "_model",
        "_output_tokens",
        "_sse",
        "_stop_reason",
        "_stop_sequence",
        "_tools",
    )

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._tools: dict[int, int] = {}  # content block index -> canonical tool call index
        self._input_tokens = 0
        self._output_tokens = 0
        self._cache_read = 0
        self._cache_write = 0
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
                # thinking, signature and citation deltas carry nothing canonical
            elif kind == "content_block_start":
                block = data["content_block"]
                if block["type"] == "text":
                    if block.get("text"):
                        events.append(TextDelta(block["text"]))
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
                message = _describe(data.get("error")) or "unknown error"
                raise UpstreamError(f"upstream stream failed: {message}")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"upstream sent an invalid stream event: {exc!r}") from exc

    def _take_usage(self, usage: dict[str, Any]) -> None:
        # Counts are cumulative: a later event's value replaces an earlier one when present.
        if usage.get("input_tokens") is not None:
            self._input_tokens = usage["input_tokens"]
        if usage.get("output_tokens") is not None:
            self._output_tokens = usage["output_tokens"]
        if usage.get("cache_read_input_tokens") is not None:
            self._cache_read = usage["cache_read_input_tokens"]
        if usage.get("cache_creation_input_tokens") is not None:
            self._cache_write = usage["cache_creation_input_tokens"]

    def _finish(self) -> Finish:
        return Finish(
            stop_reason=_STOP_REASONS.get(self._stop_reason, "stop"),
            stop_sequence=self._stop_sequence,
            usage=Usage(
                input_tokens=self._input_tokens,
                output_tokens=self._output_tokens,
                cache_read_tokens=self._cache_read,
                cache_write_tokens=self._cache_write,
            ),
            upstream_model=self._model,
        )


def _describe(error: Any) -> str | None:
    """``type: message`` of an Anthropic error object (either part alone if the other is
    missing), or ``None`` if it has neither."""
    if not isinstance(error, dict):
        return None
    parts = [error.get("type"), error.get("message")]
    text = ": ".join(p for p in parts if isinstance(p, str) and p.strip())
    return text or None


# ---- request translation ---------------------------------------------------------------------


def _render_system(request: ChatRequest) -> str | None:
    if not request.json_mode:
        return request.system
    instruction = JSON_INSTRUCTION
    schema = request.json_schema
    if isinstance(schema, dict) and isinstance(schema.get("schema"), dict):
        schema = schema["schema"]  # OpenAI's {"name", "schema", "strict"} wrapper
    if schema is not None:
        instruction += " It must conform to this JSON Schema: " + orjson.dumps(schema).decode()
    return f"{request.system}\n\n{instruction}" if request.system else instruction


def _render_tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        rendered: dict[str, Any] | None = (
            {"type": "auto"} if request.parallel_tool_calls is False else None
        )
    elif choice.mode == "none":
        return {"type": "none"}  # takes no disable_parallel_tool_use
    elif choice.mode == "tool":
        rendered = {"type": "tool", "name": choice.name}
    else:
        rendered = {"type": "any" if choice.mode == "required" else "auto"}
    if rendered is not None and request.parallel_tool_calls is False:
        rendered["disable_parallel_tool_use"] = True
    return rendered


def _render_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Anthropic's ``messages``: same-role runs merged, since roles must alternate."""
    out: list[dict[str, Any]] = []
    last_role = None
    for i, message in enumerate(messages):
        blocks = [b for part in message.parts if (b := _render_part(part, i)) is not None]
        if not blocks:
            continue  # Anthropic rejects empty content
        if message.role == last_role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": message.role, "content": blocks})
            last_role = message.role
    for turn in out:
        content = turn["content"]
        if turn["role"] == "user" and len(content) > 1:
            # Anthropic wants tool results ahead of any other content in their user turn.
            content.sort(key=lambda b: b["type"] != "tool_result")
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return out


def _render_part(part: object, index: int) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ToolCall):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": _tool_input(part)}
    if isinstance(part, ToolResult):
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.tool_call_id}
        if part.content:
            block["content"] = part.content
        if part.is_error:
            block["is_error"] = True
        return block
    if isinstance(part, ImagePart):
        return {"type": "image", "source": _image_source(part, index)}
    raise TypeError(f"not a message part: {part!r}")


def _tool_input(call: ToolCall) -> Any:
    if not call.arguments.strip():
        return {}
    try:
        value = orjson.loads(call.arguments)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise RequestInvalid(
            f"the arguments of tool call {echo(call.id)} ({echo(call.name, raw=True)}) are not "
            "a JSON object",
            param="messages",
        )
    return value


def _image_source(image: ImagePart, index: int) -> dict[str, str]:
    if image.data is not None:
        if not image.media_type:
            raise RequestInvalid(
                "an inline image needs its media type", param=f"messages.{index}.content"
            )
        return {"type": "base64", "media_type": image.media_type, "data": image.data}
    url = image.url or ""
    if url.startswith("data:"):
        # OpenAI clients inline images as data URLs; Anthropic takes only http(s) URLs.
        header, _, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if encoding != "base64" or not media_type or not data:
            raise RequestInvalid(
                "an image data URL must be base64-encoded", param=f"messages.{index}.content"
            )
        return {"type": "base64", "media_type": media_type, "data": data}
    if not url:
        raise RequestInvalid("an image needs a URL or data", param=f"messages.{index}.content")
    return {"type": "url", "url": url}
