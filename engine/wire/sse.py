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
    """The events of one stream, from its bytes in chunks of any size (see the module
    docstring).

    What a feed completes is decoded from UTF-8 in one piece (a text per event cost as much
    as the rest of an event's decoding): invalid bytes become U+FFFD as they would line by
    line, since a line break cannot fall inside a character. The unfinished rest stays
    bytes, as it may end inside one.
    """

    __slots__ = ("_buffer", "_more")

    def __init__(self) -> None:
        self._buffer = b""
        self._more: list[bytes] = []  # pieces after ``_buffer`` with no line end in them

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """Return the ``(event, data)`` pairs completed by ``data``."""
        if (self._buffer and b"\n" not in data and b"\r" not in data
                and self._buffer[-1] != 0x0D):  # a CR held back may end a line with ``data``
            # Inside a line (a long event arriving in many reads): kept as it came, joined
            # once its line ends, so that a long event costs time linear in its length.
            self._more.append(data)
            return []
        if self._more:
            self._more.append(data)
            data = b"".join(self._more)
            self._more.clear()
        buffer = self._buffer + data
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # may be the first half of a CRLF split across reads
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        last = buffer.rfind(b"\n\n")
        if last < 0:
            self._buffer = buffer + held
            return []
        # Events end at blank lines, taken two newlines at a time from the start of a run of
        # them (as ``bytes.split`` takes them): an odd run leaves its last one to the rest.
        run = last
        while run and buffer[run - 1] == 0x0A:
            run -= 1
        cut = run + (last + 2 - run) // 2 * 2
        self._buffer = buffer[cut:] + held
        events = []
        for block in buffer[: cut - 2].decode("utf-8", "replace").split("\n\n"):
            if block[:6] == "data: ":
                if "\n" not in block:  # one data line: most events
                    events.append(("", block[6:]))
                    continue
            elif block[:7] == "event: ":  # a name and one data line: Anthropic's events
                line = block.find("\n")
                if (line > 0 and block[line + 1 : line + 7] == "data: "
                        and block.find("\n", line + 1) < 0):
                    events.append((block[7:line], block[line + 7 :]))
                    continue
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
        return bool(self._buffer.strip()) or any(piece.strip() for piece in self._more)

    @staticmethod
    def _parse_block(block: str) -> tuple[str, str] | None:
        name = ""
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line[0] == ":":  # blank or a comment
                continue
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
