"""Routing on sets the router never saw: can a default never lose to prompt length?

Usage: .venv/bin/python bench/routing_unseen.py [--data DIR] [--json OUT]

Leave one set out over the three dev files (MMLU, RouterBench, AlpacaEval): the router
scored on a file is trained on the other two (``--folds 2`` calibration, as BENCHMARKS.md
section 16's routers), and every score takes the default's form: the trained router's
``100 × p`` blended 0.7 with the heuristic (``learned.model_weight``).

Candidates (``CONFIGS`` × ``BETAS``):

* how the logistic regression is fitted: ``plain`` (as shipped), ``source`` (one free
  intercept per data file, dropped at scoring time, so the weights learn what orders prompts
  *within* a file, the only order APGR rewards) or ``subset`` (one per subset: ARC, MBPP,
  Winogrande, each MMLU subject, each AlpacaEval source);
* ``monotone``: plain, with the weights of the length measures (``MONOTONE``) kept from going
  negative: a length measure whose weight comes out negative is left out and the fit redone,
  until none does (an active-set fit; longer is never evidence for the cheap model);
* ``ngrams/4``: plain, with the hashed n-gram blocks scaled by a quarter (their L2 penalty 16
  times the rest's: the features most specific to the training sets' wording count less);
* ``beta``: weight added to the standardised log length of the last message in the log-odds
  (``z + beta × (log1p(chars) - mean) / std``; the calibration of ``beta = 0`` is kept, so it
  is monotone). It is a blend with prompt length at the score level (where the trained router
  is flat, length decides) and ships as a change of one dense weight of ``router.json``.

The protocol cannot peek: for a held-out file H, the candidate is chosen on the other two
files only, each scored by a router trained on the third (nested leave-one-set-out: H is in
no training set and no choice), by ``maximin`` (the worst margin over prompt length on those
sets, item 3's criterion), by ``mean`` APGR, or ``safe``: the largest mean gain over today's
default (``plain``, beta 0) among candidates no worse than it on any of those sets where it
beats prompt length by more than 0.01. Then the chosen candidate's router trained on the two
other files scores H.

"As seen": pooled stratified 5-fold cross-validation over all three files (every row scored
by a router trained on the other folds, which include its own set).

Prints Markdown tables; ``--json`` also writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.cache.similarity import Embedder
from engine.core.routing.learned import DENSE_NAMES, FeatureConfig
from engine.core.routing.learned import request_for_prompt as ask
from engine.core.routing.scoring import score_request
from engine.training.evaluate import RoutingRow, parse_rows, summarize
from engine.training.fit import (
    DEFAULT_L2,
    FeatureMatrix,
    _lbfgs,
    _Problem,
    build_matrix,
    calibrate,
    source_of,
    stratified_folds,
    targets,
)

FILES = {
    "MMLU": "routellm_mmlu_dev.jsonl",
    "RouterBench": "routerbench_arc_mbpp_winogrande_dev.jsonl",
    "AlpacaEval": "alpaca_eval2_gpt35_vs_gpt4turbo_dev.jsonl",
}
CONFIGS = ("plain", "monotone", "source", "subset", "ngrams/4")
BETAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
MODEL_WEIGHT = 0.7
LENGTH = DENSE_NAMES.index("log_chars_last")
MONOTONE = tuple(DENSE_NAMES.index(n) for n in
                 ("signal_tokens", "log_chars_last", "log_chars_all", "log_words_last"))
GROUP_SCALE = 3.0  # the group intercepts' columns: a penalty 9 times weaker than the others'


def concat(mats: list[FeatureMatrix]) -> FeatureMatrix:
    indptr, offset = [np.array([0])], 0
    for m in mats:
        indptr.append(m.indptr[1:] + offset)
        offset += int(m.indptr[-1])
    return FeatureMatrix(mats[0].config, np.vstack([m.dense for m in mats]),
                         np.vstack([m.embedding for m in mats]), np.concatenate(indptr),
                         np.concatenate([m.indices for m in mats]),
                         np.concatenate([m.values for m in mats]))


def group_of(rows: list[RoutingRow], kind: str) -> np.ndarray | None:
    if kind not in ("source", "subset"):
        return None
    keys = [source_of(r) if kind == "source" else f"{r.source}/{r.subset}" for r in rows]
    names = sorted(set(keys))
    return np.array([names.index(k) for k in keys]) if len(names) > 1 else None


class Fitted:
    """The logistic regression of ``engine.training.fit`` (same loss, L2, optimiser and
    standardisation), with optional per-group intercepts that scoring leaves out."""

    def __init__(self, x: FeatureMatrix, y: np.ndarray, groups: np.ndarray | None,
                 monotone: bool = False) -> None:
        self.mean = x.dense.mean(axis=0)
        self.std = x.dense.std(axis=0)
        self.std[self.std < 1e-9] = 1.0
        keep = np.ones(len(DENSE_NAMES))
        while True:
            self._fit(x, y, groups, keep)
            negative = [j for j in MONOTONE if keep[j] and self.dense_w[j] < 0]
            if not monotone or not negative:
                break
            keep[negative] = 0.0

    def _fit(self, x: FeatureMatrix, y: np.ndarray, groups: np.ndarray | None,
             keep: np.ndarray) -> None:
        dense = (x.dense - self.mean) / self.std * keep
        n_groups = 0 if groups is None else int(groups.max()) + 1
        if n_groups:
            dense = np.c_[dense, np.eye(n_groups)[groups] * GROUP_SCALE]
        shifted = replace(x, dense=dense, indices=x.indices + n_groups)
        problem = _Problem(shifted, dense, y, DEFAULT_L2)
        problem.size, problem.n_dense = x.config.size + n_groups, dense.shape[1]
        prior = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        theta = np.zeros(problem.size + 1)
        theta[-1] = np.log(prior / (1 - prior))
        theta = _lbfgs(problem, theta, iterations=300)
        nd = len(DENSE_NAMES)
        self.dense_w = theta[:nd]
        groups_w = theta[nd : nd + n_groups]
        self.rest_w = theta[nd + n_groups : -1]
        self.bias = float(theta[-1]) + (float(groups_w.mean()) if n_groups else 0.0)

    def margins(self, x: FeatureMatrix) -> np.ndarray:
        z = ((x.dense - self.mean) / self.std) @ self.dense_w + self.bias
        ne = x.embedding.shape[1]
        z += x.embedding @ self.rest_w[:ne]
        row_of = np.repeat(np.arange(len(x)), np.diff(x.indptr))
        z += np.bincount(row_of, weights=x.values * self.rest_w[x.indices - len(DENSE_NAMES)],
                         minlength=len(x))
        return z


class Router:
    """A candidate router trained on ``rows``: margins, the length's standardisation, and
    the Platt calibration of its ``folds``-fold out-of-fold margins."""

    def __init__(self, rows: list[RoutingRow], x: FeatureMatrix, kind: str,
                 folds: int = 2) -> None:
        self.ngram_scale = 0.25 if kind == "ngrams/4" else 1.0
        x = self.scaled(x)
        y = targets(rows, "gain")
        self.fit = Fitted(x, y, group_of(rows, kind), kind == "monotone")
        sign = [float(np.sign(r.strong_score - r.weak_score)) for r in rows]
        fold = stratified_folds(sign, folds, seed=0, groups=[source_of(r) for r in rows])
        oof = np.zeros(len(rows))
        for k in range(folds):
            train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            sub = Fitted(x.take(train), y[train], group_of([rows[i] for i in train], kind),
                         kind == "monotone")
            oof[test] = sub.margins(x.take(test))
        self.oof = oof
        self.calibration = calibrate(oof, targets(rows, "binary"))

    def scaled(self, x: FeatureMatrix) -> FeatureMatrix:
        return x if self.ngram_scale == 1.0 else replace(x, values=x.values * self.ngram_scale)

    def default(self, x: FeatureMatrix, heuristic: np.ndarray, beta: float) -> np.ndarray:
        """The default's score (0-100) with ``beta`` more weight on length."""
        x = self.scaled(x)
        length = (x.dense[:, LENGTH] - self.fit.mean[LENGTH]) / self.fit.std[LENGTH]
        a, b = self.calibration
        z = np.clip(a * (self.fit.margins(x) + beta * length) + b, -50, 50)
        return MODEL_WEIGHT * 100 / (1 + np.exp(-z)) + (1 - MODEL_WEIGHT) * heuristic


