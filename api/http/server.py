"""Serving the app with hypercorn's trio worker, stopping cleanly on SIGTERM or SIGINT.

How long a connection may take, and for what:

* while it is idle (before its first request, between requests, and until a request's headers
  are complete) it is closed after ``server.keep_alive_sec``;
* a request's body must arrive within ``server.read_timeout_sec`` (the app reads it under
  Quart's ``BODY_TIMEOUT``; 408 after that);
* while the answer is produced nothing at this level limits it: a generation may run for
  minutes, and the model's own ``timeouts`` end it with an error in the caller's protocol.

hypercorn's ``read_timeout`` is therefore off: its trio worker applies it to every socket read,
including while the app is answering, and drops the connection without a response.

:func:`serve` is hypercorn's ``trio.serve`` for plain HTTP with one change to its connection
handler (:class:`_Connection`), for three faults of hypercorn 0.18's trio worker.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

from engine.core import Config
from engine.runtime import Models, configure_tracing, load_models

from .app import create_app
from .client_gone import CLIENT_GONE, ClientGone

__all__ = ["bind_sockets", "hypercorn_config", "run_server", "serve", "serve_until_signal"]

log = logging.getLogger("llm_router")


def hypercorn_config(config: Config, *, host: str, port: int) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.accesslog = None  # ours: api.http.access, one line per request
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.keep_alive_timeout = config.server.keep_alive_sec
    hc.read_timeout = None  # see the module docstring
    hc.graceful_timeout = 10.0
    # hypercorn's 100 reset some connections of a burst of a few hundred clients at once.
    hc.backlog = 1024
    hc.include_server_header = False
    return hc


class _IdleTimer:
    """hypercorn's idle-connection timer, started with ``start_soon``.

    hypercorn starts it with ``nursery.start`` from whichever task reports the connection
    idle, which after a response is the app's task: Quart-Trio cancels that task's nursery as
    soon as the response is sent, and the timer started inside it dies with it, so a
    keep-alive connection that served a request was never closed for being idle.
    """

    def __init__(self) -> None:
        self._scope: trio.CancelScope | None = None

    async def restart(self, task_group: Any, action: Callable[[], Awaitable[None]]) -> None:
        await self.stop()
        self._scope = scope = trio.CancelScope()
        task_group.spawn(_run_in_scope, scope, action)

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None


async def _run_in_scope(scope: trio.CancelScope, action: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await action()


class _Connection(TCPServer):
    """hypercorn's trio connection handler, fixed so that

    * an idle connection is closed after ``keep_alive_timeout`` also once it served a request
      (:class:`_IdleTimer`);
    * a connection whose client has gone is closed at once: hypercorn kept its socket open
      until the idle timer ran out;
    * a write that meets the connection being closed by the reading side (the client hung up
      mid-response) ends the response quietly: hypercorn let ``trio.BusyResourceError`` escape
      into the app, which logged it as a traceback;
    * a closed connection is freed at once: its protocol holds the connection's own bound
      methods, a reference cycle that left every connection to the cyclic collector;
    * a response that ends the connection (the client sent ``Connection: close``, or HTTP/1.0)
      closes it: the close runs in the app's task, which Quart-Trio cancels once the response
      is sent, and the cancellation stopped the close before the socket was shut, so the
      client waited for an end that never came.

    And one economy: the head of a response with a ``content-length`` (every JSON answer) is
    held back and written with its body, one system call instead of two; the empty write
    that ends such a response is skipped (:meth:`protocol_send`). Two more: a read has no
    cancel scope of its own when there is no read timeout (there is none, see the module
    docstring), and a request learns that its client left from the connection itself
    (:mod:`api.http.client_gone`), with no task of its own waiting for it.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.idle_task = _IdleTimer()  # type: ignore[assignment]
        self._head = b""  # a response head held back for its body
        self._gone = ClientGone()
        self.app = _OnConnection(self.app, self._gone)  # type: ignore[assignment]

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            vars(self).pop("protocol", None)
            vars(self).pop("_task_group", None)

    async def _read_data(self) -> None:
        # hypercorn's, without its per-read deadline (a cancel scope per read) when the
        # server has none (hypercorn_config); and the client's leaving is told to the
        # requests that watch for it (api.http.client_gone).
        if self.config.read_timeout is not None:
            await super()._read_data()
        else:
            receive_some, handle = self.stream.receive_some, self.protocol.handle
            while True:
                try:
                    data = await receive_some(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                await handle(RawData(bytes(data)))
                if data == b"":
                    break
            await handle(Closed())
        self._gone.left()
        await self.idle_task.stop()

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):  # no waiting inside: shutdown and close a socket
            await super()._close()

    async def protocol_send(self, event: Event) -> None:
        if type(event) is RawData:
            data = event.data
            if self._head:
                event, self._head = RawData(self._head + data), b""
            elif not data:
                return  # the end of a response with a content-length: nothing to write
            elif _sized_head(data):
                # The body follows at once (or the empty end, for a body-less response):
                # hypercorn writes each separately.
                self._head = data
                return
        elif self._head:  # closing or going idle: whatever is held goes first
            await self.protocol_send(RawData(b""))
        try:
            await super().protocol_send(event)
        except trio.BusyResourceError:  # only _close's send_eof sends alongside a write
            await self.protocol.handle(Closed())


