"""Several router processes on one address: a supervising parent and its workers.

The parent binds and listens (so an address in use is one error before anything starts, and
``--addr :0`` works), then starts each worker as a fresh interpreter (``command``) that
inherits the listening socket and accepts on it; the kernel hands each new connection to
whichever worker accepts it first. One shared socket rather than one ``SO_REUSEPORT`` socket
per worker: the connections waiting in a worker's own socket are reset when that worker dies,
while on a shared one they wait for a live worker. Fresh interpreters rather than ``fork``:
the parent holds no models, threads or trio state a child could inherit half-made; each
worker loads its own models.

Each worker also gets one end of a socket pair, its control line: it writes ``ready`` there
once it accepts connections, and it reads the line for end of file, which means the parent is
gone (even SIGKILLed); it then shuts down gracefully rather than serve on unsupervised.

The parent

* logs ``llm-router listening on ...`` once, when every worker is ready; if a worker exits
  before its first ``ready``, start-up failed: the others are stopped and
  :class:`StartupFailed` is raised;
* turns SIGTERM or SIGINT into SIGTERM to every worker (each shuts down gracefully, as one
  process does) and waits for them, killing any still running ``graceful_timeout`` + 5 s
  later; a second signal kills them at once. Workers run in their own process group, so a
  terminal's Ctrl-C reaches the parent only, and each worker is told once;
* starts a worker again when it exits unasked, after a pause that doubles from
  :data:`FIRST_BACKOFF` up to :data:`MAX_BACKOFF` with each exit that came less than
  :data:`STABLE_AFTER` seconds after the previous start; after :data:`MAX_BOOT_FAILURES`
  starts in a row that never became ready it gives up: it stops all and raises.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from functools import partial

import trio
from hypercorn.config import Sockets
from hypercorn.utils import repr_socket_addr

from engine.core import Config
from engine.runtime import load_models

from .server import bind_sockets, hypercorn_config, serve_until_signal

__all__ = ["MAX_WORKERS", "StartupFailed", "WorkerCommand", "run_worker", "run_workers"]

log = logging.getLogger("llm_router")

MAX_WORKERS = 64
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0
MAX_BOOT_FAILURES = 5
READY = b"ready"

WorkerCommand = Callable[[int, int], list[str]]
"""``(listening socket's fd, control line's fd)`` to the command line of one worker."""


class StartupFailed(Exception):
    """Workers could not be started: one exited before it was ready."""


class _Slot:
    """One worker's place: the process in it now, replaced when it exits unasked."""

    def __init__(self, number: int, command: WorkerCommand, listener: socket.socket) -> None:
        self.number = number
        self._command = command
        self._listener = listener
        self.process: trio.Process | None = None
        self._control: trio.socket.SocketType | None = None
        self._terminated: int | None = None  # the pid last sent SIGTERM

    async def start(self) -> None:
        """Start a worker and wait for its ``ready``; StartupFailed if it exits first."""
        ours, theirs = socket.socketpair()
        fds = (self._listener.fileno(), theirs.fileno())
        try:
            self.process = await trio.lowlevel.open_process(
                self._command(*fds), pass_fds=fds, process_group=0,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        control = trio.socket.from_stdlib_socket(ours)
        try:
            said = await control.recv(len(READY))
        except OSError:
            said = b""
        if said != READY:
            control.close()
            status = await self.process.wait()
            raise StartupFailed(f"worker {self.number} (pid {self.process.pid}) exited before "
                                f"it was ready ({_describe(status)})")
        self._control = control  # held open: its end of file tells the worker we are gone

    async def supervise(self, stopping: trio.Event) -> None:
        """Wait for the worker to exit; unless stopping, start another after a pause."""
        exits = boot_failures = 0
        while True:
            assert self.process is not None
            started = trio.current_time()
            status = await self.process.wait()
            if self._control is not None:
                self._control.close()
                self._control = None
            if stopping.is_set():
                return
            exits = 1 if trio.current_time() - started >= STABLE_AFTER else exits + 1
            delay = min(FIRST_BACKOFF * 2 ** (exits - 1), MAX_BACKOFF)
            log.warning("worker %d (pid %d) exited (%s); starting another in %.1f s",
                        self.number, self.process.pid, _describe(status), delay)
            with trio.move_on_after(delay):
                await stopping.wait()
                return
            try:
                await self.start()
            except StartupFailed as exc:
                if stopping.is_set():
                    return
                boot_failures += 1
                if boot_failures >= MAX_BOOT_FAILURES:
                    raise StartupFailed(f"{exc}, {boot_failures} starts in a row") from exc
                continue  # the loop's wait returns at once: the process has exited
            boot_failures = 0
            log.info("worker %d started again (pid %d)", self.number, self.process.pid)
            if stopping.is_set() and self._terminated != self.process.pid:
                self.signal(signal.SIGTERM)  # the signal went out while this one was starting

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)
            if signum == signal.SIGTERM:
                self._terminated = self.process.pid


