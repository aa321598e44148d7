"""A write deadline for streamed responses (``server.stream_write_timeout_sec``).

hypercorn's trio worker writes a response body with the client's TCP backpressure: a write
waits until the client's socket takes the bytes, shielded from cancellation. A client that
stops reading mid-stream parks its request task in such a write for good, holding the
connection and the upstream call behind it. Nothing inside the app can cancel that write; only
closing the connection ends it.

So the writes of a streamed (``text/event-stream``) response are counted, and one sweeper task
in the app's background nursery looks at them every quarter of the timeout. A write still in
progress ``timeout`` seconds after the sweeper first saw it (the client took nothing in that
time) gets its connection closed. That ends the stuck write, and the app sees the client
disconnect as for any client that leaves: the handler is cancelled, and the upstream call
with it. The hot path pays two counter increments per write; nothing is spawned per stream.

Closing is the one thing here beyond ASGI: it awaits the server's ``send(None)``, which is
what hypercorn itself does when an app returns, and which closes a connection whose response
is unfinished (hypercorn's ``HTTPStream.app_send``). ``tests/e2e/test_streaming.py`` pins it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

import trio
from hypercorn.typing import ASGIReceiveCallable as Receive
from hypercorn.typing import ASGISendCallable as Send
from hypercorn.typing import ASGISendEvent as Message
from hypercorn.typing import Scope

__all__ = ["StreamWriteDeadline"]

log = logging.getLogger("llm_router")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_EVENT_STREAM = b"text/event-stream"


class StreamWriteDeadline:
    """ASGI middleware: disconnect a streaming client that accepts no data for ``timeout``
    seconds. ``background`` gives the nursery the sweeper runs in (the app's)."""

    def __init__(
        self, app: ASGIApp, *, timeout: float, background: Callable[[], trio.Nursery]
    ) -> None:
        self._app = app
        self._timeout = timeout
        self._background = background
        self._streams: set[_Writes] = set()
        self._sweeping = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        writes = _Writes(self, send, scope)
        try:
            await self._app(scope, receive, writes.send)
        finally:
            self._streams.discard(writes)

    def _watch(self, writes: _Writes) -> None:
        self._streams.add(writes)
        if not self._sweeping:
            self._sweeping = True
            self._background().start_soon(self._sweep)

    async def _sweep(self) -> None:
        try:
            while True:
                await trio.sleep(self._timeout / 4)
                now = trio.current_time()
                for writes in list(self._streams):
                    if writes.done == writes.begun:
                        continue  # not writing
                    if writes.seen != writes.begun:
                        writes.seen, writes.seen_at = writes.begun, now
                    elif now - writes.seen_at >= self._timeout:
                        self._streams.discard(writes)
                        log.warning("%s: the client accepted no data for %g s; disconnected",
                                    writes.scope.get("path"), self._timeout)
                        self._background().start_soon(_disconnect, writes.server_send)
        finally:
            self._sweeping = False


class _Writes:
    """One response's writes: how many began and ended, once it is known to be streamed."""

    __slots__ = ("_owner", "begun", "done", "scope", "seen", "seen_at", "server_send")

    def __init__(self, owner: StreamWriteDeadline, send: Send, scope: Scope) -> None:
        self._owner = owner
        self.server_send = send
        self.scope = scope
        self.begun = 0
        self.done = 0
        self.seen = 0  # the write the sweeper saw in progress, and when
        self.seen_at = 0.0

    async def send(self, message: Message) -> None:
        if self.begun == 0 and message["type"] == "http.response.start" and _streamed(message):
            self._owner._watch(self)
        self.begun += 1
        await self.server_send(message)
        self.done += 1


async def _disconnect(send: Send) -> None:
    # Background nursery: never raise. See the module docstring for ``send(None)``.
    with trio.move_on_after(5):
        try:
            await send(None)  # type: ignore[arg-type]
        except Exception as exc:
            log.warning("could not close a stalled streaming connection: %r", exc)


def _streamed(start: Message) -> bool:
    headers: Iterable[tuple[bytes, bytes]] = start.get("headers", ())  # type: ignore[assignment]
    return any(
        name.lower() == b"content-type" and value.startswith(_EVENT_STREAM)
        for name, value in headers
    )
