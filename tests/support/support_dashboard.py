"""Reading the dashboard's event stream (``GET /stats/events``) in tests, over a bare
socket: closing it is what a closed tab does, and nothing is left for the garbage collector."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import orjson
import trio

__all__ = ["Events", "events"]


class Events:
    """One open stream over a bare socket (closing it is a closed tab): its frames as they
    come, ``(event name, parsed data)``."""

    def __init__(self, sock: trio.SocketStream) -> None:
        self._sock = sock
        self._raw = b""  # chunked, as received
        self._body = b""  # de-chunked, not yet returned
        self.head = b""

    async def _receive(self) -> None:
        data = await self._sock.receive_some(1 << 16)
        if not data:
            raise AssertionError("the router ended the stream")
        self._raw += data

    async def open(self) -> int:
        """Read the response's head; its status."""
        while b"\r\n\r\n" not in self._raw:
            await self._receive()
        self.head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        return int(self.head.split(b" ", 2)[1])

    def _dechunk(self) -> None:
        while (end := self._raw.find(b"\r\n")) >= 0:
            size = int(self._raw[:end].split(b";")[0], 16)
            if len(self._raw) < end + 2 + size + 2:
                return
            self._body += self._raw[end + 2:end + 2 + size]
            self._raw = self._raw[end + 2 + size + 2:]

    async def next(self) -> tuple[str, Any]:
        """The next frame: ``("snapshot", {...})``, or ``("heartbeat", None)``."""
        self._dechunk()
        while b"\n\n" not in self._body:
            await self._receive()
            self._dechunk()
        frame, self._body = self._body.split(b"\n\n", 1)
        if frame.startswith(b":"):
            return "heartbeat", None
        event, data = "message", None
        for line in frame.split(b"\n"):
            if line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data = orjson.loads(line[5:])
        return event, data

    async def until(self, shows: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first snapshot that ``shows`` what is awaited."""
        with trio.fail_after(15):
            while True:
                event, data = await self.next()
                if event == "snapshot" and shows(data):
                    return data


@asynccontextmanager
async def events(url: str, key: str = "", run: str | None = None
                 ) -> AsyncIterator[Events]:
    """``GET /stats/events`` of the router at ``url`` with ``key``, following ``run``; the
    socket is closed when the block ends."""
    where = urlsplit(url)
    query = "" if run is None else f"?run={run}"
    sock = await trio.open_tcp_stream(where.hostname, where.port)
    async with sock:
        await sock.send_all(
            f"GET /stats/events{query} HTTP/1.1\r\nhost: {where.netloc}\r\n"
            f"authorization: Bearer {key}\r\naccept: text/event-stream\r\n\r\n".encode())
        stream = Events(sock)
        assert await stream.open() == 200, stream.head
        assert b"content-type: text/event-stream" in stream.head.lower()
        yield stream