def sets_of(name: str, rows: list[RoutingRow]) -> dict[str, np.ndarray]:
    """The set and, beside MMLU (one file of 57 subjects), each of its subsets."""
    out = {name: np.arange(len(rows))}
    if name != "MMLU":
        for sub in sorted({r.subset for r in rows}):
            out[f"{name} {sub}"] = np.array([i for i, r in enumerate(rows) if r.subset == sub])
    return out


def apgr_sets(name: str, rows: list[RoutingRow], scores: np.ndarray) -> dict[str, float]:
    return {k: summarize([rows[i] for i in idx], [float(scores[i]) for i in idx]).apgr
            for k, idx in sets_of(name, rows).items()}


# Sets the protocol's choice weighs (AlpacaEval's subsets have 16-52 rows: too few to choose on)
def chosen_on(name: str) -> tuple[str, ...]:
    if name == "RouterBench":
        return ("RouterBench", "RouterBench arc-challenge", "RouterBench mbpp",
                "RouterBench winogrande")
    return (name,)


def load_sets() -> tuple[argparse.Namespace, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The command line (``--data``, ``--json``) and, per labelled file, its rows, their
    feature matrix and their heuristic scores."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("LLM_ROUTER_EVAL_DATA") or None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.data is None:
        ap.error("give --data DIR or set LLM_ROUTER_EVAL_DATA")
    data = Path(args.data)
    rows = {k: parse_rows((data / "routing" / f).read_text(encoding="utf-8").splitlines())
            for k, f in FILES.items()}
    embedder, config = Embedder(), FeatureConfig()
    mats = {k: build_matrix([r.prompt for r in v], config, embedder=embedder)
            for k, v in rows.items()}
    heur = {k: np.array([float(score_request(ask(r.prompt)).total) for r in v])
            for k, v in rows.items()}
    return args, rows, mats, heur


def main() -> None:
    args, rows, mats, heur = load_sets()
    names = list(FILES)
    length = {k: {s: v for s, v in apgr_sets(k, rows[k], np.array(
        [len(r.prompt) for r in rows[k]], float)).items()} for k in names}

    # every router the protocol needs: on two files (outer) and on one (nested)
    scores: dict[tuple[str, tuple[str, ...], str, float], dict[str, float]] = {}
    for kind in CONFIGS:
        for train in [tuple(n for n in names if n != h) for h in names] + [(n,) for n in names]:
            r = [row for n in train for row in rows[n]]
            router = Router(r, concat([mats[n] for n in train]), kind)
            for h in names:
                if h in train:
                    continue
                for beta in BETAS:
                    scores[(kind, train, h, beta)] = apgr_sets(
                        h, rows[h], router.default(mats[h], heur[h], beta))
            print(f"trained {kind} on {'+'.join(train)}", file=sys.stderr, flush=True)

    def outer(h: str) -> tuple[str, ...]:
        return tuple(n for n in names if n != h)

    keys = [k for h in names for k in sets_of(h, rows[h])]
    flat_length = {k: v for h in names for k, v in length[h].items()}
    report: dict[str, object] = {"length": flat_length}
    print("## Candidates, leave one set out (each file scored by a router trained on the "
          "other two)\n")
    print("| candidate | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    print("| prompt length | " + " | ".join(f"{flat_length[k]:.3f}" for k in keys) + " |")
    for kind in CONFIGS:
        for beta in BETAS:
            row = {}
            for h in names:
                row.update(scores[(kind, outer(h), h, beta)])
            report[f"{kind} beta={beta}"] = row
            print(f"| {kind}, beta {beta:g} | " + " | ".join(f"{row[k]:.3f}" for k in keys)
                  + " |")

    old = {}
    for h in names:
        old.update(scores[("plain", outer(h), h, 0.0)])
    for objective in ("maximin", "mean", "safe"):
        new: dict[str, float] = {}
        choices = {}
        for h in names:
            best = None

            def inner_sets(kind: str, beta: float, h: str = h) -> dict[str, float]:
                inner = {}
                for s in names:
                    if s == h:
                        continue
                    third = tuple(n for n in names if n not in (h, s))
                    got = scores[(kind, third, s, beta)]
                    inner.update({k: got[k] for k in chosen_on(s)})
                return inner

            today = inner_sets("plain", 0.0)
            for kind in CONFIGS:
                for beta in BETAS:
                    inner = inner_sets(kind, beta)
                    if objective == "maximin":
                        value = min(inner[k] - flat_length[k] for k in inner)
                    elif objective == "mean":
                        value = float(np.mean(list(inner.values())))
                    elif any(inner[k] < today[k] for k in inner
                             if today[k] - flat_length[k] > 0.01):
                        continue
                    else:
                        value = float(np.mean([inner[k] - today[k] for k in inner]))
                    if best is None or value > best[0] + 1e-12:
                        best = (value, kind, beta)
            assert best is not None
            choices[h] = {"kind": best[1], "beta": best[2], "inner": round(best[0], 4)}
            new.update(scores[(best[1], outer(h), h, best[2])])
        report[f"protocol {objective}"] = {"choices": choices, "apgr": new}
        print(f"\n## Protocol, objective {objective}: chosen "
              + "; ".join(f"{h}: {c['kind']}, beta {c['beta']:g} (inner {c['inner']})"
                          for h, c in choices.items()) + "\n")
        print("| set | old default | new default | prompt length | new − length | new − old |")
        print("|---|---:|---:|---:|---:|---:|")
        for k in keys:
            print(f"| {k} | {old[k]:.3f} | {new[k]:.3f} | {flat_length[k]:.3f} | "
                  f"{new[k] - flat_length[k]:+.3f} | {new[k] - old[k]:+.3f} |")

    # as seen: pooled 5-fold cross-validation over all three files
    pooled_rows = [row for n in names for row in rows[n]]
    pooled = concat([mats[n] for n in names])
    pooled_heur = np.concatenate([heur[n] for n in names])
    sign = [float(np.sign(r.strong_score - r.weak_score)) for r in pooled_rows]
    fold = stratified_folds(sign, 5, seed=0, groups=[source_of(r) for r in pooled_rows])
    starts = np.cumsum([0] + [len(rows[n]) for n in names])
    seen: dict[tuple[str, float], dict[str, float]] = {}
    outs = {(kind, beta): np.zeros(len(pooled_rows)) for kind in CONFIGS for beta in BETAS}
    for kind in CONFIGS:
        for k in range(5):
            train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            router = Router([pooled_rows[i] for i in train], pooled.take(train), kind)
            for beta in BETAS:
                outs[(kind, beta)][test] = router.default(pooled.take(test), pooled_heur[test],
                                                          beta)
        print(f"cross-validated {kind}", file=sys.stderr, flush=True)
        for beta in BETAS:
            row = {}
            for i, n in enumerate(names):
                row.update(apgr_sets(n, rows[n], outs[(kind, beta)][starts[i]:starts[i + 1]]))
            seen[(kind, beta)] = row
    report["as seen"] = {f"{k} beta={b}": v for (k, b), v in seen.items()}
    print("\n## As seen (pooled 5-fold cross-validation over the three files)\n")
    print("| candidate | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    print("| prompt length | " + " | ".join(f"{flat_length[k]:.3f}" for k in keys) + " |")
    for (kind, beta), row in seen.items():
        print(f"| {kind}, beta {beta:g} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
