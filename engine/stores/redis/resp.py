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
    """Feed it bytes as they arrive; :meth:`next` returns each complete reply, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._at = 0

    def feed(self, data: bytes | bytearray) -> None:
        if self._at:
            del self._buffer[: self._at]
            self._at = 0
        self._buffer += data

    def next(self) -> Reply | _NeedData:
        parsed = self._parse(self._at)
        if parsed is None:
            return NEED_DATA
        reply, self._at = parsed
        return reply

    def _line(self, at: int) -> tuple[bytes, int] | None:
        end = self._buffer.find(b"\r\n", at)
        if end < 0:
            return None
        return bytes(self._buffer[at:end]), end + 2

    def _parse(self, at: int) -> tuple[Reply, int] | None:
        found = self._line(at)
        if found is None:
            return None
        line, at = found
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest, at
        if kind == b":":
            return int(rest), at
        if kind == b"-":
            return ReplyError(rest.decode("utf-8", "replace")), at
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None, at
            if len(self._buffer) < at + size + 2:
                return None
            return bytes(self._buffer[at:at + size]), at + size + 2
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None, at
            items: list[Reply] = []
            for _ in range(count):
                parsed = self._parse(at)
                if parsed is None:
                    return None
                item, at = parsed
                items.append(item)
            return items, at
        raise ValueError(f"not a RESP2 reply: {line[:40]!r}")
