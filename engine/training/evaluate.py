"""How good is a router? RouteLLM's metrics over labelled rows. Sans-IO: plain functions.

A labelled row says how well a weak (cheap) and a strong (expensive) model answered one
prompt; a router gives every prompt a score, higher meaning "send it to the strong model".
Sending the top ``x`` share of prompts to the strong model traces a quality-vs-%strong curve
(RouteLLM, Ong et al. 2024, arXiv:2406.18665):

* **APGR**: the area under that curve, normalised so always-weak gives 0, always-strong 1 and
  random routing 0.5.
* **CPT(x%)**: the smallest share of strong calls that recovers ``x%`` of the weak-to-strong
  quality gap (random routing: ``x%``).

Two ways to trace the curve, as the evaluation data's reference script ``routing_metrics.py``
does (with the same arithmetic, so the numbers agree to the last digit; see
``tests/training/test_routing_eval.py``): ``"exact"`` takes every distinct score as a threshold and
interpolates ties (random tie-breaking in expectation); ``"routellm"`` takes 11 thresholds at
the score deciles, as RouteLLM's ``evaluate.py`` does.

Rows with a score and a cost for many models (RouterBench) also support multi-tier routing:
:func:`multi_tier_points` splits the prompts, ranked by score, over a ladder of models (cheap
to strong), and reports quality and cost relative to always calling the strongest model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

__all__ = [
    "CurveMode",
    "MultiTierPoint",
    "RoutingRow",
    "Summary",
    "apgr",
    "cheapest_at",
    "cpt",
    "curve_at",
    "curve_exact",
    "curve_routellm",
    "evaluate_choices",
    "evaluate_routes",
    "model_ladder",
    "multi_tier_points",
    "pareto_front",
    "parse_rows",
    "summarize",
    "tier_split",
]

CurveMode = Literal["exact", "routellm"]
Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class RoutingRow:
    """One labelled prompt: how the weak and the strong model scored on it (and, for
    RouterBench rows, every model's ``scores`` and ``costs``)."""

    id: str
    prompt: str
    weak_score: float
    strong_score: float
    source: str = ""
    subset: str = ""
    weak_model: str = ""
    strong_model: str = ""
    weak_cost: float | None = None
    strong_cost: float | None = None
    contaminated: bool = False
    scores: Mapping[str, float] = field(default_factory=dict)
    costs: Mapping[str, float] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """What the strong model adds on this prompt (negative when the weak one did better)."""
        return self.strong_score - self.weak_score


@dataclass(frozen=True, slots=True)
class Summary:
    """A router's curve over some rows and the numbers read off it."""

    apgr: float
    cpt50: float
    cpt80: float
    weak: float
    strong: float
    points: tuple[Point, ...]

    def as_dict(self) -> dict[str, float]:
        """The numbers under ``routing_metrics.py``'s names."""
        return {"weak": self.weak, "strong": self.strong, "APGR": self.apgr,
                "CPT50": self.cpt50, "CPT80": self.cpt80}


_REQUIRED = ("id", "prompt", "weak_score", "strong_score")


def _why(exc: Exception) -> str:
    """What is wrong with a row, in words (never an exception's repr).

    >>> _why(KeyError("prompt"))
    "no 'prompt' (a row needs id, prompt, weak_score and strong_score)"
    >>> _why(json.JSONDecodeError("Expecting value", "x", 0))
    'not JSON (Expecting value at column 1)'
    """
    if isinstance(exc, KeyError):
        return (f"no {exc.args[0]!r} (a row needs {', '.join(_REQUIRED[:-1])} and "
                f"{_REQUIRED[-1]})")
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, TypeError | AttributeError):
        return "not a JSON object with the fields of a row, or a field of the wrong kind"
    return str(exc)


