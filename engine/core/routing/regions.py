"""Per-region levels learned from a deployment's feedback. Sans-IO, numpy only.

What the trained router gets wrong on traffic it has never seen is mostly the order *between*
kinds of request (BENCHMARKS.md, section 16): which kind needs the strong model more. Within
one kind its order holds up. So the deployment's reports teach a level per *region* of the
router's sentence-vector space, and routing keeps the shipped model's order inside it.

**Regions.** Online leader clustering of the reported requests' sentence vectors: a request
whose vector is not within cosine :data:`TAU` of any leader becomes a new leader (at most
:data:`LEADERS` of them, then the set is fixed); a request belongs to its nearest leader.
Deterministic, and the leaders (float16) are part of the online state, shared through the
store like the rest of it.

**What a region learns.** Each report's lesson (target and weight, as
:func:`engine.core.routing.online.label` makes them: the cheap model's failure on tier 1, no
gain from a poor strong answer, the strong model's gain from a comparison) is compared with
the shipped model's belief about that same request: the residual ``target - p``. Measuring
against the shipped model's own belief is what absorbs the router's choice of tier: the
requests tier 1 answered are those it believed easy, and the residual asks only whether they
were easier or harder than it believed. A region's level is the mean residual of its
reports, shrunk toward the traffic's mean by :data:`PRIOR` reports, less that mean (so the
traffic as a whole does not move); its shift on the log-odds is :data:`SCALE` times that.
The scale is large on purpose: a region whose reports say "harder than believed" by a few
points moves above the regions that say "easier", whatever the shipped model believed of
them, and the order inside each region stays the shipped model's.

**The floor** (:mod:`engine.core.routing.floor`). Nothing applies before :data:`MIN_REPORTS`
reports. Before learning from a comparison report (both tiers' quality: the strong model's
gain), routing's score of it without and with the levels is kept (the newest
:data:`~engine.core.routing.floor.WINDOW`), as the online state's last snapshot scored it,
with that snapshot's block (pairs are judged within a block), and the levels apply as far
as they rank those gains better, surely (the lead less three standard errors), in full from
the correction's ``tolerance``, not at all while behind: where the correction and the mix
already rank the traffic as well, the levels stay off. Plain reports teach the levels but
never open the floor: a level that ranks "the cheap model failed" better can rank the gain worse.

**What the shipped model knew.** The shift is held back on traffic like the shipped model's
training rows: times ``1 - known`` of the request and ``(1 - known)`` of the region's
reports (their mean ``known``) to the fourth power. On the shipped model's own training set
(MMLU, in-sample) a region of familiar requests then moves next to nothing, where the
request's ``known`` alone let the large scale cost 0.12 APGR (BENCHMARKS.md, section 11b).

Every report decays the evidence (``decay``, the correction's half-life), so the regions'
levels fade when feedback stops, as the correction does.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .floor import WINDOW, opening, row_blocks
from .floor import describe as describe_floor

__all__ = ["LEADERS", "MIN_REPORTS", "PRIOR", "SCALE", "TAU", "Regions"]

LEADERS = 32
"""Regions at most (leaders of the online clustering)."""
TAU = 0.3
"""A request within this cosine of a leader joins it; farther, it leads a new region."""
PRIOR = 5.0
"""Reports (by weight) a region's mean residual is shrunk toward the traffic's with."""
SCALE = 100.0
"""Log-odds per unit of a region's mean residual above the traffic's."""
MIN_REPORTS = 50.0
"""Reports (by weight, decayed) the regions need before any level applies."""
_SUMS = 4  # per region: weight, weighted residual, reports, their summed ``known``


def _unit(vector: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(vector))
    return None if norm == 0 or not np.isfinite(norm) else vector / norm


@dataclass(frozen=True, slots=True, eq=False)
class Regions:
    """Leaders (one row each: unit vectors, at float16 precision as saved) and per region
    the decayed sums (weight, weighted residual, reports, summed ``known``); the newest
    :data:`WINDOW` reports as routing scored them without and with the levels, before
    learning from them (rows of without, with, target, weight), the block of each row
    (``blocks``: the snapshot of the online state that scored it; -1 before the first, never
    judged), and the floor (``gate``) set from them."""

    leaders: np.ndarray
    sums: np.ndarray
    recent: np.ndarray | None = None
    gate: float = 0.0
    blocks: np.ndarray | None = None
    #: Per region, its level times the region's hold-back (computed once, not saved).
    _held: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        reports = self.sums[:, 2] if len(self.sums) else np.zeros(0)
        familiar = np.where(reports > 0, (self.sums[:, 3] if len(self.sums) else reports)
                            / np.maximum(reports, 1e-12), 0.0)
        object.__setattr__(self, "_held", self.levels() * (1.0 - familiar) ** 4)

    @classmethod
    def fresh(cls, dim: int) -> Regions:
        return cls(np.zeros((0, dim), np.float64), np.zeros((0, _SUMS), np.float64))

    def floor(self, scored: tuple[float, float], gain: float, weight: float,
              tolerance: float, block: int = 0) -> Regions:
        """Keep a comparison report as routing scored it (without, with the levels) before
        learning from it, by the snapshot of ``block`` (-1: none yet, never judged), and set
        the floor (:func:`~engine.core.routing.floor.opening`, on pairs of one block)."""
        if weight <= 0:
            return self
        rows = self.recent if self.recent is not None else np.zeros((0, 4))
        blocks = row_blocks(self.recent, self.blocks)
        rows = np.vstack([rows, [scored[0], scored[1], gain, weight]])[-WINDOW:]
        blocks = np.append(blocks, float(block))[-WINDOW:]
        gate = opening(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], tolerance, blocks)
        return Regions(self.leaders, self.sums, rows, gate, blocks)

    def learn(self, vector: np.ndarray, *, p: float, target: float, weight: float,
              known: float, decay: float) -> Regions:
        """One report's lesson: its request's sentence ``vector``, the shipped model's belief
        ``p``, the report's ``target`` and ``weight`` and the request's ``known``. A report
        of no weight (a good strong answer, a capped reporter) only decays the rest: it
        neither opens a region nor counts in one.

        >>> r = Regions.fresh(2)
        >>> a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
        >>> for _ in range(30):
        ...     r = r.learn(a, p=0.2, target=1.0, weight=1.0, known=0.0, decay=1.0)
        ...     r = r.learn(b, p=0.2, target=0.0, weight=1.0, known=0.0, decay=1.0)
        >>> len(r.leaders), r.shift(a, known=0.0, gated=False) > 0 > r.shift(
        ...     b, known=0.0, gated=False)
        (2, True)
        """
        if self.leaders.shape[1] != len(vector):
            return Regions.fresh(len(vector)).learn(
                vector, p=p, target=target, weight=weight, known=known, decay=decay)
        sums = self.sums * decay
        unit = _unit(vector)
        if unit is None or weight <= 0:
            return Regions(self.leaders, sums, self.recent, self.gate, self.blocks)
        leaders = self.leaders
        near = float((leaders @ unit).max()) if len(leaders) else -1.0
        if near < TAU and len(leaders) < LEADERS:
            leaders = np.vstack([leaders, unit.astype(np.float16).astype(np.float64)])
            sums = np.vstack([sums, np.zeros((1, _SUMS))])
        c = int(np.argmax(leaders @ unit))
        sums = sums.copy()
        sums[c] += (weight, weight * (target - p), 1.0, known)
        return Regions(leaders, sums, self.recent, self.gate, self.blocks)

    def levels(self) -> np.ndarray:
        """Per region, its shift on the log-odds before the hold-back."""
        if not len(self.sums):
            return np.zeros(0)
        weight, residual = self.sums[:, 0], self.sums[:, 1]
        total = float(weight.sum())
        if total < MIN_REPORTS:
            return np.zeros(len(self.sums))
        mean = float(residual.sum()) / total
        return SCALE * ((residual + PRIOR * mean) / (weight + PRIOR) - mean)

    def shift(self, vector: np.ndarray, *, known: float, gated: bool = True) -> float:
        """The shift of a request's log-odds (0 before any report, or without a vector);
        ``gated``: as far as the floor lets it. One product with the leaders: the nearest
        leader by cosine is the largest product with the unnormalised vector."""
        gate = self.gate if gated else 1.0
        if gate <= 0 or known >= 1 or not len(self.leaders) or (
                self.leaders.shape[1] != len(vector)):
            return 0.0
        products = self.leaders @ vector
        if not np.isfinite(products).all() or not products.any():
            return 0.0
        return float(self._held[int(np.argmax(products))] * (1.0 - known) * gate)

    def scoring(self) -> Regions:
        """What scores a request by its region (:meth:`shift` with ``gated=False``, as the
        floors score): the leaders and the sums, without the floor's window or gate (a
        snapshot's regions, :mod:`engine.core.routing.snapshot`)."""
        return Regions(self.leaders, self.sums)

    def scoring_dict(self, live: np.ndarray | None = None) -> dict[str, Any]:
        """:meth:`scoring`'s JSON form. The leaders are saved as their count when they are
        the first rows of ``live`` (the live regions' leaders, saved beside it): leaders are
        only ever added, after the last, so a snapshot's are the live ones' first rows, and a
        copy would be a second copy of the same bytes. Otherwise (a state whose vectors changed
        size started its regions afresh) they are saved in full."""
        n = len(self.leaders)
        prefix = (live is not None and live.shape[1:] == self.leaders.shape[1:]
                  and len(live) >= n and np.array_equal(live[:n], self.leaders))
        return {"dim": int(self.leaders.shape[1]),
                "leaders": n if prefix else _pack(self.leaders.astype("<f2")),
                "sums": _pack(self.sums.astype("<f8"))}

    @classmethod
    def scoring_from_dict(cls, raw: Mapping[str, Any],
                          live: np.ndarray | None = None) -> Regions:
        """:meth:`scoring_dict` read back; ``live``: the live regions' leaders, which a count
        refers to. Raises: ValueError (or KeyError, TypeError) on a damaged record."""
        dim, saved = int(raw["dim"]), raw["leaders"]
        if isinstance(saved, str):
            leaders = np.frombuffer(base64.b64decode(saved), "<f2").astype(np.float64)
            leaders = leaders.reshape(-1, dim)
        elif (type(saved) is int and live is not None and 0 <= saved <= len(live)
              and live.shape[1:] == (dim,)):
            leaders = live[:saved]
        else:
            raise ValueError("damaged regions: leaders")
        sums = np.frombuffer(base64.b64decode(raw["sums"]), "<f8").astype(np.float64)
        if (len(sums) != _SUMS * len(leaders) or len(leaders) > LEADERS
                or not (np.isfinite(leaders).all() and np.isfinite(sums).all())):
            raise ValueError("damaged regions")
        return cls(leaders, sums.reshape(-1, _SUMS))

    def to_dict(self) -> dict[str, Any]:
        recent = self.recent if self.recent is not None else np.zeros((0, 4))
        return {"dim": int(self.leaders.shape[1]),
                "leaders": _pack(self.leaders.astype("<f2")),
                "sums": _pack(self.sums.astype("<f8")),
                "judged": _pack(recent.astype("<f8")), "gate": self.gate,
                "blocks": _pack(row_blocks(self.recent, self.blocks).astype("<f8"))}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Regions:
        """Raises: ValueError (or KeyError, TypeError) on a damaged record."""
        dim = int(raw["dim"])
        leaders = np.frombuffer(base64.b64decode(raw["leaders"]), "<f2").astype(np.float64)
        sums = np.frombuffer(base64.b64decode(raw["sums"]), "<f8").astype(np.float64)
        leaders, sums = leaders.reshape(-1, dim), sums.reshape(-1, _SUMS)
        # Saved before the floor judged on comparisons alone, a record kept plain reports under
        # "recent": those rows are dropped, and its floor starts shut.
        recent = (np.frombuffer(base64.b64decode(raw["judged"]), "<f8").astype(np.float64)
                  .reshape(-1, 4) if "judged" in raw else None)
        # Saved before pairs were judged within blocks (no "blocks"), its rows were scored by
        # states that had learned from earlier rows: they stay, never judged, and the floor
        # starts shut.
        blocks = (np.frombuffer(base64.b64decode(raw["blocks"]), "<f8").astype(np.float64)
                  if "blocks" in raw and recent is not None else None)
        gate = float(raw.get("gate", 0.0)) if blocks is not None else 0.0
        finite = all(np.isfinite(a).all() for a in (leaders, sums)) and (
            recent is None or np.isfinite(recent).all()) and (
            blocks is None or np.isfinite(blocks).all())
        if (len(leaders) != len(sums) or len(leaders) > LEADERS or not finite
                or not 0.0 <= gate <= 1.0
                or (blocks is not None and recent is not None and len(blocks) != len(recent))):
            raise ValueError("damaged regions")
        if recent is not None and blocks is None:
            blocks = np.full(len(recent), -1.0)
        return cls(leaders, sums, recent, gate, blocks)

    def describe(self) -> dict[str, Any]:
        """For ``GET /v1/routing``: how many regions, the reports (decayed) behind them, and
        the largest shifts either way."""
        levels = self.levels()
        return {"count": len(self.leaders), "gate": round(self.gate, 4),
                "floor": None if self.recent is None else describe_floor(
                    self.recent[:, 0], self.recent[:, 1], self.recent[:, 2],
                    self.recent[:, 3], row_blocks(self.recent, self.blocks)),
                "learned_from": round(float(self.sums[:, 0].sum()), 2),
                "shift": None if not len(levels) else {
                    "min": round(float(levels.min()), 3), "max": round(float(levels.max()), 3)}}


def _pack(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values).tobytes()).decode("ascii")
