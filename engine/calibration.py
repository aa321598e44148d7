"""Threshold calibration from quality feedback. Sans-IO: plain functions over plain data.

The tier thresholds (``classifier.tier1_max`` / ``tier2_max``, on the 0-100 score scale) decide
how much traffic the cheaper tiers take. Feedback says how good the answers were: each report
is a request's routing score (0-1), the tier that answered and a quality (0-1).

**The algorithm.** For each threshold ``T_k`` (tier ``k`` takes scores up to ``T_k``), look at
the feedback answered by tier ``k`` in the *boundary band* ``(T - band, T]`` for each candidate
``T`` within ``max_step`` points of the current value. The band's mean quality estimates how
well tier ``k`` serves the hardest requests it would take at that setting. Choose the largest
(cheapest) candidate whose band holds at least ``min_samples`` reports with mean quality at
least ``target``. If no candidate qualifies but the current band has enough reports and falls
short, step down by ``max_step`` (send the boundary requests up a tier). With too few reports
nothing moves. Thresholds stay in 0-100 with ``tier1_max <= tier2_max``.

So a burst of feedback can move a threshold by at most ``max_step`` points per calibration,
and the router never moves on evidence smaller than ``min_samples``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Adjustment", "Report", "calibrate", "calibrate_threshold"]


@dataclass(frozen=True, slots=True)
class Report:
    score: float  # the request's routing score, 0-1
    tier: int  # the tier that answered
    quality: float  # 0-1


@dataclass(frozen=True, slots=True)
class Adjustment:
    name: str  # "tier1_max" | "tier2_max"
    old: int
    new: int
    samples: int
    quality: float | None
    reason: str


def _band(reports: Sequence[Report], tier: int, top: int, band: int) -> tuple[int, float | None]:
    qualities = [
        r.quality for r in reports if r.tier == tier and top - band < r.score * 100 <= top
    ]
    if not qualities:
        return 0, None
    return len(qualities), sum(qualities) / len(qualities)


def calibrate_threshold(
    reports: Sequence[Report], *, name: str, tier: int, current: int, target: float,
    min_samples: int, max_step: int, band: int, low: int = 0, high: int = 100,
) -> Adjustment | None:
    """The new value of one threshold, or ``None`` to keep it (see the module docstring).

    >>> fine = [Report(0.28, 1, 0.95)] * 30
    >>> calibrate_threshold(fine, name="tier1_max", tier=1, current=30, target=0.8,
    ...                     min_samples=20, max_step=5, band=10).new
    35
    >>> poor = [Report(0.28, 1, 0.4)] * 30
    >>> calibrate_threshold(poor, name="tier1_max", tier=1, current=30, target=0.8,
    ...                     min_samples=20, max_step=5, band=10).new
    25
    >>> calibrate_threshold(poor[:5], name="tier1_max", tier=1, current=30, target=0.8,
    ...                     min_samples=20, max_step=5, band=10) is None
    True
    """
    best: tuple[int, int, float] | None = None
    for candidate in range(max(low, current - max_step), min(high, current + max_step) + 1):
        n, quality = _band(reports, tier, candidate, band)
        if n >= min_samples and quality is not None and quality >= target:
            best = (candidate, n, quality)
    if best is not None:
        if best[0] == current:
            return None
        return Adjustment(name, current, best[0], best[1], best[2],
                          f"tier {tier} meets the quality target up to {best[0]}")
    n, quality = _band(reports, tier, current, band)
    if n >= min_samples and quality is not None and quality < target:
        new = max(low, current - max_step)
        if new != current:
            return Adjustment(name, current, new, n, quality,
                              f"tier {tier} falls short of the quality target at {current}")
    return None


def calibrate(
    reports: Sequence[Report], *, tier1_max: int, tier2_max: int, target: float,
    min_samples: int, max_step: int, band: int,
) -> list[Adjustment]:
    """Calibrate both thresholds; returns the changes (empty: keep both)."""
    changes: list[Adjustment] = []
    first = calibrate_threshold(
        reports, name="tier1_max", tier=1, current=tier1_max, target=target,
        min_samples=min_samples, max_step=max_step, band=band, high=tier2_max,
    )
    if first is not None:
        changes.append(first)
        tier1_max = first.new
    second = calibrate_threshold(
        reports, name="tier2_max", tier=2, current=tier2_max, target=target,
        min_samples=min_samples, max_step=max_step, band=band, low=tier1_max,
    )
    if second is not None:
        changes.append(second)
    return changes
