"""A sans-IO HTTP/1.1 client codec: a request's bytes out, one response's head and body in.

The upstream transport (:mod:`engine.runtime.transport`) writes what :func:`encode_request`
returns and feeds what it reads to a :class:`ResponseReader`, one per response::

    >>> reader = ResponseReader()
    >>> reader.feed(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nhi")
    >>> head = reader.next_event(); head.status_code, head.headers
    (200, [(b'content-length', b'2')])
    >>> reader.next_event(), reader.next_event() is END, reader.reusable
    (b'hi', True, True)

Why not h11, which hypercorn uses and httpx's default transport too? A request and its
response cost h11 about 170 µs of CPU on the machine the router's benchmarks run on, over a
tenth of all a proxied request costs (its state machine, an event object per step, a
validating constructor per header list); this codec reads and writes the same bytes for
about a fifth of that, and a pinned answer takes 15% fewer instructions in all
(BENCHMARKS.md, section 18p). The router needs a small part of HTTP/1.1 from the upstreams
it is configured to call:

* Requests carry their whole body with a ``Content-Length``: no chunked uploads, no
  ``Expect: 100-continue``, no upgrades.
* A response's head is a status line (HTTP/1.0 or 1.1) and header lines ending at a blank
  line; bare LF line ends are read as CRLF, and an obsolete folded line is joined to the one
  before with a space (RFC 9112, section 5.2). Informational (1xx) responses are skipped;
  ``101 Switching Protocols`` is an error, since no upgrade was asked for.
* A body is framed by ``Transfer-Encoding: chunked``, by ``Content-Length``, or by the end of
  the connection; a response to ``HEAD``, a 204 and a 304 have none.

Where a lenient reading could take one response's bytes for another's (a desynchronized
connection answers the next request with the wrong body), it is strict: differing
``Content-Length`` values, a transfer coding other than ``chunked``, a malformed chunk, or a
head or chunk line that runs past :data:`MAX_LINE_BYTES` are a :class:`ProtocolError`; and
a connection is reused (:attr:`ResponseReader.reusable`) only after a response framed by
length or chunks, kept alive by both sides, with no byte after its end and no
``Content-Length`` beside its ``Transfer-Encoding`` (RFC 9112, section 6.3: such a message
"ought to be handled as an error"; its body is read by its chunks, and the connection closed).

The codec's readings are held to h11's on random responses, cut at random places, in
``tests/runtime/test_http1.py``.
"""

from __future__ import annotations

import functools
import re

__all__ = ["END", "MAX_LINE_BYTES", "NEED_DATA", "Head", "ProtocolError", "ResponseReader",
           "encode_request"]

#: The longest response head, or chunk line, the reader holds while it waits for its end.
MAX_LINE_BYTES = 64 * 1024


class ProtocolError(Exception):
    """The upstream's bytes are not an HTTP/1.1 response this codec reads (the transport
    turns it into ``httpx.RemoteProtocolError``)."""


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: :meth:`ResponseReader.next_event`: feed more bytes first.
NEED_DATA = _Sentinel("NEED_DATA")
#: :meth:`ResponseReader.next_event`: the response's body is complete.
END = _Sentinel("END")

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_VALUE_CHAR = rb"[^\x00\s]"  # visible, or obs-text (a byte above 0x7f)
# A field's value (RFC 9110's field-content): no space or tab at either end.
_VALUE = rb"(?:" + _VALUE_CHAR + rb"+(?:[ \t]+" + _VALUE_CHAR + rb"+)*)?"
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _VALUE + rb")[ \t]*")
_STATUS = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ((?:[ \t]|" + _VALUE_CHAR + rb")*))?")
_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\r\n]*)?[ \t]*")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_FOLD = re.compile(rb"[ \t]+")
_DIGITS = re.compile(rb"[0-9]{1,18}")

_FIELD_NAME = re.compile(_TOKEN)
_FIELD_VALUE = re.compile(_VALUE)
_TARGET = re.compile(rb"[\x21-\x7e]+")


@functools.lru_cache(maxsize=256)
def _request_line(method: str, target: bytes) -> bytes:
    if not _FIELD_NAME.fullmatch(method.encode("ascii", "replace")):
        raise ValueError(f"illegal request method {method!r}")
    if not _TARGET.fullmatch(target):
        raise ValueError(f"illegal request target {target[:80]!r}")
    return b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target)


