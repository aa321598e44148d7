"""Keeping configured secrets out of everything the router answers, shows or logs.

A :class:`Redactor` is built once from the configuration's secrets: every model's
``api_key``, ``server.api_keys``, and the password of any URL that carries one
(``base_url``, ``learned.sidecar_url``). It replaces each of them, and any run of at least
:data:`FRAGMENT` consecutive characters of one, with :data:`MARKER`, ignoring ASCII case: a
key echoed upper-cased, split in two, or cut off by a length limit is caught as surely as a
whole one. A secret shorter than :data:`FRAGMENT` characters (``ollama``, ``none``: the
placeholders local servers take) is not scrubbed, since hiding such a word would mangle
ordinary text. A key's public prefix (``sk-ant-api03-``, ``sk-proj-``) is no secret: it is
hidden only together with the characters after it.

Error text gets more: :meth:`Redactor.scrub` also hides anything shaped like a provider key or
credential (``sk-...``, ``Bearer ...``, ``key=...``, long random tokens), configured or not, and
:meth:`Redactor.summarize` makes one short line of upstream error text, scrubbed *before* it is
shortened. Answer content gets only the configured secrets (:meth:`Redactor.redact`,
:meth:`Redactor.redact_result`, :class:`StreamRedactor`): an answer explaining what an
``sk-...`` key looks like is not a leak.

How the scan stays cheap: the text is lower-cased and encoded to bytes, then read as 4-byte
words at offsets 0, 4, 8, ... Any 8 consecutive bytes of a secret contain one such aligned
word, and it is one of the secret's 4-byte substrings; so one C-level set test over the words
(about 12 us of CPU per KB of text on the loaded 2-vCPU development VM, against about 1.6 ms
of CPU per proxied request; a stream pays about 1.5 us per relayed batch) says whether the
text can hold a fragment at all, and only around the words that hit are the 8-byte windows
checked exactly.

Sans-IO: plain functions over strings and the canonical message types.
"""

from __future__ import annotations

import logging
import re
import sys
from array import array
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from engine.messages import (
    ChatResult,
    Event,
    Finish,
    TextDelta,
    TextPart,
    ThinkingPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
)

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "FRAGMENT",
    "MARKER",
    "RedactingFilter",
    "Redactor",
    "StreamRedactor",
    "without_userinfo",
]

MARKER = "[redacted]"
FRAGMENT = 8  # characters: any run this long of a secret is hidden
SUMMARY_CHARS = 200  # upstream error text shown to clients, after scrubbing

_MARKER_BYTES = MARKER.encode()
_WORD = next(code for code in "IL" if array(code).itemsize == 4)  # a 4-byte array item
_PUBLIC_PREFIX = re.compile(
    rb"sk-ant-(?:api|admin|oat)\d\d-|sk-(?:proj|svcacct|admin|or-v1)-|sk-"
)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^/@?#]*)@")
# Shapes of credentials, for error and log text only (never for answer content).
_KEY_LIKE = re.compile(
    # sk-..., sk-ant-..., a masked sk-ab***yz, key_..., api-...
    r"(?P<key>\bsk-[A-Za-z0-9*_\-]{4,}|\b(?:sk|pk|rk|ak|key|api)[-_][A-Za-z0-9*_\-]{6,})"
    # long tokens: hidden when they mix letters and digits, as random ones do
    r"|(?P<token>(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{32,})",
    re.IGNORECASE,
)
_LABELLED = re.compile(
    r"\b((?:x-)?api[-_]?key|key|token|secret|password|passwd|authorization|bearer)"
    r"([\"']?\s*[:=]?\s*[\"']?(?:bearer\s+)?)"
    r"(?=[^\s\"',;&]*\d)([^\s\"',;&]{8,})",
    re.IGNORECASE,
)
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[A-Za-z]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def without_userinfo(url: str) -> str:
    """``url`` without the ``user:password@`` part, for messages.

    >>> without_userinfo("https://bob:hunter2@sidecar.local/score")
    'https://sidecar.local/score'
    """
    return _USERINFO.sub(r"\1", url)


def _url_secret(url: str | None) -> str | None:
    match = _USERINFO.match(url or "")
    if match is None:
        return None
    user, _, password = match.group(2).partition(":")
    return password or user


def _key_like(match: re.Match[str]) -> str:
    token = match.group("token")
    if token is not None and not (_DIGIT.search(token) and _LETTER.search(token)):
        return token  # a long word or number
    return MARKER


