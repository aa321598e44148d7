"""The canonical chat request, result and stream events.

Every wire format (OpenAI chat completions, Anthropic Messages) is parsed into these types at
the API boundary and rendered from them on the way out; every upstream provider is driven from
them. The engine never sees a wire format, so either inbound protocol can reach either upstream,
and one protocol's answer can serve the other.

The types are plain frozen dataclasses: cheap to build on the hot path, hashable where that
matters for cache and dedup keys, and free of any I/O.

Conventions:

* ``system`` is the whole system prompt as one string; the conversation holds only
  ``user`` and ``assistant`` turns.
* Tool results travel as :class:`ToolResult` parts of a ``user`` message (Anthropic's shape);
  OpenAI's ``role: "tool"`` messages are folded into that on input and unfolded on output.
* Assistant tool calls are :class:`ToolCall` parts, with their arguments as JSON text.
* Stop reasons use one vocabulary: ``stop``, ``length``, ``tool_calls``, ``content_filter``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ChatRequest",
    "ChatResult",
    "Event",
    "Finish",
    "ImagePart",
    "Message",
    "Part",
    "ResultBuilder",
    "StopReason",
    "TextDelta",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolChoice",
    "ToolResult",
    "Usage",
]

StopReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image, either by URL or inline as base64 ``data`` with its ``media_type``."""

    url: str | None = None
    media_type: str | None = None
    data: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant made: ``arguments`` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The result of a tool call, sent back by the client in a ``user`` message."""

    tool_call_id: str
    content: str
    is_error: bool = False


Part = TextPart | ImagePart | ToolCall | ToolResult


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["user", "assistant"]
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        """The message's text parts joined by newlines."""
        return "\n".join(p.text for p in self.parts if isinstance(p, TextPart))


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: Any = None  # a JSON Schema object (plain JSON data)


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``auto`` (model decides), ``none``, ``required`` (some tool), or ``tool`` (``name``)."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion, independent of the protocol it arrived in.

    ``model`` is ``None`` when the router should choose (OpenAI's ``"auto"`` or no model).
    ``json_schema`` is set with ``json_mode`` when the caller asked for a specific schema.
    """

    messages: tuple[Message, ...]
    model: str | None = None
    system: str | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    json_mode: bool = False
    json_schema: Any = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    user: str | None = None
    stream: bool = False
    include_usage: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts. ``input_tokens`` excludes cached input: the whole prompt is
    ``input_tokens + cache_read_tokens + cache_write_tokens`` (Anthropic's convention)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A complete answer. ``content`` holds :class:`TextPart` and :class:`ToolCall` parts."""

    content: tuple[TextPart | ToolCall, ...]
    stop_reason: StopReason = "stop"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    upstream_model: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(p for p in self.content if isinstance(p, ToolCall))


# ---- stream events -------------------------------------------------------------------------
# A stream is a sequence of deltas closed by exactly one Finish. Tool calls are numbered in the
# order they start (0, 1, ...); their argument fragments concatenate to the arguments' JSON text.


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    arguments: str


@dataclass(frozen=True, slots=True)
class Finish:
    stop_reason: StopReason = "stop"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    upstream_model: str | None = None


Event = TextDelta | ToolCallStart | ToolCallDelta | Finish


class ResultBuilder:
    """Accumulates a stream's events into the :class:`ChatResult` they add up to."""

    __slots__ = ("_calls", "_finish", "_text")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}
        self._finish: Finish | None = None

    def add(self, events: list[Event]) -> None:
        for event in events:
            if type(event) is TextDelta:
                self._text.append(event.text)
            elif type(event) is ToolCallStart:
                self._calls[event.index] = [event.id, event.name]
            elif type(event) is ToolCallDelta:
                self._calls.setdefault(event.index, ["", ""]).append(event.arguments)
            elif type(event) is Finish:
                self._finish = event

    @property
    def finished(self) -> bool:
        return self._finish is not None

    @property
    def text(self) -> str:
        return "".join(self._text)

    def result(self) -> ChatResult:
        content: list[TextPart | ToolCall] = []
        text = self.text
        if text:
            content.append(TextPart(text))
        for _, (call_id, name, *args) in sorted(self._calls.items()):
            content.append(ToolCall(call_id, name, "".join(args)))
        finish = self._finish or Finish()
        return ChatResult(
            content=tuple(content),
            stop_reason=finish.stop_reason,
            stop_sequence=finish.stop_sequence,
            usage=finish.usage,
            upstream_model=finish.upstream_model,
        )
