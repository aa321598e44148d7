"""In-flight dedup: identical concurrent requests share one upstream call.

The first request for a key becomes the *leader*: its call runs as a :class:`Flight` in the
gateway's background nursery, not in the leader's handler, so the leader's client leaving does
not cancel it while followers still listen. Requests with the same key that arrive while it
runs are *followers*: they read the same flight.

A flight keeps everything it has published (the served head, then batches of stream events)
so a follower joining a live stream first receives what was already sent, then the rest live.
Every listener gets the same final result, or the same error. When the last listener leaves
before the end, the flight is cancelled and the upstream call with it. A finished flight is
forgotten at once: the next request starts fresh (the cache, not dedup, serves repeats).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from engine.errors import RouterError

__all__ = ["Flight", "FlightRegistry"]

log = logging.getLogger("llm_router")

Publish = Callable[[Any], None]
RunFlight = Callable[[Publish], Awaitable[Any]]


class Flight:
    """One shared upstream call: its published items, and its result or error."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.result: Any = None
        self.error: RouterError | None = None
        self.done = False
        self.listeners = 0
        self._changed = trio.Event()
        self._scope = trio.CancelScope()

    def publish(self, item: Any) -> None:
        self.items.append(item)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _finish(self, result: Any = None, error: RouterError | None = None) -> None:
        self.result = result
        self.error = error
        self.done = True
        self._wake()

    def join(self) -> None:
        self.listeners += 1

    def leave(self) -> None:
        """A listener is gone; the last one to leave cancels an unfinished flight."""
        self.listeners -= 1
        if self.listeners == 0 and not self.done:
            self._scope.cancel()

    async def wait(self) -> Any:
        """The flight's result (raises its error)."""
        while not self.done:
            await self._changed.wait()
        if self.error is not None:
            # A copy per waiter: re-raising one shared object would grow its traceback with
            # every waiter's frames.
            raise copy.copy(self.error)
        return self.result

    async def wait_beyond(self, index: int) -> None:
        """Wait until more than ``index`` items are published, or the flight is done.

        Followers read ``items[index:]`` after each wait: what was already sent, then the rest
        live. (A loop in the caller, not an async generator: a listener cancelled mid-stream
        must not leave a half-run generator behind.)
        """
        while len(self.items) <= index and not self.done:
            await self._changed.wait()


class FlightRegistry:
    """The flights in progress, by key. Runs them in ``nursery`` (the gateway's)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._flights: dict[bytes, Flight] = {}
        self.joined = 0  # followers served, for /stats

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: bytes, run: RunFlight, *, share: bool = True) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (started it).

        With ``share=False`` the caller always gets a flight of its own (dedup is off).
        The caller is counted as a listener and must call ``flight.leave()`` when done.
        """
        flight = self._flights.get(key) if share else None
        # A flight every listener has left is cancelled but stays registered until its task
        # next runs: joining it would only get its cancellation error. Start afresh instead
        # (``_fly`` forgets only its own flight, so the new one keeps its place).
        if flight is not None and flight.listeners > 0:
            self.joined += 1
            flight.join()
            return flight, False
        flight = Flight()
        if share:
            self._flights[key] = flight
        flight.join()
        self._nursery.start_soon(self._fly, key, flight, run)
        return flight, True

    async def _fly(self, key: bytes, flight: Flight, run: RunFlight) -> None:
        # Runs in the background nursery: it must never raise, or it would stop the server.
        try:
            with flight._scope:
                try:
                    result = await run(flight.publish)
                except RouterError as exc:
                    flight._finish(error=exc)
                except Exception as exc:  # a bug: fail this flight, keep serving
                    log.exception("internal error in a shared upstream call", exc_info=exc)
                    flight._finish(error=RouterError("internal error"))
                else:
                    flight._finish(result=result)
            if not flight.done:  # cancelled: every listener left
                flight._finish(error=RouterError("cancelled: every client left"))
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