class Redactor:
    """Hides the secrets it was built with (see the module docstring).

    >>> r = Redactor(["sk-ant-api03-Zq8PxY2vLm4T"])
    >>> r.redact("key: SK-ANT-API03-ZQ8PXY2VLM4T, half: 2vLm4T, cut: Zq8PxY2vL")
    'key: [redacted], half: 2vLm4T, cut: [redacted]'
    >>> r.redact("keys start with sk-ant-api03-")
    'keys start with sk-ant-api03-'
    """

    __slots__ = ("_windows", "_words")

    def __init__(self, secrets: Iterable[str | None]) -> None:
        # window -> whether it reaches past the secret's public prefix (only such a window
        # makes a match; prefix windows merely extend one to the left)
        windows: dict[bytes, bool] = {}
        words: set[int] = set()
        for secret in secrets:
            raw = (secret or "").strip().encode("utf-8", "surrogatepass").lower()
            if len(raw) < FRAGMENT:
                continue
            prefix = _PUBLIC_PREFIX.match(raw)
            public = prefix.end() if prefix else 0
            for i in range(len(raw) - FRAGMENT + 1):
                window = raw[i : i + FRAGMENT]
                windows[window] = windows.get(window, False) or i + FRAGMENT > public
            for i in range(len(raw) - 3):
                words.add(int.from_bytes(raw[i : i + 4], sys.byteorder))
        self._windows = windows
        self._words = frozenset(words)

    @classmethod
    def for_config(cls, config: Config) -> Redactor:
        """A redactor for every secret ``config`` holds."""
        secrets: list[str | None] = [m.api_key for m in config.models]
        secrets.extend(config.server.api_keys)
        secrets.append(config.server.admin_key)
        secrets.extend(_url_secret(m.base_url) for m in config.models)
        secrets.append(_url_secret(config.learned.sidecar_url))
        secrets.append(_url_secret(config.state.redis_url))
        if config.cache.embedder is not None:
            secrets.append(config.cache.embedder.api_key)
            secrets.append(_url_secret(config.cache.embedder.url))
        return cls(secrets)

    # ---- finding -------------------------------------------------------------------------

    def _spans(self, data: bytes) -> list[tuple[int, int]]:
        """Byte ranges of ``data`` (lower-cased) made of secret fragments, merged, in order."""
        if len(data) < FRAGMENT or not self._words:
            return []
        found = self._words.intersection(array(_WORD, data[: len(data) & ~3]))
        if not found:  # the common case: one pass in C
            return []
        windows = self._windows
        matches: dict[int, bool] = {}  # window start -> whether it reaches past a prefix
        for word in found:
            needle = word.to_bytes(4, sys.byteorder)
            at = data.find(needle)
            while at >= 0:
                # An aligned word at ``at`` lies in the windows starting at at-3 .. at; that
                # an occurrence found here may be unaligned costs a few more lookups.
                for start in range(max(0, at - 3), at + 1):
                    secret = windows.get(data[start : start + FRAGMENT])
                    if secret is not None:
                        matches[start] = secret
                at = data.find(needle, at + 1)
        spans: list[list[int]] = []  # [start, end, windows past a prefix]
        for start in sorted(matches):
            end = start + FRAGMENT
            if spans and start <= spans[-1][1]:
                spans[-1][1] = end
                spans[-1][2] += matches[start]
            else:
                spans.append([start, end, matches[start]])
        return [(start, end) for start, end, secret in spans if secret]

    def leaks(self, text: str) -> bool:
        """Whether ``text`` holds a fragment of a secret."""
        return bool(self._spans(text.encode("utf-8", "surrogatepass").lower()))

    # ---- hiding --------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with every configured secret and fragment of one replaced by MARKER."""
        data = text.encode("utf-8", "surrogatepass")
        spans = self._spans(data.lower())
        if not spans:
            return text
        out = bytearray()
        last = 0
        for start, end in spans:
            out += data[last:start]
            out += _MARKER_BYTES
            last = end
        out += data[last:]
        return out.decode("utf-8", "replace")

    def scrub(self, text: str) -> str:
        """:meth:`redact`, and anything shaped like a key or credential (for error and log
        text, where hiding an unconfigured key costs nothing)."""
        text = self.redact(text)
        text = _LABELLED.sub(lambda m: m.group(1) + m.group(2) + MARKER, text)
        return _KEY_LIKE.sub(_key_like, text)

    def summarize(self, text: str, *, limit: int = SUMMARY_CHARS) -> str:
        """Upstream error text as one short scrubbed line: scrubbed first, then shortened."""
        text = " ".join(_CONTROL.sub(" ", self.scrub(text)).split())
        if len(text) <= limit:
            return text
        cut = text[: limit - 3]
        opened = cut.rfind("[")
        if opened >= 0 and "]" not in cut[opened:] and MARKER.startswith(cut[opened:]):
            cut = cut[:opened]  # never half a marker
        return cut.rstrip() + "..."

    def redact_result(self, result: ChatResult) -> ChatResult:
        """A complete answer with the configured secrets hidden from every text in it.

        An answer none of whose texts holds a fragment (almost every one) is returned as it
        is: its texts are scanned together first, in one pass, where rebuilding the answer
        part by part cost several times the scan. Joining can only add fragments (across a
        boundary), never hide one, so a join that finds none means none of the texts has one.
        """
        if not self._words:
            return result
        if result.extra_choices:  # n > 1: rare, each choice the full way
            return self._redacted(result)
        texts: list[str] = []
        for part in result.content:
            if type(part) is TextPart:
                texts.append(part.text)
            elif type(part) is ToolCall:
                texts += (part.id, part.name, part.arguments)
            elif type(part) is not ThinkingPart:  # not a part this knows: the full way
                return self._redacted(result)
        texts += (result.upstream_model or "", result.stop_sequence or "")
        if not self._spans("\n".join(texts).encode("utf-8", "surrogatepass").lower()):
            return result
        return self._redacted(result)

    def _redacted(self, result: ChatResult) -> ChatResult:
        """:meth:`redact_result`, part by part."""
        content = tuple(
            TextPart(self.redact(part.text)) if isinstance(part, TextPart)
            # thinking passes intact, as in streams: its signature would not verify otherwise
            else part if isinstance(part, ThinkingPart)
            else replace(part, id=self.redact(part.id), name=self.redact(part.name),
                         arguments=self.redact(part.arguments))
            for part in result.content
        )
        model, stop = result.upstream_model, result.stop_sequence
        # The tokens' log probabilities spell out the text token by token, each token too
        # short for a fragment: an answer whose text lost a secret loses them too, as a
        # streamed delta does.
        logprobs = result.logprobs if content == result.content else None
        return replace(
            result, content=content, logprobs=logprobs,
            upstream_model=self.redact(model) if model is not None else None,
            stop_sequence=self.redact(stop) if stop is not None else None,
            extra_choices=tuple(self._redacted(choice) for choice in result.extra_choices),
        )

    def stream(self) -> StreamRedactor:
        """A redactor for the events of one stream."""
        return StreamRedactor(self)


