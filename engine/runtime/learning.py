"""Online learning at run time: feedback on a request teaches the trained router
(``engine.core.routing.online`` has the rule; this keeps its state).

The state lives behind the feedback store: in the feedback database for one process, in Redis
(``engine.runtime.shared_feedback``) when processes share state, stepped under the shared lock
and announced to every process, which routes with it from then on. A chat request never
waits on it: routing reads the state this process holds. A step (about a millisecond of
numpy, more on a busy machine: the floor ranks 300 recent reports) runs in a worker thread.

To learn from a report the router needs the request's :class:`Belief`, kept for the last
:data:`_REMEMBERED` requests this process answered (a few kilobytes each). Older reports still
calibrate the thresholds; they just teach nothing.

While Redis is down, reports to learn from are queued (the newest :data:`_QUEUED`) and taught
when it is back, in the order they came; the process routes meanwhile with the state it had.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import trio

from engine.core.config import Config
from engine.core.remembered import Remembered
from engine.core.routing.decide import Online
from engine.core.routing.learned import Belief
from engine.core.routing.online import OnlineSettings, OnlineState, learn
from engine.errors import StoreUnavailable
from engine.stores.feedback import FeedbackStore

from .shared_feedback import SharedFeedback

__all__ = ["Learning"]

_REMEMBERED = 20_000
_QUEUED = 10_000


@dataclass(frozen=True, slots=True)
class _Lesson:
    belief: Belief
    tier: int
    quality: float
    reporter: str | None
    other: float | None = None


async def _forget(raw: dict[str, Any] | None) -> None:
    return None


def settings_of(config: Config) -> OnlineSettings:
    s = config.learned
    return OnlineSettings(rate=s.online_rate, max_step=s.online_max_step,
                          max_shift=s.online_max_shift, half_life=s.online_half_life,
                          key_cap=s.online_key_cap, tolerance=s.online_tolerance,
                          regions=s.online_regions)


class Learning:
    """The online state of one trained router (``model``: its fingerprint)."""

    def __init__(self, config: Config, *, model: str, store: FeedbackStore | None) -> None:
        self.settings = settings_of(config)
        self.model = model
        self.store = store
        self.shared: SharedFeedback | None = None
        self.state: OnlineState | None = None
        # Kept as plain tuples (p, logit, inputs, known): the cyclic collector stops tracking a
        # tuple of numbers and an array, where 20,000 Belief objects would be walked by every
        # full collection (docs/architecture.md, "Memory and pauses").
        self._beliefs: Remembered[str, tuple[float, float, Any, float]] = Remembered(
            _REMEMBERED)
        self._queued: deque[_Lesson] = deque(maxlen=_QUEUED)
        self._lock = trio.Lock()

    @property
    def online(self) -> Online:
        """What routing applies now."""
        return Online(self.state, self.settings)

    def take(self, raw: dict[str, Any] | None) -> None:
        """Route with the state ``raw`` describes (None, damaged or another model's: none)."""
        self.state = self._parse(raw)

    def _parse(self, raw: dict[str, Any] | None) -> OnlineState | None:
        if raw is None or raw.get("model") != self.model:
            return None
        try:
            return OnlineState.from_dict(raw)
        except (KeyError, TypeError, ValueError):
            return None

    async def load(self) -> None:
        """Take up the saved state (the shared one wins)."""
        if self.store is not None:
            self.take(await self.store.online_state())
        if self.shared is not None:
            try:
                self.take(await self.shared.online_state())
            except StoreUnavailable:
                pass  # taken up when Redis answers (``resync``)

    async def resync(self) -> None:
        """Redis is back: teach what was queued, then route with the shared state."""
        assert self.shared is not None
        async with self._lock:
            while self._queued:
                await self._step_shared(self._queued[0])
                self._queued.popleft()
            self.take(await self.shared.online_state())

    def remember(self, request_id: str, belief: Belief | None) -> None:
        if belief is None:
            return
        self._beliefs[request_id] = (belief.p, belief.logit, belief.inputs, belief.known)

    async def teach(self, request_id: str, *, tier: int, quality: float,
                    reporter: str | None, other: float | None = None) -> dict[str, Any]:
        """One report's lesson (``other``: the other tier's quality on the same request, a
        comparison); what it did, for the feedback answer."""
        kept = self._beliefs.get(request_id)
        if kept is None:
            return {"learned": False, "reason": "this router no longer holds the request's "
                    "features (it keeps the last 20,000 it answered)"}
        lesson = _Lesson(Belief(*kept), tier, quality, reporter, other)
        async with self._lock:
            if self.shared is not None:
                try:
                    return await self._step_shared(lesson)
                except StoreUnavailable:
                    self._queued.append(lesson)
                    return {"learned": False, "queued": True,
                            "reason": "shared state unavailable: taught when it is back"}
            new, outcome = await trio.to_thread.run_sync(self._step, self.state, lesson)
            if self.store is not None:
                await self.store.save_online_state(new.to_dict())
            self.state = new
        return {"learned": outcome.weight > 0, "weight": round(outcome.weight, 4),
                "target": round(outcome.target, 4), "moved": round(outcome.moved, 4)}

    def _step(self, state: OnlineState | None, lesson: _Lesson) -> tuple[OnlineState, Any]:
        if state is None or len(state.weights) != len(lesson.belief.inputs) + 1:
            state = OnlineState.fresh(self.model, len(lesson.belief.inputs))
        return learn(state, lesson.belief.logit, lesson.belief.inputs, tier=lesson.tier,
                     quality=lesson.quality, reporter=lesson.reporter, settings=self.settings,
                     other=lesson.other, known=lesson.belief.known)

    async def _step_shared(self, lesson: _Lesson) -> dict[str, Any]:
        assert self.shared is not None
        done: list[Any] = []

        async def step(raw: dict[str, Any] | None) -> dict[str, Any]:
            new, outcome = await trio.to_thread.run_sync(self._step, self._parse(raw), lesson)
            done.append(outcome)
            return new.to_dict()

        stepped, raw = await self.shared.learn(step)
        if not stepped:
            return {"learned": False, "reason": "another process held the learning lock"}
        self.take(raw)
        outcome = done[-1]
        return {"learned": outcome.weight > 0, "weight": round(outcome.weight, 4),
                "target": round(outcome.target, 4), "moved": round(outcome.moved, 4)}

    async def reset(self) -> None:
        """Forget what feedback taught (the admin reset): routing is the shipped model's.

        Raises: StoreUnavailable (shared state, Redis down: nothing was reset)."""
        async with self._lock:
            if self.shared is not None:
                await self.shared.learn(_forget)
            if self.store is not None:
                await self.store.save_online_state(None)
            self._queued.clear()
            self.state = None

    def describe(self) -> dict[str, Any]:
        """The learning state for ``GET /v1/routing``."""
        s = self.settings
        out: dict[str, Any] = {
            "enabled": True, "model": self.model,
            "settings": {"rate": s.rate, "max_step": s.max_step, "max_shift": s.max_shift,
                         "half_life": s.half_life, "key_cap": s.key_cap,
                         "tolerance": s.tolerance, "regions": s.regions},
        }
        if self.state is None:
            out.update({"concordance": None, "reports": 0, "compared": 0,
                        "learned_from": 0.0, "gate": 0.0, "floor": None, "log_loss": None,
                        "correction_norm": 0.0, "reporters": 0, "regions": None,
                        "mix": {"comparisons": 0, "gate": 0.0, "weights": None,
                                "concordance": None, "floor": None}})
        else:
            out.update(self.state.describe(s))
        if self._queued:
            out["queued"] = len(self._queued)
        return out
