"""One client connection: hypercorn's HTTP/1.1 protocol over a trio socket stream.

hypercorn's trio worker drives its sans-IO protocol (``ProtocolWrapper``: h11, or h2 on
upgrade) from a connection handler, ``TCPServer``. :class:`Connection` is that handler for
plain HTTP, rewritten for faults of hypercorn 0.18 and for what it costs a request:

* An idle connection is closed after ``keep_alive_timeout``, also once it served a request:
  hypercorn started its idle timer from the app's task, which Quart-Trio cancels once the
  response is sent, so the timer died with it.
* The idle timer is a deadline on the connection's reading, not a task: hypercorn spawned and
  cancelled a timer task around every request (three passes of the scheduler). The deadline
  is set when the connection goes idle and lifted when a request's head arrives; a server
  shutting down closes its idle connections at once (:class:`IdleConnections`).
* A connection whose client has gone is closed at once (hypercorn kept it until the idle
  timer ran out), and the requests on it that watch for it are cancelled
  (:mod:`api.http.client_gone`), with no task of their own waiting for ``http.disconnect``.
* A write that meets the connection closed by the reading side (the client hung up
  mid-response) ends the response quietly: hypercorn let ``trio.BusyResourceError`` escape
  into the app, which logged it as a traceback.
* A closed connection is freed at once: its protocol holds the connection's bound methods, a
  reference cycle that left every connection to the cyclic collector.
* A response that ends the connection (``Connection: close``, HTTP/1.0) closes it even though
  the close runs in the app's task, which Quart-Trio cancels once the response is sent.
* The end of a request's stream never waits behind body pieces the app left unread, and
  events for an app that has finished are dropped: a 413 sent while its body was still
  arriving kept the request and its connection open until the server stopped.
* The head of a response with a ``content-length`` (every JSON answer) is held back and
  written with its body: one system call instead of two. So is a stream's head when the
  app asks (:data:`HOLD_HEAD`): it then has the stream's first piece in hand.
* Reads and writes pass the scheduler only when they must wait
  (:mod:`engine.runtime.socket_io`), and so do the send lock and the app's event queue
  (:mod:`engine.runtime.channels`, :class:`_TaskGroup`). hypercorn's handler made about a
  dozen passes of trio's run loop per request where two are needed: one waiting for the
  request, one for the app's task to start.

hypercorn's read timeout is not applied (the server config has none: :mod:`api.http.server`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import parse_socket_addr

from engine.runtime import channel_receive, channel_send, socket_receive_some, socket_send_all

from .client_gone import CLIENT_GONE, ClientGone

__all__ = ["HOLD_HEAD", "Connection", "IdleConnections"]

#: The scope extension under which a request finds a callable that holds its response's
#: head back until the first piece of its body, to write both at once. A stream calls it
#: when it has its first piece in hand (its opening event): a head held for a piece that
#: had to be waited for would delay the stream's headers, which clients time.
HOLD_HEAD = "llm_router.hold_head"

MAX_RECV = 2**16
#: Every this many reads the loop lets other tasks run even if no read had to wait: a client
#: that pipelines requests as fast as they are read cannot hold the scheduler.
_EAGER_READS = 16


class IdleConnections:
    """The server's connections that are idle now, so a shutdown can close them at once."""

    __slots__ = ("_idle", "closing")

    def __init__(self) -> None:
        self._idle: set[Connection] = set()
        self.closing = False

    def add(self, connection: Connection) -> None:
        self._idle.add(connection)

    def discard(self, connection: Connection) -> None:
        self._idle.discard(connection)

    def close_all(self) -> None:
        """The server is shutting down: close the idle connections now, and any other as
        soon as it goes idle."""
        self.closing = True
        for connection in list(self._idle):
            connection.close_now()


