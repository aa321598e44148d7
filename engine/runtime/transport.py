"""A lean HTTP/1.1 keep-alive transport for httpx, on trio and the router's own HTTP/1.1
codec (:mod:`engine.runtime.http1`).

Why not httpx's default transport (httpcore)? Its connection pool rescans every pooled
connection on each request start and end, with a readability syscall per idle connection and
a quadratic idle count; at 64 concurrent upstream requests that was the largest single cost
of a proxied call (about 30% of the router's CPU, measured with py-spy; see BENCHMARKS.md).
An LLM gateway talks to a handful of origins with many concurrent requests each, so this
transport keeps a LIFO stack of idle connections per origin and checks only the connection
it is about to reuse.

It implements httpx's public transport interface; the router's upstream client
(``engine.runtime.upstream``) calls :meth:`PooledTransport.send` with the request's parts
rather than an ``httpx.Request``, and gets an :class:`UpstreamResponse` back rather than an
``httpx.Response``: its status, its header lines as read, and its body read straight
off the connection, one piece per read. A body the upstream encoded (any ``Content-Encoding``)
is read through ``httpx.Response`` instead, so gzip, deflate and whatever else httpx decodes
are decoded by httpx, as before. The exception types (which ``engine.runtime.upstream``
translates into the router's errors) are httpx's own.

Timeouts come from the request's ``timeout`` extension, as httpx sets it: ``connect`` bounds
TCP connect plus TLS handshake, ``write`` each send, ``read`` each receive, ``pool`` the wait
for a free connection slot.

Idle connections expire after ``keepalive_expiry`` seconds. Checkout only looks at the most
recently used one, so the owner also runs :meth:`PooledTransport.expire_idle` in a background
task: every quarter of the expiry it closes the connections that have idled past it (or that
the server closed), so a burst's extra connections do not stay open after it. The request path
does no extra work for it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import certifi
import httpx
import trio

from .http1 import END, NEED_DATA, Head, ProtocolError, ResponseReader, encode_request
from .socket_io import receive_some, send_all

__all__ = ["PooledTransport", "UpstreamResponse"]

_READ_SIZE = 65536


def _deadline(timeout: float | None) -> float:
    """The deadline ``timeout`` seconds from now (``engine.runtime.socket_io`` applies it
    only to a read or write that has to wait)."""
    return float("inf") if timeout is None else trio.current_time() + timeout


class _Connection:
    __slots__ = ("idle_since", "origin", "reader", "stream")

    def __init__(self, stream: trio.abc.Stream, origin: tuple[bytes, str, int]) -> None:
        self.stream = stream
        self.origin = origin
        self.reader = ResponseReader()  # the response being read (a new one per request)
        self.idle_since = 0.0

    def _socket(self) -> Any:
        stream = self.stream
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        return getattr(stream, "socket", None)

    def reusable(self, expiry: float) -> bool:
        """Idle, not expired, and not closed by the server while it sat in the pool (a
        readable idle socket can only mean EOF or garbage)."""
        if time.monotonic() - self.idle_since > expiry:
            return False
        sock = self._socket()
        return sock is None or not sock.is_readable()

    async def aclose(self) -> None:
        with trio.move_on_after(1, shield=True):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


class _ResponseBody(httpx.AsyncByteStream):
    """A response's body as the connection reads it, one piece per read: an async iterator of
    its own (no generator, so one left half-read needs no finalizing). Read to its end, it hands its
    connection back to the pool at once, as ``httpx.Response`` closes a body read to its end."""

    def __init__(self, transport: PooledTransport, conn: _Connection, read: float | None):
        self._transport = transport
        self._conn = conn
        self._read = read
        self._done = False
        self._closed = False

    def __aiter__(self) -> _ResponseBody:
        return self

    async def __anext__(self) -> bytes:
        while not self._done:
            event = await self._transport._next_event(self._conn, self._read)
            if type(event) is bytes:
                return event
            if event is END:
                self._done = True
                await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Hand the connection back (read to its end) or close it: never waits unshielded,
        so it completes in a cancelled caller too (``engine.runtime.upstream`` relies on it).
        A second close does nothing."""
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if self._done and conn.reader.reusable:
            self._transport._release(conn)
        else:  # not read to the end (client went away, error): the connection is unusable
            self._done = True
            await self._transport._discard(conn)


