"""Serving the app with hypercorn's trio worker, stopping cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from engine.config import Config
from engine.gateway import Models, load_models

from .app import create_app

__all__ = ["hypercorn_config", "run_server"]

log = logging.getLogger("llm_router")


def hypercorn_config(config: Config, *, host: str, port: int) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.accesslog = "-" if config.server.access_log else None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.keep_alive_timeout = 75.0
    hc.read_timeout = int(config.server.read_timeout_sec)
    hc.graceful_timeout = 10.0
    hc.include_server_header = False
    return hc


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


async def _serve(config: Config, *, hc: HypercornConfig, sockets: Sockets,
                 models: Models) -> None:
    app = create_app(config, preloaded=models)
    stop = trio.Event()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                stop.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals)
        binds = await nursery.start(
            # hypercorn.trio.serve, with the sockets bound beforehand (see bind_sockets)
            partial(worker_serve, wrap_app(app, hc.wsgi_max_body_size, "asgi"), hc,
                    sockets=sockets, shutdown_trigger=stop.wait)
        )
        log.info("llm-router listening on %s", ", ".join(binds))
        await stop.wait()
        # serve() returns after its graceful shutdown; then the signal watcher is done too.


def run_server(config: Config, *, host: str, port: int) -> None:
    """Load the models, then serve until SIGTERM or SIGINT. A model that cannot be loaded
    raises here, before anything listens."""
    models = load_models(config)
    hc = hypercorn_config(config, host=host, port=port)
    sockets = bind_sockets(hc)
    trio.run(lambda: _serve(config, hc=hc, sockets=sockets, models=models))