class Connection:
    """hypercorn's connection handler for plain HTTP over ``stream`` (see the module
    docstring); ``await`` it to serve the connection to its end."""

    def __init__(self, app: Any, config: HypercornConfig, context: WorkerContext,
                 state: LifespanState, idle: IdleConnections,
                 stream: trio.SocketStream) -> None:
        self.config = config
        self.context = context
        self.state = state
        self.stream = stream
        self.send_lock = trio.Lock()
        self._idle_set = idle
        self._gone = ClientGone()
        self._hold = _Hold()  # the next head is to be held (HOLD_HEAD)
        self.app = _OnConnection(app, self._gone, self._hold)
        self._head = b""  # a response head held back for its body
        # The reading loop runs in this scope; its deadline is the idle timeout while the
        # connection is idle, none while a request is being read or answered.
        self._reading = trio.CancelScope()
        self._going_idle()

    def __await__(self) -> Any:
        return self.run().__await__()

    async def run(self) -> None:
        socket = self.stream.socket
        try:
            client = parse_socket_addr(socket.family, socket.getpeername())
            server = parse_socket_addr(socket.family, socket.getsockname())
            async with _TaskGroup() as task_group:
                self.protocol = ProtocolWrapper(
                    cast(AppWrapper, self.app), self.config, self.context, task_group,
                    ConnectionState(self.state), False, client, server,
                    self.protocol_send, "http/1.1")
                await self.protocol.initiate()
                await self._read_data()
        except OSError:
            pass
        finally:
            self._idle_set.discard(self)
            await self._close()
            vars(self).pop("protocol", None)  # the protocol holds our bound methods

    # ---- reading ----------------------------------------------------------------------------

    async def _read_data(self) -> None:
        handle = self.protocol.handle
        stream = self.stream
        reads = 0
        with self._reading:
            while True:
                try:
                    data = await socket_receive_some(stream, MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                await handle(RawData(data))
                if not data:
                    break
                reads += 1
                if reads % _EAGER_READS == 0:
                    await trio.lowlevel.checkpoint()
        # The idle deadline passed, the client closed, or the connection failed.
        await handle(Closed())
        self._gone.left()

    def _going_idle(self) -> None:
        if self._idle_set.closing:
            self._reading.deadline = -math.inf
        else:
            self._reading.deadline = trio.current_time() + self.config.keep_alive_timeout
            self._idle_set.add(self)

    def _going_busy(self) -> None:
        self._reading.deadline = math.inf
        self._idle_set.discard(self)

    def close_now(self) -> None:
        """End the reading loop now, closing the connection (an idle one, at shutdown)."""
        self._reading.deadline = -math.inf

    # ---- writing ----------------------------------------------------------------------------

    async def protocol_send(self, event: Event) -> None:
        if type(event) is RawData:
            data = event.data
            if self._head:
                data, self._head = self._head + data, b""
            elif not data:
                return  # the end of a response with a content-length: nothing to write
            elif _sized_head(data) or (self._hold.on and data.startswith(b"HTTP/1.1 ")):
                # The body follows at once (or the empty end, for a body-less response):
                # hypercorn writes each separately.
                self._head, self._hold.on = data, False
                return
            await self._write(data)
            return
        if self._head:  # closing or going idle: whatever is held goes first
            data, self._head = self._head, b""
            await self._write(data)
        if type(event) is Updated:
            if event.idle:
                self._going_idle()
            else:
                self._going_busy()
        elif type(event) is Closed:
            await self._close()
            await self.protocol.handle(Closed())

    async def _write(self, data: bytes) -> None:
        lock = self.send_lock
        try:
            lock.acquire_nowait()
            free = True
        except trio.WouldBlock:
            free = False  # waited for outside the handler: see engine.runtime.channels
        if not free:
            await lock.acquire()
        try:
            await socket_send_all(self.stream, data, shield=True)  # never cut mid-write
        # Busy: only _close's send_eof sends alongside a write.
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            await self.protocol.handle(Closed())
        finally:
            lock.release()

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):  # no waiting inside: shutdown and close a socket
            try:
                await self.stream.send_eof()
            except (trio.BrokenResourceError, trio.BusyResourceError,
                    trio.ClosedResourceError):
                pass  # already gone
            await self.stream.aclose()


