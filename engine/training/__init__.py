"""Offline: evaluating routers (APGR, CPT) and training the learned router."""

from .evaluate import (
    RoutingRow,
    cheapest_at,
    curve_at,
    evaluate_choices,
    model_ladder,
    multi_tier_points,
    parse_rows,
    summarize,
    tier_split,
)
from .fit import train_router

__all__ = [
    "RoutingRow",
    "cheapest_at",
    "curve_at",
    "evaluate_choices",
    "model_ladder",
    "multi_tier_points",
    "parse_rows",
    "summarize",
    "tier_split",
    "train_router",
]
