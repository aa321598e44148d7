"""Offline: evaluating routers (APGR, CPT), training the learned router, and the split of the
cache's labelled pairs into design, choose and report parts."""

from .cache_split import SPLITS, Split, split_of, split_rows
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
from .fit import MONOTONE, train_router

__all__ = [
    "MONOTONE",
    "SPLITS",
    "RoutingRow",
    "Split",
    "cheapest_at",
    "curve_at",
    "evaluate_choices",
    "model_ladder",
    "multi_tier_points",
    "parse_rows",
    "split_of",
    "split_rows",
    "summarize",
    "tier_split",
    "train_router",
]
