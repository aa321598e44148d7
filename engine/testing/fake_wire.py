"""The fake upstream's answers in each provider's wire format: JSON bodies, SSE events and
error objects, OpenAI's and Anthropic's, from one protocol-neutral :class:`Reply`.

:mod:`engine.testing.fake_upstream` decides what to answer and when to misbehave; this
module only says how each provider would have written it.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = [
    "ANNOTATION",
    "CITATION",
    "BodyEncoder",
    "Event",
    "Protocol",
    "Reply",
    "ToolCall",
    "Usage",
    "anthropic_events",
    "anthropic_json",
    "choice_text",
    "error_body",
    "openai_events",
    "openai_json",
    "request_id_header",
    "stream_error_event",
]

Protocol = Literal["openai", "anthropic"]

# Tool-call arguments are streamed in fixed-size fragments that cut through JSON tokens, as
# the real providers do, so that consumers must accumulate before parsing.
_ARGUMENT_FRAGMENT = 8


@dataclass(frozen=True)
class ToolCall:
    """A function/tool call the fake answers with."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None  # default: a fresh "call_..." / "toolu_..." id


@dataclass(frozen=True)
class Usage:
    """Token counts to report instead of the word-count defaults."""

    input_tokens: int  # uncached input (Anthropic's input_tokens)
    output_tokens: int
    cache_read_tokens: int = 0  # OpenAI: in prompt_tokens and cached_tokens too
    cache_write_tokens: int = 0  # Anthropic only (OpenAI has no such count): in prompt_tokens


@dataclass
class Reply:
    """A protocol-neutral answer, rendered by the OpenAI or Anthropic encoder."""

    id: str
    model: str
    text: str | None
    tool_calls: tuple[ToolCall, ...]  # several: parallel tool calls
    tool_call_ids: tuple[str, ...]  # one each
    stop_reason: str
    usage: Usage
    choices: int = 1  # OpenAI's n
    stop_sequence: str | None = None  # Anthropic's, when one matched
    thinking: str | None = None  # Anthropic: a thinking block first, signed "sig-<text>"
    redacted_thinking: str | None = None  # Anthropic: then a redacted_thinking block
    top_logprobs: int | None = None  # None: no logprobs asked; else alternatives per token
    citations: bool = False  # the text cites a source (see ``CITATION`` and ``ANNOTATION``)


#: What a citing reply's text cites: Anthropic's first document (a char_location), OpenAI's a
#: web page (a url_citation annotation, as web search answers).
CITATION = {"type": "char_location", "cited_text": "the cited text", "document_index": 0,
            "document_title": "the document", "start_char_index": 0, "end_char_index": 14}
ANNOTATION = {"type": "url_citation", "url_citation": {
    "url": "https://example.com/", "title": "Example", "start_index": 0, "end_index": 1}}


@dataclass
class Event:
    """One SSE event; ``content`` marks the deltas that cut_after / error_event_after count."""

    data: bytes
    content: bool = False


def choice_text(text: str | None, index: int) -> str | None:
    """The text of choice ``index``: the reply text, marked for every choice but the first."""
    if text is None or index == 0:
        return text
    return f"{text} #{index}"


def _token_logprobs(word: str, position: int, alternatives: int) -> dict[str, Any]:
    """An OpenAI ``logprobs.content`` entry for ``word``, with ``alternatives`` top entries
    (the token itself first, then made-up ones, less likely)."""
    logprob = -0.25 * (position % 4) - 0.01

    def entry(token: str, value: float) -> dict[str, Any]:
        return {"token": token, "logprob": value, "bytes": list(token.encode())}

    top = [entry(word, logprob)] + [
        entry(f"alt{j}", logprob - j) for j in range(1, alternatives)
    ]
    return {**entry(word, logprob), "top_logprobs": top[:alternatives]}


# -- response encoding ------------------------------------------------------------------------


def _words(text: str, size: int | None = None) -> list[str]:
    """Word-sized pieces (or pieces of ``size`` characters) that concatenate back to exactly
    ``text``."""
    if size is not None:
        return [text[i : i + size] for i in range(0, len(text), size)]
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _fragments(text: str) -> list[str]:
    return [text[i : i + _ARGUMENT_FRAGMENT] for i in range(0, len(text), _ARGUMENT_FRAGMENT)]


def _arguments_json(tool: ToolCall) -> str:
    return orjson.dumps(tool.arguments).decode()


def request_id_header(protocol: Protocol, n: int) -> list[tuple[bytes, bytes]]:
    if protocol == "openai":
        return [(b"x-request-id", f"req_fake{n}".encode())]
    return [(b"request-id", f"req_fake{n}".encode())]


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached. Please try again later."),
}
_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    529: ("overloaded_error", "Overloaded"),
}


