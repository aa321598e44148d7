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
not ``0.28 * 100 == 28.000000000000004``), so a report falls in a band by the whole point it
counts at, :func:`point`: the band ``(T - band, T]`` holds the points ``T - band + 1 .. T``.
Qualities and the target are counted in whole millionths (:func:`millionths`), so a band's
sum is an exact integer whatever order it was added in, and a band meets the target when its
sum is at least ``samples × target`` (twenty-five reports of exactly 0.9 meet a target of 0.9).

**The tally.** Calibration reads reports only through a :class:`Tally`: per tier and point,
the number of reports and their summed quality. A store keeps one up to date as reports
arrive (adding a report is O(1)) and clears a tier's counts when its threshold moves, so a
calibration costs the same with ten reports stored or ten million.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["THRESHOLD_TIERS", "Adjustment", "Report", "Tally", "calibrate", "calibrate_threshold",
           "millionths", "point", "read_windows"]


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


#: Per tier, the scores (0-100: ``low < score <= high``) a calibration may read.
Windows = dict[int, tuple[int, int]]


#: The tier whose threshold each name is.
THRESHOLD_TIERS = {"tier1_max": 1, "tier2_max": 2}

_MILLION = 1_000_000


def point(score: float) -> int:
    """The whole score point (0-100 scale) a report of ``score`` counts at: it lies in the
    band ``(T - band, T]`` exactly when its point does.

    >>> point(0.28), point(0.281), point(0.0)
    (28, 29, 0)
    """
    return math.ceil(round(score * 100, 6))


def millionths(quality: float) -> int:
    """``quality`` (or a target) in whole millionths.

    >>> millionths(0.9), millionths(0.1234567)
    (900000, 123457)
    """
    return round(quality * _MILLION)


class Tally:
    """Per tier and score point, how many reports and their summed quality in millionths.

    >>> tally = Tally.of([Report(0.275, 1, 0.9), Report(0.28, 1, 0.7), Report(0.5, 2, 1.0)])
    >>> tally.band(1, 30, 10)
    (2, 1600000)
    >>> tally.clear(1)
    >>> tally.band(1, 30, 10), tally.band(2, 50, 1)
    ((0, 0), (1, 1000000))
    """

    __slots__ = ("_cells",)

    def __init__(self, cells: Mapping[tuple[int, int], tuple[int, int]] | None = None) -> None:
        self._cells: dict[tuple[int, int], tuple[int, int]] = {
            key: value for key, value in (cells or {}).items() if value[0]}

    @classmethod
    def of(cls, reports: Iterable[Report]) -> Tally:
        tally = cls()
        for report in reports:
            tally.add(report)
        return tally

    def add(self, report: Report) -> None:
        self.count(report.tier, point(report.score), 1, millionths(report.quality))

    def count(self, tier: int, at: int, n: int, quality: int) -> None:
        """Add ``n`` reports of tier ``tier`` at point ``at`` whose qualities sum to
        ``quality`` millionths."""
        had_n, had_quality = self._cells.get((tier, at), (0, 0))
        if had_n + n:
            self._cells[(tier, at)] = (had_n + n, had_quality + quality)
        else:
            self._cells.pop((tier, at), None)

    def clear(self, tier: int) -> None:
        """Forget tier ``tier``'s reports (its threshold moved: they are spent)."""
        for key in [key for key in self._cells if key[0] == tier]:
            del self._cells[key]

    def band(self, tier: int, top: int, band: int) -> tuple[int, int]:
        """The reports of ``tier`` in the band ``(top - band, top]``: how many, and their
        summed quality in millionths."""
        n = quality = 0
        for at in range(top - band + 1, top + 1):
            cell = self._cells.get((tier, at))
            if cell is not None:
                n += cell[0]
                quality += cell[1]
        return n, quality

    def within(self, windows: Windows) -> Tally:
        """Only the counts ``windows`` name (all a calibration with them reads)."""
        return Tally({(tier, at): cell for (tier, at), cell in self._cells.items()
                      if tier in windows and windows[tier][0] < at <= windows[tier][1]})

    def cells(self) -> dict[tuple[int, int], tuple[int, int]]:
        """``{(tier, point): (reports, summed quality in millionths)}``, none empty."""
        return dict(self._cells)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tally) and self._cells == other._cells

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Tally({self._cells!r})"


def _meets(n: int, quality: int, target: int) -> bool:
    return quality >= n * target


def calibrate_threshold(
    reports: Tally | Sequence[Report], *, name: str, tier: int, current: int, target: float,
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
    tally = reports if isinstance(reports, Tally) else Tally.of(reports)
    goal = millionths(target)
    best: tuple[int, int, int] | None = None
    # Only from the current value up: good quality below it is no reason to send more traffic
    # to the dearer tier.
    for candidate in range(current, min(high, current + max_step) + 1):
        n, quality = tally.band(tier, candidate, band)
        if n >= min_samples and _meets(n, quality, goal):
            best = (candidate, n, quality)
    if best is not None:
        if best[0] == current:
            return None
        return Adjustment(name, current, best[0], best[1], best[2] / (best[1] * _MILLION),
                          f"tier {tier} meets the quality target up to {best[0]}")
    n, quality = tally.band(tier, current, band)
    if n >= min_samples and not _meets(n, quality, goal):
        new = max(low, current - max_step)
        if new != current:
            return Adjustment(name, current, new, n, quality / (n * _MILLION),
                              f"tier {tier} falls short of the quality target at {current}")
    return None


def read_windows(*, tier1_max: int, tier2_max: int, max_step: int, band: int) -> Windows:
    """The reports :func:`calibrate` with these settings can read: tier 1's and tier 2's
    whose scores fall within ``band`` below the threshold up to ``max_step`` above it (each
    candidate's boundary band lies there), that is the points ``low + 1 .. high``. Any other
    report leaves every band unchanged, so a store may leave it out (:meth:`Tally.within`):
    the answer is the same.

    >>> read_windows(tier1_max=30, tier2_max=70, max_step=5, band=15)
    {1: (15, 35), 2: (55, 75)}
    """
    return {1: (tier1_max - band, tier1_max + max_step),
            2: (tier2_max - band, tier2_max + max_step)}


def calibrate(
    reports: Tally | Sequence[Report], *, tier1_max: int, tier2_max: int, target: float,
    min_samples: int, max_step: int, band: int,
) -> list[Adjustment]:
    """Calibrate both thresholds; returns the changes (empty: keep both)."""
    if not isinstance(reports, Tally):
        reports = Tally.of(reports)
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
