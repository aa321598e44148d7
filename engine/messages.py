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
* Optional generation features that not every provider serves (penalties, ``logit_bias``,
  ``logprobs``, ``reasoning_effort``, ``top_k``, ...) are named by
  :meth:`ChatRequest.features`; a provider declares the ones it serves, and routing sends a
  request only to a backend that serves all of its features.
* ``n > 1`` answers hold the first choice as the result itself and the others in
  ``extra_choices``; the result's usage covers every choice.
"""

from __future__ import annotations

import binascii
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from .frozen import frozen_constructor

__all__ = [
    "CHARS_PER_TOKEN",
    "IMAGE_TOKENS",
    "PDF_PAGE_TOKENS",
    "ChatRequest",
    "ChatResult",
    "DocumentPart",
    "Event",
    "Finish",
    "ImagePart",
    "Message",
    "Part",
    "ResultBuilder",
    "StopReason",
    "TextDelta",
    "TextPart",
    "ThinkingDelta",
    "ThinkingPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolChoice",
    "ToolResult",
    "Usage",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "merge_choices",
    "new_chat_request",
    "new_chat_result",
    "new_finish",
    "new_message",
    "new_text_delta",
    "new_text_part",
    "new_usage",
]

StopReason = Literal["stop", "length", "tool_calls", "content_filter"]

#: The provider-neutral token estimate's ratio (:func:`estimate_tokens`).
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A provider-neutral token estimate: four characters a token, at least one if non-empty.

    >>> estimate_tokens(""), estimate_tokens("abcd"), estimate_tokens("abcde")
    (0, 1, 2)
    """
    return -(-len(text) // CHARS_PER_TOKEN)


#: What an image counts for in :func:`estimate_prompt_tokens`: Anthropic's figure for an
#: image at the largest size it takes without scaling (about 1.15 megapixels).
IMAGE_TOKENS = 1600

#: What a PDF page counts for in :func:`estimate_prompt_tokens`: Anthropic reads each page as
#: its text (1,500 to 3,000 tokens) and as an image (about :data:`IMAGE_TOKENS`).
PDF_PAGE_TOKENS = 3000
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_PDF_BYTES_PER_PAGE = 50_000  # when the pages cannot be counted (compressed object streams)


@dataclass(frozen=True, slots=True)
class TextPart:
    """Text. ``cache_control`` (on this and the other parts, and on :class:`Tool`): the
    client's Anthropic prompt-caching breakpoint, as its JSON text, relayed to Anthropic
    upstreams as given (others cache on their own)."""

    text: str
    cache_control: str | None = None


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image, either by URL or inline as base64 ``data`` with its ``media_type``."""

    url: str | None = None
    media_type: str | None = None
    data: str | None = None
    cache_control: str | None = None
    detail: str | None = None  # OpenAI's image detail (low, high, auto); Anthropic has none


@dataclass(frozen=True, slots=True)
class DocumentPart:
    """A document the model reads: Anthropic's ``document`` block, OpenAI's ``file`` part.

    Its source is one of: inline base64 ``data`` of ``media_type`` (a PDF), plain ``text``, a
    ``url`` (Anthropic's), or an OpenAI ``file_id``. ``title`` is Anthropic's title or OpenAI's
    ``filename``; ``context`` and ``citations`` (its JSON text) are Anthropic's, relayed to
    Anthropic upstreams (an OpenAI upstream gets the context as a text part ahead of the
    document, and no citations).
    """

    media_type: str | None = None
    data: str | None = None
    text: str | None = None
    url: str | None = None
    file_id: str | None = None
    title: str | None = None
    context: str | None = None
    citations: str | None = None
    cache_control: str | None = None

    def feature(self) -> str | None:
        """The feature (:meth:`ChatRequest.features`) this document needs, if only some
        providers can take it: a ``document`` (a PDF or text file: Anthropic and OpenAI read
        it), an OpenAI ``file_id`` (OpenAI's own files), a ``document_url`` (chat completions
        take no URL), or ``file_data`` of another type (Anthropic reads PDFs and text only).
        A text source needs none: it is text to everyone.
        """
        if self.file_id is not None:
            return "file_id"
        if self.url is not None:
            return "document_url"
        if self.data is None:
            return None
        if self.media_type == "application/pdf" or (self.media_type or "").startswith("text/"):
            return "document"
        return "file_data"

    def tokens(self) -> int:
        """An estimate of the tokens a model reads for it: a text's :func:`estimate_tokens`;
        :data:`PDF_PAGE_TOKENS` a PDF page (one page when its size is unknown: a URL, a
        file id).

        >>> DocumentPart(text="abcdefgh", title="abcd").tokens()
        3
        >>> pdf = binascii.b2a_base64(b"%PDF /Type /Pages /Type /Page /Type/Page").decode()
        >>> DocumentPart("application/pdf", pdf).tokens() == 2 * PDF_PAGE_TOKENS
        True
        """
        extra = estimate_tokens((self.title or "") + (self.context or ""))
        if self.text is not None:
            return extra + estimate_tokens(self.text)
        if self.data is None:
            return extra + PDF_PAGE_TOKENS
        try:
            raw = binascii.a2b_base64(self.data)
        except (binascii.Error, ValueError):
            return extra + estimate_tokens(self.data)
        if self.media_type != "application/pdf":
            return extra + -(-len(raw) // CHARS_PER_TOKEN)
        pages = len(_PDF_PAGE.findall(raw)) or -(-len(raw) // _PDF_BYTES_PER_PAGE)
        return extra + max(pages, 1) * PDF_PAGE_TOKENS


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant made: ``arguments`` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str
    cache_control: str | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The result of a tool call, sent back by the client in a ``user`` message."""

    tool_call_id: str
    content: str
    is_error: bool = False
    cache_control: str | None = None
    images: tuple[ImagePart, ...] = ()  # after the text (Anthropic's; chat completions' are text)


@dataclass(frozen=True, slots=True)
class ThinkingPart:
    """Reasoning an Anthropic model showed (extended thinking), kept intact: relayed to
    Anthropic clients and sent back as given to Anthropic upstreams, whose ``signature``
    seals it; other protocols leave it out. ``redacted``: a ``redacted_thinking`` block,
    whose opaque ``data`` is in ``thinking``."""

    thinking: str
    signature: str = ""
    redacted: bool = False


Part = TextPart | ImagePart | DocumentPart | ToolCall | ToolResult | ThinkingPart


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
    cache_control: str | None = None
    strict: bool = False  # calls must follow ``parameters`` exactly (both providers have it)


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
    ``logit_bias`` is ``(token id, bias)`` pairs sorted by token id, so equal maps are equal
    keys. Parameters at their neutral value (a penalty of 0, an empty bias map) are left unset.
    ``system_blocks`` are the system prompt's blocks when the client marked a caching
    breakpoint in them (they join to ``system`` with blank lines); ``anthropic_beta`` is the
    client's ``anthropic-beta`` header. Both are for Anthropic upstreams only.
    """

    messages: tuple[Message, ...]
    model: str | None = None
    system: str | None = None
    system_blocks: tuple[TextPart, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    json_mode: bool = False
    json_schema: Any = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    # the name an OpenAI client gave the limit (its newer max_completion_tokens), which an
    # OpenAI upstream is sent; a limit from elsewhere goes as max_tokens, which every
    # OpenAI-compatible server reads
    max_tokens_param: str = "max_tokens"
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    user: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: tuple[tuple[str, float], ...] = ()
    logprobs: bool = False
    top_logprobs: int | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    thinking: str | None = None  # Anthropic's extended thinking setting, as its JSON text
    effort: str | None = None  # Anthropic's output_config.effort
    cache_control: str | None = None  # Anthropic's automatic caching breakpoint, as JSON text
    anthropic_beta: str | None = None
    # OpenAI's, forwarded to OpenAI-compatible upstreams only (they do not change the answer);
    # an Anthropic upstream gets ``safety_identifier`` as metadata.user_id when ``user`` is unset
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    store: bool | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # sorted by key, so equal maps are equal keys
    prediction: str | None = None  # as its JSON text
    web_search_options: str | None = None  # as its JSON text; OpenAI upstreams only
    stream: bool = False
    include_usage: bool = False

    def features(self) -> frozenset[str]:
        """The optional features this request uses that not every provider serves, by the
        name of their request parameter (``top_logprobs`` counts as ``logprobs``).

        >>> ChatRequest(messages=(), top_k=5, logprobs=True).features() == {"top_k", "logprobs"}
        True
        """
        used = []
        if self.top_k is not None:
            used.append("top_k")
        if self.frequency_penalty is not None:
            used.append("frequency_penalty")
        if self.presence_penalty is not None:
            used.append("presence_penalty")
        if self.logit_bias:
            used.append("logit_bias")
        if self.logprobs:
            used.append("logprobs")
        if self.reasoning_effort is not None:
            used.append("reasoning_effort")
        if self.verbosity is not None:
            used.append("verbosity")
        if self.thinking is not None:
            used.append("thinking")
        if self.effort is not None:
            used.append("effort")
        if self.web_search_options is not None:
            used.append("web_search_options")
        for message in self.messages:
            for part in message.parts:
                if type(part) is ToolResult and part.images:
                    used.append("tool_result_images")
                elif type(part) is DocumentPart and (need := part.feature()) is not None:
                    used.append(need)
        return frozenset(used)


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
    """A complete answer. ``content`` holds :class:`TextPart` and :class:`ToolCall` parts.

    ``logprobs`` is the OpenAI ``logprobs.content`` list (plain JSON data, one entry per
    token) when the caller asked for it and the upstream sent it. With ``n > 1`` this is the
    first choice and ``extra_choices`` the others (their ``usage`` is empty: this one counts
    every choice's tokens).
    """

    content: tuple[TextPart | ToolCall | ThinkingPart, ...]
    stop_reason: StopReason = "stop"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    upstream_model: str | None = None
    logprobs: tuple[Any, ...] | None = None
    extra_choices: tuple[ChatResult, ...] = ()

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(p for p in self.content if isinstance(p, ToolCall))

    @property
    def choices(self) -> tuple[ChatResult, ...]:
        """Every choice, in order: this result, then ``extra_choices``."""
        return (self, *self.extra_choices)


def merge_choices(results: list[ChatResult] | tuple[ChatResult, ...], n: int) -> ChatResult:
    """The first ``n`` choices of ``results`` (each maybe holding several) as one result whose
    usage is the sum of theirs.

    >>> a = ChatResult((TextPart("a"),), usage=Usage(3, 1))
    >>> b = ChatResult((TextPart("b"),), usage=Usage(3, 2))
    >>> merged = merge_choices([a, b], 2)
    >>> [c.text for c in merged.choices], merged.usage.output_tokens
    (['a', 'b'], 3)
    """
    choices = [c for r in results for c in r.choices][:n]
    usage = Usage()
    for result in results:
        usage = usage + result.usage
    first = choices[0]
    rest = tuple(dataclasses.replace(c, usage=Usage(), extra_choices=()) for c in choices[1:])
    return dataclasses.replace(first, usage=usage, extra_choices=rest)


# ---- stream events -------------------------------------------------------------------------
# A stream is a sequence of deltas closed by exactly one Finish. Tool calls are numbered in the
# order they start (0, 1, ...); their argument fragments concatenate to the arguments' JSON text.


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Text; ``logprobs`` holds the OpenAI ``logprobs.content`` entries of its tokens."""

    text: str
    logprobs: tuple[Any, ...] | None = None


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """Extended thinking: a piece of its text, or the ``signature`` that ends its block; a
    redacted block comes whole (``redacted``, its data in ``thinking``). Anthropic streams
    relay it; OpenAI streams leave it out."""

    thinking: str = ""
    signature: str = ""
    redacted: bool = False


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


Event = TextDelta | ThinkingDelta | ToolCallStart | ToolCallDelta | Finish


class ResultBuilder:
    """Accumulates a stream's events into the :class:`ChatResult` they add up to."""

    __slots__ = ("_calls", "_finish", "_logprobs", "_text", "_thinking")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._thinking: list[list[Any]] = []  # [pieces, signature, redacted, sealed] a block
        self._calls: dict[int, list[str]] = {}
        self._finish: Finish | None = None
        self._logprobs: list[Any] | None = None

    def add(self, events: list[Event]) -> None:
        for event in events:
            if type(event) is TextDelta:
                self._text.append(event.text)
                if event.logprobs is not None:
                    if self._logprobs is None:
                        self._logprobs = []
                    self._logprobs.extend(event.logprobs)
            elif type(event) is ToolCallStart:
                self._calls[event.index] = [event.id, event.name]
            elif type(event) is ToolCallDelta:
                self._calls.setdefault(event.index, ["", ""]).append(event.arguments)
            elif type(event) is ThinkingDelta:
                self._think(event)
            elif type(event) is Finish:
                self._finish = event

    def _think(self, event: ThinkingDelta) -> None:
        blocks = self._thinking
        if event.redacted:
            blocks.append([[event.thinking], "", True, True])
            return
        if not blocks or blocks[-1][3]:  # none yet, or the last one is sealed: a new block
            blocks.append([[], "", False, False])
        block = blocks[-1]
        block[0].append(event.thinking)
        if event.signature:
            block[1], block[3] = block[1] + event.signature, True

    @property
    def finished(self) -> bool:
        return self._finish is not None

    @property
    def text(self) -> str:
        return "".join(self._text)

    def result(self) -> ChatResult:
        content: list[TextPart | ToolCall | ThinkingPart] = [
            ThinkingPart("".join(pieces), signature, redacted)
            for pieces, signature, redacted, _ in self._thinking
        ]
        text = self.text
        if text:
            content.append(new_text_part(text))
        for _, (call_id, name, *args) in sorted(self._calls.items()):
            content.append(ToolCall(call_id, name, "".join(args)))
        finish = self._finish or Finish()
        return new_chat_result(
            content=tuple(content),
            stop_reason=finish.stop_reason,
            stop_sequence=finish.stop_sequence,
            usage=finish.usage,
            upstream_model=finish.upstream_model,
            logprobs=None if self._logprobs is None else tuple(self._logprobs),
        )


# ---- the hot paths' constructors (engine.frozen): the same objects, made for less ---------

new_chat_request = frozen_constructor(ChatRequest)
new_chat_result = frozen_constructor(ChatResult)
new_finish = frozen_constructor(Finish)
new_message = frozen_constructor(Message)
new_text_delta = frozen_constructor(TextDelta)
new_text_part = frozen_constructor(TextPart)
new_usage = frozen_constructor(Usage)


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """An estimate of the tokens a model reads for ``request``: :func:`estimate_tokens` of the
    system prompt, every text, tool call (name and arguments), tool result and tool definition
    (name, description and schema), plus :data:`IMAGE_TOKENS` an image and each document's
    :meth:`DocumentPart.tokens`.

    >>> estimate_prompt_tokens(ChatRequest(messages=(Message("user", (TextPart("hi!!"),)),),
    ...                                    system="Be brief."))
    4
    """
    texts = [request.system or ""]
    images = documents = 0
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif isinstance(part, ToolCall):
                texts.append(part.name + part.arguments)
            elif isinstance(part, ToolResult):
                texts.append(part.content)
            elif isinstance(part, DocumentPart):
                documents += part.tokens()
            else:
                images += 1
    for tool in request.tools:
        schema = "" if tool.parameters is None else orjson.dumps(tool.parameters).decode()
        texts.append(tool.name + tool.description + schema)
    return (sum(estimate_tokens(text) for text in texts) + images * IMAGE_TOKENS
            + documents)
