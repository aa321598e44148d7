"""The SSE decoder (``engine.wire.sse``) against the line-by-line reader it replaced, which
split the bytes into blocks and decoded each line alone: the same events, chunk by chunk,
for any bytes cut anywhere (newline runs of any length, CR, comments, other fields, invalid
UTF-8)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.wire.sse import SSEDecoder


class LineByLine:
    """The decoder as it was: bytes split at blank lines, each line decoded alone."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        buffer = self._buffer + data
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, rest = buffer.split(b"\n\n")
        self._buffer = rest + held
        return [e for e in map(self._parse_block, blocks) if e is not None]

    def close(self) -> list[tuple[str, str]]:
        return self.feed(b"\n\n")

    @staticmethod
    def _parse_block(block: bytes) -> tuple[str, str] | None:
        name = ""
        data: list[str] = []
        for raw in block.split(b"\n"):
            if not raw or raw[0] == 0x3A:
                continue
            field, _, value = raw.decode("utf-8", "replace").partition(":")
            if value[:1] == " ":
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
        if not data and not name:
            return None
        return name, "\n".join(data)


pieces = st.sampled_from([
    b"data: ", b"data:", b"event: ", b"event:x", b": comment", b"id: 1", b"\n", b"\n\n",
    b"\n\n\n", b"\r", b"\r\n", b" ", b"{\"a\":1}", b"[DONE]", b"x", "é€😀".encode(),
    b"\xe2\x82", b"\xff", b"\xc3", b"\x80\x80", b":",
])


@given(st.lists(pieces, max_size=40), st.lists(st.integers(0, 400), max_size=8))
def test_the_same_events_as_line_by_line(parts: list[bytes], cuts: list[int]) -> None:
    body = b"".join(parts)
    bounds = [0, *sorted(c for c in cuts if c <= len(body)), len(body)]
    new, old = SSEDecoder(), LineByLine()
    for start, end in pairwise(bounds):
        assert new.feed(body[start:end]) == old.feed(body[start:end])
    assert new.pending == bool(old._buffer.strip())
    assert new.close() == old.close()


lines = st.sampled_from([
    b"event: ping", b"event: a:b", b"event:", b"event: ", b"event:x", b"data: x", b"data: ",
    b"data:y", b"data: a\rb", b": c", b"id: 1", b"", b"data: \xff\xe2\x82", b"data: {\"a\": 1}",
    b"data", b"event",
])


@settings(max_examples=1000)
@given(st.lists(st.lists(lines, min_size=1, max_size=3), max_size=12),
       st.lists(st.integers(0, 300), max_size=8))
def test_the_same_events_as_line_by_line_for_blocks_of_lines(
    blocks: list[list[bytes]], cuts: list[int]
) -> None:
    # Whole lines, so that the common blocks (one data line, an event line and a data line)
    # come often, beside the others.
    body = b"".join(b"\n".join(block) + b"\n\n" for block in blocks)
    bounds = [0, *sorted(c for c in cuts if c <= len(body)), len(body)]
    new, old = SSEDecoder(), LineByLine()
    for start, end in pairwise(bounds):
        assert new.feed(body[start:end]) == old.feed(body[start:end])
    assert new.close() == old.close()


def test_a_held_cr_ends_its_line_when_the_next_piece_has_none() -> None:
    # A CR at the end of a read may be half a CRLF; a piece without a line end after it
    # shows it was a line end of its own, and here the end of an event.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\r") == []
    assert decoder.feed(b"x") == [("", "a")]


def test_a_long_event_arriving_in_many_reads_is_whole() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: {") == []
    for _ in range(500):
        assert decoder.feed(b"y" * 1000) == []
    assert decoder.pending
    assert decoder.feed(b"}\n\ndata: next") == [("", "{" + "y" * 500_000 + "}")]
    assert decoder.feed(b"\n\n") == [("", "next")]
    assert not decoder.pending
