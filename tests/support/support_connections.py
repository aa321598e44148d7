"""A TCP relay that counts its open connections, for tests about upstream keep-alive.

Put it between the router and the fake upstream (a model's ``base_url`` on the relay's
``url``): every connection the router opens to the upstream is one relayed connection, and it
is counted until either side closes it, and the relay notes which side closed it first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

import trio

__all__ = ["CountingRelay", "open_counting_relay"]


@dataclass
class CountingRelay:
    url: str = ""  # "http://127.0.0.1:PORT", set once listening
    open: int = 0  # connections open right now
    opened: int = 0  # connections accepted in all
    closed_by_client: int = 0  # connections the client (the router) closed first


@asynccontextmanager
async def open_counting_relay(target: str) -> AsyncIterator[CountingRelay]:
    """Relay loopback TCP connections to ``target`` (``http://host:port``) until the block
    ends, counting them."""
    parts = urlsplit(target)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    relay = CountingRelay()

    async def pump(source: trio.SocketStream, sink: trio.SocketStream,
                   done: trio.CancelScope, *, from_client: bool) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        if from_client and not done.cancel_called:
            relay.closed_by_client += 1
        done.cancel()  # one side closed: close both

    async def handle(client: trio.SocketStream) -> None:
        relay.open += 1
        relay.opened += 1
        try:
            async with client:
                server = await trio.open_tcp_stream(host, port)
                async with server, trio.open_nursery() as nursery:
                    nursery.start_soon(partial(pump, client, server, nursery.cancel_scope,
                                               from_client=True))
                    nursery.start_soon(partial(pump, server, client, nursery.cancel_scope,
                                               from_client=False))
        finally:
            relay.open -= 1

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        sockname = listeners[0].socket.getsockname()
        relay.url = f"http://127.0.0.1:{sockname[1]}"
        try:
            yield relay
        finally:
            nursery.cancel_scope.cancel()
