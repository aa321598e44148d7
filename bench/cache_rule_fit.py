"""Can a fitted decision rule get more recall than ``similarity()`` at the same precision?

Usage: .venv/bin/python bench/cache_rule_fit.py [--data DIR]

The default threshold combines the cosine, the word alignment and the most salient unmatched
word by hand (``engine.core.cache.similarity``). This fits the same three numbers with a
logistic regression instead, on the pairs no guard vetoes (the guards stay vetoes), by the
protocol of ``engine.training.cache_split``:

* fit on ``design`` (L2-regularised logistic regression, Newton steps, standardised inputs);
* choose the cut on ``choose``: the most true hits at precision >= 0.95 with >= 20 hits;
* read the result once on ``report``, beside the default threshold on the same pairs.

Prints the weights, the top of the ranking on design and choose (true hits among the first
n), the three splits at the chosen cut, and the allowed pairs that are not aligned, grouped
by the conditions of ``guards.aligned`` they fail (design and choose only). The rule is not
used by the router: on choose it ties the default (BENCHMARKS.md, section 7), so this
script is the record of that result and the way to repeat it with other features. It reads
private parts of the similarity module (the word alignment, the penalty's constants) on
purpose: it takes apart the score that module's public functions put together.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.cache import guards
from engine.core.cache.similarity import (
    _SALIENCE_SCALE,
    _UNALIGNED,
    DEFAULT_THRESHOLD,
    Embedder,
    Fingerprint,
    _align,
    compare,
)
from engine.training.cache_split import split_of

FEATURES = ("cosine", "aligned", "unmatched salience")


def features(query: Fingerprint, cached: Fingerprint) -> tuple[np.ndarray | None, float]:
    """The pair's features (None when a guard vetoes it) and its ``similarity()``."""
    c = compare(query, cached)
    if c.vetoes:
        return None, c.score
    salience = (c.penalty - (0.0 if c.aligned else _UNALIGNED)) * _SALIENCE_SCALE
    return np.array([c.cosine, float(c.aligned), salience]), c.score


def unaligned_because(query: Fingerprint, cached: Fingerprint) -> str:
    """Which conditions of ``guards.aligned`` an allowed pair fails, joined by "+"."""
    a, b = query.features, cached.features
    a_to_b, b_to_a = _align(query, cached)
    missing = len(guards.unmatched(a, a_to_b)) + len(guards.unmatched(b, b_to_a))
    why = {
        "tense": {a.tense, b.tense} == {"present", "past"},
        "function words": a.function_words != b.function_words,
        "prepositions": not (a.prepositions <= b.prepositions + b.possessives
                             and b.prepositions <= a.prepositions + a.possessives),
        "1 unmatched word": missing == 1,
        "2+ unmatched words": missing > 1,
        "order": not (guards._order_compatible(a, b, a_to_b)
                      and guards._order_compatible(b, a, b_to_a)),
    }
    return "+".join(name for name, failed in why.items() if failed)


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> tuple[float, np.ndarray]:
    """Intercept and weights (on the raw features) of an L2-regularised logistic regression."""
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = np.c_[np.ones(len(x)), (x - mu) / sd]
    w = np.zeros(z.shape[1])
    ridge = l2 * np.diag(np.r_[0.0, np.ones(z.shape[1] - 1)])
    for _ in range(50):
        p = 1 / (1 + np.exp(-z @ w))
        w -= np.linalg.solve((z * (p * (1 - p))[:, None]).T @ z + ridge,
                             z.T @ (p - y) + ridge @ w)
    return float(w[0] - (w[1:] * mu / sd).sum()), w[1:] / sd


def choose_cut(scores: np.ndarray, y: np.ndarray) -> float:
    """The cut with the most true hits at precision >= 0.95 and >= 20 hits (ties: higher)."""
    best: tuple[int, float] | None = None
    for cut in np.unique(scores):
        hit = scores >= cut
        if hit.sum() >= 20 and y[hit].mean() >= 0.95:
            best = max(best or (0, cut), (int(y[hit].sum()), float(cut)))
    if best is None:
        raise SystemExit("no cut reaches precision 0.95 with 20 hits on choose")
    return best[1]


def row(name: str, hit: np.ndarray, y: np.ndarray) -> str:
    n, right = int(hit.sum()), int(y[hit].sum())
    return (f"| {name} | {right / max(1, n):.3f} | {right / y.sum():.3f} | {n} | {n - right} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("LLM_ROUTER_EVAL_DATA") or None)
    args = parser.parse_args()
    if args.data is None:
        parser.error("give --data DIR or set LLM_ROUTER_EVAL_DATA")
    path = args.data / "cache" / "qqp_pairs_dev.jsonl"
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    embedder = Embedder()
    split = np.array([split_of(r["id"]) for r in rows])
    y = np.array([bool(r["duplicate"]) for r in rows])
    fps = [(embedder.fingerprint(r["b"]), embedder.fingerprint(r["a"])) for r in rows]
    pairs = [features(q, c) for q, c in fps]
    allowed = np.array([f is not None for f, _ in pairs])
    x = np.array([f if f is not None else np.zeros(len(FEATURES)) for f, _ in pairs])
    default = np.array([s for _, s in pairs]) >= DEFAULT_THRESHOLD

    train = allowed & (split == "design")
    intercept, weights = fit(x[train], y[train].astype(float))
    logit = np.where(allowed, x @ weights + intercept, -np.inf)
    print(f"pairs no guard vetoes: {allowed.sum()} of {len(rows)}\n")
    print("logit = " + f"{intercept:.3f} + " + " + ".join(
        f"{w:.3f} x {n}" for w, n in zip(weights, FEATURES, strict=True)) + "\n")
    print("| split | true hits among the first n by logit |\n|---|---|")
    for name in ("design", "choose"):
        part = allowed & (split == name)
        order = np.argsort(-logit[part], kind="stable")
        tops = [f"{n}: {int(y[part][order[:n]].sum())}" for n in (20, 30, 40, 50, 60, 80, 100)]
        print(f"| {name} | {', '.join(tops)} |")

    choose = split == "choose"
    cut = choose_cut(logit[choose & allowed], y[choose & allowed])
    print(f"\ncut chosen on choose: logit >= {cut:.3f}\n")
    print("| split, rule | precision | recall | hits | false hits |\n|---|---:|---:|---:|---:|")
    for name in ("design", "choose", "report"):
        part = split == name
        print(row(f"{name}, fitted rule", logit[part] >= cut, y[part]))
        print(row(f"{name}, default {DEFAULT_THRESHOLD}", default[part], y[part]))

    print("\n## Allowed but not aligned: why, and how often a duplicate (design / choose)\n")
    counts: dict[str, list[int]] = {}
    for (q, c), (f, _), label, name in zip(fps, pairs, y, split, strict=True):
        if f is not None and not f[1] and name != "report":
            n = counts.setdefault(unaligned_because(q, c), [0, 0, 0, 0])
            n[2 * (name == "choose")] += int(label)
            n[2 * (name == "choose") + 1] += 1
    print("| fails | design: duplicates / pairs | choose: duplicates / pairs |\n|---|---:|---:|")
    for why, (dd, dn, cd, cn) in sorted(counts.items(), key=lambda kv: -kv[1][1] - kv[1][3]):
        if dn + cn >= 5:
            print(f"| {why} | {dd} / {dn} | {cd} / {cn} |")


if __name__ == "__main__":
    main()
