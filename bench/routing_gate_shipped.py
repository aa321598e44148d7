"""The familiarity gate as the gateway runs it (``engine.core.routing.gate``), leave one
set out and in-sample (BENCHMARKS.md, section 16, "The familiarity gate, shipped").

Usage: ``.venv/bin/python bench/routing_gate_shipped.py --data DIR [--json OUT]``
(``DIR`` holds ``routing/*.jsonl``; ``LLM_ROUTER_EVAL_DATA`` may give it instead).

``routing_gate.py`` chose the gate's shape (32 centroids of the character n-grams folded to
16,384 buckets, a ramp between the training rows' 5th and 6th familiarity percentiles) with
its own formula; this scores the product's: each router's gate fitted on its training rows
with ``fit_gate`` (the function ``llm-router router train`` calls), each held-out request
gated one at a time into the router's log-odds, and the 0-100 score formed from them as
``decide_route`` does by default (``0.7 × to_score(p) + 0.3 × heuristic``, the probability
0.2 on the tier-1 boundary 30; the heuristic's signals are not gated). Rows: prompt length,
the default without a gate and with it, each in that product form and in
``routing_gate.py``'s (``0.7 × 100p + 0.3 × heuristic``).
In-sample: pooled 5-fold cross-validation over the three files, and the shipped
``engine/data/router.json`` with the gate it carries, on its own dev rows.

About 2 minutes; every figure is deterministic.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing_gate import apgr, learned_parts, outcomes, router_parts
from routing_unseen import FILES, MODEL_WEIGHT, Router, concat, load_sets

from engine.core.routing.decide import to_score
from engine.core.routing.gate import Gate, fit_gate, fold
from engine.core.routing.learned import DENSE_NAMES, LearnedRouter
from engine.training.fit import FeatureMatrix, source_of, stratified_folds

LEVEL = -0.005
LOG_CHARS_ALL = DENSE_NAMES.index("log_chars_all")
BOUNDARY_P, TIER1_MAX = 0.2, 30


def similarities(gate: Gate, x: FeatureMatrix) -> np.ndarray:
    """Each row's n-gram similarity, as ``LearnedRouter.assess`` computes it one at a time."""
    f = fold(x.indptr, x.indices, x.values, start=x.config.char_start, buckets=gate.buckets)
    return (f @ gate.centroids).max(axis=1)


def forms(z: np.ndarray, heur: np.ndarray) -> dict[str, np.ndarray]:
    p = 1 / (1 + np.exp(-np.clip(z, -50, 50)))
    product = np.array([to_score(float(v), threshold=BOUNDARY_P, tier1_max=TIER1_MAX)
                        for v in p])
    return {"product": MODEL_WEIGHT * product + (1 - MODEL_WEIGHT) * heur,
            "100p": MODEL_WEIGHT * 100 * p + (1 - MODEL_WEIGHT) * heur}