class StreamRedactor:
    """Hides configured secrets from one stream's events as they pass, without holding any
    text back.

    Text and tool-argument deltas are one running text: each is checked together with the
    last ``FRAGMENT - 1`` bytes before it, so a secret dealt out over many small deltas is
    hidden from the delta that completes its first ``FRAGMENT`` characters on (what went out
    before is shorter than a fragment). Consecutive hidden pieces show one marker.
    """

    __slots__ = ("_open", "_redactor", "_tail")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._tail = b""
        self._open = False  # the last delta ended inside a hidden span

    def events(self, batch: list[Event]) -> list[Event]:
        """``batch`` with secrets hidden (the same list when there is nothing to hide)."""
        redactor = self._redactor
        if not redactor._words:
            return batch
        first = batch[0] if len(batch) == 1 else None
        others = False  # tool call starts and finishes carry names, ids and a model
        if type(first) is TextDelta:  # the common case, kept short
            text = first.text
        else:
            pieces: list[str] = []
            for event in batch:
                if type(event) is TextDelta:
                    pieces.append(event.text)
                elif type(event) is ToolCallDelta:
                    pieces.append(event.arguments)
                else:
                    others = True
            text = "".join(pieces)
        joined = self._tail + text.encode("utf-8", "surrogatepass")
        if redactor._spans(joined.lower()):
            return [self._event(e) for e in batch]
        # No fragment in the batch's running text, so none in any delta's own window (each is
        # a part of it): the deltas pass as they are; only names, ids and the model are checked.
        self._tail = joined[-(FRAGMENT - 1):]
        if not others:
            self._open = False
            return batch
        if text:
            self._open = False
        return [e if type(e) is TextDelta or type(e) is ToolCallDelta else self._event(e)
                for e in batch]

    def _event(self, event: Event) -> Event:
        redact = self._redactor.redact
        if type(event) is TextDelta:
            return TextDelta(self._piece(event.text))
        if type(event) is ToolCallDelta:
            return ToolCallDelta(event.index, self._piece(event.arguments))
        if type(event) is ToolCallStart:
            return ToolCallStart(event.index, redact(event.id), redact(event.name))
        if type(event) is Finish:
            model, stop = event.upstream_model, event.stop_sequence
            return replace(event, upstream_model=redact(model) if model is not None else None,
                           stop_sequence=redact(stop) if stop is not None else None)
        return event

    def _piece(self, text: str) -> str:
        if not text:
            return text
        data = text.encode("utf-8", "surrogatepass")
        joined = self._tail + data
        offset = len(self._tail)
        self._tail = joined[-(FRAGMENT - 1):]
        spans = [s for s in self._redactor._spans(joined.lower()) if s[1] > offset]
        if not spans:
            self._open = False
            return text
        out = bytearray()
        last = 0
        for start, end in spans:
            continuing = start < offset
            start, end = max(start, offset) - offset, end - offset
            out += data[last:start]
            if not (continuing and self._open):
                out += _MARKER_BYTES
            last = end
        out += data[last:]
        self._open = last == len(data)
        return out.decode("utf-8", "replace")


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs each record's message and traceback (see
    :meth:`Redactor.scrub`); it never drops a record."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        scrub = self._redactor.scrub
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: logging reports it itself
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True
