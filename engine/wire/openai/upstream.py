"""The OpenAI chat-completions wire format, as spoken by OpenAI, vLLM, Ollama's ``/v1`` and
every other OpenAI-compatible server.

Sans-IO: it turns canonical requests into bytes and bytes into canonical results and events;
``engine.runtime.upstream`` moves the bytes. Servers differ in small ways (a missing ``[DONE]``, a
missing tool-call ``index``, usage on every chunk); the decoder accepts those variations
rather than failing a stream that is otherwise fine.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from engine.errors import UpstreamError
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

__all__ = ["OpenAIProvider", "OpenAIStreamDecoder"]

_STOP_REASONS: dict[Any, StopReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
_EMPTY_PARAMETERS = {"type": "object", "properties": {}}


class OpenAIProvider:
    """The :class:`~engine.providers.base.Provider` for OpenAI-compatible servers.

    ``top_k`` is not part of the chat-completions API (OpenAI rejects it, others ignore it),
    so a request with it is routed elsewhere.
    """

    __slots__ = ()
    supports: ClassVar[frozenset[str]] = frozenset(
        {"frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "reasoning_effort",
         "verbosity"}
    )
    native_n: ClassVar[bool] = True

    def build_call(
        self,
        request: ChatRequest,
        *,
        model: str,
        base_url: str,
        api_key: str | None,
        stream: bool,
    ) -> UpstreamCall:
        """The ``POST {base_url}/chat/completions`` for ``request``.

        Raises:
            RequestInvalid: the request uses a feature outside ``supports``.
        """
        refuse_unsupported(request, self.supports, "OpenAI-compatible")
        headers = {"content-type": "application/json"}
        if api_key is not None:
            headers["authorization"] = f"Bearer {api_key}"
        return UpstreamCall(
            url=f"{base_url.rstrip('/')}/chat/completions",
            headers=headers,
            body=orjson.dumps(_request_body(request, model=model, stream=stream)),
        )

    def parse_result(self, body: bytes) -> ChatResult:
        """Decode a ``chat.completion`` object: every choice, in ``index`` order.

        Raises:
            UpstreamError: the body is not a chat completion.
        """
        try:
            data = orjson.loads(body)
            if isinstance(data, dict) and "choices" not in data and (
                data.get("error") is not None or data.get("object") == "error"
            ):
                raise UpstreamError(f"upstream sent an error: {self.error_message(200, body)}")
            choices = sorted(data["choices"], key=lambda c: c.get("index") or 0)
            results = [_choice_result(choice) for choice in choices]
            first = results[0]  # IndexError for no choice at all
            usage = _usage(data.get("usage"))
            model = data.get("model")
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            raise UpstreamError(f"upstream sent an invalid chat completion: {detail}") from None
        return ChatResult(
            content=first.content,
            stop_reason=first.stop_reason,
            usage=usage,
            upstream_model=model if isinstance(model, str) else None,
            logprobs=first.logprobs,
            extra_choices=tuple(results[1:]),
        )

    def stream_decoder(self) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()

    def error_message(self, status: int, body: bytes) -> str:
        """The upstream's ``error.type: error.message`` when it sent one, else a generic text
        (raw: the transport scrubs and shortens it)."""
        try:
            data = orjson.loads(body)
        except ValueError:
            data = None
        return _describe(data) or f"upstream returned HTTP {status}"


class OpenAIStreamDecoder:
    """Decodes a ``chat.completion.chunk`` SSE stream into canonical events.

    The finish is held back until ``data: [DONE]``: with ``include_usage`` the usage arrives in
    a chunk *after* the one with ``finish_reason``, and the single :class:`Finish` must carry it.
    """

    __slots__ = ("_done", "_finish_reason", "_last_key", "_model", "_sse", "_tools", "_usage")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._finish_reason: str | None = None
        self._usage = Usage()
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
        return Finish(
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
        if chunk.get("error") is not None or chunk.get("object") == "error":
            raise UpstreamError(_stream_error_message(chunk))
        if self._model is None:
            model = chunk.get("model")
            if isinstance(model, str):
                self._model = model
        usage = chunk.get("usage")
        if usage:
            self._usage = _usage(usage)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # the canonical stream has one choice
            delta = choice.get("delta")
            if delta:
                text = delta.get("content") or delta.get("refusal")
                logprobs = _logprobs_of(choice.get("logprobs"))
                if text or logprobs:
                    events.append(TextDelta(text or "", logprobs))
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


# ---- request translation -------------------------------------------------------------------


def _request_body(request: ChatRequest, *, model: str, stream: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        if message.role == "user":
            _append_user(message, messages)
        else:
            messages.append(_assistant(message))
    body: dict[str, Any] = {"model": model, "messages": messages}
    if request.tools:
        body["tools"] = [_tool(t.name, t.description, t.parameters) for t in request.tools]
        # OpenAI rejects tool_choice and parallel_tool_calls without tools.
        choice = request.tool_choice
        if choice is not None:
            if choice.mode == "tool":
                body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
            else:
                body["tool_choice"] = choice.mode
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.json_mode:
        if request.json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": request.json_schema}
        else:
            body["response_format"] = {"type": "json_object"}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.n != 1:
        body["n"] = request.n
    if request.user is not None:
        body["user"] = request.user
    if request.frequency_penalty is not None:
        body["frequency_penalty"] = request.frequency_penalty
    if request.presence_penalty is not None:
        body["presence_penalty"] = request.presence_penalty
    if request.logit_bias:
        body["logit_bias"] = dict(request.logit_bias)
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs is not None:
            body["top_logprobs"] = request.top_logprobs
    if request.reasoning_effort is not None:
        body["reasoning_effort"] = request.reasoning_effort
    if request.verbosity is not None:
        body["verbosity"] = request.verbosity
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # the router needs usage for costs
    return body


def _append_user(message: Message, out: list[dict[str, Any]]) -> None:
    # OpenAI carries each tool result as its own "tool" message, ahead of any user content.
    rest: list[TextPart | ImagePart] = []
    had_results = False
    for part in message.parts:
        if isinstance(part, ToolResult):
            out.append({"role": "tool", "tool_call_id": part.tool_call_id, "content": part.content})
            had_results = True
        elif isinstance(part, TextPart | ImagePart):
            rest.append(part)
    if rest or not had_results:
        out.append({"role": "user", "content": _content(rest)})


def _content(parts: list[TextPart | ImagePart]) -> str | list[dict[str, Any]]:
    # Plain strings are what every OpenAI-compatible server accepts; lists only when needed.
    texts = [p.text for p in parts if isinstance(p, TextPart)]
    if len(texts) == len(parts):
        return "\n".join(texts)
    rendered: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            rendered.append({"type": "text", "text": part.text})
        else:
            url = part.url or f"data:{part.media_type};base64,{part.data}"
            rendered.append({"type": "image_url", "image_url": {"url": url}})
    return rendered


def _assistant(message: Message) -> dict[str, Any]:
    texts = [p.text for p in message.parts if isinstance(p, TextPart)]
    calls = [
        {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
        for p in message.parts
        if isinstance(p, ToolCall)
    ]
    rendered: dict[str, Any] = {
        "role": "assistant",
        "content": "\n".join(texts) if texts or not calls else None,
    }
    if calls:
        rendered["tool_calls"] = calls
    return rendered


def _tool(name: str, description: str, parameters: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description:
        function["description"] = description
    function["parameters"] = parameters if parameters is not None else _EMPTY_PARAMETERS
    return {"type": "function", "function": function}


# ---- response helpers ----


def _choice_result(choice: dict[str, Any]) -> ChatResult:
    """One ``choices[i]`` of a chat completion, without usage."""
    message = choice["message"]
    content: list[TextPart | ToolCall] = []
    text = _text_of(message.get("content")) or _text_of(message.get("refusal"))
    if text:
        content.append(TextPart(text))
    calls = [
        ToolCall(
            id=call.get("id") or f"call_{i}",
            name=call["function"]["name"],
            arguments=_arguments_text(call["function"].get("arguments")),
        )
        for i, call in enumerate(message.get("tool_calls") or ())
    ]
    content.extend(calls)
    return ChatResult(
        content=tuple(content),
        stop_reason=_stop_reason(choice.get("finish_reason"), bool(calls)),
        logprobs=_logprobs_of(choice.get("logprobs")),
    )


def _logprobs_of(logprobs: Any) -> tuple[Any, ...] | None:
    """The ``content`` entries of a choice's (or a chunk's) ``logprobs`` object, if any."""
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    return tuple(content) if isinstance(content, list) else None


def _stop_reason(finish_reason: Any, has_tool_calls: bool) -> StopReason:
    reason = _STOP_REASONS.get(finish_reason, "stop")
    # Some servers (older vLLM, some Ollama models) say "stop" after calling tools; callers
    # decide whether to run tools from the stop reason, so trust the calls.
    if reason == "stop" and has_tool_calls:
        return "tool_calls"
    return reason


def _usage(usage: Any) -> Usage:
    # OpenAI's prompt_tokens include the cached ones; the canonical input_tokens do not
    # (Anthropic's convention, which engine.core.stats prices by).
    if not isinstance(usage, dict):
        return Usage()
    details = usage.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") if isinstance(details, dict) else None) or 0
    prompt = usage.get("prompt_tokens") or 0
    return Usage(
        input_tokens=max(prompt - cached, 0),
        output_tokens=usage.get("completion_tokens") or 0,
        cache_read_tokens=cached,
    )


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


def _describe(data: Any) -> str | None:
    """``type: message`` of an OpenAI-style error payload (``{"error": {...}}``, ``{"error":
    "..."}`` or vLLM's ``{"object": "error", "message": ...}``), or ``None``."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, str):
        return error if error.strip() else None
    if not isinstance(error, dict):
        if data.get("object") != "error":
            return None
        error = data  # vLLM's ErrorResponse
    parts = [error.get("type"), error.get("message")]
    return ": ".join(p for p in parts if isinstance(p, str) and p.strip()) or None


def _stream_error_message(chunk: dict[str, Any]) -> str:
    return f"upstream stream failed: {_describe(chunk) or 'an error event without a message'}"
