"""What the fake upstream (:mod:`engine.testing.fake_upstream`) is told to do with a request,
:class:`Behaviour` (its faults included), and what it records of one, :class:`Recorded`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .fake_wire import ToolCall, Usage

__all__ = ["Behaviour", "Recorded"]


@dataclass(frozen=True)
class Behaviour:
    """How the fake answers one request. Every field is optional; ``Behaviour()`` is a 200.

    Faults apply in this order: ``latency``, then ``hang``, then ``status``, then the body.
    """

    status: int = 200  # non-200: the protocol's real error body, even if a stream was asked
    retry_after: float | None = None  # seconds, sent as the Retry-After header
    latency: float = 0.0  # seconds before the response headers
    hang: bool = False  # never respond (the client's disconnect still ends it)
    text: str | None = None  # reply text; None: "[backend] <last user text>", or none with a tool
    tool_call: ToolCall | None = None  # after `text` if text is given, else instead of it
    tool_calls: tuple[ToolCall, ...] = ()  # parallel calls, after `tool_call` if both
    # Anthropic only: extended thinking ahead of the answer, signed "sig-<its text>"; then a
    # redacted_thinking block with this data.
    thinking: str | None = None
    redacted_thinking: str | None = None
    chunk_delay: float = 0.0  # seconds between SSE events
    # Streams: after this many content deltas (words, tool-argument fragments) drop the
    # connection mid chunked body. Non-streams: send half the JSON body, then drop.
    cut_after: int | None = None
    # Streams only: after this many content deltas send the protocol's error event and end.
    error_event_after: int | None = None
    # Streams only: after this many content deltas send nothing more, keeping the connection
    # open until the client leaves (or shutdown): a stream stalled mid-answer.
    stall_after: int | None = None
    # Streams only: after this many content deltas begin an event that never ends: a
    # ``data:`` line that grows by 64 KiB a write, with no line end, to 64 MiB; then a stall.
    endless_event_after: int | None = None
    # Non-streams only: this many spaces after the JSON body (it stays valid JSON).
    padding: int = 0
    # The message of the error the fake sends: the body of a non-200 ``status``, the error
    # event, or the body of ``error_with_200``. None: the provider's usual text.
    error_message: str | None = None
    # Non-streams only: answer 200 with the protocol's error object (an overload) as the body,
    # as Anthropic sometimes does. For a stream, ``error_event_after=0`` is the equivalent.
    error_with_200: bool = False
    # Streams only: deal the reply text out in deltas of this many characters, cutting through
    # words as real tokenizers do, instead of one delta per word.
    text_delta_chars: int | None = None
    # Default: input = whitespace-separated words of all message texts and the system prompt;
    # output = words of the reply text (a tool call adds none).
    usage: Usage | None = None
    stop_reason: str | None = None  # verbatim finish_reason / stop_reason, e.g. "length"
    stop_sequence: str | None = None  # Anthropic: the stop sequence that matched
    citations: bool = False  # the text cites a document (Anthropic) or a web page (OpenAI)
    # A 200's body sent with this Content-Encoding: "gzip" and "deflate" compress it (a
    # stream's events flushed one by one), any other value leaves it plain (BodyEncoder).
    content_encoding: str | None = None


@dataclass
class Recorded:
    """One request as the fake received it."""

    backend: str
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: Any  # the parsed JSON body; None if absent or not JSON
    behaviour: Behaviour | None = None  # None for unknown routes and invalid bodies
    status: int | None = None  # status line sent, once sent
    # The fake finished its behaviour, errors and deliberate cuts included. Set just before
    # the last write, so it is already true when the client sees the end of the response.
    completed: bool = False
    cancelled: bool = False  # the client went away before the fake finished (never both)
    # Streams: body bytes the client's connection has taken so far (a write counts once it
    # returns, so a client that stops reading stops this growing).
    sent_bytes: int = 0

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True
