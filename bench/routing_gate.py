"""A familiarity gate between the trained router and prompt length (issue 15, item 3, third
attempt): deployable (one request at a time), its shape chosen nested.

Usage: .venv/bin/python bench/routing_gate.py [--data DIR] [--json OUT]

Each request's score is ``w × F_s(s) + (1 − w) × F_L(L)``: ``s`` is today's default score
(``0.7 × 100 × p + 0.3 × heuristic``), ``L`` the log of the prompt's length, ``F_s`` and
``F_L`` their percentiles among the router's **training rows** (101 quantiles, what
``router.json`` could hold; beyond the training range the value itself keeps ordering, at a
weight of 0.001), and ``w = g(m)``: a fixed shape ``g`` of a familiarity measure ``m`` the
gateway can compute from the request alone:

* ``known``: ``LearnedRouter.known`` (the similarity of the sentence vector to the nearest of
  32 training centroids, 0 at the training rows' 5th percentile, 1 at their 25th);
* ``sim``: that similarity as a percentile among the training rows (a ramp on it between
  two percentiles ``a`` and ``b``); ``sim128``: the same with 128 centroids;
* ``blocks``: agreement of the hashed n-gram block's and the sentence block's parts of the
  log-odds (each standardised over the training rows; 1 minus the percentile of their gap);
* ``margin``: the model's own ``|z|`` as a percentile among the training rows;
* ``trust8`` / ``trust32``: labelled, per region: the router's out-of-fold APGR minus prompt
  length's on the training rows nearest the request's centroid (8 or 32 centroids);
* ``ng{4096,16384}{c,a}{32,128}``: familiarity in the hashed n-gram space: the request's
  character n-gram block (``c``) or both n-gram blocks (``a``), folded to 4,096 or 16,384
  buckets, its cosine to the nearest of 32 or 128 centroids of the training rows' vectors,
  as a percentile among the training rows;

and ``g`` is a power ``m^k`` or a ramp ``clip((m − a) / (b − a), 0, 1)``.

Protocol (as ``routing_combine.py``): for a held-out file H, the candidate is chosen only
from what a router trained on one of the two other files shows: the inner pairs (that router
scoring the third file, leave one set out) and its own file (2-fold out-of-fold scores, as
seen). ``level``: the largest worst margin over prompt length on the inner pairs, a margin
of −0.005 or more counting as level, then the best mean APGR on the own files; ``maximin``:
the worst inner margin alone (ties by the own files). Then the router trained on the two
other files scores H with the chosen candidate (the outer table). In-sample cost: the shipped
``engine/data/router.json`` on its own dev rows (MMLU, RouterBench) and pooled stratified
5-fold cross-validation over the three files (``routing_unseen.py``'s folds), each with the
candidates the nested protocol chose. Also printed: the best gate of each family read off
the outer table itself (an upper bound of what a fixed gate of that family could do, not a
protocol: it is chosen on the sets it is scored on).

Takes about 6 minutes (the n-gram centroids are most of it); every figure is deterministic.

Prints Markdown tables; ``--json`` writes every figure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing_combine import sets_of
from routing_unseen import (
    FILES,
    MODEL_WEIGHT,
    Router,
    chosen_on,
    concat,
    load_sets,
)

from engine.core.routing.learned import DENSE_NAMES, LearnedRouter, _centroids
from engine.training.fit import (
    FeatureMatrix,
    familiarity,
    source_of,
    stratified_folds,
)

LEVEL = -0.005
GRID = np.linspace(0.0, 1.0, 101)
#: n-gram familiarity variants: (name, buckets folded to, block, centroids)
NGRAMS = (("ng4096c32", 4096, "chars", 32), ("ng4096c128", 4096, "chars", 128),
          ("ng4096a32", 4096, "all", 32), ("ng4096a128", 4096, "all", 128),
          ("ng16384c32", 16384, "chars", 32), ("ng16384c128", 16384, "chars", 128),
          ("ng16384a32", 16384, "all", 32), ("ng16384a128", 16384, "all", 128))


def folded(x: FeatureMatrix, buckets: int, block: str) -> np.ndarray:
    """The hashed n-gram block of each row (``chars``: the character n-grams only; ``all``:
    with the word n-grams), its buckets folded modulo ``buckets``, unit rows (float32)."""
    n = len(x)
    offset = len(DENSE_NAMES) + x.config.embedding_dim
    idx = x.indices - offset
    keep = idx >= (x.config.word_buckets if block == "chars" else 0)
    row_of = np.repeat(np.arange(n), np.diff(x.indptr))
    out = np.zeros((n, buckets), np.float32)
    np.add.at(out, (row_of[keep], idx[keep] % buckets), x.values[keep])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def apgr(gain: np.ndarray, weak: np.ndarray, scores: np.ndarray) -> float:
    """``engine.training.evaluate.summarize(...).apgr`` (exact mode), vectorised."""
    n = len(gain)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), n - 1]
    q = (weak.sum() + np.cumsum(gain[order])[ends]) / n
    x = np.r_[0.0, (ends + 1) / n]
    y = np.r_[weak.sum() / n, q]
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
    w, st = weak.mean(), weak.mean() + gain.mean()
    return (area - w) / (st - w)


class Reference:
    """A value's percentile among the training rows, from 101 quantiles (deployable)."""

    def __init__(self, values: np.ndarray) -> None:
        self.q = np.quantile(values, GRID)
        self.mid = float(np.median(values))
        self.spread = max(float(np.subtract(*np.quantile(values, [0.75, 0.25]))), 1e-9)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        inside = np.interp(v, self.q, GRID)
        beyond = 1 / (1 + np.exp(-np.clip((v - self.mid) / self.spread, -50, 50)))
        return 0.999 * inside + 0.001 * beyond