# A request's header lines repeat (an upstream's host, key, content type, the defaults): each
# is checked once and kept, and the few that vary (the body's length, a trace id) are checked
# as they come.
@functools.lru_cache(maxsize=4096)
def _field_line(name: bytes, value: bytes) -> bytes:
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(f"illegal header name {name[:80]!r}")
    if not _FIELD_VALUE.fullmatch(value):
        raise ValueError(f"the {name.decode('latin-1')!r} header's value holds a line break, "
                         "a NUL, or space at an end")
    return b"%s: %s\r\n" % (name, value)


def encode_request(method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                   body: bytes) -> bytes:
    """A request's bytes: request line, ``headers`` as given (names in their case, in order),
    ``body``. ``headers`` must include ``Host`` and, for a body, its ``Content-Length``.

    Raises ``ValueError`` for what would not be one well-formed request: a method or target
    with spaces or control characters, a header name that is not a token, a value with a line
    break, a NUL or space at either end (h11's rule: RFC 9110's field-value), a
    ``Content-Length`` other than the body's length, a ``Transfer-Encoding``, or no
    ``Host``."""
    lines = [_request_line(method, target)]
    host = False
    length = None
    for name, value in headers:
        lines.append(_field_line(name, value))
        lowered = name.lower()
        if lowered == b"host":
            host = True
        elif lowered == b"content-length":
            if length is not None or value != b"%d" % len(body):
                raise ValueError(f"Content-Length {value[:40]!r} is not the body's length")
            length = value
        elif lowered == b"transfer-encoding":
            raise ValueError("a request body is sent with its Content-Length only")
    if not host:
        raise ValueError("a request needs a Host header")
    if body and length is None:
        raise ValueError("a request body needs its Content-Length")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


class Head:
    """A response's head: ``http_version`` (``b"1.1"``), ``status_code``, ``reason``, and
    ``headers``, its header lines in order as ``(name, value)`` with names lower-cased."""

    __slots__ = ("headers", "http_version", "reason", "status_code")

    def __init__(self, http_version: bytes, status_code: int, reason: bytes,
                 headers: list[tuple[bytes, bytes]]) -> None:
        self.http_version = http_version
        self.status_code = status_code
        self.reason = reason
        self.headers = headers

    def __repr__(self) -> str:
        return f"Head({self.status_code}, {self.reason!r}, {self.headers!r})"


