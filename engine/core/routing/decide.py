"""Routing decisions: which tier or model a node goes to. Sans-IO.

A request that names a configured model is pinned to it. Otherwise the node's tier (a workflow
op's ``tier``) or the complexity score (``engine.core.routing.scoring``) picks the tier, and the
pool picks the backend within it at call time.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.config import Config
from engine.errors import ModelNotFound, echo
from engine.messages import ChatRequest

from .scoring import Score, score_request, tier_for_score

__all__ = ["Route", "decide_route"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where a node goes: ``pinned`` names a model, else ``tier`` is routed by the pool.

    ``score`` is the complexity score (0-100) whenever one was computed.
    """

    tier: int
    score: Score | None = None
    pinned: str | None = None
    router: str = "heuristic"


def decide_route(request: ChatRequest, config: Config, *, tier: int | None = None) -> Route:
    """Decide where ``request`` goes.

    Raises:
        ModelNotFound: ``request.model`` names no configured model.
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
        return Route(tier=model.tier, score=score, pinned=model.name, router="pinned")
    if tier is not None:
        return Route(tier=max(tier, score.min_tier), score=score, router="workflow")
    routed = tier_for_score(
        score, tier1_max=config.classifier.tier1_max, tier2_max=config.classifier.tier2_max
    )
    return Route(tier=routed, score=score)
