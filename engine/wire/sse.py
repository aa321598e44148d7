"""A sans-IO decoder for Server-Sent Events (the WHATWG ``text/event-stream`` format): the
one SSE reader of the project, for upstream streams, the CLI and the tests alike.

Feed it bytes as they arrive from the network, in chunks of any size; it returns every event
that is complete so far, as ``(event name, data)``, and keeps the rest. ``close`` ends the
input: a last event not followed by its blank line is whole then::

    >>> d = SSEDecoder()
    >>> d.feed(b"event: ping\\ndata: {}\\n\\ndata: par")
    [('ping', '{}')]
    >>> d.feed(b"tial\\n\\ndata: last")
    [('', 'partial')]
    >>> d.close()
    [('', 'last')]

:func:`decode_events` reads a whole body at once. An event without an ``event:`` field has the
name ``""`` (a browser would call it ``"message"``); its ``data:`` lines are joined by newlines.
Comments (``:``-lines), ``id:`` and ``retry:`` fields are ignored: LLM APIs do not use them.
"""

from __future__ import annotations

__all__ = ["SSEDecoder", "decode_events"]


class SSEDecoder:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """Return the ``(event, data)`` pairs completed by ``data``."""
        buffer = self._buffer + data
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # may be the first half of a CRLF split across reads
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, rest = buffer.split(b"\n\n")
        self._buffer = rest + held
        events = []
        for block in blocks:
            event = self._parse_block(block)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[tuple[str, str]]:
        """The input has ended: the last event if it lacked its blank line (else nothing)."""
        return self.feed(b"\n\n")

    @property
    def pending(self) -> bool:
        """Whether an incomplete event is buffered."""
        return bool(self._buffer.strip())

    @staticmethod
    def _parse_block(block: bytes) -> tuple[str, str] | None:
        if block[:6] == b"data: " and b"\n" not in block:  # one data line: most events
            return "", block[6:].decode("utf-8", "replace")
        name = ""
        data: list[str] = []
        for raw in block.split(b"\n"):
            if not raw or raw[0] == 0x3A:  # blank or ":" comment
                continue
            line = raw.decode("utf-8", "replace")
            field, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
        if not data and not name:
            return None
        return name, "\n".join(data)


def decode_events(body: bytes) -> list[tuple[str, str]]:
    """Every ``(event name, data)`` of a whole SSE body, the last one whole even without its
    blank line.

    >>> decode_events(b"event: a\\ndata: 1\\n\\ndata: [DONE]")
    [('a', '1'), ('', '[DONE]')]
    """
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.close()
