"""In-flight dedup: identical concurrent requests share one upstream call.

The first request for a key becomes the *leader*: its call runs as a :class:`Flight` in the
gateway's background nursery, not in the leader's handler, so the leader's client leaving does
not cancel it while followers still listen. Requests with the same key that arrive while it
runs are *followers*: they read the same flight. Each caller holds a :class:`Listener`.

A streaming flight *publishes* items (the served head, then batches of stream events, each
with its size in upstream bytes) and every listener ``take``\\ s them in order, at its own pace.
What it holds is bounded by ``buffer_bytes``:

* While its whole stream fits in the buffer, a flight keeps all of it, so a follower joining
  late first receives what was already sent, then the rest live. Beyond that it keeps only
  what some listener has yet to take, and stops taking new followers (an identical request
  then starts a call of its own).
* Backpressure: the upstream is read at the pace of the *furthest* listener. Publishing waits
  while that listener has more than half the buffer still to take; a slow client (or the only
  client) therefore slows the upstream read instead of letting it pile up.
* A listener more than ``buffer_bytes`` behind what was published, and behind the furthest
  one, is cut off: its next ``take`` raises :class:`~engine.errors.ClientTooSlow` (its stream
  ends with that error), and nothing is kept for it any longer. One stalled client never holds
  back the others, nor grows the buffer.

Every listener gets the same final result, or the same error. When the last listener leaves
before the end, the flight is cancelled and the upstream call with it. A finished flight is
forgotten at once: the next request starts fresh (the cache, not dedup, serves repeats).

A call nobody can share (dedup off) and with no stream to relay needs none of this: its one
caller runs it in its own task (:meth:`FlightRegistry.run_alone`), where leaving cancels it
as leaving a flight would, and its errors are a flight's.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from engine.errors import ClientTooSlow, RouterError

__all__ = ["Flight", "FlightRegistry", "Listener", "Publish"]

log = logging.getLogger("llm_router")

# ``await publish(item, size)``: returns the seconds it waited for the listeners to catch up.
Publish = Callable[[Any, int], Awaitable[float]]
RunFlight = Callable[[Publish], Awaitable[Any]]


class Listener:
    """One caller of a flight (its leader or a follower); ``leave()`` when done, always."""

    __slots__ = ("cut", "flight", "leader", "next", "taken")

    def __init__(self, flight: Flight, *, leader: bool) -> None:
        self.flight = flight
        self.leader = leader
        self.next = 0  # the number of the next item to take
        self.taken = 0  # upstream bytes taken so far
        self.cut = False

    async def take(self) -> Any:
        """The next published item, or ``None`` once the flight is done and all taken.

        Raises:
            ClientTooSlow: this listener fell too far behind and was cut off.
        """
        flight = self.flight
        while True:
            if self.cut:
                raise ClientTooSlow(
                    "the client read this stream too slowly: it fell more than "
                    f"{flight.buffer_bytes} bytes behind the clients sharing its upstream call"
                )
            i = self.next - flight.base
            if i < len(flight.items):
                self.next += 1
                taken = self.taken = flight._ends[i]
                if taken > flight._lead:
                    flight._advance(taken)
                return flight.items[i]
            if flight.done:
                return None
            await flight._changed.wait()

    def leave(self) -> None:
        self.flight._leave(self)


class Flight:
    """One shared upstream call: its published items, and its result or error."""

    def __init__(self, *, buffer_bytes: int) -> None:
        self.buffer_bytes = buffer_bytes
        self.items: list[Any] = []  # published items still held; items[0] is number ``base``
        self.base = 0
        self._ends: list[int] = []  # bytes published up to the end of each held item
        self.published = 0  # bytes published
        self.joinable = True  # nothing dropped yet: a new follower can still get it all
        self.result: Any = None
        self.error: RouterError | None = None
        self.done = False
        self.listeners = 0
        # Listeners not cut off, in joining order (a dict: each leaves in O(1)).
        self._readers: dict[Listener, None] = {}
        self._lead = 0  # bytes taken by the furthest listener
        self._room: trio.Event | None = None  # set when the publisher may go on
        self._changed = trio.Event()
        self._scope = trio.CancelScope()

    async def publish(self, item: Any, size: int = 0) -> float:
        """Add ``item`` (``size`` upstream bytes); wait while the furthest listener is more
        than half the buffer behind. Returns the seconds waited."""
        self.items.append(item)
        self.published += size
        self._ends.append(self.published)
        self._wake()
        if self.published <= self.buffer_bytes:  # it all fits: keep it for late joiners
            return 0.0
        self.joinable = False
        self._cut_laggards()
        self._drop_taken()
        if self.published - self._lead <= self.buffer_bytes // 2:
            return 0.0
        started = trio.current_time()
        while self.published - self._lead > self.buffer_bytes // 2 and self._readers:
            self._room = trio.Event()
            await self._room.wait()
        self._room = None
        return trio.current_time() - started

    def _advance(self, taken: int) -> None:
        self._lead = taken
        if self._room is not None and self.published - taken <= self.buffer_bytes // 2:
            self._room.set()

    def _cut_laggards(self) -> None:
        limit = min(self.published - self.buffer_bytes, self._lead)  # never the furthest
        for reader in [r for r in self._readers if r.taken < limit]:
            reader.cut = True
            del self._readers[reader]

    def _drop_taken(self) -> None:
        """Forget the items every remaining listener has taken."""
        low = min((r.next for r in self._readers), default=self.base + len(self.items))
        drop = low - self.base
        if drop > 0:
            del self.items[:drop]
            del self._ends[:drop]
            self.base = low

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _finish(self, result: Any = None, error: RouterError | None = None) -> None:
        self.result = result
        self.error = error
        self.done = True
        self._wake()

    def join(self, *, leader: bool = False) -> Listener:
        self.listeners += 1
        listener = Listener(self, leader=leader)
        self._readers[listener] = None
        return listener

    def _leave(self, listener: Listener) -> None:
        """A listener is gone. When no listener is left that could still take the rest (the
        others, if any, were cut off), an unfinished flight is cancelled."""
        self.listeners -= 1
        if listener in self._readers:
            del self._readers[listener]
            # The lead is the most any reader has taken; it moves only when this listener
            # held it, and matters only while the flight publishes. Finding it again for
            # every listener leaving a finished flight made n followers cost n² steps.
            if not self.done and listener.taken >= self._lead:
                self._lead = max((r.taken for r in self._readers), default=0)
                self._advance(self._lead)
        if not self._readers and not self.done:
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


class FlightRegistry:
    """The flights in progress, by key. Runs them in ``nursery`` (the gateway's); each holds
    at most about ``buffer_bytes`` of its stream (see the module docstring)."""

    def __init__(self, nursery: trio.Nursery, *, buffer_bytes: int = 1 << 20) -> None:
        self._nursery = nursery
        self._flights: dict[bytes, Flight] = {}
        self._buffer_bytes = buffer_bytes
        self.joined = 0  # followers served, for /stats

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: bytes, run: RunFlight, *, share: bool = True) -> Listener:
        """A listener of the flight for ``key`` (``listener.leader``: the caller started it).

        With ``share=False`` the caller always gets a flight of its own (dedup is off).
        The caller must call ``listener.leave()`` when done.
        """
        flight = self._flights.get(key) if share else None
        # A flight every listener has left is cancelled but stays registered until its task
        # next runs: joining it would only get its cancellation error. One that no longer
        # holds its whole stream cannot serve a newcomer. Start afresh instead (``_fly``
        # forgets only its own flight, so the new one keeps its place).
        if flight is not None and flight.listeners > 0 and flight.joinable:
            self.joined += 1
            return flight.join()
        flight = Flight(buffer_bytes=self._buffer_bytes)
        if share:
            self._flights[key] = flight
        listener = flight.join(leader=True)
        self._nursery.start_soon(self._fly, key, flight, run)
        return listener

    async def run_alone(self, run: RunFlight, *, publish: Publish | None = None) -> Any:
        """``run``'s result, run in the caller's task: for a call that is not shared, whose
        items (a stream's) go to ``publish`` (without one ``run`` must not publish). Fails
        as a flight's listener would:
        a ``RouterError`` as raised, any other exception (a bug) logged and made an
        internal error; the caller being cancelled cancels the call. A client that left
        while ``run`` was under way between two checkpoints is not a bug: its channel is
        closed before its cancellation lands, ``publish`` raises trio's
        ``BrokenResourceError`` or ``ClosedResourceError``, and that passes through as the
        stream's end (``Feed`` ends quietly on it).

        Raises:
            RouterError: the call failed.
        """
        try:
            return await run(publish or _unpublished)
        except (RouterError, trio.BrokenResourceError, trio.ClosedResourceError):
            raise
        except Exception as exc:  # a bug: fail this call, keep serving
            log.exception("internal error in a shared upstream call", exc_info=exc)
            raise RouterError("internal error") from None

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


async def _unpublished(item: Any, size: int = 0) -> float:
    raise AssertionError("a call run alone publishes nothing")
