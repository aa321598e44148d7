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

**One state per pair.** A pair of window rows compares two scores, and a score made after
the other report was learned has seen that report's gain: judged on such pairs, a learned
order looks better than it is (on comparisons that carry no information the learned parts
opened about three times as often as a fixed order). So the learned parts score each
comparison with a snapshot of the state taken every :data:`BLOCK` comparisons, each row
records its block (the snapshot that scored it), and with ``blocks`` the functions here count
only pairs of one block; rows of a negative block (scored before the first snapshot) are
never judged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["BLOCK", "MIN_JUDGED", "SURE", "WINDOW", "concordance", "describe", "judged", "lead",
           "opening", "row_blocks"]

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
and on traffic whose comparisons agree the floors still open after 20 judged ones."""
WINDOW = 300
"""Comparison reports a floor keeps (the newest)."""
BLOCK = 25
"""Comparison reports scored by one snapshot of the learned state: a floor judges only pairs
of rows scored by the same snapshot."""


def row_blocks(rows: np.ndarray | None, blocks: np.ndarray | None) -> np.ndarray:
    """The block of each of a window's ``rows``: ``blocks`` when it has one per row, else -1
    (never judged) for every row.

    >>> row_blocks(np.zeros((2, 4)), None)
    array([-1., -1.])
    """
    n = 0 if rows is None else len(rows)
    if blocks is not None and len(blocks) == n:
        return blocks
    return np.full(n, -1.0)


def judged(targets: np.ndarray, blocks: np.ndarray | None = None) -> int:
    """The rows a floor judges: all of them, or with ``blocks`` those of a block (>= 0)."""
    return len(targets) if blocks is None else int((blocks >= 0).sum())


def concordance(scores: np.ndarray, targets: np.ndarray, weights: np.ndarray,
                blocks: np.ndarray | None = None) -> float:
    """Of the weighted pairs whose targets differ, the share the scores order the same way
    (ties count half): the ranking quality APGR rewards, on reports.

    >>> concordance(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.5, 1.0]), np.ones(3))
    1.0

    With ``blocks``, only pairs within one block count (here none is reversed):

    >>> concordance(np.array([1.0, 2.0, 3.0, 0.0]), np.array([0.0, 0.5, 1.0, 0.9]),
    ...             np.ones(4), blocks=np.array([0, 0, 0, 1]))
    1.0
    """
    pair = _pairs(targets, weights, blocks)
    total = float(pair.sum())
    if total <= 0 or math.isnan(total):
        return 0.5
    return float((pair * _agree(scores)).sum()) / total


def lead(before: np.ndarray, after: np.ndarray, targets: np.ndarray,
         weights: np.ndarray, blocks: np.ndarray | None = None) -> tuple[float, float]:
    """How far ``after`` is ahead of ``before`` in concordance with ``targets``, and the
    jackknife standard error of that lead (each report left out in turn: a report takes its
    pairs with it).

    Two orders that differ on one report of many are level within a fraction of their
    error; one that reverses the other is far ahead, surely:

    >>> t = np.arange(30) % 3 / 2.0
    >>> ahead, error = lead(-t, t, t, np.ones(30))
    >>> round(ahead, 3), error < 0.1
    (1.0, True)

    With ``blocks`` only pairs within a block count, and rows of a negative block not at all:

    >>> lead(-t, t, t, np.ones(30), np.full(30, -1))
    (0.0, inf)
    """
    if blocks is not None:
        keep = blocks >= 0
        before, after, targets, weights, blocks = (
            before[keep], after[keep], targets[keep], weights[keep], blocks[keep])
    pair = _pairs(targets, weights, blocks)
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
            weights: np.ndarray, tolerance: float, blocks: np.ndarray | None = None) -> float:
    """How much of what ``after`` adds to ``before`` may apply (0..1): none before
    :data:`MIN_JUDGED` judged reports or while the lead, less :data:`SURE` standard errors,
    is not positive; all of it from ``tolerance`` on."""
    if judged(targets, blocks) < MIN_JUDGED:
        return 0.0
    ahead, error = lead(before, after, targets, weights, blocks)
    sure = ahead - SURE * error
    if not math.isfinite(sure) or sure <= 0:
        return 0.0
    return min(1.0, sure / tolerance)


def describe(before: np.ndarray, after: np.ndarray, targets: np.ndarray,
             weights: np.ndarray, blocks: np.ndarray | None = None) -> dict[str, Any] | None:
    """A floor's record for ``GET /v1/routing``: the comparisons it holds (with ``blocks``,
    also how many of them it judges), the lead and its standard error (how far it is from
    opening: it opens from ``lead - SURE × error`` above 0); None before :data:`MIN_JUDGED`
    judged comparisons."""
    count = judged(targets, blocks)
    if count < MIN_JUDGED:
        return None
    ahead, error = lead(before, after, targets, weights, blocks)
    return {"comparisons": len(targets), **({} if blocks is None else {"judged": count}),
            "lead": round(ahead, 4),
            "error": round(error, 4) if math.isfinite(error) else None}


def _pairs(targets: np.ndarray, weights: np.ndarray,
           blocks: np.ndarray | None = None) -> np.ndarray:
    higher = targets[:, None] > targets[None, :]
    if blocks is not None:
        higher &= (blocks[:, None] == blocks[None, :]) & (blocks >= 0)[:, None]
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
