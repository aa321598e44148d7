"""Combining the trained router with prompt length on sets it never saw (issue 15, item 3).

Usage: .venv/bin/python bench/routing_combine.py [--data DIR] [--json OUT]

The routers are those of ``bench/routing_unseen.py`` with ``router train``'s recipe
(``monotone``: the length measures' weights kept non-negative, 2-fold Platt calibration),
trained leave one set out over the three dev files (MMLU, RouterBench, AlpacaEval): on the
other two files (outer) and on one file (inner, for the nested choice). Each scores a file
it never saw: ``z`` is its calibrated log-odds, ``known`` its familiarity
(``LearnedRouter.known``, from the centroids ``router train`` writes), ``L`` the log of the
prompt's length. Every evaluated set (a file or one of its subsets) is taken as a
deployment's whole traffic: statistics "of the traffic" are computed on its prompts without
their labels, as a gateway could from its recent requests.

Combinations (APGR exact mode, the RouteLLM definition of ``engine.training.evaluate``):

* ``default``: today's form, ``0.7 × 100 × p + 0.3 × heuristic``;
* ``rank w``: ``w × pct(z) + (1 − w) × pct(L)``, percentiles within the traffic (a
  rank-level average: where one ranking is right the average keeps part of it);
* ``stacked``: a logistic regression of "the strong model did better" on ``z``, the
  traffic-standardised ``L`` and the heuristic, fitted on **out-of-set** predictions only
  (for held-out H: the router trained on A scoring B and the one trained on B scoring A, A
  and B the two other files, each file weighing the same), so its weights say how much the
  trained score transfers, not how well it fits;
* ``rank × known``: ``w = known`` per request, or the traffic's mean ``known``;
* ``rank × agreement``: ``w`` from the Spearman correlation of ``z`` and ``L`` over the
  traffic, ``max(0, rho)`` (trust the model when it agrees with length) or ``max(0, −rho)``
  (trust it when it disagrees: it knows something length does not);
* ``maxrank``: ``max(pct(z), pct(L))``;
* ``dense features only``: routers trained on the 18 dense measures alone (length, the
  heuristic's signals, the text's shape), without the sentence vector and the hashed n-grams
  that can memorise a set's wording.

``rank w`` is chosen nested (as ``routing_unseen.py`` does: on the two other files, each
scored by a router trained on the third) by ``maximin`` (worst margin over prompt length)
and by ``mean`` APGR; the traffic rules are also printed on the inner pairs (a router trained
on one file scoring another), which is where a rule that only fits the outer table shows.

Prints Markdown tables; ``--json`` writes every figure.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing_unseen import FILES, Router, chosen_on, concat, load_sets

from engine.core.routing.learned import _centroids
from engine.training.evaluate import RoutingRow, summarize
from engine.training.fit import familiarity, targets

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def pct(v: np.ndarray) -> np.ndarray:
    """Percentile within ``v``; tied values share their mean rank (so ``rank 0`` orders
    exactly as prompt length does)."""
    _values, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts
    return (first + (counts - 1) / 2 + 0.5)[inverse] / len(v)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(pct(a), pct(b))[0, 1])


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(z, -50, 50)))


def std(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / max(float(v.std()), 1e-9)


def sets_of(name: str, rows: list[RoutingRow]) -> dict[str, np.ndarray]:
    """The file and its subsets (AlpacaEval's helpful_base left out: all its rows tie)."""
    out = {name: np.arange(len(rows))}
    if name != "MMLU":
        for sub in sorted({r.subset for r in rows} - {"helpful_base"}):
            out[f"{name} {sub}"] = np.array([i for i, r in enumerate(rows) if r.subset == sub])
    return out


class Scored:
    """One router's view of one file it never saw."""

    def __init__(self, z: np.ndarray, known: np.ndarray, length: np.ndarray,
                 heuristic: np.ndarray) -> None:
        self.z, self.known, self.length, self.heuristic = z, known, length, heuristic

    def take(self, idx: np.ndarray) -> Scored:
        return Scored(self.z[idx], self.known[idx], self.length[idx], self.heuristic[idx])

    def features(self) -> np.ndarray:
        """The stacker's inputs, standardised over the traffic (no labels needed)."""
        return np.c_[self.z, std(self.length), std(self.heuristic)]


def rank(w: float):
    return lambda s: w * pct(s.z) + (1 - w) * pct(s.length)


RULES = {
    "prompt length": lambda s: s.length,
    "default (0.7 trained + 0.3 heuristic)": lambda s: 70 * sigmoid(s.z) + 0.3 * s.heuristic,
    "trained alone": lambda s: s.z,
    "rank 0.5": rank(0.5),
    "rank x known (per request)": lambda s: s.known * pct(s.z) + (1 - s.known) * pct(s.length),
    "rank x known (traffic mean)": lambda s: rank(float(s.known.mean()))(s),
    "rank x agreement max(0, rho)": lambda s: rank(max(0.0, spearman(s.z, s.length)))(s),
    "rank x disagreement max(0, -rho)": lambda s: rank(max(0.0, -spearman(s.z, s.length)))(s),
    "maxrank": lambda s: np.maximum(pct(s.z), pct(s.length)),
}


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float = 1e-3,
                 steps: int = 50) -> np.ndarray:
    """Weighted logistic regression (Newton), ``[w..., b]``."""
    a = np.c_[x, np.ones(len(x))]
    theta = np.zeros(a.shape[1])
    reg = l2 * np.eye(a.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(steps):
        p = sigmoid(a @ theta)
        grad = a.T @ (weight * (p - y)) + reg @ theta
        hess = (a * (weight * p * (1 - p))[:, None]).T @ a + reg
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    return theta


def main() -> None:
    args, rows, mats, heur = load_sets()
    names = list(FILES)

    def outer(h: str) -> tuple[str, ...]:
        return tuple(n for n in names if n != h)

    scored: dict[tuple[tuple[str, ...], str], Scored] = {}
    for train in [outer(h) for h in names] + [(n,) for n in names]:
        x = concat([mats[n] for n in train])
        router = Router([row for n in train for row in rows[n]], x, "monotone")
        record = familiarity(x.embedding)
        centroids, low, high = _centroids(record), float(record["low"]), float(record["high"])
        a, b = router.calibration
        for h in names:
            if h in train:
                continue
            e = mats[h].embedding
            e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            known = np.clip(((e @ centroids.T).max(axis=1) - low) / max(high - low, 1e-6), 0, 1)
            z = a * router.fit.margins(router.scaled(mats[h])) + b
            scored[(train, h)] = Scored(z, known, np.log1p([len(r.prompt) for r in rows[h]]),
                                        heur[h])
        print(f"trained on {'+'.join(train)}", file=sys.stderr, flush=True)

    # the transferable features only: the 18 dense measures (length, the heuristic's code,
    # reasoning, JSON and tool signals, digits, capitals, punctuation, questions, turns);
    # the sentence vector and the hashed n-grams, which can memorise a set's wording, zeroed
    dense_only = {k: replace(m, embedding=np.zeros_like(m.embedding),
                             values=np.zeros_like(m.values)) for k, m in mats.items()}
    dense_scored: dict[str, Scored] = {}
    for h in names:
        router = Router([row for n in outer(h) for row in rows[n]],
                        concat([dense_only[n] for n in outer(h)]), "monotone")
        a, b = router.calibration
        view = scored[(outer(h), h)]
        dense_scored[h] = Scored(a * router.fit.margins(dense_only[h]) + b, view.known,
                                 view.length, view.heuristic)
    print("trained the dense-only routers", file=sys.stderr, flush=True)

    def apgr(h: str, rule, s: Scored) -> dict[str, float]:
        """APGR on the file and each subset, each scored as the whole traffic."""
        return {k: summarize([rows[h][i] for i in idx], [float(v) for v in rule(s.take(idx))]
                             ).apgr for k, idx in sets_of(h, rows[h]).items()}

    keys = [k for h in names for k in sets_of(h, rows[h])]
    table: dict[str, dict[str, float]] = {}
    for name, rule in RULES.items():
        table[name] = {}
        for h in names:
            table[name].update(apgr(h, rule, scored[(outer(h), h)]))
    length = table["prompt length"]
    for name in ("default (0.7 trained + 0.3 heuristic)", "trained alone", "rank 0.5"):
        table[f"dense features only: {name}"] = {}
        for h in names:
            table[f"dense features only: {name}"].update(apgr(h, RULES[name], dense_scored[h]))

    # rank w, chosen nested; inner pairs: a router trained on the third file scores s
    def inner(h: str) -> list[tuple[str, Scored]]:
        return [(s, scored[(tuple(n for n in names if n not in (h, s)), s)])
                for s in names if s != h]

    for objective in ("maximin", "mean"):
        row: dict[str, float] = {}
        chosen = {}
        for h in names:
            best = None
            for w in WEIGHTS:
                got: dict[str, float] = {}
                for s, view in inner(h):
                    got.update({k: v for k, v in apgr(s, rank(w), view).items()
                                if k in chosen_on(s)})
                value = (min(got[k] - length[k] for k in got) if objective == "maximin"
                         else float(np.mean(list(got.values()))))
                if best is None or value > best[0] + 1e-12:
                    best = (value, w)
            assert best is not None
            chosen[h] = best[1]
            row.update(apgr(h, rank(best[1]), scored[(outer(h), h)]))
        table[f"rank w, nested {objective} (w: " + ", ".join(
            f"{h} {w:g}" for h, w in chosen.items()) + ")"] = row

    # stacking on out-of-set predictions
    row, weights = {}, {}
    for h in names:
        xs, ys, ws = [], [], []
        for s, view in inner(h):
            xs.append(view.features())
            ys.append(targets(rows[s], "binary"))
            ws.append(np.full(len(rows[s]), 1.0 / len(rows[s])))
        theta = fit_logistic(np.vstack(xs), np.concatenate(ys), np.concatenate(ws))
        weights[h] = [round(float(t), 3) for t in theta[:3]]
        row.update(apgr(h, lambda s, t=theta: s.features() @ t[:3], scored[(outer(h), h)]))
    table["stacked on out-of-set predictions (z, L, heuristic: " + "; ".join(
        f"{h} {w}" for h, w in weights.items()) + ")"] = row

    print("## Leave one set out (each file scored by a router trained on the other two)\n")
    print("| combination | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, got in table.items():
        print(f"| {name} | " + " | ".join(f"{got[k]:.3f}" for k in keys) + " |")
    print("\n| combination | sets below length | worst margin over length |")
    print("|---|---:|---:|")
    for name, got in table.items():
        margins = [got[k] - length[k] for k in keys]
        print(f"| {name} | {sum(m < -0.0005 for m in margins)} | {min(margins):+.3f} |")

    print("\n## Inner pairs (a router trained on one file scoring another)\n")
    pairs = {}
    print("| trained on | scored | rho(z, L) | known | length | trained alone | "
          "agreement | disagreement |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (train, h), view in scored.items():
        if len(train) != 1:
            continue
        for k, idx in sets_of(h, rows[h]).items():
            v = view.take(idx)
            got = {n: summarize([rows[h][i] for i in idx], [float(x) for x in RULES[n](v)]
                                ).apgr for n in ("prompt length", "trained alone",
                                                 "rank x agreement max(0, rho)",
                                                 "rank x disagreement max(0, -rho)")}
            pairs[f"{train[0]} -> {k}"] = got | {"rho": spearman(v.z, v.length),
                                                 "known": float(v.known.mean())}
            print(f"| {train[0]} | {k} | {spearman(v.z, v.length):+.3f} | "
                  f"{float(v.known.mean()):.3f} | " + " | ".join(f"{x:.3f}" for x in got.values())
                  + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"loso": table, "inner": pairs}, indent=1) + "\n",
                                   encoding="utf-8")


if __name__ == "__main__":
    main()
