"""The upstream transport's HTTP/1.1 codec (``engine.runtime.http1``), held to h11's readings.

h11 is the reference: hypercorn serves the router with it, and the transport used it until
the codec replaced it. Random requests are written the same, random responses (valid and
not, cut at random places) read the same, except where the codec is stricter on purpose: a
connection is not reused after a response with bytes after its end or with both
``Transfer-Encoding`` and ``Content-Length``.
"""

from __future__ import annotations

import itertools

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.runtime.http1 import (
    END,
    MAX_LINE_BYTES,
    NEED_DATA,
    Head,
    ProtocolError,
    ResponseReader,
    encode_request,
)

_SETTINGS = settings(max_examples=400, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])

# ---- requests --------------------------------------------------------------------------

_TOKEN_CHARS = "-!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_names = st.one_of(st.text(_TOKEN_CHARS, min_size=1, max_size=12).map(str.encode),
                   st.binary(min_size=1, max_size=6)).filter(
    lambda name: name.lower() not in (b"host", b"content-length", b"transfer-encoding"))
_values = st.binary(max_size=20)


def _h11_request(method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                 body: bytes) -> bytes:
    conn = h11.Connection(our_role=h11.CLIENT)
    out = conn.send(h11.Request(method=method, target=target, headers=headers))
    if body:
        out += conn.send(h11.Data(data=body))
    out += conn.send(h11.EndOfMessage())
    return out


@_SETTINGS
@given(method=st.sampled_from(["POST", "GET", "PUT"]),
       target=st.sampled_from([b"/v1/chat/completions", b"/", b"/a%20b?x=1&y=%C3%A9"]),
       extra=st.lists(st.tuples(_names, _values), max_size=6),
       body=st.binary(max_size=40))
