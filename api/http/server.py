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

:func:`serve` is hypercorn's ``trio.serve`` for plain HTTP with its own connection handler
(:mod:`api.http.connection`: fixes for hypercorn 0.18's trio worker, and fewer passes of the
scheduler per request).
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

from engine.core import Config
from engine.runtime import Models, configure_tracing, load_models

from .app import create_app
from .connection import Connection, IdleConnections

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


class _Listener(trio.abc.Listener[trio.SocketStream]):
    """A listening socket whose ``accept`` passes the scheduler only when no connection is
    waiting. trio's ``SocketListener`` yields after every accept, so a burst of clients
    connecting at once was taken one per pass of the run loop, each pass as long as the work
    of every request in flight: the last of 64 new connections waited for 64 passes before
    its first request was read."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock

    async def accept(self) -> trio.SocketStream:
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._sock)
                continue
            return trio.SocketStream(trio.socket.from_stdlib_socket(conn))

    async def aclose(self) -> None:
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
        await trio.lowlevel.checkpoint()


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
    recycling, with :class:`~api.http.connection.Connection` as the connection handler.
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
                listeners.append(_Listener(sock))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            idle = IdleConnections()
            handler = partial(Connection, asgi, config, context, ConnectionState(state.copy()),
                              idle)
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
                idle.close_all()
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
        _prepare_collector()
        # serve() returns after its graceful shutdown; then the watchers are done too.


#: Young (generation 1) collections between two full ones, at the least; CPython's is 10.
FULL_COLLECTION_EVERY = 100


def _prepare_collector() -> None:
    """Take what start-up made out of the cyclic garbage collector's sight, and make its full
    collections rarer.

    Modules, the config, the routing model, compiled templates and the app live as long as the
    process, yet every full (generation 2) collection would walk them all again: tens of
    milliseconds with the whole server stopped, every few seconds under load. Collected once
    here and frozen (``gc.freeze``), they are never scanned again; full collections then cover
    only what serving made since.

    What serving made is mostly the requests in flight, and a stream is in flight for its whole
    length: with 1,000 open streams the collector tracks about 300,000 of their objects, and
    a full collection walks them all (200-370 ms of CPU here) each time a quarter as many again
    have reached the oldest generation, every ~10 s. Nothing on the request path is left in a
    reference cycle (tests/e2e/test_garbage.py), so a full collection finds little to free; it
    now waits for :data:`FULL_COLLECTION_EVERY` young collections instead of 10 (the quarter
    rule still applies). Young collections are unchanged.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


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
