"""The sampling error of the familiarity gate's margins over prompt length (BENCHMARKS.md,
section 16, "How sure is 'below'? The margins' sampling error"; issue 15, item 3).

Usage: ``.venv/bin/python bench/routing_gate_margin_se.py --data DIR [--json OUT]``
(``DIR`` holds ``routing/*.jsonl``; ``LLM_ROUTER_EVAL_DATA`` may give it instead).

The routers, gates and scores are ``routing_gate_shipped.py``'s leave-one-set-out ones
(``held_out``): for each file, the router trained on the two other files by ``router
train``'s recipe, its gate fitted by ``fit_gate`` on its own training rows, each held-out
request gated one at a time and scored in the product form (``0.7 × to_score(p) + 0.3 ×
heuristic``; the row "gate (product)", shipped). For each of the table's 10 sets, the paired
bootstrap of (APGR of that score − APGR of prompt length): the set's rows are resampled with
replacement, the same resample for both scorers, :data:`RESAMPLES` times from a generator
seeded with (:data:`SEED`, the set's position in the table). APGR is the exact method
(``routing_gate.apgr``, ``router eval``'s), computed for all resamples at once from each
row's draw count (:func:`apgr_drawn`); the script checks that against ``routing_gate.apgr``,
``engine.training.evaluate.summarize`` and ``DIR/routing_metrics.py`` (when present) on the
set's own rows, and against ``routing_gate.apgr`` on the first resamples' drawn rows.

The same is done for the nested choice's outer row (``routing_gate_nested.py``): the same
two-file routers, each with a gate of the shape the nested protocol chose for its held-out
file (:data:`NESTED`, from that script's output), on the same resamples. The choice itself
is not redone per resample: it never saw the held-out file's rows.

About 3 minutes; every figure is deterministic.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing_gate import apgr, outcomes, router_parts
from routing_gate_nested import gated
from routing_gate_shipped import LEVEL, gate_of, held_out, similarities
from routing_unseen import load_sets

from engine.training.evaluate import summarize

RESAMPLES = 2000
SEED = 0
SHIPPED = "gate (product)"
NESTED = {"MMLU": (64, 0.10, 0.11), "RouterBench": (32, 0.05, 0.15),
          "AlpacaEval": (16, 0.02, 0.03)}
"""The shape (centroids, ramp) ``routing_gate_nested.py`` chooses for each held-out file."""
CHUNK = 500
TOL = 1e-9


def apgr_drawn(gain: np.ndarray, weak: np.ndarray, scores: np.ndarray,
               counts: np.ndarray) -> np.ndarray:
    """``routing_gate.apgr`` of the rows drawn ``counts[b, i]`` times, for every resample b.

    A drawn row's copies share its score, so they fall in its tie group; the tie groups of
    the set's own rows serve every resample (a group drawn 0 times adds a segment of width
    0 to the curve). Resamples whose strong and weak means are equal give nan.
    """
    n = len(gain)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), n - 1]
    c = counts[:, order].astype(float)
    m = c.sum(axis=1, keepdims=True)
    w0 = (c * weak[order]).sum(axis=1, keepdims=True) / m
    x = np.hstack([np.zeros_like(w0), np.cumsum(c, axis=1)[:, ends] / m])
    y = np.hstack([w0, w0 + np.cumsum(c * gain[order], axis=1)[:, ends] / m])
    area = np.sum((x[:, 1:] - x[:, :-1]) * (y[:, 1:] + y[:, :-1]) / 2, axis=1)
    span = y[:, -1] - w0[:, 0]  # strong mean − weak mean
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (area - w0[:, 0]) / span
    return np.where(span == 0, np.nan, out)


def draws(n: int, key: int) -> np.ndarray:
    """Each row's draw count in each of :data:`RESAMPLES` resamples (``RESAMPLES × n``)."""
    idx = np.random.default_rng([SEED, key]).integers(0, n, size=(RESAMPLES, n))
    flat = (idx + n * np.arange(RESAMPLES)[:, None]).ravel()
    return np.bincount(flat, minlength=RESAMPLES * n).reshape(RESAMPLES, n), idx


def reference_apgr(data: Path):
    """``routing_metrics.py``'s exact APGR (the data's own reference), if it is there."""
    path = data / "routing_metrics.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("routing_metrics", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def ref(gain: np.ndarray, weak: np.ndarray, scores: np.ndarray) -> float:
        rows = [{"weak_score": float(w), "strong_score": float(w + g)}
                for g, w in zip(gain, weak, strict=True)]
        return mod.summarize(rows, [float(v) for v in scores], "exact")["APGR"]
    return ref


def stats(margins: np.ndarray, point: float) -> dict[str, float]:
    ok = margins[~np.isnan(margins)]
    lo, hi = np.percentile(ok, [2.5, 97.5])
    return {"margin": point, "se": float(ok.std(ddof=1)), "lo": float(lo), "hi": float(hi),
            "p<0": float((ok < 0).mean()), "p<level": float((ok < LEVEL).mean()),
            "p=0": float((ok == 0).mean()), "undefined": int(len(margins) - len(ok)),
            "mean": float(ok.mean())}