@dataclass
class View:
    """One router's view of some rows: what every candidate needs."""

    s: np.ndarray        # today's default score, 0-100
    length: np.ndarray   # log1p(characters)
    measures: dict[str, np.ndarray]  # familiarity measures, 0..1 (1: familiar)
    ref_s: Reference
    ref_length: Reference
    gain: np.ndarray
    weak: np.ndarray

    def take(self, idx: np.ndarray) -> View:
        return View(self.s[idx], self.length[idx], {k: v[idx] for k, v in self.measures.items()},
                    self.ref_s, self.ref_length, self.gain[idx], self.weak[idx])


class Scorer:
    """What a trained router (``Router`` or a loaded ``LearnedRouter``) needs to give
    views: its parts of the log-odds, its centroids and its training rows' references.
    With the training rows' out-of-fold log-odds ``oof`` (and their labels), each centroid
    also gets a ``trust``: the router's out-of-fold APGR minus prompt length's on the
    training rows nearest that centroid (0 for a cluster of fewer than 8 rows or where
    both models score alike on average)."""

    def __init__(self, parts, calibration, train_x: FeatureMatrix, train_heur: np.ndarray,
                 train_len: np.ndarray, oof: np.ndarray | None = None,
                 train_gain: np.ndarray | None = None,
                 train_weak: np.ndarray | None = None) -> None:
        self.parts = parts  # x -> (z_raw, z_embedding_part, z_ngram_part)
        self.a, self.b = calibration
        self.cent = {}
        self.sim_ref = {}
        self.trust = {}
        for name, k in (("sim8", 8), ("sim", 32), ("sim128", 128)):
            record = familiarity(train_x.embedding, clusters=k)
            c = _centroids(record)
            self.cent[name] = (c, float(record["low"]), float(record["high"]))
            c_sims = self._sims(train_x, c)
            self.sim_ref[name] = Reference(c_sims.max(axis=1))
            if oof is not None and k <= 32:
                near = c_sims.argmax(axis=1)
                trust = np.zeros(len(c))
                for j in range(len(c)):
                    i = np.flatnonzero(near == j)
                    if len(i) >= 8 and abs(float(train_gain[i].mean())) > 1e-9:
                        trust[j] = (apgr(train_gain[i], train_weak[i], oof[i])
                                    - apgr(train_gain[i], train_weak[i], train_len[i]))
                self.trust[name] = trust
        self.ngram = {}
        for name, buckets, block, k in NGRAMS:
            f = folded(train_x, buckets, block)
            c = _centroids(familiarity(f, clusters=k)).astype(np.float32)
            self.ngram[name] = (buckets, block, c, Reference((f @ c.T).max(axis=1)))
            del f
        z, ze, zn = parts(train_x)
        self.ze_ref = (float(ze.mean()), float(ze.std()) or 1.0)
        self.zn_ref = (float(zn.mean()), float(zn.std()) or 1.0)
        zc = self.a * z + self.b
        self.gap_ref = Reference(self._gap(ze, zn))
        self.margin_ref = Reference(np.abs(zc))
        self.ref_s = Reference(self._default(zc, train_heur))
        self.ref_length = Reference(train_len)

    @staticmethod
    def _sims(x: FeatureMatrix, c: np.ndarray) -> np.ndarray:
        e = x.embedding / np.maximum(np.linalg.norm(x.embedding, axis=1, keepdims=True), 1e-12)
        return e @ c.T

    def _gap(self, ze: np.ndarray, zn: np.ndarray) -> np.ndarray:
        return np.abs((ze - self.ze_ref[0]) / self.ze_ref[1]
                      - (zn - self.zn_ref[0]) / self.zn_ref[1])

    @staticmethod
    def _default(zc: np.ndarray, heur: np.ndarray) -> np.ndarray:
        return (MODEL_WEIGHT * 100 / (1 + np.exp(-np.clip(zc, -50, 50)))
                + (1 - MODEL_WEIGHT) * heur)

    def view(self, x: FeatureMatrix, heur: np.ndarray, length: np.ndarray, gain: np.ndarray,
             weak: np.ndarray, z: np.ndarray | None = None) -> View:
        zr, ze, zn = self.parts(x)
        zc = self.a * (zr if z is None else z) + self.b
        sims = {name: self._sims(x, c) for name, (c, _, _) in self.cent.items()}
        _, low, high = self.cent["sim"]
        sim = sims["sim"].max(axis=1)
        measures = {
            "known": np.clip((sim - low) / max(high - low, 1e-6), 0, 1),
            "sim": self.sim_ref["sim"](sim),
            "sim128": self.sim_ref["sim128"](sims["sim128"].max(axis=1)),
            "blocks": 1 - self.gap_ref(self._gap(ze, zn)),
            "margin": self.margin_ref(np.abs(zc)),
        }
        for name, (buckets, block, c, ref) in self.ngram.items():
            measures[name] = ref((folded(x, buckets, block) @ c.T).max(axis=1))
        for name, k in (("sim8", 8), ("sim", 32)):
            measures[f"trust{k}"] = (self.trust[name][sims[name].argmax(axis=1)]
                                     if name in self.trust else np.full(len(zr), np.nan))
        return View(self._default(zc, heur), length, measures, self.ref_s, self.ref_length,
                    gain, weak)