def error_body(protocol: Protocol, status: int, message: str | None) -> dict[str, Any]:
    """The provider's own error object for ``status`` (5xx: server_error / api_error)."""
    if protocol == "openai":
        kind, code, default = _OPENAI_ERRORS.get(
            status, ("server_error", None, "The server had an error while processing your request.")
        )
        error = {"message": message or default, "type": kind, "param": None, "code": code}
        return {"error": error}
    kind, default = _ANTHROPIC_ERRORS.get(status, ("api_error", "Internal server error"))
    return {"type": "error", "error": {"type": kind, "message": message or default}}


def stream_error_event(protocol: Protocol, message: str | None) -> bytes:
    """The mid-stream error each provider sends once a 200 stream has begun."""
    if protocol == "openai":
        return _sse(error_body("openai", 500, message))
    return _sse(error_body("anthropic", 529, message), event="error")


def _sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


def _openai_usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_logprobs(reply: Reply, text: str | None) -> dict[str, Any] | None:
    if reply.top_logprobs is None:
        return None
    content = [
        _token_logprobs(word, i, reply.top_logprobs) for i, word in enumerate(_words(text or ""))
    ]
    return {"content": content, "refusal": None}


def openai_json(reply: Reply) -> dict[str, Any]:
    return {
        "id": reply.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "choices": [_openai_choice(reply, i) for i in range(reply.choices)],
        "usage": _openai_usage(reply.usage),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _openai_choice(reply: Reply, index: int) -> dict[str, Any]:
    text = choice_text(reply.text, index)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": [ANNOTATION] if reply.citations else [],
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": tool_id,
                "type": "function",
                "function": {"name": tool.name, "arguments": _arguments_json(tool)},
            }
            for tool, tool_id in zip(reply.tool_calls, reply.tool_call_ids, strict=True)
        ]
    return {
        "index": index,
        "message": message,
        "logprobs": _openai_logprobs(reply, text),
        "finish_reason": reply.stop_reason,
    }


def openai_events(
    reply: Reply, *, include_usage: bool, delta_chars: int | None = None
) -> tuple[list[Event], list[Event]]:
    """(preamble, rest) of an OpenAI chat.completion.chunk stream, ending in ``[DONE]``."""
    created = int(time.time())

    def chunk(
        delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None
    ) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        data: dict[str, Any] = {
            "id": reply.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": reply.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": [choice],
        }
        if include_usage:
            data["usage"] = None  # the real API marks every chunk but the last this way
        return _sse(data)

    role = {"role": "assistant", "content": "" if reply.text is not None else None, "refusal": None}
    preamble = [Event(chunk(role))]
    if reply.citations:
        preamble.append(Event(chunk({"annotations": [ANNOTATION]})))
    rest = [
        Event(chunk({"content": piece}, logprobs=_chunk_logprobs(reply, piece, i)), content=True)
        for i, piece in enumerate(_words(reply.text or "", delta_chars))
    ]
    for index, (tool, tool_id) in enumerate(
            zip(reply.tool_calls, reply.tool_call_ids, strict=True)):
        head = {
            "index": index,
            "id": tool_id,
            "type": "function",
            "function": {"name": tool.name, "arguments": ""},
        }
        rest.append(Event(chunk({"tool_calls": [head]})))
        for piece in _fragments(_arguments_json(tool)):
            delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            rest.append(Event(chunk(delta), content=True))
    rest.append(Event(chunk({}, reply.stop_reason)))
    if include_usage:
        rest.append(
            Event(
                _sse(
                    {
                        "id": reply.id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": reply.model,
                        "service_tier": "default",
                        "system_fingerprint": "fp_fake",
                        "choices": [],
                        "usage": _openai_usage(reply.usage),
                    }
                )
            )
        )
    rest.append(Event(_sse("[DONE]")))
    return preamble, rest


def _chunk_logprobs(reply: Reply, word: str, position: int) -> dict[str, Any] | None:
    if reply.top_logprobs is None:
        return None
    return {"content": [_token_logprobs(word, position, reply.top_logprobs)], "refusal": None}


def _anthropic_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
        "service_tier": "standard",
    }


