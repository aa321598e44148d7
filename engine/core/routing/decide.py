"""Routing decisions: which tier or model a node goes to. Sans-IO.

This is the one routing rule. The runtime's routing policy (``engine.runtime.policy``) asks it
for every chat completion and workflow op, and a workflow's dry run
(``engine.core.workflow.plan``) asks it through that same policy, so a plan predicts the
tier the run will use.

A request that names a configured model is pinned to it. A workflow op's ``tier`` fixes its
tier (raised to the score's floor: tools need tier 2). Otherwise up to three opinions are
blended on the 0-100 score scale:

1. the heuristic complexity score of the whole conversation (``engine.core.routing.scoring``);
2. a trained router's probability that the request needs the strong model
   (``learned.model``), weighted by ``learned.model_weight``. On a request unlike its
   training rows, the router's familiarity gate (``engine.core.routing.gate``) leans that
   probability toward the length of the conversation, the signal that holds on traffic
   nobody labelled; the heuristic's signals stay as they are;
3. an external classifier's probability (``learned.sidecar_url``), weighted by
   ``learned.sidecar_weight``; the runtime fetches it (I/O) and passes it in.

A probability ``p`` is put on the 0-100 scale so that its threshold lands on the
*configured* tier-1 boundary (:func:`to_score`). The score is the routers' belief and the
thresholds are the cut: calibration moves the thresholds in force and leaves every score as
it was, so a cut that moves changes which tier the scores near it take, and nothing else.
Online learning (``engine.core.routing.online``) is what changes beliefs: the trained router's
log-odds, corrected by what the deployment's feedback taught.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from engine.core.config import Config
from engine.errors import ModelNotFound, echo
from engine.frozen import frozen_constructor
from engine.messages import ChatRequest

from .learned import Belief
from .online import OnlineSettings, OnlineState, predict
from .scoring import Score, score_request, tier_for_score

__all__ = [
    "LearnedScorer",
    "Online",
    "Route",
    "Thresholds",
    "decide_route",
    "model_threshold",
    "to_score",
]


class LearnedScorer(Protocol):
    """A trained router: a "needs the strong model" probability for a request."""

    def score(self, request: ChatRequest, *, heuristic: Score | None = None) -> float: ...

    def assess(self, request: ChatRequest, *, heuristic: Score | None = None) -> Belief: ...

    @property
    def boundary_p(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Route:
    """Where a node goes: ``pinned`` names a model, else ``tier`` is routed by the pool.

    ``score`` is the complexity score (0-100) whenever one was computed; ``router`` says who
    decided (the ``X-LLM-Router-Router`` header); ``value`` is the score before rounding and
    ``belief`` the trained router's, which feedback on this request learns from.
    ``max_tier``, when set, bounds the tiers the pool may try (failover included).
    """

    tier: int
    score: Score | None = None
    pinned: str | None = None
    router: str = "heuristic"
    value: float | None = None
    belief: Belief | None = None
    #: The highest tier the caller may reach (a client key's ``max_tier``): failover never
    #: goes above it.
    max_tier: int | None = None
    #: A workflow op's route: the cheapest model of the tier, rather than the least loaded.
    cheapest: bool = False


@dataclass(frozen=True, slots=True)
class Online:
    """The online correction in force (``state`` None: nothing learned yet)."""

    state: OnlineState | None
    settings: OnlineSettings

    def p(self, belief: Belief) -> float:
        z = predict(self.state, belief.logit, belief.inputs, self.settings, known=belief.known)
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The score thresholds in force: tier 1 takes scores up to ``tier1_max``, tier 2 up to
    ``tier2_max``."""

    tier1_max: int
    tier2_max: int

    @classmethod
    def configured(cls, config: Config) -> Thresholds:
        return cls(config.classifier.tier1_max, config.classifier.tier2_max)


_new_route = frozen_constructor(Route)
_new_score = frozen_constructor(Score)