@example(method="POST", target=b"/", extra=[(b"x", b" padded")], body=b"")
@example(method="POST", target=b"/", extra=[(b"x", b"a\r\nInjected: 1")], body=b"")
@example(method="POST", target=b"/", extra=[(b"x", b"a\x00b")], body=b"")
@example(method="POST", target=b"/", extra=[(b"x", b"tab\tinside")], body=b"")
def test_a_request_is_written_as_h11_writes_it_or_refused_as_h11_refuses_it(
        method: str, target: bytes, extra: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [(b"Host", b"api.example.com"), *extra,
               (b"Content-Length", str(len(body)).encode())]
    try:
        expected: bytes | None = _h11_request(method, target, headers, body)
    except h11.LocalProtocolError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            encode_request(method, target, headers, body)
    else:
        assert encode_request(method, target, headers, body) == expected


@pytest.mark.parametrize(("method", "target", "headers", "body", "message"), [
    ("PO ST", b"/", [(b"Host", b"h")], b"", "method"),
    ("POST", b"/a b", [(b"Host", b"h")], b"", "target"),
    ("POST", b"/", [(b"Host", b"h"), (b"bad name", b"v")], b"", "header name"),
    ("POST", b"/", [(b"Host", b"h"), (b"x", b"a\nb")], b"", "line break"),
    ("POST", b"/", [(b"Host", b"h"), (b"Content-Length", b"3")], b"ab", "body's length"),
    ("POST", b"/", [(b"Host", b"h")], b"ab", "Content-Length"),
    ("POST", b"/", [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")], b"",
     "Content-Length only"),
    ("POST", b"/", [(b"Content-Length", b"0")], b"", "Host"),
])
def test_a_request_that_is_not_well_formed_is_refused(
        method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
        message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_request(method, target, headers, body)


# ---- responses -------------------------------------------------------------------------


@st.composite
def _responses(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A response's bytes, often valid, sometimes not; and whether the connection ends
    after them."""
    bad = draw(st.integers(0, 3)) == 0  # else well-formed (which h11 may still refuse)

    def pick(good: list[bytes], wrong: list[bytes] = []) -> bytes:  # noqa: B006
        return draw(st.sampled_from(good + wrong if bad else good))

    newline = draw(st.sampled_from([b"\r\n"] * 6 + [b"\n"]))
    out = b""
    for _ in range(draw(st.integers(0, 2))):  # informational responses first
        out += b"HTTP/1.1 1%02d Continue" % draw(st.sampled_from([0, 2, 3])) + newline
        out += draw(st.sampled_from([b"", b"x-hint: 1" + newline])) + newline
    version = draw(st.sampled_from([b"1.1"] * 4 + [b"1.0"]))
    code = int(pick([b"200", b"200", b"201", b"204", b"304", b"400", b"429", b"500"],
                    [b"101", b"99"]))
    reason = pick([b" OK", b" ", b"", b" Too Many\tRequests", b" caf\xc3\xa9"], [b" bad\x00nul"])
    out += b"HTTP/%s %03d%s" % (version, code, reason) + newline
    body = draw(st.binary(max_size=60))
    framing = draw(st.sampled_from(["length", "length", "chunked", "chunked", "close", "both"]))
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        lines.append(pick([
            b"content-type: application/json", b"X-Request-Id: abc-123", b"x-empty:",
            b"x-spaces:   padded value  ", b"X-Obs: caf\xc3\xa9", b"Connection: close",
            b"connection: keep-alive", b"Connection: Keep-Alive, CLOSE",
            b"x-fold: first  <NL>  continued<NL>\tand again",
        ], [b"bad header: 1", b"x-fold: first", b" continued", b"\tcontinued by tab",
            b"x-cr: a\rb"]))
    if framing in ("length", "both"):
        length = len(body) + (draw(st.sampled_from([0, 0, -1, 1])) if bad else 0)
        value = pick([b"%d", b"%d", b"%d, %d", b" %d ", b"0%d"], [b"%dx", b"+%d"])
        lines.append(b"Content-Length: " + value.replace(b"%d", str(max(length, 0)).encode()))
        if bad and draw(st.integers(0, 2)) == 0:
            lines.append(b"content-length: %d" % (max(length, 0) + draw(st.integers(0, 1))))
    if framing in ("chunked", "both"):
        lines.append(b"Transfer-Encoding: " + pick([b"chunked", b"chunked", b"Chunked"],
                                                   [b"gzip, chunked", b"identity"]))
    draw(st.randoms()).shuffle(lines)
    out += b"".join(line.replace(b"<NL>", newline) + newline for line in lines) + newline
    if framing in ("chunked", "both"):
        rest = body
        while rest:
            size = draw(st.integers(1, max(1, len(rest))))
            piece, rest = rest[:size], rest[size:]
            ext = pick([b"", b"", b";name=value", b" ", b";x\tz"])
            digits = pick([b"%x", b"%X", b"%04x"], [b"%x!"]).decode() % len(piece)
            out += digits.encode() + ext + b"\r\n" + piece
            out += pick([b"\r\n"], [b"\n", b"xx"])
        out += b"0\r\n"
        out += pick([b"\r\n", b"\r\n", b"x-trailer: 1\r\n\r\n"], [b"bad trailer\r\n\r\n", b""])
    else:
        out += body
    if bad and draw(st.integers(0, 1)) == 0:
        out += draw(st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"\r\n", b"garbage"]))
    return out, draw(st.booleans())


def _normalized(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """h11 keeps one ``content-length`` (it drops equal repeats and reads a list of equal
    values as one) and lower-cases ``transfer-encoding``; the codec keeps the lines."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name == b"content-length":
            value = str(int(value.split(b",")[0].strip())).encode()
            if (name, value) in out:
                continue
        elif name == b"transfer-encoding":
            value = value.lower()
        out.append((name, value))
    return out


def _read_h11(pieces: list[bytes], eof: bool) -> tuple[object, ...]:
    """What h11 reads: ``("error",)`` or the response, its body, and whether the connection
    could carry the next request once the response was read."""
    conn = h11.Connection(our_role=h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "h"),
                                                              ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    head = None
    body = b""
    reusable = None
    try:
        for piece in [*pieces, *([b""] if eof else [])]:
            conn.receive_data(piece)
            while reusable is None:
                event = conn.next_event()
                if event is h11.NEED_DATA or type(event) is h11.ConnectionClosed:
                    break
                if type(event) is h11.Response:
                    head = (event.http_version, event.status_code, event.reason,
                            _normalized(list(event.headers)))
                elif type(event) is h11.Data:
                    body += event.data
                elif type(event) is h11.EndOfMessage:
                    reusable = (conn.their_state is h11.DONE and not conn.trailing_data[0]
                                and not conn.trailing_data[1])
    except h11.ProtocolError:
        return ("error",)
    if reusable is None:
        return ("error",) if eof else ("incomplete", head, body)
    return (head, body, reusable)


def _read_ours(pieces: list[bytes], eof: bool) -> tuple[object, ...]:
    reader = ResponseReader()
    head = None
    body = b""
    reusable = None
    try:
        for piece in [*pieces, *([b""] if eof else [])]:
            reader.feed(piece)
            while reusable is None:
                event = reader.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, Head):
                    head = (event.http_version, event.status_code, event.reason,
                            _normalized(event.headers))
                elif event is END:
                    reusable = reader.reusable
                else:
                    assert type(event) is bytes and event
                    body += event
    except ProtocolError:
        return ("error",)
    if reusable is None:
        return ("error",) if eof else ("incomplete", head, body)
    return (head, body, reusable)


@_SETTINGS
@given(response=_responses(), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_a_response_is_read_as_h11_reads_it(response: tuple[bytes, bool],
                                            cuts: list[int]) -> None:
    data, eof = response
    marks = sorted({0, len(data), *(cut for cut in cuts if cut < len(data))})
    pieces = [data[a:b] for a, b in itertools.pairwise(marks)]
    expected = _read_h11(pieces, eof)
    got = _read_ours(pieces, eof)
    if expected[0] == "incomplete" or got[0] == "incomplete":
        # h11 refuses some heads before their end (a first byte that cannot begin a status
        # line); the codec waits for the end. With the connection's end both refuse.
        expected, got = _read_h11(pieces, True), _read_ours(pieces, True)
    if len(expected) == 3 and len(got) == 3:
        names = {name for name, _ in got[0][3]}  # type: ignore[index]
        both = {b"transfer-encoding", b"content-length"} <= names
        # The codec's stricter reuse: not after bytes past the response's end (h11 keeps
        # them for the next response) nor after both framings (RFC 9112, section 6.3).
        assert got[:2] == expected[:2]
        assert got[2] == (expected[2] and not both)
    else:
        assert got == expected


def _read_all(data: bytes, *, head_only: bool = False) -> tuple[Head, bytes, ResponseReader]:
    reader = ResponseReader(head_only=head_only)
    reader.feed(data)
    head = reader.next_event()
    assert isinstance(head, Head)
    body = b""
    while (event := reader.next_event()) is not END:
        assert type(event) is bytes, event
        body += event
    return head, body, reader


def test_a_json_answer_in_one_read_is_a_head_a_piece_and_the_end() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 11\r\n\r\n{\"ok\":true}")
    head = reader.next_event()
    assert isinstance(head, Head)
    assert (head.status_code, head.reason, head.http_version) == (200, b"OK", b"1.1")
    assert head.headers == [(b"content-type", b"application/json"), (b"content-length", b"11")]
    assert reader.next_event() == b'{"ok":true}'
    assert reader.next_event() is END
    assert reader.done and reader.reusable


def test_a_chunked_stream_is_read_as_its_chunks_arrive() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    assert isinstance(reader.next_event(), Head)
    assert reader.next_event() == b"hel"
    assert reader.next_event() is NEED_DATA
    reader.feed(b"lo\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n")
    assert [reader.next_event() for _ in range(2)] == [b"lo world", END]
    assert reader.reusable


@pytest.mark.parametrize(("data", "reusable"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n", False),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n0\r\n\r\n", False),
    (b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", False),
])
def test_a_connection_is_reused_only_after_a_cleanly_framed_kept_alive_response(
        data: bytes, reusable: bool) -> None:
    assert _read_all(data)[2].reusable is reusable


def test_chunks_read_together_come_out_as_one_piece() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"6\r\ndata: \r\n3\r\none\r\n4\r\n two\r\n3\r\n t")
    assert isinstance(reader.next_event(), Head)
    assert reader.next_event() == b"data: one two t"
    assert reader.next_event() is NEED_DATA
    reader.feed(b"w\r\n0\r\n\r\n")
    assert [reader.next_event(), reader.next_event()] == [b"w", END]


def test_data_before_a_malformed_chunk_comes_out_before_the_error() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\none\r\n4\r\n two\r\nzz\r\n")
    assert isinstance(reader.next_event(), Head)
    assert reader.next_event() == b"one two"
    with pytest.raises(ProtocolError, match="chunk size line"):
        reader.next_event()


def test_a_body_framed_by_the_connections_end_ends_with_it() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
    assert isinstance(reader.next_event(), Head)
    assert reader.next_event() == b"part one, "
    assert reader.next_event() is NEED_DATA
    reader.feed(b"part two")
    reader.feed(b"")
    assert [reader.next_event(), reader.next_event()] == [b"part two", END]
    assert not reader.reusable


@pytest.mark.parametrize(("data", "head_only"), [
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", False),
    (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", True),
])
def test_responses_without_a_body_have_none_whatever_their_headers_say(
        data: bytes, head_only: bool) -> None:
    _, body, reader = _read_all(data, head_only=head_only)
    assert body == b"" and reader.reusable


def test_informational_responses_are_skipped() -> None:
    head, body, _ = _read_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                              b"Link: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert (head.status_code, body) == (200, b"ok")


def test_bare_line_feeds_and_folded_lines_are_read() -> None:
    head, body, _ = _read_all(b"HTTP/1.1 200 OK\nX-Long: one\n  two\nContent-Length: 1\n\n!")
    assert head.headers == [(b"x-long", b"one two"), (b"content-length", b"1")]
    assert body == b"!"


@pytest.mark.parametrize(("data", "message"), [
    (b"", "before answering"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "inside the response head"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", "4 bytes before the end"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "inside a chunk"),
    (b"\r\nHTTP/1.1 200 OK\r\n\r\n", "empty line"),
    (b"HTTP/2 200\r\n\r\n", "status line"),
    (b"HTTP/1.1 099 Odd\r\n\r\n", "status code"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "switched protocols"),
    (b"HTTP/1.1 200 OK\r\nbad name: 1\r\n\r\n", "header line"),
    (b"HTTP/1.1 200 OK\r\n folded: first\r\n\r\n", "folded header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size line"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", "CRLF"),
])
def test_a_malformed_or_cut_response_is_a_protocol_error(data: bytes, message: str) -> None:
    reader = ResponseReader()
    reader.feed(data)
    reader.feed(b"")
    with pytest.raises(ProtocolError, match=message):
        while reader.next_event() is not END:
            pass


def test_a_head_that_never_ends_is_refused_once_it_passes_the_limit() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * MAX_LINE_BYTES)
    with pytest.raises(ProtocolError, match="longer than"):
        reader.next_event()
