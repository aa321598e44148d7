"""The floors of online learning: how far a learned order is ahead of the shipped one, and
how sure that is. Sans-IO, numpy only.

Everything online learning adds to the shipped router (the mix, the per-region levels, the
correction) applies only as far as its floor lets it, and a floor compares two orders of the
same requests: routing's scores without and with the addition, each taken before the report
taught anything (prequentially). What routing needs from a score is that order (APGR
measures nothing else), so a floor counts, of the pairs of reports whose targets differ, the
share each score orders the right way round (:func:`concordance`).

**Judged on comparisons only.** The only reports that say what routing is scored on are
comparisons (both tiers' quality on one request: the strong model's gain). A plain report's
target, "the cheap model failed here", ranks how hard a request is, and the hardest requests
are often failed by both models: a learned order can rank that proxy better while ranking
the gain worse (BENCHMARKS.md, "A floor judged on the gain"). So the floors keep comparison
reports alone, and nothing learned applies before :data:`MIN_JUDGED` of them.

**Sure, not lucky.** A few dozen comparisons are few, and on them a learned order is ahead
of the shipped one by chance about as often as behind; and a floor is judged again after
every comparison, so chance gets many tries. :func:`opening` therefore discounts the lead by
its standard error (a jackknife over the reports: each left out in turn) times :data:`SURE`,
and opens in full only when what is left reaches ``tolerance``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["MIN_JUDGED", "SURE", "WINDOW", "concordance", "describe", "lead", "opening"]

MIN_JUDGED = 20
"""Comparison reports a floor needs before anything it guards applies."""
SURE = 3.0
"""Standard errors the lead is discounted by before it counts: about a one-sided 99.9% bound.
A floor is judged again after every comparison, so over a thousand comparisons a lucky lead
gets a thousand chances to cross the bar. With two, a replay of MMLU in file order (every
report a comparison) opened the regions' floor for about 30 reports and lost 0.113 of APGR on
held-back rows, and grades that were pure noise (a judge wrong half the time) opened it for a
loss of 0.081; with one, a replay with 10% comparisons lost 0.046 (BENCHMARKS.md, "A floor
judged on the gain" and "Comparisons graded by a judge"). With three, none of these opened,
and on traffic whose comparisons agree the floors still open after 20 of them."""
WINDOW = 300
"""Comparison reports a floor keeps (the newest)."""


def concordance(scores: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> float:
    """Of the weighted pairs whose targets differ, the share the scores order the same way
    (ties count half): the ranking quality APGR rewards, on reports.

    >>> concordance(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.5, 1.0]), np.ones(3))
    1.0
    """
    pair = _pairs(targets, weights)
    total = float(pair.sum())
    if total <= 0 or math.isnan(total):
        return 0.5
    return float((pair * _agree(scores)).sum()) / total


def lead(before: np.ndarray, after: np.ndarray, targets: np.ndarray,
         weights: np.ndarray) -> tuple[float, float]:
    """How far ``after`` is ahead of ``before`` in concordance with ``targets``, and the
    jackknife standard error of that lead (each report left out in turn: a report takes its
    pairs with it).

    Two orders that differ on one report of many are level within a fraction of their
    error; one that reverses the other is far ahead, surely:

    >>> t = np.arange(30) % 3 / 2.0
    >>> ahead, error = lead(-t, t, t, np.ones(30))
    >>> round(ahead, 3), error < 0.1
    (1.0, True)
    """
    pair = _pairs(targets, weights)
    # agree(after) - agree(before), each 1 / 0.5 / 0 by the sign of a score difference:
    # half the difference of the two signs (so the halving is done once, on the sums below)
    won = _signs(after)
    won -= _signs(before)
    won *= pair
    total = float(pair.sum())
    n = len(targets)
    if total <= 0 or math.isnan(total) or n < 3:
        return 0.0, math.inf
    # Leaving report k out removes its row and its column of pairs (the diagonal is empty).
    kept = total - pair.sum(axis=0) - pair.sum(axis=1)
    whole = 0.5 * float(won.sum())
    gained = whole - 0.5 * won.sum(axis=0) - 0.5 * won.sum(axis=1)
    valid = kept > 0
    if valid.sum() < 3:
        return whole / total, math.inf
    leads = gained[valid] / kept[valid]
    m = len(leads)
    error = math.sqrt((m - 1) / m * float(((leads - leads.mean()) ** 2).sum()))
    return whole / total, error


def opening(before: np.ndarray, after: np.ndarray, targets: np.ndarray,
            weights: np.ndarray, tolerance: float) -> float:
    """How much of what ``after`` adds to ``before`` may apply (0..1): none before
    :data:`MIN_JUDGED` reports or while the lead, less :data:`SURE` standard errors, is not
    positive; all of it from ``tolerance`` on."""
    if len(targets) < MIN_JUDGED:
        return 0.0
    ahead, error = lead(before, after, targets, weights)
    sure = ahead - SURE * error
    if not math.isfinite(sure) or sure <= 0:
        return 0.0
    return min(1.0, sure / tolerance)


def describe(before: np.ndarray, after: np.ndarray, targets: np.ndarray,
             weights: np.ndarray) -> dict[str, Any] | None:
    """A floor's record for ``GET /v1/routing``: the comparisons it holds, the lead and its
    standard error (how far it is from opening: it opens from ``lead - SURE × error`` above
    0); None before :data:`MIN_JUDGED` comparisons."""
    if len(targets) < MIN_JUDGED:
        return None
    ahead, error = lead(before, after, targets, weights)
    return {"comparisons": len(targets), "lead": round(ahead, 4),
            "error": round(error, 4) if math.isfinite(error) else None}


def _pairs(targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    higher = targets[:, None] > targets[None, :]
    pairs: np.ndarray = weights[:, None] * weights[None, :] * higher
    return pairs


def _agree(scores: np.ndarray) -> np.ndarray:
    agree: np.ndarray = 0.5 + 0.5 * _signs(scores)
    return agree


def _signs(scores: np.ndarray) -> np.ndarray:
    """``sign(scores[i] - scores[j])`` for every pair: 1, 0 (a tie) or -1."""
    diff = scores[:, None] - scores[None, :]
    signs: np.ndarray = np.sign(diff, out=diff)
    return signs