def main() -> None:
    args, rows, mats, heur = load_sets()
    gain, weak, length, sets = outcomes(rows)
    ref = reference_apgr(Path(args.data))
    scored: dict[str, dict[str, np.ndarray]] = {}  # file -> scorer -> scores of its rows
    for h, router, x, sc, _ in held_out(rows, mats, heur, length):
        c, low, high = NESTED[h]
        gate, (a, b) = gate_of(router, x, clusters=c, low=low, high=high)
        z = a * router_parts(router)(mats[h])[0] + b
        nested = gated({c: gate}, {c: similarities(gate, mats[h])}, z, mats[h], heur[h],
                       (c, low, high))
        scored[h] = {"length": sc["prompt length"], "shipped": sc[SHIPPED], "nested": nested}
        print(f"held out {h}", file=sys.stderr, flush=True)

    checks = {"own rows": 0.0, "drawn rows": 0.0}
    point: dict[str, dict[str, float]] = {}
    result: dict[str, dict[str, dict[str, float]]] = {"shipped": {}, "nested": {}}
    key = 0
    for h, by in scored.items():
        for k, i in sets[h].items():
            g, w = gain[h][i], weak[h][i]
            counts, idx = draws(len(i), key)
            key += 1
            boot: dict[str, np.ndarray] = {}
            point[k] = {"rows": len(i)}
            for name, s in by.items():
                s = s[i]
                exact = apgr(g, w, s)
                own = apgr_drawn(g, w, s, np.ones((1, len(i))))[0]
                refs = [exact, summarize([rows[h][j] for j in i], [float(v) for v in s]).apgr]
                if ref is not None:
                    refs.append(ref(g, w, s))
                checks["own rows"] = max(checks["own rows"], *(abs(own - r) for r in refs))
                for b in range(3):
                    checks["drawn rows"] = max(checks["drawn rows"], abs(
                        apgr_drawn(g, w, s, counts[b:b + 1])[0]
                        - apgr(g[idx[b]], w[idx[b]], s[idx[b]])))
                point[k][name] = exact
                boot[name] = np.concatenate([apgr_drawn(g, w, s, counts[j:j + CHUNK])
                                             for j in range(0, RESAMPLES, CHUNK)])
            for name in ("shipped", "nested"):
                result[name][k] = stats(boot[name] - boot["length"],
                                        point[k][name] - point[k]["length"])
        print(f"bootstrapped {h}", file=sys.stderr, flush=True)
    if max(checks.values()) > TOL:
        sys.exit(f"vectorised APGR differs from the reference: {checks}")
    published = Path(__file__).resolve().parent / "results" / "routing-gate-nested.json"
    if published.exists():  # the nested script's outer row, as it last wrote it
        row = json.loads(published.read_text(encoding="utf-8"))["nested"]["all sets"]
        checks["nested row against routing-gate-nested.json"] = max(
            abs(point[k]["nested"] - v) for k, v in row.items())

    print(f"# Paired bootstrap of the margin over prompt length ({RESAMPLES} resamples, "
          f"seed {SEED})\n")
    print("Checks, largest absolute difference: vectorised APGR against the exact method ("
          + ("routing_gate.apgr, evaluate.summarize, routing_metrics.py" if ref else
             "routing_gate.apgr, evaluate.summarize; no routing_metrics.py") + ") on "
          + ", ".join(f"{k} {v:.1e}" for k, v in checks.items()) + "\n")
    for name, title in (("shipped", "Shipped default (gate, product form)"),
                        ("nested", "Gate of the shape chosen nested (product form)")):
        print(f"## {title}\n")
        print("| set | rows | length | gate | margin | SE | 95% interval | P(margin < 0) "
              f"| P(margin < {LEVEL}) |")
        print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
        for k, r in result[name].items():
            p = point[k]
            print(f"| {k} | {p['rows']} | {p['length']:.4f} | {p[name]:.4f} | "
                  f"{r['margin']:+.4f} | {r['se']:.4f} | {r['lo']:+.4f} to {r['hi']:+.4f} | "
                  f"{r['p<0']:.3f} | {r['p<level']:.3f} |")
        odd = {k: (r["undefined"], r["p=0"]) for k, r in result[name].items()
               if r["undefined"] or r["p=0"]}
        if odd:
            print("\nResamples undefined (strong mean = weak mean), share with margin exactly "
                  "0: " + ", ".join(f"{k} {u}, {z:.3f}" for k, (u, z) in odd.items()))
        print()
    if args.json:
        Path(args.json).write_text(json.dumps({"resamples": RESAMPLES, "seed": SEED,
                                               "checks": checks, "apgr": point, **result},
                                              indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
