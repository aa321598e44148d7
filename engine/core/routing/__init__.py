"""Routing decisions: the complexity score, the route of a request, the trained router and
the calibration of tier thresholds from feedback."""

from .calibration import Adjustment, Report, calibrate
from .decide import Route, decide_route
from .learned import (
    DEFAULT_MODEL_PATH,
    FORMAT_VERSION,
    FeatureConfig,
    Features,
    LearnedRouter,
    TextEmbedder,
    blend,
    extract_features,
    request_for_prompt,
)
from .scoring import Score, score_request, tier_for_score

__all__ = [
    "DEFAULT_MODEL_PATH",
    "FORMAT_VERSION",
    "Adjustment",
    "FeatureConfig",
    "Features",
    "LearnedRouter",
    "Report",
    "Route",
    "Score",
    "TextEmbedder",
    "blend",
    "calibrate",
    "decide_route",
    "extract_features",
    "request_for_prompt",
    "score_request",
    "tier_for_score",
]