def scores(gate: Gate, z: np.ndarray, x: FeatureMatrix, heur: np.ndarray,
           length: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    sims = similarities(gate, x)
    w = np.array([gate.weight(float(v)) for v in sims])
    gated = np.array([gate.lean(float(a), float(b), float(c))
                      for a, b, c in zip(z, x.dense[:, LOG_CHARS_ALL], sims, strict=True)])
    out = {"prompt length": length}
    for label, zz in (("default", z), ("gate", gated)):
        for form, s in forms(zz, heur).items():
            out[f"{label} ({form})"] = s
    return out, w


def gate_of(router: Router, x: FeatureMatrix,
            **shape: float) -> tuple[Gate, tuple[float, float]]:
    """A gate fitted by ``fit_gate`` on the router's own training rows ``x`` (``shape``:
    ``fit_gate``'s keywords, e.g. ``clusters``), and the router's calibration."""
    a, b = router.calibration
    z = a * router_parts(router)(x)[0] + b
    return fit_gate(x.indptr, x.indices, x.values, z, x.dense[:, LOG_CHARS_ALL],
                    start=x.config.char_start, **shape), (a, b)


def held_out(rows: dict[str, list], mats: dict[str, FeatureMatrix],
             heur: dict[str, np.ndarray], length: dict[str, np.ndarray]
             ) -> Iterator[tuple[str, Router, FeatureMatrix, dict[str, np.ndarray], np.ndarray]]:
    """Leave one set out: for each file H, the router trained on the two other files (and
    their feature matrix), the scores of H's rows (``scores``) and their gate weights."""
    names = list(FILES)
    for h in names:
        train = [n for n in names if n != h]
        x = concat([mats[n] for n in train])
        router = Router([row for n in train for row in rows[n]], x, "monotone")
        gate, (a, b) = gate_of(router, x)
        z = a * router_parts(router)(mats[h])[0] + b
        sc, w = scores(gate, z, mats[h], heur[h], length[h])
        yield h, router, x, sc, w


def main() -> None:
    args, rows, mats, heur = load_sets()
    names = list(FILES)
    gain, weak, length, sets = outcomes(rows)

    def table(n: str, sc: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
        return {name: {k: apgr(gain[n][i], weak[n][i], s[i]) for k, i in sets[n].items()}
                for name, s in sc.items()}

    loso: dict[str, dict[str, float]] = {}
    share: dict[str, float] = {}
    for h, _, _, sc, w in held_out(rows, mats, heur, length):
        share[h] = float((w < 1).mean())
        for name, row in table(h, sc).items():
            loso.setdefault(name, {}).update(row)
        print(f"held out {h}", file=sys.stderr, flush=True)

    pooled_rows = [row for n in names for row in rows[n]]
    pooled = concat([mats[n] for n in names])
    cat = lambda d: np.concatenate([d[n] for n in names])  # noqa: E731
    p_heur, p_len = cat(heur), cat(length)
    sign = [float(np.sign(r.strong_score - r.weak_score)) for r in pooled_rows]
    folds = stratified_folds(sign, 5, seed=0, groups=[source_of(r) for r in pooled_rows])
    cv_scores: dict[str, np.ndarray] = {}
    for k in range(5):
        train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        router = Router([pooled_rows[i] for i in train], pooled.take(train), "monotone")
        gate, (a, b) = gate_of(router, pooled.take(train))
        z = a * router_parts(router)(pooled.take(test))[0] + b
        sc, _ = scores(gate, z, pooled.take(test), p_heur[test], p_len[test])
        for name, s in sc.items():
            cv_scores.setdefault(name, np.zeros(len(pooled_rows)))[test] = s
        print(f"cross-validated fold {k}", file=sys.stderr, flush=True)
    starts = np.cumsum([0] + [len(rows[n]) for n in names])
    cv: dict[str, dict[str, float]] = {}
    for i, n in enumerate(names):
        part = {name: s[starts[i]:starts[i + 1]] for name, s in cv_scores.items()}
        for name, row in table(n, part).items():
            cv.setdefault(name, {}).update(row)

    shipped = LearnedRouter.load(Path(__file__).resolve().parents[1] / "engine" / "data"
                                 / "router.json")
    if shipped.gate is None:
        sys.exit("the shipped router carries no gate")
    a, b = shipped.calibration
    ship: dict[str, dict[str, float]] = {}
    for n in names:
        z = a * learned_parts(shipped)(mats[n])[0] + b
        sc, w = scores(shipped.gate, z, mats[n], heur[n], length[n])
        share[f"shipped {n}"] = float((w < 1).mean())
        for name, row in table(n, sc).items():
            ship.setdefault(name, {}).update(row)

    keys = [k for n in names for k in sets[n]]
    print("## Leave one set out (APGR)\n")
    print("| score | " + " | ".join(keys) + " | sets below length | worst margin |")
    print("|---|" + "---:|" * (len(keys) + 2))
    for name, row in loso.items():
        margins = [row[k] - loso["prompt length"][k] for k in keys]
        print(f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in keys)
              + f" | {sum(m < LEVEL for m in margins)} | {min(margins):+.4f} |")
    for title, tab in (("Pooled 5-fold cross-validation", cv),
                       ("Shipped router.json (trained on MMLU and RouterBench dev)", ship)):
        print(f"\n## {title}\n")
        print("| score | " + " | ".join(keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for name, row in tab.items():
            print(f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in keys) + " |")
    print("\nShare of requests the gate leans on length for (weight under 1): "
          + ", ".join(f"{k} {v:.2f}" for k, v in share.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"loso": loso, "cv": cv, "shipped": ship,
                                               "share": share}, indent=1) + "\n",
                                   encoding="utf-8")


if __name__ == "__main__":
    main()
