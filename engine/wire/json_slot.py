"""A stream's repeated JSON payload with one string left open, read without parsing it all.

Most events of a provider's stream are one payload over and over with a different string in
one place: OpenAI's ``{"id":...,"choices":[{"index":0,"delta":{"content":"<text>"},...}]}``.
A stream decoder that has parsed one such payload learns it as a :class:`StringSlot`: the
text before the string (``head``) and after it (``tail``). A later payload that starts with
that head and ends with that tail, and whose middle is one JSON string, then parses to the
learnt payload's value with that string in its place, so the decoder reads the string
alone: one small ``orjson.loads`` instead of the whole payload's, and none of the per-field
work on the parsed chunk. (It pays on OpenAI-shaped chunks of ~300 bytes; Anthropic's
deltas, of ~100, cost about as much to read this way as to parse. Chunks that differ
elsewhere too never match: OpenAI's own API pads each chunk with an ``obfuscation`` string
unless asked not to, so there every chunk is parsed whole, as before.)

Why that is exact: JSON is read left to right in one way, so after the same head a parser is
in the same state. :meth:`StringSlot.learn` proves that this state is "reading the value at
``path``" by parsing the head and tail around another string and finding exactly that string
at ``path``, and everything else as it was (which also settles duplicate keys: the value
that wins is the one in the slot). A middle that ``orjson`` reads as one string (with
whitespace around it, if any) is one value there, after which the parser is again in one
state, the tail's. Anything else (another value, a string cut short, bytes that are not one
string) does not match, and the decoder parses the payload as before.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = ["StringSlot"]

# A JSON string token after any whitespace (its escapes taken whole: an escaped quote does
# not end it).
_STRING = re.compile(r'[ \t\n\r]*("(?:[^"\\]|\\.)*")', re.DOTALL)


class StringSlot:
    """A payload shape with one open string (see the module docstring)."""

    __slots__ = ("head", "tail")

    def __init__(self, head: str, tail: str) -> None:
        self.head = head
        self.tail = tail

    @classmethod
    def learn(cls, payload: str, value: Any, path: tuple[str | int, ...], before: str
              ) -> StringSlot | None:
        """The slot of ``payload`` (which parses to ``value``) holding the string at
        ``path``, found as the first string after the first ``before``; ``None`` if that is
        not where the string at ``path`` is.
        """
        at = payload.find(before)
        if at < 0:
            return None
        match = _STRING.match(payload, at + len(before))
        if match is None:
            return None
        head, tail = payload[: match.start(1)], payload[match.end(1):]
        text = _get(value, path)
        probe = "\x00" if text != "\x00" else "\x01"
        try:
            probed = orjson.loads(head + orjson.dumps(probe).decode() + tail)
        except orjson.JSONDecodeError:
            return None
        if probed != _replaced(value, path, probe):
            return None
        return cls(head, tail)

    def read(self, payload: str) -> str | None:
        """The open string of ``payload`` if it has this slot's shape, else ``None``."""
        if payload.startswith(self.head) and payload.endswith(self.tail):
            # A payload shorter than head and tail together gives an empty or negative
            # slice: no string.
            try:
                text = orjson.loads(payload[len(self.head): len(payload) - len(self.tail)])
            except orjson.JSONDecodeError:
                return None
            if type(text) is str:
                return text
        return None


def _get(value: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def _replaced(value: Any, path: tuple[str | int, ...], new: Any) -> Any:
    """``value`` with ``new`` at ``path``, its containers on the way copied."""
    if not path:
        return new
    key, rest = path[0], path[1:]
    copy: Any = list(value) if type(value) is list else dict(value)
    copy[key] = _replaced(value[key], rest, new)
    return copy