def _anthropic_blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.thinking is not None:
        blocks.append({"type": "thinking", "thinking": reply.thinking,
                       "signature": f"sig-{reply.thinking}"})
    if reply.redacted_thinking is not None:
        blocks.append({"type": "redacted_thinking", "data": reply.redacted_thinking})
    if reply.text is not None:
        text: dict[str, Any] = {"type": "text", "text": reply.text}
        if reply.citations:
            text["citations"] = [CITATION]
        blocks.append(text)
    blocks.extend(
        {"type": "tool_use", "id": tool_id, "name": tool.name, "input": tool.arguments}
        for tool, tool_id in zip(reply.tool_calls, reply.tool_call_ids, strict=True)
    )
    return blocks


def anthropic_json(reply: Reply) -> dict[str, Any]:
    return {
        "id": reply.id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": _anthropic_blocks(reply),
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "usage": _anthropic_usage(reply.usage),
    }


def anthropic_events(
    reply: Reply, *, delta_chars: int | None = None
) -> tuple[list[Event], list[Event]]:
    """(preamble, rest) of an Anthropic Messages stream, in the order the real API sends."""

    def event(name: str, data: dict[str, Any], *, content: bool = False) -> Event:
        return Event(_sse({"type": name, **data}, event=name), content=content)

    start_usage = {**_anthropic_usage(reply.usage), "output_tokens": 1}  # as the real API does
    message = {**anthropic_json(reply), "content": [], "stop_reason": None, "usage": start_usage}
    events = [event("message_start", {"message": message})]
    preamble_length = 0
    for index, block in enumerate(_anthropic_blocks(reply)):
        opening: dict[str, Any]
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "citations_delta", "citation": citation}
                      for citation in block.get("citations", ())]
            deltas += [{"type": "text_delta", "text": piece}
                       for piece in _words(block["text"], delta_chars)]
        elif block["type"] == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": piece}
                      for piece in _words(block["thinking"], delta_chars)]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif block["type"] == "redacted_thinking":
            opening, deltas = block, []
        else:
            opening = {**block, "input": {}}
            pieces = _fragments(orjson.dumps(block["input"]).decode())
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
        events.append(event("content_block_start", {"index": index, "content_block": opening}))
        if index == 0:
            events.append(event("ping", {}))
            preamble_length = len(events)
        events.extend(
            event("content_block_delta", {"index": index, "delta": delta}, content=True)
            for delta in deltas
        )
        events.append(event("content_block_stop", {"index": index}))
    events.append(
        event(
            "message_delta",
            {
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence},
                "usage": {"output_tokens": reply.usage.output_tokens},
            },
        )
    )
    events.append(event("message_stop", {}))
    return events[:preamble_length], events[preamble_length:]


# -- request reading (the inverse of what the router writes upstream) ---------------------------


def validate_request(protocol: Protocol, body: Any) -> str | None:
    """The provider's 400 message for a malformed body, else None.

    Only what both providers reject outright, so a router that forwards a broken body fails
    here as it would in production.
    """
    if not isinstance(body, dict):
        return "Request body must be a JSON object."
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages: Field required (a non-empty list)"
    if protocol == "anthropic" and not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if protocol == "anthropic":
        extra = sorted(set(body) - ANTHROPIC_FIELDS)
        if extra:
            return f"{extra[0]}: Extra inputs are not permitted"
    return None


ANTHROPIC_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
    "container", "mcp_servers", "context_management", "output_config", "cache_control",
})


def texts_of(content: Any) -> list[str]:
    """The text inside a message content: a string, or a list of text/tool_result parts."""
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "tool_result":
                texts.extend(texts_of(part.get("content")))
    return texts


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body["messages"]):
        if isinstance(message, dict) and message.get("role") == "user":
            return " ".join(texts_of(message.get("content")))
    return ""


def count_words(protocol: Protocol, body: dict[str, Any]) -> int:
    """Default input tokens: whitespace-separated words of every message text and the system.

    OpenAI carries the system prompt as a message; Anthropic as the top-level ``system``.
    """
    texts = texts_of(body.get("system")) if protocol == "anthropic" else []
    for message in body["messages"]:
        if isinstance(message, dict):
            texts.extend(texts_of(message.get("content")))
    return sum(len(text.split()) for text in texts)


class BodyEncoder:
    """A body sent with ``Content-Encoding: encoding`` (``Behaviour.content_encoding``):
    "gzip" and "deflate" (zlib's format) compress it, each piece flushed whole as a
    compressing server flushes; any other encoding leaves it plain; None sends no header."""

    def __init__(self, encoding: str | None) -> None:
        self.headers = [] if encoding is None else [(b"content-encoding", encoding.encode())]
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding or "")
        self._zlib = None if wbits is None else zlib.compressobj(wbits=wbits)

    def piece(self, data: bytes) -> bytes:
        if self._zlib is None:
            return data
        return self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        return b"" if self._zlib is None else self._zlib.flush()
