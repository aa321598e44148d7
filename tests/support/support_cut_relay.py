"""A TCP relay that drops a connection mid-response, for tests of clients that resume.

Put it between a client and the router (the client's server URL on the relay's ``url``).
The first connection is relayed until the response has carried a block (ending in a blank
line) that contains ``cut_after``, and is then closed at once, both ways, as a router that
crashed or a proxy that timed out would close it. Later connections are relayed whole, or,
with ``refuse_later``, closed as soon as they are accepted. Each connection's first bytes
(its request head) are kept, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio
from support_loopback import serve_loopback

__all__ = ["CutRelay", "open_cut_relay"]


@dataclass
class CutRelay:
    url: str = ""  # "http://127.0.0.1:PORT", set once listening
    requests: list[str] = field(default_factory=list)  # each connection's request head
    cut: bool = False  # the first connection has been cut


@asynccontextmanager
async def open_cut_relay(target: str, *, cut_after: bytes,
                         refuse_later: bool = False) -> AsyncIterator[CutRelay]:
    """Relay loopback connections to ``target`` (``http://host:port``) until the block ends,
    cutting the first one after the response block that holds ``cut_after``."""
    parts = urlsplit(target)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    relay = CutRelay()

    async def upstream(client: trio.SocketStream, server: trio.SocketStream, index: int,
                       done: trio.CancelScope) -> None:
        head = b""
        try:
            while data := await client.receive_some(65536):
                if b"\r\n\r\n" not in head:
                    head += data
                    if b"\r\n\r\n" in head:
                        relay.requests[index] = head.split(b"\r\n\r\n")[0].decode()
                await server.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()  # the client left: close both

    async def downstream(server: trio.SocketStream, client: trio.SocketStream,
                         cutting: bool) -> None:
        seen, sent = b"", 0
        try:
            while data := await server.receive_some(65536):
                if not cutting:
                    await client.send_all(data)
                    continue
                seen += data
                found = seen.find(cut_after)
                end = seen.find(b"\n\n", found) if found >= 0 else -1
                if end < 0:
                    await client.send_all(seen[sent:])
                    sent = len(seen)
                    continue
                await client.send_all(seen[sent:end + 2])
                relay.cut = True
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def handle(client: trio.SocketStream) -> None:
        index = len(relay.requests)
        relay.requests.append("")
        async with client:
            if index and refuse_later:
                return
            server = await trio.open_tcp_stream(host, port)
            async with server, trio.open_nursery() as nursery:
                nursery.start_soon(upstream, client, server, index, nursery.cancel_scope)
                await downstream(server, client, cutting=index == 0)
                nursery.cancel_scope.cancel()  # the router closed, or the cut: close both

    async with serve_loopback(handle) as relay.url:
        yield relay
