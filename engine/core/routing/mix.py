"""The deployment's own mix of the trained router and prompt length, learned from comparison
reports. Sans-IO, numpy only.

The trained router ranks well on traffic like its training rows and can rank badly on traffic
it has never seen: trained without MMLU, it ranks MMLU's questions with APGR 0.44 where prompt
length reaches 0.61 (BENCHMARKS.md, "Routing that holds on unseen traffic"). Which of the two
to trust, and which way length points (longer prompts need the strong model on MMLU and less
so on RouterBench), differs by deployment, and no rule fixed in advance gets both right.
A comparison report (feedback with both tiers' quality, ``other_quality``) measures it: the
strong model's gain on one request. The mix is a ridge regression of that gain on two inputs,
the shipped log-odds and the standardised log length of the last message, over the newest
:data:`KEPT` comparisons; two numbers and a bias, so a few dozen reports settle it, and a prior
toward the shipped model's order (:data:`PRIOR`) keeps it there until reports say otherwise.

**The cut stays where it was.** The regression's output is put back on the shipped log-odds'
scale (the same mean and spread over the compared requests), so the mix reorders requests
without moving how many of them fall below the tier-1 boundary; calibration owns the cut.

**The floor** (:mod:`engine.core.routing.floor`). Each comparison is scored by the mix before
the mix learns from it; the mix applies as far as it ranked those gains better than the
shipped model, surely (its lead less three standard errors), not at all before
:data:`~engine.core.routing.floor.MIN_JUDGED` of them. Twenty comparisons are few, and a mix
can look ahead on them by chance; besides the standard errors, what keeps that from costing
traffic the shipped model knows is the same hold-back as the correction's (``known``,
:func:`engine.core.routing.online.predict`): on MMLU, the shipped model's own training rows,
30 comparisons among 300 reports cost 0.18 APGR more than plain reports alone without it
(and with a weaker ridge), 0.03 with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["KEPT", "PRIOR", "Mix", "fit_mix"]

KEPT = 300
"""Comparisons the mix is fitted on (the newest)."""
PRIOR = 0.05
"""The gain the prior expects per unit of shipped log-odds (the shipped order, gently)."""
_RIDGE = 10.0


@dataclass(frozen=True, slots=True)
class Mix:
    """Fitted weights (shipped log-odds, length, bias) and the rescaling back onto the shipped
    log-odds: ``z' = centre + (mix - mix_centre) × spread / mix_spread``."""

    weights: np.ndarray
    centre: float
    spread: float
    mix_centre: float
    mix_spread: float

    def raw(self, logit: float, length: float) -> float:
        return float(self.weights[0] * logit + self.weights[1] * length + self.weights[2])

    def logit(self, logit: float, length: float) -> float:
        """The mixed log-odds of a request, on the shipped model's scale."""
        if self.mix_spread <= 1e-12:
            return logit
        return self.centre + (self.raw(logit, length) - self.mix_centre) * (
            self.spread / self.mix_spread)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the fit itself, five numbers and three weights (a snapshot of the online
        state keeps the mix it scores with, not the comparisons it was fitted on; JSON's
        floats read back bit for bit)."""
        return {"weights": [float(w) for w in self.weights], "centre": self.centre,
                "spread": self.spread, "mix_centre": self.mix_centre,
                "mix_spread": self.mix_spread}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Mix:
        """Raises: ValueError (or KeyError, TypeError) on a damaged record."""
        weights = np.array([float(w) for w in raw["weights"]], np.float64)
        if weights.shape != (3,):
            raise ValueError("damaged mix")
        return cls(weights, float(raw["centre"]), float(raw["spread"]),
                   float(raw["mix_centre"]), float(raw["mix_spread"]))


def fit_mix(rows: np.ndarray) -> Mix | None:
    """The mix fitted on ``rows`` of (shipped log-odds, length, gain, weight); None without
    rows.

    On requests where length, not the shipped model, tells gain, the mix learns to follow
    length, and keeps the shipped model's spread:

    >>> z = np.array([-1.0, 1.0, -1.0, 1.0] * 10)
    >>> length = np.array([-1.0, -1.0, 1.0, 1.0] * 10)
    >>> gain = np.where(length > 0, 0.9, 0.3)
    >>> mix = fit_mix(np.c_[z, length, gain, np.ones(40)])
    >>> mix.logit(1.0, -1.0) < mix.logit(-1.0, 1.0)
    True
    >>> round(mix.spread, 3)
    1.0
    """
    if len(rows) == 0:
        return None
    a = np.c_[rows[:, 0], rows[:, 1], np.ones(len(rows))]
    sw = np.sqrt(rows[:, 3])
    a_w, y_w = a * sw[:, None], (rows[:, 2] - 0.5) * sw
    ridge = np.diag([_RIDGE, _RIDGE, 0.0])
    prior = np.array([PRIOR, 0.0, 0.0])
    weights = np.linalg.solve(a_w.T @ a_w + ridge + 1e-9 * np.eye(3),
                              a_w.T @ y_w + ridge @ prior)
    raw = a @ weights
    return Mix(weights, float(rows[:, 0].mean()), float(rows[:, 0].std()),
               float(raw.mean()), float(raw.std()))
