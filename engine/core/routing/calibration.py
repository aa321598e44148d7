"""Threshold calibration from quality feedback. Sans-IO: plain functions over plain data.

The tier thresholds (``classifier.tier1_max`` / ``tier2_max``, on the 0-100 score scale) decide
how much traffic the cheaper tiers take. Feedback says how good the answers were: each report
is a request's routing score (0-1), the tier that answered and a quality (0-1).

**The algorithm.** For each threshold ``T_k`` (tier ``k`` takes scores up to ``T_k``), look at
the feedback answered by tier ``k`` in the *boundary band* ``(T - band, T]`` for each candidate
``T`` from the current value up to ``max_step`` points above it. The band's mean quality
estimates how well tier ``k`` serves the hardest requests it would take at that setting. Choose
the largest (cheapest) candidate whose band holds at least ``min_samples`` reports with mean
quality at least ``target``. If no candidate qualifies but the current band has enough reports
and falls short, step down by ``max_step`` (send the boundary requests up a tier). With too few
reports nothing moves, and good quality never moves a threshold down. Thresholds stay in 0-100
with ``tier1_max <= tier2_max``.

So a burst of feedback can move a threshold by at most ``max_step`` points per calibration,
and the router never moves on evidence smaller than ``min_samples``. The router
(``engine.runtime.policy``) calibrates a threshold only on the reports that arrived since it last
moved, so each step needs ``min_samples`` fresh reports: evidence is never counted twice.

Scores are compared on the 0-100 scale rounded to 1e-6 (a report of ``0.28`` is exactly 28,
not ``0.28 * 100 == 28.000000000000004``), and a mean within 1e-9 of the target meets it
(twenty-five reports of exactly 0.9 meet a target of 0.9).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Adjustment", "Report", "calibrate", "calibrate_threshold", "read_windows", "within"]


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


_EPSILON = 1e-9


def _band(reports: Sequence[Report], tier: int, top: int, band: int) -> tuple[int, float | None]:
    qualities = [
        r.quality for r in reports
        if r.tier == tier and top - band < round(r.score * 100, 6) <= top
    ]
    if not qualities:
        return 0, None
    return len(qualities), math.fsum(qualities) / len(qualities)


def _meets(quality: float, target: float) -> bool:
    return quality >= target - _EPSILON


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
    # Only from the current value up: good quality below it is no reason to send more traffic
    # to the dearer tier.
    for candidate in range(current, min(high, current + max_step) + 1):
        n, quality = _band(reports, tier, candidate, band)
        if n >= min_samples and quality is not None and _meets(quality, target):
            best = (candidate, n, quality)
    if best is not None:
        if best[0] == current:
            return None
        return Adjustment(name, current, best[0], best[1], best[2],
                          f"tier {tier} meets the quality target up to {best[0]}")
    n, quality = _band(reports, tier, current, band)
    if n >= min_samples and quality is not None and not _meets(quality, target):
        new = max(low, current - max_step)
        if new != current:
            return Adjustment(name, current, new, n, quality,
                              f"tier {tier} falls short of the quality target at {current}")
    return None


#: Per tier, the scores (0-100: ``low < score <= high``) a calibration may read.
Windows = dict[int, tuple[int, int]]


def read_windows(*, tier1_max: int, tier2_max: int, max_step: int, band: int) -> Windows:
    """The reports :func:`calibrate` with these settings can read: tier 1's and tier 2's
    whose scores fall within ``band`` below the threshold up to ``max_step`` above it (each
    candidate's boundary band lies there). Any other report leaves every band unchanged, so a
    store may leave it out: the answer is the same, from a fraction of the reports.

    >>> read_windows(tier1_max=30, tier2_max=70, max_step=5, band=15)
    {1: (15, 35), 2: (55, 75)}
    """
    return {1: (tier1_max - band, tier1_max + max_step),
            2: (tier2_max - band, tier2_max + max_step)}


def within(report: Report, windows: Windows) -> bool:
    """Whether ``report`` is one of those ``windows`` may read (as :func:`_band` rounds)."""
    window = windows.get(report.tier)
    return window is not None and window[0] < round(report.score * 100, 6) <= window[1]


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
