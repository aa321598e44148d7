"""``GET /stats/events``: the dashboard's figures pushed to the page as server-sent events,
instead of the page asking five endpoints once a second.

Each stream sends ``event: snapshot`` with everything the page draws (``/stats``,
``/stats/recent``, ``/v1/backends``, ``/health``, the routing policy as ``/v1/routing`` shows
it less what is per tenant (:func:`routing_summary`), the last runs and the followed run's DAG)
as soon as it opens, then again whenever it differs from the last one sent, checked every
:data:`TICK_SEC` (so at most twice a second); a comment line every :data:`HEARTBEAT_SEC`
of no change keeps proxies from closing a quiet stream and lets the page tell a live
stream from a dead one.

The figures shared by every open stream (all but the runs, which depend on the caller's
key and the run it follows) are read once per tick for all of them, so ten open pages cost
what one does. A stream is the request's own task: the client leaving cancels it (hypercorn
and Quart-Trio cancel the response body's generator), and there is nothing else to stop;
:attr:`DashboardFeed.streams` counts the open ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import trio

from engine.errors import RouterError, StoreUnavailable
from engine.runtime import Gateway

__all__ = ["HEARTBEAT_SEC", "RUNS_SHOWN", "TICK_SEC", "DashboardFeed", "routing_summary",
           "without_text"]

TICK_SEC = 0.5
HEARTBEAT_SEC = 15.0
RUNS_SHOWN = 15

#: Whether the caller may see every tenant's runs; None, or the refusal's message.
RunsRefusal = Callable[[], Awaitable[str | None]]


def without_text(run: dict[str, Any]) -> dict[str, Any]:
    """A run as the dashboard shows it: no answers (op outputs, the final output)."""
    run.pop("final_output", None)
    for op in run["ops"].values():
        op.pop("output", None)
    return run


# What the routing panel draws of ``GET /v1/routing``: the same keys, none per tenant.
_ROUTING = ("thresholds", "configured", "router", "feedback", "learning", "compare")
_LEARNING = ("enabled", "reports", "compared", "gate", "floor", "concordance")


def routing_summary(state: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/routing``'s answer cut to what the dashboard draws: the thresholds, the
    feedback counts, how much of what online learning taught applies (each part's gate and
    floor) and the comparisons the router makes itself. No tenant's cache threshold."""
    out = {key: state[key] for key in _ROUTING if key in state}
    learning = state.get("learning")
    if isinstance(learning, dict):
        out["learning"] = {key: learning[key] for key in _LEARNING if key in learning}
        for part in ("mix", "regions"):
            found = learning.get(part)
            if isinstance(found, dict):
                out["learning"][part] = {key: found.get(key) for key in ("gate", "floor")}
    return out


class DashboardFeed:
    def __init__(self, gateway: Callable[[], Gateway]) -> None:
        self._gateway = gateway
        self._lock = trio.Lock()
        self._shared: dict[str, Any] | None = None
        self._shared_at = -float("inf")
        #: Streams open now.
        self.streams = 0

    async def events(self, *, follow: str | None, refusal: str | None
                     ) -> AsyncIterator[bytes]:
        """The stream's body: snapshots when they change, heartbeats between. ``follow``:
        the run whose DAG to send (None: the newest running one, else the newest);
        ``refusal``: why the caller may not see the runs (None: it may)."""
        self.streams += 1
        try:
            sent = b""
            quiet_since = trio.current_time()
            while True:
                snapshot = await self.snapshot(follow=follow, refusal=refusal)
                fingerprint = _fingerprint(snapshot)
                now = trio.current_time()
                if fingerprint != sent:
                    sent, quiet_since = fingerprint, now
                    yield b"event: snapshot\ndata: " + orjson.dumps(snapshot) + b"\n\n"
                elif now - quiet_since >= HEARTBEAT_SEC:
                    quiet_since = now
                    yield b": heartbeat\n\n"
                await trio.sleep(TICK_SEC)
        finally:
            self.streams -= 1  # no await here: a cancelled stream ends at once

    async def snapshot(self, *, follow: str | None, refusal: str | None) -> dict[str, Any]:
        shared = await self._shared_figures()
        runs, run = await self._runs(follow, refusal)
        return {**shared, "runs": runs, "run": run}

    async def _shared_figures(self) -> dict[str, Any]:
        """What every stream sends alike, read at most once per tick for all of them."""
        async with self._lock:
            if trio.current_time() - self._shared_at < TICK_SEC / 2:
                assert self._shared is not None
                return self._shared
            gateway = self._gateway()
            self._shared = {
                "stats": await gateway.stats_snapshot(),
                "recent": await gateway.recent_snapshot(),
                "backends": await gateway.backends_snapshot(),
                "health": gateway.health(),
                "routing": routing_summary(await gateway.routing_state(tenant="")),
            }
            self._shared_at = trio.current_time()
            return self._shared

    async def _runs(self, follow: str | None, refusal: str | None
                    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The last runs as ``GET /stats/runs`` lists them (or ``{"error": ...}``), and the
        followed run as ``GET /stats/runs/{id}`` shows it."""
        if refusal is not None:
            return {"error": {"message": refusal}}, None
        try:
            runs = self._gateway().workflow_runs()
            found = await runs.list(tenant=None, status=None, limit=RUNS_SHOWN)
        except StoreUnavailable as exc:
            return {"error": {"message": exc.message}}, None
        listed = {"object": "list", "data": [r.summary() for r in found]}
        chosen = next((r for r in found if r.run_id == follow), None)
        if chosen is None:
            chosen = next((r for r in found if r.status == "running"), None)
        if chosen is None and found:
            chosen = found[0]
        if chosen is None:
            return listed, None
        try:
            record = await runs.get(chosen.run_id, tenant=None)
        except RouterError:  # deleted meanwhile, or the store failed: no DAG this time
            return listed, None
        return listed, without_text(record.public())


def _fingerprint(snapshot: dict[str, Any]) -> bytes:
    """What decides whether a snapshot is news: all of it but the seconds' clock, which
    moves every second even when the figures do not."""
    recent = snapshot["recent"]
    quiet = {**recent, "series": [(s["requests"], s["errors"], s["p50_ms"])
                                  for s in recent["series"]]}
    return orjson.dumps({**snapshot, "recent": quiet})
