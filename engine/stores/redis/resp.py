"""RESP2, the Redis wire protocol, without I/O: commands to bytes, bytes to replies.

A reply is ``bytes`` (simple and bulk strings), ``int``, ``None`` (a null bulk string or
array), a ``list`` of replies, or a :class:`ReplyError` (a ``-ERR ...`` line: returned, not
raised, so one failed command of a pipeline leaves the others' replies in place).

>>> encode(("SET", "k", b"v", 5))
b'*4\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nv\\r\\n$1\\r\\n5\\r\\n'
>>> parser = Parser()
>>> parser.feed(b"+OK\\r\\n:42\\r\\n*2\\r\\n$1\\r\\na\\r\\n$-1\\r\\n-ERR no\\r\\n$3\\r\\nab")
>>> [parser.next() for _ in range(5)]
[b'OK', 42, [b'a', None], ReplyError('ERR no'), NEED_DATA]
>>> parser.feed(b"c\\r\\n")
>>> parser.next()
b'abc'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["NEED_DATA", "Parser", "Reply", "ReplyError", "encode"]


class ReplyError(Exception):
    """An error reply from Redis (``-WRONGTYPE ...``, ``-NOSCRIPT ...``)."""

    @property
    def kind(self) -> str:
        """The error's first word: ``ERR``, ``WRONGTYPE``, ``NOSCRIPT``..."""
        return str(self.args[0]).split(" ", 1)[0]

    def __repr__(self) -> str:
        return f"ReplyError({self.args[0]!r})"


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

Reply = bytes | int | None | list["Reply"] | ReplyError
Arg = str | bytes | int | float


def _bulk(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        data = arg
    elif isinstance(arg, str):
        data = arg.encode()
    elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
        data = repr(arg).encode()
    else:
        raise TypeError(f"a Redis argument must be str, bytes, int or float, not {type(arg)}")
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode(command: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(command) + b"".join(_bulk(arg) for arg in command)


class Parser:
    """Feed it bytes as they arrive; :meth:`next` returns each complete reply, in order.

    Incremental: a reply that arrives over many reads (an ``XRANGE`` of thousands of entries)
    is parsed as its bytes come, each element once; the arrays not yet complete wait on a
    stack until their last element arrives.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._at = 0
        self._open: list[tuple[list[Reply], int]] = []  # arrays being filled, and their sizes

    def feed(self, data: bytes | bytearray) -> None:
        if self._at:
            del self._buffer[: self._at]
            self._at = 0
        self._buffer += data

    def next(self) -> Reply | _NeedData:
        buffer, at, open_ = self._buffer, self._at, self._open
        while True:
            end = buffer.find(b"\r\n", at)
            if end < 0:
                self._at = at
                return NEED_DATA
            kind = buffer[at]
            reply: Reply
            if kind == 0x24:  # $: a bulk string
                size = int(buffer[at + 1:end])
                if size < 0:
                    reply, at = None, end + 2
                elif len(buffer) < end + size + 4:
                    self._at = at
                    return NEED_DATA
                else:
                    reply, at = bytes(buffer[end + 2:end + 2 + size]), end + size + 4
            elif kind == 0x2A:  # *: an array
                count = int(buffer[at + 1:end])
                at = end + 2
                if count > 0:
                    open_.append(([], count))
                    continue
                reply = None if count < 0 else []
            elif kind == 0x2B:  # +: a simple string
                reply, at = bytes(buffer[at + 1:end]), end + 2
            elif kind == 0x3A:  # :: an integer
                reply, at = int(buffer[at + 1:end]), end + 2
            elif kind == 0x2D:  # -: an error
                reply = ReplyError(bytes(buffer[at + 1:end]).decode("utf-8", "replace"))
                at = end + 2
            else:
                raise ValueError(f"not a RESP2 reply: {bytes(buffer[at:end][:40])!r}")
            while open_:
                items, count = open_[-1]
                items.append(reply)
                if len(items) < count:
                    break
                open_.pop()
                reply = items
            else:
                self._at = at
                return reply
