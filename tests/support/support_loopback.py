"""A loopback TCP listener for the tests' relays: serve each accepted connection with a
handler until the block ends, and tell the URL it listens on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import trio

__all__ = ["serve_loopback"]


@asynccontextmanager
async def serve_loopback(
    handle: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[str]:
    """Listen on an ephemeral 127.0.0.1 port, calling ``handle`` for each connection, and
    yield ``http://127.0.0.1:PORT``; on leaving, stop listening and cancel the handlers."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        try:
            yield f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        finally:
            nursery.cancel_scope.cancel()