class _OnConnection:
    """The app, as one connection calls it: each HTTP request's scope carries the
    connection's :class:`~api.http.client_gone.ClientGone`."""

    __slots__ = ("_app", "_gone")

    def __init__(self, app: Any, gone: ClientGone) -> None:
        self._app = app
        self._gone = gone

    async def __call__(self, scope: Any, *args: Any) -> None:
        if scope["type"] == "http":
            scope["extensions"][CLIENT_GONE] = self._gone
        await self._app(scope, *args)


def _sized_head(data: bytes) -> bool:
    """Whether ``data`` is the head of a final response with a ``content-length`` (not 1xx,
    whose answer may be long in coming, and not a stream's, whose head goes out at once).
    hypercorn writes a head in one piece and the app's header names in lower case."""
    return (data.startswith(b"HTTP/1.1 ") and data[9:10] != b"1"
            and b"\r\ncontent-length:" in data)


def bind_sockets(hc: HypercornConfig) -> Sockets:
    """Bind and listen before anything starts, so an address in use, an unknown host or a
    privileged port is one ``OSError`` here rather than a failure inside the app's lifespan."""
    sockets = hc.create_sockets()
    try:
        for sock in sockets.insecure_sockets:
            sock.listen(hc.backlog)
    except OSError:
        for sock in sockets.insecure_sockets:
            sock.close()
        raise
    return sockets


async def serve(
    app: Any,
    config: HypercornConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    sockets: Sockets | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``sockets`` (bound by :func:`bind_sockets`; by default bound here, on
    ``config.bind``), plain HTTP, until ``shutdown_trigger`` returns, then shut down
    gracefully; ``task_status.started`` gets the bound URLs.

    hypercorn's ``hypercorn.trio.serve`` (its ``worker_serve``), less TLS, QUIC and worker
    recycling, with :class:`_Connection` as the connection handler.
    """
    asgi = wrap_app(app, config.wsgi_max_body_size, "asgi")
    state: LifespanState = {}
    lifespan = Lifespan(asgi, config, state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            listeners = []
            binds = []
            if sockets is None:
                sockets = bind_sockets(config)
            for sock in sockets.insecure_sockets:
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            handler = partial(_Connection, asgi, config, context, ConnectionState(state.copy()))
            task_status.started(binds)
            try:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(partial(
                        trio.serve_listeners, handler, listeners, handler_nursery=connections
                    ))
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                # Idle connections close now; busy ones get graceful_timeout to finish.
                await context.terminated.set()
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def serve_until_signal(
    config: Config, *, hc: HypercornConfig, sockets: Sockets, models: Models,
    on_listening: Callable[[list[str]], Awaitable[None]],
    stop_when: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT (or until ``stop_when`` returns), then shut down
    gracefully. ``on_listening`` gets the bound URLs once connections are being accepted.
    Traces are exported if the ``OTEL_*`` environment variables ask (engine.runtime.tracing)."""
    if configure_tracing():
        log.info("tracing: exporting OpenTelemetry spans")
    app = create_app(config, preloaded=models)
    stop = trio.Event()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                stop.set()
                return

    async def watch_trigger(trigger: Callable[[], Awaitable[object]]) -> None:
        await trigger()
        stop.set()

    async def watch() -> None:
        async with trio.open_nursery() as watchers:
            watchers.start_soon(watch_signals)
            if stop_when is not None:
                watchers.start_soon(watch_trigger, stop_when)
            await stop.wait()
            watchers.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        binds = await nursery.start(
            partial(serve, app, hc, sockets=sockets, shutdown_trigger=stop.wait)
        )
        await on_listening(binds)
        _freeze_start_up_heap()
        # serve() returns after its graceful shutdown; then the watchers are done too.


def _freeze_start_up_heap() -> None:
    """Take what start-up made out of the cyclic garbage collector's sight.

    Modules, the config, the routing model, compiled templates and the app live as long as the
    process, yet every full (generation 2) collection would walk them all again: tens of
    milliseconds with the whole server stopped, every few seconds under load. Collected once
    here and frozen (``gc.freeze``), they are never scanned again; full collections then cover
    only what serving made since.
    """
    gc.collect()
    gc.freeze()


async def _log_listening(binds: list[str]) -> None:
    log.info("llm-router listening on %s", ", ".join(binds))


def run_server(config: Config, *, host: str, port: int) -> None:
    """Load the models, then serve until SIGTERM or SIGINT. A model that cannot be loaded
    raises here, before anything listens."""
    models = load_models(config)
    hc = hypercorn_config(config, host=host, port=port)
    sockets = bind_sockets(hc)
    trio.run(partial(serve_until_signal, config, hc=hc, sockets=sockets, models=models,
                     on_listening=_log_listening))