# The reader's states.
_HEAD, _LENGTH, _CHUNK_LINE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class ResponseReader:
    """One response's bytes in, its head and body out (see the module docstring).

    :meth:`feed` what the connection reads (``b""`` at its end), then call
    :meth:`next_event` until it returns :data:`NEED_DATA`: it returns the :class:`Head`
    (informational responses skipped), then the body's pieces (non-empty ``bytes``: what
    arrived, the data of the chunks read so far joined), then :data:`END`. A malformed
    response raises :class:`ProtocolError`, and so does a connection that ends before the
    response does. ``head_only``: the response to a ``HEAD`` request (no body whatever it
    says).
    """

    __slots__ = ("_buffer", "_eof", "_failed", "_framing_clean", "_head_only", "_keep_alive",
                 "_remaining", "_state", "head")

    def __init__(self, *, head_only: bool = False) -> None:
        self._buffer = b""
        self._eof = False
        self._head_only = head_only
        self._state = _HEAD
        self._remaining = 0
        self._keep_alive = False
        self._framing_clean = True
        self._failed: ProtocolError | None = None  # found after data returned first
        #: The response's head once read, else ``None``.
        self.head: Head | None = None

    def feed(self, data: bytes) -> None:
        """Add what the connection read; ``b""``: the connection's end."""
        if data:
            self._buffer = self._buffer + data if self._buffer else data
        else:
            self._eof = True

    @property
    def done(self) -> bool:
        """The whole response, body included, has been read."""
        return self._state == _DONE

    @property
    def reusable(self) -> bool:
        """The connection may carry the next request: see the module docstring."""
        return (self._state == _DONE and self._keep_alive and self._framing_clean
                and not self._buffer and not self._eof)

    def next_event(self) -> Head | bytes | _Sentinel:
        """The next :class:`Head`, body piece or :data:`END`; or :data:`NEED_DATA`."""
        state = self._state
        if state == _HEAD:
            return self._read_head()
        if state == _LENGTH:
            return self._read_length()
        if state == _DONE:
            return END
        if state == _UNTIL_CLOSE:
            if self._buffer:
                data, self._buffer = self._buffer, b""
                return data
            if self._eof:
                self._state = _DONE
                return END
            return NEED_DATA
        return self._read_chunked()

    # ---- head ---------------------------------------------------------------------------

    def _read_head(self) -> Head | bytes | _Sentinel:
        while True:
            buffer = self._buffer
            end = buffer.find(b"\r\n\r\n")
            # Lines end in CRLF (the rule), unless a bare LF comes before the blank line.
            crlf = end >= 0 and buffer.count(b"\n", 0, end) == buffer.count(b"\r\n", 0, end)
            if crlf:
                after = end + 4
            else:
                match = _HEAD_END.search(buffer)
                if match is None:
                    return self._wait("the response head", buffer)
                end, after = match.span()
            if end == 0 or buffer[0] in b"\r\n":
                raise ProtocolError("the response began with an empty line")
            text = buffer[:end]
            self._buffer = buffer[after:]
            lines = text.split(b"\r\n") if crlf else _LINE_END.split(text)
            head = self._parse_head(lines)
            if head is not None:
                return head

    def _parse_head(self, lines: list[bytes]) -> Head | None:
        status = _STATUS.fullmatch(lines[0])
        if status is None:
            raise ProtocolError(f"illegal status line {lines[0][:80]!r}")
        version, code_text, reason = status.groups()
        code = int(code_text)
        if code < 100:
            raise ProtocolError(f"illegal status code {code_text!r}")
        headers = _header_fields(lines, 1)
        if code < 200:
            if code == 101:
                raise ProtocolError("the upstream switched protocols, which was not asked for")
            return None  # informational: the response follows
        length_text = None
        chunked = False
        close = version != b"1.1"
        for name, value in headers:
            if name == b"content-length":
                # Repeats must be the same digits ("5, 5" is 5; "05" beside "5" is an error).
                for part in value.split(b","):
                    part = part.strip(b" \t")
                    if not _DIGITS.fullmatch(part):
                        raise ProtocolError(f"illegal Content-Length {value[:40]!r}")
                    if length_text is not None and part != length_text:
                        raise ProtocolError("conflicting Content-Length values")
                    length_text = part
            elif name == b"transfer-encoding":
                if chunked or value.strip(b" \t").lower() != b"chunked":
                    raise ProtocolError(f"unsupported Transfer-Encoding {value[:40]!r}")
                chunked = True
            elif name == b"connection" and b"close" in [
                    token.strip(b" \t").lower() for token in value.split(b",")]:
                close = True
        length = None if length_text is None else int(length_text)
        self._keep_alive = not close
        # Both framings, whatever the status: the message "ought to be handled as an error".
        self._framing_clean = not (chunked and length is not None)
        if self._head_only or code == 204 or code == 304:
            self._state = _DONE
        elif chunked:
            self._state = _CHUNK_LINE
        elif length is not None:
            self._remaining = length
            self._state = _LENGTH if length else _DONE
        else:
            self._state = _UNTIL_CLOSE
            self._keep_alive = False
        self.head = Head(version, code, reason or b"", headers)
        return self.head

    # ---- body ---------------------------------------------------------------------------

    def _read_length(self) -> bytes | _Sentinel:
        if self._remaining == 0:
            self._state = _DONE
            return END
        buffer = self._buffer
        if not buffer:
            if self._eof:
                raise ProtocolError(
                    f"the upstream closed the connection {self._remaining} bytes before the "
                    "end of the body")
            return NEED_DATA
        remaining = self._remaining
        if len(buffer) <= remaining:
            self._buffer = b""
            data = buffer
        else:
            data, self._buffer = buffer[:remaining], buffer[remaining:]
        self._remaining = remaining - len(data)
        return data

    def _read_chunked(self) -> bytes | _Sentinel:
        """The data of every chunk already read, as one piece: an upstream that sends each
        event of a stream as a chunk sends several at once when it runs ahead of the network,
        and each piece costs a pass of the stream's relay. A malformed chunk after good ones
        is raised by the next call, so the data before it is not lost."""
        if self._failed is not None:
            raise self._failed
        pieces: list[bytes] = []
        try:
            stop = self._chunks(pieces)
        except ProtocolError as exc:
            if not pieces:
                raise
            self._failed = exc
        if not pieces:
            return stop
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _chunks(self, pieces: list[bytes]) -> _Sentinel:
        """Reads the buffer's chunks, their data into ``pieces``, to the body's end (returns
        :data:`END`) or to where more bytes are needed (:data:`NEED_DATA`). The buffer is
        read at an offset and cut once, on the way out: cut after each chunk, it was copied
        from there to its end each time, which made a burst of small chunks quadratic."""
        buffer = self._buffer
        size = len(buffer)
        pos = 0
        state = self._state
        try:
            while True:
                if state == _CHUNK_DATA:
                    if pos == size:
                        waiting = "a chunk"
                        break
                    remaining = self._remaining
                    end = min(pos + remaining, size)
                    pieces.append(buffer[pos:end])
                    self._remaining = remaining = remaining - (end - pos)
                    pos = end
                    if not remaining:
                        state = _CHUNK_END
                elif state == _CHUNK_END:
                    if size - pos < 2:
                        if pos < size and buffer[pos] != 0x0D:
                            raise ProtocolError("a chunk did not end with CRLF")
                        waiting = "a chunk's end"
                        break
                    if not buffer.startswith(b"\r\n", pos):
                        raise ProtocolError("a chunk did not end with CRLF")
                    pos += 2
                    state = _CHUNK_LINE
                elif state == _CHUNK_LINE:
                    end = buffer.find(b"\r\n", pos)
                    if end < 0:
                        waiting = "a chunk's size line"
                        break
                    line = _CHUNK.fullmatch(buffer, pos, end)
                    if line is None:
                        raise ProtocolError(
                            f"illegal chunk size line {buffer[pos:min(end, pos + 40)]!r}")
                    pos = end + 2
                    length = int(line[1], 16)
                    if length and buffer.startswith(b"\r\n", pos + length):
                        # The whole chunk is in hand (the usual case): its data, its end.
                        pieces.append(buffer[pos:pos + length])
                        pos += length + 2
                        continue
                    self._remaining = length
                    state = _CHUNK_DATA if length else _TRAILER
                else:  # _TRAILER: header lines after the last chunk, to a blank line
                    if buffer.startswith(b"\r\n", pos) or buffer.startswith(b"\n", pos):
                        pos += 2 if buffer[pos] == 0x0D else 1
                        state = _DONE
                        return END
                    match = _HEAD_END.search(buffer, pos)
                    if match is None:
                        waiting = "the trailer"
                        break
                    _header_fields(_LINE_END.split(buffer[pos:match.start()]), 0)
                    pos = match.end()
                    state = _DONE
                    return END
        finally:
            self._state = state
            if pos:
                self._buffer = buffer[pos:]
        return self._wait(waiting, self._buffer)

    def _wait(self, what: str, buffer: bytes) -> _Sentinel:
        if self._eof:
            if self._state == _HEAD and not buffer and self.head is None:
                raise ProtocolError("the upstream closed the connection before answering")
            raise ProtocolError(f"the upstream closed the connection inside {what}")
        if len(buffer) > MAX_LINE_BYTES:
            raise ProtocolError(f"{what} is longer than {MAX_LINE_BYTES} bytes")
        return NEED_DATA


def _header_fields(lines: list[bytes], start: int) -> list[tuple[bytes, bytes]]:
    """``lines[start:]`` as ``(lower-cased name, value)``; a folded line (one that begins
    with a space or tab) is joined to the one before it by a single space first."""
    if any(line[:1] in (b" ", b"\t") for line in lines[start:]):
        lines = _unfolded(lines, start)
        start = 0
    fields = []
    for index in range(start, len(lines)):
        match = _HEADER.fullmatch(lines[index])
        if match is None:
            raise ProtocolError(f"illegal header line {lines[index][:80]!r}")
        name, value = match.groups()
        fields.append((name.lower(), value or b""))
    return fields


def _unfolded(lines: list[bytes], start: int) -> list[bytes]:
    joined: list[bytes] = []
    for line in lines[start:]:
        fold = _FOLD.match(line)
        if fold is None:
            joined.append(line)
        elif not joined:
            raise ProtocolError("a folded header line begins the head")
        else:
            joined[-1] += b" " + line[fold.end():]
    return joined
