"""How good are the routers? APGR / CPT on the routing dev sets, for BENCHMARKS.md.

Usage: .venv/bin/python bench/routing_quality.py [--data DIR] [--seeds 3]
       [--out DIR] [--model engine/data/router.json]

Prints Markdown tables:

* baselines (random, prompt length), the heuristic (``engine.core.routing.scoring``), the trained
router cross-validated per dev set and pooled (MMLU + RouterBench, as the shipped model is
  trained), blends of the pooled out-of-fold score with the heuristic, and held-out-file
  checks (train on one file, score another; AlpacaEval is never trained on: CC BY-NC);
* a feature ablation of the pooled cross-validation;
* multi-tier routing on the RouterBench rows;
* scoring latency of the shipped model.

Cross-validation is stratified 5-fold, repeated with ``--seeds`` shuffles; the tables give
the mean (and the spread over shuffles) of the APGR of all out-of-fold scores. The pooled
out-of-fold scores of the first shuffle are also written as prediction files and scored by
the reference script ``routing_metrics.py`` to show that both give the same numbers.

``--data`` (default: the ``LLM_ROUTER_EVAL_DATA`` environment variable) is the evaluation data
folder, which is not part of this repository: its ``routing/`` dev files and
``routing_metrics.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.cache.similarity import Embedder
from engine.core.routing.learned import (
    DEFAULT_MODEL_PATH,
    DENSE_NAMES,
    FeatureConfig,
    LearnedRouter,
    blend,
)
from engine.core.routing.learned import request_for_prompt as ask
from engine.core.routing.scoring import score_request
from engine.training.evaluate import (
    RoutingRow,
    cheapest_at,
    model_ladder,
    multi_tier_points,
    parse_rows,
    summarize,
)
from engine.training.fit import (
    DEFAULT_L2,
    FeatureMatrix,
    _fit,
    build_matrix,
    calibrate,
    cross_validate,
    targets,
)

FILES = {
    "MMLU": "routellm_mmlu_dev.jsonl",
    "RouterBench": "routerbench_arc_mbpp_winogrande_dev.jsonl",
    "AlpacaEval": "alpaca_eval2_gpt35_vs_gpt4turbo_dev.jsonl",
}


def scaled(x: FeatureMatrix, words: float, chars: float, embedding: float) -> FeatureMatrix:
    """``x`` with its blocks re-weighted (the ablation: 0 removes a block)."""
    c = x.config
    offset = len(DENSE_NAMES) + c.embedding_dim
    values = x.values / np.where(x.indices < offset + c.word_buckets, c.word_scale, c.char_scale)
    values = values * np.where(x.indices < offset + c.word_buckets, words, chars)
    config = replace(c, word_scale=words, char_scale=chars, embedding_scale=embedding)
    return FeatureMatrix(config, x.dense, x.embedding / c.embedding_scale * embedding,
                         x.indptr, x.indices, values)


def apgr(rows: list[RoutingRow], scores: np.ndarray | list[float], mode: str = "exact") -> float:
    return summarize(rows, list(map(float, scores)), mode=mode).apgr  # type: ignore[arg-type]


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("LLM_ROUTER_EVAL_DATA") or None,
                    help="the evaluation data folder (default: $LLM_ROUTER_EVAL_DATA)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--model", default=str(DEFAULT_MODEL_PATH))
    ap.add_argument("--out", default=None, help="keep the prediction files here")
    args = ap.parse_args()
    if args.data is None:
        ap.error("give --data DIR or set LLM_ROUTER_EVAL_DATA")
    data = Path(args.data)
    rows = {k: parse_rows((data / "routing" / f).read_text(encoding="utf-8").splitlines())
            for k, f in FILES.items()}
    seeds = range(args.seeds)
    embedder = Embedder()
    config = FeatureConfig()
    started = time.monotonic()
    mats = {k: build_matrix([r.prompt for r in v], config, embedder=embedder)
            for k, v in rows.items()}
    print(f"features: {time.monotonic() - started:.0f} s", file=sys.stderr)
    pooled_rows = rows["MMLU"] + rows["RouterBench"]
    n_mmlu = len(rows["MMLU"])
    pooled = FeatureMatrix(
        config, np.vstack([mats["MMLU"].dense, mats["RouterBench"].dense]),
        np.vstack([mats["MMLU"].embedding, mats["RouterBench"].embedding]),
        np.concatenate([mats["MMLU"].indptr,
                        mats["RouterBench"].indptr[1:] + mats["MMLU"].indptr[-1]]),
        np.concatenate([mats["MMLU"].indices, mats["RouterBench"].indices]),
        np.concatenate([mats["MMLU"].values, mats["RouterBench"].values]))
    heur = {k: [float(score_request(ask(r.prompt)).total) for r in v] for k, v in rows.items()}

    table: dict[str, dict[str, str]] = {}

    def put(name: str, key: str, value: str) -> None:
        table.setdefault(name, {})[key] = value

    for k, v in rows.items():
        put("random (expected)", k, "0.500")
        put("prompt length", k, f"{apgr(v, [len(r.prompt) for r in v]):.3f}")
        put("heuristic (engine.core.routing.scoring)", k, f"{apgr(v, heur[k]):.3f}")
        put("heuristic, routellm mode", k, f"{apgr(v, heur[k], 'routellm'):.3f}")
    # per-set cross-validation
    for k in ("MMLU", "RouterBench"):
        y = targets(rows[k], "gain")
        runs = [cross_validate(mats[k], y, rows[k], l2=DEFAULT_L2, seed=s) for s in seeds]
        put("trained, CV within the set", k, fmt([r.apgr for r in runs]))
    # pooled cross-validation (how the shipped model is trained)
    y = targets(pooled_rows, "gain")
    pooled_runs = [cross_validate(pooled, y, pooled_rows, l2=DEFAULT_L2, seed=s) for s in seeds]
    oof = {"MMLU": [r.margins[:n_mmlu] for r in pooled_runs],
           "RouterBench": [r.margins[n_mmlu:] for r in pooled_runs]}
    for k in ("MMLU", "RouterBench"):
        put("trained, CV pooled (shipped recipe)", k,
            fmt([apgr(rows[k], m) for m in oof[k]]))
        put("trained, CV pooled, routellm mode", k,
            fmt([apgr(rows[k], m, "routellm") for m in oof[k]]))
    binary = targets(pooled_rows, "binary")
    for weight in (0.3, 0.5, 0.7):
        for k in ("MMLU", "RouterBench"):
            values = []
            for run, m in zip(pooled_runs, oof[k], strict=True):
                slope, intercept = calibrate(run.margins, binary)
                p = 1 / (1 + np.exp(-(slope * m + intercept)))
                values.append(apgr(rows[k], [blend(pi, h, weight)
                                             for pi, h in zip(p, heur[k], strict=True)]))
            put(f"blend, weight {weight} (pooled CV)", k, fmt(values))
    # held-out files
    def transfer(train: list[str]) -> dict[str, float]:
        x = pooled if len(train) == 2 else mats[train[0]]
        r = pooled_rows if len(train) == 2 else rows[train[0]]
        fit = _fit(x, targets(r, "gain"), l2=DEFAULT_L2, iterations=300)
        return {k: apgr(rows[k], fit.margins(mats[k])) for k in rows if k not in train}

    for train in (["MMLU"], ["RouterBench"], ["MMLU", "RouterBench"]):
        for k, a in transfer(train).items():
            put(f"trained on {' + '.join(train)} only (held-out file)", k, f"{a:.3f}")
    shipped = LearnedRouter.load(args.model, embedder=embedder)
    alpaca = [shipped.score_prompt(r.prompt) for r in rows["AlpacaEval"]]
    put("shipped model (engine/data/router.json)", "AlpacaEval",
        f"{apgr(rows['AlpacaEval'], alpaca):.3f}")

    print("### APGR on the dev sets (exact mode unless noted; higher is better)\n")
    keys = list(rows)
    print("| router | " + " | ".join(f"{k} ({len(rows[k])})" for k in keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, cells in table.items():
        print(f"| {name} | " + " | ".join(cells.get(k, "") for k in keys) + " |")

    # CPT for the main rows (first shuffle)
    print("\n### CPT(50%) / CPT(80%) (exact mode; lower is better)\n")
    print("| router | " + " | ".join(keys[:2]) + " |\n|---|---:|---:|")
    lines = {"random (expected)": {k: (0.5, 0.8) for k in keys},
             "prompt length": {k: _cpt(rows[k], [len(r.prompt) for r in rows[k]]) for k in keys},
             "heuristic": {k: _cpt(rows[k], heur[k]) for k in keys},
             "trained, CV pooled": {k: _cpt(rows[k], oof[k][0]) for k in keys[:2]}}
    for name, cells in lines.items():
        print(f"| {name} | " + " | ".join(f"{cells[k][0]:.1%} / {cells[k][1]:.1%}"
                                          for k in keys[:2]) + " |")

    # ablation
    print("\n### Feature ablation (pooled CV, APGR exact)\n")
    print("| features | MMLU | RouterBench |\n|---|---:|---:|")
    for name, (w, c, e) in {"dense (signals + shape) only": (0, 0, 0),
                            "dense + hashed n-grams": (0.5, 0.5, 0),
                            "dense + embedding": (0, 0, 1),
                            "dense + n-grams + embedding (shipped)": (0.5, 0.5, 1)}.items():
        x = scaled(pooled, w, c, e)
        runs = [cross_validate(x, y, pooled_rows, l2=DEFAULT_L2, seed=s) for s in seeds]
        print(f"| {name} | {fmt([apgr(rows['MMLU'], r.margins[:n_mmlu]) for r in runs])} | "
              f"{fmt([apgr(rows['RouterBench'], r.margins[n_mmlu:]) for r in runs])} |")

    # multi-tier on RouterBench
    rb = rows["RouterBench"]
    ladder = model_ladder(rb)
    print(f"\n### Multi-tier routing, RouterBench dev ({' < '.join(ladder)})\n")
    print("Cost relative to always calling gpt-4 for the cheapest split (5% steps) reaching "
          "95% / 98% of its quality.\n")
    print("| router | cost at 95% | cost at 98% |\n|---|---:|---:|")
    for name, sc in {"random (expected)": [0.0] * len(rb),
                     "prompt length": [float(len(r.prompt)) for r in rb],
                     "heuristic": heur["RouterBench"],
                     "trained, CV pooled": list(oof["RouterBench"][0])}.items():
        pts = multi_tier_points(rb, sc, ladder)
        cells = []
        for q in (0.95, 0.98):
            p = cheapest_at(pts, q)
            cells.append(f"{p.cost_vs_strong:.1%} ({'/'.join(f'{s:.0%}' for s in p.shares)})"
                         if p else "n/a")
        print(f"| {name} | " + " | ".join(cells) + " |")

    # the reference script agrees
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        print("\n### The reference script on the pooled out-of-fold scores (first shuffle)\n")
        for k in ("MMLU", "RouterBench"):
            pred = out / f"pred_{k}.jsonl"
            pred.write_text("".join(json.dumps({"id": r.id, "p_strong": float(m)}) + "\n"
                                    for r, m in zip(rows[k], oof[k][0], strict=True)))
            for mode in ("exact", "routellm"):
                done = subprocess.run(
                    [sys.executable, str(data / "routing_metrics.py"),
                     str(data / "routing" / FILES[k]), "--pred", str(pred), "--mode", mode],
                    capture_output=True, text=True, check=True)
                theirs = json.loads(done.stdout)
                mine = summarize(rows[k], list(map(float, oof[k][0])), mode=mode)  # type: ignore[arg-type]
                print(f"- {k} {mode}: script APGR {theirs['APGR']:.4f}, CPT(50%) "
                      f"{theirs['CPT50']:.2%}, CPT(80%) {theirs['CPT80']:.2%}; "
                      f"engine.training.evaluate "
                      f"{'identical' if theirs['APGR'] == mine.apgr else 'DIFFERS'}")

    # latency
    prompts = [r.prompt for v in rows.values() for r in v]
    requests = [ask(p) for p in prompts]
    shipped.score(requests[0])
    for name, fn in {
        "heuristic score_request": lambda q: score_request(q),
        "trained router, heuristic signals passed in": None,
        "trained router, whole (computes the heuristic too)": lambda q: shipped.score(q),
    }.items():
        times = []
        heuristics = [score_request(q) for q in requests]
        for q, h in zip(requests, heuristics, strict=True):
            t0 = time.perf_counter()
            if fn is None:
                shipped.score(q, heuristic=h)
            else:
                fn(q)
            times.append(time.perf_counter() - t0)
        times.sort()
        print(f"\nlatency {name}: p50 {times[len(times) // 2] * 1e3:.3f} ms, "
              f"p99 {times[int(len(times) * 0.99)] * 1e3:.3f} ms, "
              f"max {times[-1] * 1e3:.3f} ms over {len(times)} dev prompts", end="")
    print()


def _cpt(rows: list[RoutingRow], scores: np.ndarray | list[float]) -> tuple[float, float]:
    s = summarize(rows, list(map(float, scores)))
    return s.cpt50, s.cpt80


if __name__ == "__main__":
    main()