def parse_rows(lines: Iterable[str], *, decontaminated: bool = False) -> list[RoutingRow]:
    """Rows from JSONL text, one labelled prompt a line (the format is in docs/cli.md,
    "Labelled rows").

    Args:
        lines: JSON objects, one a line; blank lines are skipped.
        decontaminated: drop rows marked ``"contaminated": true`` (RouteLLM's
            decontaminated MMLU set).

    Raises:
        ValueError: a line is not JSON or lacks ``id``, ``prompt``, ``weak_score`` or
            ``strong_score``.
    """
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            row = RoutingRow(
                id=str(raw["id"]),
                prompt=str(raw["prompt"]),
                weak_score=float(raw["weak_score"]),
                strong_score=float(raw["strong_score"]),
                source=str(raw.get("source", "")),
                subset=str(raw.get("subset", "")),
                weak_model=str(raw.get("weak_model", "")),
                strong_model=str(raw.get("strong_model", "")),
                weak_cost=_cost(raw, "weak"),
                strong_cost=_cost(raw, "strong"),
                contaminated=bool(raw.get("contaminated", False)),
                scores={k: float(v) for k, v in (raw.get("scores") or {}).items()},
                costs={k: float(v) for k, v in (raw.get("costs_usd") or {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"line {number}: not a routing row: {_why(exc)}") from exc
        if not (decontaminated and row.contaminated):
            rows.append(row)
    return rows


def _cost(raw: Mapping[str, object], which: str) -> float | None:
    # RouterBench rows record costs; AlpacaEval rows carry estimates from output length.
    for key in (f"{which}_cost_usd", f"{which}_cost_usd_est"):
        value = raw.get(key)
        if isinstance(value, int | float):
            return float(value)
    return None


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default rule)."""
    pos = q * (len(sorted_xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def curve_routellm(
    rows: Sequence[RoutingRow], scores: Sequence[float], *, n_bins: int = 10
) -> list[Point]:
    """``(share of strong calls, mean quality)`` at ``n_bins + 1`` thresholds: the score
    quantiles; the last one sends only scores above the maximum (none) to the strong model."""
    s_sorted = sorted(scores)
    thresholds = [_quantile(s_sorted, i / n_bins) for i in range(n_bins + 1)]
    points = []
    for i, t in enumerate(thresholds):
        chosen = [(s >= t) if i < n_bins else (s > t) for s in scores]
        q = _mean([r.strong_score if k else r.weak_score for r, k in zip(rows, chosen,
                                                                           strict=True)])
        points.append((sum(chosen) / len(rows), q))
    return sorted(points)


def curve_exact(rows: Sequence[RoutingRow], scores: Sequence[float]) -> list[Point]:
    """``(share of strong calls, mean quality)`` with every distinct score as a threshold.

    Prompts tied on a score enter the strong share together, so the curve is a straight
    line across a tie: the expectation under random tie-breaking.

    >>> rows = [RoutingRow(str(i), "", w, s) for i, (w, s) in enumerate([(0, 1), (1, 1)])]
    >>> curve_exact(rows, [0.9, 0.1])
    [(0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]
    """
    n = len(rows)
    order = sorted(range(n), key=lambda i: -scores[i])
    q = sum(r.weak_score for r in rows)
    points = [(0.0, q / n)]
    i = 0
    while i < n:  # one tie group at a time
        j = i
        while j < n and scores[order[j]] == scores[order[i]]:
            q += rows[order[j]].strong_score - rows[order[j]].weak_score
            j += 1
        points.append((j / n, q / n))
        i = j
    return points


def _trapz(points: Sequence[Point]) -> float:
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in pairwise(points))


def apgr(points: Sequence[Point], weak: float, strong: float) -> float:
    """The normalised area under ``points``: 0 for always-weak, 1 for always-strong.

    >>> apgr([(0.0, 0.5), (1.0, 1.0)], 0.5, 1.0)
    0.5
    """
    span = points[-1][0] - points[0][0]
    return (_trapz(points) - weak * span) / ((strong - weak) * span)


def cpt(points: Sequence[Point], weak: float, strong: float, level: float) -> float:
    """The share of strong calls at which the curve first recovers ``level`` of the gap
    (linear between points); NaN if it never does.

    >>> cpt([(0.0, 0.5), (1.0, 1.0)], 0.5, 1.0, 0.8)
    0.8
    """
    target = weak + level * (strong - weak)
    for (x0, y0), (x1, y1) in pairwise(points):
        if y0 >= target:
            return x0
        if y1 >= target:
            return x0 + (x1 - x0) * (target - y0) / (y1 - y0)
    return points[-1][0] if points[-1][1] >= target else math.nan


def summarize(
    rows: Sequence[RoutingRow], scores: Sequence[float], *, mode: CurveMode = "exact"
) -> Summary:
    """APGR, CPT(50%) and CPT(80%) of a router that gave ``rows`` these ``scores``.

    Raises:
        ValueError: no rows, a score count that differs from the row count, or an unknown
            ``mode``.
    """
    if not rows or len(rows) != len(scores):
        raise ValueError(f"need one score per row, got {len(scores)} for {len(rows)} rows")
    if mode not in ("exact", "routellm"):
        raise ValueError(f"mode must be 'exact' or 'routellm', got {mode!r}")
    weak = _mean([r.weak_score for r in rows])
    strong = _mean([r.strong_score for r in rows])
    points = curve_routellm(rows, scores) if mode == "routellm" else curve_exact(rows, scores)
    return Summary(apgr(points, weak, strong), cpt(points, weak, strong, 0.5),
                   cpt(points, weak, strong, 0.8), weak, strong, tuple(points))


def evaluate_routes(rows: Sequence[RoutingRow], strong: Sequence[bool]) -> dict[str, float]:
    """One operating point: the quality, PGR (and cost relative to always-strong, when the
    rows carry costs) of sending the prompts marked ``True`` to the strong model."""
    weak_q = _mean([r.weak_score for r in rows])
    strong_q = _mean([r.strong_score for r in rows])
    q = _mean([r.strong_score if s else r.weak_score for r, s in zip(rows, strong, strict=True)])
    out = {"n": float(len(rows)), "strong_fraction": _mean([1.0 if s else 0.0 for s in strong]),
           "quality": q, "weak": weak_q, "strong": strong_q,
           "PGR": (q - weak_q) / (strong_q - weak_q)}
    if all(r.weak_cost is not None and r.strong_cost is not None for r in rows):
        cost = sum((r.strong_cost if s else r.weak_cost) or 0.0
                   for r, s in zip(rows, strong, strict=True))
        out["cost_vs_always_strong"] = cost / sum(r.strong_cost or 0.0 for r in rows)
    return out


def evaluate_choices(rows: Sequence[RoutingRow], models: Sequence[str]) -> dict[str, float]:
    """Multi-model routing with one model named per row (RouterBench rows): quality, and
    quality and cost relative to always calling the row's strong model.

    Raises:
        KeyError: a row has no score or cost for its chosen model.
    """
    q = _mean([r.scores[m] for r, m in zip(rows, models, strict=True)])
    cost = sum(r.costs[m] for r, m in zip(rows, models, strict=True))
    strong_q = _mean([r.strong_score for r in rows])
    return {"n": float(len(rows)), "quality": q, "strong": strong_q,
            "quality_vs_strong": q / strong_q,
            "cost_vs_always_strong": cost / sum(r.strong_cost or 0.0 for r in rows)}


_DECILES = tuple(i / 10 for i in range(11))


def curve_at(
    rows: Sequence[RoutingRow],
    scores: Sequence[float],
    shares: Sequence[float] = _DECILES,
) -> list[dict[str, float]]:
    """The exact curve read at ``shares`` of strong calls (linear between thresholds): the
    mean ``quality``, the ``PGR`` and, for rows with costs, ``cost_vs_strong`` (the cost
    relative to always calling the strong model; ties split as in :func:`curve_exact`).

    >>> rows = [RoutingRow("a", "", 0, 1, weak_cost=1, strong_cost=9),
    ...         RoutingRow("b", "", 1, 1, weak_cost=1, strong_cost=9)]
    >>> [(p["quality"], round(p["cost_vs_strong"], 3))
    ...  for p in curve_at(rows, [2, 1], shares=[0.0, 0.5, 1.0])]
    [(0.5, 0.111), (1.0, 0.556), (1.0, 1.0)]
    """
    n = len(rows)
    costs = all(r.weak_cost is not None and r.strong_cost is not None for r in rows)
    order = sorted(range(n), key=lambda i: -scores[i])
    q = sum(r.weak_score for r in rows)
    c = sum(r.weak_cost or 0.0 for r in rows)
    all_strong = sum(r.strong_cost or 0.0 for r in rows) if costs else 1.0
    knots = [(0.0, q / n, c / all_strong)]
    i = 0
    while i < n:
        j = i
        while j < n and scores[order[j]] == scores[order[i]]:
            row = rows[order[j]]
            q += row.strong_score - row.weak_score
            c += (row.strong_cost or 0.0) - (row.weak_cost or 0.0)
            j += 1
        knots.append((j / n, q / n, c / all_strong))
        i = j
    weak = _mean([r.weak_score for r in rows])
    strong = _mean([r.strong_score for r in rows])
    out = []
    for share in shares:
        k = next((k for k in range(1, len(knots)) if knots[k][0] >= share), len(knots) - 1)
        (x0, q0, c0), (x1, q1, c1) = knots[k - 1], knots[k]
        t = 0.0 if x1 == x0 else min(1.0, max(0.0, (share - x0) / (x1 - x0)))
        quality = q0 + t * (q1 - q0)
        point = {"share": share, "quality": quality,
                 "PGR": (quality - weak) / (strong - weak) if strong != weak else math.nan}
        if costs:
            point["cost_vs_strong"] = c0 + t * (c1 - c0)
        out.append(point)
    return out


# -- multi-tier routing -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MultiTierPoint:
    """One split of the prompts over a model ladder: ``shares[k]`` of them go to model
    ``k``; quality and cost are relative to always calling the strongest model."""

    shares: tuple[float, ...]
    quality_vs_strong: float
    cost_vs_strong: float


def model_ladder(rows: Sequence[RoutingRow]) -> list[str]:
    """The models worth routing between, cheap to strong: the cost/quality Pareto front
    (mean score against mean cost over ``rows``) from the rows' weak model up to their strong
    model. RouterBench dev gives mixtral-8x7b, Yi-34B, gpt-4.

    Raises:
        ValueError: the rows record no per-model scores and costs.
    """
    if not rows or not rows[0].scores or not rows[0].costs:
        raise ValueError("multi-tier routing needs rows with per-model scores and costs")
    models = list(rows[0].scores)
    quality = {m: _mean([r.scores[m] for r in rows]) for m in models}
    cost = {m: _mean([r.costs[m] for r in rows]) for m in models}
    weak, strong = rows[0].weak_model, rows[0].strong_model
    floor = quality.get(weak, -math.inf)
    ladder: list[str] = []
    for m in sorted(models, key=lambda m: (cost[m], -quality[m])):
        if quality[m] >= floor and (not ladder or quality[m] > quality[ladder[-1]]):
            ladder.append(m)
        if m == strong:
            break
    if strong in quality and ladder[-1] != strong:
        ladder.append(strong)
    return ladder


def _tie_groups(scores: Sequence[float]) -> tuple[list[int], list[tuple[int, int]]]:
    """Rows in ascending score order, and each position's tie group ``[start, end)``."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    groups: list[tuple[int, int]] = [(0, 0)] * len(order)
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and scores[order[j]] == scores[order[i]]:
            j += 1
        groups[i:j] = [(i, j)] * (j - i)
        i = j
    return order, groups


def multi_tier_points(
    rows: Sequence[RoutingRow],
    scores: Sequence[float],
    ladder: Sequence[str],
    *,
    steps: int = 20,
) -> list[MultiTierPoint]:
    """Every split of the prompts over ``ladder`` in share steps of ``1/steps``: the
    lowest-scored share goes to ``ladder[0]``, the next to ``ladder[1]``, and so on. Ties
    straddling a cut are split in proportion (random tie-breaking in expectation).

    Quality and cost are relative to always calling ``ladder[-1]``.
    """
    n = len(rows)
    order, groups = _tie_groups(scores)
    top = ladder[-1]
    base_q = _mean([r.scores[top] for r in rows])
    base_c = sum(r.costs[top] for r in rows)
    q_of = [[rows[i].scores[m] for m in ladder] for i in order]
    c_of = [[rows[i].costs[m] for m in ladder] for i in order]
    points = []
    for counts in _compositions(steps, len(ladder)):
        cuts: list[float] = []
        acc = 0
        for count in counts[:-1]:
            acc += count
            cuts.append(acc * n / steps)
        q = c = 0.0
        for pos in range(n):
            start, end = groups[pos]
            # below[k]: the chance this row sits below cut k (fractional inside a tie group)
            below = [min(1.0, max(0.0, (cut - start) / (end - start))) for cut in cuts]
            lower = 0.0
            for k in range(len(ladder)):
                upto = below[k] if k < len(cuts) else 1.0
                weight = upto - lower
                if weight > 0:
                    q += weight * q_of[pos][k]
                    c += weight * c_of[pos][k]
                lower = max(lower, upto)
        points.append(MultiTierPoint(tuple(x / steps for x in counts), q / n / base_q,
                                     c / base_c))
    return points


def _compositions(total: int, parts: int) -> Iterable[tuple[int, ...]]:
    if parts == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def cheapest_at(points: Iterable[MultiTierPoint], quality: float) -> MultiTierPoint | None:
    """The cheapest point reaching ``quality`` (relative to always-strong), or None."""
    good = [p for p in points if p.quality_vs_strong >= quality - 1e-12]
    return min(good, key=lambda p: (p.cost_vs_strong, -p.quality_vs_strong), default=None)


def tier_split(scores: Sequence[float], cuts: Sequence[float]) -> list[int]:
    """The tier index (0-based) of each score under ascending ``cuts``: a score at most
    ``cuts[0]`` is tier 0 and so on, as ``classifier.tier1_max`` / ``tier2_max`` work.

    >>> tier_split([5, 30, 31, 71], [30, 70])
    [0, 0, 1, 2]
    """
    return [sum(1 for c in cuts if s > c) for s in scores]


def pareto_front(points: Iterable[MultiTierPoint]) -> list[MultiTierPoint]:
    """The points no other point beats on both cost (lower) and quality (higher), by cost."""
    front: list[MultiTierPoint] = []
    for p in sorted(points, key=lambda p: (p.cost_vs_strong, -p.quality_vs_strong)):
        if not front or p.quality_vs_strong > front[-1].quality_vs_strong:
            front.append(p)
    return front
