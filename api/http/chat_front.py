"""The chat endpoints' lean path: an ASGI middleware that answers ``POST
/v1/chat/completions`` and ``POST /v1/messages`` itself and hands every other request to the
Quart app behind it.

A gateway's traffic is almost all chat requests, and for them Quart's machinery is pure cost:
URL routing, a request and a response object with werkzeug headers, request and app contexts,
signals, before/after hooks, and two tasks per request (Quart-Trio reads the body in one and
answers in the other). Here the answer (:class:`~api.http.chat.ChatEndpoint`, shared with the
Quart routes that serve the other spellings of these paths) runs in the server's own task,
with what the Quart app does for it done directly:

* an :class:`~api.http.access.Exchange` per request, finished once (a stream's body finishes
  its own), with status 499 when the client left first;
* the body read within ``server.read_timeout_sec`` (408) and ``server.max_body_bytes`` (413),
  only once the caller is authenticated (a refused caller's body is never read);
* once the body is in, the client's leaving cancels the answer (and with it the upstream
  call), as Quart-Trio's receiving task does: the server cancels it
  (``api.http.client_gone``), or, under a server that does not offer that, a task waiting
  for ``http.disconnect`` does;
* refusals in the caller's protocol, an unexpected error as a 500 in it (logged with its
  traceback), and the request id headers on every response.

It sits inside :class:`~api.http.relay.EndBodies` and the stream write deadline, which treat
its responses as any other.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.typing import ASGIReceiveCallable as Receive
from hypercorn.typing import ASGISendCallable as Send
from hypercorn.typing import Scope

from engine.core import new_request_id
from engine.errors import PayloadTooLarge, RequestTimeout, RouterError
from engine.runtime import Gateway
from engine.wire import ANTHROPIC, OPENAI, WireProtocol

from .access import Exchange, Observer
from .chat import ChatEndpoint, Reply, error_reply
from .client_gone import CLIENT_GONE, ClientGone
from .connection import HOLD_HEAD
from .relay import ChatBody

__all__ = ["ChatFront"]

log = logging.getLogger("llm_router")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PROTOCOLS = {"/v1/chat/completions": OPENAI, "/v1/messages": ANTHROPIC}
_NONE: dict[str, Any] = {}


class ChatFront:
    """ASGI middleware: the two chat endpoints answered here, everything else by ``app``."""

    def __init__(self, app: ASGIApp, endpoint: ChatEndpoint, observer: Observer,
                 gateway: Callable[[], Gateway | None], *, max_body_bytes: int,
                 read_timeout: float) -> None:
        self._app = app
        self._endpoint = endpoint
        self._observer = observer
        self._gateway = gateway
        self._max_body_bytes = max_body_bytes
        self._read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            protocol = _PROTOCOLS.get(scope["path"])
            if protocol is not None:
                await self._serve(protocol, scope, receive, send)
                return
        await self._app(scope, receive, send)

    async def _serve(self, protocol: WireProtocol, scope: Any, receive: Receive,
                     send: Send) -> None:
        exchange = Exchange()
        request_id = new_request_id()
        path: str = scope["path"]
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        gone: ClientGone | None = (scope.get("extensions") or _NONE).get(CLIENT_GONE)
        try:
            if gone is not None:  # the server cancels the request when the client leaves
                with trio.CancelScope() as request_scope:
                    body = _Body(receive, request_scope, partial(gone.watch, request_scope),
                                 headers.get("content-length"), limit=self._max_body_bytes,
                                 timeout=self._read_timeout)
                    try:
                        await self._reply(protocol, headers, body, exchange, request_id, path,
                                          scope, send)
                    finally:
                        gone.unwatch(request_scope)
            else:  # a task waits for ``http.disconnect``
                async with trio.open_nursery() as nursery:
                    watch = partial(nursery.start_soon, _watch, receive, nursery.cancel_scope)
                    body = _Body(receive, nursery.cancel_scope, watch,
                                 headers.get("content-length"), limit=self._max_body_bytes,
                                 timeout=self._read_timeout)
                    await self._reply(protocol, headers, body, exchange, request_id, path,
                                      scope, send)
                    nursery.cancel_scope.cancel()  # the watcher
        finally:
            if not exchange.streaming:
                self._observer.finish(exchange, self._gateway(), method="POST", path=path,
                                      request_id=request_id)

    async def _reply(self, protocol: WireProtocol, headers: dict[str, str], body: _Body,
                     exchange: Exchange, request_id: str, path: str, scope: Any,
                     send: Send) -> None:
        try:
            reply = await self._endpoint.answer(
                protocol, headers=headers, read_body=body.read, exchange=exchange,
                request_id=request_id, method="POST", path=path, scope=scope)
        except RouterError as err:
            reply = self._endpoint.refused(err, protocol, exchange, request_id)
        except Exception as exc:
            log.exception("internal error on POST %s", path, exc_info=exc)
            reply = error_reply(RouterError("internal error"), protocol)
        await _send(reply, exchange, request_id, send, close=not body.done,
                    hold_head=(scope.get("extensions") or _NONE).get(HOLD_HEAD))


class _Body:
    """A request's body, read on demand within the size and time limits."""

    __slots__ = ("_declared", "_limit", "_receive", "_request", "_timeout", "_watch", "done")

    def __init__(self, receive: Receive, request: trio.CancelScope,
                 watch: Callable[[], object], declared: str | None, *, limit: int,
                 timeout: float) -> None:
        self._receive = receive
        self._request = request  # cancelling it ends the request
        self._watch = watch  # from when the body is in: the client's leaving cancels it
        self._declared = declared
        self._limit = limit
        self._timeout = timeout
        #: Whether the whole body was received. A reply to a request whose body was not
        #: (refused before or while reading it) closes the connection: what is left of the
        #: body is still on its way, and the client must not send its next request after it.
        self.done = False

    async def read(self) -> bytes:
        """The whole body; from then on the client's leaving is watched, and ends the request.

        Raises:
            PayloadTooLarge: it is larger than ``server.max_body_bytes``.
            RequestTimeout: it did not arrive within ``server.read_timeout_sec``.
        """
        limit = self._limit
        declared = self._declared
        if declared is not None and declared.isascii() and declared.isdigit() and (
                int(declared) > limit):
            raise PayloadTooLarge(
                f"request body is {int(declared)} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        # A bare scope: trio.move_on_after's inside, without its generator.
        with trio.CancelScope(deadline=trio.current_time() + self._timeout) as deadline:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self._request.cancel()  # the client left: 499
                    await trio.lowlevel.checkpoint()
                chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            raise RequestTimeout(
                f"the request body did not arrive within server.read_timeout_sec "
                f"({self._timeout} s)")
        self.done = True
        self._watch()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _watch(receive: Receive, gone: trio.CancelScope) -> None:
    """Cancel ``gone`` (the request's work) when the client disconnects."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.cancel()


async def _send(reply: Reply, exchange: Exchange, request_id: str, send: Send, *,
                close: bool, hold_head: Callable[[], None] | None = None) -> None:
    rid = request_id.encode()
    headers = [(name.encode("latin-1"), value.encode("latin-1"))
               for name, value in reply.headers.items()]
    headers += ((b"x-llm-router-request-id", rid), (b"x-request-id", rid))
    if close:
        headers.append((b"connection", b"close"))
    exchange.status = reply.status
    body = reply.body
    if type(body) is bytes:
        exchange.mark_first_byte()
        headers.insert(1, (b"content-length", b"%d" % len(body)))  # after content-type
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": headers, "trailers": False})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    assert isinstance(body, ChatBody)
    if hold_head is not None:  # the body's first piece (its opening event) is at hand
        hold_head()
    await send({"type": "http.response.start", "status": reply.status, "headers": headers,
                "trailers": False})
    try:
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await body.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