class _TaskGroup(TaskGroup):
    """hypercorn's task group for one connection, whose app event queue passes the
    scheduler only when it must wait: when the app asks for an event that has not arrived,
    or the protocol hands one to an app that has fallen ``max_app_queue_size`` behind."""

    async def spawn_app(self, app: Any, config: HypercornConfig, scope: Any,
                        send: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        put, take = trio.open_memory_channel[Any](config.max_app_queue_size)
        assert self._nursery is not None
        self._nursery.start_soon(_run_app, app, config, scope, take, send)
        return partial(_to_app, put, take)


async def _to_app(put: trio.MemorySendChannel[Any], take: trio.MemoryReceiveChannel[Any],
                  event: Any) -> None:
    """Queue ``event`` for the app (waiting for room: a body is read at the app's pace), and
    drop it once the app has finished.

    ``http.disconnect`` ends the stream (the response is out, or the client left): it never
    waits, and body pieces the app left unread make room for it. A request refused before
    its body was read (a 413) filled the queue with them, and the stream's end, sent from the
    app's own task, waited for room for ever: the connection and its request stayed open
    until the server stopped.
    """
    try:
        if event["type"] == "http.disconnect":
            while True:
                try:
                    put.send_nowait(event)
                    return
                except trio.WouldBlock:
                    try:
                        take.receive_nowait()  # an unread body piece, of no use now
                    except trio.WouldBlock:
                        break  # an unbuffered queue: wait for the app, as for any event
        await channel_send(put, event)
    except trio.BrokenResourceError:
        pass  # the app has finished: nobody reads its queue


async def _run_app(app: Any, config: HypercornConfig, scope: Any,
                   take: trio.MemoryReceiveChannel[Any],
                   send: Callable[[Any], Awaitable[None]]) -> None:
    """hypercorn's app task: the app's failure is logged, and the stream ends either way."""
    try:
        await app(scope, partial(channel_receive, take), send, trio.to_thread.run_sync,
                  trio.from_thread.run)
    except trio.Cancelled:
        raise
    except BaseExceptionGroup as error:
        _, others = error.split(trio.Cancelled)
        if others is None:
            raise
        await config.log.exception("Error in ASGI Framework")
    except Exception:
        await config.log.exception("Error in ASGI Framework")
    finally:
        take.close()  # what is still to come for the app is dropped (_to_app)
        await send(None)


class _Hold:
    """A connection's :data:`HOLD_HEAD`: a flag the request sets (not a bound method of the
    connection, which the connection's app would hold: a reference cycle)."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False

    def __call__(self) -> None:
        self.on = True


class _OnConnection:
    """The app, as one connection calls it: each HTTP request's scope carries the
    connection's :class:`~api.http.client_gone.ClientGone` and its :data:`HOLD_HEAD`."""

    __slots__ = ("_app", "_gone", "_hold")

    def __init__(self, app: Any, gone: ClientGone, hold: Callable[[], None]) -> None:
        self._app = app
        self._gone = gone
        self._hold = hold

    async def __call__(self, scope: Any, *args: Any) -> None:
        if scope["type"] == "http":
            extensions = scope["extensions"]
            extensions[CLIENT_GONE] = self._gone
            extensions[HOLD_HEAD] = self._hold
        await self._app(scope, *args)


def _sized_head(data: bytes) -> bool:
    """Whether ``data`` is the head of a final response with a ``content-length`` (not 1xx,
    whose answer may be long in coming, and not a stream's, whose head goes out at once).
    hypercorn writes a head in one piece and the app's header names in lower case."""
    return (data.startswith(b"HTTP/1.1 ") and data[9:10] != b"1"
            and b"\r\ncontent-length:" in data)
