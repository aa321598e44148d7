"""A streamed chat answer's body, and the guarantee that it ends.

A stream's handler returns before its body is sent: the body (:class:`ChatBody`) relays the
feed's batches as SSE, and its end (closing the feed, which cancels the upstream call;
settling the exchange: in-flight gauge, counters, access line, span) must run exactly once,
however the response ends.

Quart ends a body it has entered (``async with response.response`` closes it), but not one
it never entered. That happens with Quart-Trio on hypercorn: the client's ``http.disconnect``
cancels the request's nursery, and a cancellation requested while the handler is finishing
(in the scheduler batch that delivered the stream's head) lands at the next checkpoint, which
is the server's ``send`` of the response start (hypercorn takes its send lock there), before
the body is entered. (Over loopback, clients closing their socket at random moments around
the head's arrival hit it about once in 200-400 streams, each leaving the in-flight gauge
and an upstream call held for good.) An async generator body would not help even if it were
closed then: one that never started skips its ``finally``. So the end is :meth:`ChatBody.end`,
idempotent, called when the body is done and by :meth:`ChatBody.aclose`; and :class:`EndBodies`,
an ASGI middleware, calls it for every body a request made once the app is done with the
request, whether or not the body was ever iterated.

The end is synchronous on purpose: it runs inside a cancelled scope (the client left),
where any ``await`` would raise at once. Should it ever need to await, that part goes under
``trio.CancelScope(shield=True)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.typing import ASGIReceiveCallable as Receive
from hypercorn.typing import ASGISendCallable as Send
from hypercorn.typing import Scope

from engine.errors import RouterError
from engine.messages import Event, Finish
from engine.runtime import ChatStream
from engine.wire import Encoder

from .access import Exchange, Observer

__all__ = ["SSE_HEADERS", "ChatBody", "EndBodies"]

#: The head of every event stream the router serves (a chat stream, a run's events, the
#: dashboard's feed): no caching, and no buffering by a proxy in front.
SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache",
               "x-accel-buffering": "no"}

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODIES = "llm_router.bodies"  # the scope key of a request's bodies (EndBodies)


class ChatBody:
    """The SSE body of a streamed chat answer: the opening event, the batches, and a clean
    end or an error event. Each step is one write: what arrived while the last write went
    out (or, for the first, while the head was made) joins it. Each write waits for the
    client (``StreamWriteDeadline`` bounds the wait); a client disconnect cancels the
    iteration.
    ``scope`` is the request's ASGI scope, where :class:`EndBodies` finds it;
    ``ended`` settles the exchange (the request's context is gone by then).

    An iterator object rather than an async generator: a generator's frame would hold the
    body that holds the generator (a reference cycle per stream), and one that never started
    cannot be made to run its ``finally``.
    """

    __slots__ = ("_done", "_encoder", "_ended", "_exchange", "_last", "_observer", "_settle",
                 "_started", "_stream")

    def __init__(self, stream: ChatStream, encoder: Encoder, *, exchange: Exchange,
                 observer: Observer, ended: Callable[[], None], scope: Any) -> None:
        self._stream = stream
        self._encoder = encoder
        self._exchange = exchange
        self._observer = observer
        self._settle = ended
        self._last: Event | None = None
        self._started = self._done = self._ended = False
        scope[_BODIES].append(self)

    def __aiter__(self) -> ChatBody:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            self.end()
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            self._exchange.mark_first_byte()
            chunks = [self._encoder.start()]
        else:
            try:
                batch = await self._stream.__anext__()
            except StopAsyncIteration:
                self._done = True
                self.end()
                raise
            except RouterError as err:
                return self._failed(err)
            chunks = [self._encode(batch)]
        # What has arrived meanwhile goes out in the same write.
        while not self._done:
            try:
                batch = self._stream.next_ready()
            except trio.WouldBlock:
                break
            except StopAsyncIteration:
                self._done = True  # the next call ends the body
                break
            except RouterError as err:
                chunks.append(self._failed(err))
                break
            chunks.append(self._encode(batch))
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _encode(self, batch: list[Event]) -> bytes:
        if batch:
            self._last = batch[-1]
        return self._encoder.encode_many(batch)

    def _failed(self, err: RouterError) -> bytes:
        self._done = True
        self._exchange.error = err.code
        return self._encoder.error(err)

    async def aclose(self) -> None:
        """What Quart calls once it is done with the body: :meth:`end`."""
        self.end()

    def end(self) -> None:
        """Close the feed (cancelling the upstream call) and settle the exchange; once."""
        if self._ended:
            return
        self._ended = True
        self._stream.close()
        last = self._last
        self._observer.stream_ended(self._exchange, last if type(last) is Finish else None)
        self._settle()


class EndBodies:
    """ASGI middleware: every :class:`ChatBody` made for a request is ended once the app is
    done with the request, also when its body was never iterated (see the module
    docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        bodies: list[ChatBody] = []
        try:
            # A copy: ASGI middleware leaves the server's scope as it was.
            await self._app({**scope, _BODIES: bodies}, receive, send)  # type: ignore[arg-type]
        finally:
            for body in bodies:
                body.end()