def router_parts(router: Router):
    fit = router.fit
    nd = len(DENSE_NAMES)

    def parts(x: FeatureMatrix):
        x = router.scaled(x)
        ne = x.embedding.shape[1]
        ze = x.embedding @ fit.rest_w[:ne]
        row_of = np.repeat(np.arange(len(x)), np.diff(x.indptr))
        zn = np.bincount(row_of, weights=x.values * fit.rest_w[x.indices - nd],
                         minlength=len(x))
        zd = ((x.dense - fit.mean) / fit.std) @ fit.dense_w + fit.bias
        return zd + ze + zn, ze, zn
    return parts


def learned_parts(model: LearnedRouter):
    nd = len(DENSE_NAMES)
    w = model.weights.astype(np.float64)

    def parts(x: FeatureMatrix):
        ne = x.embedding.shape[1]
        ze = x.embedding @ w[nd : nd + ne]
        row_of = np.repeat(np.arange(len(x)), np.diff(x.indptr))
        zn = np.bincount(row_of, weights=x.values * w[x.indices], minlength=len(x))
        zd = ((x.dense - model.dense_mean) / model.dense_std) @ w[:nd] + model.bias
        return zd + ze + zn, ze, zn
    return parts


# -- candidates ----------------------------------------------------------------------------------


def _ramp(m: str, a: float, b: float) -> Callable[[View], np.ndarray]:
    return lambda v: np.clip((v.measures[m] - a) / (b - a), 0, 1)