def to_score(p: float, *, threshold: float, tier1_max: int) -> float:
    """A 0-1 "needs the strong model" probability on the 0-100 score scale, ``threshold``
    landing on the tier-1 boundary ``tier1_max``.

    >>> to_score(0.2, threshold=0.2, tier1_max=30), to_score(0.1, threshold=0.2, tier1_max=30)
    (30.0, 15.0)
    >>> to_score(0.6, threshold=0.2, tier1_max=30)
    65.0
    """
    if p <= threshold:
        return p / threshold * tier1_max
    return tier1_max + (p - threshold) / (1 - threshold) * (100 - tier1_max)


def model_threshold(config: Config, learned: LearnedScorer | None) -> float:
    """The trained router's probability at the tier-1 boundary: ``learned.model_threshold``,
    else the one its file carries, else ``learned.threshold``."""
    settings = config.learned
    if settings.model_threshold is not None:
        return settings.model_threshold
    carried = learned.boundary_p if learned is not None else None
    return carried if carried is not None else settings.threshold


def decide_route(
    request: ChatRequest, config: Config, *, tier: int | None = None,
    thresholds: Thresholds | None = None, learned: LearnedScorer | None = None,
    sidecar_p: float | None = None, online: Online | None = None,
) -> Route:
    """Decide where ``request`` goes (the module docstring's rule).

    CPU work (the heuristic reads the whole conversation; a trained router computes its
    features): a server runs it off its event loop for long requests.

    Args:
        request: the request, as it will be sent.
        config: the models, and the ``learned`` weights.
        tier: a workflow op's fixed tier.
        thresholds: in force now (default: the configured ones).
        learned: the trained router, if one is loaded.
        sidecar_p: the external classifier's probability, if it answered.
        online: what feedback taught the trained router, if anything.

    Raises:
        ModelNotFound: ``request.model`` names no configured model.

    >>> from engine.messages import Message, TextPart
    >>> from engine.core.config import ModelConfig
    >>> config = Config(models=(ModelConfig(name="s", provider="openai", model="s"),))
    >>> ask = ChatRequest(messages=(Message("user", (TextPart("Analyze it step by step."),)),))
    >>> decide_route(ask, config).tier, decide_route(ask, config).score.total
    (1, 20)
    >>> decide_route(ask, config, thresholds=Thresholds(15, 70)).tier
    2
    """
    score = score_request(request)
    if request.model is not None:
        model = config.model_named(request.model)
        if model is None:
            names = ", ".join(m.name for m in config.models)
            raise ModelNotFound(
                f"model {echo(request.model)} is not configured; use \"auto\" or one of: {names}",
                param="model",
            )
        return _new_route(tier=model.tier, score=score, pinned=model.name, router="pinned")
    if tier is not None:
        return Route(tier=max(tier, score.min_tier), score=score, router="workflow")
    limits = thresholds or Thresholds.configured(config)
    anchor = config.classifier.tier1_max  # the belief's scale; never the cut in force
    settings = config.learned
    total = float(score.total)
    router = "heuristic"
    belief = None
    if learned is not None and settings.model_weight > 0:
        w = settings.model_weight
        belief = learned.assess(request, heuristic=score)
        p = belief.p if online is None else online.p(belief)
        total = (1 - w) * total + w * to_score(
            p, threshold=model_threshold(config, learned), tier1_max=anchor)
        router = "learned" if w == 1 else "heuristic+learned"
    if sidecar_p is not None and settings.sidecar_weight > 0:
        w = settings.sidecar_weight
        total = (1 - w) * total + w * to_score(
            sidecar_p, threshold=settings.threshold, tier1_max=anchor)
        router += "+sidecar"
    blended = _new_score(round(total), score.signals, score.min_tier)
    routed = tier_for_score(blended, tier1_max=limits.tier1_max, tier2_max=limits.tier2_max)
    return _new_route(tier=routed, score=blended, router=router, value=total, belief=belief)
