"""The routing policy: which tier a request goes to, and how that choice learns.

The decision itself is ``engine.core.routing.decide.decide_route``, the one routing rule
(sans-IO): the heuristic score blended with the trained router (``learned.model``) and the
sidecar (``learned.sidecar_url``), tiered by the thresholds in force. This policy holds what
that rule needs at run time: the trained router, the sidecar (whose opinion is I/O, fetched
here within its time budget; on failure the others decide alone) and the thresholds, which
calibration (``engine.core.routing.calibration``) moves from quality feedback; calibrated
thresholds are kept in the feedback database and survive restarts. A threshold is calibrated
only on the reports that arrived since it last moved: a step spends its evidence.
With ``state.redis_url`` the reports, the thresholds and their calibration are shared by
every router process (``engine.runtime.shared_feedback``, :meth:`RoutingPolicy.share`).
Feedback on a named request also teaches the trained router (``learned.online``;
``engine.runtime.learning``): calibration moves the cut, learning moves the scores.

:meth:`RoutingPolicy.decide` is the synchronous decision without the sidecar: a workflow's
dry run asks it, so it predicts what a run would do now.

``X-LLM-Router-Router`` names who decided: ``heuristic``, ``heuristic+learned``, ``learned``,
``...+sidecar``, ``pinned`` or ``workflow``.

Scoring reads the whole conversation (about 1 ms per 100,000 characters, and the trained
router's features on top): a request longer than :data:`_THREADED_CHARS` is scored in a
worker thread, with the same result, so that a few huge prompts cannot hold up the event loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import trio

from engine.core.config import Config
from engine.core.remembered import Remembered
from engine.core.routing.calibration import (
    Adjustment,
    Report,
    Tally,
    calibrate,
    read_windows,
)
from engine.core.routing.decide import (
    LearnedScorer,
    Route,
    Thresholds,
    decide_route,
    model_threshold,
    to_score,
)
from engine.core.routing.learned import Belief
from engine.errors import NotFound, RequestInvalid, RouterError, StoreUnavailable, echo
from engine.messages import ChatRequest, TextPart, ToolCall, ToolResult
from engine.stores.feedback import FeedbackStore

from .learning import Learning
from .shared import Shared
from .shared_feedback import SharedFeedback
from .sidecar import Sidecar

__all__ = ["FeedbackReport", "LearnedScorer", "RoutingPolicy"]

_REMEMBERED = 100_000
_THREADED_CHARS = 32_768  # scoring takes ~0.5 ms here: a thread hop is worth it beyond

_T = TypeVar("_T")


def _request_chars(request: ChatRequest) -> int:
    """The characters scoring reads (about: the text of every part and the system prompt)."""
    chars = len(request.system or "")
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, TextPart):
                chars += len(part.text)
            elif isinstance(part, ToolResult):
                chars += len(part.content)
            elif isinstance(part, ToolCall):
                chars += len(part.arguments)
    return chars


async def _off_the_loop_if_long(request: ChatRequest, decide: Callable[[], _T]) -> _T:
    if _request_chars(request) > _THREADED_CHARS:
        return await trio.to_thread.run_sync(decide)
    return decide()


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """One quality report (``POST /v1/feedback``), validated: the ``quality`` (0-1) of a
    request named by ``request_id`` (the router looks up how it was routed), or else of the
    routing decision it states, ``score`` (0-1) and ``tier``."""

    quality: float
    request_id: str | None = None
    score: float | None = None
    tier: int | None = None
    #: Who reported (a digest of the credential, never the credential): online learning
    #: caps what one reporter can teach.
    reporter: str | None = None
    #: The quality the other tier's answer to the same request earned (a comparison: the
    #: deployment also asked the other tier). Teaches online learning whether the strong
    #: model was better; calibration reads ``quality`` only.
    other_quality: float | None = None


#: A remembered decision: its score (0-1), tier and model. A plain tuple of atoms on purpose:
#: the cyclic garbage collector stops tracking such a tuple once it has seen it, where a
#: dataclass instance stays tracked, and every full collection would walk all 100,000.
_Decision = tuple[float, int, str]


class RoutingPolicy:
    def __init__(
        self, config: Config, *, learned: LearnedScorer | None = None,
        sidecar: Sidecar | None = None, store: FeedbackStore | None = None,
    ) -> None:
        self.config = config
        self.learned = learned
        self.sidecar = sidecar
        self.store = store
        self.tier1_max = config.classifier.tier1_max
        self.tier2_max = config.classifier.tier2_max
        # Not an OrderedDict: its table rebuilt with 100,000 entries in one request
        # (engine.core.remembered).
        self._recent: Remembered[str, _Decision] = Remembered(_REMEMBERED)
        self._calibrating = trio.Lock()
        #: Feedback and thresholds shared with other processes (``state.redis_url``).
        self.shared: SharedFeedback | None = None
        # Reports accepted while Redis was down, sent when it is back.
        self._unsent: deque[tuple[Report, str | None, str | None]] = deque()
        #: Online learning of the trained router from feedback, when it is on.
        self.learning: Learning | None = None
        self._start_learning()

    def _start_learning(self) -> None:
        fingerprint = getattr(self.learned, "fingerprint", None)
        if (self.config.learned.online and isinstance(fingerprint, str)
                and self.store is not None and self.learning is None):
            self.learning = Learning(self.config, model=fingerprint, store=self.store)

    def share(self, shared: Shared) -> None:
        """Calibrate on every process's feedback, and route with the shared thresholds
        (``engine.runtime.shared_feedback``). While Redis is down, reports are kept in the
        local database and queued, and thresholds stay as they are: no process calibrates
        alone, so thresholds never diverge; when Redis is back the queued reports are sent
        and calibration runs."""
        self.shared = SharedFeedback(
            shared, base=(self.config.classifier.tier1_max, self.config.classifier.tier2_max),
            on_thresholds=self._take_thresholds,
            on_online=self.learning.take if self.learning is not None else None)
        shared.redis.on_up(self._resync)
        if self.learning is not None:
            self.learning.shared = self.shared
            shared.redis.on_up(self._resync_learning)

    def _take_thresholds(self, saved: dict[str, int]) -> None:
        self.tier1_max = saved.get("tier1_max", self.tier1_max)
        self.tier2_max = saved.get("tier2_max", self.tier2_max)

    async def load(self) -> None:
        """Take up the calibrated thresholds kept in the feedback database (and, when shared,
        those in Redis, which win)."""
        if self.store is not None:
            self._take_thresholds(await self.store.thresholds())
        if self.shared is not None:
            try:
                self._take_thresholds(await self.shared.thresholds())
            except StoreUnavailable:
                pass  # taken up when Redis answers (``_resync``)
        if self.learning is not None:
            await self.learning.load()

    async def _resync_learning(self) -> None:
        assert self.learning is not None
        try:
            await self.learning.resync()
        except StoreUnavailable:
            pass

    async def _resync(self) -> None:
        async with self._calibrating:
            try:
                await self._send_unsent()
                assert self.shared is not None
                self._take_thresholds(await self.shared.thresholds())
                if self.config.learned.calibrate:
                    await self._calibrate_shared()
            except StoreUnavailable:
                pass

    # ---- deciding -------------------------------------------------------------------------------

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds in force (calibrated, or as configured)."""
        return Thresholds(self.tier1_max, self.tier2_max)

    @property
    def model_threshold(self) -> float:
        """The trained router's probability at the tier-1 boundary (see ``LearnedConfig``)."""
        return model_threshold(self.config, self.learned)

    def to_score(self, p: float, threshold: float | None = None) -> float:
        """A 0-1 "needs the strong model" probability on the 0-100 score scale, with
        ``threshold`` (default ``learned.threshold``) landing on the tier-1 boundary."""
        t = self.config.learned.threshold if threshold is None else threshold
        return to_score(p, threshold=t, tier1_max=self.tier1_max)

    def decide(self, request: ChatRequest, *, tier: int | None = None,
               sidecar_p: float | None = None) -> Route:
        """Where ``request`` goes now: the one routing rule with the thresholds in force and
        the trained router (``tier``: a workflow op's fixed tier; ``sidecar_p``: the
        sidecar's opinion, if fetched). Synchronous CPU work, no I/O: the dry run calls it
        from a worker thread.

        Raises:
            ModelNotFound: ``request.model`` names no configured model.
        """
        return decide_route(request, self.config, tier=tier, thresholds=self.thresholds,
                            learned=self.learned, sidecar_p=sidecar_p,
                            online=self.learning.online if self.learning is not None else None)

    async def route(self, request: ChatRequest, *, tier: int | None = None) -> Route:
        """Where ``request`` goes (``tier``: a workflow op's fixed tier), the sidecar asked
        when the score decides."""
        sidecar_p = None
        if (request.model is None and tier is None and self.sidecar is not None
                and self.config.learned.sidecar_weight > 0):
            sidecar_p = await self.sidecar.score(request)
        return await _off_the_loop_if_long(
            request, partial(self.decide, request, tier=tier, sidecar_p=sidecar_p)
        )

    # ---- learning -------------------------------------------------------------------------------

    def remember(self, request_id: str, *, score: int | None, tier: int, model: str,
                 belief: Belief | None = None) -> None:
        """Keep a request's decision so feedback can name it by request id (and, with the
        trained router's ``belief``, learn from it)."""
        if score is None:
            return
        if self.learning is not None:
            self.learning.remember(request_id, belief)
        self._recent[request_id] = (score / 100, tier, model)

    async def feedback(self, report: FeedbackReport) -> dict[str, Any]:
        """Record one quality report, recalibrate, and learn from it (a named request).

        Raises:
            NotFound: the report names a request the router does not remember.
            RequestInvalid: feedback is not enabled (no feedback database).
        """
        found, request_id, model = self._report(report)
        if self.store is None:
            raise RequestInvalid("feedback is not enabled on this router")
        changes = []
        settings = self.config.learned
        # One report at a time: two concurrent calibrations would both step on the same
        # evidence.
        async with self._calibrating:
            await self.store.add(found, request_id=request_id, model=model)
            if self.shared is not None:
                self._unsent.append((found, request_id, model))
                try:
                    await self._send_unsent()
                    if settings.calibrate:
                        changes = await self._calibrate_shared()
                except StoreUnavailable:
                    pass  # kept and sent when Redis is back; no calibration meanwhile
            elif settings.calibrate:
                # Each threshold sees only the reports not yet spent on moving it, so every
                # step needs min_samples fresh reports and a burst cannot swing routing.
                tally = await self.store.tally(
                    read_windows(tier1_max=self.tier1_max, tier2_max=self.tier2_max,
                                 max_step=settings.max_step, band=settings.band))
                changes = calibrate(
                    tally, tier1_max=self.tier1_max, tier2_max=self.tier2_max,
                    target=settings.target_quality, min_samples=settings.min_samples,
                    max_step=settings.max_step, band=settings.band,
                )
                if changes:
                    await self.store.record_changes(changes)
                    for change in changes:
                        setattr(self, change.name, change.new)
        out: dict[str, Any] = {
            "accepted": True,
            "thresholds": {"tier1_max": self.tier1_max, "tier2_max": self.tier2_max},
            "changes": [
                {"name": c.name, "old": c.old, "new": c.new, "samples": c.samples,
                 "reason": c.reason} for c in changes
            ],
        }
        if self.learning is not None and request_id is not None:
            out["learning"] = await self.learning.teach(
                request_id, tier=found.tier, quality=found.quality, reporter=report.reporter,
                other=report.other_quality)
        return out

    async def reset_learning(self) -> dict[str, Any]:
        """Forget what feedback taught the trained router (the admin reset).

        Raises:
            RequestInvalid: online learning is off (no trained router, no feedback database,
                or ``learned.online: false``).
            StoreUnavailable: shared state is unreachable; nothing was reset.
        """
        if self.learning is None:
            raise RequestInvalid("online learning is not enabled on this router")
        await self.learning.reset()
        return {"reset": True, "learning": self.learning.describe()}

    async def _send_unsent(self) -> None:
        assert self.shared is not None
        while self._unsent:
            report, request_id, model = self._unsent[0]
            await self.shared.add(report, request_id=request_id, model=model)
            self._unsent.popleft()

    async def _calibrate_shared(self) -> list[Adjustment]:
        """One calibration on every process's unspent reports, under the shared lock."""
        settings = self.config.learned
        assert self.shared is not None

        def step(tally: Tally, saved: dict[str, int]) -> list[Adjustment]:
            return calibrate(
                tally, tier1_max=saved.get("tier1_max", self.tier1_max),
                tier2_max=saved.get("tier2_max", self.tier2_max),
                target=settings.target_quality, min_samples=settings.min_samples,
                max_step=settings.max_step, band=settings.band,
            )

        changes = await self.shared.calibrate(step) or []
        for change in changes:
            setattr(self, change.name, change.new)
        return changes

    def _report(self, report: FeedbackReport) -> tuple[Report, str | None, str | None]:
        """The report with its decision: remembered for its request id, or as given."""
        if report.request_id is not None:
            decision = self._recent.get(report.request_id)
            if decision is None:
                raise NotFound(
                    f"unknown or expired request_id {echo(report.request_id)}: the router "
                    f"remembers the last {_REMEMBERED:,} requests it answered",
                    param="request_id",
                )
            score, tier, model = decision
            return Report(score, tier, report.quality), report.request_id, model
        if report.score is None or report.tier is None:
            raise RequestInvalid("feedback names neither a request_id nor a score and tier",
                                 param="request_id")
        return Report(report.score, report.tier, report.quality), None, None

    async def describe(self) -> dict[str, Any]:
        """``GET /v1/routing``: the thresholds now, the data behind them, the last changes."""
        settings = self.config.learned
        out: dict[str, Any] = {
            "thresholds": {"tier1_max": self.tier1_max, "tier2_max": self.tier2_max},
            "configured": {"tier1_max": self.config.classifier.tier1_max,
                           "tier2_max": self.config.classifier.tier2_max},
            "router": "heuristic" + ("+learned" if self.learned is not None else "")
                      + ("+sidecar" if self.sidecar is not None else ""),
            "calibration": {
                "enabled": settings.calibrate and self.store is not None,
                "target_quality": settings.target_quality, "min_samples": settings.min_samples,
                "max_step": settings.max_step, "band": settings.band,
            },
        }
        if self.store is not None:
            if self.shared is not None:
                try:
                    out["feedback"] = await self.shared.summary()
                    out["changes"] = await self.shared.recent_changes()
                    out["scope"] = "shared"
                except StoreUnavailable:
                    out["scope"] = "process"
            if "feedback" not in out:
                out["feedback"] = await self.store.summary()
                out["changes"] = await self.store.recent_changes()
        out["learning"] = ({"enabled": False} if self.learning is None
                           else self.learning.describe())
        if self.sidecar is not None:
            out["sidecar"] = self.sidecar.snapshot()
        return out


async def load_offline_policy(config: Config) -> tuple[RoutingPolicy, str | None]:
    """The policy a router started with ``config`` would route with now, for tools that run
    without a server (``llm-router workflow plan``): its trained router, and the thresholds
    calibration saved in its feedback database when that file exists (only read). The second
    value says why the saved thresholds could not be read, if they could not.

    Raises:
        RouterError: the trained router cannot be loaded.
    """
    from .models import load_learned  # it names this module's types

    policy = RoutingPolicy(config, learned=load_learned(config))
    database = config.path(config.learned.feedback_db)
    if not database.is_file():
        return policy, None
    store = FeedbackStore(database, base=(policy.tier1_max, policy.tier2_max))
    try:
        await store.open()
        try:
            policy.store = store
            policy._start_learning()  # route as a server would, with what feedback taught
            await policy.load()
        finally:
            policy.store = None
            await store.close()
    except RouterError as exc:
        return policy, exc.message
    return policy, None