def candidates() -> dict[str, Callable[[View], np.ndarray | float]]:
    """Every gate ``w = g(m)`` tried (``default``: w = 1; ``prompt length``: w = 0)."""
    out: dict[str, Callable[[View], np.ndarray | float]] = {
        "default": lambda v: 1.0, "prompt length": lambda v: 0.0}
    for k in (1, 2, 4, 8, 16):
        out[f"known^{k}"] = lambda v, k=k: v.measures["known"] ** k
    for a in (0.0, 0.2, 0.4, 0.6, 0.8):
        for b in (0.2, 0.4, 0.6, 0.8, 1.0):
            if b > a:
                out[f"known ramp {a:g}-{b:g}"] = _ramp("known", a, b)
    for m in ("sim", "sim128", "blocks", "margin"):
        for a in (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7):
            for d in (0.02, 0.05, 0.1, 0.2):
                out[f"{m} ramp {a:g}-{a + d:g}"] = _ramp(m, a, a + d)
    for m in ("trust8", "trust32"):
        for a in (-0.1, -0.05, 0.0, 0.05, 0.1):
            for d in (0.02, 0.05, 0.1, 0.2):
                out[f"{m} ramp {a:g}-{a + d:g}"] = _ramp(m, a, a + d)
    for m, *_ in NGRAMS:
        for a in (0.02, 0.03, 0.05, 0.07, 0.1, 0.2):
            for d in (0.01, 0.05):
                out[f"{m} ramp {a:g}-{a + d:g}"] = _ramp(m, a, a + d)
                f, g = _ramp(m, a, a + d), _ramp("sim", 0.0, 0.02)
                out[f"{m} ramp {a:g}-{a + d:g} x sim ramp 0-0.02"] = (
                    lambda v, f=f, g=g: f(v) * g(v))
    for first, second in (("sim", "blocks"), ("sim128", "blocks"), ("sim", "trust8")):
        cuts = (-0.1, 0.0, 0.1) if second.startswith("trust") else (0.0, 0.05, 0.2, 0.3)
        for a1 in (0.0, 0.02, 0.1, 0.2):
            for a2 in cuts:
                for d in (0.02, 0.1):
                    f, g = _ramp(first, a1, a1 + d), _ramp(second, a2, a2 + d)
                    out[f"{first} ramp {a1:g}-{a1 + d:g} x {second} ramp {a2:g}-{a2 + d:g}"] = (
                        lambda v, f=f, g=g: f(v) * g(v))
    return out


CANDIDATES = candidates()


def score(view: View, name: str) -> np.ndarray:
    if name == "default":
        return view.s
    if name == "prompt length":
        return view.length
    w = CANDIDATES[name](view)
    return w * view.ref_s(view.s) + (1 - w) * view.ref_length(view.length)


def table_of(view: View, sets: dict[str, np.ndarray], names) -> dict[str, dict[str, float]]:
    out = {}
    for name in names:
        sc = score(view, name)
        if np.isnan(sc).any():  # a trust gate on a router without out-of-fold scores
            out[name] = {k: float("nan") for k in sets}
            continue
        out[name] = {k: apgr(view.gain[i], view.weak[i], sc[i]) for k, i in sets.items()}
    return out


def outcomes(rows: dict[str, list]) -> tuple[dict[str, np.ndarray], ...]:
    """Per file: the strong model's gain and the weak model's score of each row, the log
    length of its prompt, and the row indices of each set and subset (``sets_of``)."""
    gain = {n: np.array([r.strong_score - r.weak_score for r in rows[n]]) for n in rows}
    weak = {n: np.array([r.weak_score for r in rows[n]]) for n in rows}
    length = {n: np.log1p(np.array([len(r.prompt) for r in rows[n]], float)) for n in rows}
    return gain, weak, length, {n: sets_of(n, rows[n]) for n in rows}


def family(name: str) -> str:
    if name in ("default", "prompt length"):
        return name
    parts = name.split(" ")
    return " x ".join(p.split(" ")[0] for p in name.split(" x ")) if " x " in name \
        else parts[0].split("^")[0]