def _describe(status: int) -> str:
    return f"signal {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"


async def _start_all(slots: list[_Slot]) -> None:
    """Start every worker at once; on the first failure stop the others and raise it."""
    failures: list[StartupFailed] = []

    async def start(slot: _Slot) -> None:
        try:
            await slot.start()
        except StartupFailed as exc:
            failures.append(exc)
            for other in slots:
                other.signal(signal.SIGTERM)

    async with trio.open_nursery() as nursery:
        for slot in slots:
            nursery.start_soon(start, slot)
    if failures:
        raise failures[0]


async def _stop_all(slots: list[_Slot], grace: float) -> None:
    """SIGTERM to every worker still running, then SIGKILL to those left after ``grace``
    (at once if ``grace`` is 0: a second SIGTERM would cut a graceful shutdown short too)."""
    with trio.CancelScope(shield=True):
        if grace > 0:
            for slot in slots:
                slot.signal(signal.SIGTERM)
            with trio.move_on_after(grace):
                for slot in slots:
                    if slot.process is not None:
                        await slot.process.wait()
        for slot in slots:
            slot.signal(signal.SIGKILL)
            if slot.process is not None:
                await slot.process.wait()


async def _supervise(slots: list[_Slot], url: str, grace: float) -> None:
    stopping = trio.Event()
    waiting = trio.CancelScope()

    async def forward(signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if stopping.is_set():
                log.warning("received %s again, killing the workers", name)
                for slot in slots:
                    slot.signal(signal.SIGKILL)
                continue
            log.info("received %s, stopping %d workers", name, len(slots))
            stopping.set()
            for slot in slots:
                slot.signal(signal.SIGTERM)
            waiting.deadline = trio.current_time() + grace

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward, signals)
                try:
                    await _start_all(slots)
                except StartupFailed:
                    if not stopping.is_set():
                        raise
                if not stopping.is_set():
                    log.info("llm-router listening on %s (%d workers, pids %s)", url,
                             len(slots), ", ".join(str(s.process.pid) for s in slots
                                                   if s.process is not None))
                with waiting:
                    async with trio.open_nursery() as supervising:
                        for slot in slots:
                            supervising.start_soon(slot.supervise, stopping)
                nursery.cancel_scope.cancel()
        finally:  # after a signal, SIGTERM went out already: what is left is past its time
            await _stop_all(slots, 0 if stopping.is_set() else grace)


def run_workers(config: Config, *, host: str, port: int, count: int,
                command: WorkerCommand) -> None:
    """Bind, start ``count`` workers with ``command``, and supervise them until SIGTERM or
    SIGINT. ``OSError`` if the address cannot be bound, :class:`StartupFailed` if the
    workers cannot be started (or keep failing to start again)."""
    hc = hypercorn_config(config, host=host, port=port)
    sockets = bind_sockets(hc)
    [listener] = sockets.insecure_sockets  # hc.bind holds one address
    url = f"http://{repr_socket_addr(listener.family, listener.getsockname())}"
    slots = [_Slot(number, command, listener) for number in range(1, count + 1)]
    try:
        trio.run(partial(_supervise, slots, url, hc.graceful_timeout + 5))
    finally:
        listener.close()


def run_worker(config: Config, *, host: str, port: int, listen_fd: int,
               control_fd: int) -> None:
    """One worker, started by :func:`run_workers`: load the models, then serve on the
    inherited listening socket until SIGTERM, SIGINT or the parent's end of the control line
    closes."""
    models = load_models(config)
    hc = hypercorn_config(config, host=host, port=port)
    sockets = Sockets(secure_sockets=[], insecure_sockets=[socket.socket(fileno=listen_fd)],
                      quic_sockets=[])
    stdlib_control = socket.socket(fileno=control_fd)

    async def main() -> None:
        control = trio.socket.from_stdlib_socket(stdlib_control)

        async def ready(binds: list[str]) -> None:
            await control.send(READY)
            log.info("worker pid %d serving on %s", os.getpid(), ", ".join(binds))

        async def parent_gone() -> None:
            while await control.recv(64):
                pass
            log.warning("worker pid %d: the parent process is gone, shutting down",
                        os.getpid())

        with control:
            await serve_until_signal(config, hc=hc, sockets=sockets, models=models,
                                     on_listening=ready, stop_when=parent_gone)

    trio.run(main)
