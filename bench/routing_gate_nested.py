"""The familiarity gate's shape chosen by a nested protocol (BENCHMARKS.md, section 16, "The
familiarity gate under a nested choice").

Usage: ``.venv/bin/python bench/routing_gate_nested.py --data DIR [--json OUT]``
(``DIR`` holds ``routing/*.jsonl``; ``LLM_ROUTER_EVAL_DATA`` may give it instead).

The shipped gate's shape (32 centroids of the character n-grams folded to 16,384 buckets, a
ramp between the training rows' 5th and 6th familiarity percentiles) was read off the outer
leave-one-set-out table it is reported on (``routing_gate_shipped.py``). This measures what
the shape is worth when it is chosen without that table. For each held-out file H (MMLU,
RouterBench, AlpacaEval) the shape is chosen from the two other files A and B only: a router
trained on A alone, its gate fitted on A with the shape, scores B, and one trained on B
scores A (the inner pairs); the chosen shape is the one whose **worst inner margin** over
prompt length is largest, over every set of the table (the file and its subsets,
AlpacaEval's helpful_base left out, as the shipped table), shapes within :data:`TIE` of the
best counting as tied and going to the simplest (no gate first, then the narrowest ramp,
then the lowest percentile, then the fewest centroids). Then the router trained on A and B,
its gate fitted on A and B with the chosen shape, scores H: the outer table. Also printed:
the choice when the inner criterion reads whole files only (and RouterBench's three
subsets; ``routing_unseen.chosen_on``: AlpacaEval's subsets have 16-52 rows); the choice
when ties go instead to the best mean inner margin; how far the outer file's figures move
across the shapes tied with the choice (what the tie-break decides); and, for reference and
not as a protocol, the outer table of every shape, and each shape's in-sample cost: the
shipped ``engine/data/router.json`` (its weights unchanged) with a gate of that shape fitted
on its own training rows (MMLU and RouterBench dev, as ``router train`` fitted the shipped
one), scored on those rows and on AlpacaEval, which it never saw.

The grid is small on purpose (:data:`RAMPS` × :data:`CLUSTERS`, and no gate): ramps at the
2nd-3rd, 5th-6th (shipped), 10th-11th, 5th-15th and 10th-25th percentiles, with 16, 32
(shipped) or 64 centroids; always 16,384 buckets.

Everything else is ``routing_gate_shipped.py``'s: routers by ``router train``'s recipe
(``routing_unseen.Router``, non-negative length weights, 2-fold calibration), gates by
``fit_gate`` on each router's own training rows, each request gated one at a time by
``Gate.lean`` and scored in the product form (``0.7 × to_score(p) + 0.3 × heuristic``,
``routing_gate_shipped.forms``); APGR exact; a set is below length when its margin is under
−0.005. A router's weights do not depend on the gate, so each of the six routers (three on
one file, three on two) is trained once, its centroids fitted once per centroid count, and
only the ramp varied (``dataclasses.replace`` on the fitted gate, which is what ``fit_gate``
with those ``low``/``high`` returns).

About 4 minutes; every figure is deterministic.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing_gate import apgr, learned_parts, outcomes, router_parts
from routing_gate_shipped import LEVEL, LOG_CHARS_ALL, forms, similarities
from routing_unseen import FILES, Router, chosen_on, concat, load_sets

from engine.core.routing.gate import Gate, fit_gate
from engine.core.routing.learned import LearnedRouter
from engine.training.fit import FeatureMatrix

RAMPS = ((0.02, 0.03), (0.05, 0.06), (0.10, 0.11), (0.05, 0.15), (0.10, 0.25))
CLUSTERS = (16, 32, 64)
SHIPPED = (32, 0.05, 0.06)
TIE = 1e-4
"""Inner worst margins this close count as tied (APGR differences below the fourth decimal)."""

Shape = tuple[int, float, float] | None  # (clusters, low, high); None: no gate


def simplicity(shape: Shape) -> tuple[float, ...]:
    if shape is None:
        return (0.0,)
    c, low, high = shape
    return (1.0, round(high - low, 6), low, c)


SHAPES: list[Shape] = sorted([None] + [(c, lo, hi) for c in CLUSTERS for lo, hi in RAMPS],
                             key=simplicity)


def label(shape: Shape) -> str:
    if shape is None:
        return "no gate"
    c, low, high = shape
    return f"c{c} {low:.2f}-{high:.2f}"


def gated(gates: dict[int, Gate], sims: dict[int, np.ndarray], z: np.ndarray,
          x: FeatureMatrix, heur: np.ndarray, shape: Shape) -> np.ndarray:
    """The product-form score of every row of ``x`` with the gate of ``shape``."""
    if shape is None:
        zz = z
    else:
        c, low, high = shape
        g = replace(gates[c], low=low, high=high)
        zz = np.array([g.lean(float(p), float(q), float(s)) for p, q, s in
                       zip(z, x.dense[:, LOG_CHARS_ALL], sims[c], strict=True)])
    return forms(zz, heur)["product"]


def main() -> None:
    args, rows, mats, heur = load_sets()
    names = list(FILES)
    gain, weak, length, sets = outcomes(rows)
    length_apgr = {k: apgr(gain[n][i], weak[n][i], length[n][i])
                   for n in names for k, i in sets[n].items()}

    # res[(train, target)][shape] = {set: APGR}
    res: dict[tuple[tuple[str, ...], str], dict[Shape, dict[str, float]]] = {}
    share: dict[str, float] = {}
    trainings = [(n,) for n in names] + [tuple(n for n in names if n != h) for h in names]
    for train in trainings:
        x = concat([mats[n] for n in train])
        router = Router([row for n in train for row in rows[n]], x, "monotone")
        parts = router_parts(router)
        a, b = router.calibration
        z_train = a * parts(x)[0] + b
        gates: dict[int, Gate] = {
            c: fit_gate(x.indptr, x.indices, x.values, z_train, x.dense[:, LOG_CHARS_ALL],
                        start=x.config.char_start, clusters=c) for c in CLUSTERS}
        for t in names:
            if t in train:
                continue
            xt = mats[t]
            z = a * parts(xt)[0] + b
            sims = {c: similarities(g, xt) for c, g in gates.items()}
            got: dict[Shape, dict[str, float]] = {}
            for shape in SHAPES:
                s = gated(gates, sims, z, xt, heur[t], shape)
                got[shape] = {k: apgr(gain[t][i], weak[t][i], s[i]) for k, i in sets[t].items()}
            g = replace(gates[SHIPPED[0]], low=SHIPPED[1], high=SHIPPED[2])
            share[f"{'+'.join(train)} -> {t}"] = float(np.mean(
                [g.weight(float(v)) < 1 for v in sims[SHIPPED[0]]]))
            res[(train, t)] = got
        print(f"trained on {'+'.join(train)}", file=sys.stderr, flush=True)

    def worst(row: dict[str, float], keys) -> tuple[float, str, float]:
        """The worst margin over length among ``keys``, its set, and the mean margin."""
        v, k = min((row[k] - length_apgr[k], k) for k in keys)
        return v, k, float(np.mean([row[k] - length_apgr[k] for k in keys]))

    def outer_of(h: str, shape: Shape) -> dict[str, float]:
        return res[(tuple(n for n in names if n != h), h)][shape]

    def below(row: dict[str, float], ks) -> tuple[int, float]:
        margins = [row[k] - length_apgr[k] for k in ks]
        return sum(m < LEVEL for m in margins), min(margins)

    keys = [k for n in names for k in sets[n]]
    criteria = {"all sets, ties to the simplest": (lambda n: list(sets[n]), "simplest"),
                "files (chosen_on), ties to the simplest": (chosen_on, "simplest"),
                "all sets, ties to the best mean margin": (lambda n: list(sets[n]), "mean")}
    report: dict[str, object] = {"length": length_apgr, "share shipped shape": share,
                                 "grid": [label(s) for s in SHAPES]}
    nested: dict[str, dict[str, float]] = {}
    print("# The familiarity gate's shape, chosen nested\n")
    print(f"Grid ({len(SHAPES)} shapes, in order of simplicity): "
          + ", ".join(label(s) for s in SHAPES) + f". Ties: within {TIE} of the best.\n")
    for crit, (sets_for, tie_rule) in criteria.items():
        chosen: dict[str, Shape] = {}
        tied: dict[str, list[Shape]] = {}
        inner_tables: dict[str, dict[str, tuple[float, str, float]]] = {}
        for h in names:
            others = [n for n in names if n != h]
            inner = {}
            for shape in SHAPES:
                row: dict[str, float] = {}
                for s in others:
                    (t,) = [n for n in others if n != s]
                    row.update(res[((t,), s)][shape])
                inner[shape] = worst(row, [k for s in others for k in sets_for(s)])
            top = max(v[0] for v in inner.values())
            tied[h] = [s for s in SHAPES if inner[s][0] >= top - TIE]
            chosen[h] = (tied[h][0] if tie_rule == "simplest"
                         else max(tied[h], key=lambda s: inner[s][2]))  # first of equals
            inner_tables[h] = {label(s): v for s, v in inner.items()}
        row = {}
        for h in names:
            row.update(outer_of(h, chosen[h]))
        nested[crit] = row
        spread = {}
        for h in names:
            got = [below(outer_of(h, s), list(sets[h])) for s in tied[h]]
            spread[h] = {"tied": [label(s) for s in tied[h]],
                         "sets below": [min(g[0] for g in got), max(g[0] for g in got)],
                         "worst margin": [min(g[1] for g in got), max(g[1] for g in got)]}
        report[f"inner ({crit})"] = {h: {"chosen": label(chosen[h]), "worst": inner_tables[h],
                                         "ties": spread[h]} for h in names}
        print(f"## Inner choice: worst margin over {crit}\n")
        if crit.startswith("all sets, ties to the simplest"):
            print("| shape | " + " | ".join(f"held out {h}: inner worst (set), mean"
                                            for h in names) + " |")
            print("|---|" + "---|" * len(names))
            for shape in SHAPES:
                cells = []
                for h in names:
                    v, k, mean = inner_tables[h][label(shape)]
                    mark = "**" if chosen[h] == shape else ""
                    cells.append(f"{mark}{v:+.4f}{mark} ({k}), {mean:+.4f}")
                print(f"| {label(shape)} | " + " | ".join(cells) + " |")
            print()
        print("Chosen: " + "; ".join(f"held out {h}: {label(chosen[h])}" for h in names))
        print("\nTied with the choice, and the held-out file's own sets across them (sets "
              "below length, worst margin; min to max):\n")
        for h in names:
            sp = spread[h]
            print(f"* held out {h}: {len(sp['tied'])} tied ({', '.join(sp['tied'])}); "
                  f"{sp['sets below'][0]}-{sp['sets below'][1]} below, "
                  f"{sp['worst margin'][0]:+.4f} to {sp['worst margin'][1]:+.4f}")
        print()

    outer_rows: dict[str, dict[str, float]] = {"prompt length": length_apgr}
    for shape in SHAPES:
        row = {}
        for h in names:
            row.update(outer_of(h, shape))
        outer_rows[label(shape)] = row
    report["outer, every shape"] = outer_rows
    report["nested"] = nested

    def line(name: str, row: dict[str, float]) -> str:
        margins = [row[k] - length_apgr[k] for k in keys]
        return (f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in keys)
                + f" | {sum(m < LEVEL for m in margins)} | {min(margins):+.4f} |")

    head = ("| score | " + " | ".join(keys) + " | sets below length | worst margin |\n|---|"
            + "---:|" * (len(keys) + 2))
    print("## Outer: each file scored by the router trained on the two others (APGR, product)"
          "\n")
    print(head)
    print(line("prompt length", length_apgr))
    print(line("no gate", outer_rows["no gate"]))
    print(line(f"shipped shape ({label(SHIPPED)}), chosen on this table",
               outer_rows[label(SHIPPED)]))
    for crit, row in nested.items():
        print(line(f"nested choice ({crit})", row))
    print("\n## Outer, every shape (for reference: read off the table, not a protocol)\n")
    print(head)
    for shape in SHAPES:
        print(line(label(shape), outer_rows[label(shape)]))
    # in-sample cost: the shipped router's weights, a gate of each shape on its training rows
    shipped = LearnedRouter.load(Path(__file__).resolve().parents[1] / "engine" / "data"
                                 / "router.json")
    own = ["MMLU", "RouterBench"]
    x = concat([mats[n] for n in own])
    a, b = shipped.calibration
    parts = learned_parts(shipped)
    gates = {c: fit_gate(x.indptr, x.indices, x.values, a * parts(x)[0] + b,
                         x.dense[:, LOG_CHARS_ALL], start=x.config.char_start, clusters=c)
             for c in CLUSTERS}
    cost_keys = ["MMLU", "RouterBench", "RouterBench mbpp", "AlpacaEval"]
    cost: dict[str, dict[str, float]] = {label(s): {} for s in SHAPES}
    for t in ("MMLU", "RouterBench", "AlpacaEval"):
        z = a * parts(mats[t])[0] + b
        sims = {c: similarities(g, mats[t]) for c, g in gates.items()}
        for shape in SHAPES:
            sc = gated(gates, sims, z, mats[t], heur[t], shape)
            cost[label(shape)].update({k: apgr(gain[t][i], weak[t][i], sc[i])
                                       for k, i in sets[t].items() if k in cost_keys})
    report["shipped router, in-sample"] = cost
    print("\n## In-sample cost: the shipped router.json's weights, a gate of each shape fitted "
          "on its training rows (MMLU, RouterBench; AlpacaEval unseen)\n")
    print("| shape | " + " | ".join(f"shipped {k}" for k in cost_keys) + " |")
    print("|---|" + "---:|" * len(cost_keys))
    print("| prompt length | " + " | ".join(f"{length_apgr[k]:.4f}" for k in cost_keys) + " |")
    for shape in SHAPES:
        print(f"| {label(shape)} | "
              + " | ".join(f"{cost[label(shape)][k]:.4f}" for k in cost_keys) + " |")
    print("\nShare of held-out requests the shipped shape's gate moves (weight under 1): "
          + ", ".join(f"{k} {v:.2f}" for k, v in share.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