def main() -> None:
    args, rows, mats, heur = load_sets()
    names = list(FILES)
    gain, weak, length, sets = outcomes(rows)
    cand = list(CANDIDATES)

    def outer(h: str) -> tuple[str, ...]:
        return tuple(n for n in names if n != h)

    def cat(d: dict[str, np.ndarray], files) -> np.ndarray:
        return np.concatenate([d[n] for n in files])

    # routers: outer (two files), inner (one file); views of unseen files and of their own
    views: dict[tuple[tuple[str, ...], str], View] = {}
    for train in [outer(h) for h in names] + [(n,) for n in names]:
        x = concat([mats[n] for n in train])
        router = Router([row for n in train for row in rows[n]], x, "monotone")
        scorer = Scorer(router_parts(router), router.calibration, x, cat(heur, train),
                        cat(length, train), router.oof, cat(gain, train), cat(weak, train))
        for h in names:
            if h not in train:
                views[(train, h)] = scorer.view(mats[h], heur[h], length[h], gain[h], weak[h])
        if len(train) == 1:  # its own file, 2-fold out-of-fold log-odds
            n = train[0]
            views[(train, n)] = scorer.view(mats[n], heur[n], length[n], gain[n], weak[n],
                                            z=router.oof)
        print(f"trained on {'+'.join(train)}", file=sys.stderr, flush=True)
    results = {key: table_of(v, sets[key[1]], cand) for key, v in views.items()}
    print("scored the leave-one-set-out views", file=sys.stderr, flush=True)

    # in-sample 1: pooled 5-fold cross-validation over the three files
    pooled_rows = [row for n in names for row in rows[n]]
    pooled = concat([mats[n] for n in names])
    p_heur, p_len = cat(heur, names), cat(length, names)
    p_gain, p_weak = cat(gain, names), cat(weak, names)
    sign = [float(np.sign(r.strong_score - r.weak_score)) for r in pooled_rows]
    fold = stratified_folds(sign, 5, seed=0, groups=[source_of(r) for r in pooled_rows])
    cv_scores = {name: np.zeros(len(pooled_rows)) for name in cand}
    for k in range(5):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        router = Router([pooled_rows[i] for i in train], pooled.take(train), "monotone")
        scorer = Scorer(router_parts(router), router.calibration, pooled.take(train),
                        p_heur[train], p_len[train], router.oof, p_gain[train], p_weak[train])
        view = scorer.view(pooled.take(test), p_heur[test], p_len[test], p_gain[test],
                           p_weak[test])
        for name in cand:
            cv_scores[name][test] = score(view, name)
        print(f"cross-validated fold {k}", file=sys.stderr, flush=True)
    starts = np.cumsum([0] + [len(rows[n]) for n in names])
    cv: dict[str, dict[str, float]] = {name: {} for name in cand}
    for name in cand:
        for i, n in enumerate(names):
            sc = cv_scores[name][starts[i]:starts[i + 1]]
            cv[name].update({k: apgr(gain[n][j], weak[n][j], sc[j]) for k, j in sets[n].items()})

    # in-sample 2: the shipped router on its own dev rows (AlpacaEval: never seen); its
    # references are its training rows' in-sample scores (no out-of-fold scores: no trust)
    shipped = LearnedRouter.load(Path(__file__).resolve().parents[1] / "engine" / "data"
                                 / "router.json")
    own = ("MMLU", "RouterBench")
    sc_ship = Scorer(learned_parts(shipped), shipped.calibration, concat([mats[n] for n in own]),
                     cat(heur, own), cat(length, own))
    ship: dict[str, dict[str, float]] = {name: {} for name in cand}
    for n in names:
        got = table_of(sc_ship.view(mats[n], heur[n], length[n], gain[n], weak[n]), sets[n], cand)
        for name in cand:
            ship[name].update(got[name])
    print("scored in-sample", file=sys.stderr, flush=True)

    keys = [k for h in names for k in sets[h]]
    loso: dict[str, dict[str, float]] = {name: {} for name in cand}
    for name in cand:
        for h in names:
            loso[name].update(results[(outer(h), h)][name])
    length_row = loso["prompt length"]

    def below(row: dict[str, float]) -> tuple[int, float]:
        margins = [row[k] - length_row[k] for k in keys]
        return sum(m < LEVEL for m in margins), min(margins)

    def cost(name: str) -> float:
        """The in-sample cost: the worst change against today's default of MMLU and
        RouterBench, cross-validated and shipped (cross-validated only for trust gates)."""
        got = [table[name][k] - table["default"][k] for table in (cv, ship)
               for k in ("MMLU", "RouterBench")]
        return min(g for g in got if not np.isnan(g))

    # the nested choice for each held-out file
    # (``level, n-gram gates``: the same choice among the n-gram gates only, a restriction
    # made after seeing the outer table, so not a protocol either)
    chosen: dict[str, dict[str, str]] = {"level": {}, "maximin": {}, "level, n-gram gates": {}}
    inner_value: dict[str, dict[str, list]] = {k: {} for k in chosen}
    for h in names:
        a_, b_ = outer(h)
        inner = [((b_,), a_), ((a_,), b_)]
        mine = [((a_,), a_), ((b_,), b_)]
        best: dict[str, tuple] = {}
        for name in cand:
            worst = min(results[key][name][k] - results[key]["prompt length"][k]
                        for key in inner for k in chosen_on(key[1]))
            seen = float(np.mean([results[key][name][k] for key in mine
                                  for k in chosen_on(key[1])]))
            for objective, value in (("level", (min(0.0, worst - LEVEL), seen)),
                                     ("maximin", (round(worst, 6), seen)),
                                     ("level, n-gram gates", (min(0.0, worst - LEVEL), seen))):
                if objective == "level, n-gram gates" and not name.startswith("ng"):
                    continue
                if objective not in best or value > best[objective][0]:
                    best[objective] = (value, name)
        for objective in chosen:
            chosen[objective][h] = best[objective][1]
            inner_value[objective][h] = [round(float(v), 4) for v in best[objective][0]]
    for objective, pick in chosen.items():
        label = f"nested {objective} (" + "; ".join(f"{h}: {pick[h]}" for h in names) + ")"
        loso[label] = {}
        cv[label], ship[label] = {}, {}
        for h in names:
            loso[label].update(results[(outer(h), h)][pick[h]])
        for k in keys:  # in-sample: each set with the choice made when its file was held out
            h = k.split(" ")[0]
            cv[label][k], ship[label][k] = cv[pick[h]][k], ship[pick[h]][k]

    # outer bounds (read off the outer table: NOT a protocol, what the best fixed gate of
    # each family could do at best)
    bounds: dict[str, dict[str, object]] = {}
    for fam in sorted({family(n) for n in cand} - {"default", "prompt length"}):
        members = [n for n in cand if family(n) == fam]
        cheap = [n for n in members if cost(n) >= -0.01]
        level = [n for n in members if below(loso[n])[0] == 0]
        pick_a = max(cheap, key=lambda n: (-below(loso[n])[0], below(loso[n])[1])) \
            if cheap else None
        pick_b = max(level, key=cost) if level else None
        bounds[fam] = {"cheap": pick_a, "level": pick_b}

    shown = ["prompt length", "default", "known^1"] + [n for n in loso
                                                       if n.startswith("nested")]
    for b in bounds.values():
        shown += [n for n in (b["cheap"], b["level"]) if n and n not in shown]

    print("## Leave one set out (APGR; sets below length: margin under -0.005)\n")
    print("| candidate | " + " | ".join(keys) + " | sets below length | worst margin |")
    print("|---|" + "---:|" * (len(keys) + 2))
    for name in shown:
        nb, worst = below(loso[name])
        print(f"| {name} | " + " | ".join(f"{loso[name][k]:.4f}" for k in keys)
              + f" | {nb} | {worst:+.4f} |")

    print("\n## Best fixed gate of each family, read off the outer table (not a protocol)\n")
    print("| family | best with in-sample cost >= -0.01 | sets below | worst margin | "
          "in-sample cost | cheapest with 0 sets below | in-sample cost |")
    print("|---|---|---:|---:|---:|---|---:|")
    for fam, b in bounds.items():
        a, z = b["cheap"], b["level"]
        first = (f"{a} | {below(loso[a])[0]} | {below(loso[a])[1]:+.4f} | {cost(a):+.4f}"
                 if a else "none | | |")
        second = f"{z} | {cost(z):+.4f}" if z else "none |"
        print(f"| {fam} | {first} | {second} |")

    for title, table in (("Pooled 5-fold cross-validation (every row scored by a router "
                          "trained on folds that include its set)", cv),
                         ("Shipped router.json on its own dev rows (MMLU, RouterBench; "
                          "AlpacaEval it never saw)", ship)):
        print(f"\n## {title}\n")
        print("| candidate | " + " | ".join(keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for name in shown:
            print(f"| {name} | " + " | ".join(
                "–" if np.isnan(table[name][k]) else f"{table[name][k]:.4f}" for k in keys)
                + " |")

    print("\n## Mean familiarity of each view (router trained on -> rows scored)\n")
    measures = ["known", "sim", "sim128", "blocks", "margin", "trust8", "ng4096c128",
                "ng16384c32"]
    print("| view | " + " | ".join(measures) + " |")
    print("|---|" + "---:|" * len(measures))
    for (t, h), v in views.items():
        print(f"| {'+'.join(t)} -> {h} | " + " | ".join(
            f"{float(np.mean(v.measures[m])):.3f}" for m in measures) + " |")
    print("\nnested inner values (worst inner margin or its level part, own-file mean): "
          + json.dumps(inner_value))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "chosen": chosen, "bounds": bounds, "loso": loso, "cv": cv, "shipped": ship,
            "inner": {f"{'+'.join(t)} -> {h}": r for (t, h), r in results.items()},
        }, indent=1, default=float) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
