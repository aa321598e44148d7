"""The models a gateway loads from disk before it serves: the cache's embedding matcher and
the trained router. Loading blocks (files, numpy tables), so a server does it before it
starts listening, where a failure is one clear message; ``llm-router workflow plan`` loads
the trained router alone, without a server."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.core.cache.responses import Matcher
from engine.core.config import Config

if TYPE_CHECKING:
    from .policy import LearnedScorer

__all__ = ["Models", "load_learned", "load_models"]


@dataclass(frozen=True, slots=True)
class Models:
    """What :func:`load_models` loaded: ``None`` for a part the config does not ask for."""

    matcher: Matcher | None = None
    learned: LearnedScorer | None = None


def load_models(config: Config) -> Models:
    """Load the models ``config`` asks for (synchronously)."""
    matcher = None
    if config.cache.enabled:
        from engine.core.cache.semantic import SemanticMatcher  # loads embeddings: only here
        embedder = config.cache.embedder
        matcher = SemanticMatcher(embedder.unaligned_cosine if embedder is not None else None)
    learned = load_learned(config, matcher.embedder if matcher is not None else None)
    return Models(matcher=matcher, learned=learned)


def load_learned(config: Config, embedder: Any = None) -> LearnedScorer | None:
    """The trained router named by ``learned.model`` (``builtin``: the one shipped with the
    package), sharing the cache's embedding table when there is one."""
    if config.learned.model is None:
        return None
    from engine.core.routing.learned import DEFAULT_MODEL_PATH, LearnedRouter

    path = DEFAULT_MODEL_PATH if config.learned.model == "builtin" else config.path(
        config.learned.model
    )
    router = LearnedRouter.load(path, embedder=embedder)
    return router if config.learned.gate else replace(router, gate=None)