class UpstreamResponse:
    """An upstream's response once its head is in. ``headers``: its header lines as read
    (``(name, value)`` pairs, names lower-cased, in order). The body is read with
    :meth:`chunks` (or :meth:`aread`) and released with :meth:`aclose`, which every caller
    must await, read or not."""

    __slots__ = ("_body", "_encoded", "headers", "reason", "status_code")

    def __init__(self, head: Head, body: _ResponseBody) -> None:
        self.status_code: int = head.status_code
        self.reason: bytes = head.reason
        self.headers = head.headers
        self._body = body
        self._encoded = any(name == b"content-encoding" for name, _ in head.headers)

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive (none empty), decoded. Read it once."""
        if self._encoded:  # httpx's decoders, exactly as an ``httpx.Response`` reads it
            return self.as_httpx().aiter_bytes()
        return self._body

    async def aread(self) -> bytes:
        """The whole body, decoded."""
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        await self._body.aclose()

    def as_httpx(self) -> httpx.Response:
        """This response as an ``httpx.Response`` reading the same body (httpx's transport
        interface; read one or the other)."""
        return httpx.Response(
            status_code=self.status_code,
            headers=self.headers,
            stream=self._body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": self.reason},
        )


class PooledTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 connections kept alive per origin; at most ``max_connections`` per origin."""

    def __init__(self, *, max_connections: int = 512, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._expiry = keepalive_expiry
        self._idle: dict[tuple[bytes, str, int], list[_Connection]] = {}
        self._slots: dict[tuple[bytes, str, int], trio.Semaphore] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    # ---- pool ---------------------------------------------------------------------------

    def _slot(self, origin: tuple[bytes, str, int]) -> trio.Semaphore:
        slot = self._slots.get(origin)
        if slot is None:
            slot = self._slots[origin] = trio.Semaphore(self._max_connections)
        return slot

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            self._forget(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.origin, []).append(conn)
        # The slot stays taken while the connection is idle in the pool: it is still open.

    def _forget(self, conn: _Connection) -> None:
        self._slot(conn.origin).release()

    async def _acquire(
        self, origin: tuple[bytes, str, int], timeouts: Mapping[str, float | None]
    ) -> tuple[_Connection, bool]:
        """A connection to ``origin`` and whether it was reused from the pool."""
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.reusable(self._expiry):
                return conn, True
            await self._discard(conn)
        slot = self._slot(origin)
        if slot.value:
            slot.acquire_nowait()
        else:
            try:
                with trio.fail_after(timeouts.get("pool") or float("inf")):
                    await slot.acquire()
            except trio.TooSlowError:
                raise httpx.PoolTimeout("no free upstream connection in time") from None
        try:
            return await self._connect(origin, timeouts.get("connect")), False
        except BaseException:
            slot.release()
            raise

    async def _connect(self, origin: tuple[bytes, str, int], timeout: float | None) -> _Connection:
        scheme, host, port = origin
        try:
            with trio.fail_after(timeout if timeout is not None else float("inf")):
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
                if scheme == b"https":
                    if self._ssl is None:
                        self._ssl = ssl.create_default_context(cafile=certifi.where())
                        self._ssl.set_alpn_protocols(["http/1.1"])
                    tls = trio.SSLStream(stream, self._ssl, server_hostname=host,
                                         https_compatible=True)
                    await tls.do_handshake()
                    stream = tls
        except trio.TooSlowError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from None
        return _Connection(stream, origin)

    # ---- I/O ----------------------------------------------------------------------------

    async def _next_event(self, conn: _Connection, timeout: float | None) -> Any:
        reader = conn.reader
        while True:
            try:
                event = reader.next_event()
            except ProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from None
            if event is not NEED_DATA:
                return event
            try:
                data = await receive_some(conn.stream, _READ_SIZE, deadline=_deadline(timeout))
            except trio.TooSlowError:
                raise httpx.ReadTimeout("upstream read timed out") from None
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise httpx.ReadError(f"upstream read failed: {exc}") from None
            reader.feed(data)

    async def _send(self, conn: _Connection, data: bytes, timeout: float | None) -> None:
        try:
            await send_all(conn.stream, data, deadline=_deadline(timeout))
        except trio.TooSlowError:
            raise httpx.WriteTimeout("upstream write timed out") from None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpx.WriteError(f"upstream write failed: {exc}") from None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's transport interface: :meth:`send` for an ``httpx.Request``."""
        body = await request.aread()
        response = await self.send(request.method, request.url, list(request.headers.raw), body,
                                   request.extensions.get("timeout", {}))
        return response.as_httpx()

    async def send(
        self, method: str, url: httpx.URL, headers: list[tuple[bytes, bytes]], body: bytes,
        timeouts: Mapping[str, float | None],
    ) -> UpstreamResponse:
        """Send one request (``headers`` complete: ``Host`` and ``Content-Length`` included,
        as ``httpx.Request`` makes them) and return the response once its head is in, its
        body to be read from it. ``timeouts`` as httpx's ``timeout`` extension. The router's
        upstream client calls this directly: building an ``httpx.Request`` only for this to
        take it apart again cost more than the rest of the call's bookkeeping."""
        scheme = url.raw_scheme
        origin = (scheme, url.host, url.port or (443 if scheme == b"https" else 80))
        try:
            out = encode_request(method, url.raw_path, headers, body)
        except ValueError as exc:
            raise httpx.LocalProtocolError(str(exc)) from None
        head_only = method == "HEAD"
        read, write = timeouts.get("read"), timeouts.get("write")
        for attempt in (1, 2):
            conn, reused = await self._acquire(origin, timeouts)
            reader = conn.reader = ResponseReader(head_only=head_only)
            try:
                await self._send(conn, out, write)
                event = await self._next_event(conn, read)
            except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
                await self._discard(conn)
                # A kept-alive connection the server closed just as we reused it: nothing was
                # answered, so the request was not processed; try once on a fresh connection.
                if reused and attempt == 1 and reader.head is None:
                    continue
                raise
            except BaseException:
                await self._discard(conn)
                raise
            return UpstreamResponse(event, _ResponseBody(self, conn, read))  # event: the Head
        raise AssertionError("unreachable")

    async def _discard(self, conn: _Connection) -> None:
        await conn.aclose()
        self._forget(conn)

    async def expire_idle(self) -> None:
        """Close expired idle connections (see the module docstring) until cancelled."""
        while True:
            await trio.sleep(self._expiry / 4)
            await self.close_expired()

    async def close_expired(self) -> int:
        """Close every idle connection that is past its expiry or closed by the server;
        return how many were closed."""
        expired: list[_Connection] = []
        for idle in self._idle.values():
            keep: list[_Connection] = []
            for conn in idle:
                (keep if conn.reusable(self._expiry) else expired).append(conn)
            if len(keep) < len(idle):
                idle[:] = keep  # in place, still oldest first
        for conn in expired:
            await self._discard(conn)
        return len(expired)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                await conn.aclose()
        self._idle.clear()
