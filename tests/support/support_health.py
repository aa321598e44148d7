"""Support for tests that load the router: ``GET /health`` polled all along, to see whether
the event loop stayed free (a request doing CPU work on the loop stalls every other one).

The router runs in the test's own trio loop (``router_harness``), so a stalled loop stalls
the poller too: its in-flight request is answered only once the stall ends, and that
request's round trip shows the stall. The watch therefore lets the last poll finish rather
than cancelling it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import trio

__all__ = ["HealthLog", "watch_health"]

_PAUSE = 0.01  # between polls: frequent, without keeping the loop busy


@dataclass
class HealthLog:
    """Each answered poll as ``(sent, answered)``, in trio time."""

    polls: list[tuple[float, float]] = field(default_factory=list)

    @property
    def slowest(self) -> float:
        """The longest round trip seen, in seconds."""
        return max(answered - sent for sent, answered in self.polls)

    def answered_between(self, start: float, end: float) -> int:
        """How many polls were answered within ``[start, end]``."""
        return sum(start <= answered <= end for _, answered in self.polls)


@asynccontextmanager
async def watch_health(url: str) -> AsyncIterator[HealthLog]:
    """Poll ``url + "/health"`` while the block runs (from its first answer on)."""
    log = HealthLog()
    first = trio.Event()
    stop = trio.Event()

    async def poll(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            sent = trio.current_time()
            response = await http.get(url + "/health")
            assert response.status_code == 200, response.text
            log.polls.append((sent, trio.current_time()))
            first.set()
            await trio.sleep(_PAUSE)

    async with httpx.AsyncClient(timeout=120) as http, trio.open_nursery() as nursery:
        nursery.start_soon(poll, http)
        await first.wait()
        try:
            yield log
        finally:
            stop.set()  # the poll in flight is let finish: it may be the one that stalled
